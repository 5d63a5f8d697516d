"""Checkpointed reverse sweeps: keep the activations at a few boundaries, recompute the rest.

Reverse mode needs every activation ``x_0 … x_N`` of the forward pass. With ``k`` segments the
forward pass keeps only the ``k + 1`` boundary activations; the backward pass then walks the
segments from the last, recomputes one segment's activations from its boundary, pulls the
cotangent back through it with the layers' VJP rules, and drops them again. Memory: ``k``
boundaries plus one segment (``N / k`` activations), so ``k = ⌈√N⌉`` ("sqrt") gives O(√N)
activations for one extra forward pass (Chen et al. 2016, "Training deep nets with sublinear
memory cost"); every value is bit-for-bit what the full tape gives.

XLA would merge a recomputation with the forward pass it repeats (common-subexpression
elimination) and keep everything alive again. ``jax.lax.optimization_barrier`` does not stop it
on the CPU backend: measured here, the barriers are gone from the optimised HLO and so are the
recomputed products, for ``jax.checkpoint`` as for a hand-written segment. Each segment's
recomputation and pull-back therefore run inside ``jax.lax.cond`` on a predicate only known at
run time (a parameter's first entry is finite), with the same function in both branches: a
separate computation XLA cannot merge with the forward pass, and the same result either way.
No JAX autodiff is used.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from ..core._tangents import call_vjp

__all__ = ["segments", "forward_boundaries", "pull_checkpointed"]


def segments(n: int, checkpoint) -> tuple[int, ...]:
    """The boundaries ``0 = b_0 < b_1 < … < b_k = n`` for ``checkpoint``: ``None`` (every layer a
    boundary: the full tape), ``"sqrt"`` (⌈√n⌉ segments of equal length), an int (that many
    segments) or a sequence of interior boundaries (layer indices 1 … n − 1 after which to keep
    the activation)."""
    if checkpoint is None:
        return tuple(range(n + 1))
    if isinstance(checkpoint, str):
        if checkpoint != "sqrt":
            raise ValueError(f"checkpoint must be None, 'sqrt', a number of segments or a sequence of "
                             f"boundaries, got {checkpoint!r}")
        checkpoint = max(1, math.ceil(math.sqrt(n)))
    if isinstance(checkpoint, bool):
        raise ValueError(f"checkpoint must be None, 'sqrt', a number of segments or a sequence of boundaries, "
                         f"got {checkpoint!r}")
    if isinstance(checkpoint, int):
        if checkpoint < 1:
            raise ValueError(f"checkpoint: the number of segments must be ≥ 1, got {checkpoint}")
        k = min(checkpoint, n)
        return tuple(sorted({round(i * n / k) for i in range(k + 1)}))
    if isinstance(checkpoint, Sequence):
        inner = list(checkpoint)
        bad = [b for b in inner if isinstance(b, bool) or not isinstance(b, int) or not 0 < b < n]
        if bad or inner != sorted(set(inner)):
            raise ValueError(f"checkpoint boundaries must be increasing layer indices in 1 … {n - 1}, got "
                             f"{tuple(inner)}")
        return (0,) + tuple(inner) + (n,)
    raise ValueError(f"checkpoint must be None, 'sqrt', a number of segments or a sequence of boundaries, "
                     f"got {checkpoint!r}")


def forward_boundaries(chain, params, x, bounds):
    """``(y, kept)``: the output and the activations at ``bounds`` only (``kept[b]`` = x_b)."""
    kept, a = {0: x}, x
    for t, (layer, p) in enumerate(zip(chain.layers, params), 1):
        a = layer.apply(p, a)
        if t in bounds:
            kept[t] = a
    return a, kept


def _runtime_true(params, y_bar):
    """A predicate XLA cannot fold (an entry is finite). From the params when there are any, so
    that under ``jax.vmap`` over examples (per-example gradients) it stays unbatched and the
    ``cond`` stays a ``cond`` (a batched predicate would turn it into a select of both branches)."""
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(params) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.isfinite(jnp.ravel(leaves[0] if leaves else y_bar)[0])


def pull_checkpointed(chain, params, kept, bounds, y_bar):
    """``(params_bar, x_bar)``: ``y_bar`` pulled back segment by segment, each segment's
    activations recomputed from its boundary once the cotangent reaches it."""
    layers, n = chain.layers, len(chain.layers)
    params_bar = [None] * n
    for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:]))):
        def segment(operands, lo=lo, hi=hi):
            start, end, y_bar = operands
            tape = [start]
            for t in range(lo, hi - 1):  # x_{lo+1} … x_{hi−1}; x_hi is the next boundary
                tape.append(layers[t].apply(params[t], tape[-1]))
            tape.append(end)
            bars = [None] * (hi - lo)
            for t in reversed(range(lo, hi)):
                bars[t - lo], y_bar = call_vjp(layers[t], params[t], tape[t - lo], tape[t - lo + 1], y_bar)
            return tuple(bars), y_bar
        operands = (kept[lo], kept[hi], y_bar)
        if hi - lo == 1:  # nothing to recompute
            bars, y_bar = segment(operands)
        else:
            bars, y_bar = jax.lax.cond(_runtime_true(params, y_bar), segment, segment, operands)
        params_bar[lo:hi] = bars
    return (params_bar if isinstance(params, list) else tuple(params_bar)), y_bar
