"""Cost models: what the planner minimises and what a plan table predicts.

A cost model prices each plan step in integer **ticks**, from the same per-factor figures the
nodes carry (widths, the rules' declared fma, the Jacobian structures), in a form the dynamic
programme can use: every term is a per-class multiplier times an fma or float count, so sums
over factors stay prefix sums and the seeded sweeps stay running minima (``_dp.py``).

* :data:`FMA` (``cost="fma"``, the default): ticks = fma. Exact, machine-independent; the
  deterministic tests and the notes use it.
* :class:`CalibratedCost` (``cost="calibrated"``): ticks = fractions of a second predicted from rates
  measured on the device (``jacket calibrate``, :mod:`._calibrate`):

  - a TAN/ADJ step with c seed vectors through factors a..b:
    ``step + c · Σ_t (fma_t · sweep_fma + (n_{t−1} + n_t) · sweep_io) + Σ_t w_t · mm_io``
    (the vmapped rules: compute, plus the activations each seed reads and writes, plus the w_t
    parameter floats of each factor, read once per step); with fewer than ``SKINNY`` seeds the
    rules are skinny products, and ``sweep_few`` replaces ``sweep_fma``;
  - a dense product (m × k) @ (k × n):
    ``step + m k n · (mm_fma, or skinny_fma when min(m, k, n) < SKINNY) + (m k + k n + m n) · mm_io``;
  - a product with a structured operand, and materialising a factor (JAC):
    ``step + fma · struct_fma`` (elementwise-like work: the rate is memory-bound and measured so);

  a fitted sum rather than a roofline max, so that sums over factors stay sums.

Ticks of a whole plan (:func:`plan_ticks`) are the sum over its steps; a block's JAC carries the
ticks of its inner plans (evaluated under the same model).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

__all__ = ["CostModel", "CalibratedCost", "Rates", "FMA", "SKINNY", "step_ticks", "tree_ticks",
           "plan_ticks", "fixed_ticks", "chunk_ticks", "recompute_ticks", "factor_weights", "coarser"]

SKINNY = 64  # a dense product with a side below this many is "skinny" (matrix-vector-like)


@dataclass(frozen=True)
class Rates:
    """Rates measured on one device (``jacket calibrate``), all in seconds per unit:

    ``sweep_fma`` per fma of a rule inside a vmapped sweep; ``sweep_io`` per float of activation a
    seed reads or writes per factor; ``mm_fma`` / ``skinny_fma`` per fma of a dense product with
    every side ≥ ``SKINNY`` / some side below it; ``mm_io`` per float of a dense product's operands
    and result; ``struct_fma`` per fma of a structured product or a factor's materialisation;
    ``step`` fixed seconds per plan step; ``sweep_fma_few`` per fma of a sweep with fewer than
    ``SKINNY`` seeds (default: ``sweep_fma``); ``call`` fixed seconds per compiled call (once per
    plan, with the forward pass: :func:`fixed_ticks`). ``device``: the device kind measured.
    """

    device: str
    sweep_fma: float
    sweep_io: float
    mm_fma: float
    skinny_fma: float
    mm_io: float
    struct_fma: float
    step: float
    sweep_fma_few: float | None = None
    call: float = 0.0

    def __post_init__(self):
        if self.sweep_fma_few is None:
            object.__setattr__(self, "sweep_fma_few", self.sweep_fma)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Rates":
        optional = {"sweep_fma_few": data.get("sweep_fma"), "call": 0.0}
        data = {**optional, **data}
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"calibration is missing {', '.join(missing)}")
        values = {n: data[n] for n in names}
        for n in names[1:]:
            v = values[n]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
                raise ValueError(f"calibration rate {n} must be a finite number ≥ 0, got {v!r}")
            values[n] = float(v)
        if not isinstance(values["device"], str):
            raise ValueError(f"calibration device must be a string, got {values['device']!r}")
        return cls(**values)


@dataclass(frozen=True)
class CostModel:
    """Integer multipliers (ticks per unit) of the terms above. ``name``: ``"fma"`` or
    ``"calibrated"``; ``tick_s``: seconds per tick (``None``: ticks are not times)."""

    name: str
    sweep_fma: int
    sweep_io: int
    mm_fma: int
    skinny_fma: int
    mm_io: int
    struct_fma: int
    step: int
    tick_s: float | None = None
    rates: Rates | None = None
    sweep_few: int | None = None  # ticks per fma of a sweep with fewer than SKINNY seeds (None: sweep_fma)
    call: int = 0  # ticks per compiled call, once per plan

    def sweep_rate(self, seeds: int) -> int:
        return self.sweep_fma if self.sweep_few is None or seeds >= SKINNY else self.sweep_few

    @property
    def predicts_time(self) -> bool:
        return self.tick_s is not None

    def seconds(self, ticks: int) -> float | None:
        return None if self.tick_s is None else ticks * self.tick_s

    # ---- per-step prices (Python ints; the DP computes the same terms with numpy) ----------
    def sweep(self, seeds: int, fma_per_seed: int, io_per_seed: int, weights: int = 0) -> int:
        """A TAN/ADJ step: ``seeds`` vectors, each costing ``fma_per_seed`` fma and moving
        ``io_per_seed`` activation floats over the factors it runs through, whose parameters
        (``weights`` floats) are read once."""
        return (self.step + seeds * (fma_per_seed * self.sweep_rate(seeds) + io_per_seed * self.sweep_io)
                + weights * self.mm_io)

    def dense_product(self, m: int, k: int, n: int) -> int:
        rate = self.skinny_fma if min(m, k, n) < SKINNY else self.mm_fma
        return self.step + m * k * n * rate + (m * k + k * n + m * n) * self.mm_io

    def structured(self, fma: int) -> int:
        """A product with a structured operand, or a JAC step, of ``fma`` multiply-adds."""
        return self.step + fma * self.struct_fma


# The default: ticks are fma, and no step costs anything (the DP breaks ties by step count).
FMA = CostModel("fma", sweep_fma=1, sweep_io=0, mm_fma=1, skinny_fma=1, mm_io=0, struct_fma=1, step=0)


def CalibratedCost(rates: Rates, tick_s: float | None = None) -> CostModel:  # noqa: N802 - a constructor
    """The calibrated model of ``rates``. A tick is ``tick_s`` seconds, by default a sixteenth of
    the smallest rate (at least 1e-15 s), so every measured rate keeps about four significant
    bits or more; :func:`coarser` trades that for headroom when a long chain's ticks would not
    fit the planner's int64 keys."""
    positive = [v for k, v in rates.as_dict().items() if k != "device" and v > 0]
    if tick_s is None:
        tick_s = max(min(positive, default=1e-12) / 16, 1e-15)

    def ticks(seconds):
        return max(1, round(seconds / tick_s)) if seconds > 0 else 0
    return CostModel("calibrated", sweep_fma=ticks(rates.sweep_fma), sweep_io=ticks(rates.sweep_io),
                     mm_fma=ticks(rates.mm_fma), skinny_fma=ticks(rates.skinny_fma), mm_io=ticks(rates.mm_io),
                     struct_fma=ticks(rates.struct_fma), step=ticks(rates.step), tick_s=tick_s, rates=rates,
                     sweep_few=ticks(rates.sweep_fma_few), call=ticks(rates.call))


