"""Losses: scalar functions of a prediction and a target with hand-written rules (their own
protocol, not layers: a loss ends a computation, it is never a factor of a Chain)."""
from ._builtin import BinaryCrossEntropyWithLogits, MeanSquaredError, SoftmaxCrossEntropy
from ._loss import Loss

__all__ = ["Loss", "MeanSquaredError", "BinaryCrossEntropyWithLogits", "SoftmaxCrossEntropy"]
