"""Counts every part of the engine asks of a layer, written once: its parameter entries."""
from __future__ import annotations

from functools import lru_cache

import jax

from ._shapes import size

__all__ = ["param_count"]


@lru_cache(maxsize=4096)
def param_count(layer, in_shape=None) -> int:
    """Entries in the params of ``layer`` (bound to ``in_shape`` when given), from its abstract
    ``init`` (``jax.eval_shape``: no array is made)."""
    if in_shape is not None:
        layer = layer.bind(tuple(in_shape))
    try:
        tree = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - an init JAX cannot trace (numpy on the key): run it once
        tree = layer.init(jax.random.PRNGKey(0))
    return int(sum(size(getattr(leaf, "shape", ())) for leaf in jax.tree_util.tree_leaves(tree)))