def coarser(cost: CostModel, factor: int = 1024) -> CostModel:
    """The same calibrated model with ticks ``factor`` times longer (less precision, more range)."""
    return CalibratedCost(cost.rates, cost.tick_s * factor)


def step_ticks(cost: CostModel, model, node) -> int:
    """Ticks of ``node`` alone (not its children) under ``cost``; a block's JAC includes the
    ticks of its inner plans (each evaluated with its own model)."""
    from ._nodes import Adj, Jac, Tan
    if isinstance(node, (Tan, Adj)):
        a, b = node.through
        seeds = model.per_device(node.structure.cols if isinstance(node, Tan) else node.structure.rows)
        fma = model.jvp_sum(a, b) if isinstance(node, Tan) else model.vjp_sum(a, b)
        io = sum(model.dims[t - 1] + model.dims[t] for t in range(a, b + 1))
        weights = sum(factor_weights(model)[a:b + 1]) if cost.mm_io else 0
        return cost.sweep(seeds, fma, io, weights)
    if isinstance(node, Jac):
        inner = sum(plan_ticks(cost, p) for p in getattr(node, "plans", ()))
        return cost.structured(node.step_fma) + inner
    left, right = node.left.structure, node.right.structure
    if left.dense_plain and right.dense_plain:
        return cost.dense_product(left.rows, left.cols, right.cols)
    return cost.structured(node.step_fma)


