"""Checkpoint schedules under a budget of live activations, ``checkpoint=("binomial", B)``.

Griewank's binomial checkpointing (Revolve) asks: with at most ``B`` states held at once, which
states should the backward pass recompute, and from where, to recompute as few layers as
possible? Optimal schedules place snapshots at binomial-coefficient distances; here the same
optimum is found by a dynamic programme over the schedule trees that
``_pull.py``'s :func:`~._pull.pull_schedule` runs (a segment with its own
sub-segments recomputes forward from its first state, keeping their boundaries). Counting every
state (activation) live at once, the start and end of a segment included:

* ``F(l, B)``, a segment of ``l`` layers whose first and last states are held, recomputed inside
  a ``lax.cond``: one layer costs 0; keeping all its ``l + 1`` states (if ``l + 1 ≤ B``) costs the
  ``l − 1`` layers recomputed; splitting at ``m`` costs the ``m`` layers to reach state ``m``,
  then the right part with one state fewer (the segment's first stays live) and the left part:
  ``m + F(l − m, B − 1) + F(m, B)``;
* ``K(l, j, B)``, the first ``l`` layers when the forward pass (free: it runs anyway) keeps ``j``
  states among them, the two ends included: its last top-level segment ``[m, l)`` is pulled back
  first while all ``j − 1`` kept states up to ``m`` are live,
  ``K(l, j, B) = min_m K(m, j − 1, B) + F(l − m, B − j + 2)``, and ``K(l, l + 1, B) = 0`` (the
  whole tape) when ``l + 1 ≤ B``.

The schedule is the tree of the minimum over ``j`` of ``K(N, j, B)``; its cost (layers recomputed)
is :func:`binomial_cost`. ``B = N + 1`` is the full tape; the smallest budget is 3 (two held
states and one being recomputed), at about ``N²/2`` layers recomputed. O(N² B) time.
"""
from __future__ import annotations

from functools import lru_cache

__all__ = ["binomial_schedule", "binomial_cost", "check_budget"]

_INF = float("inf")


def check_budget(n: int, spec) -> int:
    """The budget ``B`` of ``("binomial", B)``, checked: an int from 3 (at most ``n + 1`` is used)."""
    budget = spec[1] if len(spec) == 2 else None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 3:
        raise ValueError(f"checkpoint=('binomial', B): B is the number of activations held at once, an int ≥ 3 "
                         f"(two held, one being recomputed), got {spec!r}")
    return min(budget, n + 1)


@lru_cache(maxsize=64)
def _tables(n: int, budget: int):
    """``F[l][b]`` with its choice (0: flat, m: split) for b ≤ budget, and ``K`` for the top level."""
    f = [[_INF] * (budget + 1) for _ in range(n + 1)]
    f_choice = [[None] * (budget + 1) for _ in range(n + 1)]
    for b in range(2, budget + 1):
        f[1][b], f_choice[1][b] = 0, 0
    for length in range(2, n + 1):
        for b in range(3, budget + 1):
            best, choice = (length - 1, 0) if length + 1 <= b else (_INF, None)
            for m in range(1, length):
                cost = m + f[length - m][b - 1] + f[m][b]
                if cost < best:
                    best, choice = cost, m
            f[length][b], f_choice[length][b] = best, choice
    # K[l][j]: j states kept by the forward pass over the first l layers (x_0 and x_l included)
    k = [[_INF] * (budget + 2) for _ in range(n + 1)]
    k_choice = [[None] * (budget + 2) for _ in range(n + 1)]
    for length in range(1, n + 1):
        k[length][2], k_choice[length][2] = f[length][budget], 0
        for j in range(3, min(budget, length + 1) + 1):
            best, choice = (0, -1) if j == length + 1 else (_INF, None)
            b = budget - j + 2  # the last segment's budget: the j − 1 states kept up to m stay live
            for m in range(max(1, j - 2), length):  # [0, m] holds j − 1 kept states
                cost = k[m][j - 1] + f[length - m][b]
                if cost < best:
                    best, choice = cost, m
            k[length][j], k_choice[length][j] = best, choice
    return f, f_choice, k, k_choice


def _segment(lo: int, hi: int, b: int, f_choice) -> tuple:
    """The node ``(lo, hi, inner)`` of a recomputed segment under budget ``b``."""
    length = hi - lo
    if length == 1:
        return (lo, hi, ())
    m = f_choice[length][b]
    if m == 0:  # flat: every state of the segment kept
        return (lo, hi, tuple((t, t + 1, ()) for t in range(lo, hi)))
    return (lo, hi, (_segment(lo, lo + m, b, f_choice), _segment(lo + m, hi, b - 1, f_choice)))


def binomial_schedule(n: int, budget: int) -> tuple:
    """The top-level segments of the cheapest schedule over ``n`` layers holding at most
    ``budget`` activations at once (module docstring)."""
    f, f_choice, k, k_choice = _tables(n, budget)
    j = min(range(2, min(budget, n + 1) + 1), key=lambda j: (k[n][j], j))
    nodes, length = [], n
    while length > 0:
        choice = k_choice[length][j]
        if choice == -1:  # the whole prefix kept by the forward pass
            nodes.extend((t, t + 1, ()) for t in reversed(range(length)))
            break
        if choice == 0:  # one segment [0, length)
            nodes.append(_segment(0, length, budget, f_choice))
            break
        m, b = choice, budget - j + 2
        nodes.append(_segment(m, length, b, f_choice))
        length, j = m, j - 1
    return tuple(reversed(nodes))


def binomial_cost(n: int, budget: int) -> int:
    """Layers the cheapest schedule recomputes (0: the whole tape fits in ``budget``)."""
    _, _, k, _ = _tables(n, budget)
    return int(min(k[n][j] for j in range(2, min(budget, n + 1) + 1)))
