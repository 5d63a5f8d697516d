"""What a layer's rules hold and read: the layer's declaration for the bytes model of plans.

The planner asks the layer (``Layer.footprint(in_shape)``), never its class name. A built-in
declares its footprint beside its rules; a layer that declares nothing gets one **measured** at
the shapes in use (:func:`measure_footprint`, cached per layer and shape): its JVP and VJP rules
are traced (which activations and parameters they read, which primitives they use) and compiled
alone, vmapped over a few seed vectors, and XLA's memory analysis says what they hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ._shapes import size

__all__ = ["Footprint", "measure_footprint", "FUSIBLE_PRIMITIVES"]


@dataclass(frozen=True)
class Footprint:
    """A layer's rules, as the bytes model sees them, for one example of ``in_shape`` (floats,
    not bytes: the model multiplies by the item size of the dtype).

    * ``fusible``: the rules are elementwise or per-axis reduction loops (no dot, convolution or
      window) that XLA fuses with their neighbours into one loop;
    * ``reads``: the activations the JVP and VJP rules read, ``"x"`` (the input) and/or ``"y"``
      (the output); empty for a layer linear in x (its Jacobian does not depend on x), whose
      activations a reverse sweep need not keep;
    * ``view``: the output is a view of the input (a reshape), no buffer of its own;
    * ``tangent`` / ``adjoint``: ``(per_vector, once)``: floats a vmapped JVP / VJP sweep through
      the rule materialises beyond its input and output vectors, per seed vector and once for
      all of them (a derivative, statistics, layout copies);
    * ``jacobian_is_argument``: materialising the Jacobian allocates nothing: it is a view of a
      parameter (Dense's ``wᵀ``), an argument of the compiled call;
    * ``unread_params``: parameter entries the input-Jacobian rules never read (a bias): ``jax.jit``
      drops them from the arguments when nothing after the layer reads an activation.
    """

    fusible: bool = False
    reads: frozenset = frozenset({"x", "y"})
    view: bool = False
    tangent: tuple = (0, 0)
    adjoint: tuple = (0, 0)
    jacobian_is_argument: bool = False
    unread_params: int = 0

    def __post_init__(self):
        reads = frozenset(self.reads)
        if not reads <= {"x", "y"}:
            raise ValueError(f"Footprint.reads takes 'x' and 'y', got {sorted(reads)}")
        object.__setattr__(self, "reads", reads)
        for name in ("tangent", "adjoint"):
            pair = tuple(int(v) for v in getattr(self, name))
            if len(pair) != 2 or min(pair) < 0:
                raise ValueError(f"Footprint.{name} must be (per_vector, once) floats >= 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, pair)

    @property
    def linear(self) -> bool:
        """The rules read no activation: the Jacobian does not depend on x."""
        return not self.reads

    def workspace(self, op: str) -> tuple[int, int]:
        """``(per_vector, once)`` floats of a TAN (``"TAN"``) or ADJ (``"ADJ"``) sweep."""
        return self.tangent if op == "TAN" else self.adjoint


# Primitives XLA fuses into one loop with their neighbours: elementwise arithmetic, comparisons,
# selects, broadcasts and reductions over an axis. A rule made only of these is ``fusible``.
FUSIBLE_PRIMITIVES = frozenset({
    "add", "sub", "mul", "div", "neg", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos",
    "tan", "sqrt", "rsqrt", "cbrt", "pow", "integer_pow", "abs", "sign", "max", "min", "erf", "erfc", "erf_inv",
    "select_n", "gt", "ge", "lt", "le", "eq", "ne", "and", "or", "not", "convert_element_type", "broadcast_in_dim",
    "reshape", "squeeze", "expand_dims", "reduce_sum", "reduce_max", "reduce_min", "stop_gradient", "square",
    "copy", "copy_p", "floor", "ceil", "round", "is_finite", "nextafter", "atan2", "asinh", "acosh", "atanh",
    "sinh", "cosh", "asin", "acos", "atan", "clamp", "pjit", "custom_jvp_call", "lgamma", "digamma",
})


def _used_inputs(jaxpr, keep_outputs) -> set:
    """Indices of ``jaxpr``'s inputs that the outputs in ``keep_outputs`` depend on (a backward
    walk over the equations, nested calls taken whole)."""
    needed = {id(v) for i, v in enumerate(jaxpr.outvars) if i in keep_outputs and not _is_literal(v)}
    for eqn in reversed(jaxpr.eqns):
        if any(id(v) in needed for v in eqn.outvars):
            needed |= {id(v) for v in eqn.invars if not _is_literal(v)}
    return {i for i, v in enumerate(jaxpr.invars) if id(v) in needed}


def _is_literal(v) -> bool:
    return type(v).__name__ == "Literal"


def _primitives(jaxpr) -> set:
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns"):
                found |= _primitives(inner)
    return found


def _temp_floats(fn, args) -> int:
    """Floats of XLA's temporaries for ``fn(*args)`` compiled alone (float32)."""
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:  # a backend without memory analysis
        return 0
    return int(analysis.temp_size_in_bytes) // 4


