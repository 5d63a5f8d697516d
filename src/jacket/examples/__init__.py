"""Worked examples: the classic backpropagation questions, runnable (``jacket train ...``).

- :mod:`jacket.examples.logistic`: logistic regression on the breast-cancer data; the engine's
  gradient against the closed form ``Xᵀ(σ(Xw + b) − y)/N`` and ``jax.grad``, at every step.
- :mod:`jacket.examples.mlp`: a one-hidden-layer network on the 8×8 digits, trained with optax.
- :mod:`jacket.examples.cnn`: a small residual CNN (Conv2D, Residual, MaxPool2D) on the same digits.
- :mod:`jacket.examples.transformer`: a one-block transformer (self-attention, LayerNorm, GELU)
  that learns to sort or reverse digit strings the package generates itself.
- :mod:`jacket.examples.newton`: Gauss-Newton (Levenberg-Marquardt) steps solved by conjugate
  gradient with ``jacket.ggn_vp`` (and Newton-CG with ``jacket.hvp``) against gradient descent
  and adam, on the logistic and MLP problems: steps to a target training loss.

The data sets ship inside scikit-learn, an optional extra (``pip install "jacket[examples]"``);
it is imported only when an example runs, so ``import jacket`` stays light. The derivations
are in ``notes/backprop.md`` and ``notes/index-free.md``.

Here live the helpers the examples share: loading a scikit-learn data set with a clear error
when the extra is missing, a fixed, seeded train/test split (:class:`Data`), a float64 context,
and the mini-batch epoch loop of the optax examples (:func:`run_epochs`, :class:`TrainResult`).
None of them imports JAX at import time.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Data", "load_sklearn_dataset", "split", "float64", "TrainResult", "progress_bar", "run_epochs"]

INSTALL_HINT = 'pip install "jacket[examples]"'


@dataclass(frozen=True)
class Data:
    """Features ``(n, d)`` and targets, split into train and test (numpy arrays)."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_sklearn_dataset(name: str):
    """``(features, targets)`` as numpy arrays from ``sklearn.datasets.load_<name>()``.

    Raises ``ImportError`` naming the extra to install if scikit-learn is missing.
    """
    try:
        from sklearn import datasets
    except ImportError as err:
        raise ImportError(f"this example needs scikit-learn for its data set ({name}); "
                          f"install it with: {INSTALL_HINT}") from err
    bunch = getattr(datasets, f"load_{name}")()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def split(n: int, test_fraction: float, seed: int):
    """Indices ``(train, test)`` of a seeded random permutation of ``range(n)``.

    numpy's PCG64 generator gives the same permutation on every platform, so a seed fixes the
    split once and for all.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return order[n_test:], order[:n_test]


def float64(enabled: bool = True):
    """A context in which JAX creates float64 arrays (``jax.enable_x64(True)``, or the older
    ``jax.experimental.enable_x64()``); a no-op context when ``enabled`` is false."""
    if not enabled:
        return contextlib.nullcontext()
    import jax

    ctx = getattr(jax, "enable_x64", None)
    if callable(ctx):
        return ctx(True)
    from jax.experimental import enable_x64  # jax < 0.5
    return enable_x64()


@dataclass
class TrainResult:
    """A mini-batch training run: per-step losses, per-epoch metrics on the whole splits.

    ``epochs`` is the number of epochs asked for until :func:`run_epochs` sets it to the number
    run; ``steps`` is the number of update steps; ``seconds`` the loop's wall time (the first
    step includes compiling it).
    """
    epochs: int
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    n_train: int
    n_test: int
    initial_train_loss: float
    step_losses: list = field(default_factory=list)
    epoch_train_loss: list = field(default_factory=list)
    epoch_train_accuracy: list = field(default_factory=list)
    epoch_test_loss: list = field(default_factory=list)
    epoch_test_accuracy: list = field(default_factory=list)
    seconds: float = float("nan")

    @property
    def test_accuracy(self) -> float:
        return self.epoch_test_accuracy[-1]


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over ``total`` steps, or ``None`` when disabled or tqdm isn't installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="training", leave=False)


def run_epochs(update, evaluate, params, opt_state, train, test, result: TrainResult, rng,
               order=None, progress: bool = True, log=print, put_batch=None):
    """The epoch loop: ``result.steps`` update steps in epochs of ``len(x_train) // batch_size``
    mini-batches (the last partial batch dropped, so every step has one shape and the update
    compiles once), a fresh ``rng.permutation`` each epoch (``order``: the first epoch's).

    ``update(params, opt_state, x, y) -> (params, opt_state, loss)``; ``evaluate(params, x, y)
    -> (mean loss, accuracy)`` on a whole split after every epoch; ``train``, ``test``: pairs
    ``(x, y)`` of arrays with the examples on the first axis; ``put_batch(x, y)`` places a batch
    (data parallel). Fills ``result``'s lists, ``epochs`` and ``seconds``; ``log`` gets one line
    per epoch when no progress bar is shown (``None``: silence). Returns ``(params, opt_state)``.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    batch_size, total = result.batch_size, result.steps
    steps_per_epoch = len(x_train) // batch_size
    bar = progress_bar(total, progress)
    start = time.perf_counter()
    step, epoch = 0, 0
    while step < total:
        epoch += 1
        if order is None or epoch > 1:
            order = rng.permutation(len(x_train))
        for i in range(min(steps_per_epoch, total - step)):
            batch = order[i * batch_size:(i + 1) * batch_size]
            x_batch, y_batch = x_train[batch], y_train[batch]
            if put_batch is not None:
                x_batch, y_batch = put_batch(x_batch, y_batch)
            params, opt_state, value = update(params, opt_state, x_batch, y_batch)
            result.step_losses.append(float(value))
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{result.step_losses[-1]:.4f}", refresh=False)
        train_loss, train_acc = evaluate(params, x_train, y_train)
        test_loss, test_acc = evaluate(params, x_test, y_test)
        for name, value in (("train_loss", train_loss), ("train_accuracy", train_acc),
                            ("test_loss", test_loss), ("test_accuracy", test_acc)):
            getattr(result, f"epoch_{name}").append(float(value))
        if bar is None and log is not None:
            log(f"epoch {epoch:3d}  train loss {train_loss:.4f}  train accuracy {train_acc:.4f}  "
                f"test accuracy {test_acc:.4f}")
    if bar is not None:
        bar.close()
    result.epochs = epoch
    result.seconds = time.perf_counter() - start
    return params, opt_state
