"""The static cost model of a chain: how much each accumulation step costs, and the
constructors of the plan nodes (``_nodes.py``) that carry those costs.

Costs are in fma and are computed here once, with Python ints, for parsed orders and planned
ones alike, so that ``chain.plan(plan.order).fma == plan.fma`` holds by construction.
"""
from __future__ import annotations

from itertools import accumulate

from ..operators import Structure
from ._nodes import Adj, Jac, Mul, Node, Tan

__all__ = ["Model"]


class Model:
    """Per-factor costs of a chain (fma) and constructors for plan nodes.

    With ``devices > 1`` the seeds of every TAN/ADJ step are split across devices, so those
    steps cost ``ceil(count / devices)`` sweeps per device; products (MUL) are counted whole.

    ``dims[i]`` is n_i; ``jvp[i]``, ``vjp[i]`` the cost of one vector through factor i's rules;
    ``jac_structure[i]``, ``jac_cost[i]`` what materialising factor i gives and costs.
    """

    def __init__(self, chain, devices: int = 1):
        if int(devices) < 1:
            raise ValueError(f"devices must be a positive integer, got {devices}")
        self.devices = int(devices)
        self.chain = chain
        self.n = len(chain)
        self.dims = tuple(chain.dims)
        layers, shapes = chain.layers, chain.shapes
        d = self.dims
        self.jvp = (0,) + tuple(int(layers[i - 1].jvp_cost(shapes[i - 1])) for i in range(1, self.n + 1))
        self.vjp = (0,) + tuple(int(layers[i - 1].vjp_cost(shapes[i - 1])) for i in range(1, self.n + 1))
        self.layers, self.shapes = layers, shapes
        # composites: the default (optimal) plan of each inner chain, and what the merge gives and costs
        self.block_plans = (None,) + tuple(inner_plans(layers[i - 1], shapes[i - 1]) for i in range(1, self.n + 1))
        jac_cost, structures = [0], [None]
        for i in range(1, self.n + 1):
            plans = self.block_plans[i]
            if plans:
                s, merge = self._merge(i, plans)
                jac_cost.append(merge + sum(p.fma for p in plans))
            else:
                try:
                    s = layers[i - 1].jacobian_structure(shapes[i - 1])
                except ValueError as err:
                    raise ValueError(f"layer {i} ({layers[i - 1]!r}) declares a Jacobian structure the planner "
                                     f"cannot cost: {err}") from None
                if not isinstance(s, Structure):
                    raise TypeError(f"layer {i} ({layers[i - 1]!r}): jacobian_structure must return a "
                                    f"jacket.operators.Structure, got {s!r}")
                jac_cost.append(int(layers[i - 1].jacobian_cost(shapes[i - 1])))
            if s.shape != (d[i], d[i - 1]):
                raise ValueError(f"layer {i} ({layers[i - 1]!r}) declares a Jacobian structure of shape "
                                 f"{s.shape}, but maps width {d[i - 1]} to {d[i]}")
            if s.kind != "matrix" and d[i] != d[i - 1]:
                raise ValueError(f"layer {i} ({layers[i - 1]!r}) declares a {s.kind} Jacobian for a "
                                 f"non-square map {d[i - 1]} -> {d[i]}")
            # the planner tells a diagonal from a low-rank factor by rank (0 / ≥ 1)
            valid = s.kind == "matrix" or (s.kind, s.rank >= 1) in (("diagonal", False), ("dplr", True))
            if not valid:
                raise ValueError(f"layer {i} ({layers[i - 1]!r}) declares a Jacobian structure {s}: the kind "
                                 f"must be 'matrix' (dense, or block diagonal), 'diagonal' or 'dplr' with rank ≥ 1")
            structures.append(s)
        self.jac_structure = tuple(structures)
        self.jac_cost = tuple(jac_cost)
        self.jvp_prefix = tuple(accumulate(self.jvp))  # jvp_prefix[i] = Σ_{t≤i} jvp[t]
        self.vjp_prefix = tuple(accumulate(self.vjp))

    def jacobian_is_argument(self, i) -> bool:
        """Whether materialising factor i allocates nothing: its Jacobian is a parameter (the
        layer's footprint says so); never for a composite."""
        return not self.block_plans[i] and self.layers[i - 1].footprint(self.shapes[i - 1]).jacobian_is_argument

    # ---- sums of rule costs over factors a..b ----------------------------------------------
    def jvp_sum(self, a, b):
        return self.jvp_prefix[b] - self.jvp_prefix[a - 1]

    def vjp_sum(self, a, b):
        return self.vjp_prefix[b] - self.vjp_prefix[a - 1]

    def per_device(self, count: int) -> int:
        """Seed vectors each device handles when ``count`` are split over the devices."""
        return -(-count // self.devices)

    def _merge(self, i, plans):
        """Structure and fma of block i's merge of its chains' Jacobians (from ``plans``)."""
        s, merge = self.layers[i - 1].merge_structure(self.shapes[i - 1], [p.root.structure for p in plans])
        return s, int(merge)

    # ---- node constructors -------------------------------------------------------------
    def jac(self, i, plans=None) -> Node:
        """Materialise factor i; for a block, with its chains' ``plans`` (default: their optimal ones)."""
        named = plans is not None
        plans = self.block_plans[i] if plans is None else tuple(plans)
        if not plans:
            s = self.jac_structure[i]
            return Jac(lo=i, hi=i, structure=s, step_fma=self.jac_cost[i], fma=self.jac_cost[i])
        s, merge = self._merge(i, plans)
        inner = sum(p.fma for p in plans)
        return Jac(lo=i, hi=i, structure=s, step_fma=merge, fma=merge + inner, plans=plans, named=named,
                   label=block_label(self.layers[i - 1]))

    def tan(self, lo, hi, seed: Node | None = None) -> Node:
        """Tangent accumulation of ``J_hi ⋯ J_lo``: unit columns through lo..hi, or the columns of
        ``seed`` (= ``J_k ⋯ J_lo``) through k+1..hi."""
        a = lo if seed is None else seed.hi + 1
        columns = self.dims[lo - 1]
        step = self.per_device(columns) * self.jvp_sum(a, hi)
        out = Structure("matrix", self.dims[hi], columns)
        return Tan(lo=lo, hi=hi, structure=out, step_fma=step, fma=step + (seed.fma if seed else 0),
                   seed=seed, through=(a, hi))

    def adj(self, lo, hi, seed: Node | None = None) -> Node:
        """Adjoint accumulation of ``J_hi ⋯ J_lo``: unit rows through hi..lo, or the rows of
        ``seed`` (= ``J_hi ⋯ J_{k+1}``) through k..lo."""
        b = hi if seed is None else seed.lo - 1
        rows = self.dims[hi]
        step = self.per_device(rows) * self.vjp_sum(lo, b)
        out = Structure("matrix", rows, self.dims[lo - 1])
        return Adj(lo=lo, hi=hi, structure=out, step_fma=step, fma=step + (seed.fma if seed else 0),
                   seed=seed, through=(lo, b))

    def mul(self, left: Node, right: Node) -> Node:
        """``left @ right`` where left = J_hi ⋯ J_k+1 and right = J_k ⋯ J_lo."""
        s, step = left.structure.matmul(right.structure)
        return Mul(lo=right.lo, hi=left.hi, structure=s, step_fma=step, fma=step + left.fma + right.fma,
                   left=left, right=right)


def inner_plans(layer, in_shape) -> tuple:
    """The optimal plan (fma, one device) of each chain a composite layer is made of; none for a
    plain layer."""
    from ._plan import _cached_plan
    from ._costs import FMA
    return tuple(_cached_plan(chain, "optimal", 1, FMA) for chain in layer.inner_chains(tuple(in_shape)))


def block_label(layer) -> str:
    """A composite's name in plan tables (``Residual``, ``Parallel``, ``Chain``), from the names
    it gives its chains."""
    names = [name for name, _ in layer.named_chains()]
    return names[0].split(" branch")[0] if names else "block"
