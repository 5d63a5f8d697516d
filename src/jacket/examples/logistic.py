"""Logistic regression by backpropagation, checked against its closed-form gradient at every step.

Model and loss (notes/backprop.md, "Logistic regression")::

    p = σ(X w + b)                                    Chain([Dense(30, 1)])
    J = −(1/N) Σ [y ln p + (1 − y) ln(1 − p)]          BinaryCrossEntropyWithLogits
    ∇_w J = Xᵀ (p − y) / N,   ∇_b J = mean(p − y)      closed_form_grad

Data: scikit-learn's breast-cancer set (569 × 30, labels 0/1), a fixed seeded split, features
standardised with the training split's mean and standard deviation only.

At every step of both trainings the engine's gradient (``jacket.value_and_grad``) is compared
with the closed form and with ``jax.grad`` of the same loss (JAX as the reference, never the
implementation); the largest differences over all steps are reported, absolute and relative to
the largest gradient entry. The check runs in float64 by default, where the three can only differ
by rounding in the last bits; float32 is available for a realistic comparison, and the report
says which dtype was used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import BinaryCrossEntropyWithLogits, Chain, Dense, value_and_grad
from . import Data, float64, load_sklearn_dataset, split

__all__ = ["LogisticResult", "load_data", "closed_form_grad", "checked_gradient",
           "gradient_descent_step", "train", "format_report"]


def load_data(seed: int = 0, test_fraction: float = 0.2, dtype=np.float64) -> Data:
    """The breast-cancer data, split by ``seed``, standardised with train-split statistics:
    features ``(n, 30)``, labels ``(n, 1)`` (0. or 1.)."""
    x, y = load_sklearn_dataset("breast_cancer")
    train, test = split(len(x), test_fraction, seed)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / std  # the test split is scaled by train statistics: no peeking
    y = y.astype(np.float64)[:, None]
    return Data(*(a.astype(dtype) for a in (x[train], y[train], x[test], y[test])))


def closed_form_grad(params, x, y):
    """The hand-derived gradient of the mean binary cross-entropy of ``σ(x w + b)``.

    x: ``(N, d)``, y: ``(N, 1)``, params ``{"w": (d, 1), "b": (1,)}`` -> a dict of the same shapes:
    ``∇w = xᵀ(p − y)/N`` and ``∇b = mean(p − y)``.
    """
    residual = jax.nn.sigmoid(x @ params["w"] + params["b"]) - y  # p − y, (N, 1)
    return {"w": x.T @ residual / x.shape[0], "b": residual.mean(axis=0)}


def gradient_descent_step(params, grads, learning_rate):
    """Plain gradient descent written out: ``W ← W − α ∂J/∂W`` and ``b ← b − α ∂J/∂b``."""
    return {"w": params["w"] - learning_rate * grads["w"],
            "b": params["b"] - learning_rate * grads["b"]}


def _max_abs_diff(a, b):
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return jnp.max(jnp.stack([jnp.max(jnp.abs(u - v)) for u, v in leaves]))


@functools.partial(jax.jit, static_argnums=(0, 1))
def checked_gradient(chain, loss, layer_params, x, y):
    """``(value, engine_grad, diffs)`` for the one-layer chain, jitted (chain and loss are static,
    so the compiled check is reused across calls).

    ``diffs = [|engine − closed|, |engine − jax.grad|, |closed − jax.grad|, max |engine|]``,
    each the largest entry over all parameters.
    """
    value, (grads,) = value_and_grad(chain, loss)((layer_params,), x, y)
    closed = closed_form_grad(layer_params, x, y)
    autodiff = jax.grad(lambda p: loss.apply(chain.apply((p,), x), y))(layer_params)
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree_util.tree_leaves(grads)]))
    diffs = jnp.stack([_max_abs_diff(grads, closed), _max_abs_diff(grads, autodiff),
                       _max_abs_diff(closed, autodiff), scale])
    return value, grads, diffs


def _accuracy(chain, layer_params, x, y):
    logits = chain.apply((layer_params,), jnp.asarray(x))
    return float(jnp.mean((logits > 0) == (jnp.asarray(y) > 0.5)))


@dataclass
class MethodResult:
    """One training run: loss per step (before each update), final accuracies."""
    name: str
    losses: list = field(default_factory=list)
    train_accuracy: float = float("nan")
    test_accuracy: float = float("nan")


@dataclass
class LogisticResult:
    """Both trainings and the gradient agreement over every step of both.

    ``max_diff`` maps ``"engine-closed"``, ``"engine-jax"``, ``"closed-jax"`` to the largest
    absolute difference of any gradient entry seen; ``max_rel_diff`` the same divided by the
    largest gradient entry of that step.
    """
    dtype: str
    steps: int
    n_train: int
    n_test: int
    methods: list
    max_diff: dict
    max_rel_diff: dict
    checks: int


_PAIRS = ("engine-closed", "engine-jax", "closed-jax")


def train(steps: int = 300, learning_rate: float = 0.5, adam_learning_rate: float = 0.05,
          seed: int = 0, dtype: str = "float64", test_fraction: float = 0.2) -> LogisticResult:
    """Train twice from the same initial weights: plain gradient descent with ``learning_rate``
    (:func:`gradient_descent_step`) and ``optax.adam(adam_learning_rate)``; check the gradient
    against the closed form and ``jax.grad`` at every step of both."""
    import optax

    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    with float64(dtype == "float64"):
        data = load_data(seed, test_fraction, np.dtype(dtype))
        chain = Chain([Dense(data.x_train.shape[1], 1)])
        loss = BinaryCrossEntropyWithLogits()
        (initial,) = chain.init(jax.random.PRNGKey(seed), dtype=jnp.dtype(dtype))
        x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

        worst = np.zeros(3)
        worst_rel = np.zeros(3)
        checks = 0

        def record(diffs):
            nonlocal checks
            diffs = np.asarray(diffs, dtype=np.float64)
            np.maximum(worst, diffs[:3], out=worst)
            if diffs[3] > 0:
                np.maximum(worst_rel, diffs[:3] / diffs[3], out=worst_rel)
            checks += 1

        descent = MethodResult(f"gradient descent (lr {learning_rate:g})")
        params = initial
        for _ in range(steps):
            value, grads, diffs = checked_gradient(chain, loss, params, x, y)
            record(diffs)
            descent.losses.append(float(value))
            params = gradient_descent_step(params, grads, learning_rate)
        descent.train_accuracy = _accuracy(chain, params, data.x_train, data.y_train)
        descent.test_accuracy = _accuracy(chain, params, data.x_test, data.y_test)

        adam = MethodResult(f"optax.adam (lr {adam_learning_rate:g})")
        optimizer = optax.adam(adam_learning_rate)
        update = jax.jit(optimizer.update)
        params = initial
        state = optimizer.init(params)
        for _ in range(steps):
            value, grads, diffs = checked_gradient(chain, loss, params, x, y)
            record(diffs)
            adam.losses.append(float(value))
            updates, state = update(grads, state, params)
            params = optax.apply_updates(params, updates)
        adam.train_accuracy = _accuracy(chain, params, data.x_train, data.y_train)
        adam.test_accuracy = _accuracy(chain, params, data.x_test, data.y_test)

    return LogisticResult(dtype=dtype, steps=steps, n_train=len(data.x_train), n_test=len(data.x_test),
                          methods=[descent, adam], max_diff=dict(zip(_PAIRS, worst.tolist())),
                          max_rel_diff=dict(zip(_PAIRS, worst_rel.tolist())), checks=checks)


def format_report(result: LogisticResult) -> str:
    """The plain-text report ``jacket train logistic`` prints."""
    from .._table import format_table

    rows = [[m.name, m.losses[0], m.losses[-1], m.train_accuracy, m.test_accuracy] for m in result.methods]
    training = format_table(["optimizer", "loss (step 1)", f"loss (step {result.steps})", "train accuracy",
                             "test accuracy"], rows,
                            title=f"logistic regression, breast cancer ({result.n_train} train / "
                                  f"{result.n_test} test), {result.steps} steps, {result.dtype}")
    labels = {"engine-closed": "engine vs closed form Xᵀ(p−y)/N",
              "engine-jax": "engine vs jax.grad",
              "closed-jax": "closed form vs jax.grad"}
    agreement = format_table(["gradients compared", "max |difference|", "max relative"],
                             [[labels[k], result.max_diff[k], result.max_rel_diff[k]] for k in _PAIRS],
                             title=f"gradient agreement over {result.checks} steps ({result.dtype})")
    return training + "\n\n" + agreement
