"""Execute a plan: accumulate a chain's Jacobian with the layers' own rules, under ``jax.jit``.

One forward pass records the activations x_0 … x_N. Then each step of the plan runs:

* JAC: ``layer.jacobian(params, x_{i-1}, x_i)``, a structured operator;
* TAN: the seed columns (unit vectors, or an accumulated sub-product's columns) are pushed
  through the JVP rules, vmapped over the columns;
* ADJ: the seed rows are pulled back through the VJP rules, vmapped over the rows (the
  parameter cotangents the rules also return are unused and removed by XLA);
* MUL: the structured product of the two sub-results.

Nothing is materialised that the plan does not ask for.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._checks import check_input
from ._model import Node
from .operators import LinearOperator, Matrix
from .planner import Plan, make_plan

__all__ = ["jacobian", "jacobian_operator"]


def jacobian(chain, params, x, order="optimal", mesh=None):
    """Dense Jacobian of ``chain`` at ``x``: ``(n_N, n_0)`` for x ``(n_0,)``, or
    ``(batch, n_N, n_0)`` for x ``(batch, n_0)``, accumulated as ``order`` says.

    With a ``jax.sharding.Mesh``, an order string is planned for ``mesh.size`` devices, the seeds
    of every TAN/ADJ step are split across all the mesh's devices (padded to a multiple of the
    device count), and a batch of examples is split across them instead."""
    plan = make_plan(chain, order, 1 if mesh is None else mesh.size)
    chain._check_params(params, "Chain.jacobian")
    x = check_input(x, chain.dims[0], "Chain.jacobian")
    if mesh is not None:
        from .sharding import sharded_jacobian
        return sharded_jacobian(chain, plan, params, x, mesh)
    if x.ndim == 2:
        return jax.vmap(lambda xi: _dense(chain, plan, params, xi))(x)
    return _dense(chain, plan, params, x)


@partial(jax.jit, static_argnums=(0, 1, 4))
def _dense(chain, plan: Plan, params, x, mesh=None):
    return jacobian_operator(chain, plan, params, x, mesh).to_dense()


def jacobian_operator(chain, plan: Plan, params, x, mesh=None) -> LinearOperator:
    """The plan's result as a (possibly structured) operator, for one example x ``(n_0,)``.
    With ``mesh``, every TAN/ADJ seed batch is split across the mesh's devices."""
    _, tape = chain.forward(params, x)
    return _run(chain, plan.root, params, tape, mesh)


def _run(chain, node: Node, params, tape, mesh) -> LinearOperator:
    layers = chain.layers
    if node.op == "JAC":
        i = node.lo
        op = layers[i - 1].jacobian(params[i - 1], tape[i - 1], tape[i])
        return op if isinstance(op, LinearOperator) else Matrix(jnp.asarray(op))
    if node.op == "MUL":
        return _run(chain, node.left, params, tape, mesh) @ _run(chain, node.right, params, tape, mesh)
    a, b = node.through
    dtype = tape[0].dtype
    if node.op == "TAN":
        if node.seed is None:
            columns = jnp.eye(chain.dims[a - 1], dtype=dtype)  # one unit tangent per row
        else:
            columns = _materialise(_run(chain, node.seed, params, tape, mesh).T)

        def push(t):
            for i in range(a, b + 1):
                t = layers[i - 1].jvp(params[i - 1], tape[i - 1], tape[i], t)
            return t
        return Matrix.transpose_of(_sweep(push, columns, mesh))  # one row per tangent, kept as made
    # ADJ
    if node.seed is None:
        rows = jnp.eye(chain.dims[b], dtype=dtype)
    else:
        rows = _materialise(_run(chain, node.seed, params, tape, mesh))

    def pull(r):
        for i in range(b, a - 1, -1):
            r = layers[i - 1].vjp(params[i - 1], tape[i - 1], tape[i], r)[1]
        return r
    return Matrix(_sweep(pull, rows, mesh))


def _materialise(op: LinearOperator):
    """The seed vectors as a row-major array. The barrier keeps XLA from folding a transpose
    (such as a Dense Jacobian's wᵀ) into the sweep's products, which on CPU turned them into
    slow non-library dots (benchmarks/README.md, "what the HLO showed")."""
    if isinstance(op, Matrix) and not op.transposed:
        return op.stored
    return jax.lax.optimization_barrier(op.to_dense())


def _sweep(rule, seeds, mesh):
    """``vmap(rule)`` over the seed vectors (rows of ``seeds``); with a mesh, the seeds are padded
    to a multiple of the device count and split across all devices, and the padding dropped."""
    if mesh is None:
        return jax.vmap(rule)(seeds)
    from .sharding import pad_rows, seed_sharding
    count = seeds.shape[0]
    seeds = jax.lax.with_sharding_constraint(pad_rows(seeds, mesh.size), seed_sharding(mesh))
    return jax.vmap(rule)(seeds)[:count]
