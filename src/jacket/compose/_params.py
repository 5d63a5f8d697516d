"""Jacobians with respect to the parameters: ``chain.jacobian(params, x, wrt="params")`` and its
plan, accumulated with the layers' own rules (no JAX autodiff: the rules and ``jax.vmap`` only).

For one example ``x`` (shape ``s_0``) and output ``y = y_N`` (shape ``s_N``, size ``n_N``), the
parameter Jacobian is a pytree like ``params`` whose leaf for a parameter of shape ``leaf_shape``
has shape ``s_N + leaf_shape`` (as ``jax.jacrev(lambda p: chain.apply(p, x))``). Write ``y_b``
for the output of layer b (``y_0 = x``, size ``n_b``), ``P_t`` for the entries of layer t's
params, ``jvp_t`` / ``vjp_t`` for its declared rule costs, and ``G_t = ∂y_N/∂θ_t = A_b ∂y_b/∂θ_t``
with ``A_b = ∂y_N/∂y_b`` for any boundary ``b`` at or after layer t.

A plan cuts the chain at boundaries into **segments**; each segment ``(lo, hi]`` (layers
``lo+1 … hi``) yields the local Jacobians ``∂y_hi/∂θ_t`` of its layers, and, unless it is the
first, ``B = ∂y_hi/∂y_lo``, in one of two modes:

* ``reverse``: the ``n_hi`` unit cotangents of ``y_hi`` pulled back through the segment's VJP
  rules (one vmapped sweep gives every layer's ``params_bar`` and B): ``n_hi · Σ vjp_t``;
* ``forward``: one unit tangent per parameter entry pushed from its own layer to ``y_hi``, and
  ``n_lo`` unit tangents of ``y_lo`` for B: ``Σ_t P_t · Σ_{u ≥ t} jvp_u + n_lo · Σ jvp_u``.

Segments are taken from the output end; after each one below the last, the accumulated
``A_hi`` (``n_N × n_hi``) multiplies its local Jacobians (``n_N n_hi P_t`` fma per layer) and
its B (``A_lo = A_hi B``, ``n_N n_hi n_lo``). One segment over the whole chain is the classic
``"reverse"`` (n_N adjoint rows whose prefixes ``J_N ⋯ J_{t+1}`` every layer shares) or
``"forward"`` (one tangent per parameter); re-seeding at a narrow boundary pays when the output
is wider than some layer inside the chain (a bottleneck), or when early layers have few
parameters. ``"optimal"`` is the cheapest segmentation by a dynamic programme over boundaries,
``O(N²)`` for N top-level layers (a block counts as one layer: its parameters travel with it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..core._checks import check_input
from ..core._shapes import split_batch
from ..core._tangents import call_jvp, call_vjp
from ._chain import Chain

__all__ = ["params_jacobian", "params_jacobian_costs", "params_plan", "ParamsPlan"]

PARAM_ORDERS = ("forward", "reverse", "optimal")
WRT = ("x", "params")
MODES = ("forward", "reverse")


def check_wrt(wrt):
    if not isinstance(wrt, str) or wrt not in WRT:
        raise ValueError(f"Chain.jacobian: wrt must be 'x' or 'params', got {wrt!r}")


def check_order(order):
    if isinstance(order, ParamsPlan):
        return
    if not isinstance(order, str) or order not in PARAM_ORDERS:
        raise ValueError(f"Chain.jacobian(wrt='params'): order must be one of {PARAM_ORDERS} or a plan from "
                         f"chain.plan(..., wrt='params'), got {order!r} (the bracketings of the input "
                         f"Jacobian are not offered for wrt='params')")


@dataclass(frozen=True)
class _Costs:
    """Per-layer figures of one chain (top-level layers t = 0 … N-1, boundaries b = 0 … N)."""
    entries: tuple  # P_t
    jvp: tuple
    vjp: tuple
    dims: tuple  # n_b
    first: int  # the first layer with parameters (N when none has any)

    def sweep(self, lo, hi, mode) -> int:
        """fma of segment (lo, hi]'s sweep; B is needed only when lo is past the first layer."""
        if mode == "reverse":
            return self.dims[hi] * sum(self.vjp[lo:hi])
        tangents = sum(p * sum(self.jvp[t:hi]) for t, p in enumerate(self.entries[lo:hi], lo))
        return tangents + (self.dims[lo] * sum(self.jvp[lo:hi]) if lo > self.first else 0)

    def combine(self, lo, hi) -> int:
        """fma of multiplying segment (lo, hi]'s local Jacobians by ``A_hi`` (none for the top one)."""
        if hi == len(self.entries):
            return 0
        rows = self.dims[-1] * self.dims[hi]
        return rows * (sum(self.entries[lo:hi]) + (self.dims[lo] if lo > self.first else 0))


