"""Backpropagation: a loss at the end of a chain, its gradient pulled back through the rules."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ..checkpointing import boundaries, schedule
from ..core._tangents import cast_like
from ._chain import Chain
from ._checkpoint import forward_boundaries, pull_checkpointed

__all__ = ["value_and_grad"]


def value_and_grad(chain: Chain, loss, checkpoint=None) -> Callable:
    """``value_and_grad(chain, loss, checkpoint=None)(params, x, target) -> (value, params_grad)``.

    One forward pass records the tape; the loss's VJP seeds ``y_bar``; the layers' VJP rules pull
    it back. ``params_grad`` has the structure and dtypes of ``params``. Pure: compose with ``jax.jit``.

    ``checkpoint``: keep only some activations and recompute the rest segment by segment during
    the backward pass (``compose/_checkpoint.py``): ``"sqrt"`` (⌈√N⌉ segments: about 2√N
    activations for one more forward pass), ``"two-level"`` (⌈N^(1/3)⌉ outer segments, each
    recomputed keeping ⌈√L⌉ inner boundaries, its inner segments recomputed in turn: about
    3·N^(1/3) activations for two more forward passes), ``("binomial", B)`` (the schedule that
    recomputes the fewest layers holding at most B activations at once, ``compose/_binomial.py``),
    a number of segments, or the layer indices after which to keep the activation. The values are unchanged (to rounding); ``None``
    (default) keeps the whole tape. A bad ``checkpoint`` is a ValueError here, before any call.
    """
    from ..losses import Loss
    if not isinstance(chain, Chain):
        raise TypeError(f"value_and_grad expects a jacket.Chain, got {type(chain).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"value_and_grad expects a jacket.Loss as its second argument, got {loss!r}")

    nodes = schedule(len(chain), checkpoint)
    bounds = boundaries(nodes)

    def value_and_grad_fn(params, x, target):
        if checkpoint is None:
            y, tape = chain.forward(params, x)
        else:
            chain.check_params(params, "value_and_grad")
            y, kept = forward_boundaries(chain, params, chain._check_x(x, "value_and_grad"), bounds)
        value = loss.apply(y, target)
        y_bar = cast_like(loss.vjp(y, target, value, jnp.ones((), y.dtype)), y)
        if checkpoint is None:
            params_bar, _ = chain.pull(params, tape, y_bar)
        else:
            params_bar, _ = pull_checkpointed(chain, params, kept, nodes, y_bar)
        return value, params_bar
    return value_and_grad_fn
