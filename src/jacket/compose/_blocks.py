"""Blocks: layers made of sub-chains, whose rules compose their children's rules.

* :class:`Residual` ``y = x + f(x)``: Jacobian ``I + J_f``, the identity kept implicit (it adds to
  the diagonal of whatever ``J_f`` is: diagonal, diagonal plus low rank, dense);
* :class:`Parallel` ``y = merge(f_1(x), …, f_k(x))``: fan-out; ``merge="sum"`` has the Jacobian
  ``Σ J_k`` and ``merge="concat"`` stacks the ``J_k`` along an output axis. Cotangents of the
  branches accumulate into one ``x_bar``.

Each child is a :class:`Chain` (a single layer becomes a one-layer chain), bound to the block's
input shape when the block is bound. Params are the body's params (``Residual``: a tuple with
one entry per layer of ``f``) or one such tuple per branch (``Parallel``).

Costs come from the children: one tangent through a block costs its chains' tangents plus the
merge. A block is a composite of the layer protocol: it exposes its chains (``inner_chains``)
and how their Jacobians merge (``merge_structure`` for the planner, ``merge_jacobians`` for the
executor); the planner plans each chain and takes the block as one factor of the outer plan, so
the plans it considers never reach inside a block (notes/architectures.md says which plans that
leaves out).
"""
from __future__ import annotations

from functools import reduce

import jax.numpy as jnp

from ..core import Layer, size
from ..operators import Structure, add, concatenate, plus_identity
from ._chain import Chain, require_second_order
from ._sweeps import pull, pull_tangents, push, record, record_tangents

__all__ = ["Block", "Residual", "Parallel"]


def _as_chain(body, where) -> Chain:
    if isinstance(body, Chain):
        return body
    if isinstance(body, Layer):
        return Chain([body])
    if isinstance(body, (list, tuple)):
        return Chain(body)
    raise TypeError(f"{where}: expected a jacket.Layer, a Chain or a list of layers, got {body!r}")