@lru_cache(maxsize=256)
def _costs(chain: Chain) -> _Costs:
    shapes = jax.eval_shape(chain.init, jax.random.PRNGKey(0))
    entries = tuple(sum(leaf.size for leaf in jax.tree_util.tree_leaves(p)) for p in shapes)
    jvp = tuple(int(layer.jvp_cost(s)) for layer, s in zip(chain.layers, chain.shapes))
    vjp = tuple(int(layer.vjp_cost(s)) for layer, s in zip(chain.layers, chain.shapes))
    first = next((i for i, p in enumerate(entries) if p), len(entries))
    return _Costs(entries, jvp, vjp, tuple(chain.dims), first)


def _segments_fma(c: _Costs, segments) -> int:
    return sum(c.sweep(lo, hi, mode) + c.combine(lo, hi) for lo, hi, mode in segments)


@lru_cache(maxsize=256)
def _optimal_segments(chain: Chain) -> tuple:
    """The cheapest segmentation: ``best[lo]`` = cheapest cost of everything above boundary lo
    (local Jacobians of layers ``lo+1 …`` times their A, and ``A_lo``), over the first
    segment's end ``hi`` and mode. Ties go to fewer segments, then to reverse."""
    c = _costs(chain)
    n = len(c.entries)
    if c.first == n:
        return ()
    best = {n: (0, ())}
    for lo in range(n - 1, c.first - 1, -1):
        options = []
        for hi in range(lo + 1, n + 1):
            for rank, mode in enumerate(("reverse", "forward")):
                cost = best[hi][0] + c.sweep(lo, hi, mode) + c.combine(lo, hi)
                options.append((cost, len(best[hi][1]), rank, ((lo, hi, mode),) + best[hi][1]))
        cost, _, _, segments = min(options, key=lambda o: o[:3])
        best[lo] = (cost, segments)
    return tuple(sorted(best[c.first][1], key=lambda s: -s[1]))  # from the output end


@lru_cache(maxsize=256)
def params_jacobian_costs(chain: Chain) -> dict:
    """Model fma of one example's parameter Jacobian: ``"forward"``, ``"reverse"`` and
    ``"optimal"`` (the cheapest segmentation, see the module docstring), plus ``"entries"``
    (P_t per layer) and ``"push"`` (one full params tangent pushed to the output,
    ``Σ_{t ≥ first} jvp_t``)."""
    c = _costs(chain)
    n = len(c.entries)
    whole = ((c.first, n),) if c.first < n else ()
    return {"forward": _segments_fma(c, [w + ("forward",) for w in whole]),
            "reverse": _segments_fma(c, [w + ("reverse",) for w in whole]),
            "optimal": _segments_fma(c, _optimal_segments(chain)),
            "entries": c.entries, "push": sum(c.jvp[c.first:])}


