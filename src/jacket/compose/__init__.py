"""Compositions of layers: Chain, the blocks (Residual, Parallel), the MLP builder, and the
engine's sweeps through a chain (the tape, forward and reverse accumulation, their second-order
forms, checkpointed reverse sweeps). Every composition is itself a layer."""
from ._blocks import Block, Parallel, Residual
from ._chain import Chain, missing_second_order, require_second_order
from ._checkpoint import forward_boundaries, pull_checkpointed
from ._mlp import mlp
from ._sweeps import pull, pull_tangents, push, record, record_tangents

__all__ = ["Chain", "Residual", "Parallel", "Block", "mlp", "record", "push", "pull", "record_tangents",
           "pull_tangents", "forward_boundaries", "pull_checkpointed", "missing_second_order",
           "require_second_order"]