class Block(Layer):
    """Base of the blocks. Subclasses set ``self.chains`` (a tuple of Chains) and define the merge:
    ``_merge(x, outs)``, ``_merge_tangent(x, x_dot, outs, y_dots)``, ``_split(y_bar, chains)``,
    ``_merge_cost``, ``merge_structure`` and ``merge_jacobians``; params are mapped to one entry
    per chain by ``split_params``."""

    symbolic_zeros = True
    chains: tuple

    # ---- structure -----------------------------------------------------------------------
    def _with_chains(self, chains) -> "Block":  # pragma: no cover - abstract
        raise NotImplementedError

    def split_params(self, params) -> tuple:
        return tuple(params)

    def _from_per_chain(self, per_chain):
        return tuple(per_chain)

    def named_chains(self) -> tuple[tuple[str, Chain], ...]:
        """``(name, chain)`` pairs, the names used in paths (``layer 3 → Residual → layer 2``)."""
        return tuple((f"{type(self).__name__} branch {k}", c) for k, c in enumerate(self.chains, 1))

    def bind(self, in_shape):
        chains = tuple(c.bind(in_shape) for c in self.chains)
        return self if chains == self.chains else self._with_chains(chains)

    def input_shape(self):
        return next((c.input_shape() for c in self.chains if c.input_shape() is not None), None)

    def _bound(self, in_shape) -> tuple[Chain, ...]:
        return tuple(c.bind(tuple(in_shape)) for c in self.chains)

    def inner_chains(self, in_shape):
        return self._bound(in_shape)

    # ---- primal --------------------------------------------------------------------------
    def init(self, key):
        import jax
        keys = jax.random.split(key, len(self.chains))
        return self._from_per_chain(tuple(c.init(k) for c, k in zip(self.chains, keys)))

    def apply(self, params, x):
        outs = [record(c, p, x)[0] for c, p in zip(self._for(x), self.split_params(params))]
        return self._merge(x, outs)

    def _for(self, x):
        """The chains bound to x's example shape (the block may be used unbound, on its own), its
        output shape checked (a clear error for a Residual whose body changes the shape, or
        Parallel branches that don't merge)."""
        if all(c.bound for c in self.chains):
            chains, shape = self.chains, self.chains[0].in_shape
        else:
            shape = next((c.input_shape() for c in self.chains if c.input_shape() is not None), None)
            if shape is None:
                raise ValueError(f"{self!r} does not know its input shape: use it inside a Chain, or bind it "
                                 f"with .bind(in_shape)")
            chains = self._bound(shape)
        if tuple(x.shape[-len(shape):]) != tuple(shape) or x.ndim not in (len(shape), len(shape) + 1):
            raise ValueError(f"{self!r}: x has shape {tuple(x.shape)}, but must have shape {tuple(shape)} "
                             f"(one example) or (batch,) + {tuple(shape)}")
        self.output_shape(shape)  # raises a clear ValueError when the merge does not fit
        return chains

    # ---- rules ---------------------------------------------------------------------------
    def jvp(self, params, x, y, x_dot, params_dot=None):
        per_dot = (None,) * len(self.chains) if params_dot is None else self.split_params(params_dot)
        outs, y_dots = [], []
        for (name, _), c, p, p_dot in zip(self.named_chains(), self._for(x), self.split_params(params), per_dot):
            out, out_dot = push(c, p, x, x_dot, p_dot, where=f"{name} → ")
            outs.append(out)
            y_dots.append(out_dot)
        return self._merge_tangent(x, x_dot, outs, y_dots)

    def vjp(self, params, x, y, y_bar):
        chains = self._for(x)
        y_bars, x_bar = self._split(y_bar, chains)
        params_bar = []
        for (name, _), c, p, c_bar in zip(self.named_chains(), chains, self.split_params(params), y_bars):
            p_bar, c_x_bar = pull(c, p, record(c, p, x)[1], c_bar, where=f"{name} → ")
            params_bar.append(p_bar)
            x_bar = c_x_bar if x_bar is None else x_bar + c_x_bar
        return self._from_per_chain(params_bar), x_bar

    @property
    def has_second_order(self) -> bool:
        """Whether every layer of every child has a second-order rule (``vjp_jvp``)."""
        return all(c.has_second_order for c in self.chains)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        """The tangent of :meth:`vjp` along ``(params_dot, x_dot)`` and ``y_bar_dot``: each child's
        forward-over-reverse pass over the split ``(y_bar, y_bar_dot)``, the ``x_bar_dot`` summed
        (the skip connection adds ``y_bar_dot``). ``(params_bar_dot, x_bar_dot)``, shapes of params, x."""
        require_second_order(self, type(self).__name__)
        chains = self._for(x)
        y_bars, _ = self._split(y_bar, chains)
        y_bar_dots, x_bar_dot = (([None] * len(chains), None) if y_bar_dot is None
                                 else self._split(y_bar_dot, chains))
        per_dot = (None,) * len(chains) if params_dot is None else self.split_params(params_dot)
        params_bar_dot = []
        for (name, _), c, p, p_dot, c_bar, c_bar_dot in zip(self.named_chains(), chains, self.split_params(params),
                                                             per_dot, y_bars, y_bar_dots):
            tape, dots = record_tangents(c, p, x, x_dot, p_dot, where=f"{name} → ")
            _, _, p_bar_dot, c_x_bar_dot = pull_tangents(c, p, tape, dots, p_dot, c_bar, c_bar_dot,
                                                         where=f"{name} → ")
            params_bar_dot.append(p_bar_dot)
            x_bar_dot = c_x_bar_dot if x_bar_dot is None else x_bar_dot if c_x_bar_dot is None \
                else x_bar_dot + c_x_bar_dot
        return self._from_per_chain(params_bar_dot), x_bar_dot

    # ---- costs ---------------------------------------------------------------------------
    def jvp_cost(self, in_shape):
        return sum(c.jvp_cost(in_shape) for c in self._bound(in_shape)) + self._merge_cost(in_shape)

    def vjp_cost(self, in_shape):
        return sum(c.vjp_cost(in_shape) for c in self._bound(in_shape)) + self._merge_cost(in_shape)


class Residual(Block):
    """``Residual(f)``: ``y = x + f(x)``, ``f`` a layer, a Chain or a list of layers mapping a shape
    to itself. Params: ``f``'s (for a list, one entry per layer). Jacobian ``I + J_f``."""

    def __init__(self, f):
        self.chains = (_as_chain(f, "Residual"),)

    @property
    def body(self) -> Chain:
        return self.chains[0]

    def __repr__(self):
        layers = self.body.layers
        return f"Residual({layers[0]!r})" if len(layers) == 1 else f"Residual([{', '.join(map(repr, layers))}])"

    def _with_chains(self, chains):
        return Residual(chains[0])

    def split_params(self, params):
        return (params,)

    def _from_per_chain(self, per_chain):
        return per_chain[0]

    def named_chains(self):
        return (("Residual", self.body),)

    def output_shape(self, in_shape):
        out = self.body.bind(tuple(in_shape)).out_shape
        if tuple(out) != tuple(in_shape):
            raise ValueError(f"{self!r}: f maps shape {tuple(in_shape)} to {tuple(out)}; the skip connection "
                             f"x + f(x) needs f to keep the shape")
        return tuple(in_shape)

    def _merge(self, x, outs):
        return x + outs[0]

    def _merge_tangent(self, x, x_dot, outs, y_dots):
        if y_dots[0] is None:
            return x_dot
        return y_dots[0] if x_dot is None else x_dot + y_dots[0]

    def _split(self, y_bar, chains):
        return [y_bar], y_bar  # the skip connection passes y_bar straight to x_bar

    def _merge_cost(self, in_shape):
        return size(in_shape)

    def merge_structure(self, in_shape, structures):
        return structures[0].plus_identity()

    def merge_jacobians(self, in_shape, operators):
        return plus_identity(operators[0])


