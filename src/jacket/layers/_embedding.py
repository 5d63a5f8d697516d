"""Learned position embedding: a table added to a sequence, ``y = x + P``."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core import Footprint, Layer, positive_int, size
from ..core._checks import check_array
from ..operators import Diagonal, Structure

__all__ = ["PositionEmbedding"]


class PositionEmbedding(Layer):
    """``y = x + P`` with a learned table ``P``: params ``{"table": (length, features)}``.

    x: ``(length, features)`` or a batch ``(B, length, features)``; y has the shape of x. The
    Jacobian with respect to x is the identity (a diagonal of ones), with respect to the table
    the identity too, so the table's cotangent is ``y_bar`` summed over the batch.
    """

    symbolic_zeros = True

    def __init__(self, length: int, features: int):
        self.length = positive_int(length, "PositionEmbedding length")
        self.features = positive_int(features, "PositionEmbedding features")

    def __repr__(self):
        return f"PositionEmbedding({self.length}, {self.features})"

    def init(self, key):
        # small, as usual for learned position tables, so they perturb rather than swamp the input
        return {"table": 0.02 * jax.random.normal(key, (self.length, self.features), jnp.float32)}

    def input_shape(self):
        return (self.length, self.features)

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if in_shape != (self.length, self.features):
            raise ValueError(f"{self!r} takes one example of shape ({self.length}, {self.features}), "
                             f"got shape {in_shape}")
        return in_shape

    def apply(self, params, x):
        x = check_array(x, repr(self))
        if x.ndim not in (2, 3) or tuple(x.shape[-2:]) != (self.length, self.features):
            raise ValueError(f"{self!r}: x has shape {tuple(x.shape)}, but must be ({self.length}, "
                             f"{self.features}) or (batch, {self.length}, {self.features})")
        return x + params["table"]

    def jvp(self, params, x, y, x_dot, params_dot=None):
        # linear in (x, P): y_dot = x_dot + P_dot (P_dot alone is broadcast over the batch)
        if params_dot is None:
            return x_dot
        if x_dot is None:
            return jnp.broadcast_to(params_dot["table"], y.shape)
        return x_dot + params_dot["table"]

    def vjp(self, params, x, y, y_bar):
        table_bar = y_bar.reshape((-1, self.length, self.features)).sum(axis=0)
        return {"table": table_bar}, y_bar

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Linear in (x, P): the VJP does not move with them, so ``(table_bar_dot, x_bar_dot) =
        vjp(ȳ̇)``: ``table_bar_dot`` (length, features) summed over the batch, ``x_bar_dot`` like x."""
        if y_bar_dot is None:
            return {"table": jnp.zeros_like(params["table"])}, jnp.zeros_like(x)
        return self.vjp(params, x, y, y_bar_dot)

    def jacobian(self, params, x, y):
        return Diagonal(jnp.ones((x.size,), y.dtype))

    # Costs are those of the declared Jacobian, a diagonal: one fma per entry to apply it to a
    # vector (as for an elementwise layer, and as product_fma charges a diagonal), one per entry
    # to write it. The rule itself multiplies nothing; charging n keeps the rule and the
    # materialised Jacobian on the same footing for the planner.
    def jvp_cost(self, in_shape):
        return size(self.output_shape(in_shape))

    def jacobian_structure(self, in_shape):
        n = size(self.output_shape(in_shape))
        return Structure("diagonal", n, n)

    def jacobian_cost(self, in_shape):
        return size(self.output_shape(in_shape))

    def footprint(self, in_shape):
        """An add: a fusible loop, linear in x, holding nothing."""
        return Footprint(fusible=True, reads=())
