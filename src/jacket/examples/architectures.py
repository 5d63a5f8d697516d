"""Named architectures beyond straight chains, for ``jacket plan --model``, ``jacket demo`` and the
benchmarks: a residual MLP, a transformer block, a small residual CNN.

Each builder returns a bound :class:`jacket.Chain` (one example in, no batch axis)::

    residual_mlp(784, 256, 3, 10)    (784,) -> Dense, Tanh -> 3 × Residual([Dense, Tanh, Dense]) -> (10,)
    transformer_block(16, 64, 4)     (16, 64) -> Residual([LayerNorm, MultiHeadSelfAttention])
                                              -> Residual([LayerNorm, Dense(d, 4d), GELU, Dense(4d, d)])
    cnn(16)                          (1, 8, 8) -> the residual CNN of :mod:`jacket.examples.cnn` -> (10,)

Building one imports no data set and runs no JAX computation.
"""
from __future__ import annotations

from .. import GELU, Chain, Dense, LayerNorm, MultiHeadSelfAttention, Residual, Tanh

__all__ = ["residual_mlp", "transformer_block", "cnn", "ARCHITECTURES", "build"]


def residual_mlp(in_features: int = 784, width: int = 256, blocks: int = 3, out_features: int = 10) -> Chain:
    """``Dense(in, width), Tanh`` then ``blocks`` × ``Residual([Dense(width, width), Tanh,
    Dense(width, width)])`` then ``Dense(width, out)``: ``(in_features,) -> (out_features,)``."""
    body = [Residual(Chain([Dense(width, width), Tanh(), Dense(width, width)])) for _ in range(blocks)]
    return Chain([Dense(in_features, width), Tanh(), *body, Dense(width, out_features)], in_shape=(in_features,))


def transformer_block(length: int = 16, d_model: int = 64, heads: int = 4, causal: bool = False) -> Chain:
    """One pre-norm transformer block on ``(length, d_model)``: attention and a 4×-wide GELU MLP,
    each inside a ``Residual`` with a ``LayerNorm`` in front. ``(T, d) -> (T, d)``."""
    d = d_model
    attention = Chain([LayerNorm(d), MultiHeadSelfAttention(d, heads, causal=causal)])
    feed_forward = Chain([LayerNorm(d), Dense(d, 4 * d), GELU(), Dense(4 * d, d)])
    return Chain([Residual(attention), Residual(feed_forward)], in_shape=(length, d))


def cnn(channels: int = 16) -> Chain:
    """The residual CNN that ``jacket train cnn`` trains: ``(1, 8, 8) -> (10,)``."""
    from .cnn import make_chain
    return make_chain(channels)


#: name -> (builder with its defaults, one line for help texts)
ARCHITECTURES = {
    "residual-mlp": (residual_mlp, "784 -> 256, 3 residual Dense-Tanh-Dense blocks, -> 10"),
    "transformer": (transformer_block, "one pre-norm block on (T=16, d=64), 4 heads"),
    "cnn": (cnn, "the residual CNN of `jacket train cnn` on (1, 8, 8) images"),
}


def build(name: str) -> Chain:
    """The architecture called ``name`` at its defaults; a clear error listing the names otherwise."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name][0]()
