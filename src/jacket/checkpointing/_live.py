"""What a schedule holds and recomputes, without running it: for the bytes model and the cost
model of plans whose ADJ sweeps are checkpointed (``planning/_memory_walk.py``, ``_costs.py``),
and for the tests that check a schedule against its budget."""
from __future__ import annotations

__all__ = ["states_live", "recomputed", "starts"]


def states_live(nodes) -> dict:
    """Layer ``t`` (0-based) → ``(states, enclosing)`` when the cotangent is pulled back through
    it: the states held then (by the forward pass and by every recomputed segment around it,
    those the cotangent has not passed), and the recomputed segments ``(lo, hi)`` around it,
    outermost first (each a ``lax.cond``)."""
    out = {}

    def walk(nodes, held, enclosing):
        kept = {lo for lo, _, _ in nodes} | {nodes[-1][1]}
        for lo, hi, inner in reversed(nodes):
            live = frozenset(s for s in held | kept if s <= hi)
            if inner:
                walk(inner, set(live), enclosing + ((lo, hi),))
            else:
                out[lo] = (live, enclosing)
    walk(nodes, set(), ())
    return out


def starts(nodes) -> frozenset:
    """States a schedule keeps to recompute from: the top level's boundaries and every
    recomputed segment's first state (the others are kept for the rules that read them)."""
    found = {lo for lo, _, _ in nodes} | {nodes[-1][1]}

    def walk(nodes):
        for lo, _, inner in nodes:
            if inner:
                found.add(lo)
                walk(inner)
    walk(nodes)
    return frozenset(found)


def recomputed(nodes) -> list:
    """``(lo, last)`` per recomputed segment: its layers ``lo … last − 1`` run forward again (up
    to its furthest inner boundary; the layers after it are recomputed by the segments inside)."""
    found = []

    def walk(nodes):
        for lo, hi, inner in nodes:
            if inner:
                found.append((lo, max(a for a, _, _ in inner)))
                walk(inner)
    walk(nodes)
    return found
