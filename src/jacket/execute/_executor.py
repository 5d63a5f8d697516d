"""Execute a plan: accumulate a chain's Jacobian with the layers' own rules, under ``jax.jit``.

One forward pass records the activations x_0 … x_N; then the plan's root node runs
(``planning/_nodes.py``, ``planning/_params.py``: each node runs its children, then its own
step; a composite's JAC runs its chains' plans). Nothing is materialised that the plan does not
ask for. Shapes: the input Jacobian's factors are flattened ``(n_i, n_{i-1})`` operators and the
result is reshaped to ``out_shape + in_shape``; the parameter Jacobian is a pytree like params
with leaves ``out_shape + leaf_shape``. Inputs are checked by the front door
(``jacket.jacobian``); these functions take a plan made for the chain.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..compose import record
from ..operators import LinearOperator
from ..planning import Execution, Plan
from .sharding import pad_rows, replicate, seed_sharding, split_examples

__all__ = ["input_jacobian", "params_jacobian", "jacobian_operator"]


def input_jacobian(chain, plan: Plan, params, x, batched: bool = False, mesh=None):
    """Dense Jacobian of ``chain`` with respect to its input at ``x``: ``s_N + s_0`` for one
    example, ``(batch,) + s_N + s_0`` (each example's own) when ``batched``.

    With a ``jax.sharding.Mesh`` and one example, the plan is one made for ``mesh.size`` devices
    and the seeds of every TAN/ADJ step are split across them (padded to a multiple of the
    device count). With a batch, the examples are split across the devices instead, and each
    device runs the one-device plan on its examples."""
    truth = _truth(params, x) if plan.checkpoint is not None else None
    if mesh is None:
        if batched:
            return jax.vmap(lambda xi: _dense(chain, plan, params, xi, None, truth))(x)
        return _dense(chain, plan, params, x, None, truth)
    params = replicate(params, mesh)
    if not batched:
        return _dense(chain, plan, params, replicate(x, mesh), mesh, truth)
    count = x.shape[0]
    return _batched(chain, plan, params, split_examples(x, mesh), truth)[:count]


def params_jacobian(chain, plan: Plan, params, x, batched: bool = False):
    """The Jacobian of ``chain(params, x)`` with respect to ``params`` by ``plan`` (``argnums=0``):
    a pytree like ``params`` with leaves ``s_N + leaf_shape`` for one example, ``(batch,) + s_N +
    leaf_shape`` when ``batched`` (each example its own), in the dtype of the output."""
    if batched:
        return jax.vmap(lambda xi: _params_one(chain, plan, params, xi))(x)
    return _params_one(chain, plan, params, x)


@partial(jax.jit, static_argnums=(0, 1))
def _params_one(chain, plan, params, x):
    y, tape = record(chain, params, x)
    out = [jax.tree_util.tree_map(lambda a: jnp.zeros(y.shape + a.shape, y.dtype), p) for p in params]
    if plan.root is not None:
        ctx = Execution(chain.layers, chain.shapes, params, tape, lambda rule, seeds: jax.vmap(rule)(seeds))
        for t, tree in plan.root.run(ctx).outs.items():
            out[t - 1] = jax.tree_util.tree_map(lambda leaf: leaf.reshape(y.shape + leaf.shape[1:]).astype(y.dtype),
                                                tree)
    return type(params)(out) if isinstance(params, (tuple, list)) else tuple(out)


def _truth(params, x):
    """The run-time predicate of checkpointed sweeps' ``lax.cond``, made outside the examples'
    ``vmap`` so that it stays unbatched and the ``cond`` a ``cond``: from the params, or from the
    whole batch when the chain has none (``jacket.checkpointing.runtime_true``)."""
    from ..checkpointing import runtime_true
    return runtime_true(params, x)


@partial(jax.jit, static_argnums=(0, 1, 4))
def _dense(chain, plan: Plan, params, x, mesh=None, truth=None):
    return _one(chain, plan, params, x, mesh, truth).reshape(chain.out_shape + chain.in_shape)


@partial(jax.jit, static_argnums=(0, 1))
def _batched(chain, plan, params, x, truth=None):
    return jax.vmap(lambda xi: _one(chain, plan, params, xi, None, truth))(x).reshape(
        x.shape[:1] + chain.out_shape + chain.in_shape)


def _one(chain, plan, params, x, mesh, truth=None):
    """The dense ``(n_N, n_0)`` Jacobian at one example, in the dtype of the output (as
    ``jax.jacfwd``), whichever order produced it."""
    op, y = _run(chain, plan, params, x, mesh, truth)
    return op.to_dense().astype(y.dtype)


def _run(chain, plan, params, x, mesh, truth=None):
    y, tape = record(chain, params, x)
    sweep = partial(_sweep, mesh=mesh, chunk=plan.chunk)
    return plan.root.run(Execution(chain.layers, chain.shapes, params, tape, sweep, plan.checkpoint, truth)), y


def jacobian_operator(chain, plan: Plan, params, x, mesh=None) -> LinearOperator:
    """The plan's result as a (possibly structured) ``(n_N, n_0)`` operator, for one example x.
    With ``mesh``, every TAN/ADJ seed batch is split across the mesh's devices."""
    return _run(chain, plan, params, x, mesh, _truth(params, x) if plan.checkpoint is not None else None)[0]


def _sweep(rule, seeds, mesh=None, chunk=None):
    """``vmap(rule)`` over the seed vectors (rows of ``seeds``); with ``chunk``, ``chunk`` rows at a
    time (``jax.lax.map`` with ``batch_size``: a loop over vmapped batches, the last one padded);
    with a mesh, the seeds are padded to a multiple of the device count and split across all
    devices, and the padding dropped."""
    if mesh is None:
        if chunk is not None and chunk < seeds.shape[0]:
            return jax.lax.map(rule, seeds, batch_size=chunk)
        return jax.vmap(rule)(seeds)
    count = seeds.shape[0]
    seeds = jax.lax.with_sharding_constraint(pad_rows(seeds, mesh.size), seed_sharding(mesh))
    return jax.vmap(rule)(seeds)[:count]
