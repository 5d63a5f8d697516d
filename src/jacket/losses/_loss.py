"""The loss protocol. Signatures (as for layers, with the target in place of params)::

    apply(pred, target)                        -> value      a scalar
    jvp(pred, target, value, pred_dot)         -> value_dot
    vjp(pred, target, value, value_bar=1.0)    -> pred_bar   shape and dtype of pred
"""
from __future__ import annotations

import jax.numpy as jnp

from ..core._checks import check_array, check_like
from ..core._static import Static

__all__ = ["Loss"]


class Loss(Static):
    """Base class for losses: a scalar function of a prediction and a target.

    Equal and hashed by type and configuration (static values only), so a loss can be a static
    argument of ``jax.jit``. ``jvp`` defaults to ``⟨vjp(1), pred_dot⟩``, exact for a scalar output.
    """

    def check(self, pred, target):
        """Raise a clear error if ``pred`` and ``target`` don't fit together."""
        check_array(pred, repr(self), "pred")
        check_like(target, pred, repr(self), "target", "pred")

    def apply(self, pred, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, pred, target, value, value_bar=1.0):  # pragma: no cover - abstract
        raise NotImplementedError

    def jvp(self, pred, target, value, pred_dot):
        # vdot flattens: without this check a pred_dot of another shape but the same size
        # would give a silently wrong answer.
        check_like(pred_dot, pred, repr(self), "pred_dot", "pred")
        return jnp.vdot(self.vjp(pred, target, value, 1.0), pred_dot)
