"""Plans of the Jacobian with respect to the parameters (``jacket.jacobian(chain, argnums=0)``).

For one example ``x`` (shape ``s_0``) and output ``y = y_N`` (shape ``s_N``, size ``n_N``), the
parameter Jacobian is a pytree like ``params`` whose leaf for a parameter of shape ``leaf_shape``
has shape ``s_N + leaf_shape``. Write ``y_b`` for the output of layer b (``y_0 = x``, size
``n_b``), ``P_t`` for the entries of layer t's params, ``jvp_t`` / ``vjp_t`` for its declared rule
costs, and ``G_t = ∂y_N/∂θ_t = A_b ∂y_b/∂θ_t`` with ``A_b = ∂y_N/∂y_b`` for any ``b ≥ t``.

A plan cuts the chain into **segments** of factors ``a..b``; each yields the local Jacobians
``∂y_b/∂θ_t`` of its layers and, unless it is the first, ``B = ∂y_b/∂y_{a−1}``, by one sweep
(a plan step, :class:`ParamsSweep`):

* ``adj(Jb..Ja)``: the ``n_b`` unit cotangents of ``y_b`` pulled back through the segment's VJP
  rules (one vmapped sweep gives every layer's ``params_bar`` and B): ``n_b · Σ vjp_t`` fma;
* ``tan(Jb..Ja)``: one unit tangent per parameter entry pushed from its own layer to ``y_b``, and
  ``n_{a−1}`` unit tangents of ``y_{a−1}`` for B: ``Σ_t P_t · Σ_{u ≥ t} jvp_u + n_{a−1} · Σ jvp_u``.

Segments are taken from the output end; below the top one, each is multiplied by the
accumulated ``A_b`` (``n_N × n_b``, a MUL step, :class:`ParamsProduct`): ``n_N n_b P_t`` fma per
layer, and ``A_{a−1} = A_b B`` (``n_N n_b n_{a−1}``). One segment over the whole chain is the
classic ``"reverse"`` (n_N adjoint rows whose prefixes every layer shares) or ``"forward"`` (one
tangent per parameter); re-seeding at a narrow boundary pays when the output is wider than
some layer inside the chain (a bottleneck), or when early layers have few parameters.
``"optimal"`` is the cheapest segmentation by a dynamic programme over boundaries, ``O(N²)`` for
N top-level layers (a block counts as one layer: its parameters travel with it).

Order strings list the segments from the output end, ``"adj(J7..J4) tan(J3..J1)"``; the first
segment starts at the first layer with parameters. They parse back to the same plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..core import param_count
from ..core._tangents import call_jvp, call_vjp
from ..operators import Structure
from ._nodes import Node, factor_list, span

__all__ = ["ParamsModel", "ParamsSweep", "ParamsProduct", "params_root", "parse_params_order"]

MODES = {"tan": "forward", "adj": "reverse"}


class ParamsModel:
    """Per-layer figures of one chain for parameter Jacobians (layers t = 1 … N, boundaries
    b = 0 … N): ``entries[t]`` (P_t), ``jvp[t]``, ``vjp[t]``, ``dims[b]``; ``first``: the first
    layer with parameters (N + 1 when none has any)."""

    def __init__(self, chain):
        layers, shapes = chain.layers, chain.shapes
        self.n, self.dims, self.layers, self.shapes = len(layers), tuple(chain.dims), tuple(layers), tuple(shapes)
        self.entries = (0,) + tuple(param_count(layer, s) for layer, s in zip(layers, shapes))
        self.jvp = (0,) + tuple(int(layer.jvp_cost(s)) for layer, s in zip(layers, shapes))
        self.vjp = (0,) + tuple(int(layer.vjp_cost(s)) for layer, s in zip(layers, shapes))
        self.first = next((t for t in range(1, self.n + 1) if self.entries[t]), self.n + 1)

    @property
    def total(self) -> int:
        return sum(self.entries)

    def sweep_fma(self, a, b, mode) -> int:
        """fma of segment a..b's sweep; B is needed only when a is past the first layer."""
        if mode == "reverse":
            return self.dims[b] * sum(self.vjp[a:b + 1])
        tangents = sum(self.entries[t] * sum(self.jvp[t:b + 1]) for t in range(a, b + 1))
        return tangents + (self.dims[a - 1] * sum(self.jvp[a:b + 1]) if a > self.first else 0)

    def product_fma(self, a, b) -> int:
        """fma of multiplying segment a..b's local Jacobians (and B) by ``A_b`` (none for the top one)."""
        if b == self.n:
            return 0
        rows = self.dims[-1] * self.dims[b]
        return rows * (sum(self.entries[a:b + 1]) + (self.dims[a - 1] if a > self.first else 0))

    def sweep(self, a, b, mode) -> "ParamsSweep":
        need_b = a > self.first
        cols = sum(self.entries[a:b + 1]) + (self.dims[a - 1] if need_b else 0)
        step = self.sweep_fma(a, b, mode)
        cls = ParamsAdj if mode == "reverse" else ParamsTan
        return cls(lo=a, hi=b, structure=Structure("matrix", self.dims[b], cols), step_fma=step, fma=step,
                   need_b=need_b, seeds=self.dims[b] if mode == "reverse" else cols)

    def product(self, above: Node, segment: "ParamsSweep") -> "ParamsProduct":
        step = self.product_fma(segment.lo, segment.hi)
        structure = Structure("matrix", self.dims[-1], segment.structure.cols)
        return ParamsProduct(lo=segment.lo, hi=above.hi, structure=structure, step_fma=step,
                             fma=step + above.fma + segment.fma, above=above, segment=segment)

    def tree(self, segments) -> Node | None:
        """The plan tree of ``segments`` ((a, b, mode) from the output end), ``None`` for a chain
        without parameters."""
        root = None
        for a, b, mode in segments:
            node = self.sweep(a, b, mode)
            root = node if root is None else self.product(root, node)
        return root

    @lru_cache(maxsize=64)
    def optimal_segments(self) -> tuple:
        """The cheapest segmentation: ``best[a]`` = cheapest cost of everything from layer a up
        (local Jacobians of layers a … times their A, and ``A_{a−1}``), over the first segment's
        end b and mode. Ties go to fewer segments, then to reverse."""
        n = self.n
        if self.first > n:
            return ()
        best = {n + 1: (0, ())}
        for a in range(n, self.first - 1, -1):
            options = []
            for b in range(a, n + 1):
                for rank, mode in enumerate(("reverse", "forward")):
                    cost = best[b + 1][0] + self.sweep_fma(a, b, mode) + self.product_fma(a, b)
                    options.append((cost, len(best[b + 1][1]), rank, ((a, b, mode),) + best[b + 1][1]))
            cost, _, _, segments = min(options, key=lambda o: o[:3])
            best[a] = (cost, segments)
        return tuple(sorted(best[self.first][1], key=lambda s: -s[1]))  # from the output end

    def whole(self, mode) -> tuple:
        return ((self.first, self.n, mode),) if self.first <= self.n else ()

    def __hash__(self):
        return hash((self.layers, self.shapes))

    def __eq__(self, other):
        return isinstance(other, ParamsModel) and (self.layers, self.shapes) == (other.layers, other.shapes)


