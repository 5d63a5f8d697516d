"""A one-hidden-layer network on the 8×8 digits, trained by backpropagation and optax.adam.

Model and loss (notes/backprop.md, "The delta recursion")::

    logits = W₂ᵀ tanh(W₁ᵀ x + b₁) + b₂          Chain([Dense(64, 32), Tanh(), Dense(32, 10)])
    J = mean_b [logsumexp(logits_b) − logits_b[label_b]]      SoftmaxCrossEntropy

Data: scikit-learn's digits (1797 images of 8×8 pixels in 0…16, ten classes), pixels scaled by
1/16, a fixed seeded 80/20 split. Mini-batches are drawn from a seeded shuffle each epoch (the
last partial batch is dropped, so every step has the same shape and the update compiles once).

Gradients come from ``jacket.value_and_grad`` inside one jitted update step; before training,
the engine's gradient on the first batch is compared with ``jax.grad`` (the reference).
Everything runs in float32. Same seed, same machine: same accuracy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import Chain, Dense, SoftmaxCrossEntropy, mlp, value_and_grad
from . import Data, TrainResult, load_sklearn_dataset, run_epochs, split

__all__ = ["MLPResult", "load_data", "make_chain", "gradient_check", "backprop_by_hand", "make_update",
           "train", "save_plot", "format_report"]

ACTIVATIONS = ("tanh", "sigmoid")


def load_data(seed: int = 0, test_fraction: float = 0.2) -> Data:
    """The digits, scaled by 1/16 (pixel values run 0…16), split by ``seed``: pixels ``(n, 64)``
    float32 in [0, 1], labels ``(n,)`` int32."""
    x, y = load_sklearn_dataset("digits")
    train, test = split(len(x), test_fraction, seed)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    return Data(x[train], y[train], x[test], y[test])


def make_chain(hidden: int = 32, activation: str = "tanh") -> Chain:
    """``Chain([Dense(64, hidden), Tanh() or Sigmoid(), Dense(hidden, 10)])``, from :func:`jacket.mlp`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return mlp([64, hidden, 10], activation=activation)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _both_gradients(chain, loss, params, x, y):
    _, engine = value_and_grad(chain, loss)(params, x, y)
    reference = jax.grad(lambda p: loss.apply(chain.apply(p, x), y))(params)
    return engine, reference


def gradient_check(chain: Chain, loss, params, x, y) -> tuple[float, float]:
    """``(max |engine − jax.grad|, max |engine|)`` over every parameter entry, on one batch."""
    engine, reference = _both_gradients(chain, loss, params, x, y)
    pairs = zip(jax.tree_util.tree_leaves(engine), jax.tree_util.tree_leaves(reference))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(engine))
    return diff, scale


def backprop_by_hand(chain: Chain, params, x, labels):
    """The delta recursion written out for ``Dense → activation → Dense`` with softmax
    cross-entropy: the gradient tuple ``chain`` and ``jacket.value_and_grad`` should produce.

    x: ``(B, 64)``, labels ``(B,)`` -> ``({"w", "b"}, {}, {"w", "b"})``. With ``w`` stored
    ``(in, out)`` and examples as rows, ``W⁽ˡ⁾ᵀ δ⁽ˡ⁾`` is the row form ``δ⁽ˡ⁾ @ wᵀ``
    (notes/backprop.md, "The delta recursion").
    """
    first, activation, last = chain.layers
    if not (isinstance(first, Dense) and isinstance(last, Dense)) or first.bias is False or last.bias is False:
        raise ValueError(f"backprop_by_hand expects Dense → activation → Dense with biases, got {chain!r}")
    p1, _, p2 = params
    z1 = x @ p1["w"] + p1["b"]                       # (B, H) pre-activations
    a1 = activation.apply({}, z1)                    # (B, H)
    z2 = a1 @ p2["w"] + p2["b"]                      # (B, C) logits
    onehot = jax.nn.one_hot(labels, z2.shape[-1], dtype=z2.dtype)
    delta2 = (jax.nn.softmax(z2, axis=-1) - onehot) / x.shape[0]  # fused softmax + cross-entropy: a − y
    delta1 = activation.derivative(z1, a1) * (delta2 @ p2["w"].T)  # δ¹ = f'(z¹) ⊙ W²ᵀ δ²
    return ({"w": x.T @ delta1, "b": delta1.sum(axis=0)},  # weight gradients: input ᵀ · delta,
            {},                                              # outer products summed over the batch
            {"w": a1.T @ delta2, "b": delta2.sum(axis=0)})


