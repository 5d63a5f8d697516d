"""A one-block transformer that learns to sort (or reverse) strings of digits, with optax.adam.

Task: random strings of ``length`` tokens from a vocabulary of ``vocab`` digits (T = 8, V = 10
by default), generated here from a seed; the target at position t is token t of the sorted
string (``task="sort"``) or of the reversed one (``task="reverse"``). Sorting needs every
position to look at the whole string (how many digits are smaller), reversing a fixed routing
t → T−1−t that only the position embedding can tell apart: both are attention's job.

Model, one example ``(T, V)`` (one-hot float rows) to logits ``(T, V)``; the shapes::

    Dense(V, d)                 (T, V) -> (T, d)   one-hot + Dense = an embedding table:
                                                   row t is w[token_t] + b
    PositionEmbedding(T, d)     + a learned (T, d) table
    Residual([LayerNorm(d), MultiHeadSelfAttention(d, heads)])          pre-norm attention
    Residual([LayerNorm(d), Dense(d, 4d), GELU(), Dense(4d, d)])        pre-norm MLP
    LayerNorm(d), Dense(d, V)   (T, d) -> (T, V)
    J = mean over (b, t) of [logsumexp(z_bt) − z_bt[label_bt]]   SoftmaxCrossEntropy on
                                logits (B, T, V) with integer labels (B, T)

A network that knows nothing predicts 1/V everywhere: loss ln V, the chance level the report
compares with. Training uses a fixed set of ``n_train`` strings in shuffled mini-batches (the
epoch loop of :func:`jacket.examples.run_epochs`); the held-out strings are drawn from the same
seed and never occur in the training set. Gradients come from ``jacket.value_and_grad``
(attention's, LayerNorm's and GELU's hand-written rules) in one jitted step, float32.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import (GELU, Chain, Dense, LayerNorm, MultiHeadSelfAttention, PositionEmbedding, Residual,
                SoftmaxCrossEntropy)
from . import Data, TrainResult, run_epochs
from . import mlp as _mlp

__all__ = ["TASKS", "TransformerResult", "make_strings", "load_data", "make_chain", "train", "save_plot",
           "format_report"]

TASKS = ("sort", "reverse")


def make_strings(n: int, length: int, vocab: int, rng) -> np.ndarray:
    """``n`` strings of ``length`` tokens uniform in ``[0, vocab)``: int32 ``(n, length)``."""
    return rng.integers(0, vocab, (n, length)).astype(np.int32)


def _targets(tokens: np.ndarray, task: str) -> np.ndarray:
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return np.sort(tokens, axis=1) if task == "sort" else np.ascontiguousarray(tokens[:, ::-1])


def load_data(task: str = "sort", n_train: int = 8192, n_test: int = 1024, length: int = 8, vocab: int = 10,
              seed: int = 0) -> Data:
    """Inputs one-hot float32 ``(n, length, vocab)``, labels int32 ``(n, length)``. The held-out
    strings are drawn after the training ones and any that also occur in training are dropped,
    so the test split may hold slightly fewer than ``n_test`` (none, for T = 8 and V = 10)."""
    rng = np.random.default_rng(seed)
    train = make_strings(n_train, length, vocab, rng)
    test = make_strings(n_test, length, vocab, rng)
    seen = {row.tobytes() for row in train}
    test = test[[row.tobytes() not in seen for row in test]]
    eye = np.eye(vocab, dtype=np.float32)
    return Data(eye[train], _targets(train, task), eye[test], _targets(test, task))


def make_chain(length: int = 8, vocab: int = 10, d_model: int = 32, heads: int = 4) -> Chain:
    """The block of the module docstring: one example ``(length, vocab)`` to ``(length, vocab)``."""
    t, v, d = length, vocab, d_model
    # The bodies take their shape, (t, d), from where the outer chain uses them.
    attention = Chain([LayerNorm(d), MultiHeadSelfAttention(d, heads)])
    feed_forward = Chain([LayerNorm(d), Dense(d, 4 * d), GELU(), Dense(4 * d, d)])
    return Chain([Dense(v, d), PositionEmbedding(t, d), Residual(attention), Residual(feed_forward),
                  LayerNorm(d), Dense(d, v)], in_shape=(t, v))


@functools.partial(jax.jit, static_argnums=0)
def _sequence_accuracy(chain: Chain, params, x, y):
    """The fraction of strings with every position right."""
    return jnp.mean(jnp.all(jnp.argmax(chain.apply(params, x), axis=-1) == y, axis=-1))


@dataclass
class TransformerResult(TrainResult):
    """A training run (:class:`jacket.examples.TrainResult`; accuracies are per token), with
    the task, the chance level ``ln V`` and the held-out whole-string accuracy."""
    task: str = "sort"
    length: int = 8
    vocab: int = 10
    d_model: int = 32
    heads: int = 4
    initial_test_loss: float = float("nan")
    test_sequence_accuracy: float = float("nan")
    model: str = ""

    @property
    def chance(self) -> float:
        return math.log(self.vocab)


def train(task: str = "sort", epochs: int = 8, batch_size: int = 64, learning_rate: float = 3e-3,
          seed: int = 0, length: int = 8, vocab: int = 10, d_model: int = 32, heads: int = 4,
          n_train: int = 8192, max_steps: int | None = None, progress: bool = True,
          log=print) -> TransformerResult:
    """Train with mini-batch ``optax.adam(learning_rate)`` for ``epochs`` over ``n_train``
    strings (or ``max_steps`` steps). ``seed`` fixes the strings, the initial weights and the
    shuffles. ``log`` receives one line per epoch when no progress bar is shown."""
    import optax

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if batch_size > n_train:
        raise ValueError(f"batch_size {batch_size} exceeds the {n_train} training strings")
    data = load_data(task, n_train=n_train, length=length, vocab=vocab, seed=seed)
    chain = make_chain(length, vocab, d_model, heads)
    loss = SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(seed), dtype=jnp.float32)
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    update = _mlp.make_update(chain, loss, optimizer)
    evaluate = functools.partial(_mlp._evaluate, chain, loss)  # (loss, per-token accuracy)
    train_split = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    test_split = jnp.asarray(data.x_test), jnp.asarray(data.y_test)

    total = epochs * (n_train // batch_size)
    result = TransformerResult(epochs=epochs, steps=total if max_steps is None else min(max_steps, total),
                               batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                               n_train=n_train, n_test=len(data.x_test), task=task, length=length,
                               vocab=vocab, d_model=d_model, heads=heads, model=" → ".join(map(repr, chain.layers)),
                               initial_train_loss=float(evaluate(params, *train_split)[0]),
                               initial_test_loss=float(evaluate(params, *test_split)[0]))
    params, _ = run_epochs(update, evaluate, params, opt_state, train_split, test_split, result,
                           np.random.default_rng(seed), progress=progress, log=log)
    result.test_sequence_accuracy = float(_sequence_accuracy(chain, params, *test_split))
    return result


def save_plot(result: TransformerResult, path) -> None:
    """The loss and per-token accuracy curves (:func:`jacket.examples.mlp.save_plot`) as a PNG."""
    _mlp.save_plot(result, path, title=f"{result.task} T={result.length} V={result.vocab}, "
                                        f"transformer block d={result.d_model} heads={result.heads}")


def format_report(result: TransformerResult) -> str:
    """Summary lines; the last one is ``held-out sequence accuracy: 0.xxxx``."""
    chance = result.chance
    return "\n".join([
        f"task: {result.task} strings of {result.length} digits in [0, {result.vocab}): "
        f"{result.n_train} train / {result.n_test} held-out strings",
        f"model: {result.model}",
        f"epochs: {result.epochs}, {result.steps} steps of batch {result.batch_size}, {result.seconds:.1f} s",
        f"chance level ln {result.vocab}: {chance:.4f}",
        f"train loss: {result.initial_train_loss:.4f} -> {result.epoch_train_loss[-1]:.4f} "
        f"({result.epoch_train_loss[-1] / chance:.3f} × chance)",
        f"held-out loss: {result.initial_test_loss:.4f} -> {result.epoch_test_loss[-1]:.4f} "
        f"({result.epoch_test_loss[-1] / chance:.3f} × chance)",
        f"held-out token accuracy: {result.test_accuracy:.4f}",
        f"held-out sequence accuracy: {result.test_sequence_accuracy:.4f}",
    ])
