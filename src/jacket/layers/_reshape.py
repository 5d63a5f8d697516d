"""Shape glue: Flatten and Reshape. Their Jacobian is the identity on the flattened values
(row-major order is kept), so they cost nothing and leave every plan unchanged."""
from __future__ import annotations

import jax.numpy as jnp

from ..core import Footprint, Layer, as_shape, size
from ..core._shapes import split_batch
from ..operators import Diagonal, Structure

__all__ = ["Flatten", "Reshape"]


class Reshape(Layer):
    """``Reshape(shape)``: one example of ``in_shape`` to ``shape`` (same size, row-major), a batch
    axis kept. Inside a Chain it learns ``in_shape`` from the layer before (``bind``); on its own,
    pass ``in_shape=``. ``Flatten()`` is ``Reshape((size,))``."""

    symbolic_zeros = True

    def __init__(self, shape, in_shape=None):
        self.shape = as_shape(shape, "Reshape shape")
        self.in_shape = None if in_shape is None else as_shape(in_shape, "Reshape in_shape")
        if self.in_shape is not None and size(self.in_shape) != size(self.shape):
            raise ValueError(f"{self!r}: cannot reshape {self.in_shape} ({size(self.in_shape)} values) to "
                             f"{self.shape} ({size(self.shape)} values)")

    def __repr__(self):
        return f"Reshape({self.shape})" if self.in_shape is None else f"Reshape({self.shape}, in_shape={self.in_shape})"

    def input_shape(self):
        return self.in_shape

    def bind(self, in_shape):
        in_shape = tuple(in_shape)
        if self.in_shape == in_shape:
            return self
        if self.in_shape is not None:
            raise ValueError(f"{self!r} takes inputs of shape {self.in_shape}, got {in_shape}")
        return type(self)._bound(self, in_shape)

    def _bound(self, in_shape):
        return Reshape(self.shape, in_shape)

    def output_shape(self, in_shape):
        if size(in_shape) != size(self.shape):
            raise ValueError(f"{self!r}: cannot reshape {tuple(in_shape)} ({size(in_shape)} values) to "
                             f"{self.shape} ({size(self.shape)} values)")
        return self.shape

    def _batch(self, x):
        if self.in_shape is None:
            raise ValueError(f"{self!r} does not know its input shape: use it inside a Chain, or pass in_shape=")
        return split_batch(x.shape, self.in_shape, repr(self))

    def apply(self, params, x):
        return x.reshape(self._batch(x) + self.output_shape(self.in_shape))

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return x_dot.reshape(y.shape)

    def vjp(self, params, x, y, y_bar):
        return {}, y_bar.reshape(x.shape)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        """Linear in x: the VJP does not move with x, so ``x_bar_dot = vjp(ȳ̇)`` (shape of x)."""
        return {}, jnp.zeros_like(x) if y_bar_dot is None else y_bar_dot.reshape(x.shape)

    def jacobian(self, params, x, y):
        return Diagonal(jnp.ones((x.size,), x.dtype))

    def jvp_cost(self, in_shape):
        return 0  # a reshape moves no data in XLA

    def jacobian_structure(self, in_shape):
        n = size(in_shape)
        return Structure("diagonal", n, n)

    def jacobian_cost(self, in_shape):
        return 0

    def footprint(self, in_shape):
        """A view of its input: no buffer, nothing read."""
        return Footprint(reads=(), view=True)


class Flatten(Reshape):
    """``Flatten()``: one example of any shape to a vector ``(size,)``, a batch axis kept (as
    ``Reshape((size,))``, the size found when the Chain binds it)."""

    def __init__(self, in_shape=None):
        self.in_shape = None if in_shape is None else as_shape(in_shape, "Flatten in_shape")
        self.shape = None if self.in_shape is None else (size(self.in_shape),)

    def __repr__(self):
        return "Flatten()" if self.in_shape is None else f"Flatten(in_shape={self.in_shape})"

    def _bound(self, in_shape):
        return Flatten(in_shape)

    def output_shape(self, in_shape):
        return (size(in_shape),)
