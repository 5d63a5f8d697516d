"""Parameter-free built-ins by name: what ``jacket.mlp(activation=…, final=…)`` and the CLI take."""
from __future__ import annotations

from ..core import Layer
from ._activations import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh

__all__ = ["ACTIVATIONS", "PARAMETER_FREE", "activation"]

#: activation name -> layer class (the elementwise built-ins)
ACTIVATIONS = {"tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU, "softplus": Softplus, "gelu": GELU}
#: every parameter-free built-in by name (activations, softmax, log-softmax): what mlp's final= takes
PARAMETER_FREE = {**ACTIVATIONS, "softmax": Softmax, "logsoftmax": LogSoftmax}


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
    raise TypeError(f"activation must be a name ({', '.join(PARAMETER_FREE)}), a jacket.Layer class or "
                    f"instance, or None; got {name_or_layer!r}")
