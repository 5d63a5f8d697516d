"""Random trees of nested blocks (Residual, Parallel, Chain) over width-keeping layers, shared by
the block, checkpoint and parameter-Jacobian tests."""
from __future__ import annotations

from hypothesis import strategies as st

import jacket

D = 3  # the width inside blocks: small, so every check compiles fast


def leaf(kind):
    return {"dense": lambda: jacket.Dense(D, D), "tanh": jacket.Tanh, "softmax": jacket.Softmax,
            "layernorm": lambda: jacket.LayerNorm(D), "gelu": jacket.GELU}[kind]()


LEAVES = ["dense", "tanh", "softmax", "layernorm", "gelu"]


def trees(depth):
    """Width-keeping layers and blocks nested up to ``depth`` levels."""
    layer = st.sampled_from(LEAVES).map(leaf)
    if depth == 0:
        return layer
    inner = st.lists(trees(depth - 1), min_size=1, max_size=2)
    return st.one_of(
        layer,
        inner.map(jacket.Residual),
        inner.map(jacket.Chain),
        st.tuples(st.lists(inner, min_size=2, max_size=2), st.sampled_from(["sum", "concat"])).map(
            lambda t: jacket.Parallel(t[0], merge=t[1]) if t[1] == "sum" else
            jacket.Chain([jacket.Parallel(t[0], merge="concat"), jacket.Dense(2 * D, D)])),
    )