def make_update(chain: Chain, loss, optimizer):
    """The jitted step ``(params, opt_state, x, y) -> (params, opt_state, loss)``: the gradient
    from backpropagation (``jacket.value_and_grad``), the update from ``optimizer`` (optax)."""
    import optax

    grad_fn = value_and_grad(chain, loss)

    @jax.jit
    def update(params, opt_state, x, y):
        value, grads = grad_fn(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value
    return update


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(chain: Chain, loss, params, x, y):
    """``(mean loss, accuracy)`` on a whole split."""
    logits = chain.apply(params, x)
    return loss.apply(logits, y), jnp.mean(jnp.argmax(logits, axis=-1) == y)


@dataclass
class MLPResult(TrainResult):
    """A training run (:class:`jacket.examples.TrainResult`), with the network and the check."""
    hidden: int = 32
    activation: str = "tanh"
    grad_check_diff: float = float("nan")
    grad_check_scale: float = float("nan")


def train(epochs: int = 30, batch_size: int = 32, learning_rate: float = 1e-2, seed: int = 0,
          hidden: int = 32, activation: str = "tanh", max_steps: int | None = None,
          progress: bool = True, log=print, devices: int | None = None) -> MLPResult:
    """Train with mini-batch ``optax.adam(learning_rate)`` for ``epochs`` (or ``max_steps``).

    ``devices``: data-parallel over that many devices (each mini-batch split across them, the
    parameters and optimizer state replicated; see ``jacket.sharding.data_parallel``).

    ``seed`` fixes the split, the initial weights and the shuffles. ``log`` receives the gradient
    check's line, then one line per epoch when no progress bar is shown (``None``: silence).
    """
    import optax

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    data = load_data(seed)
    if batch_size > len(data.x_train):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(data.x_train)} training examples")
    chain = make_chain(hidden, activation)
    loss = SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(seed), dtype=jnp.float32)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    update = make_update(chain, loss, optimizer)
    dp = None
    if devices is not None:
        from ..execute.sharding import data_parallel
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        dp = data_parallel(devices)  # a clear error if JAX sees fewer devices
        if batch_size % devices:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {devices} devices")
        params, opt_state = dp.put_replicated(params), dp.put_replicated(opt_state)
        if log is not None:
            log(f"data-parallel over {devices} devices: {dp.mesh.devices.ravel().tolist()}")
    x_train, y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    first = order[:batch_size]
    diff, scale = gradient_check(chain, loss, params, x_train[first], y_train[first])
    if log is not None:
        log(f"gradient check on one batch of {batch_size}: max |engine − jax.grad| = {diff:.2e} "
            f"(largest gradient entry {scale:.2e}, float32)")

    steps_per_epoch = len(x_train) // batch_size
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    result = MLPResult(epochs=epochs, steps=total, batch_size=batch_size, learning_rate=learning_rate,
                       seed=seed, hidden=hidden, activation=activation, n_train=len(x_train), n_test=len(x_test),
                       grad_check_diff=diff, grad_check_scale=scale,
                       initial_train_loss=float(_evaluate(chain, loss, params, x_train, y_train)[0]))
    put_batch = None if dp is None else dp.put_batch
    run_epochs(update, functools.partial(_evaluate, chain, loss), params, opt_state, (x_train, y_train),
               (x_test, y_test), result, rng, order=order, progress=progress, log=log, put_batch=put_batch)
    return result


def save_plot(result: TrainResult, path, title: str | None = None) -> None:
    """Loss per step and per epoch (left), train/test accuracy per epoch (right), as a PNG.

    ``result``: any :class:`jacket.examples.TrainResult`; ``title``: the figure's title
    (default: this MLP's layers and settings).

    Raises ``ImportError`` naming the extra to install if matplotlib is missing.
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone
    except ImportError as err:
        from . import INSTALL_HINT
        raise ImportError(f"saving the training curve needs matplotlib; install it with: {INSTALL_HINT}") from err
    steps_per_epoch = result.steps / max(result.epochs, 1)
    epoch_ends = [steps_per_epoch * (e + 1) for e in range(result.epochs)]
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    left.plot(range(1, len(result.step_losses) + 1), result.step_losses, lw=0.6, alpha=0.6,
              label="mini-batch loss")
    left.plot(epoch_ends, result.epoch_train_loss, "o-", label="train loss (end of epoch)")
    left.set_xlabel("step")
    left.set_ylabel("softmax cross-entropy")
    left.set_yscale("log")
    left.legend()
    epochs = range(1, result.epochs + 1)
    right.plot(epochs, result.epoch_train_accuracy, "o-", label="train")
    right.plot(epochs, result.epoch_test_accuracy, "s-", label="test")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy")
    right.legend()
    if title is None:
        h = result.hidden
        title = f"digits, Dense(64,{h})–{result.activation}–Dense({h},10)"
    fig.suptitle(f"{title}, adam lr {result.learning_rate:g}, batch {result.batch_size}, seed {result.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def format_report(result: TrainResult) -> str:
    """Summary lines; the last one is ``test accuracy: 0.xxxx``."""
    return "\n".join([
        f"digits: {result.n_train} train / {result.n_test} test, epochs: {result.epochs}, {result.steps} steps "
        f"of batch {result.batch_size}, {result.seconds:.1f} s",
        f"train loss: {result.initial_train_loss:.4f} -> {result.epoch_train_loss[-1]:.4f}",
        f"train accuracy: {result.epoch_train_accuracy[-1]:.4f}",
        f"test accuracy: {result.test_accuracy:.4f}",
    ])
