"""LayerNorm over the last axis (of a vector, or of every position of a sequence), with learned scale and offset."""
from __future__ import annotations

import jax.numpy as jnp

from ..core import Footprint, Layer, positive_int, size
from ..core._checks import check_last_axis, last_axis_shape
from ..operators import Structure, blocks_plus_low_rank

__all__ = ["LayerNorm"]


class LayerNorm(Layer):
    """``y = scale ⊙ x̂ + offset`` with ``x̂ = (x - mean(x)) / sqrt(var(x) + eps)`` over the last axis
    (biased variance). Params ``{"scale": (features,), "offset": (features,)}``.

    With ``r = 1/sqrt(var + eps)`` and ``n = features``, the Jacobian with respect to x is
    ``diag(scale·r) (I - 11ᵀ/n - x̂x̂ᵀ/n)``: diagonal plus rank two (notes/cost-model.md).
    """

    symbolic_zeros = True

    def __init__(self, features: int, eps: float = 1e-5):
        self.features = positive_int(features, "LayerNorm features")
        self.eps = float(eps)

    def __repr__(self):
        return f"LayerNorm({self.features})" if self.eps == 1e-5 else f"LayerNorm({self.features}, eps={self.eps})"

    def init(self, key):
        return {"scale": jnp.ones((self.features,), jnp.float32),
                "offset": jnp.zeros((self.features,), jnp.float32)}

    def input_shape(self):
        return (self.features,)

    def output_shape(self, in_shape):
        return last_axis_shape(self, in_shape, self.features)

    def _normalise(self, x):
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        r = 1 / jnp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.eps)
        return centred * r, r

    def apply(self, params, x):
        check_last_axis(x, self.features, repr(self))
        x_hat, _ = self._normalise(x)
        return params["scale"] * x_hat + params["offset"]

    def jvp(self, params, x, y, x_dot, params_dot=None):
        x_hat, r = self._normalise(x)
        y_dot = None
        if x_dot is not None:
            # x̂_dot = r (x_dot - mean(x_dot) - x̂ mean(x̂ x_dot))
            x_hat_dot = r * (x_dot - x_dot.mean(axis=-1, keepdims=True)
                             - x_hat * (x_hat * x_dot).mean(axis=-1, keepdims=True))
            y_dot = params["scale"] * x_hat_dot
        if params_dot is not None:
            from_params = params_dot["scale"] * x_hat + params_dot["offset"]
            y_dot = from_params if y_dot is None else y_dot + from_params
        return y_dot

    def vjp(self, params, x, y, y_bar):
        x_hat, r = self._normalise(x)
        n = self.features
        g = y_bar * params["scale"]
        x_bar = r * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
        params_bar = {"scale": (y_bar * x_hat).reshape(-1, n).sum(axis=0),
                      "offset": y_bar.reshape(-1, n).sum(axis=0)}
        return params_bar, x_bar

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Tangent of the VJP (shapes as ``vjp``), by the product rule on
        ``x_bar = r (g - mean(g) - x̂ mean(g x̂))``, ``g = ȳ ⊙ scale``, with
        ``ġ = ȳ̇ ⊙ scale + ȳ ⊙ scale_dot``, ``x̂_dot`` as in ``jvp`` and ``ṙ = -r² mean(x̂ ẋ)``
        (``r = (var + eps)^{-1/2}``, ``var_dot = 2 mean(x̂ ẋ) / r``); then
        ``scale_bar_dot = Σ (ȳ̇ x̂ + ȳ x̂_dot)``, ``offset_bar_dot = Σ ȳ̇``. Tangents may be ``None``."""
        n = self.features
        x_hat, r = self._normalise(x)

        def mean(a):
            return a.mean(axis=-1, keepdims=True)

        def total(a):  # summed over the leading axes, as the parameter cotangents
            return a.reshape(-1, n).sum(axis=0)
        g = y_bar * params["scale"]
        g_dot = None if y_bar_dot is None else y_bar_dot * params["scale"]
        if params_dot is not None:
            term = y_bar * params_dot["scale"]
            g_dot = term if g_dot is None else g_dot + term
        x_bar_dot = jnp.zeros_like(x)
        if g_dot is not None:  # the bracket's tangent through g alone
            x_bar_dot = r * (g_dot - mean(g_dot) - x_hat * mean(g_dot * x_hat))
        scale_bar_dot = jnp.zeros_like(params["scale"]) if y_bar_dot is None else total(y_bar_dot * x_hat)
        if x_dot is not None:
            m = mean(x_hat * x_dot)
            x_hat_dot = r * (x_dot - mean(x_dot) - x_hat * m)
            x_bar = r * (g - mean(g) - x_hat * mean(g * x_hat))
            # ṙ/r · x_bar, then the bracket's tangent through x̂
            x_bar_dot = x_bar_dot - r * m * x_bar \
                - r * (x_hat_dot * mean(g * x_hat) + x_hat * mean(g * x_hat_dot))
            scale_bar_dot = scale_bar_dot + total(y_bar * x_hat_dot)
        offset_bar_dot = jnp.zeros_like(params["offset"]) if y_bar_dot is None else total(y_bar_dot)
        return {"scale": scale_bar_dot, "offset": offset_bar_dot}, x_bar_dot

    def jacobian(self, params, x, y):
        n = self.features
        x_hat, r = self._normalise(x.reshape(-1, n))  # one row per position
        d = params["scale"] * r
        u = jnp.stack([-d / n, -d * x_hat / n], axis=2)
        v = jnp.stack([jnp.ones_like(x_hat), x_hat], axis=2)
        return blocks_plus_low_rank(d, u, v)

    def jvp_cost(self, in_shape):
        return 3 * size(in_shape)  # ⟨x̂, x_dot⟩, x̂ times it, then scale·r times the bracket

    def jacobian_structure(self, in_shape):
        n = size(in_shape)
        return Structure("dplr", n, n, 2, blocks=n // self.features)

    def jacobian_cost(self, in_shape):
        return 2 * size(in_shape)  # scale·r, and the two columns of U

    def footprint(self, in_shape):
        """A fusible loop over the last axis reading x (its statistics recomputed), one vector held."""
        n = size(in_shape)
        return Footprint(fusible=True, reads={"x"}, tangent=(0, n), adjoint=(0, n), unread_params=self.features)
