"""Losses with hand-written rules with respect to the prediction.

Signatures (as for layers, with the target in place of params)::

    apply(pred, target)                        -> value   (a scalar)
    jvp(pred, target, value, pred_dot)         -> value_dot
    vjp(pred, target, value, value_bar=1.0)    -> pred_bar  (shape of pred)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_input, check_like
from ._layer import Layer

__all__ = ["Loss", "MeanSquaredError", "BinaryCrossEntropyWithLogits", "SoftmaxCrossEntropy"]


class Loss(Layer):
    """Base class for losses: a scalar function of a prediction and a target.

    Equality, hashing and repr are those of :class:`Layer` (static configuration only).
    ``jvp`` defaults to ``⟨vjp(1), pred_dot⟩``, which is exact for a scalar output.
    """

    def check(self, pred, target):
        """Raise a clear error if ``pred`` and ``target`` don't fit together."""
        check_input(pred, None, repr(self), "pred")
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


class MeanSquaredError(Loss):
    """``mean((pred - target)²)`` over all elements; gradient ``2 (pred - target) / size``."""

    def apply(self, pred, target):
        self.check(pred, target)
        r = pred - target
        return (r * r).mean()

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)  # a target that broadcasts against pred gives a wrong gradient
        return (2 * value_bar / pred.size) * (pred - target)


class BinaryCrossEntropyWithLogits(Loss):
    """``mean(softplus(z) - t z)`` over all elements for logits ``z`` and targets ``t`` in [0, 1]
    (stable form ``max(z, 0) - t z + log1p(e^{-|z|})``). Gradient ``(σ(z) - t) / size``:
    logistic regression's ``Xᵀ(p - y)/N`` once pulled back through a Dense layer."""

    def apply(self, pred, target):
        self.check(pred, target)
        z = pred
        return (jnp.maximum(z, 0) - target * z + jnp.log1p(jnp.exp(-jnp.abs(z)))).mean()

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)
        return (value_bar / pred.size) * (jax.nn.sigmoid(pred) - target)


class SoftmaxCrossEntropy(Loss):
    """``mean_b(logsumexp(z_b) - z_b[label_b])`` for logits ``(batch, classes)`` and integer labels
    ``(batch,)`` (or logits ``(classes,)`` and a scalar label). Gradient ``(softmax(z) - onehot)/batch``.
    Out-of-range labels cannot be checked under jit; they give a wrong value, so check data first."""

    def check(self, pred, target):
        check_input(pred, None, repr(self), "pred")
        target_shape = tuple(getattr(target, "shape", jnp.shape(target)))
        if target_shape != tuple(pred.shape[:-1]):
            raise ValueError(f"{self!r}: labels have shape {target_shape} but logits {tuple(pred.shape)} "
                             f"need labels of shape {tuple(pred.shape[:-1])}")
        dtype = getattr(target, "dtype", jnp.asarray(target).dtype)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(f"{self!r}: labels must be integer class indices, got dtype {dtype}")

    def _batch(self, pred):
        return 1 if pred.ndim == 1 else pred.shape[0]

    def apply(self, pred, target):
        self.check(pred, target)
        z = pred - jax.lax.stop_gradient(pred.max(axis=-1, keepdims=True))
        log_norm = jnp.log(jnp.exp(z).sum(axis=-1))
        picked = jnp.take_along_axis(z, jnp.asarray(target)[..., None], axis=-1)[..., 0]
        return (log_norm - picked).sum() / self._batch(pred)

    def vjp(self, pred, target, value, value_bar=1.0):
        self.check(pred, target)
        # softmax − onehot, written as a scatter-add of −1 at the labels: subtracting a one-hot
        # matrix instead made the whole jitted backward pass of an MLP about 15-20% slower on
        # CPU (benchmarks/README.md, "what the HLO showed"), with the same dots.
        s = jax.nn.softmax(pred, axis=-1).reshape(-1, pred.shape[-1])
        rows = jnp.arange(s.shape[0])
        grad = s.at[rows, jnp.asarray(target).reshape(-1)].add(-1.0).reshape(pred.shape)
        return (value_bar / self._batch(pred)) * grad
