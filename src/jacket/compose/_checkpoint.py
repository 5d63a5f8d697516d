"""Checkpointed reverse sweeps: keep the activations at a few boundaries, recompute the rest.

Reverse mode needs every activation ``x_0 … x_N`` of the forward pass. A checkpoint schedule
keeps fewer and recomputes the rest during the backward pass (Chen et al. 2016, "Training deep
nets with sublinear memory cost"). The recomputation repeats the forward pass's operations, so
the values are the full tape's: mostly bit for bit, but XLA:CPU may compile a recomputed layer
(a ``tanh``, a small matmul) in another context, vectorised or fused differently, and then a
value differs in its last few bits (measured on small float64 chains: a few units in the last
place; the tests compare at float64 tolerance).

* One level (``"sqrt"``, a number of segments ``k``, or the interior boundaries): the forward
  pass keeps only the ``k + 1`` boundary activations; the backward pass walks the segments from
  the last, recomputes one segment's activations from its boundary, pulls the cotangent back
  through it with the layers' VJP rules, and drops them again. Memory: ``k`` boundaries plus one
  segment, ``k + N / k`` activations, ``2√N`` for ``k = ⌈√N⌉`` ("sqrt"). Recomputation: one
  extra forward pass (each layer applied twice).
* Two levels (``"two-level"``): ``k₁ = ⌈N^(1/3)⌉`` outer segments. When the cotangent reaches
  an outer segment of length ``L``, the segment is recomputed forward from its boundary keeping
  only its own ``k₂ + 1`` inner boundaries (``k₂ = ⌈√L⌉``), then pulled back inner segment by
  inner segment, each recomputing its activations from its inner boundary. Memory:
  ``k₁ + k₂ + L / k₂`` activations, about ``3 N^(1/3)``. Recomputation: two extra forward
  passes (each layer applied three times). Measured (XLA's temporaries, 12 × (Dense(64, 64),
  Tanh) at batch 512, in activations): gradients 13 full tape, 10 "sqrt", 9 "two-level";
  Hessian-vector products 47, 23, 18.

A schedule is a tree (:func:`schedule`): a segment ``(lo, hi, inner)`` covers layers
``lo + 1 … hi`` and has its own sub-segments ``inner`` (``()`` for a single layer, pulled back by
its rule). :func:`pull_schedule` pulls back through it recursively, for any number of levels and
for any per-layer forward step and pull-back step: activations and cotangents for gradients,
``(x, x_dot)`` pairs and ``(y_bar, y_bar_dot)`` for Hessian-vector products
(``compose/_curvature.py``).

XLA would merge a recomputation with the forward pass it repeats (common-subexpression
elimination) and keep everything alive again. ``jax.lax.optimization_barrier`` does not stop it
on the CPU backend: measured here, the barriers are gone from the optimised HLO and so are the
recomputed products, for ``jax.checkpoint`` as for a hand-written segment. Each segment's
recomputation and pull-back therefore run inside ``jax.lax.cond`` on a predicate only known at
run time (a parameter's first entry is finite), with the same function in both branches: a
separate computation XLA cannot merge with the forward pass, and the same result either way.
Inner segments are ``cond``s nested in their outer segment's; XLA compiles both branches of
each, so a schedule costs compile time (about 2× the full tape's for two levels). No JAX
autodiff is used.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ..core._tangents import call_vjp

__all__ = ["segments", "schedule", "boundaries", "forward_boundaries", "forward_kept", "pull_schedule",
           "pull_checkpointed"]

_LEVELS = {"sqrt": 1, "two-level": 2}
_WHAT = "None, 'sqrt', 'two-level', ('binomial', B), a number of segments or a sequence of boundaries"


def _ceil_root(n: int, r: int) -> int:
    """``⌈n^(1/r)⌉`` exactly (at least 1)."""
    k = max(1, round(n ** (1 / r)))
    while k ** r < n:
        k += 1
    while k > 1 and (k - 1) ** r >= n:
        k -= 1
    return k


def _equal(n: int, k: int) -> tuple[int, ...]:
    """``0 = b_0 < … < b_k = n``: ``min(k, n)`` segments of (nearly) equal length."""
    k = min(k, n)
    return tuple(sorted({round(i * n / k) for i in range(k + 1)}))


def segments(n: int, checkpoint) -> tuple[int, ...]:
    """The top-level boundaries ``0 = b_0 < b_1 < … < b_k = n`` for ``checkpoint``: ``None`` (every
    layer a boundary: the full tape), ``"sqrt"`` (⌈√n⌉ segments of equal length), ``"two-level"``
    (its ⌈n^(1/3)⌉ outer segments; :func:`schedule` has the inner ones), an int (that many
    segments) or a sequence of interior boundaries (layer indices 1 … n − 1 after which to keep
    the activation). A clear ValueError for anything else."""
    if checkpoint is None:
        return tuple(range(n + 1))
    if isinstance(checkpoint, str):
        if checkpoint not in _LEVELS:
            raise ValueError(f"checkpoint must be {_WHAT}; the schedules by name are "
                             f"{', '.join(map(repr, _LEVELS))}, got {checkpoint!r}")
        return _equal(n, _ceil_root(n, _LEVELS[checkpoint] + 1))
    if isinstance(checkpoint, bool):
        raise ValueError(f"checkpoint must be {_WHAT}, got {checkpoint!r}")
    if isinstance(checkpoint, int):
        if checkpoint < 1:
            raise ValueError(f"checkpoint: the number of segments must be ≥ 1, got {checkpoint}")
        return _equal(n, checkpoint)
    if isinstance(checkpoint, Sequence):
        inner = list(checkpoint)
        bad = [b for b in inner if isinstance(b, bool) or not isinstance(b, int) or not 0 < b < n]
        if bad or inner != sorted(set(inner)):
            raise ValueError(f"checkpoint boundaries must be increasing layer indices in 1 … {n - 1}, got "
                             f"{tuple(inner)}")
        return (0,) + tuple(inner) + (n,)
    raise ValueError(f"checkpoint must be {_WHAT}, got {checkpoint!r}")


def _tree(lo: int, hi: int, bounds: Sequence[int], levels: int) -> tuple:
    """The segments between ``bounds`` (offsets from ``lo``), each split ``levels - 1`` more times
    into ⌈len^(1/levels)⌉ equal sub-segments, and below that into single layers."""
    nodes = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        a, b = lo + a, lo + b
        if b - a == 1:
            nodes.append((a, b, ()))
        elif levels > 1:
            nodes.append((a, b, _tree(a, b, _equal(b - a, _ceil_root(b - a, levels)), levels - 1)))
        else:
            nodes.append((a, b, _tree(a, b, tuple(range(b - a + 1)), 1)))
    return tuple(nodes)


def schedule(n: int, checkpoint) -> tuple:
    """The nested schedule for ``checkpoint`` over ``n`` layers: a tuple of top-level segments
    ``(lo, hi, inner)``, ``inner`` the segment's own sub-segments (``()`` for one layer). The
    top level is :func:`segments`; ``"two-level"`` splits each outer segment once more into
    ⌈√len⌉ inner segments; ``("binomial", B)`` is the tree that recomputes the fewest layers
    holding at most ``B`` activations at once (``_binomial.py``); every other schedule has one
    level (its segments split into layers)."""
    if isinstance(checkpoint, tuple) and checkpoint and checkpoint[0] == "binomial":
        from ._binomial import binomial_schedule, check_budget
        return binomial_schedule(n, check_budget(n, checkpoint))
    bounds = segments(n, checkpoint)
    return _tree(0, n, bounds, _LEVELS.get(checkpoint, 1) if isinstance(checkpoint, str) else 1)


def boundaries(nodes) -> tuple[int, ...]:
    """The boundaries of one level of a schedule: ``(lo_1, …, lo_k, hi_k)``."""
    return tuple(lo for lo, _, _ in nodes) + (nodes[-1][1],)


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


def forward_boundaries(chain, params, x, bounds):
    """``(y, kept)``: the output and the activations at ``bounds`` only (``kept[b]`` = x_b)."""
    n = len(chain.layers)
    kept = forward_kept(lambda t, a: chain.layers[t].apply(params[t], a), 0, n, x, set(bounds) | {n})
    return kept[n], kept


def _runtime_true(params, cotangent):
    """A predicate XLA cannot fold (an entry is finite). From the params when there are any, so
    that under ``jax.vmap`` over examples (per-example gradients) it stays unbatched and the
    ``cond`` stays a ``cond`` (a batched predicate would turn it into a select of both branches)."""
    def inexact(tree):
        return [a for a in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    leaves = inexact(params) or inexact(cotangent)
    return jnp.isfinite(jnp.ravel(leaves[0])[0])


def pull_schedule(step, back, params, nodes, kept, cotangent):
    """``(results, cotangent)``: ``cotangent`` pulled back through the segments ``nodes`` (one
    level of a :func:`schedule`, ``kept`` holding the state at each of its boundaries), from the
    last. A single layer ``t`` is pulled back by ``back(t, state_t, state_{t+1}, cotangent) ->
    (result_t, cotangent)``; a longer segment, inside ``jax.lax.cond``, recomputes the states at
    its own sub-segments' boundaries from its first with ``step(t, state) -> state`` and pulls
    back through them recursively. ``results``: a dict, layer index → ``result_t``."""
    results = {}
    for lo, hi, inner in reversed(nodes):
        if not inner:  # one layer: both its states are kept
            results[lo], cotangent = back(lo, kept[lo], kept[hi], cotangent)
            continue

        def segment(operands, lo=lo, hi=hi, inner=inner):
            start, end, cotangent = operands
            sub = forward_kept(step, lo, hi, start, set(boundaries(inner)), end)
            res, cotangent = pull_schedule(step, back, params, inner, sub, cotangent)
            return tuple(res[t] for t in range(lo, hi)), cotangent
        got, cotangent = jax.lax.cond(_runtime_true(params, cotangent), segment, segment,
                                      (kept[lo], kept[hi], cotangent))
        results.update(zip(range(lo, hi), got))
    return results, cotangent


def pull_checkpointed(chain, params, kept, nodes, y_bar):
    """``(params_bar, x_bar)``: ``y_bar`` pulled back through the layers' VJP rules over the
    schedule ``nodes`` (from :func:`schedule`; ``kept`` the activations at its top-level
    boundaries, from :func:`forward_boundaries`), each segment's activations recomputed from its
    boundary once the cotangent reaches it."""
    layers = chain.layers
    results, x_bar = pull_schedule(lambda t, a: layers[t].apply(params[t], a),
                                   lambda t, x, y, y_bar: call_vjp(layers[t], params[t], x, y, y_bar),
                                   params, nodes, kept, y_bar)
    params_bar = [results[t] for t in range(len(layers))]
    return (params_bar if isinstance(params, list) else tuple(params_bar)), x_bar
