"""Parameter-free layers: elementwise activations (any shape) and the softmax family (over the last axis)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from ..core import Elementwise, Footprint, Layer, size
from ..operators import Structure, blocks_plus_low_rank

__all__ = ["Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax", "LogSoftmax"]


class Tanh(Elementwise):
    """``y = tanh(x)``; ``f'(x) = 1 - y²``, ``f''(x) = -2y (1 - y²)`` (reuse the output)."""

    def apply(self, params, x):
        return jnp.tanh(x)

    def derivative(self, x, y):
        return 1 - y * y

    def second_derivative(self, x, y):
        return -2 * y * (1 - y * y)  # d(1 - y²) = -2y ẏ, ẏ = (1 - y²) ẋ


class Sigmoid(Elementwise):
    """``y = σ(x) = 1 / (1 + e^{-x})``; ``f'(x) = y (1 - y)``, ``f''(x) = y (1 - y)(1 - 2y)`` (reuse the output)."""

    def apply(self, params, x):
        return jax.nn.sigmoid(x)

    def derivative(self, x, y):
        return y * (1 - y)

    def second_derivative(self, x, y):
        return y * (1 - y) * (1 - 2 * y)  # d(y - y²) = (1 - 2y) ẏ


class ReLU(Elementwise):
    """``y = max(x, 0)``; ``f'(x) = 1[x > 0]`` (0 at x = 0, as in JAX); ``f''(x) = 0`` (almost everywhere)."""

    def apply(self, params, x):
        # jax.nn.relu, not jnp.maximum(x, 0): JAX differentiates maximum as 1/2 at the tie, so
        # JAX's derivative of apply would disagree with this rule at exactly x = 0.
        return jax.nn.relu(x)

    def derivative(self, x, y):
        return (x > 0).astype(y.dtype)

    def second_derivative(self, x, y):
        return jnp.zeros_like(y)


class Softplus(Elementwise):
    """``y = log(1 + eˣ)``, computed stably as ``max(x, 0) + log1p(e^{-|x|})``; ``f'(x) = σ(x)``,
    ``f''(x) = σ(x) (1 - σ(x))``."""

    def apply(self, params, x):
        return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))

    def derivative(self, x, y):
        return jax.nn.sigmoid(x)

    def second_derivative(self, x, y):
        s = jax.nn.sigmoid(x)
        return s * (1 - s)


class GELU(Elementwise):
    """Exact GELU ``y = x Φ(x)``, Φ the standard normal CDF (erf form); ``f'(x) = Φ(x) + x φ(x)``,
    ``f''(x) = φ(x) (2 - x²)`` (φ' = -x φ)."""

    def apply(self, params, x):
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    def derivative(self, x, y):
        cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
        pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return cdf + x * pdf

    def second_derivative(self, x, y):
        # d(Φ + x φ) = φ + φ + x φ' = φ (2 - x²)
        pdf = jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return pdf * (2 - x * x)


class _LastAxisLowRank(Layer):
    """Shared shapes and cost declaration of the softmax family, over the last axis of any shape:
    the Jacobian is diagonal plus rank one per position (block diagonal, one block per position,
    for a ``(T, n)`` input)."""

    symbolic_zeros = True

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def jvp_cost(self, in_shape):
        return 2 * size(in_shape)  # one dot product with s, one elementwise product

    def jacobian_structure(self, in_shape):
        n = size(in_shape)
        return Structure("dplr", n, n, 1, blocks=n // in_shape[-1])

    def jacobian_cost(self, in_shape):
        return size(in_shape)  # the vectors U and V are s (or ones), one entry each

    def footprint(self, in_shape):
        """A fusible loop over the last axis reading the output s, holding one vector for all seeds."""
        n = size(in_shape)
        return Footprint(fusible=True, reads={"y"}, tangent=(0, n), adjoint=(0, n))


class Softmax(_LastAxisLowRank):
    """``y = s = softmax(x)`` over the last axis (max-shifted). Jacobian ``diag(s) - s sᵀ``:
    ``y_dot = s ⊙ (x_dot - ⟨s, x_dot⟩)``, and the same form for the VJP (it is symmetric)."""

    def apply(self, params, x):
        z = x - jax.lax.stop_gradient(x.max(axis=-1, keepdims=True))
        e = jnp.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return y * (x_dot - (y * x_dot).sum(axis=-1, keepdims=True))

    def vjp(self, params, x, y, y_bar):
        return {}, y * (y_bar - (y * y_bar).sum(axis=-1, keepdims=True))

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Tangent of ``x_bar = s ⊙ (ȳ - ⟨s, ȳ⟩)`` (shape of x), by the product rule with
        ``ṡ = y_dot``: ``ṡ ⊙ (ȳ - ⟨s, ȳ⟩) + s ⊙ (ȳ̇ - ⟨ṡ, ȳ⟩ - ⟨s, ȳ̇⟩)``; ``params_bar_dot = {}``."""
        if y_dot is None and x_dot is not None:
            y_dot = self.jvp(params, x, y, x_dot)
        x_bar_dot = jnp.zeros_like(x)
        if y_dot is not None:
            x_bar_dot = y_dot * (y_bar - (y * y_bar).sum(axis=-1, keepdims=True)) \
                - y * (y_dot * y_bar).sum(axis=-1, keepdims=True)
        if y_bar_dot is not None:
            x_bar_dot = x_bar_dot + self.vjp(params, x, y, y_bar_dot)[1]  # linear in ȳ
        return {}, x_bar_dot

    def jacobian(self, params, x, y):
        s = y.reshape(-1, y.shape[-1])
        return blocks_plus_low_rank(s, -s[:, :, None], s[:, :, None])


class LogSoftmax(_LastAxisLowRank):
    """``y = x - logsumexp(x)`` over the last axis (stable). With ``s = exp(y)``, the Jacobian is
    ``I - 1 sᵀ``: ``y_dot = x_dot - ⟨s, x_dot⟩``, ``x_bar = y_bar - s Σ y_bar``."""

    def apply(self, params, x):
        z = x - jax.lax.stop_gradient(x.max(axis=-1, keepdims=True))
        return z - jnp.log(jnp.exp(z).sum(axis=-1, keepdims=True))

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return x_dot - (jnp.exp(y) * x_dot).sum(axis=-1, keepdims=True)

    def vjp(self, params, x, y, y_bar):
        return {}, y_bar - jnp.exp(y) * y_bar.sum(axis=-1, keepdims=True)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Tangent of ``x_bar = ȳ - s Σȳ`` (shape of x), with ``s = exp(y)``, ``ṡ = s ⊙ y_dot``:
        ``x_bar_dot = ȳ̇ - s Σȳ̇ - ṡ Σȳ``; ``params_bar_dot = {}``."""
        if y_dot is None and x_dot is not None:
            y_dot = self.jvp(params, x, y, x_dot)
        x_bar_dot = jnp.zeros_like(x)
        if y_dot is not None:
            x_bar_dot = -jnp.exp(y) * y_dot * y_bar.sum(axis=-1, keepdims=True)
        if y_bar_dot is not None:
            x_bar_dot = x_bar_dot + self.vjp(params, x, y, y_bar_dot)[1]  # linear in ȳ
        return {}, x_bar_dot

    def jacobian(self, params, x, y):
        s = jnp.exp(y).reshape(-1, y.shape[-1])
        ones = jnp.ones_like(s)
        return blocks_plus_low_rank(ones, -ones[:, :, None], s[:, :, None])
