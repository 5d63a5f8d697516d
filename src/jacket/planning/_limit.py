"""Plans under a memory limit: ``jacket.plan(chain, 1, memory_limit=bytes)``.

A plan's time and its memory are two outputs of the same walk over its tree: the cost model
prices each step (``_costs.py``), the bytes model counts what XLA holds (``_memory.py``). Under
a limit the planner returns the cheapest plan whose predicted bytes for one call (arguments,
result and temporaries: ``MemoryEstimate.total_bytes``) fit, choosing among

* **orders**: for ``"optimal"``, the optimum of the DP and the optima under ever smaller caps on
  the dense intermediates (``optimal_plan(..., max_dense=)``: each cap is the largest matrix the
  previous plan materialised, less one float, so the plans on the cost/size frontier of the
  move set are visited once each, the first ``MAX_CAPS`` of them), plus forward and reverse; any
  other order is kept as given;
* **chunk sizes**: every TAN/ADJ sweep whole, or ``2^p`` seed vectors at a time (``Plan.chunked``),
  which bounds what a sweep holds to one batch of seeds;
* **checkpoints**: ADJ sweeps reading the whole tape, or in ⌈√length⌉ segments that recompute
  their activations (``Plan.checkpointed``), which bounds the tape to the boundaries and one segment.
  Not with chunks: a ``lax.map`` inside each segment's ``lax.cond`` makes XLA hold about twice
  what the bytes model counts (measured on batched Jacobians of deep MLPs: 0.5-0.6× of XLA's
  bytes), so the planner does not choose the pair; it can still be asked for.

Among the plans that fit, the cheapest under the cost model wins (under ``FMA``, where a batch
costs no fma, the one with the fewest fma of recomputation, then the fewest batches of seeds). This is exact over that
candidate set, not over every tree with every chunk: the DP minimises cost, the limit is checked
on the finished plan. When nothing fits, the error names the smallest candidate and what it
needs; no plan needs less than its arguments and its result.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from ._costs import FMA, CostModel

__all__ = ["limited_plan", "smallest_limit", "parse_bytes", "call_bytes"]

MAX_CAPS = 24  # DP runs under successively smaller caps, at most

_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


def parse_bytes(limit, where="memory_limit") -> int:
    """Bytes from an int, a float or a string such as ``"64MB"``, ``"1.5 GiB"``, ``"4096"``."""
    if isinstance(limit, bool):
        raise ValueError(f"{where} must be a number of bytes or a string such as '64MB', got {limit!r}")
    if isinstance(limit, (int, np.integer)):
        value = int(limit)
    elif isinstance(limit, (float, np.floating)) and np.isfinite(limit):
        value = int(limit)
    elif isinstance(limit, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([a-zA-Z]*)\s*", limit)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{where}: cannot read {limit!r} as bytes; write e.g. 67108864, '64MB' or '1.5GiB' "
                             f"(units: {', '.join(u for u in _UNITS if u)})")
        value = int(float(match.group(1)) * _UNITS[unit])
    else:
        raise ValueError(f"{where} must be a number of bytes or a string such as '64MB', got {limit!r}")
    if value <= 0:
        raise ValueError(f"{where} must be positive, got {limit!r}")
    return value


def call_bytes(plan, estimate, batch: int = 1) -> int:
    """Predicted bytes of one call of ``plan`` for ``batch`` examples (vmapped over them): the
    params once; the input, the result and the temporaries once per example."""
    if batch == 1:
        return estimate.total_bytes
    from ._memory import _unused_floats
    item = int(np.dtype(estimate.dtype).itemsize)
    x_bytes = 0 if _unused_floats(plan.layers, plan.shapes)[1] else item * plan.dims[0]
    params = estimate.argument_bytes - x_bytes
    return params + batch * (x_bytes + estimate.result_bytes + estimate.temp_bytes)


def largest_dense(plan) -> int:
    """Floats of the largest dense matrix ``plan`` materialises below its result (a factor whose
    Jacobian is a parameter, Dense's weight, does not count)."""
    sizes = [step.structure.size for step in plan.steps
             if step is not plan.root and step.structure.dense_plain
             and not (step.op == "JAC" and plan.model.jacobian_is_argument(step.lo))]
    return max(sizes, default=0)


def _candidate_orders(chain, order, devices, cost):
    from ._plan import Plan, capped_plan, make_plan
    if isinstance(order, Plan) or not (isinstance(order, str) and order.strip().lower() == "optimal"):
        return [make_plan(chain, order, devices=devices, cost=cost)]
    found = [make_plan(chain, o, devices=devices, cost=cost) for o in ("optimal", "forward", "reverse")]
    cap = largest_dense(found[0]) - 1
    for _ in range(MAX_CAPS):
        if cap < 1:
            break
        plan = capped_plan(chain, devices, cost, cap)
        found.append(plan)
        cap = min(cap, largest_dense(plan)) - 1
    unique = []
    for plan in found:
        if plan not in unique:
            unique.append(plan)
    return unique


def _chunks(plan):
    """``None`` and the powers of two below the largest seed count of the plan's sweeps."""
    if plan.devices > 1:
        return [None]
    seeds = [step.structure.cols if step.op == "TAN" else step.structure.rows
             for step in plan.steps if step.op in ("TAN", "ADJ")]
    most = max(seeds, default=0)
    chunks, k = [None], 1
    while k < most:
        chunks.append(k)
        k *= 2
    return chunks[:1] + sorted(chunks[1:], reverse=True)


def _batches(plan) -> int:
    total = 0
    for step in plan.steps:
        if step.op in ("TAN", "ADJ"):
            seeds = step.structure.cols if step.op == "TAN" else step.structure.rows
            total += 1 if plan.chunk is None else -(-seeds // plan.chunk)
    return total


def _checkpoints(plan):
    """``None``, and ``"sqrt"`` when some ADJ sweep runs through three factors or more."""
    long = any(step.op == "ADJ" and step.through[1] - step.through[0] >= 2 for step in plan.steps)
    return [None, "sqrt"] if long else [None]


def _price(plan, cost: CostModel):
    if cost.predicts_time:
        return (plan.predict(cost), _batches(plan))
    return (plan.fma + plan.recompute_ticks(FMA), _batches(plan), len(plan.steps))


def _sized(chain, order, devices, cost, chunk, checkpoint, dtype, batch) -> list:
    """``[(bytes, plan)]`` for every candidate: orders × chunk sizes × checkpoints."""
    from ._memory import plan_memory
    found = []
    for plan in _candidate_orders(chain, order, devices, cost):
        for k in ([chunk] if chunk is not None else _chunks(plan)):
            for c in ([checkpoint] if checkpoint is not None else _checkpoints(plan) if k is None else [None]):
                candidate = plan.chunked(k).checkpointed(c)
                found.append((call_bytes(candidate, plan_memory(candidate, dtype), batch), candidate))
    return found


def smallest_limit(chain, order="optimal", *, devices: int = 1, cost: CostModel = FMA, dtype="float32",
                   batch: int = 1) -> int:
    """The smallest ``memory_limit`` (bytes) under which :func:`limited_plan` finds a plan."""
    return min(need for need, _ in _sized(chain, order, devices, cost, None, None, str(np.dtype(dtype)), batch))


def limited_plan(chain, order, memory_limit, *, devices: int = 1, cost: CostModel = FMA, chunk=None,
                 dtype="float32", batch: int = 1, where: str = "jacket.plan", checkpoint=None):
    """Cached per arguments (an eager ``chain.jacobian(..., memory_limit=)`` plans once); see
    :func:`_limited_plan`."""
    return _limited_plan(chain, order, parse_bytes(memory_limit), devices, cost, chunk, str(np.dtype(dtype)),
                         batch, where, checkpoint)


@lru_cache(maxsize=256)
def _limited_plan(chain, order, memory_limit, devices, cost, chunk, dtype, batch, where, checkpoint):
    """The cheapest plan of ``order`` for ``chain`` whose predicted bytes for one call of
    ``batch`` examples in ``dtype`` fit in ``memory_limit`` (see the module docstring); ``chunk``
    and ``checkpoint`` fix the chunk size and the ADJ sweeps' segments instead of choosing them.
    The plan carries the limit (its table prints it)."""
    import dataclasses

    from ._memory import plan_memory
    limit = parse_bytes(memory_limit)
    dtype = str(np.dtype(dtype))
    found = _sized(chain, order, devices, cost, chunk, checkpoint, dtype, batch)
    feasible = [plan for need, plan in found if need <= limit]
    if not feasible:
        need, plan = min(found, key=lambda item: item[0])
        est = plan_memory(plan, dtype)
        floor = call_bytes(plan, dataclasses.replace(est, temp_bytes=0), batch)
        chunked = (f" with chunk {plan.chunk}" if plan.chunk else "") + \
            (f", checkpoint {plan.checkpoint!r}" if plan.checkpoint else "")
        examples, each = (f" for {batch} examples", " per example") if batch > 1 else ("", "")
        fixed = ", ".join(f"{name}={value!r}" for name, value in (("chunk", chunk), ("checkpoint", checkpoint))
                          if value is not None)
        examples += f" with {fixed} fixed" if fixed else ""
        raise ValueError(
            f"{where}: no plan of this chain fits memory_limit={_fmt(limit)}{examples} ({dtype}): the smallest "
            f"found, order {plan.order!r}{chunked}, needs {_fmt(need)} (arguments {_fmt(est.argument_bytes)}; "
            f"result {_fmt(est.result_bytes)} and temporaries {_fmt(est.temp_bytes)}{each}; bytes model); "
            f"pass memory_limit >= {need} (no plan needs less than its arguments and result, {_fmt(floor)})")
    best = min(feasible, key=lambda p: _price(p, cost))
    return dataclasses.replace(best, memory_limit=limit, dtype=dtype, batch=batch)


def _fmt(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.4g} MB"