@dataclass(frozen=True)
class Partial:
    """What a params step gives: ``outs[t]`` (layer t's Jacobian leaves, rows of ``y_b`` or, after
    a product, of ``y_N``) and ``a`` (``∂y_N/∂y_{lo−1}`` as a matrix, ``None`` below the first
    layer with parameters)."""

    outs: dict
    a: object = None


@dataclass(frozen=True, kw_only=True)
class ParamsSweep(Node):
    """One segment's sweep over factors ``lo..hi`` (module docstring): ``∂y_hi/∂θ_t`` for each of
    its layers and, when ``need_b``, ``B = ∂y_hi/∂y_{lo−1}``."""

    word: ClassVar[str] = ""
    need_b: bool
    seeds: int = field(compare=False)

    def order(self):
        return f"{self.word}({factor_list(self.lo, self.hi)})"

    def ticks(self, cost, model):
        return self.step_fma

    def run(self, ctx):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class ParamsAdj(ParamsSweep):
    op: ClassVar[str] = "ADJ"
    colour: ClassVar[str] = "#f8dccf"
    word: ClassVar[str] = "adj"

    def describe(self):
        extra = f" and B = ∂y{self.hi}/∂y{self.lo - 1}" if self.need_b else ""
        return f"unit rows of y{self.hi} → {span(self.lo, self.hi)}: params{extra} ({self.seeds} rows)"

    def run(self, ctx):
        """The ``n_hi`` unit cotangents of ``y_hi`` through layers ``lo … hi``: per layer,
        params_bar leaves ``(n_hi,) + leaf``; B ``(n_hi, n_{lo−1})`` when asked."""
        lo, hi, tape = self.lo, self.hi, ctx.tape
        y = tape[hi]

        def pull(v):
            bars = {}
            for t in range(hi, lo - 1, -1):
                bars[t], v = call_vjp(ctx.layers[t - 1], ctx.params[t - 1], tape[t - 1], tape[t], v, f"layer {t}")
            return bars, v
        seeds = jnp.eye(y.size, dtype=y.dtype).reshape((y.size,) + y.shape)
        bars, x_bar = jax.vmap(pull)(seeds)
        return Partial(bars, x_bar.reshape(y.size, -1) if self.need_b else None)


