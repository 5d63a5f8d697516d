"""A small residual CNN on the 8×8 digits, trained by backpropagation and optax.adam.

Model (images channel-first, one example ``(1, 8, 8)``; the shapes between the layers)::

    Conv2D(1, 16, 3)                                   (1, 8, 8)  -> (16, 8, 8)   "SAME" padding
    ReLU
    Residual([Conv2D(16, 16, 3), ReLU, Conv2D(16, 16, 3)])   y = x + f(x), (16, 8, 8) kept
    ReLU
    MaxPool2D(2)                                       (16, 8, 8) -> (16, 4, 4)
    Flatten                                            (16, 4, 4) -> (256,)
    Dense(256, 10)                                     logits
    J = mean_b [logsumexp(logits_b) − logits_b[label_b]]      SoftmaxCrossEntropy

Data: scikit-learn's digits as in :mod:`jacket.examples.mlp` (pixels / 16, the same seeded
80/20 split), each row of 64 pixels reshaped to one ``(1, 8, 8)`` image. Mini-batches, epochs
and the report are mlp's (:func:`jacket.examples.run_epochs`, :func:`mlp.format_report`).

Gradients come from ``jacket.value_and_grad`` (the layers' hand-written VJP rules: the
transposed convolution, the pooling scatter, the skip connection passing ``y_bar`` through)
inside one jitted update step; no JAX autodiff runs here. Everything runs in float32.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import Chain, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Residual, SoftmaxCrossEntropy
from . import Data, TrainResult, run_epochs
from . import mlp as _mlp

__all__ = ["CNNResult", "load_data", "make_chain", "train", "save_plot", "format_report"]

IMAGE = (1, 8, 8)  # channels, height, width
CLASSES = 10


def load_data(seed: int = 0, test_fraction: float = 0.2) -> Data:
    """The digits as images: pixels ``(n, 1, 8, 8)`` float32 in [0, 1], labels ``(n,)`` int32
    (the split of :func:`jacket.examples.mlp.load_data`, same seed, same images)."""
    flat = _mlp.load_data(seed, test_fraction)
    return Data(flat.x_train.reshape((-1,) + IMAGE), flat.y_train,
                flat.x_test.reshape((-1,) + IMAGE), flat.y_test)


def make_chain(channels: int = 16) -> Chain:
    """The residual CNN of the module docstring with ``channels`` feature maps:
    ``(1, 8, 8)`` images to ``(10,)`` logits."""
    c = channels
    return Chain([Conv2D(1, c, 3), ReLU(),
                  Residual(Chain([Conv2D(c, c, 3), ReLU(), Conv2D(c, c, 3)])), ReLU(),
                  MaxPool2D(2), Flatten(), Dense(c * 4 * 4, CLASSES)], in_shape=IMAGE)


@dataclass
class CNNResult(TrainResult):
    """A training run (:class:`jacket.examples.TrainResult`), with the network's width."""
    channels: int = 16
    model: str = ""


def train(epochs: int = 15, batch_size: int = 32, learning_rate: float = 3e-3, seed: int = 0,
          channels: int = 16, max_steps: int | None = None, progress: bool = True, log=print) -> CNNResult:
    """Train with mini-batch ``optax.adam(learning_rate)`` for ``epochs`` (or ``max_steps``).

    ``seed`` fixes the split, the initial weights and the shuffles. ``log`` receives one line
    per epoch when no progress bar is shown (``None``: silence).
    """
    import optax

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    data = load_data(seed)
    if batch_size > len(data.x_train):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(data.x_train)} training examples")
    chain = make_chain(channels)
    loss = SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(seed), dtype=jnp.float32)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    update = _mlp.make_update(chain, loss, optimizer)
    evaluate = functools.partial(_mlp._evaluate, chain, loss)
    train_split = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    test_split = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    total = epochs * (len(data.x_train) // batch_size)
    result = CNNResult(epochs=epochs, steps=total if max_steps is None else min(max_steps, total),
                       batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                       n_train=len(data.x_train), n_test=len(data.x_test), channels=channels,
                       model=" → ".join(map(repr, chain.layers)),
                       initial_train_loss=float(evaluate(params, *train_split)[0]))
    run_epochs(update, evaluate, params, opt_state, train_split, test_split, result,
               np.random.default_rng(seed), progress=progress, log=log)
    return result


def save_plot(result: CNNResult, path) -> None:
    """The loss and accuracy curves (:func:`jacket.examples.mlp.save_plot`) as a PNG."""
    _mlp.save_plot(result, path, title=f"digits, residual CNN ({result.channels} channels)")


def format_report(result: CNNResult) -> str:
    """The model, then mlp's summary lines; the last one is ``test accuracy: 0.xxxx``."""
    return f"model: {result.model}\n" + _mlp.format_report(result)
