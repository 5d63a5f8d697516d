"""Worked examples: the classic backpropagation questions, runnable (``jacket train ...``).

- :mod:`jacket.examples.logistic`: logistic regression on the breast-cancer data; the engine's
  gradient against the closed form ``Xᵀ(σ(Xw + b) − y)/N`` and ``jax.grad``, at every step.
- :mod:`jacket.examples.mlp`: a one-hidden-layer network on the 8×8 digits, trained with optax.

The data sets ship inside scikit-learn, an optional extra (``pip install "jacket[examples]"``);
it is imported only when an example runs, so ``import jacket`` stays light. The derivations
are in ``notes/backprop.md`` and ``notes/index-free.md``.

Here live the helpers the examples share: loading a scikit-learn data set with a clear error
when the extra is missing, a fixed, seeded train/test split (:class:`Data`), and a float64 context.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Data", "load_sklearn_dataset", "split", "float64"]

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
