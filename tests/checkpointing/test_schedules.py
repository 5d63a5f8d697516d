"""Checkpoint schedules (``jacket.checkpointing``): the segments and nested trees of each named
schedule, and ``("binomial", B)`` against an exhaustive enumeration of every schedule tree,
with an independent simulator of what a schedule holds and recomputes."""
from __future__ import annotations

import pytest

from jacket.checkpointing import binomial_cost, schedule, segments


def test_segments_cover_the_chain_as_asked():
    assert segments(5, None) == (0, 1, 2, 3, 4, 5)
    assert segments(16, "sqrt") == (0, 4, 8, 12, 16)
    assert segments(10, 3) == (0, 3, 7, 10) and segments(3, 9) == (0, 1, 2, 3)
    assert segments(6, (2, 5)) == (0, 2, 5, 6)
    assert segments(27, "two-level") == (0, 9, 18, 27) and segments(28, "two-level") == (0, 7, 14, 21, 28)
    for bad in ("half", "two_level", "Sqrt", "", 0, True, (3, 2), (0, 2), (2, 6), (1.5,)):
        with pytest.raises(ValueError, match="checkpoint"):
            segments(6, bad)


def test_schedules_nest_as_asked():
    """One level: segments split into single layers. Two levels: ⌈∛n⌉ outer segments, each split
    into ⌈√len⌉ inner ones, those into single layers. Every level covers its parent exactly."""
    def check(nodes, lo, hi):
        assert nodes[0][0] == lo and nodes[-1][1] == hi
        assert all(a[1] == b[0] for a, b in zip(nodes, nodes[1:]))
        for a, b, inner in nodes:
            assert (inner == ()) == (b - a == 1)
            if inner:
                check(inner, a, b)
    for n in (1, 2, 5, 24, 27, 100):
        for checkpoint in ("sqrt", "two-level", 3, None):
            check(schedule(n, checkpoint), 0, n)
    two = schedule(24, "two-level")
    assert [(lo, hi) for lo, hi, _ in two] == [(0, 8), (8, 16), (16, 24)]
    assert [(lo, hi) for lo, hi, _ in two[0][2]] == [(0, 3), (3, 5), (5, 8)]
    assert all(inner == () for _, _, inner in two[0][2][0][2])  # then single layers
    assert [(lo, hi) for lo, hi, _ in schedule(16, "sqrt")] == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert all(len(inner) == 4 and all(i == () for *_, i in inner) for *_, inner in schedule(16, "sqrt"))


def simulate(nodes, n):
    """(layers recomputed, most states live at once) of pulling back through a schedule, as
    ``pull_schedule`` runs it: the forward pass keeps the top level's boundaries; a segment with
    sub-segments recomputes from its first state up to its last inner boundary and keeps those;
    a state is live from when it is made until the cotangent passes it."""
    def walk(nodes, held):  # held: states live from outer levels (all at or below the segment)
        cost, most = 0, 0
        kept = {lo for lo, _, _ in nodes} | {nodes[-1][1]}
        for lo, hi, inner in reversed(nodes):
            live = {s for s in held | kept if s <= hi}
            if not inner:
                most = max(most, len(live))
                continue
            inner_bounds = {a for a, _, _ in inner} | {inner[-1][1]}
            cost += max(b for b in inner_bounds if b < hi) - lo
            c, m = walk(inner, live)
            cost, most = cost + c, max(most, m)
        return cost, most
    return walk(nodes, set())


def all_schedules(lo, hi, proper=False):
    """Every schedule over layers lo..hi: compositions into parts (``proper``: at least two), each
    a single layer or a segment with a proper composition of its own."""
    found = []
    for cut in range(lo + 1, hi if proper else hi + 1):
        firsts = [(lo, cut, ())] if cut - lo == 1 else [(lo, cut, inner) for inner in all_schedules(lo, cut, True)]
        rests = [()] if cut == hi else all_schedules(cut, hi)
        found += [(first,) + rest for first in firsts for rest in rests]
    return found


def test_binomial_schedules_recompute_the_fewest_layers_within_their_budget():

    for n in range(1, 7):
        every = [simulate(nodes, n) for nodes in all_schedules(0, n)]
        for budget in range(3, n + 3):
            nodes = schedule(n, ("binomial", budget))
            cost, most = simulate(nodes, n)
            assert most <= budget and cost == binomial_cost(n, budget), (n, budget, nodes)
            assert cost == min(c for c, m in every if m <= budget), (n, budget, nodes)
    costs = [binomial_cost(64, b) for b in range(3, 66)]
    assert costs == sorted(costs, reverse=True) and costs[-1] == 0 and binomial_cost(64, 8) < 2 * 64
    for budget in (4, 8, 12):
        assert simulate(schedule(64, ("binomial", budget)), 64)[1] <= budget
