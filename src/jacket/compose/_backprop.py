"""Backpropagation: a loss at the end of a chain, its gradient pulled back through the rules."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ..core._tangents import cast_like
from ._chain import Chain

__all__ = ["value_and_grad"]


def value_and_grad(chain: Chain, loss) -> Callable:
    """``value_and_grad(chain, loss)(params, x, target) -> (value, params_grad)``.

    One forward pass records the tape; the loss's VJP seeds ``y_bar``; the layers' VJP rules pull
    it back. ``params_grad`` has the structure and dtypes of ``params``. Pure: compose with ``jax.jit``.
    """
    from ..losses import Loss
    if not isinstance(chain, Chain):
        raise TypeError(f"value_and_grad expects a jacket.Chain, got {type(chain).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"value_and_grad expects a jacket.Loss as its second argument, got {loss!r}")

    def value_and_grad_fn(params, x, target):
        y, tape = chain.forward(params, x)
        value = loss.apply(y, target)
        y_bar = cast_like(loss.vjp(y, target, value, jnp.ones((), y.dtype)), y)
        params_bar, _ = chain.pull(params, tape, y_bar)
        return value, params_bar
    return value_and_grad_fn
