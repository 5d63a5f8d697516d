"""Chain: the composition f_N ∘ … ∘ f_1, itself a layer.

A Chain holds layers and implements the layer protocol (``core/_layer.py``) by composing theirs:
``apply`` runs them in turn, ``jvp`` pushes a tangent through their JVP rules, ``vjp`` pulls a
cotangent back through their VJP rules over a recomputed tape, ``vjp_jvp`` composes their
second-order rules. The sweeps themselves are functions of a chain (``_sweeps.py``); Jacobians,
plans, gradients and curvature are the front door's (``jacket.jacobian``, ``jacket.plan``,
``jacket.value_and_grad``, …). A chain is callable: ``chain(params, x)`` is ``chain.apply``.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ..core import Layer, as_shape, size
from ..core._checks import check_input, check_params
from ..core._shapes import describe_shape
from ._binding import _bind, _fits, missing_second_order, require_second_order
from ._sweeps import pull, pull_tangents, push, record, record_tangents

__all__ = ["Chain", "missing_second_order", "require_second_order"]


class Chain(Layer):
    """``Chain(layers, in_shape=None)``: the function ``x ↦ f_N(… f_1(x))``.

    ``in_shape`` (a tuple, or an int n for vectors ``(n,)``) is needed only when the first layer
    doesn't fix its input shape (an activation). ``chain.shapes = (s_0, …, s_N)`` are the shapes
    of one example between the layers (declared by each layer, or found by ``jax.eval_shape``),
    ``chain.dims = (n_0, …, n_N)`` their sizes, on which plans are costed. Each layer is bound
    to the shape it receives (``Layer.bind``). Layer ``i`` (counted from 1, as J_i) maps
    ``s_{i-1}`` to ``s_i``. Inputs are one example ``s_0`` or a batch ``(batch,) + s_0``.
    Params are a tuple with one pytree per layer. A Chain is immutable and hashable, so it can
    be a static argument of ``jax.jit``.

    A Chain is itself a layer: it nests inside another Chain, a ``Residual`` or a ``Parallel``
    branch, which binds it to the shape it receives (so an inner chain may start with a layer
    of any shape and leave out ``in_shape``). Inside a plan a nested chain is one factor whose
    Jacobian, when materialised, is accumulated by its own plan (the planner recurses into its
    ``inner_chains``); its tangents and cotangents run through its layers' rules.
    """

    def __init__(self, layers: Sequence[Layer], in_shape=None):
        if isinstance(layers, Layer):
            raise TypeError(f"Chain takes a list of layers, got the single layer {layers!r}: write "
                            f"Chain([{layers!r}])")
        try:
            layers = tuple(layers)
        except TypeError:
            raise TypeError(f"Chain takes a list of layers, got {type(layers).__name__}") from None
        if not layers:
            raise ValueError("Chain needs at least one layer")
        for i, layer in enumerate(layers, 1):
            if not isinstance(layer, Layer):
                from ..losses import Loss
                if isinstance(layer, Loss):
                    raise TypeError(f"layer {i} is the loss {layer!r}: a loss ends the computation and is "
                                    f"not a factor of a Chain; pass it to jacket.value_and_grad(chain, loss)")
                if isinstance(layer, type) and issubclass(layer, Layer):
                    raise TypeError(f"layer {i} is the class {layer.__name__}, not a layer: write {layer.__name__}(…)")
                raise TypeError(f"layer {i} is {layer!r} ({type(layer).__name__}), not a jacket.Layer")
        self._given = layers  # as given, before binding: what a rebinding starts from
        self._rebindable = in_shape is None  # no in_shape given: a block may bind it to another shape
        if in_shape is None:
            in_shape = layers[0].input_shape()
            if in_shape is not None and not _fits(layers, in_shape) and _fits(layers, (2,) + tuple(in_shape)):
                # A last-axis first layer (Dense, LayerNorm) before one that needs a sequence or an
                # image: the chain takes stacks of its first layer's input, and its shape comes from
                # where it is used (a block binds it) or from in_shape=.
                in_shape = None
        if in_shape is None:  # unbound: a block whose input shape comes from where it is used
            self._layers, self._shapes, self._dims = layers, None, None
            self._hash = hash((Chain, layers, None))
            return
        self._layers, self._shapes = _bind(layers, as_shape(in_shape, "Chain in_shape"))
        self._dims = tuple(size(s) for s in self._shapes)
        self._hash = hash((Chain, self._layers, self._shapes))

    @property
    def bound(self) -> bool:
        """Whether the chain knows its input shape (every top-level chain must)."""
        return self._shapes is not None

    def _need_shapes(self):
        if self._shapes is None:
            first = self._layers[0].input_shape()
            why = ("takes any shape" if first is None else
                   f"takes {first}, which the layers after it do not, but a stack of them they do")
            raise ValueError(f"{self!r} does not know its input shape: its first layer {self._layers[0]!r} "
                             f"{why}; pass Chain(..., in_shape=) (a chain used as a layer inside another "
                             f"chain or block gets it from there)")
        return self._shapes

    # ---- static structure -------------------------------------------------------------
    @property
    def layers(self) -> tuple[Layer, ...]:
        return self._layers

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """``(s_0, …, s_N)``: the input shape of one example, then each layer's output shape."""
        return self._need_shapes()

    @property
    def dims(self) -> tuple[int, ...]:
        """``(n_0, …, n_N)``: the sizes of ``shapes``, the widths the plans are costed on."""
        self._need_shapes()
        return self._dims

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self._need_shapes()[0]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._need_shapes()[-1]

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, i):
        return self._layers[i]

    def __eq__(self, other):
        return isinstance(other, Chain) and (self._layers, self._shapes) == (other._layers, other._shapes)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        inner = ", ".join(map(repr, self._layers))
        if self._shapes is None:
            return f"Chain([{inner}])"
        if all(len(s) == 1 for s in self._shapes):
            return f"Chain([{inner}], dims={self._dims})"
        return f"Chain([{inner}], shapes={' -> '.join(describe_shape(s) for s in self._shapes)})"

    # ---- checks ------------------------------------------------------------------------
    def check_params(self, params, where="Chain", name="params"):
        """A clear error unless ``params`` is one pytree per layer, each with the structure,
        shapes and kinds of dtype of that layer's ``init``; the message names the layer's index,
        the layer and the leaf."""
        if not isinstance(params, (tuple, list)) or len(params) != len(self._layers):
            got = f"a {type(params).__name__} of length {len(params)}" if isinstance(params, (tuple, list)) \
                else type(params).__name__
            raise ValueError(f"{where}: {name} must be a tuple with one entry per layer "
                             f"({len(self._layers)}), got {got}")
        for i, (layer, p) in enumerate(zip(self._layers, params), 1):
            check_params(layer, p, f"{where}: layer {i}", name=f"{name}[{i - 1}]")

    def check_input(self, x, where="Chain", name="x"):
        """``x`` as an array of shape ``s_0`` or ``(batch,) + s_0`` (a clear error otherwise)."""
        return check_input(x, self.in_shape, where, name)

    # ---- the layer protocol ----------------------------------------------------------------
    def bind(self, in_shape):
        in_shape = tuple(in_shape)
        if self._shapes is not None and self._shapes[0] == in_shape:
            return self
        if self._shapes is not None and not self._rebindable:
            raise ValueError(f"{self!r} was made for inputs of shape {self._shapes[0]} (in_shape=), got {in_shape}")
        bound = Chain(self._given, in_shape)
        bound._rebindable = True  # bound by a block, not by the user
        return bound

    def input_shape(self):
        return None if self._shapes is None else self._shapes[0]

    def output_shape(self, in_shape):
        return self.bind(in_shape).out_shape

    def init(self, key, dtype=jnp.float32) -> tuple:
        """One params pytree per layer, floating leaves cast to ``dtype``. ``key``: a
        ``jax.random.key`` (or ``PRNGKey``)."""
        from ..core._checks import check_key
        key = check_key(key, "Chain.init")
        keys = jax.random.split(key, len(self._layers))
        params = tuple(layer.init(k) for layer, k in zip(self._layers, keys))

        def cast(a):
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        return jax.tree_util.tree_map(cast, params)

    def apply(self, params, x):
        """``y = f_N(… f_1(x))``; x: ``s_0`` or ``(batch,) + s_0`` -> y: ``s_N`` or ``(batch,) + s_N``."""
        self.check_params(params, "Chain")
        return record(self, params, self.check_input(x, "Chain"))[0]

    __call__ = apply

    def jvp(self, params, x, y, x_dot, params_dot):
        """Forward accumulation through the layers' JVP rules (``y`` unused: recomputed on the way)."""
        return push(self, params, x, x_dot, params_dot)[1]

    def vjp(self, params, x, y, y_bar):
        """Reverse accumulation through the layers' VJP rules over a tape recomputed from x (under
        jit XLA computes the forward pass once: it is the outer chain's, see notes/architectures.md)."""
        return pull(self, params, record(self, params, x)[1], y_bar)

    @property
    def has_second_order(self) -> bool:
        """Whether every layer has a second-order rule (``vjp_jvp``)."""
        return all(layer.has_second_order for layer in self._layers)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        """``(params_bar_dot, x_bar_dot)``, the tangent of ``vjp`` along ``(params_dot, x_dot)`` and
        ``y_bar_dot`` (shapes of params, x); the tape is recomputed with tangents from x."""
        require_second_order(self, "Chain")
        tape, dots = record_tangents(self, params, x, x_dot, params_dot)
        _, _, p_bar_dot, x_bar_dot = pull_tangents(self, params, tape, dots, params_dot, y_bar, y_bar_dot)
        return p_bar_dot, x_bar_dot

    def jvp_cost(self, in_shape):
        chain = self.bind(in_shape)
        return sum(layer.jvp_cost(s) for layer, s in zip(chain.layers, chain.shapes))

    def vjp_cost(self, in_shape):
        chain = self.bind(in_shape)
        return sum(layer.vjp_cost(s) for layer, s in zip(chain.layers, chain.shapes))

    # ---- as a composite: the planner recurses into it --------------------------------------
    def inner_chains(self, in_shape):
        return (self.bind(in_shape),)

    def split_params(self, params):
        return (params,)

    def merge_structure(self, in_shape, structures):
        return structures[0], 0  # the chain's Jacobian is its plan's result

    def merge_jacobians(self, in_shape, operators):
        return operators[0]

    def named_chains(self):
        return (("Chain", self),)
