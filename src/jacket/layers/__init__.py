"""Built-in layers, one family per module: dense, activations (and the softmax family), normalisation.
A new family gets its own module here and a row in ``jacket/registry.py``."""
from ._activations import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from ._dense import Dense
from ._norm import LayerNorm
from ._reshape import Flatten, Reshape

__all__ = ["Dense", "Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax", "LogSoftmax", "LayerNorm", "Flatten", "Reshape"]
