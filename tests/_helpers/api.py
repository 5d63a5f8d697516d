"""Short spellings of the front door for tests: a Jacobian or a plan in one call."""
from __future__ import annotations

import jax

import jacket


def jac(chain, params, x, order="optimal", argnums=1, **options):
    """``jacket.jacobian(chain, argnums, order=order, **options)(params, x)``."""
    return jacket.jacobian(chain, argnums, order=order, **options)(params, x)


def per_example_jac(chain, params, x, order="optimal", argnums=1, **options):
    """Per-example Jacobians of a batch ``x``: ``jax.vmap`` of :func:`jac` over its leading axis."""
    return jax.vmap(jacket.jacobian(chain, argnums, order=order, **options), in_axes=(None, 0))(params, x)


def plan_of(chain, order="optimal", argnums=1, dtype="float32", batch=1, **options):
    """``jacket.plan(chain, argnums, order=order, **options)`` for a float32 example (or a batch of
    ``batch``), without arrays."""
    shape = chain.in_shape if batch == 1 else (batch,) + tuple(chain.in_shape)
    return jacket.plan(chain, argnums, order=order, **options)(None, jax.ShapeDtypeStruct(shape, dtype))