@dataclass(frozen=True)
class ParamsPlan:
    """The plan of a parameter Jacobian (``chain.plan(order, wrt="params")``): its segments
    ``(lo, hi, mode)`` from the output end (layers ``lo+1 … hi``, mode ``"forward"`` or
    ``"reverse"``), the order asked for, and the model cost. Pass it back as
    ``chain.jacobian(params, x, order=plan, wrt="params")``; ``str(plan)`` prints the cost table."""

    chain: Chain
    segments: tuple
    requested: str

    @property
    def fma(self) -> int:
        return _segments_fma(_costs(self.chain), self.segments)

    @property
    def order(self) -> str:
        """``"forward"`` / ``"reverse"`` for one segment, else ``"mixed"``."""
        return self.segments[0][2] if len(self.segments) == 1 else "mixed" if self.segments else "none"

    def table(self) -> str:
        from .._table import format_table
        chain, c, costs = self.chain, _costs(self.chain), params_jacobian_costs(self.chain)
        n_out, total = chain.dims[-1], sum(c.entries)
        shapes = " -> ".join("×".join(map(str, s)) for s in chain.shapes)
        best = min(costs["forward"], costs["reverse"])
        this = f"{self.fma:,} fma"
        if best and self.fma != best:
            this += f" ({best / self.fma:.2f}x fewer than the better single mode)" if self.fma < best else \
                f" ({self.fma / best:.2f}x the better single mode)"
        lines = [("order:", self.order + (f"  ({self.requested})" if self.requested != self.order else "")),
                 ("forward (one tangent per parameter):", f"{costs['forward']:,} fma"),
                 (f"reverse ({n_out} adjoint rows, shared):", f"{costs['reverse']:,} fma"),
                 ("this plan:", this)]
        head = [f"  Jacobian with respect to the params of a chain with shapes {shapes}: "
                f"{n_out}×{total} ({total:,} parameters)"]
        head += [f"  {label.ljust(40)} {value}" for label, value in lines]
        rows = []
        for k, (lo, hi, mode) in enumerate(self.segments, 1):
            plural = "s" if c.dims[hi] != 1 else ""
            seeds = (f"{c.dims[hi]} cotangent{plural} of y{hi}" if mode == "reverse" else
                     f"{sum(c.entries[lo:hi])} parameter tangents" + (f" + {c.dims[lo]} of y{lo}" if lo > c.first
                                                                     else ""))
            rows.append((k, f"{lo + 1}" if hi == lo + 1 else f"{lo + 1}-{hi}", mode, seeds,
                         c.sweep(lo, hi, mode), c.combine(lo, hi)))
        segments = format_table(["segment", "layers", "mode", "seeds", "sweep fma",
                                 f"fma times A (∂y{len(c.entries)}/∂y_hi)"], rows)
        layers = format_table(["layer", "", "params", "forward alone: fma of its tangents to the output",
                               f"reverse alone: fma of {n_out} rows through it"],
                              [(t, repr(layer), p, p * sum(c.jvp[t - 1:]),
                                n_out * c.vjp[t - 1] if t - 1 >= c.first else 0)
                               for t, (layer, p) in enumerate(zip(chain.layers, c.entries), 1)])
        return "\n".join(head) + "\n\n" + segments + "\n\n" + layers

    __str__ = table


def resolve_plan(chain: Chain, order="optimal") -> ParamsPlan:
    check_order(order)
    if isinstance(order, ParamsPlan):
        if order.chain != chain:
            raise ValueError(f"Chain.jacobian(wrt='params'): the plan was made for {order.chain!r}, not {chain!r}")
        return order
    return _plan(chain, order)


@lru_cache(maxsize=256)
def _plan(chain, order):
    c = _costs(chain)
    n = len(c.entries)
    if order == "optimal":
        return ParamsPlan(chain, _optimal_segments(chain), order)
    return ParamsPlan(chain, ((c.first, n, order),) if c.first < n else (), order)


def params_plan(chain: Chain, order="optimal") -> ParamsPlan:
    """The :class:`ParamsPlan` of ``chain``'s parameter Jacobian for ``order``
    (``"forward"``, ``"reverse"`` or ``"optimal"``)."""
    return resolve_plan(chain, order)


def params_jacobian(chain: Chain, params, x, order="optimal", mesh=None):
    """The Jacobian of ``chain.apply(params, x)`` with respect to ``params``: a pytree like
    ``params`` with leaves ``s_N + leaf_shape`` for one example, ``(batch,) + s_N + leaf_shape``
    for a batch (each example its own Jacobian), in the dtype of the output. ``order``:
    ``"reverse"``, ``"forward"``, ``"optimal"`` (the cheapest segmentation) or a
    :class:`ParamsPlan`."""
    if mesh is not None:
        raise ValueError("Chain.jacobian(wrt='params') does not take a mesh yet, got one")
    chain.check_params(params, "Chain.jacobian")
    plan = resolve_plan(chain, order)
    x = check_input(x, chain.in_shape, "Chain.jacobian")
    if split_batch(x.shape, chain.in_shape, "Chain.jacobian"):
        return jax.vmap(lambda xi: one_example(chain, plan.segments, params, xi))(x)
    return one_example(chain, plan.segments, params, x)