@dataclass(frozen=True, kw_only=True)
class ParamsTan(ParamsSweep):
    op: ClassVar[str] = "TAN"
    colour: ClassVar[str] = "#d8f0d2"
    word: ClassVar[str] = "tan"

    def describe(self):
        extra = f" + unit columns of y{self.lo - 1}" if self.need_b else ""
        return f"param tangents{extra} → {span(self.lo, self.hi)} ({self.seeds} cols)"

    def run(self, ctx):
        """One unit tangent per parameter entry of each layer, pushed to ``y_hi``: per layer, leaves
        ``(n_hi,) + leaf``; B ``(n_hi, n_{lo−1})`` from unit tangents of ``y_{lo−1}`` when asked."""
        lo, hi, tape = self.lo, self.hi, ctx.tape
        n_hi, local = tape[hi].size, {}

        def push(start, x_dot, p_dot):
            for t in range(start, hi + 1):
                x_dot = call_jvp(ctx.layers[t - 1], ctx.params[t - 1], tape[t - 1], tape[t], x_dot,
                                 p_dot if t == start else None, f"layer {t}")
            return jnp.zeros_like(tape[hi]) if x_dot is None else x_dot
        for t in range(lo, hi + 1):
            leaves, treedef = jax.tree_util.tree_flatten(ctx.params[t - 1])
            if not leaves:
                local[t] = ctx.params[t - 1]
                continue
            flat, unravel = ravel_pytree(ctx.params[t - 1])
            cols = jax.vmap(lambda e, t=t, unravel=unravel: push(t, None, unravel(e)))(
                jnp.eye(flat.size, dtype=flat.dtype)).reshape(flat.size, n_hi).T
            pieces, start = [], 0
            for leaf in leaves:
                pieces.append(cols[:, start:start + leaf.size].reshape((n_hi,) + leaf.shape))
                start += leaf.size
            local[t] = jax.tree_util.tree_unflatten(treedef, pieces)
        if not self.need_b:
            return Partial(local)
        x = tape[lo - 1]
        seeds = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
        cols = jax.vmap(lambda e: push(lo, e, None))(seeds)
        return Partial(local, cols.reshape(x.size, n_hi).T)