@lru_cache(maxsize=1024)
def measure_footprint(layer, in_shape) -> Footprint:
    """The :class:`Footprint` of ``layer`` at one example of ``in_shape``, measured: the rules'
    jaxprs give what they read (``reads``, ``unread_params``) and whether they are ``fusible``;
    XLA's memory analysis of ``vmap(rule)`` over 8 and 16 seed vectors, compiled alone in float32,
    gives the floats held per vector (their difference over 8) and once (the rest)."""
    from ._tangents import call_jvp, call_vjp
    in_shape = tuple(in_shape)
    f32 = jnp.float32
    params = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, f32 if jnp.issubdtype(a.dtype, jnp.floating)
                                                                   else a.dtype),
                                    jax.eval_shape(layer.init, jax.random.PRNGKey(0)))
    x = jax.ShapeDtypeStruct(in_shape, f32)
    y = jax.eval_shape(layer.apply, params, x)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    n_leaves = len(leaves)

    def jvp(flat, x, y, x_dot):
        return call_jvp(layer, jax.tree_util.tree_unflatten(treedef, flat), x, y, x_dot, None, check=False)

    def vjp(flat, x, y, y_bar):
        return call_vjp(layer, jax.tree_util.tree_unflatten(treedef, flat), x, y, y_bar, check=False)[1]

    jvp_jaxpr = jax.make_jaxpr(jvp)(leaves, x, y, x).jaxpr
    vjp_jaxpr = jax.make_jaxpr(vjp)(leaves, x, y, y).jaxpr
    used = _used_inputs(jvp_jaxpr, {0}) | _used_inputs(vjp_jaxpr, {0})  # inputs: leaves..., x, y, vector
    reads = {name for name, index in (("x", n_leaves), ("y", n_leaves + 1)) if index in used}
    unread = sum(size(leaf.shape) for i, leaf in enumerate(leaves) if i not in used)
    fusible = (_primitives(jvp_jaxpr) | _primitives(vjp_jaxpr)) <= FUSIBLE_PRIMITIVES

    def workspace(rule, vector):
        def sweep(count):
            seeds = jax.ShapeDtypeStruct((count,) + tuple(vector.shape), f32)
            return _temp_floats(lambda p, x, y, s: jax.vmap(lambda v: rule(p, x, y, v))(s), (leaves, x, y, seeds))
        low, high = sweep(8), sweep(16)
        per = max(0, (high - low) // 8)
        return per, max(0, low - 8 * per)
    return Footprint(fusible=fusible, reads=frozenset(reads), tangent=workspace(jvp, x), adjoint=workspace(vjp, y),
                     unread_params=int(unread))


def nbytes(floats: int, dtype) -> int:
    """Bytes of ``floats`` entries of ``dtype``."""
    return int(floats) * int(np.dtype(dtype).itemsize)
