"""Running plans: every order's Jacobian (``jacket.jacobian(chain, 1, order=…)``) against ``jax.jacfwd`` of
the chain's own ``apply``.

float64 for the tight comparisons (every order is algebraically the same product, so only
rounding separates them), float32 with realistic tolerances. Compilation dominates the run
time, so hypothesis draws few examples and the all-bracketings check uses fixed chains.
"""
from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT32, FLOAT64, assert_close, away_from_kinks, random_params
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.chains import chain_specs, make_chain
from _helpers.orders import bracketings, random_order, tree_string

import jacket
from jacket.planning import make_plan


def setup(chain, seed, dtype, batch=None):
    """Random (not initial) params and an input away from ReLU's kink, drawn with NumPy."""
    rng = np.random.default_rng(seed)
    params = tuple(random_params(layer, rng, dtype) for layer in chain.layers)
    shape = (chain.dims[0],) if batch is None else (batch, chain.dims[0])
    return params, away_from_kinks(rng, shape, dtype)


def reference(chain, params, x):
    return jax.jacfwd(chain.apply, argnums=1)(params, x)


def jacobians_and_reference(chain, params, x, orders):
    """``[jacket.jacobian(chain, 1, order=order)(params, x) for order in orders]`` and jacfwd's Jacobian, as one
    compiled program: compiling once per chain rather than once per order keeps the suite fast."""
    @jax.jit
    def run(params, x):
        return [jacket.jacobian(chain, 1, order=order)(params, x) for order in orders], reference(chain, params, x)
    return run(params, x)


def assert_order_close(actual, expected, dt, order):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=dt.rtol, atol=dt.atol,
                               err_msg=f"order {order!r}")


# ---- every order equals jacfwd ---------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(chain_specs(max_length=6, max_width=8), st.integers(0, 2**31 - 1))
def test_every_kind_of_order_matches_jacfwd_float64(spec, seed):
    chain = make_chain(*spec)
    params, x = setup(chain, seed, jnp.float64)
    rng = random.Random(seed)
    orders = ["forward", "reverse", "optimal"] + [random_order(rng, 1, len(chain)) for _ in range(4)]
    jacobians, expected = jacobians_and_reference(chain, params, x, orders)
    for order, jac in zip(orders, jacobians):
        assert jac.shape == (chain.dims[-1], chain.dims[0]) and jac.dtype == jnp.float64
        assert_order_close(jac, expected, FLOAT64, order)


FIXED_CHAINS = {  # per layer mix, length ≤ 5: all Catalan(4) = 14 bracketings of each
    "dense_activations": (3, [("dense", 5), ("tanh", 0), ("dense", 4), ("sigmoid", 0), ("dense", 2)]),
    "structured_only": (4, [("layernorm", 0), ("softmax", 0), ("gelu", 0), ("logsoftmax", 0), ("relu", 0)]),
    "mixed": (4, [("dense", 6), ("layernorm", 0), ("softplus", 0), ("dense", 3), ("logsoftmax", 0)]),
    "normalised_head": (5, [("softmax", 0), ("dense", 3), ("layernorm", 0), ("softmax", 0)]),
}


@pytest.mark.parametrize("mix", FIXED_CHAINS)
def test_every_bracketing_matches_jacfwd_float64(mix):
    chain = make_chain(*FIXED_CHAINS[mix])
    params, x = setup(chain, 1, jnp.float64)
    orders = [tree_string(tree) for tree in bracketings(1, len(chain))]
    assert len(orders) == {4: 5, 5: 14}[len(chain)]
    jacobians, expected = jacobians_and_reference(chain, params, x, orders)
    for order, jac in zip(orders, jacobians):
        assert_order_close(jac, expected, FLOAT64, order)


@pytest.mark.parametrize("mix", ["mixed", "structured_only"])
def test_seeded_tangent_and_adjoint_orders_match_jacfwd(mix):
    chain = make_chain(*FIXED_CHAINS[mix])
    params, x = setup(chain, 2, jnp.float64)
    orders = ["tan(J5 J4 | adj(J3..J1))", "adj(tan(J5..J3) | J2 J1)", "tan(J5 | (J4 (J3 tan(J2 | J1))))",
              "adj(((J5 J4) J3) | J2..J1)", "(adj(J5 J4) tan(J3 | adj(J2 J1)))"]
    jacobians, expected = jacobians_and_reference(chain, params, x, orders)
    for order, jac in zip(orders, jacobians):
        assert_order_close(jac, expected, FLOAT64, order)


# ---- a plan passed back in ------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(chain_specs(max_length=6, max_width=8), st.integers(0, 2**31 - 1))
def test_a_plan_and_its_order_string_give_the_same_jacobian(spec, seed):
    chain = make_chain(*spec)
    params, x = setup(chain, seed, jnp.float64)
    plan = jacket.plan(chain, 1)(params, x)
    assert plan == make_plan(chain) and jacket.plan(chain, 1, order=plan.order)(params, x) == plan
    # the same plan, so the same computation: equal to the last bit
    np.testing.assert_array_equal(jacket.jacobian(chain, 1, order=plan)(params, x),
                                  jacket.jacobian(chain, 1, order=plan.order)(params, x))


