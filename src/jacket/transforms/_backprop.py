"""Backpropagation: a loss at the end of a chain, its gradient pulled back through the rules, and
how much memory that takes.

Memory. What a gradient holds depends on XLA's buffer assignment more than on the schedule: an
activation the backward pass reads may live in the buffer of a gradient not yet written (when it
fits there), so a full tape can cost almost nothing beyond the gradients, and checkpointing,
whose recomputations run inside ``lax.cond`` where no buffer goes to the outputs, can then cost
*more* (measured: 24 × (Dense(512, 512), tanh) at batch 256, full tape 1.1 MB of temporaries,
"sqrt" 1.6 MB). So the bytes of each candidate are read from XLA itself: the candidate is
lowered and compiled for the shapes and dtypes of the call (``jax.ShapeDtypeStruct``: nothing
runs) and ``memory_analysis()`` gives its arguments, outputs and temporaries, once per shapes.

* ``memory_limit=``: the first candidate that fits, in this order (about fastest first): the full
  tape; the batch in 2, 4 or 8 chunks whose gradients are accumulated (``jax.lax.scan``; for a
  loss that is a mean over the batch, ``Loss.mean_over_batch``); the checkpoint schedules
  ``"sqrt"``, ``"two-level"``, ``("binomial", B)`` for B = ⌊√(N−1)⌋ + 2 down to 4; then 16, 32, …
  chunks. None fits: a ValueError naming the smallest.
* an explicit ``checkpoint=`` that compiles to more bytes than the full tape warns (once per shapes).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

from ..checkpointing import boundaries, schedule
from ..compose import forward_boundaries, pull, pull_checkpointed, record
from ..core._tangents import RuleOutputError, cast_like
from ._options import as_chain, check_checkpoint, check_loss, check_memory_limit

__all__ = ["value_and_grad"]


def value_and_grad(chain, loss, *, checkpoint=None, memory_limit=None) -> Callable:
    """``value_and_grad(chain, loss, *, checkpoint=None, memory_limit=None)(params, x, target) ->
    (value, params_grad)``.

    One forward pass records the tape; the loss's VJP seeds ``y_bar``; the layers' VJP rules pull
    it back. ``params_grad`` has the structure and dtypes of ``params``. Pure: compose with ``jax.jit``.

    ``checkpoint``: keep only some activations and recompute the rest segment by segment during
    the backward pass (``compose/_checkpoint.py``): ``"sqrt"`` (⌈√N⌉ segments: about 2√N
    activations for one more forward pass), ``"two-level"`` (⌈N^(1/3)⌉ outer segments, each
    recomputed keeping ⌈√L⌉ inner boundaries, its inner segments recomputed in turn: about
    3·N^(1/3) activations for two more forward passes), ``("binomial", B)`` (the schedule that
    recomputes the fewest layers holding at most B activations at once), a number of segments,
    or the layer indices after which to keep the activation. The values are unchanged (to
    rounding); ``None`` (default) keeps the whole tape. A bad ``checkpoint`` is a ValueError here,
    before any call. When XLA compiles the checkpointed gradient to more bytes than the full tape's
    (module docstring), a RuntimeWarning says so on the first call.

    ``memory_limit`` (bytes, or ``"1GB"``): the bytes of one call (arguments, outputs, XLA's
    temporaries) stay within it: the full tape when it fits, else chunks of the batch or a
    checkpoint schedule (module docstring), chosen on the first call per shapes; a ValueError
    names the smallest candidate when none fits. With ``checkpoint=`` too, only chunks are chosen.
    """
    where = "jacket.value_and_grad"
    chain = _chain_of(chain, where)
    loss = check_loss(loss, where)
    check_checkpoint(checkpoint, where, boundaries_allowed=True)
    limit = check_memory_limit(memory_limit, where)
    schedule(len(chain), checkpoint)  # a checkpoint that does not fit this chain: an error now
    chosen = {}  # shapes -> (checkpoint, chunks), per call signature

    def value_and_grad_fn(params, x, target):
        chain.check_params(params, where)
        x = chain.check_input(x, where)
        key = _signature(params, x, target)
        try:
            if key not in chosen:
                chosen[key] = (_choose(chain, loss, checkpoint, limit, params, x, target, where)
                               if limit is not None else (checkpoint, 1))
                if checkpoint is not None and limit is None:
                    _warn_if_worse(chain, loss, checkpoint, params, x, target)
            ck, chunks = chosen[key]
            return _run(chain, loss, ck, chunks, params, x, target)
        except RuleOutputError as err:
            raise err.at(where) from None
    return value_and_grad_fn


def _chain_of(fun, where):
    chain, single = as_chain(fun, where)
    if single:
        raise TypeError(f"{where}: takes a jacket.Chain (params one pytree per layer), got the layer {fun!r}: "
                        f"write jacket.Chain([{fun!r}])")
    return chain


def _once(chain, loss, checkpoint, params, x, target):
    """Value and gradient of one batch (or chunk), the whole tape or a checkpoint schedule."""
    if checkpoint is None:
        y, tape = record(chain, params, x)
    else:
        nodes = schedule(len(chain), checkpoint)
        y, kept = forward_boundaries(chain, params, x, boundaries(nodes))
    value = loss.apply(y, target)
    y_bar = cast_like(loss.vjp(y, target, value, jnp.ones((), y.dtype)), y)
    if checkpoint is None:
        params_bar, _ = pull(chain, params, tape, y_bar)
    else:
        params_bar, _ = pull_checkpointed(chain, params, kept, nodes, y_bar)
    return value, params_bar


def _run(chain, loss, checkpoint, chunks, params, x, target):
    """``_once`` on the whole batch, or on ``chunks`` equal chunks with the gradients accumulated
    (the batch's value and gradient: the mean of the chunks', for a loss averaging the batch)."""
    if chunks == 1:
        return _once(chain, loss, checkpoint, params, x, target)
    split = jax.tree_util.tree_map(lambda a: a.reshape((chunks, a.shape[0] // chunks) + a.shape[1:]), (x, target))

    def body(total, part):
        value, grads = _once(chain, loss, checkpoint, params, *part)
        return (total[0] + value, jax.tree_util.tree_map(jnp.add, total[1], grads)), None
    start = (jnp.zeros((), x.dtype), jax.tree_util.tree_map(jnp.zeros_like, params))
    (value, grads), _ = jax.lax.scan(body, start, split)
    return value / chunks, jax.tree_util.tree_map(lambda g: (g / chunks).astype(g.dtype), grads)


def _signature(*trees):
    return tuple((tuple(jnp.shape(a)), str(jnp.result_type(a))) for a in jax.tree_util.tree_leaves(trees))


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def call_bytes(chain, loss, checkpoint, chunks, params, x, target) -> tuple[int, int]:
    """``(total, temporaries)`` bytes of one call as XLA compiles it (arguments + outputs +
    temporaries, and the temporaries alone), for these shapes; nothing runs."""
    fn = jax.jit(lambda p, x, t: _run(chain, loss, checkpoint, chunks, p, x, t))
    analysis = fn.lower(*_abstract((params, x, target))).compile().memory_analysis()
    if analysis is None:  # a backend without memory analysis
        raise ValueError("jacket.value_and_grad: memory_limit needs XLA's memory analysis, which this backend "
                         "does not give")
    temp = int(analysis.temp_size_in_bytes)
    return int(analysis.argument_size_in_bytes) + int(analysis.output_size_in_bytes) + temp, temp


def candidates(chain, loss, checkpoint, batch: int) -> list:
    """``(checkpoint, chunks)`` in the order of the module docstring (about fastest first)."""
    n = len(chain)
    few = [c for c in (2, 4, 8) if batch % c == 0] if loss.mean_over_batch else []
    many = [c for c in (2 ** p for p in range(4, int(math.log2(max(batch, 1))) + 1)) if batch % c == 0] \
        if loss.mean_over_batch else []
    if checkpoint is not None:
        return [(checkpoint, 1)] + [(checkpoint, c) for c in few + many]
    schedules = []
    if n >= 3:
        # tighter binomial budgets nest more conds: B = 3 on 17 layers did not compile within minutes
        schedules = ["sqrt", "two-level"] + [("binomial", b) for b in range(math.isqrt(n - 1) + 2, 3, -1)]
    out = [(None, 1)] + [(None, c) for c in few] + [(s, 1) for s in schedules] + [(None, c) for c in many]
    return list(dict.fromkeys(out))


def _choose(chain, loss, checkpoint, limit, params, x, target, where):
    """The first candidate whose compiled bytes fit ``limit``; a ValueError naming the smallest."""
    batch = x.shape[0] if x.ndim == len(chain.in_shape) + 1 else 1
    seen = []
    for ck, chunks in candidates(chain, loss, checkpoint, batch):
        total, temp = call_bytes(chain, loss, ck, chunks, params, x, target)
        if total <= limit:
            return ck, chunks
        seen.append((total, temp, ck, chunks))
    total, temp, ck, chunks = min(seen, key=lambda s: s[0])
    how = ", ".join(part for part in (f"checkpoint={ck!r}" if ck is not None else "",
                                      f"{chunks} chunks of the batch" if chunks > 1 else "") if part) or "the full tape"
    raise ValueError(f"{where}: no way to compute this gradient fits memory_limit={limit:,} bytes: the smallest "
                     f"found, {how}, needs {total:,} bytes (XLA's arguments, outputs and {temp:,} bytes of "
                     f"temporaries); pass memory_limit >= {total}"
                     + ("" if loss.mean_over_batch else f" ({loss!r} does not declare mean_over_batch, so the "
                                                        f"batch is not split into chunks)"))


def _warn_if_worse(chain, loss, checkpoint, params, x, target):
    """A RuntimeWarning when the checkpointed gradient compiles to more bytes than the full tape."""
    _, full = call_bytes(chain, loss, None, 1, params, x, target)
    _, checked = call_bytes(chain, loss, checkpoint, 1, params, x, target)
    if checked > full:
        warnings.warn(f"jacket.value_and_grad: checkpoint={checkpoint!r} makes XLA hold more temporaries than the "
                      f"full tape ({checked:,} against {full:,} bytes): the tape fits in the gradients' buffers "
                      f"here; leave checkpoint out, or pass memory_limit= to choose by bytes",
                      RuntimeWarning, stacklevel=3)
