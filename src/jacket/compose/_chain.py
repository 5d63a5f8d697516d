"""Chain: the composition f_N ∘ … ∘ f_1, differentiated by composing the layers' rules.

Forward accumulation pushes a tangent from input to output through the JVP rules; reverse
accumulation pulls a cotangent from output to input through the VJP rules, over the activations
x_0 … x_N remembered by a forward pass (the tape). Every rule is called through
``core/_tangents.py``, which handles absent tangents and dtypes for all layers alike.

The second-order rule ``vjp_jvp`` composes the same way: a forward pass with tangents records
``(x_i, x_dot_i)`` for every layer, then a backward loop carries ``(y_bar, y_bar_dot)`` through each
layer's ``vjp`` and ``vjp_jvp`` (forward-over-reverse, ``compose/_curvature.py``).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ..core import Layer, as_shape, size
from ..core._checks import check_input, check_like, check_params
from ..core._shapes import describe_shape
from ..core._tangents import call_jvp, call_vjp, call_vjp_jvp, cast_like, is_absent, zeros_like_tree
from ._binding import _bind, _fits, missing_second_order, require_second_order

__all__ = ["Chain", "missing_second_order", "require_second_order"]


class Chain(Layer):
    """``Chain(layers, in_shape=None)``: the function ``x ↦ f_N(… f_1(x))``.

    ``in_shape`` (a tuple, or an int n for vectors ``(n,)``) is needed only when the first layer
    doesn't fix its input shape (an activation). ``chain.shapes = (s_0, …, s_N)`` are the shapes
    of one example between the layers (declared by each layer, or found by ``jax.eval_shape``),
    ``chain.dims = (n_0, …, n_N)`` their sizes, on which plans are costed. Each layer is bound
    to the shape it receives (``Layer.bind``). Layer ``i`` (counted
    from 1, as J_i) maps ``s_{i-1}`` to ``s_i``. Inputs are one example ``s_0`` or a batch
    ``(batch,) + s_0``. Params are a tuple with one pytree per layer. A Chain is immutable and
    hashable, so it can be a static argument of ``jax.jit``.

    A Chain is itself a layer: it nests inside another Chain, a ``Residual`` or a ``Parallel``
    branch, which binds it to the shape it receives (so an inner chain may start with a layer
    of any shape and leave out ``in_shape``). Inside a plan a nested chain is one factor whose
    Jacobian, when materialised, is accumulated by its own optimal plan (or the order named for
    it, ``J2[reverse]``); its tangents and cotangents run through its layers' rules.
    """

    def __init__(self, layers: Sequence[Layer], in_shape=None):
        layers = tuple(layers)
        if not layers:
            raise ValueError("Chain needs at least one layer")
        for i, layer in enumerate(layers, 1):
            if not isinstance(layer, Layer):
                from ..losses import Loss
                if isinstance(layer, Loss):
                    raise TypeError(f"layer {i} is the loss {layer!r}: a loss ends the computation and is "
                                    f"not a factor of a Chain; pass it to jacket.value_and_grad(chain, loss)")
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

    # ---- as a layer (a chain inside a chain, or the body of a block) ----------------------
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

    def _jvp_rule(self, params, x, y, x_dot, params_dot):
        return self.push(params, x, x_dot, params_dot)[1]

    def _vjp_rule(self, params, x, y, y_bar):
        # The tape is recomputed from x; under jit XLA computes the forward pass once (it is the
        # same computation as the outer chain's), see notes/architectures.md.
        _, tape = self._record(params, x)
        return self.pull(params, tape, y_bar)

    def _jacobian_rule(self, params, x, y, plans=()):
        from ..execute import jacobian_operator
        return jacobian_operator(self, plans[0] if plans else self.plan("optimal"), params, x)

    @property
    def has_second_order(self) -> bool:
        """Whether every layer has a second-order rule (``vjp_jvp``)."""
        return all(layer.has_second_order for layer in self._layers)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        """The second-order rule of a chain used as a layer: ``(params_bar_dot, x_bar_dot)``, the
        tangent of ``(params_bar, x_bar) = vjp(params, x, y, y_bar)`` along ``(params_dot, x_dot)``
        and ``y_bar_dot`` (shapes of params, x). Recomputes the tape with tangents from x."""
        require_second_order(self, "Chain")
        tape, dots = self.record_tangents(params, x, x_dot, params_dot)
        _, _, p_bar_dot, x_bar_dot = self.pull_tangents(params, tape, dots, params_dot, y_bar, y_bar_dot)
        return p_bar_dot, x_bar_dot

    def block_plans(self, in_shape):
        return (self.bind(in_shape).plan("optimal"),)

    def block_merge(self, in_shape, structures):
        return structures[0], 0  # the chain's Jacobian is its plan's result

    def jvp_cost(self, in_shape):
        chain = self.bind(in_shape)
        return sum(layer.jvp_cost(s) for layer, s in zip(chain.layers, chain.shapes))

    def vjp_cost(self, in_shape):
        chain = self.bind(in_shape)
        return sum(layer.vjp_cost(s) for layer, s in zip(chain.layers, chain.shapes))

    def jacobian_structure(self, in_shape):
        return self.block_plans(in_shape)[0].root.structure

    def jacobian_cost(self, in_shape):
        return self.block_plans(in_shape)[0].fma

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

    def _check_params_dot(self, params_dot, where):
        """Each present entry of ``params_dot`` like its layer's params (``None`` or ``{}``: absent)."""
        if not isinstance(params_dot, (tuple, list)) or len(params_dot) != len(self._layers):
            self.check_params(params_dot, where, "params_dot")  # raises the length message
        for i, (layer, p_dot) in enumerate(zip(self._layers, params_dot), 1):
            if not is_absent(p_dot):
                check_params(layer, p_dot, f"{where}: layer {i}", name=f"params_dot[{i - 1}]")

    def _check_x(self, x, where):
        return check_input(x, self.in_shape, where)

    # ---- primal ------------------------------------------------------------------------
    def init(self, key, dtype=jnp.float32) -> tuple:
        """One params pytree per layer, floating leaves cast to ``dtype``."""
        keys = jax.random.split(key, len(self._layers))
        params = tuple(layer.init(k) for layer, k in zip(self._layers, keys))

        def cast(a):
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        return jax.tree_util.tree_map(cast, params)

    def apply(self, params, x):
        """``y = f_N(… f_1(x))``; x: ``s_0`` or ``(batch,) + s_0`` -> y: ``s_N`` or ``(batch,) + s_N``."""
        return self.forward(params, x)[0]

    def forward(self, params, x):
        """``(y, tape)`` with ``tape = (x_0, …, x_N)``, the activations reverse mode needs."""
        self.check_params(params, "Chain.forward")
        return self._record(params, self._check_x(x, "Chain.forward"))

    def _record(self, params, x):
        tape = [x]
        for layer, p in zip(self._layers, params):
            tape.append(layer.apply(p, tape[-1]))
        return tape[-1], tuple(tape)

    # ---- forward accumulation ----------------------------------------------------------
    def jvp(self, params, x, x_dot, params_dot=None):
        """Forward accumulation: ``(y, y_dot)``, pushing ``x_dot`` (shape of x, or ``None``) and
        optionally ``params_dot`` (pytree like params; ``None`` or ``{}`` entries are absent)
        from input to output. Layers before the first tangent are not differentiated at all."""
        self.check_params(params, "Chain.jvp")
        x = self._check_x(x, "Chain.jvp")
        if x_dot is not None:
            x_dot = cast_like(check_like(x_dot, x, "Chain.jvp", "x_dot", "x"), x)
        if params_dot is not None:
            self._check_params_dot(params_dot, "Chain.jvp")
        y, y_dot = self.push(params, x, x_dot, params_dot)
        return y, jnp.zeros_like(y) if y_dot is None else y_dot

    def push(self, params, x, x_dot, params_dot=None):
        """``(y, y_dot)`` without checks, ``y_dot`` ``None`` when every tangent is absent (the
        rule of a chain used as a layer)."""
        if is_absent(params_dot):
            params_dot = (None,) * len(self._layers)
        for layer, p, p_dot in zip(self._layers, params, params_dot):
            y = layer.apply(p, x)
            x_dot = call_jvp(layer, p, x, y, x_dot, p_dot)
            x = y
        return x, x_dot

    # ---- reverse accumulation ----------------------------------------------------------
    def vjp(self, params, x):
        """Reverse accumulation: ``(y, pullback)``, ``pullback(y_bar) -> (params_bar, x_bar)``,
        as ``jax.vjp(chain.apply, params, x)``. The pullback runs the VJP rules from the last
        layer back to the first over the tape of one forward pass."""
        y, tape = self.forward(params, x)

        def pullback(y_bar):
            y_bar = cast_like(check_like(y_bar, y, "Chain.vjp pullback", "y_bar", "the output y"), y)
            return self.pull(params, tape, y_bar)
        return y, pullback

    def pull(self, params, tape, y_bar):
        """``(params_bar, x_bar)``: ``y_bar`` pulled back over a tape from :meth:`forward`."""
        params_bar = [None] * len(self._layers)
        for i in reversed(range(len(self._layers))):
            params_bar[i], y_bar = call_vjp(self._layers[i], params[i], tape[i], tape[i + 1], y_bar)
        return (params_bar if isinstance(params, list) else tuple(params_bar)), y_bar  # like params, as jax.grad

    # ---- second order: forward with tangents, then reverse with tangents ---------------------
    def record_tangents(self, params, x, x_dot, params_dot=None):
        """``(tape, tape_dot)``: ``(x_0, …, x_N)`` and their tangents ``(x_dot_0, …, x_dot_N)``
        (``None``: absent) for ``x_dot`` and ``params_dot`` (as :meth:`push`). No checks."""
        if is_absent(params_dot):
            params_dot = (None,) * len(self._layers)
        tape, dots = [x], [x_dot]
        for layer, p, p_dot in zip(self._layers, params, params_dot):
            y = layer.apply(p, tape[-1])
            dots.append(call_jvp(layer, p, tape[-1], y, dots[-1], p_dot))
            tape.append(y)
        return tuple(tape), tuple(dots)

    def pull_tangents(self, params, tape, tape_dot, params_dot, y_bar, y_bar_dot):
        """``(params_bar, x_bar, params_bar_dot, x_bar_dot)``: :meth:`pull` of ``y_bar`` and its
        tangent along ``(params_dot, tape_dot, y_bar_dot)`` (forward-over-reverse), over a tape
        from :meth:`record_tangents`. ``params_bar_dot`` is like params (zeros where no tangent
        reaches); ``x_bar_dot`` is ``None`` when none reaches x."""
        n = len(self._layers)
        if is_absent(params_dot):
            params_dot = (None,) * n
        params_bar, params_bar_dot = [None] * n, [None] * n
        for i in reversed(range(n)):
            layer = self._layers[i]
            params_bar_dot[i], x_bar_dot = call_vjp_jvp(layer, params[i], tape[i], tape[i + 1], y_bar,
                                                        tape_dot[i], params_dot[i], tape_dot[i + 1], y_bar_dot)
            if params_bar_dot[i] is None:
                params_bar_dot[i] = zeros_like_tree(params[i])
            params_bar[i], y_bar = call_vjp(layer, params[i], tape[i], tape[i + 1], y_bar)
            y_bar_dot = x_bar_dot
        like = list if isinstance(params, list) else tuple
        return like(params_bar), y_bar, like(params_bar_dot), y_bar_dot

    # ---- orders (see jacket/planning) --------------------------------------------------
    def plan(self, order="optimal", devices: int = 1, wrt="x", cost=None, chunk=None, memory_limit=None,
             checkpoint=None, dtype=None, batch: int = 1):
        """The static :class:`~jacket.Plan` for ``order`` (no arrays needed; cached per chain,
        order, devices and cost model). With ``devices > 1`` the TAN/ADJ seeds are split across
        that many devices and costs are per device. ``cost``: ``"fma"`` (default, exact and
        machine-independent), ``"calibrated"`` (predicted seconds from rates measured on this
        device: ``jacket calibrate``; "optimal" is then the fastest predicted plan) or a cost
        model. ``order="fastest"`` autotunes: the best few plans under the calibrated model are
        compiled and timed here, and the winner is cached on disk (``jacket.tuning``).
        ``chunk``: run every TAN/ADJ sweep that many seed vectors at a time (less memory, the
        same fma; :meth:`~jacket.Plan.chunked`). ``checkpoint``: run every ADJ sweep in that many
        segments (``"sqrt"``: ⌈√length⌉), recomputing their activations instead of reading the
        whole tape (:meth:`~jacket.Plan.checkpointed`). ``memory_limit`` (bytes, or ``"64MB"``): the
        cheapest plan whose predicted bytes for one call (arguments, result, XLA's temporaries:
        ``plan.memory``) fit, choosing the bracketing (for "optimal"), chunk size and checkpoints;
        a ValueError naming the smallest limit found to fit when none does (``planning/_limit.py``);
        the bytes are counted for ``batch`` examples per call in ``dtype`` (default float32).
        ``wrt="params"``: the plan of the parameter
        Jacobian (:class:`jacket.compose.ParamsPlan`: forward, reverse or the cheapest segmentation)."""
        if not (isinstance(wrt, str) and wrt == "x"):
            from ._params import check_wrt, params_plan
            check_wrt(wrt)
            if devices != 1:
                raise ValueError("Chain.plan(wrt='params') does not split over devices yet, got devices="
                                 f"{devices!r}")
            if cost is not None and cost != "fma":
                raise ValueError(f"Chain.plan(wrt='params') plans by fma only, got cost={cost!r}")
            if (chunk, memory_limit, checkpoint) != (None, None, None):
                raise ValueError("Chain.plan(wrt='params') does not chunk, checkpoint or plan under a memory limit "
                                 f"yet, got chunk={chunk!r}, memory_limit={memory_limit!r}, checkpoint={checkpoint!r}")
            return params_plan(self, order)
        from ..planning import make_plan
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"Chain.plan: batch must be a positive number of examples per call, got {batch!r}")
        return make_plan(self, order, devices, cost, dtype=dtype, memory_limit=memory_limit, chunk=chunk,
                         batch=batch, checkpoint=checkpoint)

    def jacobian(self, params, x, order="optimal", mesh=None, wrt="x", chunk=None, memory_limit=None,
                 checkpoint=None):
        """The Jacobian at x: shape ``s_N + s_0`` for one example (as ``jax.jacfwd``), or
        ``(batch,) + s_N + s_0`` for a batch, accumulated in ``order``: ``"forward"``,
        ``"reverse"``, ``"optimal"``, a bracketing such as ``"(J3 (J2 J1))"``, or a
        :class:`~jacket.Plan`. With a ``jax.sharding.Mesh``, the seeds of every TAN/ADJ step are
        split across its devices for one example, the examples for a batch. ``chunk``: run every
        TAN/ADJ sweep that many seed vectors at a time (``jax.lax.map`` with ``batch_size``)
        instead of all at once: the same result, less memory (``plan.memory`` counts it).
        ``checkpoint``: ADJ sweeps in segments that recompute their activations (as :meth:`plan`).
        ``memory_limit`` (bytes or ``"64MB"``): plan as :meth:`plan` does under that limit, for
        x's dtype and batch (the params once, the rest per example).

        ``wrt="params"``: the Jacobian with respect to the parameters instead, a pytree like
        ``params`` with leaves ``s_N + leaf_shape`` (``(batch,) + …`` for a batch); ``order`` is
        then ``"forward"``, ``"reverse"``, ``"optimal"`` (a mixed plan: segments, each swept in
        either mode) or a plan from ``plan(..., wrt="params")`` (``compose/_params.py``)."""
        if not (isinstance(wrt, str) and wrt == "x"):
            from ._params import check_wrt, params_jacobian
            check_wrt(wrt)
            if (chunk, memory_limit, checkpoint) != (None, None, None):
                raise ValueError("Chain.jacobian(wrt='params') does not chunk, checkpoint or plan under a memory "
                                 f"limit yet, got chunk={chunk!r}, memory_limit={memory_limit!r}, "
                                 f"checkpoint={checkpoint!r}")
            return params_jacobian(self, params, x, order, mesh)
        from ..execute import jacobian
        return jacobian(self, params, x, order, mesh, chunk, memory_limit, checkpoint)
