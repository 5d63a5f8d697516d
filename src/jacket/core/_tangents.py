"""Tangent conventions, handled by the engine so that no user rule has to know them.

* An absent tangent is ``None`` inside the engine (a symbolic zero, as JAX's ``Zero``). A rule
  receives it only if its layer opts in with ``symbolic_zeros = True`` (the built-ins do, to
  skip work); every other rule receives arrays: zeros of the shape and dtype of the primal.
* When every tangent of a layer is absent its output tangent is absent too (the rule is
  linear), so the rule is not called at all.
* Tangents and cotangents have the dtype of their primal: ``y_dot`` that of ``y``, ``x_bar``
  that of ``x``, each leaf of ``params_bar`` that of its parameter (as ``jax.grad`` returns
  float32 gradients for float32 params, whatever the dtype of the input).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["is_absent", "zeros_like_tree", "call_jvp", "call_vjp", "call_vjp_jvp", "cast_like"]


def is_absent(tangent) -> bool:
    """``None``, ``{}`` or any pytree without leaves: no tangent. (Not ``not tangent``: the
    truth value of an array is an error, or a tracer error under jit.)"""
    return tangent is None or not jax.tree_util.tree_leaves(tangent)


def zeros_like_tree(tree):
    return jax.tree_util.tree_map(jnp.zeros_like, tree)


def cast_like(value, primal):
    """``value`` in the dtype of ``primal`` (a no-op when they agree; non-arrays pass through)."""
    dtype = getattr(primal, "dtype", None)
    if dtype is None or getattr(value, "dtype", dtype) == dtype:
        return value
    return value.astype(dtype)


def _cast_tree_like(tree, primals):
    try:
        return jax.tree_util.tree_map(cast_like, tree, primals)
    except (TypeError, ValueError):  # another structure: left as is, for the checker to report
        return tree


def call_jvp(layer, params, x, y, x_dot, params_dot):
    """``y_dot`` from ``layer.jvp`` under the conventions above; ``None`` if both tangents are absent."""
    x_absent, params_absent = x_dot is None, is_absent(params_dot)
    if x_absent and params_absent:
        return None
    if getattr(layer, "symbolic_zeros", False):
        y_dot = layer._jvp_rule(params, x, y, x_dot, None if params_absent else params_dot)
    else:
        y_dot = layer._jvp_rule(params, x, y, jnp.zeros_like(x) if x_absent else x_dot,
                          zeros_like_tree(params) if params_absent else params_dot)
    return cast_like(y_dot, y)


def call_vjp(layer, params, x, y, y_bar):
    """``(params_bar, x_bar)`` from ``layer.vjp``, each in the dtype of its primal."""
    result = layer._vjp_rule(params, x, y, y_bar)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{layer!r}: vjp must return (params_bar, x_bar), got {type(result).__name__}")
    params_bar, x_bar = result
    return _cast_tree_like(params_bar, params), cast_like(x_bar, x)


def call_vjp_jvp(layer, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
    """``(params_bar_dot, x_bar_dot)`` from ``layer.vjp_jvp`` (the tangent of the VJP) under the
    conventions above: ``None`` (or an empty pytree) is an absent tangent, passed as ``None`` to a
    layer with ``symbolic_zeros = True`` and as zeros otherwise; results in the dtypes of their
    primals. ``(None, None)`` if ``x_dot``, ``params_dot`` and ``y_bar_dot`` are all absent (the
    rule is linear in them). ``y_dot`` may be ``None``: it is then computed by ``call_jvp``."""
    x_absent, params_absent, y_bar_absent = x_dot is None, is_absent(params_dot), y_bar_dot is None
    if x_absent and params_absent and y_bar_absent:
        return None, None
    if y_dot is None and not (x_absent and params_absent):
        y_dot = call_jvp(layer, params, x, y, x_dot, params_dot)
    if getattr(layer, "symbolic_zeros", False):
        result = layer._vjp_jvp_rule(params, x, y, y_bar, x_dot, None if params_absent else params_dot,
                                     y_dot, y_bar_dot)
    else:
        result = layer._vjp_jvp_rule(params, x, y, y_bar, jnp.zeros_like(x) if x_absent else x_dot,
                                     zeros_like_tree(params) if params_absent else params_dot,
                                     jnp.zeros_like(y) if y_dot is None else y_dot,
                                     jnp.zeros_like(y_bar) if y_bar_absent else y_bar_dot)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{layer!r}: vjp_jvp must return (params_bar_dot, x_bar_dot), got {type(result).__name__}")
    params_bar_dot, x_bar_dot = result
    return _cast_tree_like(params_bar_dot, params), cast_like(x_bar_dot, x)
