"""jacket: Jacobian products of composed functions, with hand-written JVP/VJP rules.

A network is a chain f_N ∘ … ∘ f_1; its Jacobian is the product J_N ⋯ J_1, and the order of
multiplication decides the cost. jacket composes each layer's own rules into forward and
reverse accumulation, any bracketing, and an optimal mixed-mode plan.

Layout: ``core`` (layer protocol, shapes, tangent conventions, checks), ``layers`` (built-in
layers), ``losses``, ``compose`` (Chain, mlp, backprop), ``operators`` (structured Jacobians and
their product rule), ``planning`` (plan nodes, cost model, orders, the DP), ``execute``
(executor, sharding), ``testing`` (the rule checker), ``interop`` (export to JAX), ``registry``
(the built-ins by name), ``cli`` (the ``jacket`` command).
"""
from . import operators, registry, testing
from .compose import (Chain, Parallel, Residual, ggn_vp, hessian, hvp, mlp, ntk, per_example_grads,
                      value_and_grad)
from .core import Elementwise, Layer
from .execute import data_parallel, make_mesh, sharding
from .interop import to_jax
from .layers import (GELU, AvgPool2D, Conv1D, Conv2D, Dense, Flatten, LayerNorm, LogSoftmax, MaxPool2D,
                     MultiHeadSelfAttention, PositionEmbedding, ReLU, Reshape, Sigmoid, Softmax, Softplus, Tanh)
from .losses import BinaryCrossEntropyWithLogits, Loss, MeanSquaredError, SoftmaxCrossEntropy
from .planning import Plan

__version__ = "0.2.0"

__all__ = [
    "Layer", "Elementwise", "Dense", "Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax",
    "LogSoftmax", "LayerNorm", "Loss", "MeanSquaredError", "BinaryCrossEntropyWithLogits",
    "SoftmaxCrossEntropy", "Flatten", "Reshape", "Conv1D", "Conv2D", "AvgPool2D", "MaxPool2D",
    "MultiHeadSelfAttention", "PositionEmbedding", "Chain", "Residual", "Parallel", "mlp", "value_and_grad", "per_example_grads", "ntk", "hvp", "ggn_vp", "hessian", "Plan", "operators", "sharding",
    "make_mesh", "data_parallel", "to_jax", "testing", "registry",
]
