"""Dense (affine) layer: y = x @ w + b, with w of shape (in, out)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_input
from ._layer import Layer
from .operators import Matrix, Structure

__all__ = ["Dense"]


def _flat(a, n):
    """Collapse the batch axes: (..., n) -> (batch, n)."""
    return a.reshape(-1, n)


class Dense(Layer):
    """``y = x @ w + b``. Params ``{"w": (in_features, out_features), "b": (out_features,)}``.

    x: ``(in_features,)`` or ``(batch, in_features)`` -> y: ``(out_features,)`` or ``(batch, out_features)``.
    Jacobian with respect to x: ``wᵀ``, shape ``(out_features, in_features)``, free to materialise.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(f"Dense sizes must be positive, got ({in_features}, {out_features})")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{extra})"

    def init(self, key):
        # LeCun-normal weights: variance 1/in, so tanh chains neither saturate nor vanish.
        w = jax.random.normal(key, (self.in_features, self.out_features), jnp.float32)
        params = {"w": w / jnp.sqrt(jnp.float32(self.in_features))}
        if self.bias:
            params["b"] = jnp.zeros((self.out_features,), jnp.float32)
        return params

    def required_in_dim(self):
        return self.in_features

    def out_dim(self, in_dim):
        if in_dim != self.in_features:
            raise ValueError(f"{self!r} takes inputs of width {self.in_features}, got width {in_dim}")
        return self.out_features

    def apply(self, params, x):
        check_input(x, self.in_features, repr(self))
        y = x @ params["w"]
        return y + params["b"] if self.bias else y

    def jvp(self, params, x, y, x_dot, params_dot=None):
        # d(x w + b) = dx w + x dw + db
        y_dot = jnp.zeros_like(y) if x_dot is None else x_dot @ params["w"]
        if params_dot is not None:
            y_dot = y_dot + x @ params_dot["w"]
            if self.bias:
                y_dot = y_dot + params_dot["b"]
        return y_dot

    def vjp(self, params, x, y, y_bar):
        # w_bar = xᵀ y_bar summed over the batch (an outer product per example), b_bar = Σ y_bar,
        # x_bar = y_bar wᵀ. See notes/backprop.md, "the weight gradient".
        # Both products are written as dot_general contractions of the arrays as stored: spelling
        # them with `.T` made XLA on CPU copy the transposed weight and fall back to a slow loop
        # (benchmarks/README.md, "what the HLO showed").
        n_in, n_out = self.in_features, self.out_features
        w = params["w"]
        params_bar = {"w": jax.lax.dot_general(_flat(x, n_in), _flat(y_bar, n_out), (((0,), (0,)), ((), ())))}
        if self.bias:
            params_bar["b"] = _flat(y_bar, n_out).sum(axis=0)
        x_bar = jax.lax.dot_general(y_bar, w, (((y_bar.ndim - 1,), (1,)), ((), ())))
        return params_bar, x_bar

    def jacobian(self, params, x, y):
        return Matrix.transpose_of(params["w"])

    def jvp_cost(self, in_dim):
        return self.in_features * self.out_features

    def jacobian_structure(self, in_dim):
        return Structure("matrix", self.out_features, self.in_features)

    def jacobian_cost(self, in_dim):
        return 0  # wᵀ is already there
