"""Running a checkpoint schedule: the forward pass that keeps a level's boundaries, and the
recursive pull-back that recomputes each segment inside ``jax.lax.cond`` (why a cond:
``compose/_checkpoint.py``). Generic in the state and the cotangent: activations and cotangents
for gradients, ``(x, x_dot)`` pairs for Hessian-vector products, cotangent rows for a plan's
ADJ sweeps."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._schedules import boundaries

__all__ = ["forward_kept", "pull_schedule", "runtime_true"]


def forward_kept(step, lo, hi, start, keep, end=None):
    """``kept``: the states at the indices in ``keep`` (``kept[lo] = start``) of
    ``step(t, state) -> next state`` run from layer ``lo`` to ``hi``. With ``end`` (the state at
    ``hi``, already known) the last layer is not run again."""
    kept, a = {lo: start}, start
    for t in range(lo, hi if end is None else hi - 1):
        a = step(t, a)
        if t + 1 in keep:
            kept[t + 1] = a
    if end is not None:
        kept[hi] = end
    return kept


def runtime_true(params, cotangent):
    """A predicate XLA cannot fold (an entry is finite). From the params when there are any, so
    that under ``jax.vmap`` over examples (per-example gradients) it stays unbatched and the
    ``cond`` stays a ``cond`` (a batched predicate would turn it into a select of both branches)."""
    def inexact(tree):
        return [a for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    leaves = inexact(params) or inexact(cotangent)
    return jnp.isfinite(jnp.ravel(leaves[0])[0])


def pull_schedule(step, back, params, nodes, kept, cotangent, truth=None):
    """``(results, cotangent)``: ``cotangent`` pulled back through the segments ``nodes`` (one
    level of a :func:`schedule`, ``kept`` holding the state at each of its boundaries), from the
    last. A single layer ``t`` is pulled back by ``back(t, state_t, state_{t+1}, cotangent) ->
    (result_t, cotangent)``; a longer segment, inside ``jax.lax.cond``, recomputes the states at
    its own sub-segments' boundaries from its first with ``step(t, state) -> state`` and pulls
    back through them recursively. ``results``: a dict, layer index → ``result_t``. ``truth``:
    the conds' predicate (default :func:`runtime_true` of the params and the cotangent)."""
    results = {}
    for lo, hi, inner in reversed(nodes):
        if not inner:  # one layer: both its states are kept
            results[lo], cotangent = back(lo, kept[lo], kept[hi], cotangent)
            continue

        def segment(operands, lo=lo, hi=hi, inner=inner):
            start, end, cotangent = operands
            sub = forward_kept(step, lo, hi, start, set(boundaries(inner)), end)
            res, cotangent = pull_schedule(step, back, params, inner, sub, cotangent, truth)
            return tuple(res[t] for t in range(lo, hi)), cotangent
        predicate = runtime_true(params, cotangent) if truth is None else truth
        got, cotangent = jax.lax.cond(predicate, segment, segment, (kept[lo], kept[hi], cotangent))
        results.update(zip(range(lo, hi), got))
    return results, cotangent
