"""Plans for accumulating a chain's Jacobian: :class:`Plan`, ``make_plan``, and the optimal
mixed-mode planner.

``make_plan(chain, order)`` turns ``"forward"``, ``"reverse"``, a bracketing or ``"optimal"``
into a :class:`Plan`: a static tree of steps (``_nodes.py``) with its fma cost, peak memory
and a printed table in the style of opt_einsum's path info. Plans are cached per (chain,
order, devices), so an eager ``chain.jacobian(..., order="optimal")`` plans once.

The optimal plan is an interval dynamic programme over sub-chains ``J_j ⋯ J_i``. For each it
keeps the cheapest way to obtain the sub-product as a dense matrix and, when every factor in it
is structured, as a structured operator (diagonal or diagonal-plus-rank-r: all bracketings of
structured factors give the same kind and rank, so one entry suffices). Moves per sub-chain:

* materialise a single factor (JAC);
* tangent (TAN) or adjoint (ADJ) accumulation from unit vectors;
* for every split k: a product of the two halves in any of their forms (MUL), pushing the
  accumulated right half through the left half's JVP rules (TAN with a seed), or pulling the
  accumulated left half back through the right half's VJP rules (ADJ with a seed).

This is the Jacobian chain bracketing problem with tangent, adjoint and product moves
(Naumann; the moves of STCE-at-RWTH/Jacobian-Chaining), exact within its move set and
checked against brute-force enumeration in the tests. The DP runs diagonal by diagonal with
numpy over all intervals of one length at once: O(N³) arithmetic, a few ms for 200 layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._table import format_table
from ..operators import DENSE_RANK, product_fma
from ._model import Model
from ._nodes import Node
from ._orders import parse_order

__all__ = ["Plan", "make_plan", "optimal_plan"]

_INF = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, eq=False)
class Plan:
    """A static accumulation plan for one chain. Pass it back as ``chain.jacobian(params, x, order=plan)``.

    Attributes: ``fma`` (model cost), ``order`` (a string that re-parses to the same plan),
    ``steps`` (nodes in execution order), ``forward_fma`` / ``reverse_fma`` (the two classic
    modes), ``speedup`` (their minimum over ``fma``), ``largest_intermediate`` (floats),
    ``peak_memory`` (floats held at once, tape of activations included), ``dims``.
    """

    root: Node
    dims: tuple[int, ...]
    forward_fma: int
    reverse_fma: int
    tape_floats: int
    name: str = ""
    devices: int = 1
    layers: tuple = ()
    shapes: tuple = ()

    def __eq__(self, other):
        return isinstance(other, Plan) and (self.root, self.dims, self.devices) == \
            (other.root, other.dims, other.devices)

    def __hash__(self):
        return hash((self.root, self.dims, self.devices))

    @property
    def fma(self) -> int:
        return self.root.fma

    @property
    def order(self) -> str:
        return self.root.order()

    @property
    def steps(self) -> tuple[Node, ...]:
        return tuple(self.root.postorder())

    @property
    def speedup(self) -> float:
        return min(self.forward_fma, self.reverse_fma) / max(self.fma, 1)

    @property
    def largest_intermediate(self) -> int:
        return max(step.structure.size for step in self.steps)

    @property
    def peak_memory(self) -> int:
        return self.tape_floats + self.root.peak

    def __repr__(self):
        return f"Plan({self.order!r}, fma={self.fma:,})"

    def __str__(self):
        return self.table()

    def _described_shapes(self) -> str:
        if all(len(shape) == 1 for shape in self.shapes):
            return f"widths {self.dims}"
        return "shapes " + " -> ".join("×".join(map(str, shape)) for shape in self.shapes) + \
            f" (sizes {self.dims})"

    def table(self) -> str:
        """The printed summary: totals, speedup, memory, and one row per step."""
        width = max(len(str(self.dims)), 12)
        head = [
            f"  Jacobian of a chain with {self._described_shapes()}: {self.dims[-1]}×{self.dims[0]}",
            f"  {'order:':<24}{self.order}" + (f"  ({self.name})" if self.name else ""),
            f"  {'forward (tangents):':<24}{self.forward_fma:>{width},} fma",
            f"  {'reverse (adjoints):':<24}{self.reverse_fma:>{width},} fma",
            f"  {'this plan:':<24}{self.fma:>{width},} fma",
            f"  {'speedup vs best mode:':<24}{self.speedup:>{width}.3g}x",
            f"  {'largest intermediate:':<24}{self.largest_intermediate:>{width},} floats",
            f"  {'peak memory:':<24}{self.peak_memory:>{width},} floats (activations included)",
        ]
        if self.devices > 1:
            head.insert(2, f"  {'devices:':<24}{self.devices:>{width}}   (fma and memory per device: "
                           f"TAN/ADJ seeds split, products whole)")
        return "\n".join(head) + "\n\n" + format_table(["step", "op", "factors", "result", "fma"], self._rows())

    def _rows(self, prefix="", depth=0):
        """One row per step; a block's JAC step is followed by its chains' plans, indented and
        numbered under it (``3.1``, ``3.2``; ``3.b2.1`` for branch 2 of a Parallel)."""
        rows, indent = [], "  " * depth
        for k, step in enumerate(self.steps, 1):
            label = f"{prefix}{k}" if prefix else k  # plain numbers (right-aligned) without blocks
            rows.append((label, indent + step.op, step.describe(), step.structure.describe(), step.step_fma))
            plans = getattr(step, "plans", ())
            for b, inner in enumerate(plans, 1):
                sub = f"{label}." if len(plans) == 1 else f"{label}.b{b}."
                rows.extend(inner._rows(sub, depth + 1))
        return rows


def make_plan(chain, order="optimal", devices: int = 1) -> Plan:
    """The :class:`Plan` of ``order`` for ``chain``: a Plan (returned as is if it fits the chain),
    ``"forward"``, ``"reverse"``, ``"optimal"``, or an order string (see ``_orders.py``).
    ``devices``: how many devices the TAN/ADJ seeds are split over (costs are per device)."""
    if isinstance(order, Plan):
        if order.shapes != tuple(chain.shapes) or order.layers != tuple(chain.layers):
            raise ValueError(f"this plan was made for another chain ({order.layers}, widths {order.dims}), "
                             f"not {chain}: plan again with chain.plan(...)")
        return order
    if not isinstance(order, str):
        raise TypeError(f"order must be a string or a Plan, got {type(order).__name__}")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    named = order.strip().lower()
    return _cached_plan(chain, named if named in ("forward", "reverse", "optimal") else order, devices)


@lru_cache(maxsize=512)
def _cached_plan(chain, order: str, devices: int) -> Plan:
    model = Model(chain, devices)
    key = order.strip().lower()
    if key == "forward":
        root, name = model.tan(1, model.n), "forward"
    elif key == "reverse":
        root, name = model.adj(1, model.n), "reverse"
    elif key == "optimal":
        root, name = optimal_plan(model), "optimal"
    else:
        root, name = parse_order(order, model), ""
    return Plan(root, model.dims, model.tan(1, model.n).fma, model.adj(1, model.n).fma, model.tape_floats,
                name, model.devices, tuple(chain.layers), tuple(chain.shapes))


# Move codes stored by the DP, per interval and result form.
_TAN, _ADJ, _JAC, _MUL_MM, _MUL_MS, _MUL_SM, _MUL_SS, _PUSH, _PULL = range(9)


def optimal_plan(model: Model) -> Node:
    """The cheapest plan tree (in fma) over the move set described in the module docstring.

    Among plans of equal cost the one with fewest steps wins: the DP minimises the key
    ``fma · scale + steps``, exact in int64 for chains up to about 10¹⁵ fma.
    """
    n, d = model.n, np.asarray(model.dims, dtype=np.int64)
    per_device = -(-d // model.devices)  # seeds per device for TAN/ADJ steps
    scale = 1 << max(4, (4 * n).bit_length())
    # Every single step must fit: a sweep over the whole chain at the widest width, a product of
    # the widest operators carrying all ranks, a Jacobian. Then every interval's best key stays
    # below its own TAN key, and no sum of three keys overflows.
    widest, ranks = max(model.dims), sum(s.rank for s in model.jac_structure[1:])
    largest_step = max(widest * max(model.jvp_prefix[n], model.vjp_prefix[n]), widest ** 3 * (1 + 2 * ranks),
                       2 * widest * (1 + ranks) ** 2, max(model.jac_cost))
    if largest_step >= _INF // (4 * scale):
        raise ValueError(f"chain too large to plan exactly in int64 (widths {model.dims})")
    jvp_prefix = scale * np.asarray(model.jvp_prefix, dtype=np.int64)
    vjp_prefix = scale * np.asarray(model.vjp_prefix, dtype=np.int64)
    # key_m / key_s [i, j]: best (fma·scale + steps) for J_j ⋯ J_i as dense / as structured operator
    key_m = np.full((n + 2, n + 2), _INF, dtype=np.int64)
    key_s = np.full((n + 2, n + 2), _INF, dtype=np.int64)
    rank = np.full((n + 2, n + 2), -1, dtype=np.int64)  # rank of the structured form (0: diagonal)
    move_m = np.zeros((n + 2, n + 2), dtype=np.int64)
    split_m = np.zeros((n + 2, n + 2), dtype=np.int64)
    split_s = np.zeros((n + 2, n + 2), dtype=np.int64)

    for i in range(1, n + 1):
        tan = scale * per_device[i - 1] * model.jvp[i] + 1
        adj = scale * per_device[i] * model.vjp[i] + 1
        jac = scale * model.jac_cost[i] + 1
        best, move = (tan, _TAN) if tan <= adj else (adj, _ADJ)
        if model.jac_structure[i].kind == "matrix":
            if jac < best:
                best, move = jac, _JAC
        else:
            key_s[i, i], rank[i, i] = jac, model.jac_structure[i].rank
        key_m[i, i], move_m[i, i] = best, move

    for length in range(2, n + 1):
        i = np.arange(1, n - length + 2)
        j = i + length - 1
        k = i[:, None] + np.arange(length - 1)[None, :]  # splits: right half i..k, left half k+1..j
        I, J = i[:, None], j[:, None]
        rows, inner, cols = d[J], d[k], d[I - 1]
        rows_dev, cols_dev = per_device[J], per_device[I - 1]
        m_left, m_right = key_m[k + 1, J], key_m[I, k]
        s_left, s_right = key_s[k + 1, J], key_s[I, k]
        r_left, r_right = rank[k + 1, J], rank[I, k]
        best_left = np.minimum(m_left, s_left)
        best_right = np.minimum(m_right, s_right)
        whole = np.ones_like(k)
        dense = np.full_like(k, DENSE_RANK)
        # product costs from the one rule (operators.product_fma), with a form's rank code:
        # DENSE_RANK for the dense form, the rank (0: diagonal) for the structured form
        mm = product_fma(rows, inner, cols, dense, dense)
        ms = product_fma(rows, inner, cols, dense, np.maximum(r_right, 0))
        sm = product_fma(rows, inner, cols, np.maximum(r_left, 0), dense)
        candidates = [
            whole * (cols_dev * (jvp_prefix[J] - jvp_prefix[I - 1]) + 1),                      # TAN
            whole * (rows_dev * (vjp_prefix[J] - vjp_prefix[I - 1]) + 1),                      # ADJ
            whole * _INF,                                                                      # (JAC)
            m_left + m_right + scale * mm + 1,                                                 # M @ M
            np.where(r_right >= 0, m_left + s_right + scale * ms + 1, _INF),                   # M @ S
            np.where(r_left >= 0, s_left + m_right + scale * sm + 1, _INF),                    # S @ M
            whole * _INF,                                                                      # (S @ S)
            best_right + cols_dev * (jvp_prefix[J] - jvp_prefix[k]) + 1,                       # push
            best_left + rows_dev * (vjp_prefix[k] - vjp_prefix[I - 1]) + 1,                    # pull
        ]
        flat = np.stack([_clip(c) for c in candidates], axis=1).reshape(len(i), -1)  # moves × splits
        arg = flat.argmin(axis=1)
        row = np.arange(len(i))
        key_m[i, j] = flat[row, arg]
        move_m[i, j], split_m[i, j] = arg // k.shape[1], k[row, arg % k.shape[1]]
        # structured result: both halves structured; its kind and rank don't depend on the split
        product = scale * product_fma(rows, inner, cols, np.maximum(r_left, 0), np.maximum(r_right, 0)) + 1
        ss = np.where((r_left >= 0) & (r_right >= 0), _clip(s_left + s_right + product), _INF)
        arg_s = ss.argmin(axis=1)
        key_s[i, j] = ss[row, arg_s]
        split_s[i, j] = k[row, arg_s]
        rank[i, j] = np.where(key_s[i, j] < _INF, r_left[:, 0] + r_right[:, 0], -1)

    def build(lo, hi, structured):
        if structured:
            if lo == hi:
                return model.jac(lo)
            k = split_s[lo, hi]
            return model.mul(build(k + 1, hi, True), build(lo, k, True))
        move, k = move_m[lo, hi], split_m[lo, hi]
        if move == _JAC:
            return model.jac(lo)
        if move == _TAN:
            return model.tan(lo, hi)
        if move == _ADJ:
            return model.adj(lo, hi)
        if move == _PUSH:
            return model.tan(lo, hi, build(lo, k, key_s[lo, k] < key_m[lo, k]))
        if move == _PULL:
            return model.adj(lo, hi, build(k + 1, hi, key_s[k + 1, hi] < key_m[k + 1, hi]))
        return model.mul(build(k + 1, hi, move == _MUL_SM), build(lo, k, move == _MUL_MS))

    return build(1, n, key_s[1, n] < key_m[1, n])


def _clip(a):
    """Keep sums involving an impossible (infinite) form from overflowing."""
    return np.minimum(a, _INF)
