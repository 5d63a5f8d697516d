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



def _fd_points(params, x, y_bar, second):
    """The points of the finite differences of vjp_jvp along each ``(x_dot, params_dot,
    y_bar_dot)`` of ``second`` (None: zero), three per direction, stacked in float64:
    ``(θ + h v, ȳ)``, ``(θ - h v, ȳ)`` and ``(θ, ȳ̇)``, with ``v = (params_dot, x_dot)`` and the step
    of :func:`_finite_difference`. Returns ``((params, x, y_bar) stacked, steps)``."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    p = [np.asarray(a, np.float64) for a in leaves]
    xx, yb = np.asarray(x, np.float64), np.asarray(y_bar, np.float64)
    points, steps = [], []
    for x_dot, params_dot, y_bar_dot in second:
        p_d = [np.zeros_like(a) for a in p] if params_dot is None else \
            [np.asarray(d, np.float64) for d in jax.tree_util.tree_leaves(params_dot)]
        x_d = np.zeros_like(xx) if x_dot is None else np.asarray(x_dot, np.float64)
        norm = max(np.max(np.abs(a), initial=0.0) for a in p_d + [x_d])
        scale = max(np.max(np.abs(a), initial=1.0) for a in p + [xx])
        h = _STEP * scale / norm if norm else 0.0
        yb_d = np.zeros_like(yb) if y_bar_dot is None else np.asarray(y_bar_dot, np.float64)
        points += [([a + h * d for a, d in zip(p, p_d)], xx + h * x_d, yb),
                   ([a - h * d for a, d in zip(p, p_d)], xx - h * x_d, yb), (p, xx, yb_d)]
        steps.append(h)
    with jax.enable_x64(True):  # _put inside: without x64 it would round to float32
        stacked = (treedef.unflatten([_put(np.stack([pt[0][i] for pt in points])) for i in range(len(p))]),
                   _put(np.stack([pt[1] for pt in points])), _put(np.stack([pt[2] for pt in points])))
    return stacked, steps


def _fd_from_pullbacks(pullbacks, steps):
    """``[(params_bar_dot, x_bar_dot), …]``, one per direction, from the vjp at the points of
    :func:`_fd_points`: ``(vjp(θ + h v, ȳ) - vjp(θ - h v, ȳ)) / 2h + vjp(θ, ȳ̇)`` (linear in ȳ)."""
    params_bars, x_bars = pullbacks
    treedef = jax.tree_util.tree_structure(params_bars)
    pb_leaves = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(params_bars)]
    x_bars = np.asarray(x_bars, np.float64)

    def tangent(stack, k, h):
        return ((stack[3 * k] - stack[3 * k + 1]) / (2 * h) if h else 0.0) + stack[3 * k + 2]
    return [(treedef.unflatten([tangent(a, k, h) for a in pb_leaves]), tangent(x_bars, k, h))
            for k, h in enumerate(steps)]
