"""Blocks (Residual, Parallel, a Chain inside a Chain) and the shape glue (Flatten, Reshape).

Each block's rules against ``jax.jvp``, ``jax.vjp`` and ``jax.jacfwd`` in float64 (through the
checker); random nested trees of blocks over random layers (hypothesis), where every order, a
random mixed order and the optimal plan equal ``jax.jacfwd``; plans that look inside blocks (costs
from the children, nested tables, inner orders); and a wrong rule deep inside a block caught with
its path.
"""
from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.api import per_example_jac, plan_of
from _helpers.orders import random_order
from _helpers.trees import D, trees

import jacket
from jacket.compose import pull, record
from jacket.testing import RuleError, check_chain, check_layer


@settings(max_examples=4, deadline=None)
@given(st.lists(trees(2), min_size=1, max_size=3), st.integers(0, 2 ** 16))
def test_random_nested_blocks_equal_jacfwd_in_every_order(body, seed):
    chain = jacket.Chain([jacket.Dense(2, D)] + body + [jacket.Dense(D, 2)])
    rng = np.random.default_rng(seed)
    orders = ("forward", "reverse", "optimal", random_order(random.Random(seed), 1, len(chain)))
    params = chain.init(jax.random.PRNGKey(seed), jnp.float64)
    x = jnp.asarray(rng.standard_normal((2, 2)))
    y_bar = jnp.asarray(rng.standard_normal((2, 2)))

    @jax.jit  # one program per example: compiling is what costs here
    def both(params, x, y_bar):
        ours = ([per_example_jac(chain, params, x, order) for order in orders],
                pull(chain, params, record(chain, params, x)[1], y_bar))
        jax_ = jax.vmap(jax.jacfwd(lambda v: chain.apply(params, v)))(x), jax.vjp(chain.apply, params, x)[1](y_bar)
        return ours, jax_
    (jacobians, cotangents), (expected, reference) = both(params, x, y_bar)
    for order, got in zip(orders, jacobians):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=f"{chain!r}, order {order}")
    for got, want in zip(jax.tree_util.tree_leaves(cotangents), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


BLOCKS = [
    jacket.Residual([jacket.LayerNorm(D), jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Residual(jacket.Softmax()),
    jacket.Parallel([jacket.Dense(D, D), [jacket.Tanh(), jacket.Dense(D, D)]]),
    jacket.Parallel([jacket.Dense(D, 2), jacket.Tanh()], merge="concat"),
    jacket.Chain([jacket.Tanh(), jacket.Dense(D, 2)]),
    jacket.Residual(jacket.Parallel([jacket.Residual(jacket.Tanh()), jacket.Dense(D, D)])),
]


@pytest.mark.parametrize("block", BLOCKS, ids=repr)
def test_every_block_passes_the_checker_in_float64(block):
    check_layer(block, in_shape=(D,), dtype="float64")


def test_blocks_on_sequences_and_images_pass_the_checker():
    check_layer(jacket.Parallel([jacket.Dense(D, 2), jacket.Dense(D, 1)], merge="concat"), in_shape=(4, D),
                dtype="float64")
    check_layer(jacket.Parallel([jacket.Tanh(), jacket.Softplus()], merge="concat", axis=0), in_shape=(2, 3, 2),
                dtype="float32")
    check_layer(jacket.Flatten(), in_shape=(2, 3, 2), dtype="float64")
    check_layer(jacket.Reshape((3, 4)), in_shape=(2, 6), dtype="float32")


def test_a_wrong_rule_deep_inside_nested_blocks_is_named_by_its_path():
    class LeakyDense(jacket.Dense):  # forgets part of the input cotangent
        def vjp(self, params, x, y, y_bar):
            params_bar, x_bar = super().vjp(params, x, y, y_bar)
            return params_bar, 0.9 * x_bar

    inner = jacket.Parallel([jacket.Tanh(), [LeakyDense(D, D)]])
    chain = jacket.Chain([jacket.Dense(2, D), jacket.Residual([jacket.Tanh(), inner])])
    with pytest.raises(RuleError, match=r"first bad layer is layer 2 → Residual → layer 2 → Parallel branch 2 → "
                                        r"layer 1: Dense\(3, 3\)\n.*: rule vjp, argument x"):
        check_chain(chain, dtype="float64")


def test_a_block_plans_inside_and_its_table_shows_the_nested_plan():
    body = jacket.Chain([jacket.Dense(64, 4), jacket.Tanh(), jacket.Dense(4, 64)])  # a bottleneck
    chain = jacket.Chain([jacket.Dense(8, 64), jacket.Residual(body), jacket.Dense(64, 8)])
    residual = chain.layers[1]
    inner = plan_of(body, "optimal")
    plan = plan_of(chain, "(J3 (J2 J1))")
    # materialising I + J_f costs f's own optimal plan plus the identity (n adds): the planner's
    # figure for the block (its inner_chains planned, merge_structure adding the identity)
    assert plan.model.jac_cost[2] == inner.fma + 64 and plan.steps[1].step_fma == 64
    assert residual.merge_structure((64,), [inner.root.structure])[1] == 64
    # one tangent through the block costs f's tangent plus the add
    assert residual.jvp_cost((64,)) == body.jvp_cost((64,)) + 64
    assert plan.steps[1].plans == (inner,)
    table = plan.table()
    assert "J2 = Residual from the plan below" in table
    nested = [line for line in table.splitlines() if line.startswith("2.")]
    assert len(nested) == len(inner.steps) and all(line.split()[1] in ("JAC", "TAN", "ADJ", "MUL") for line in nested)
    # an inner order named in brackets replaces the block's own optimal plan, and round-trips
    named = plan_of(chain, "(J3 (J2[forward] J1))")
    assert named.steps[1].plans[0].order == plan_of(body, "forward").order
    assert named.fma == plan.fma - inner.fma + plan_of(body, "forward").fma
    assert plan_of(chain, named.order) == named and "J2[tan(J3..J1)]" in named.order


@pytest.mark.parametrize("order, message", [
    ("(J3 (J2[forward] J1[reverse]))", r"J1 \(Dense\(8, 64\)\) is not a block"),
    ("(J3 (J2[forward; reverse] J1))", r"J2 .* has 1 chain\(s\), so its brackets need 1 order\(s\)"),
    ("(J3 (J2[(J2 J9)] J1))", r"J2's inner order '\(J2 J9\)' .* is invalid .*unknown factor 'J9'"),
    ("(J3 (J2[forward J1))", r"unbalanced brackets"),
])
def test_bad_inner_orders_say_what_and_where(order, message):
    chain = jacket.Chain([jacket.Dense(8, 64), jacket.Residual([jacket.Dense(64, 4), jacket.Dense(4, 64)]),
                          jacket.Dense(64, 8)])
    with pytest.raises(ValueError, match=message):
        plan_of(chain, order)


def test_bad_blocks_are_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"f maps shape \(3,\) to \(2,\); the skip connection"):
        jacket.Chain([jacket.Residual(jacket.Dense(3, 2))], in_shape=3)
    with pytest.raises(ValueError, match=r"merge='sum' needs equal output shapes, the branches give \(2,\), \(3,\)"):
        jacket.Chain([jacket.Parallel([jacket.Dense(3, 2), jacket.Dense(3, 3)])], in_shape=3)
    with pytest.raises(ValueError, match=r"merge must be 'sum' or 'concat'"):
        jacket.Parallel([jacket.Tanh()], merge="max")
    with pytest.raises(ValueError, match=r"cannot reshape \(2, 3\) \(6 values\) to \(4,\)"):
        jacket.Chain([jacket.Reshape((4,))], in_shape=(2, 3))
    with pytest.raises(ValueError, match=r"Flatten\(\) does not know its input shape"):
        jacket.Flatten().apply({}, jnp.ones((2, 3)))


def test_a_body_that_starts_with_a_last_axis_layer_takes_its_shape_from_the_block():
    """Chain([LayerNorm(d), attention]) does not fit LayerNorm's default (d,), but fits (T, d): it
    stays unbound until a block binds it; a chain that fits no stack still fails at once."""
    body = jacket.Chain([jacket.LayerNorm(8), jacket.MultiHeadSelfAttention(8, 2)])
    assert not body.bound
    with pytest.raises(ValueError, match=r"first layer LayerNorm\(8\) takes \(8,\), which the layers after it "
                                         r"do not, but a stack of them they do; pass Chain\(..., in_shape=\)"):
        jacket.plan(body, 1)
    chain = jacket.Chain([jacket.Dense(3, 8), jacket.Residual(body)], in_shape=(5, 3))
    assert chain.shapes == ((5, 3), (5, 8), (5, 8))
    assert jacket.Chain([jacket.LayerNorm(8), jacket.Dense(8, 2)]).shapes == ((8,), (8,), (2,))  # vectors by default
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(5, 2\)\) cannot take layer 1"):
        jacket.Chain([jacket.Dense(3, 4), jacket.Dense(5, 2)])


def test_params_of_blocks_and_nested_chains_have_the_structure_of_their_children():
    chain = jacket.Chain([jacket.Residual([jacket.Dense(D, D), jacket.Tanh()]),
                          jacket.Parallel([jacket.Dense(D, D), jacket.Tanh()]), jacket.Chain([jacket.Dense(D, 1)])],
                         in_shape=D)
    params = chain.init(jax.random.PRNGKey(0))
    assert set(params[0][0]) == {"w", "b"} and params[0][1] == {}
    assert set(params[1][0][0]) == {"w", "b"} and params[1][1] == ({},)
    assert params[2][0]["w"].shape == (D, 1)
    bad = (params[0], params[1], ({"w": jnp.ones((D, 2)), "b": jnp.ones(1)},))
    with pytest.raises(ValueError, match=r"params\[2\]\[0\]\['w'\] .* has shape \(3, 2\), expected \(3, 1\)"):
        chain.apply(bad, jnp.ones(D))