class Parallel(Block):
    """``Parallel([f_1, …, f_k], merge="sum" | "concat", axis=-1)``: every branch sees the same x.
    ``"sum"``: ``y = Σ f_k(x)`` (equal output shapes), Jacobian ``Σ J_k``; ``"concat"``: the
    outputs concatenated along ``axis`` of one example (-1: features; for ``(C, H, W)`` images,
    ``0`` or ``-3`` stacks channels), Jacobian the ``J_k`` stacked. Params: one tuple per branch."""

    def __init__(self, branches, merge: str = "sum", axis: int = -1):
        if not isinstance(branches, (list, tuple)) or not branches:
            raise ValueError(f"Parallel needs a non-empty list of branches, got {branches!r}")
        if merge not in ("sum", "concat"):
            raise ValueError(f"Parallel merge must be 'sum' or 'concat', got {merge!r}")
        self.chains = tuple(_as_chain(b, f"Parallel branch {k}") for k, b in enumerate(branches, 1))
        self.merge = merge
        self.axis = int(axis)

    def __repr__(self):
        def show(c):
            return repr(c.layers[0]) if len(c.layers) == 1 else f"[{', '.join(map(repr, c.layers))}]"
        extra = f", axis={self.axis}" if self.merge == "concat" and self.axis != -1 else ""
        return f"Parallel([{', '.join(show(c) for c in self.chains)}], merge={self.merge!r}{extra})"

    def _with_chains(self, chains):
        return Parallel(list(chains), self.merge, self.axis)

    def _out_shapes(self, in_shape):
        return [c.out_shape for c in self._bound(in_shape)]

    def _example_axis(self, ndim):
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{self!r}: axis {self.axis} is out of range for outputs with {ndim} axes")
        return self.axis % ndim

    def output_shape(self, in_shape):
        shapes = self._out_shapes(in_shape)
        if self.merge == "sum":
            if any(s != shapes[0] for s in shapes):
                raise ValueError(f"{self!r}: merge='sum' needs equal output shapes, the branches give "
                                 f"{', '.join(map(str, shapes))}")
            return shapes[0]
        ndim = len(shapes[0])
        a = self._example_axis(ndim)
        rest = [s[:a] + s[a + 1:] for s in shapes]
        if any(len(s) != ndim for s in shapes) or any(r != rest[0] for r in rest):
            raise ValueError(f"{self!r}: merge='concat' along axis {self.axis} needs outputs equal on the other "
                             f"axes, the branches give {', '.join(map(str, shapes))}")
        return shapes[0][:a] + (sum(s[a] for s in shapes),) + shapes[0][a + 1:]

    def _merge(self, x, outs):
        if self.merge == "sum":
            return reduce(lambda a, b: a + b, outs)
        ndim = len(self._for(x)[0].out_shape)
        return jnp.concatenate(outs, axis=self._example_axis(ndim) - ndim)  # from the end: a batch axis may lead

    def _merge_tangent(self, x, x_dot, outs, y_dots):
        present = [d for d in y_dots if d is not None]
        if not present:
            return None
        if self.merge == "sum":
            return reduce(lambda a, b: a + b, present)
        filled = [jnp.zeros_like(o) if d is None else d for o, d in zip(outs, y_dots)]
        return self._merge(x, filled)

    def _split(self, y_bar, chains):
        if self.merge == "sum":
            return [y_bar] * len(chains), None
        ndim = len(chains[0].out_shape)
        a = self._example_axis(ndim)
        sizes = [c.out_shape[a] for c in chains]
        cuts = [sum(sizes[:k]) for k in range(1, len(sizes))]
        return jnp.split(y_bar, cuts, axis=a - ndim), None

    def _merge_cost(self, in_shape):
        return 0 if self.merge == "concat" else (len(self.chains) - 1) * size(self.output_shape(in_shape))

    def merge_structure(self, in_shape, structures):
        if self.merge == "concat":
            rows = sum(s.rows for s in structures)
            return Structure("matrix", rows, structures[0].cols), 0
        total, cost = structures[0], 0
        for s in structures[1:]:
            total, step = total.add(s)
            cost += step
        return total, cost

    def merge_jacobians(self, in_shape, operators):
        if self.merge == "concat":
            shapes = [c.out_shape for c in self._bound(in_shape)]
            return concatenate(operators, shapes, operators[0].shape[1], self._example_axis(len(shapes[0])))
        total = operators[0]
        for op in operators[1:]:
            total = add(total, op)[0]
        return total
