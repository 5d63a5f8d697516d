"""Finite differences: the reference that uses no autodiff at all, computed in float64."""
from __future__ import annotations

import jax
import numpy as np

from ._cases import _put
from ._compiled import _apply


_STEP = np.finfo(np.float64).eps ** (1 / 3)  # balances truncation error (∝ h²) and rounding (∝ ε/h)


def _finite_difference(s, params, x, params_dot, x_dot):
    """``(f(θ + h v) - f(θ - h v)) / 2h`` in float64 along ``v = (params_dot, x_dot)`` (None: zero).
    The step is relative to the size of the point, along v scaled to max-norm 1."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    p = [np.asarray(a, np.float64) for a in leaves]
    p_d = [np.zeros_like(a) for a in p] if params_dot is None else \
        [np.asarray(d, np.float64) for d in jax.tree_util.tree_leaves(params_dot)]
    xx = np.asarray(x, np.float64)
    x_d = np.zeros_like(xx) if x_dot is None else np.asarray(x_dot, np.float64)
    size = max(np.max(np.abs(a), initial=0.0) for a in p_d + [x_d])
    scale = max(np.max(np.abs(a), initial=1.0) for a in p + [xx])
    h = _STEP * scale / size if size else 0.0
    with jax.enable_x64(True):
        def at(t):
            shifted = treedef.unflatten([_put(a + t * d) for a, d in zip(p, p_d)])
            return np.asarray(_apply(s, shifted, _put(xx + t * x_d)), np.float64)
        return (at(h) - at(-h)) / (2 * h) if size else np.zeros_like(at(0.0))


def _fd_pullback(s, params, x, y_bar):
    """``(params_bar, x_bar)`` = Jᵀȳ by central differences along every unit direction: the
    fallback when JAX cannot differentiate apply (two applies per element of x and params)."""
    y_bar = np.asarray(y_bar, np.float64)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def pull(shape, direction):
        out = np.zeros(shape)
        for k in range(out.size):
            unit = np.zeros(shape)
            unit.flat[k] = 1.0
            out.flat[k] = np.vdot(y_bar, _finite_difference(s, params, x, *direction(unit)))
        return out

    def leaf(i):
        return lambda unit: (treedef.unflatten([unit if j == i else np.zeros(np.shape(a))
                                                for j, a in enumerate(leaves)]), None)
    return (treedef.unflatten([pull(np.shape(a), leaf(i)) for i, a in enumerate(leaves)]),
            pull(np.shape(x), lambda unit: (None, unit)))
