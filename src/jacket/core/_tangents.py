"""Tangent conventions, handled by the engine so that no user rule has to know them, and the
checks of what every rule returns.

* An absent tangent is ``None`` inside the engine (a symbolic zero, as JAX's ``Zero``). A rule
  receives it only if its layer opts in with ``symbolic_zeros = True`` (the built-ins do, to
  skip work); every other rule receives arrays: zeros of the shape and dtype of the primal.
* When every tangent of a layer is absent its output tangent is absent too (the rule is
  linear), so the rule is not called at all.
* Tangents and cotangents have the dtype of their primal: ``y_dot`` that of ``y``, ``x_bar``
  that of ``x``, each leaf of ``params_bar`` that of its parameter (as ``jax.grad`` returns
  float32 gradients for float32 params, whatever the dtype of the input).
* What a rule returns is checked against its primal when the engine calls it (at trace time,
  so nothing is added to the compiled program): ``y_dot`` has the shape of ``y``, ``x_bar``
  that of ``x``, ``params_bar`` the pytree structure and leaf shapes of ``params`` (summed over
  the batch). A mismatch is a :class:`RuleOutputError` naming the layer's path, the rule and
  both shapes, instead of a shape error in the next layer or a silently wrong gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["is_absent", "zeros_like_tree", "call_jvp", "call_vjp", "call_vjp_jvp", "cast_like", "RuleOutputError"]


class RuleOutputError(ValueError):
    """A rule returned something of the wrong shape, dtype or structure. ``location`` is the
    layer's path (``"jacket.value_and_grad: layer 3 → Residual → layer 2"``), ``detail`` what
    was wrong."""

    def __init__(self, location: str, detail: str):
        super().__init__(f"{location}: {detail}" if location else detail)
        self.location, self.detail = location, detail

    def within(self, outer: str) -> "RuleOutputError":
        """The same error seen from the block ``outer`` that called the rule."""
        return RuleOutputError(f"{outer} → {self.location}" if outer else self.location, self.detail)

    def at(self, where: str) -> "RuleOutputError":
        """The same error, as seen by the public function ``where`` that ran the rules."""
        return RuleOutputError(f"{where}: {self.location}" if self.location else where, self.detail)


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


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def _array_like(value, primal, layer, rule, name, primal_name, location):
    """``value`` checked to be a floating array of ``primal``'s shape, cast to its dtype."""
    shape = getattr(value, "shape", None)
    if shape is None:
        try:
            value = jnp.asarray(value)
        except TypeError:
            raise RuleOutputError(location, f"{layer!r}.{rule} returned {name} of type {type(value).__name__}, "
                                            f"expected an array of shape {_shape(primal)}") from None
    if tuple(value.shape) != _shape(primal):
        raise RuleOutputError(location, f"{layer!r}.{rule} returned {name} of shape {tuple(value.shape)}, expected "
                                        f"the shape of {primal_name}, {_shape(primal)}")
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        raise RuleOutputError(location, f"{layer!r}.{rule} returned {name} of dtype {value.dtype}, expected a "
                                        f"floating dtype like {primal_name}'s ({primal.dtype})")
    return cast_like(value, primal)


def _tree_like(tree, params, layer, rule, name, location):
    """``tree`` checked to have the structure and leaf shapes of ``params``, each leaf cast to
    its parameter's dtype; a leafless ``params`` takes any leafless result."""
    expected = jax.tree_util.tree_structure(params)
    if not jax.tree_util.tree_leaves(params):
        if jax.tree_util.tree_leaves(tree):
            raise RuleOutputError(location, f"{layer!r}.{rule} returned {name} with leaves for a layer without "
                                            f"parameters (expected {params!r})")
        return params
    got = jax.tree_util.tree_structure(tree)
    if got != expected:
        raise RuleOutputError(location, f"{layer!r}.{rule} returned {name} with structure {got}, expected the "
                                        f"structure of params, {expected}")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    leaves = []
    for path, value, primal in zip(paths, jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(params)):
        shape = _shape(value)
        if shape != _shape(primal):
            hint = (" (summed over the batch? a parameter's cotangent is summed over every leading axis of x)"
                    if shape[1:] == _shape(primal) or shape[-len(_shape(primal)):] == _shape(primal) else "")
            raise RuleOutputError(location, f"{layer!r}.{rule} returned {name}{path} of shape {shape}, expected "
                                            f"the shape of params{path}, {_shape(primal)}{hint}")
        leaves.append(cast_like(value, primal))
    return jax.tree_util.tree_unflatten(expected, leaves)


