"""The one registry of built-in layers, blocks and losses: ``jacket check``, the tests, the MLP
builder's activation names and the README's layer list all read it. A new built-in gets a row here.

Two tables. ``LAYERS``: the width-generic layers, built by ``entry.build(in_features,
out_features)`` (layers that keep the width ignore ``out_features``); each acts on the last axis
(or elementwise), so it takes a vector ``(n,)`` and a sequence ``(T, n)`` alike. ``SHAPED``: the
layers and blocks that need an input of a particular rank or size (images, sequences, reshaping
glue, composites), each built by ``entry.build()`` at a small example shape ``entry.in_shape``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .compose import Chain, Parallel, Residual
from .layers import (ACTIVATIONS, PARAMETER_FREE, activation, GELU, AvgPool2D, Conv1D, Conv2D, Dense, Flatten, LayerNorm, LogSoftmax, MaxPool2D,
                     MultiHeadSelfAttention, PositionEmbedding, ReLU, Reshape, Sigmoid, Softmax, Softplus, Tanh)
from .losses import BinaryCrossEntropyWithLogits, MeanSquaredError, SoftmaxCrossEntropy

__all__ = ["LayerEntry", "ShapedEntry", "LAYERS", "SHAPED", "LOSSES", "ACTIVATIONS", "PARAMETER_FREE", "layer", "builtin_layers",
           "activation", "builtin_shaped"]


@dataclass(frozen=True)
class LayerEntry:
    """A built-in layer: ``name`` (test id, CLI name), ``build(in_features, out_features)``, and
    ``family``: ``"dense"``, ``"elementwise"`` (an activation) or ``"last-axis"``."""

    name: str
    build: Callable
    family: str

    @property
    def keeps_width(self) -> bool:
        return self.family != "dense"


LAYERS: tuple[LayerEntry, ...] = (
    LayerEntry("dense", lambda n, m: Dense(n, m), "dense"),
    LayerEntry("dense_nobias", lambda n, m: Dense(n, m, bias=False), "dense"),
    LayerEntry("tanh", lambda n, m: Tanh(), "elementwise"),
    LayerEntry("sigmoid", lambda n, m: Sigmoid(), "elementwise"),
    LayerEntry("relu", lambda n, m: ReLU(), "elementwise"),
    LayerEntry("softplus", lambda n, m: Softplus(), "elementwise"),
    LayerEntry("gelu", lambda n, m: GELU(), "elementwise"),
    LayerEntry("softmax", lambda n, m: Softmax(), "last-axis"),
    LayerEntry("logsoftmax", lambda n, m: LogSoftmax(), "last-axis"),
    LayerEntry("layernorm", lambda n, m: LayerNorm(n), "last-axis"),
)



@dataclass(frozen=True)
class ShapedEntry:
    """A built-in that needs a particular input: ``name``, ``build()`` (a new instance),
    ``in_shape`` (one example, no batch axis) and ``family``: ``"image"`` (channels first,
    ``(C, H, W)`` or ``(C, L)``), ``"sequence"`` (``(T, d_model)``), ``"glue"`` (reshaping) or
    ``"block"`` (a composite of other layers)."""

    name: str
    build: Callable
    in_shape: tuple
    family: str


def _branches():
    return [Dense(4, 3), Chain([Tanh(), Dense(4, 3)])]


SHAPED: tuple[ShapedEntry, ...] = (
    ShapedEntry("conv2d", lambda: Conv2D(2, 3, 3, stride=2), (2, 7, 6), "image"),
    ShapedEntry("conv2d_valid", lambda: Conv2D(1, 2, (2, 3), stride=(1, 2), padding="VALID"), (1, 6, 5), "image"),
    ShapedEntry("conv1d", lambda: Conv1D(2, 3, 4, stride=2), (2, 7), "image"),
    ShapedEntry("avgpool2d", lambda: AvgPool2D(3, stride=2), (2, 7, 6), "image"),
    ShapedEntry("maxpool2d", lambda: MaxPool2D(2), (2, 5, 6), "image"),
    ShapedEntry("attention", lambda: MultiHeadSelfAttention(8, 2), (5, 8), "sequence"),
    ShapedEntry("attention_causal", lambda: MultiHeadSelfAttention(8, 2, causal=True), (5, 8), "sequence"),
    ShapedEntry("position_embedding", lambda: PositionEmbedding(5, 8), (5, 8), "sequence"),
    ShapedEntry("flatten", lambda: Flatten(), (2, 3, 2), "glue"),
    ShapedEntry("reshape", lambda: Reshape((3, 4)), (2, 3, 2), "glue"),
    ShapedEntry("chain", lambda: Chain([Dense(4, 5), Chain([Tanh(), Dense(5, 3)])]), (4,), "block"),
    ShapedEntry("residual", lambda: Residual(Chain([LayerNorm(4), Dense(4, 6), GELU(), Dense(6, 4)])), (4,), "block"),
    ShapedEntry("parallel_sum", lambda: Parallel(_branches()), (4,), "block"),
    ShapedEntry("parallel_concat", lambda: Parallel(_branches(), merge="concat"), (4,), "block"),
)

#: name -> loss class
LOSSES = {"mse": MeanSquaredError, "bce_logits": BinaryCrossEntropyWithLogits, "softmax_ce": SoftmaxCrossEntropy}

def layer(name: str):
    """The entry called ``name`` (in ``LAYERS`` or ``SHAPED``); a clear error listing the names otherwise."""
    for entry in LAYERS + SHAPED:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown built-in layer {name!r}; choose from {', '.join(e.name for e in LAYERS + SHAPED)}")


def builtin_layers(width: int) -> list:
    """Every built-in layer at input width ``width`` (Dense layers widen by 2), for the checker."""
    return [entry.build(width, width + 2) for entry in LAYERS]


def builtin_shaped() -> list:
    """Every ``SHAPED`` built-in as ``(layer, in_shape)``, for the checker."""
    return [(entry.build(), entry.in_shape) for entry in SHAPED]
