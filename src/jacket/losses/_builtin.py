"""The built-in losses, with hand-written rules with respect to the prediction (``_loss.py``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

import numpy as np

from ..core._checks import check_array, check_like
from ._loss import Loss, check_nonempty

__all__ = ["MeanSquaredError", "BinaryCrossEntropyWithLogits", "SoftmaxCrossEntropy"]


class MeanSquaredError(Loss):
    """``mean((pred - target)²)`` over all elements; gradient ``2 (pred - target) / size``."""

    mean_over_batch = True

    def apply(self, pred, target):
        self.check(pred, target)
        r = pred - target
        return (r * r).mean()

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)  # a target that broadcasts against pred gives a wrong gradient
        return (2 * value_bar / pred.size) * (pred - target)

    def hvp(self, pred, target, pred_dot):
        """``H = 2 I / size``: ``2 pred_dot / size``."""
        self.check(pred, target)
        check_like(pred_dot, pred, repr(self), "pred_dot", "pred")
        return ((2 / pred.size) * pred_dot).astype(pred.dtype)


class BinaryCrossEntropyWithLogits(Loss):
    """``mean(softplus(z) - t z)`` over all elements for logits ``z`` and targets ``t`` in [0, 1]
    (stable form ``max(z, 0) - t z + log1p(e^{-|z|})``). Gradient ``(σ(z) - t) / size``:
    logistic regression's ``Xᵀ(p - y)/N`` once pulled back through a Dense layer."""

    mean_over_batch = True

    def apply(self, pred, target):
        self.check(pred, target)
        z = pred
        return (jnp.maximum(z, 0) - target * z + jnp.log1p(jnp.exp(-jnp.abs(z)))).mean()

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)
        return (value_bar / pred.size) * (jax.nn.sigmoid(pred) - target)

    def hvp(self, pred, target, pred_dot):
        """``H = diag(σ(z)(1 - σ(z))) / size`` (independent of the target)."""
        self.check(pred, target)
        check_like(pred_dot, pred, repr(self), "pred_dot", "pred")
        s = jax.nn.sigmoid(pred)
        return ((s * (1 - s) / pred.size) * pred_dot).astype(pred.dtype)


class SoftmaxCrossEntropy(Loss):
    """``mean_b(logsumexp(z_b) - z_b[label_b])`` over every position b of logits ``(…, classes)``
    with integer labels ``(…)``: ``(batch, classes)`` with ``(batch,)``, ``(classes,)`` with a
    scalar, ``(batch, T, classes)`` with ``(batch, T)``. Gradient ``(softmax(z) - onehot) / positions``.

    Labels outside ``[0, classes)`` raise a ValueError when they are concrete (eager calls, and
    ``jacket.per_example_grads`` checks the whole batch before its ``vmap``). Under ``jax.jit`` they
    cannot be checked: the value is then NaN (the picked logit is read as NaN) and so is the
    gradient of every position with such a label, never a plausible number.
    """

    mean_over_batch = True

    def check(self, pred, target):
        check_nonempty(check_array(pred, repr(self), "pred"), self)
        if pred.ndim < 1:
            raise ValueError(f"{self!r}: logits must have a classes axis, got shape {tuple(pred.shape)}")
        target_shape = tuple(getattr(target, "shape", jnp.shape(target)))
        if target_shape != tuple(pred.shape[:-1]):
            raise ValueError(f"{self!r}: labels have shape {target_shape} but logits {tuple(pred.shape)} "
                             f"need labels of shape {tuple(pred.shape[:-1])}")
        dtype = getattr(target, "dtype", jnp.asarray(target).dtype)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(f"{self!r}: labels must be integer class indices, got dtype {dtype}")
        try:
            labels = np.asarray(target)  # a tracer (under jit) cannot be read: nothing to check
        except Exception:  # noqa: BLE001 - jax raises its own TracerArrayConversionError
            return
        classes = pred.shape[-1]
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            bad = labels[(labels < 0) | (labels >= classes)]
            raise ValueError(f"{self!r}: labels must lie in [0, {classes}) for {classes} classes, got "
                             f"{bad.size} outside it (for example {int(bad.flat[0])})")

    def _positions(self, pred):
        return max(pred.size // pred.shape[-1], 1)

    def apply(self, pred, target):
        self.check(pred, target)
        z = pred - jax.lax.stop_gradient(pred.max(axis=-1, keepdims=True))
        log_norm = jnp.log(jnp.exp(z).sum(axis=-1))
        picked = jnp.take_along_axis(z, jnp.asarray(target)[..., None], axis=-1, mode="fill",
                                     fill_value=jnp.nan)[..., 0]
        return (log_norm - picked).sum() / self._positions(pred)

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)
        # softmax − onehot, written as a scatter-add of −1 at the labels: subtracting a one-hot
        # matrix instead made the whole jitted backward pass of an MLP about 15-20% slower on
        # CPU (benchmarks/README.md, "what the HLO showed"), with the same dots.
        classes = pred.shape[-1]
        s = jax.nn.softmax(pred, axis=-1).reshape(-1, classes)
        rows, labels = jnp.arange(s.shape[0]), jnp.asarray(target).reshape(-1)
        grad = s.at[rows, labels].add(-1.0)
        # a label outside [0, classes) (only possible under jit, see check): NaN, as the value
        grad = jnp.where(((labels >= 0) & (labels < classes))[:, None], grad, jnp.nan).reshape(pred.shape)
        return (value_bar / self._positions(pred)) * grad

    def hvp(self, pred, target, pred_dot):
        """Per position ``(diag(p) - p pᵀ) ż / positions`` with ``p = softmax(z)``, i.e.
        ``p ⊙ (ż - ⟨p, ż⟩) / positions`` (independent of the labels)."""
        self.check(pred, target)
        check_like(pred_dot, pred, repr(self), "pred_dot", "pred")
        p = jax.nn.softmax(pred, axis=-1)
        centred = pred_dot - (p * pred_dot).sum(axis=-1, keepdims=True)
        return (p * centred / self._positions(pred)).astype(pred.dtype)
