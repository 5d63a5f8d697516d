"""The loss protocol. Signatures (as for layers, with the target in place of params)::

    apply(pred, target)                        -> value      a scalar
    jvp(pred, target, value, pred_dot)         -> value_dot
    vjp(pred, target, value, value_bar=1.0)    -> pred_bar   shape and dtype of pred
    hvp(pred, target, pred_dot)                -> pred_bar_dot   H_loss · pred_dot, shape of pred

``hvp`` is the second-order rule: the tangent of ``vjp(pred, target, value, 1.0)`` when pred
moves along ``pred_dot`` (the target is held fixed). ``jacket.hvp`` and ``jacket.ggn_vp`` need it.
"""
from __future__ import annotations

import jax.numpy as jnp

from ..core._checks import check_array, check_like
from ..core._static import Static

__all__ = ["Loss", "check_nonempty"]


def check_nonempty(pred, loss):
    """A loss of no examples is no number (0 for a sum, NaN for a mean): a ValueError instead."""
    if 0 in tuple(pred.shape):
        raise ValueError(f"{loss!r}: pred has shape {tuple(pred.shape)}, with no entries: a loss needs at least "
                         f"one example (an empty batch?)")
    return pred


class Loss(Static):
    """Base class for losses: a scalar function of a prediction and a target.

    Equal and hashed by type and configuration (static values only), so a loss can be a static
    argument of ``jax.jit``. ``jvp`` defaults to ``⟨vjp(1), pred_dot⟩``, exact for a scalar output.

    ``mean_over_batch``: whether the value of a batch is the mean of the values of equal parts of
    it (every built-in: a mean over examples, positions or elements); then a gradient may be
    accumulated over chunks of the batch (``jacket.value_and_grad(…, memory_limit=)``).
    """

    mean_over_batch = False

    def check(self, pred, target):
        """Raise a clear error if ``pred`` and ``target`` don't fit together."""
        check_nonempty(check_array(pred, repr(self), "pred"), self)
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

    def hvp(self, pred, target, pred_dot):
        """``H · pred_dot`` (shape and dtype of pred), ``H`` the Hessian of ``apply`` in pred:
        the tangent of the gradient ``vjp(pred, target, value, 1.0)`` along ``pred_dot``.
        Default: none, a clear error (a loss without it still backpropagates)."""
        raise NotImplementedError(f"{self!r} has no second-order rule: define "
                                  f"{type(self).__name__}.hvp(pred, target, pred_dot) to use it with "
                                  f"jacket.hvp, jacket.ggn_vp or jacket.hessian")
