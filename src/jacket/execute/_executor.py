"""Execute a plan: accumulate a chain's Jacobian with the layers' own rules, under ``jax.jit``.

One forward pass records the activations x_0 … x_N; then the plan's root node runs
(``planning/_nodes.py``: each node runs its children, then its own step). Nothing is
materialised that the plan does not ask for. Shapes: the factors are flattened
``(n_i, n_{i-1})`` operators; the result is reshaped to ``out_shape + in_shape``.
"""
from __future__ import annotations

from functools import partial

import jax

from ..core._checks import check_input
from ..core._shapes import split_batch
from ..operators import LinearOperator
from ..planning import Execution, Plan, make_plan
from .sharding import pad_rows, replicate, seed_sharding, split_examples

__all__ = ["jacobian", "jacobian_operator"]


def jacobian(chain, params, x, order="optimal", mesh=None, chunk=None, memory_limit=None, checkpoint=None):
    """Dense Jacobian of ``chain`` at ``x``: ``s_N + s_0`` for one example, ``(batch,) + s_N + s_0``
    for a batch, accumulated as ``order`` says.

    With a ``jax.sharding.Mesh`` and one example, the plan is made for ``mesh.size`` devices and
    the seeds of every TAN/ADJ step are split across them (padded to a multiple of the device
    count). With a batch, the examples are split across the devices instead, and each device
    runs the one-device plan on its examples: the plan is made for what runs. ``chunk``,
    ``checkpoint`` and ``memory_limit``: as ``make_plan`` (the limit for x's dtype and examples per device)."""
    chain.check_params(params, "Chain.jacobian")
    x = check_input(x, chain.in_shape, "Chain.jacobian")
    batched = bool(split_batch(x.shape, chain.in_shape, "Chain.jacobian"))
    if chunk is not None and mesh is not None:
        raise ValueError("Chain.jacobian: chunk= and mesh= don't combine (a mesh already splits the seeds)")
    examples = x.shape[0] if batched else 1
    if mesh is not None and batched:
        examples = -(-examples // mesh.size)
    plan = make_plan(chain, order, mesh.size if mesh is not None and not batched else 1, dtype=x.dtype,
                     memory_limit=memory_limit, chunk=chunk, batch=examples, checkpoint=checkpoint)
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
    y, tape = chain.forward(params, x)
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