def factor_weights(model) -> tuple:
    """Parameter floats of each factor (index 0: 0), from the layers' ``init`` shapes."""
    cached = getattr(model, "_weights", None)
    if cached is None:
        cached = (0,) + tuple(_layer_weights(layer, tuple(shape))
                              for layer, shape in zip(model.layers, model.shapes))
        model._weights = cached
    return cached


@lru_cache(maxsize=4096)
def _layer_weights(layer, in_shape) -> int:
    import jax
    params = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))


def fixed_ticks(cost: CostModel, model) -> int:
    """Ticks every plan of the chain pays alike: one compiled call and the forward pass that
    records the tape (one vector through every rule, every parameter read once)."""
    if not cost.predicts_time:
        return 0
    n = model.n
    io = sum(model.dims[t - 1] + model.dims[t] for t in range(1, n + 1))
    return cost.call + cost.sweep(1, model.jvp_sum(1, n), io, sum(factor_weights(model))) - cost.step


def chunk_ticks(cost: CostModel, model, node, chunk: int) -> int:
    """What running a TAN/ADJ ``node`` ``chunk`` seeds at a time adds to its ticks: a step per
    extra batch and, below ``SKINNY`` seeds a batch, the few-seed rate (0 for other nodes)."""
    from ._nodes import Adj, Tan
    if not isinstance(node, (Tan, Adj)):
        return 0
    seeds = model.per_device(node.structure.cols if isinstance(node, Tan) else node.structure.rows)
    if chunk >= seeds:
        return 0
    a, b = node.through
    fma = model.jvp_sum(a, b) if isinstance(node, Tan) else model.vjp_sum(a, b)
    batches = -(-seeds // chunk)
    weights = sum(factor_weights(model)[a:b + 1]) if cost.mm_io else 0
    return ((batches - 1) * (cost.step + weights * cost.mm_io)
            + seeds * fma * (cost.sweep_rate(chunk) - cost.sweep_rate(seeds)))


def recompute_ticks(cost: CostModel, model, node, checkpoint) -> int:
    """What a checkpointed ADJ ``node`` adds (``Plan.checkpointed``): per recomputed segment of
    its schedule (``jacket.checkpointing``), a step and the forward pass through the segment's
    recomputed factors (one vector, their parameters read again)."""
    from ._nodes import Adj, sweep_schedule
    if checkpoint is None or not isinstance(node, Adj) or node.through[1] == node.through[0]:
        return 0
    from ..checkpointing import recomputed
    a, b = node.through
    total = 0
    for lo, last in recomputed(sweep_schedule(a, b, checkpoint)):
        first, end = a + lo, a + last - 1  # the factors run again
        if end < first:
            continue
        io = sum(model.dims[t - 1] + model.dims[t] for t in range(first, end + 1))
        weights = sum(factor_weights(model)[first:end + 1]) if cost.mm_io else 0
        total += cost.sweep(1, model.jvp_sum(first, end), io, weights)
    return total


def tree_ticks(cost: CostModel, model, node) -> int:
    return sum(step_ticks(cost, model, step) for step in node.postorder())


def plan_ticks(cost: CostModel, plan) -> int:
    """Ticks of a whole :class:`~jacket.Plan` under ``cost``."""
    return tree_ticks(cost, plan.model, plan.root)
