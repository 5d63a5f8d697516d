"""Checkpoint schedules: which activations a reverse sweep keeps, as a tree of segments.

A schedule over ``n`` layers is a tuple of top-level segments ``(lo, hi, inner)``: the segment
covers layers ``lo + 1 … hi`` (0-based ``lo … hi − 1``) and ``inner`` is its own schedule, ``()``
for a single layer. The forward pass keeps the top level's boundaries; a segment with an inner
schedule is recomputed from its first state when the backward pass reaches it
(:func:`~._pull.pull_schedule`).
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["segments", "schedule", "boundaries"]

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
        from ._binomial import binomial_schedule, check_budget  # noqa: PLC0415 - the DP is imported when asked for
        return binomial_schedule(n, check_budget(n, checkpoint))
    bounds = segments(n, checkpoint)
    return _tree(0, n, bounds, _LEVELS.get(checkpoint, 1) if isinstance(checkpoint, str) else 1)


def boundaries(nodes) -> tuple[int, ...]:
    """The boundaries of one level of a schedule: ``(lo_1, …, lo_k, hi_k)``."""
    return tuple(lo for lo, _, _ in nodes) + (nodes[-1][1],)
