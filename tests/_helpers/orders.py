"""Order generators shared by the planner, executor and block tests: all full bracketings of
``J_hi ⋯ J_lo`` (Catalan many), and random orders over the whole move set (JAC, TAN/ADJ from
unit vectors or from a seed, products)."""
from __future__ import annotations

from math import comb

import jacket


def bracketings(lo, hi):
    """Every full bracketing of ``J_hi ⋯ J_lo`` as a tree: an int (a factor) or a pair
    ``(left, right)`` of trees, left covering the later factors."""
    if lo == hi:
        yield lo
        return
    for k in range(lo, hi):
        for right in bracketings(lo, k):
            for left in bracketings(k + 1, hi):
                yield (left, right)


def tree_string(tree) -> str:
    """``(J3 (J2 J1))`` for the tree ``(3, (2, 1))``."""
    if isinstance(tree, int):
        return f"J{tree}"
    return f"({tree_string(tree[0])} {tree_string(tree[1])})"


def catalan(m):
    return comb(2 * m, m) // (m + 1)


def factor_run(rng, lo, hi) -> str:
    """The factors lo..hi in either spelling the grammar accepts: ``J4..J2`` or ``J4 J3 J2``."""
    if lo == hi or rng.random() < 0.5:
        return f"J{hi}..J{lo}" if lo < hi else f"J{lo}"
    return " ".join(f"J{i}" for i in range(hi, lo - 1, -1))


def random_order(rng, lo, hi) -> str:
    """A random order for ``J_hi ⋯ J_lo`` drawn from the whole move set: materialise a factor,
    tangents or adjoints from unit vectors, a product of two sub-orders, or a sub-order pushed
    forward (tan with a seed) or pulled back (adj with a seed) through the neighbouring factors."""
    moves = ["tan", "adj"] + (["jac"] if lo == hi else ["mul", "mul", "push", "pull"])
    move = rng.choice(moves)
    if move == "jac":
        return f"J{lo}"
    if move == "tan":
        return f"tan({factor_run(rng, lo, hi)})"
    if move == "adj":
        return f"adj({factor_run(rng, lo, hi)})"
    k = rng.randrange(lo, hi)  # right part lo..k, left part k+1..hi
    if move == "mul":
        return f"({random_order(rng, k + 1, hi)} {random_order(rng, lo, k)})"
    if move == "push":
        return f"tan({factor_run(rng, k + 1, hi)} | {random_order(rng, lo, k)})"
    return f"adj({random_order(rng, k + 1, hi)} | {factor_run(rng, lo, k)})"


def dense_chain(dims):
    return jacket.Chain([jacket.Dense(a, b) for a, b in zip(dims[:-1], dims[1:])])
