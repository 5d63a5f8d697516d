"""Plans for accumulating a chain's Jacobian: :class:`Plan`, ``make_plan``, and the optimal
mixed-mode planner.

``make_plan(chain, order, argnums=…)`` turns ``"forward"``, ``"reverse"``, a bracketing or
``"optimal"`` into a :class:`Plan`: a static tree of steps (``_nodes.py``; for the Jacobian with
respect to the parameters, ``argnums=0``, the segment steps of ``_params.py``) with its fma
cost, its bytes model and a printed table in the style of opt_einsum's path info. Plans are
cached per (chain, order, devices, cost model), so an eager ``jacket.jacobian`` plans once. The
planner takes cost-model objects and never measures anything: the front door resolves
``cost="calibrated"`` and ``order="fastest"`` (``jacket.tuning``) before it calls here.

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
checked against brute-force enumeration in the tests. The DP (``_dp.py``) runs diagonal by
diagonal with numpy over all intervals of one length at once, on strided views of its tables.
Only the dense @ dense product needs every split: N³/6 (interval, split) pairs in all, a few
int64 operations each, as in the matrix-chain recurrence. A seeded TAN/ADJ is a running
minimum over the seed's length, O(1) per interval, and a product with a structured half only
tries splits inside the run of structured factors it lies in, O(R) per interval for runs of at
most R factors. So O(N³) with a small
constant, plus O(N² R). On a CPU: about 25 ms for 200 layers of the benchmark's random chains,
0.7 s for 1000 (``benchmarks/results/cpu/planning.json``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

from numpy import dtype as jnp_dtype

from .._table import format_table
from ._costs import FMA, CostModel, chunk_ticks, fixed_ticks, recompute_ticks, step_ticks, tree_ticks
from ._dp import optimal_plan
from ._model import Model
from ._nodes import Node
from ._orders import parse_order

__all__ = ["Plan", "make_plan", "optimal_plan"]


@dataclass(frozen=True, eq=False)
class Plan:
    """A static accumulation plan for one chain's Jacobian with respect to its input
    (``argnums=1``) or its parameters (``argnums=0``). Pass it back as
    ``jacket.jacobian(chain, argnums, order=plan)``.

    Attributes: ``fma`` (model cost), ``order`` (a string that re-parses to the same plan),
    ``steps`` (nodes in execution order), ``forward_fma`` / ``reverse_fma`` (the two classic
    modes), ``speedup`` (their minimum over ``fma``), ``largest_intermediate`` (floats),
    ``dims``; ``cost``
    (the cost model it was planned and is priced under, ``FMA`` by default) with ``ticks`` and,
    for a calibrated model, ``predicted_s`` (seconds) and :meth:`predict` under another model;
    ``chunk`` (seed vectors per batch of every sweep, ``None``: all at once) and ``checkpoint``
    (the ADJ sweeps' checkpoint schedule, ``None``: the whole tape),
    which ``order`` does not spell (``chunked`` / ``checkpointed`` set them); ``memory`` (the
    bytes model of one call, in ``dtype``) and ``memory_limit`` (bytes, when it was planned under
    one for ``batch`` examples per call: ``jacket.plan(chain, 1, memory_limit=)``); ``argnums``.
    Equality is the tree, widths, devices, chunk, checkpoint and argnums.
    """

    root: Node | None
    dims: tuple[int, ...]
    forward_fma: int
    reverse_fma: int
    name: str = ""
    devices: int = 1
    layers: tuple = ()
    shapes: tuple = ()
    cost: CostModel = FMA
    model: Model | None = None
    chunk: int | None = None
    checkpoint: int | str | tuple | None = None  # the ADJ sweeps' schedule (``jacket.checkpointing``)
    memory_limit: int | None = None  # bytes: set by a memory-limited planning (``_limit.py``)
    dtype: str = "float32"  # what ``memory`` counts bytes for
    batch: int = 1  # examples per call the limit was checked for
    argnums: int = 1  # 1: the Jacobian with respect to the input; 0: to the parameters

    def __eq__(self, other):
        return isinstance(other, Plan) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return (self.root, self.dims, self.devices, self.chunk, self.checkpoint, self.argnums)

    def checkpointed(self, checkpoint) -> "Plan":
        """This plan with every ADJ sweep through more than one factor run under the checkpoint
        schedule ``checkpoint`` (``jacket.checkpointing``: ``"sqrt"``, ``"two-level"``,
        ``("binomial", B)`` or a number of segments, over each sweep's own factors): the tape holds
        what the schedule keeps instead of every activation the sweep reads, and the recomputed
        segments run forward again. The same fma and result."""
        if checkpoint is not None and self.argnums == 0:
            raise ValueError("checkpoint: the parameter Jacobian's plans (argnums=0) are not checkpointed yet")
        if checkpoint is not None:
            from ..checkpointing import schedule
            if not isinstance(checkpoint, (str, int, tuple)) or isinstance(checkpoint, bool) or (
                    isinstance(checkpoint, tuple) and checkpoint[:1] != ("binomial",)):
                raise ValueError(f"checkpoint must be None, 'sqrt', 'two-level', ('binomial', B) or a positive "
                                 f"number of segments per ADJ sweep, got {checkpoint!r}")
            try:
                schedule(max(len(self.dims) - 1, 1), checkpoint)
            except ValueError as err:
                raise ValueError(f"checkpoint must be None, 'sqrt', 'two-level', ('binomial', B) or a positive "
                                 f"number of segments per ADJ sweep, got {checkpoint!r}: {err}") from None
        import dataclasses
        return self if checkpoint == self.checkpoint else dataclasses.replace(self, checkpoint=checkpoint)

    def chunked(self, chunk: int | None) -> "Plan":
        """This plan with every TAN/ADJ sweep run ``chunk`` seed vectors at a time
        (``jax.lax.map`` with ``batch_size``) instead of all at once (``None``): the same fma,
        less memory (``memory``), a few more steps of fixed cost (``predicted_s``)."""
        if chunk is not None and self.argnums == 0:
            raise ValueError("chunk: the parameter Jacobian's plans (argnums=0) are not chunked yet")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be a positive number of seed vectors or None, got {chunk!r}")
        if chunk is not None and self.devices > 1:
            raise ValueError(f"chunk: a plan for {self.devices} devices already splits its seeds; chunking "
                             f"applies to one device")
        import dataclasses
        return self if chunk == self.chunk else dataclasses.replace(self, chunk=chunk)

    @property
    def fma(self) -> int:
        return 0 if self.root is None else self.root.fma

    @property
    def order(self) -> str:
        return "" if self.root is None else self.root.order()

    @property
    def ticks(self) -> int:
        """This plan's cost under its cost model (fma for ``FMA``, picoseconds when calibrated)."""
        return tree_ticks(self.cost, self.model, self.root)

    @property
    def predicted_s(self) -> float | None:
        """Predicted seconds of one call under a calibrated cost model (the steps, plus the
        compiled call and the forward pass every plan pays); ``None`` under ``FMA``."""
        return self.predict(self.cost)

    def predict(self, cost: CostModel) -> float | None:
        """Predicted seconds of this plan under ``cost`` (``None`` if it does not predict time)."""
        ticks = tree_ticks(cost, self.model, self.root) + fixed_ticks(cost, self.model)
        if self.chunk is not None:
            ticks += sum(chunk_ticks(cost, self.model, step, self.chunk) for step in self.steps)
        return cost.seconds(ticks + self.recompute_ticks(cost))

    def recompute_ticks(self, cost: CostModel) -> int:
        """Ticks of the checkpointed ADJ sweeps' recomputation under ``cost`` (fma under ``FMA``:
        the forward pass through their factors once more, its fma by the JVP declarations)."""
        return sum(recompute_ticks(cost, self.model, step, self.checkpoint) for step in self.steps)

    @property
    def steps(self) -> tuple[Node, ...]:
        return () if self.root is None else tuple(self.root.postorder())

    @property
    def speedup(self) -> float:
        return min(self.forward_fma, self.reverse_fma) / max(self.fma, 1)

    @property
    def largest_intermediate(self) -> int:
        return max((step.structure.size for step in self.steps), default=0)

    @property
    def memory(self):
        """The bytes model of one compiled call in ``dtype`` (float32 unless planned for another)
        (:func:`~jacket.planning._memory.plan_memory`): XLA's temporaries, result and arguments,
        per step. Input Jacobians only (``argnums=1``)."""
        if self.argnums == 0:
            raise NotImplementedError("the bytes model covers the input Jacobian's plans (argnums=1); the "
                                      "parameter Jacobian's plans (argnums=0) have none yet")
        from ._memory import plan_memory
        return plan_memory(self, self.dtype)

    def __repr__(self):
        wrt = ", argnums=0" if self.argnums == 0 else ""
        return f"Plan({self.order!r}, fma={self.fma:,}{wrt})"

    def __str__(self):
        return self.table()

    def _described_shapes(self) -> str:
        if all(len(shape) == 1 for shape in self.shapes):
            return f"widths {self.dims}"
        return "shapes " + " -> ".join("×".join(map(str, shape)) for shape in self.shapes) + \
            f" (sizes {self.dims})"

    def table(self) -> str:
        """The printed summary: totals, speedup, memory, and one row per step (``live MB``: the
        bytes model's buffers live at the step's worst moment besides the output, the tape
        included; the output allocation may hold one of them)."""
        if self.argnums == 0:
            from ._params_table import params_table
            return params_table(self)
        width = max(len(str(self.dims)), 12)
        head = [
            f"  Jacobian of a chain with {self._described_shapes()}: {self.dims[-1]}×{self.dims[0]}",
            f"  {'order:':<24}{self.order}" + (f"  ({self.name})" if self.name else ""),
            f"  {'forward (tangents):':<24}{self.forward_fma:>{width},} fma",
            f"  {'reverse (adjoints):':<24}{self.reverse_fma:>{width},} fma",
            f"  {'this plan:':<24}{self.fma:>{width},} fma",
            f"  {'speedup vs best mode:':<24}{self.speedup:>{width}.3g}x",
            f"  {'largest intermediate:':<24}{self.largest_intermediate:>{width},} floats",
            f"  {'memory (model):':<24}{_mb(self.memory.temp_bytes)} MB temporaries, "
            f"{_mb(self.memory.result_bytes)} MB result",
        ]
        if self.memory_limit is not None:
            from ._limit import call_bytes
            need = call_bytes(self, self.memory, self.batch)
            per = f" for {self.batch} examples" if self.batch > 1 else ""
            head.append(f"  {'memory limit:':<24}{_mb(self.memory_limit)} MB{per}; this plan needs {_mb(need)} MB "
                        f"(arguments, result, temporaries; {self.dtype})")
        if self.checkpoint is not None:
            head.insert(2, f"  {'checkpoint:':<24}{self.checkpoint!s:>{width}}   (the ADJ sweeps' schedule; "
                           f"activations recomputed: {self.recompute_ticks(FMA):,} fma more)")
        if self.chunk is not None:
            head.insert(2, f"  {'chunk:':<24}{self.chunk:>{width}}   (seed vectors per batch of every sweep)")
        if self.devices > 1:
            head.insert(2, f"  {'devices:':<24}{self.devices:>{width}}   (fma and memory per device: "
                           f"TAN/ADJ seeds split, products whole)")
        columns = ["step", "op", "factors", "result", "fma", "live MB"]
        if self.cost.predicts_time:
            forward, reverse = (_cached_plan(self.model.chain, o, self.devices, self.cost).predicted_s
                                for o in ("forward", "reverse"))  # noqa: E501
            head.insert(5, f"  {'predicted time:':<24}{_ms(self.predicted_s):>{width}} "
                           f"(forward {_ms(forward).strip()}, reverse {_ms(reverse).strip()}; "
                           f"{self.cost.name} on {self.cost.rates.device})")
            columns.append("predicted")
        return "\n".join(head) + "\n\n" + format_table(columns, self._rows())

    def _rows(self, prefix="", depth=0):
        """One row per step; a block's JAC step is followed by its chains' plans, indented and
        numbered under it (``3.1``, ``3.2``; ``3.b2.1`` for branch 2 of a Parallel)."""
        rows, indent = [], "  " * depth
        live = {(m.op, m.factors): m.live_bytes for m in self.memory.steps}
        for k, step in enumerate(self.steps, 1):
            label = f"{prefix}{k}" if prefix else k  # plain numbers (right-aligned) without blocks
            held = live.get((step.op, step.describe()))
            row = (label, indent + step.op, step.describe(), step.structure.describe(), step.step_fma,
                   "" if held is None else _mb(held))
            if self.cost.predicts_time:
                row += (_ms(self.cost.seconds(step_ticks(self.cost, self.model, step))).strip(),)
            rows.append(row)
            plans = getattr(step, "plans", ())
            for b, inner in enumerate(plans, 1):
                sub = f"{label}." if len(plans) == 1 else f"{label}.b{b}."
                rows.extend(inner._rows(sub, depth + 1))
        return rows


def make_plan(chain, order="optimal", *, argnums: int = 1, devices: int = 1, cost: CostModel = FMA, chunk=None,
              checkpoint=None, memory_limit=None, dtype=None, batch: int = 1) -> Plan:
    """The :class:`Plan` of ``order`` for ``chain``'s Jacobian with respect to its input
    (``argnums=1``) or its parameters (``argnums=0``): a Plan (returned as is if it fits the
    chain), ``"forward"``, ``"reverse"``, ``"optimal"`` (the cheapest under ``cost``) or an order
    string (``_orders.py``; ``_params.py`` for ``argnums=0``).

    ``devices``: how many devices the TAN/ADJ seeds are split over (costs are per device).
    ``cost``: a cost model (``FMA``, or ``CalibratedCost(rates)``); the plan is priced (and
    "optimal" chosen) under it. ``dtype``: what the memory model counts (default float32).
    ``memory_limit`` (bytes, or a string such as ``"64MB"``): the cheapest plan whose predicted
    bytes for a call of ``batch`` examples fit (``_limit.py``), its chunk size and checkpoints
    chosen too unless ``chunk`` / ``checkpoint`` fix them (:meth:`Plan.chunked`,
    :meth:`Plan.checkpointed`); a clear error naming the smallest limit found to fit when none does."""
    if not isinstance(cost, CostModel):
        raise TypeError(f"make_plan: cost must be a CostModel (the front door resolves 'fma' and 'calibrated'), "
                        f"got {cost!r}")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if argnums == 0:
        return _params_plan(chain, order, devices, cost, chunk, checkpoint, memory_limit)
    if isinstance(order, Plan):
        _check_fits(order, chain, 1)
        if memory_limit is None:
            _recheck(order, dtype, batch)
            if dtype is not None and str(jnp_dtype(dtype)) != order.dtype and order.memory_limit is None:
                order = dataclasses.replace(order, dtype=str(jnp_dtype(dtype)))
            return _with(order, chunk, checkpoint)
    elif not isinstance(order, str):
        raise TypeError(f"order must be a string or a Plan, got {type(order).__name__}")
    if chunk is not None and devices > 1:
        Plan.chunked(_cached_plan(chain, "forward", devices, FMA), chunk)  # the refusal, with its message
    named = order.strip().lower() if isinstance(order, str) else None
    if memory_limit is not None:
        from ._limit import limited_plan
        return limited_plan(chain, order, memory_limit, devices=devices, cost=cost, chunk=chunk,
                            dtype=dtype or "float32", batch=batch, checkpoint=checkpoint)
    if not isinstance(order, Plan):
        order = _cached_plan(chain, named if named in ("forward", "reverse", "optimal") else order, devices, cost)
    if dtype is not None and str(jnp_dtype(dtype)) != order.dtype:
        order = dataclasses.replace(order, dtype=str(jnp_dtype(dtype)))
    return _with(order, chunk, checkpoint)


def _check_fits(plan, chain, argnums):
    if plan.argnums != argnums:
        what = {0: "the parameters (argnums=0)", 1: "the input (argnums=1)"}
        raise ValueError(f"this plan is for the Jacobian with respect to {what[plan.argnums]}, not "
                         f"{what[argnums]}: plan again with jacket.plan(chain, argnums={argnums})")
    if plan.shapes != tuple(chain.shapes) or plan.layers != tuple(chain.layers):
        raise ValueError(f"this plan was made for another chain ({plan.layers}, widths {plan.dims}), "
                         f"not {chain}: plan again with jacket.plan(chain, argnums={argnums})")


def _params_plan(chain, order, devices, cost, chunk, checkpoint, memory_limit) -> Plan:
    refused = [f"{name}={value!r}" for name, value in (("chunk", chunk), ("checkpoint", checkpoint),
                                                       ("memory_limit", memory_limit)) if value is not None]
    if devices != 1:
        refused.append(f"a mesh of {devices} devices")
    if cost != FMA:
        refused.append(f"cost={cost.name!r}")
    if refused:
        raise ValueError(f"the parameter Jacobian (argnums=0) is planned by fma on one device, without chunks, "
                         f"checkpoints or a memory limit for now; got {', '.join(refused)}")
    if isinstance(order, Plan):
        _check_fits(order, chain, 0)
        return order
    if not isinstance(order, str):
        raise TypeError(f"order must be a string or a Plan, got {type(order).__name__}")
    return _cached_params_plan(chain, order)


@lru_cache(maxsize=512)
def _cached_params_plan(chain, order: str) -> Plan:
    from ._params import ParamsModel, params_root
    model = ParamsModel(chain)
    root, name = params_root(model, order)
    forward, reverse = (model.tree(model.whole(mode)) for mode in ("forward", "reverse"))
    return Plan(root, model.dims, 0 if forward is None else forward.fma, 0 if reverse is None else reverse.fma,
                name, 1, tuple(chain.layers), tuple(chain.shapes), FMA, model, argnums=0)


def _recheck(plan, dtype, batch):
    """A plan made under a limit, run on inputs of another dtype or batch: still within its limit?"""
    if plan.memory_limit is None or ((dtype is None or str(dtype) == plan.dtype) and batch == plan.batch):
        return
    import dataclasses

    from ._limit import call_bytes
    other = dataclasses.replace(plan, dtype=str(dtype or plan.dtype), batch=batch)
    need = call_bytes(other, other.memory, batch)
    if need > plan.memory_limit:
        raise ValueError(f"this plan was made under memory_limit={plan.memory_limit} bytes for {plan.batch} "
                         f"example(s) in {plan.dtype}; for {batch} in {other.dtype} it needs {need} bytes: plan "
                         f"for these inputs (jacket.plan(chain, 1, memory_limit=…)(params, x) or "
                         f"jacket.jacobian(chain, 1, memory_limit=…))")


def _with(plan, chunk, checkpoint):
    plan = plan if chunk is None else plan.chunked(chunk)
    return plan if checkpoint is None else plan.checkpointed(checkpoint)


def _plan_of(chain, model, root, name, cost) -> Plan:
    return Plan(root, model.dims, model.tan(1, model.n).fma, model.adj(1, model.n).fma, name, model.devices,
                tuple(chain.layers), tuple(chain.shapes), cost, model)


@lru_cache(maxsize=512)
def _cached_plan(chain, order: str, devices: int, cost: CostModel = FMA) -> Plan:
    model = Model(chain, devices)
    key = order.strip().lower()
    if key == "forward":
        root, name = model.tan(1, model.n), "forward"
    elif key == "reverse":
        root, name = model.adj(1, model.n), "reverse"
    elif key == "optimal":
        root, name = _optimal(model, cost), "optimal"
    else:
        root, name = parse_order(order, model), ""
    return _plan_of(chain, model, root, name, cost)


@lru_cache(maxsize=512)
def capped_plan(chain, devices: int, cost: CostModel, max_dense: int) -> Plan:
    """The optimal plan among those whose dense intermediates have at most ``max_dense`` floats."""
    model = Model(chain, devices)
    return _plan_of(chain, model, _optimal(model, cost, max_dense), f"optimal, dense ≤ {max_dense:,} floats", cost)


def _optimal(model, cost, max_dense=None):
    """The DP under ``cost``; a calibrated model whose ticks overflow the DP's int64 keys on this
    chain is retried with coarser ticks (the plan is priced under ``cost`` all the same)."""
    from ._costs import coarser
    for _ in range(4):
        try:
            return optimal_plan(model, cost, max_dense)
        except ValueError as err:
            if not (cost.predicts_time and "too large to plan exactly" in str(err)):
                raise
            cost = coarser(cost)
    return optimal_plan(model, cost, max_dense)


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.3g}"


def _ms(seconds) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.3g} µs"