@dataclass(frozen=True, kw_only=True)
class ParamsProduct(Node):
    """``A_hi`` (from the segments ``above``) times ``segment``'s local Jacobians and B."""

    op: ClassVar[str] = "MUL"
    colour: ClassVar[str] = "#eeeeee"
    above: Node
    segment: ParamsSweep

    def children(self):
        return (self.above, self.segment)

    def order(self):
        return f"{self.above.order()} {self.segment.order()}"

    def describe(self):
        b = self.segment.hi
        extra = " and B" if self.segment.need_b else ""
        return f"∂yN/∂y{b} @ (local Jacobians of {span(self.segment.lo, b)}{extra})"

    def ticks(self, cost, model):
        return self.step_fma

    def run(self, ctx):
        above, local = self.above.run(ctx), self.segment.run(ctx)
        a, n_hi = above.a, ctx.tape[self.segment.hi].size
        outs = dict(above.outs)
        for t, tree in local.outs.items():
            outs[t] = jax.tree_util.tree_map(lambda leaf: (a @ leaf.reshape(n_hi, -1)).reshape(
                (a.shape[0],) + leaf.shape[1:]), tree)
        return Partial(outs, None if local.a is None else a @ local.a)


def params_root(model: ParamsModel, order: str) -> tuple[Node | None, str]:
    """``(tree, name)`` of ``order``: ``"forward"``, ``"reverse"``, ``"optimal"`` or segments."""
    key = order.strip().lower()
    if key == "optimal":
        return model.tree(model.optimal_segments()), "optimal"
    if key in ("forward", "reverse"):
        return model.tree(model.whole(key)), key
    return model.tree(parse_params_order(order, model)), ""


def parse_params_order(text: str, model: ParamsModel) -> tuple:
    """``(a, b, mode)`` segments from ``"adj(J7..J4) tan(J3..J1)"`` (from the output end, down to
    the first layer with parameters), with a clear error naming the position of what is wrong."""
    import re
    n, first = model.n, model.first
    cover = f"J{first}..J{n}" if first < n else f"J{n}"

    def error(message, pos):
        raise ValueError(f"invalid order {text!r} for a parameter Jacobian: {message} at position {pos}\n"
                         f"    {text}\n    {' ' * pos}^\n(segments from the output end down to J{first}, the first "
                         f"layer with parameters, each tan(Jb..Ja) or adj(Jb..Ja), e.g. 'adj(J{n}..J{first})')")
    if first > n:
        error("this chain has no parameters", 0)
    segment = re.compile(r"\s*(tan|adj)\(\s*J(\d+)\s*(?:(?:\.\.\s*J(\d+))|((?:\s+J\d+)*))\s*\)", re.IGNORECASE)
    pos, expected_hi, found = 0, n, []
    stripped = text.rstrip()
    while pos < len(stripped):
        m = segment.match(stripped, pos)
        if m is None:
            error("expected tan(Jb..Ja) or adj(Jb..Ja)", len(stripped) - len(stripped[pos:].lstrip()))
        word, hi = m.group(1).lower(), int(m.group(2))
        if m.group(3):
            lo = int(m.group(3))
        else:
            rest = [int(f[1:]) for f in m.group(4).split()]
            lo = rest[-1] if rest else hi
            if rest and rest != list(range(hi - 1, lo - 1, -1)):
                error("factors must be consecutive and descending", m.start(4))
        start = m.start(2) - 1
        if hi != expected_hi:
            error(f"this segment must start at J{expected_hi}" if found else f"the first segment must start at J{n}, "
                  f"the output end", start)
        if lo > hi:
            error(f"a range runs from the later factor down: write J{lo}..J{hi}", start)
        if lo < first:
            error(f"J{lo} is below J{first}, the first layer with parameters", start)
        found.append((lo, hi, MODES[word]))
        expected_hi = lo - 1
        pos = m.end()
    if not found:
        error("empty order", 0)
    if expected_hi >= first:
        error(f"the segments must cover {cover}: J{first}..J{expected_hi} missing", len(stripped))
    return tuple(found)
