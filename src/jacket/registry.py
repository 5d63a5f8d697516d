"""The one registry of built-in layers and losses: ``jacket check``, the tests, the MLP builder's
activation names and the README's layer list all read it. A new built-in gets a row here.

Layers are built by ``entry.build(in_features, out_features)``; layers that keep the width
(activations, normalisation) ignore ``out_features``. Every built-in acts on the last axis (or
elementwise), so it takes a vector ``(n,)`` and a sequence ``(T, n)`` alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .core import Layer
from .layers import GELU, Dense, LayerNorm, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from .losses import BinaryCrossEntropyWithLogits, MeanSquaredError, SoftmaxCrossEntropy

__all__ = ["LayerEntry", "LAYERS", "LOSSES", "ACTIVATIONS", "PARAMETER_FREE", "layer", "builtin_layers",
           "activation"]


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

#: name -> loss class
LOSSES = {"mse": MeanSquaredError, "bce_logits": BinaryCrossEntropyWithLogits, "softmax_ce": SoftmaxCrossEntropy}

#: activation name -> layer class (the elementwise built-ins)
ACTIVATIONS = {entry.name: type(entry.build(1, 1)) for entry in LAYERS if entry.family == "elementwise"}
#: every parameter-free built-in by name (activations, softmax, log-softmax): what mlp's final= takes
PARAMETER_FREE = {entry.name: type(entry.build(1, 1)) for entry in LAYERS
                  if entry.family != "dense" and type(entry.build(1, 1)).init is Layer.init}


def layer(name: str) -> LayerEntry:
    """The entry called ``name``; a clear error listing the names otherwise."""
    for entry in LAYERS:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown built-in layer {name!r}; choose from {', '.join(e.name for e in LAYERS)}")


def builtin_layers(width: int) -> list:
    """Every built-in layer at input width ``width`` (Dense layers widen by 2), for the checker."""
    return [entry.build(width, width + 2) for entry in LAYERS]


def activation(name_or_layer):
    """A parameter-free layer from a name (``"tanh"``, ``"softmax"``: ``PARAMETER_FREE``), a Layer
    class or instance; ``None`` stays ``None``."""
    if name_or_layer is None or isinstance(name_or_layer, Layer):
        return name_or_layer
    if isinstance(name_or_layer, str):
        if name_or_layer.lower() not in PARAMETER_FREE:
            raise ValueError(f"unknown activation {name_or_layer!r}; choose from {', '.join(PARAMETER_FREE)}")
        return PARAMETER_FREE[name_or_layer.lower()]()
    if isinstance(name_or_layer, type) and issubclass(name_or_layer, Layer):
        return name_or_layer()
    raise TypeError(f"activation must be a name ({', '.join(ACTIVATIONS)}), a jacket.Layer class or "
                    f"instance, or None; got {name_or_layer!r}")