@partial(jax.jit, static_argnums=(0, 1))
def one_example(chain, segments, params, x):
    """One example's parameter Jacobian by ``segments`` (see :class:`ParamsPlan`)."""
    y, tape = chain._record(params, x)
    first = _costs(chain).first
    out = [jax.tree_util.tree_map(lambda a: jnp.zeros(y.shape + a.shape, y.dtype), p) for p in params]
    a = None  # A_hi as an (n_N, n_hi) matrix; None: the identity (the top segment)
    for lo, hi, mode in segments:
        local, b = (_reverse_segment if mode == "reverse" else _forward_segment)(chain, params, tape, lo, hi,
                                                                                 lo > first)
        n_hi = tape[hi].size
        for t, g in zip(range(lo, hi), local):
            out[t] = jax.tree_util.tree_map(
                lambda leaf: (leaf if a is None else (a @ leaf.reshape(n_hi, -1))).reshape(
                    y.shape + leaf.shape[1:]).astype(y.dtype), g)
        if b is not None:
            a = b if a is None else a @ b
    return type(params)(out)


def _reverse_segment(chain, params, tape, lo, hi, need_b):
    """``n_hi`` unit cotangents of ``y_hi`` through layers ``lo+1 … hi``: per layer, params_bar
    leaves ``(n_hi,) + leaf``; B ``(n_hi, n_lo)`` when asked."""
    y = tape[hi]

    def pull(v):
        bars = []
        for t in reversed(range(lo, hi)):
            p_bar, v = call_vjp(chain.layers[t], params[t], tape[t], tape[t + 1], v)
            bars.append(p_bar)
        return bars[::-1], v
    seeds = jnp.eye(y.size, dtype=y.dtype).reshape((y.size,) + y.shape)
    bars, x_bar = jax.vmap(pull)(seeds)
    return bars, (x_bar.reshape(y.size, -1) if need_b else None)


def _push(chain, params, tape, start, hi, x_dot, p_dot):
    """A tangent of layer ``start``'s input (or of its params) pushed to ``y_hi``."""
    for t in range(start, hi):
        x_dot = call_jvp(chain.layers[t], params[t], tape[t], tape[t + 1], x_dot, p_dot if t == start else None)
    return jnp.zeros_like(tape[hi]) if x_dot is None else x_dot


def _forward_segment(chain, params, tape, lo, hi, need_b):
    """One unit tangent per parameter entry of each layer, pushed to ``y_hi``: per layer, leaves
    ``(n_hi,) + leaf``; B ``(n_hi, n_lo)`` from ``n_lo`` unit tangents of ``y_lo`` when asked."""
    n_hi, local = tape[hi].size, []
    for t in range(lo, hi):
        leaves, treedef = jax.tree_util.tree_flatten(params[t])
        if not leaves:
            local.append(params[t])
            continue
        flat, unravel = ravel_pytree(params[t])
        push = lambda e, t=t, unravel=unravel: _push(chain, params, tape, t, hi, None, unravel(e))  # noqa: E731
        cols = jax.vmap(push)(jnp.eye(flat.size, dtype=flat.dtype)).reshape(flat.size, n_hi).T
        pieces, start = [], 0
        for leaf in leaves:
            pieces.append(cols[:, start:start + leaf.size].reshape((n_hi,) + leaf.shape))
            start += leaf.size
        local.append(jax.tree_util.tree_unflatten(treedef, pieces))
    if not need_b:
        return local, None
    x = tape[lo]
    seeds = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
    cols = jax.vmap(lambda e: _push(chain, params, tape, lo, hi, e, None))(seeds)
    return local, cols.reshape(x.size, n_hi).T


def reverse_rows(chain, params, x):
    """Leaves ``s_N + leaf``: one example's parameter Jacobian by one reverse sweep."""
    c = _costs(chain)
    return one_example(chain, ((c.first, len(c.entries), "reverse"),) if c.first < len(c.entries) else (),
                       params, x)
