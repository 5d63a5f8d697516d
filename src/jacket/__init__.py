"""jacket: Jacobian products of composed functions, with hand-written JVP/VJP rules.

A network is a chain f_N ∘ … ∘ f_1; its Jacobian is the product J_N ⋯ J_1, and the order of
multiplication decides the cost. jacket composes each layer's own rules into forward and
reverse accumulation, any bracketing, and an optimal mixed-mode plan.
"""
from ._activations import GELU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh
from ._chain import Chain, value_and_grad
from ._dense import Dense
from ._layer import Elementwise, Layer
from ._losses import BinaryCrossEntropyWithLogits, Loss, MeanSquaredError, SoftmaxCrossEntropy
from ._norm import LayerNorm
from .interop import to_jax
from .planner import Plan
from . import operators, sharding, testing

__version__ = "0.1.0"

__all__ = [
    "Layer", "Elementwise", "Dense", "Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax",
    "LogSoftmax", "LayerNorm", "Loss", "MeanSquaredError", "BinaryCrossEntropyWithLogits",
    "SoftmaxCrossEntropy", "Chain", "value_and_grad", "Plan", "operators", "sharding",
    "to_jax", "testing",
]
