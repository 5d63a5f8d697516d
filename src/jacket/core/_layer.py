"""The layer protocol: a primal with its hand-written derivative rules and cost declaration.

Signatures (one convention for every rule, in the argument order of ``jax.vjp``)::

    init(key)                                -> params           pytree ({} by default)
    input_shape()                            -> tuple | None     the input shape it requires (None: any)
    bind(in_shape)                           -> Layer            the layer for inputs of in_shape (default: self)
    output_shape(in_shape)                   -> tuple            out_shape (default: found by jax.eval_shape)
    apply(params, x)                         -> y                x: in_shape or (batch,) + in_shape
    jvp(params, x, y, x_dot, params_dot)     -> y_dot            linear in (x_dot, params_dot)
    vjp(params, x, y, y_bar)                 -> (params_bar, x_bar)   params_bar summed over the batch
    jacobian(params, x, y)                   -> LinearOperator   (size(out_shape), size(in_shape)), one example
    vjp_jvp(params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot)
                                             -> (params_bar_dot, x_bar_dot)   optional: second order

``y`` is the primal output ``apply(params, x)``, passed in so rules can reuse it (tanh' = 1 - y²).
A ``Chain`` binds each layer to the shape it receives (``bind``): a layer that needs its input
shape to work (``Flatten``, a block of layers) gets it there, and users never write it twice.

The engine calls the rules through ``core/_tangents.py``, which checks what they return.
Tangents are arrays shaped like their primals: the engine passes zeros where a tangent is absent
(``core/_tangents.py``); a layer that sets ``symbolic_zeros = True`` receives ``None`` instead.

The second-order rule ``vjp_jvp`` is the tangent of the VJP: with ``(params_bar, x_bar) =
vjp(params, x, y, y_bar)``, it returns ``(params_bar_dot, x_bar_dot)`` when ``(params, x)`` move
along ``(params_dot, x_dot)`` (so ``y`` moves along ``y_dot = jvp(params, x, y, x_dot,
params_dot)``, passed in for reuse) and ``y_bar`` along ``y_bar_dot``; shapes and batch
convention as ``vjp`` (``params_bar_dot`` summed over the batch). It is linear in the four
tangents. Optional: ``has_second_order`` says whether a layer defines it, and the engine calls
it through ``call_vjp_jvp`` (``core/_tangents.py``), as ``jvp`` through ``call_jvp``.

Cost and memory declarations, static (fma = multiply-adds, per vector, for one example of
``in_shape``)::

    jvp_cost(in_shape), vjp_cost(in_shape)  one tangent / one cotangent through the rule
    jacobian_structure(in_shape)            the Structure that ``jacobian`` returns
    jacobian_cost(in_shape)                 fma to materialise it
    footprint(in_shape)                     what the rules hold and read, for the bytes model

Everything the planner, the bytes model, the memory-limit search and checkpointing know about a
layer comes from these declarations (and ``inner_chains`` for a composite); none of them looks
at a class name. The defaults are honest: the costs of a dense map, and a footprint measured
by compiling the rules alone at the shapes in use (``core/_footprint.py``).
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp

from ..operators import Diagonal, Matrix, Structure
from ._footprint import Footprint, measure_footprint
from ._shapes import size
from ._static import Static
from ._tangents import call_jvp, zeros_like_tree

__all__ = ["Layer", "Elementwise"]


class _ClassProperty:
    """A read-only attribute computed from the class, on the class and on its instances alike
    (``Dense.has_second_order`` and ``Dense(2, 3).has_second_order``). A subclass may replace it
    by an ordinary ``property`` when the answer depends on the instance (a composite's layers)."""

    def __init__(self, fget):
        self.fget, self.__doc__ = fget, fget.__doc__

    def __get__(self, obj, cls=None):
        return self.fget(type(obj) if cls is None else cls)

_RENAMED = {"required_in_dim": "input_shape() (a tuple such as (n,), or None)",
            "out_dim": "output_shape(in_shape) (tuples)"}


class Layer(Static):
    """Base class for layers: subclass it, set static configuration in ``__init__``.

    Layers hold only static configuration (ints, floats, strings, tuples); arrays live in
    ``params``. Equality and hashing are by type and attributes, so a layer (and a Chain of
    layers) can be a static argument of ``jax.jit``.
    """

    #: True: the rules accept ``None`` for an absent tangent (built-ins); False: they get zeros.
    symbolic_zeros = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for old, new in _RENAMED.items():
            if callable(cls.__dict__.get(old)):
                raise TypeError(f"{cls.__name__}.{old}: the layer protocol now works with shapes; "
                                f"define {new} instead")

    # ---- shapes and primal -----------------------------------------------------------
    def init(self, key):
        """Parameters for this layer (a pytree). Default: ``{}``."""
        return {}

    def input_shape(self) -> tuple[int, ...] | None:
        """The input shape this layer requires as the first layer of a chain, or ``None`` if it
        takes any shape (then the chain needs ``in_shape=``)."""
        return None

    def bind(self, in_shape: tuple[int, ...]) -> "Layer":
        """This layer specialised to inputs of ``in_shape`` (one example). Default: ``self``.
        ``Chain`` calls it for every layer; layers that need the shape (``Flatten``) or hold
        other layers (``Residual``, ``Parallel``, ``Chain``) return a bound copy."""
        return self

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape for one example of ``in_shape``; raise ``ValueError`` for a shape the layer
        does not take. Default: ``jax.eval_shape`` of ``apply`` on ``init``'s params (nothing runs)."""
        return _traced_output_shape(self, tuple(in_shape))

    def apply(self, params, x):  # pragma: no cover - abstract
        """``y = f(params, x)`` for x of shape ``in_shape`` or ``(batch,) + in_shape``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(params, x)")

    # ---- rules -----------------------------------------------------------------------
    def jvp(self, params, x, y, x_dot, params_dot):  # pragma: no cover - abstract
        """Tangent ``y_dot`` (shape of y) for tangents ``x_dot`` (shape of x) and ``params_dot``."""
        raise NotImplementedError(f"{type(self).__name__} must implement jvp(params, x, y, x_dot, params_dot)")

    def vjp(self, params, x, y, y_bar):  # pragma: no cover - abstract
        """Cotangents ``(params_bar, x_bar)`` for ``y_bar`` (shape of y); params_bar summed over the batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement vjp(params, x, y, y_bar)")

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        """Second order, optional: the tangent ``(params_bar_dot, x_bar_dot)`` of ``vjp(params, x, y,
        y_bar)`` along ``(params_dot, x_dot)`` and ``y_bar_dot`` (``y_dot``: the matching jvp, for
        reuse). Shapes as ``vjp``: ``x_bar_dot`` like x, ``params_bar_dot`` like params, summed
        over the batch. With ``symbolic_zeros = True`` any tangent may be ``None`` (zero)."""
        raise NotImplementedError(
            f"{self!r} has no second-order rule: define vjp_jvp(params, x, y, y_bar, x_dot, params_dot, "
            f"y_dot, y_bar_dot) -> (params_bar_dot, x_bar_dot) (see jacket.core.Layer)")

    @_ClassProperty
    def has_second_order(cls) -> bool:
        """Whether the layer defines ``vjp_jvp`` (overrides the default, which raises)."""
        return cls.vjp_jvp is not Layer.vjp_jvp

    def jacobian(self, params, x, y):
        """Jacobian with respect to x at one example ``x`` (shape ``in_shape``): an operator of
        shape ``(size(out_shape), size(in_shape))``. Default: the JVP rule on the unit vectors."""
        n = x.size
        units = jnp.eye(n, dtype=x.dtype).reshape((n,) + x.shape)
        no_params = zeros_like_tree(params)
        columns = jax.vmap(lambda e: call_jvp(self, params, x, y, e, no_params))(units)
        return Matrix.transpose_of(columns.reshape(n, -1))  # one row per unit tangent, kept as made

    # ---- composites: layers made of chains (Chain, Residual, Parallel) ------------------------
    def inner_chains(self, in_shape) -> tuple:
        """The chains this layer is made of, bound to ``in_shape`` (a plain layer: none). The
        planner plans each of them and merges their Jacobians (``merge_structure``,
        ``merge_jacobians``); the bytes model walks them."""
        return ()

    def split_params(self, params) -> tuple:
        """A composite's params as one entry per inner chain."""
        return ()

    def named_chains(self) -> tuple:
        """``(name, chain)`` pairs of a composite, the names used in paths
        (``layer 3 → Residual → layer 2``); none for a plain layer."""
        return ()

    def merge_structure(self, in_shape, structures) -> tuple[Structure, int]:
        """``(structure, fma)`` of this composite's Jacobian from its inner chains' Jacobian
        structures (a residual's ``I +``, a sum, a stack)."""
        raise NotImplementedError(f"{self!r} is not a composite")

    def merge_jacobians(self, in_shape, operators):
        """This composite's Jacobian (an operator) from its inner chains' Jacobians, one example."""
        raise NotImplementedError(f"{self!r} is not a composite")

    # ---- cost declaration (fma) ------------------------------------------------------
    def jvp_cost(self, in_shape) -> int:
        """fma to push one tangent through ``jvp``. Default: a dense ``n_out × n_in`` product."""
        return size(in_shape) * size(self.output_shape(in_shape))

    def vjp_cost(self, in_shape) -> int:
        """fma to pull one cotangent (input part) through ``vjp``. Default: ``jvp_cost``."""
        return self.jvp_cost(in_shape)

    def jacobian_structure(self, in_shape) -> Structure:
        """Structure of what ``jacobian`` returns. Default: dense."""
        return Structure("matrix", size(self.output_shape(in_shape)), size(in_shape))

    def jacobian_cost(self, in_shape) -> int:
        """fma to materialise the Jacobian. Default: n_in JVPs (the default ``jacobian``)."""
        return size(in_shape) * self.jvp_cost(in_shape)

    def footprint(self, in_shape) -> Footprint:
        """What the rules hold and read at one example of ``in_shape`` (:class:`Footprint`), for the
        bytes model of plans. Default: measured once per layer and shape, by tracing the rules and
        compiling them alone (``core/_footprint.py``); built-ins declare theirs."""
        return measure_footprint(self, tuple(in_shape))


@lru_cache(maxsize=1024)
def _traced_output_shape(layer, in_shape):
    try:
        params = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - an init JAX cannot trace (numpy on the key): run it once
        params = layer.init(jax.random.PRNGKey(0))
    out = jax.eval_shape(layer.apply, params, jax.ShapeDtypeStruct(in_shape, jnp.float32))
    return tuple(out.shape)


class Elementwise(Layer):
    """Base for elementwise layers ``y = f(x)`` of any shape: subclasses define ``apply`` and
    ``derivative(x, y)`` (f'(x), allowed to reuse y). Rules, Jacobian and costs follow; with
    ``second_derivative(x, y)`` (f''(x)) also the second-order rule ``vjp_jvp``."""

    symbolic_zeros = True

    def derivative(self, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def second_derivative(self, x, y):
        """f''(x), shape of x (allowed to reuse y). Optional: it enables ``vjp_jvp``."""
        raise NotImplementedError(
            f"{self!r} has no second-order rule: define second_derivative(x, y) -> f''(x) "
            f"(see jacket.core.Elementwise)")

    @_ClassProperty
    def has_second_order(cls) -> bool:
        """Whether ``second_derivative`` is defined (or ``vjp_jvp`` itself overridden)."""
        return cls.second_derivative is not Elementwise.second_derivative or \
            cls.vjp_jvp is not Elementwise.vjp_jvp

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """``x_bar = f'(x) ȳ``, so ``x_bar_dot = f''(x) ẋ ȳ + f'(x) ȳ̇`` (all of the shape of x);
        ``params_bar_dot = {}``. ``x_dot`` / ``y_bar_dot`` may be ``None`` (zero)."""
        x_bar_dot = None
        if x_dot is not None:
            x_bar_dot = self.second_derivative(x, y) * x_dot * y_bar
        if y_bar_dot is not None:
            term = self.derivative(x, y) * y_bar_dot
            x_bar_dot = term if x_bar_dot is None else x_bar_dot + term
        return {}, jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return self.derivative(x, y) * x_dot

    def vjp(self, params, x, y, y_bar):
        return {}, self.derivative(x, y) * y_bar

    def jacobian(self, params, x, y):
        return Diagonal(self.derivative(x, y).reshape(-1))

    def jvp_cost(self, in_shape):
        return size(in_shape)

    def jacobian_structure(self, in_shape):
        n = size(in_shape)
        return Structure("diagonal", n, n)

    def jacobian_cost(self, in_shape):
        return size(in_shape)

    def footprint(self, in_shape):
        """A fusible loop holding f'(x) once for all vectors; it reads x and/or y as ``derivative``
        does (traced, nothing runs)."""
        n = size(in_shape)
        return Footprint(fusible=True, reads=_derivative_reads(self, tuple(in_shape)), tangent=(0, n), adjoint=(0, n))


@lru_cache(maxsize=1024)
def _derivative_reads(layer, in_shape) -> frozenset:
    """Which of x and y ``layer.derivative(x, y)`` reads, from its jaxpr."""
    from ._footprint import _used_inputs
    x = jax.ShapeDtypeStruct(in_shape, jnp.float32)
    jaxpr = jax.make_jaxpr(layer.derivative)(x, x).jaxpr
    used = _used_inputs(jaxpr, set(range(len(jaxpr.outvars))))
    return frozenset(name for name, index in (("x", 0), ("y", 1)) if index in used)