# ---- float32, jit, batches ------------------------------------------------------------------
FLOAT32_CHAIN = (12, [("dense", 16), ("gelu", 0), ("layernorm", 0), ("dense", 3), ("tanh", 0),
                      ("dense", 10), ("softmax", 0)])


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal", "(J7 ((J6 J5) (J4 ((J3 J2) J1))))",
                                   "tan(J7..J4 | adj(J3..J1))"])
def test_float32_matches_jacfwd_to_float32_precision(order):
    chain = make_chain(*FLOAT32_CHAIN)
    params, x = setup(chain, 3, jnp.float32)
    jac = jacket.jacobian(chain, 1, order=order)(params, x)
    assert jac.dtype == jnp.float32
    assert_close(jac, reference(chain, params, x), FLOAT32, scale=5)


def test_jacobian_under_jit_with_the_chain_static():
    chain = make_chain(*FIXED_CHAINS["mixed"])
    params, x = setup(chain, 4, jnp.float64)
    expected = reference(chain, params, x)

    @jax.jit
    def closed_over(params, x):
        return jacket.jacobian(chain, 1, order="optimal")(params, x)
    as_argument = jax.jit(lambda c, params, x, order: jacket.jacobian(c, 1, order=order)(params, x),
                          static_argnums=(0, 3))
    assert_close(closed_over(params, x), expected, FLOAT64)
    for order in ["forward", "reverse", jacket.plan(chain, 1)(params, x)]:
        assert_close(as_argument(chain, params, x, order), expected, FLOAT64)
    # params and x are traced: a new input reuses the compiled function and is still right
    _, x2 = setup(chain, 5, jnp.float64)
    assert_close(closed_over(params, x2), reference(chain, params, x2), FLOAT64)


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal", "((J5 J4) (J3 (J2 J1)))"])
def test_a_batch_gives_one_jacobian_per_example(order):
    chain = make_chain(*FIXED_CHAINS["mixed"])
    params, x = setup(chain, 6, jnp.float64, batch=3)
    jac = jax.vmap(jacket.jacobian(chain, 1, order=order), in_axes=(None, 0))(params, x)
    assert jac.shape == (3, chain.dims[-1], chain.dims[0])
    expected = jax.vmap(jax.jacfwd(chain.apply, argnums=1), in_axes=(None, 0))(params, x)
    assert_close(jac, expected, FLOAT64)
    # called on the batch itself: what jax.jacfwd of the batched call returns, (3,) + s_N + (3,) + s_0,
    # zero between different examples
    full = jacket.jacobian(chain, 1, order=order)(params, x)
    assert full.shape == (3, chain.dims[-1], 3, chain.dims[0])
    assert_close(full, jax.jacfwd(chain.apply, argnums=1)(params, x), FLOAT64)
    for i in range(3):
        np.testing.assert_array_equal(full[i, :, i], jac[i])


# ---- structured results come out dense ---------------------------------------------------
@pytest.mark.parametrize("kinds, structure", [
    (["tanh", "sigmoid", "gelu", "softplus"], "diagonal"),
    (["tanh", "softmax", "relu"], "dplr"),
    (["layernorm", "gelu", "logsoftmax"], "dplr"),
])
def test_a_structured_result_comes_out_dense_and_correct(kinds, structure):
    width = 6
    chain = make_chain(width, [(kind, 0) for kind in kinds])
    params, x = setup(chain, 7, jnp.float64)
    plan = jacket.plan(chain, 1)(params, x)
    assert plan.root.structure.kind == structure  # the plan keeps the structure to the end
    jac = jacket.jacobian(chain, 1, order=plan)(params, x)
    assert jac.shape == (width, width)
    expected = reference(chain, params, x)
    assert_close(jac, expected, FLOAT64)
    if structure == "diagonal":
        np.testing.assert_array_equal(jac, jnp.diag(jnp.diag(jac)))


# ---- bad input --------------------------------------------------------------------------
def test_bad_inputs_to_jacobian_name_the_problem():
    chain = make_chain(*FIXED_CHAINS["mixed"])
    params, x = setup(chain, 8, jnp.float64)
    with pytest.raises(ValueError, match=r"jacket.jacobian: x has shape \(5,\), but must have shape \(4,\)"):
        jacket.jacobian(chain, 1, order="forward")(params, jnp.ones(5))
    with pytest.raises(ValueError, match="invalid order .* position"):
        jacket.jacobian(chain, 1, order="(J5 J4 J3)")(params, x)
    with pytest.raises(ValueError, match="made for another chain"):
        jacket.jacobian(chain, 1, order=make_plan(make_chain(4, [("dense", 2)])))(params, x)
    with pytest.raises(ValueError, match="params must be a tuple with one entry per layer"):
        jacket.jacobian(chain, 1, order="forward")(params[:-1], x)
