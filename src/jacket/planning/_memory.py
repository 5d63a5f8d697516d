"""A memory model in bytes for plans: what XLA allocates for a compiled
``chain.jacobian(params, x, plan)`` (``compiled.memory_analysis()``: arguments, output, temporaries).

The plan tree is walked in execution order, keeping the buffers live at the worst moment of
each step (bytes; ``c`` = seed vectors per device, ``ceil(count / devices)``):

* TAN/ADJ through factors ``a..b``: per factor ``t`` the vmapped input and output, ``c·n_{t-1}``
  and ``c·n_t``, but a run of elementwise/normalisation factors is one XLA loop fusion (input and
  output of the run only), which also swallows a unit or fused seed; plus what the rule
  materialises (``_workspace``: the derivative ``n_t`` once for an elementwise layer, layout
  copies for a convolution's VJP, q/k/v and scores for attention, a block's inner intermediates)
  and the activations the rules read (a TAN computes them just in time, an ADJ after the whole
  forward pass). A seed that must be transposed is copied: both live at the first factor;
* a chunked TAN/ADJ (``lax.map(rule, seeds, batch_size=k)``, ``k < count``): a while loop over
  ``count // k`` batches, then one vmapped batch of the ``r = count % k`` left over, concatenated.
  Live across the loop: the seeds as the map reads them (the identity's ``k·⌊count/k⌋·n_in``; a
  computed seed's result, beside its dense copy when it is transposed or structured; a Dense
  weight read in place by a TAN, densified for an ADJ; a remainder slices a copy of the batches,
  and batches of one copy the seeds), the stacked output ``k·⌊count/k⌋·n_out`` (written batch
  by batch; an operand of the output's transpose or concatenation at the root) and everything the body reads (all its activations and
  derivatives, made before the loop); per batch, the vectors above with ``c = k`` (the batch's
  seed slice too unless a fused loop reads it); after the loop, the remainder (``c = r``) and the
  concatenation beside the stack;
* a checkpointed ADJ (``plan.checkpoint``, a schedule of ``jacket.checkpointing`` over its own
  factors): at each factor, of the sweep's activations, only those its schedule holds then (the
  states it recomputes from, and the others the rules read); inside a recomputing ``lax.cond``
  no buffer goes to the output allocation, and each cond around the factor holds the rows that
  entered it;
* MUL: both operands and the result (``Structure.size`` each), the first child's result held
  while the second runs (the cheaper order, as XLA's scheduler); a product by a diagonal, or a
  rank-r update of a fused sweep's result, fuses with that operand's loop, which then reads only
  the vectors of the structured factors under it;
* JAC: nothing for a Dense factor (its weight is an argument), the structure otherwise; a block,
  each inner plan's own peak (``plan_memory``) beside the results before it, then the merge.

XLA reuses the output allocation for one temporary at a time that dies before the result is
written (a sweep ping-pongs between it and one temporary): at every moment the largest live
buffer that fits and is not an operand of the last step (``_Pinned``) is not a temporary.
``jax.jit`` drops arguments the Jacobian never reads (a bias followed only by linear layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..core import param_count
from ._memory_walk import _temp, _Walk, footprint

__all__ = ["MemoryEstimate", "StepMemory", "plan_memory"]


@dataclass(frozen=True)
class StepMemory:
    """One step of the plan (postorder, as ``Plan.steps``): ``live_bytes`` at its worst moment
    (its own buffers, what earlier steps left live for later ones, and the tape) and
    ``result_bytes`` of what it produces."""

    op: str
    factors: str
    live_bytes: int
    result_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one compiled ``chain.jacobian`` call (per device when ``devices > 1``).

    ``result_bytes``: the dense Jacobian (XLA's output size; with a mesh, one device's shard);
    ``argument_bytes``: the params the Jacobian reads and the input x (XLA's argument size without
    a mesh); ``params_bytes``: all params; ``tape_bytes``: the activations ``x_1 … x_N``;
    ``temp_bytes``: the predicted peak of XLA's temporaries; ``peak_live_bytes``: every buffer
    live at that moment, before the output allocation's reuse is taken off; ``steps``: per step.
    """

    result_bytes: int
    argument_bytes: int
    params_bytes: int
    tape_bytes: int
    temp_bytes: int
    peak_live_bytes: int
    steps: tuple[StepMemory, ...]
    devices: int = 1
    dtype: str = "float32"

    @property
    def total_bytes(self) -> int:
        """Arguments, result and temporaries: what one call needs on the device."""
        return self.argument_bytes + self.result_bytes + self.temp_bytes


def plan_memory(plan, dtype="float32") -> MemoryEstimate:
    """The :class:`MemoryEstimate` of ``plan`` for inputs and params of ``dtype`` (cached per plan)."""
    # Plans compare by tree, widths, devices, chunk and checkpoint; the layers (a bias or not)
    # change the arguments, so they are part of the key
    return _plan_memory(plan, str(np.dtype(dtype)), plan.layers, plan.shapes)


@lru_cache(maxsize=256)
def _plan_memory(plan, dtype: str, layers=(), shapes=()) -> MemoryEstimate:
    item = int(np.dtype(dtype).itemsize)
    walk = _Walk(plan, dtype)
    live = walk.node(plan.root, [], "root")
    out = walk.out
    params = item * sum(_params_floats(layer, tuple(shape)) for layer, shape in zip(plan.layers, plan.shapes))
    unused, linear = _unused_floats(plan.layers, plan.shapes)
    used = params - item * unused  # jax.jit drops the arguments the Jacobian never reads
    return MemoryEstimate(result_bytes=out, argument_bytes=used + (0 if linear else item * plan.dims[0]),
                          params_bytes=params, tape_bytes=item * sum(plan.dims[1:]), temp_bytes=_temp(live, out),
                          peak_live_bytes=sum(live), steps=tuple(walk.steps), devices=plan.devices, dtype=dtype)


def _params_floats(layer, shape) -> int:
    """Floats in a layer's params (``core.param_count``: its abstract init)."""
    return param_count(layer, tuple(shape))


def _unused_floats(layers, shapes) -> tuple[int, bool]:
    """Floats of params the Jacobian never reads, and whether the whole chain is linear (then x
    is unread too): in the run of layers at the end whose rules read no activation (their
    footprints' ``reads`` empty), the parameters those rules never read (a bias) shift the output
    alone. Composites are looked into: their merge is linear, so a composite of linear chains
    keeps the run going."""
    unused = 0
    for layer, shape in zip(reversed(layers), reversed(shapes[:-1])):
        shape = tuple(shape)
        chains = layer.inner_chains(shape)
        if chains:
            inner = [_unused_floats(c.layers, c.shapes) for c in chains]
            unused += sum(u for u, _ in inner)
            if not all(lin for _, lin in inner):
                return unused, False
            continue
        fp = footprint(layer, shape)
        if not fp.linear:
            return unused, False
        unused += fp.unread_params
    return unused, True
