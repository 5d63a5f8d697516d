"""Export to JAX: a Chain as a function ``f(params, x)`` that JAX differentiates with the chain's own rules.

Signature::

    to_jax(chain, mode="vjp") -> f        f(params, x) = chain.apply(params, x)

``mode="vjp"`` wraps ``f`` with ``jax.custom_vjp``: the forward pass records the tape ``(x_0, …, x_N)`` is kept as the residuals, and the backward pass runs the layers' VJP rules
over it, last layer first. ``jax.grad``, ``jax.jacrev``, ``jax.vmap``, ``jax.jit`` and optax then
use jacket's reverse accumulation. Forward mode (``jax.jvp``, ``jax.jacfwd``) is refused by JAX
for a ``custom_vjp`` function.

``mode="jvp"`` wraps ``f`` with ``jax.custom_jvp`` whose rule pushes tangents for x and params
through the layers' JVP rules: forward mode runs the layers' JVP rules, and JAX derives reverse mode by linearising that
rule and transposing the tangent part. This works because every JVP rule is linear in
``(x_dot, params_dot)`` and written with operations JAX can transpose (products with arrays that
depend on the primal only, sums, means, matrix products); a rule that is not, such as one that
branches on the tangent's values, would make ``jax.grad`` fail with an error from JAX.

Either way, a wrong rule shows up in JAX's derivatives: that is the point (tests/interop/test_interop.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .compose import Chain, pull, push, record

__all__ = ["to_jax"]

MODES = ("vjp", "jvp")


def to_jax(chain: Chain, mode: str = "vjp"):
    """``f(params, x) -> y``, equal to ``chain.apply``, whose derivatives in JAX come from the
    layers' hand-written rules: VJP rules with ``mode="vjp"``, JVP rules with ``mode="jvp"``.

    params: the tuple from ``chain.init``; x: ``chain.in_shape`` or ``(batch,) + chain.in_shape``.
    """
    if not isinstance(chain, Chain):
        raise TypeError(f"to_jax expects a jacket.Chain, got {type(chain).__name__}")
    if mode == "vjp":
        return _with_vjp_rules(chain)
    if mode == "jvp":
        return _with_jvp_rules(chain)
    raise ValueError(f"to_jax: mode must be one of {MODES}, got {mode!r}")


def _with_vjp_rules(chain):
    @jax.custom_vjp
    def f(params, x):
        return chain.apply(params, x)

    def forward(params, x):
        chain.check_params(params, "to_jax")
        y, tape = record(chain, params, chain.check_input(x, "to_jax"))
        return y, (params, tape)  # residuals: what the VJP rules read

    def backward(residuals, y_bar):
        params, tape = residuals
        return pull(chain, params, tape, y_bar)  # params_bar has the structure of params

    f.defvjp(forward, backward)
    return _named(f, chain, "vjp")


def _with_jvp_rules(chain):
    @jax.custom_jvp
    def f(params, x):
        return chain.apply(params, x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (params, x), (params_dot, x_dot) = primals, tangents
        y, y_dot = push(chain, params, x, x_dot, params_dot)
        return y, jnp.zeros_like(y) if y_dot is None else y_dot

    return _named(f, chain, "jvp")


def _named(f, chain, mode):
    f.__name__ = f"{mode}_rules_of_chain"
    f.__doc__ = f"{chain!r}.apply, differentiated in JAX by its layers' {mode.upper()} rules (jacket.to_jax)."
    return f
