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
    ``(batch, n_N, n_0)`` for x ``(batch, n_0)``, accumulated as ``order`` says."""
    plan = make_plan(chain, order)
    chain._check_params(params, "Chain.jacobian")
    x = check_input(x, chain.dims[0], "Chain.jacobian")
    if mesh is not None:
        from .sharding import sharded_jacobian
        return sharded_jacobian(chain, plan, params, x, mesh)
    if x.ndim == 2:
        return jax.vmap(lambda xi: _dense(chain, plan, params, xi))(x)
    return _dense(chain, plan, params, x)


@partial(jax.jit, static_argnums=(0, 1))
def _dense(chain, plan: Plan, params, x):
    return jacobian_operator(chain, plan, params, x).to_dense()


def jacobian_operator(chain, plan: Plan, params, x, seed_sharding=None) -> LinearOperator:
    """The plan's result as a (possibly structured) operator, for one example x ``(n_0,)``.
    ``seed_sharding``, if given, is applied to every TAN/ADJ seed batch (see sharding.py)."""
    _, tape = chain.forward(params, x)
    return _run(chain, plan.root, params, tape, seed_sharding)


def _run(chain, node: Node, params, tape, seed_sharding) -> LinearOperator:
    layers = chain.layers
    if node.op == "JAC":
        i = node.lo
        op = layers[i - 1].jacobian(params[i - 1], tape[i - 1], tape[i])
        return op if isinstance(op, LinearOperator) else Matrix(jnp.asarray(op))
    if node.op == "MUL":
        return _run(chain, node.left, params, tape, seed_sharding) @ _run(chain, node.right, params, tape, seed_sharding)
    a, b = node.through
    dtype = tape[0].dtype
    if node.op == "TAN":
        if node.seed is None:
            columns = jnp.eye(chain.dims[a - 1], dtype=dtype)  # one unit tangent per row
        else:
            columns = _run(chain, node.seed, params, tape, seed_sharding).to_dense().T
        columns = _constrain(columns, seed_sharding)

        def push(t):
            for i in range(a, b + 1):
                t = layers[i - 1].jvp(params[i - 1], tape[i - 1], tape[i], t)
            return t
        return Matrix(jax.vmap(push)(columns).T)
    # ADJ
    if node.seed is None:
        rows = jnp.eye(chain.dims[b], dtype=dtype)
    else:
        rows = _run(chain, node.seed, params, tape, seed_sharding).to_dense()
    rows = _constrain(rows, seed_sharding)

    def pull(r):
        for i in range(b, a - 1, -1):
            r = layers[i - 1].vjp(params[i - 1], tape[i - 1], tape[i], r)[1]
        return r
    return Matrix(jax.vmap(pull)(rows))


def _constrain(seeds, sharding):
    if sharding is None:
        return seeds
    return jax.lax.with_sharding_constraint(seeds, sharding(seeds.shape[0]))
