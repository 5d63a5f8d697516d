"""Dense (affine) layer over the last axis: y = x @ w + b, with w of shape (in, out)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core import Footprint, Layer, positive_int, size
from ..core._checks import check_last_axis, last_axis_shape
from ..operators import Kronecker, Matrix, Structure

__all__ = ["Dense"]


def _flat(a, n):
    """Collapse the leading axes (batch, positions): (..., n) -> (rows, n)."""
    return a.reshape(-1, n)


class Dense(Layer):
    """``y = x @ w + b`` over the last axis. Params ``{"w": (in_features, out_features), "b": (out_features,)}``.

    x: ``(…, in_features)`` -> y: ``(…, out_features)``; a vector ``(in_features,)`` is the usual
    case, a sequence ``(T, in_features)`` applies the same map to every position. Jacobian with
    respect to one vector: ``wᵀ``, shape ``(out_features, in_features)``, free to materialise;
    for ``(T, in)``: ``I_T ⊗ wᵀ``, a :class:`~jacket.operators.Kronecker` holding w itself.
    """

    symbolic_zeros = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        self.in_features = positive_int(in_features, "Dense in_features")
        self.out_features = positive_int(out_features, "Dense out_features")
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

    def input_shape(self):
        return (self.in_features,)

    def output_shape(self, in_shape):
        return last_axis_shape(self, in_shape, self.in_features)[:-1] + (self.out_features,)

    def apply(self, params, x):
        check_last_axis(x, self.in_features, repr(self))
        y = x @ params["w"]
        return y + params["b"] if self.bias else y

    def jvp(self, params, x, y, x_dot, params_dot=None):
        # d(x w + b) = dx w + x dw + db  (x_dot or params_dot may be None: built-ins take symbolic zeros)
        y_dot = None if x_dot is None else x_dot @ params["w"]
        if params_dot is not None:
            y_dot = x @ params_dot["w"] if y_dot is None else y_dot + x @ params_dot["w"]
            if self.bias:
                y_dot = y_dot + params_dot["b"]
        return y_dot

    def vjp(self, params, x, y, y_bar):
        # w_bar = xᵀ y_bar summed over the leading axes (an outer product per row), b_bar = Σ y_bar,
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

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Tangent of the VJP. The VJP is bilinear, so by the product rule
        ``x_bar_dot = ȳ̇ wᵀ + ȳ ẇᵀ`` (shape of x), ``w_bar_dot = ẋᵀ ȳ + xᵀ ȳ̇`` (in, out) and
        ``b_bar_dot = Σ ȳ̇`` (out,), summed over the leading axes as ``vjp``. Any of ``x_dot``,
        ``params_dot``, ``y_bar_dot`` may be ``None`` (zero); ``y_dot`` is not needed."""
        n_in, n_out = self.in_features, self.out_features
        rows = (((0,), (0,)), ((), ()))  # contract the flattened leading axes: aᵀ b

        def times_transpose(a, m):  # a mᵀ over the last axis, as in vjp (no .T copy)
            return jax.lax.dot_general(a, m, (((a.ndim - 1,), (1,)), ((), ())))
        x_bar_dot, w_bar_dot = None, None
        if y_bar_dot is not None:
            x_bar_dot = times_transpose(y_bar_dot, params["w"])
            w_bar_dot = jax.lax.dot_general(_flat(x, n_in), _flat(y_bar_dot, n_out), rows)
        if params_dot is not None:
            term = times_transpose(y_bar, params_dot["w"])
            x_bar_dot = term if x_bar_dot is None else x_bar_dot + term
        if x_dot is not None:
            term = jax.lax.dot_general(_flat(x_dot, n_in), _flat(y_bar, n_out), rows)
            w_bar_dot = term if w_bar_dot is None else w_bar_dot + term
        params_bar_dot = {"w": jnp.zeros_like(params["w"]) if w_bar_dot is None else w_bar_dot}
        if self.bias:
            params_bar_dot["b"] = jnp.zeros_like(params["b"]) if y_bar_dot is None else \
                _flat(y_bar_dot, n_out).sum(axis=0)
        return params_bar_dot, jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot

    def jacobian(self, params, x, y):
        if x.ndim == 1:
            return Matrix.transpose_of(params["w"])
        return Kronecker(params["w"], x.size // self.in_features, transposed=True)

    def jvp_cost(self, in_shape):
        return size(in_shape[:-1]) * self.in_features * self.out_features

    def jacobian_structure(self, in_shape):
        positions = size(in_shape[:-1])
        return Structure("matrix", positions * self.out_features, positions * self.in_features, blocks=positions,
                         shared=True)

    def jacobian_cost(self, in_shape):
        return 0  # wᵀ is already there (I ⊗ wᵀ too: w held once)

    def footprint(self, in_shape):
        """Linear in x (the rules read w only), a product per vector and nothing more; its Jacobian
        is w, an argument; the bias is never read by the input-Jacobian rules."""
        return Footprint(reads=(), jacobian_is_argument=True, unread_params=self.out_features if self.bias else 0)
