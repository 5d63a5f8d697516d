"""Built-in layers, one family per module: dense, activations (and the softmax family),
normalisation, reshaping glue, image layers (convolution, pooling), sequence layers (attention,
position embedding). A new family gets its own module here and a row in ``jacket/registry.py``."""
from ._activations import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from ._attention import MultiHeadSelfAttention
from ._conv import AvgPool2D, Conv1D, Conv2D, MaxPool2D
from ._dense import Dense
from ._embedding import PositionEmbedding
from ._norm import LayerNorm
from ._lookup import ACTIVATIONS, PARAMETER_FREE, activation
from ._reshape import Flatten, Reshape

__all__ = ["Dense", "Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax", "LogSoftmax", "LayerNorm", "Flatten", "Reshape",
           "Conv1D", "Conv2D", "AvgPool2D", "MaxPool2D", "MultiHeadSelfAttention", "PositionEmbedding",
           "ACTIVATIONS", "PARAMETER_FREE", "activation"]
