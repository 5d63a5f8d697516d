"""Compositions of layers: Chain, the MLP builder, and backpropagation through a loss."""
from ._backprop import value_and_grad
from ._blocks import Block, Parallel, Residual
from ._chain import Chain
from ._mlp import mlp

__all__ = ["Chain", "Residual", "Parallel", "Block", "mlp", "value_and_grad"]