def _cast_tree_like(tree, primals):
    """The lenient form for the rule checker, which compares structures itself: each leaf cast to
    its primal's dtype where the structures agree, anything else left as it is."""
    try:
        return jax.tree_util.tree_map(cast_like, tree, primals)
    except (TypeError, ValueError):
        return tree


def _pair(result, layer, rule, names, location):
    if not (isinstance(result, tuple) and len(result) == 2):
        raise RuleOutputError(location, f"{layer!r}.{rule} must return a pair {names}, got "
                                        f"{type(result).__name__}")
    return result


def call_jvp(layer, params, x, y, x_dot, params_dot, location="", check=True):
    """``y_dot`` from ``layer.jvp`` under the conventions above; ``None`` if both tangents are
    absent. ``location``: the layer's path, for errors; ``check=False`` (the rule checker, which
    compares results itself) casts without checking."""
    x_absent, params_absent = x_dot is None, is_absent(params_dot)
    if x_absent and params_absent:
        return None
    try:
        if getattr(layer, "symbolic_zeros", False):
            y_dot = layer.jvp(params, x, y, x_dot, None if params_absent else params_dot)
        else:
            y_dot = layer.jvp(params, x, y, jnp.zeros_like(x) if x_absent else x_dot,
                              zeros_like_tree(params) if params_absent else params_dot)
    except RuleOutputError as err:
        raise err.within(location) from None
    if y_dot is None and getattr(layer, "symbolic_zeros", False):
        return None  # a symbolic zero from a built-in
    if not check:
        return cast_like(y_dot, y)
    return _array_like(y_dot, y, layer, "jvp", "y_dot", "y", location)


def call_vjp(layer, params, x, y, y_bar, location="", check=True):
    """``(params_bar, x_bar)`` from ``layer.vjp``, checked against ``(params, x)`` and each in the
    dtype of its primal."""
    try:
        result = layer.vjp(params, x, y, y_bar)
    except RuleOutputError as err:
        raise err.within(location) from None
    params_bar, x_bar = _pair(result, layer, "vjp", "(params_bar, x_bar)", location)
    if not check:
        return _cast_tree_like(params_bar, params), cast_like(x_bar, x)
    return (_tree_like(params_bar, params, layer, "vjp", "params_bar", location),
            _array_like(x_bar, x, layer, "vjp", "x_bar", "x", location))


def call_vjp_jvp(layer, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot, location="", check=True):
    """``(params_bar_dot, x_bar_dot)`` from ``layer.vjp_jvp`` (the tangent of the VJP) under the
    conventions above: ``None`` (or an empty pytree) is an absent tangent, passed as ``None`` to a
    layer with ``symbolic_zeros = True`` and as zeros otherwise; results checked and in the dtypes
    of their primals. ``(None, None)`` if ``x_dot``, ``params_dot`` and ``y_bar_dot`` are all absent
    (the rule is linear in them). ``y_dot`` may be ``None``: it is then computed by ``call_jvp``."""
    x_absent, params_absent, y_bar_absent = x_dot is None, is_absent(params_dot), y_bar_dot is None
    if x_absent and params_absent and y_bar_absent:
        return None, None
    if y_dot is None and not (x_absent and params_absent):
        y_dot = call_jvp(layer, params, x, y, x_dot, params_dot, location, check)
    try:
        if getattr(layer, "symbolic_zeros", False):
            result = layer.vjp_jvp(params, x, y, y_bar, x_dot, None if params_absent else params_dot, y_dot,
                                   y_bar_dot)
        else:
            result = layer.vjp_jvp(params, x, y, y_bar, jnp.zeros_like(x) if x_absent else x_dot,
                                   zeros_like_tree(params) if params_absent else params_dot,
                                   jnp.zeros_like(y) if y_dot is None else y_dot,
                                   jnp.zeros_like(y_bar) if y_bar_absent else y_bar_dot)
    except RuleOutputError as err:
        raise err.within(location) from None
    params_bar_dot, x_bar_dot = _pair(result, layer, "vjp_jvp", "(params_bar_dot, x_bar_dot)", location)
    if not check:
        return _cast_tree_like(params_bar_dot, params), cast_like(x_bar_dot, x)
    return (_tree_like(params_bar_dot, params, layer, "vjp_jvp", "params_bar_dot", location),
            _array_like(x_bar_dot, x, layer, "vjp_jvp", "x_bar_dot", "x", location))
