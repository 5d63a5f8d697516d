"""Jacobians with respect to the parameters (compose/_params.py) against JAX's autodiff in float64:
``chain.jacobian(..., wrt="params")`` in every order against ``jax.jacrev`` (MLP, blocks, a
sequence, an image, a batch, random nested chains), per-example gradients against
``jax.vmap(jax.grad)`` (and their compiled HLO: no per-example loop), the empirical NTK in both
implementations against one built from ``jax.jacrev``, the cost choice and clear errors.

Each case compiles one program holding the rules and the reference: compiling is what costs."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from test_blocks import trees

import jacket
from jacket.compose import ntk_costs, params_jacobian_costs

ORDERS = ("forward", "reverse", "optimal")
D = 3


def _draw(chain, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = chain.init(jax.random.PRNGKey(seed), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)
    x = jnp.asarray(rng.standard_normal(batch + chain.in_shape))
    return params, x


def _jacrev(chain, params, x):
    """The reference: ``jax.jacrev`` with respect to params, per example for a batch."""
    one = lambda xi: jax.jacrev(lambda p: chain.apply(p, xi))(params)  # noqa: E731
    return one(x) if x.shape == chain.in_shape else jax.vmap(one)(x)


def _assert_orders_equal_jacrev(chain, params, x, orders):
    """Every order (a name or a ParamsPlan) against jax.jacrev, compiled as one program."""
    @jax.jit
    def both(params, x):
        return [chain.jacobian(params, x, order, wrt="params") for order in orders], _jacrev(chain, params, x)
    got, expected = both(params, x)
    for order, jac in zip(orders, got):
        assert_close(jac, expected, FLOAT64), order
    return got


def _ntk_reference(chain, params, x1, x2):
    j1, j2 = _jacrev(chain, params, x1), _jacrev(chain, params, x2)
    n_out = chain.dims[-1]
    theta = sum(jnp.einsum("iap,jbp->ijab", a.reshape(a.shape[0], n_out, -1), b.reshape(b.shape[0], n_out, -1))
                for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)))
    return theta.reshape((x1.shape[0], x2.shape[0]) + chain.out_shape * 2)


BLOCKS = jacket.Chain([
    jacket.Dense(2, D),
    jacket.Residual([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Parallel([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Chain([jacket.Tanh(), jacket.Dense(D, 2)]),
])
CASES = {
    "mlp_one_example": (jacket.mlp([3, 4, 2]), ()),
    "blocks_batch": (BLOCKS, (2,)),
    "sequence_batch": (jacket.Chain([jacket.Dense(2, D), jacket.LayerNorm(D), jacket.Tanh(), jacket.Dense(D, 2)],
                                    in_shape=(3, 2)), (2,)),
    "image": (jacket.Chain([jacket.Conv2D(1, 2, (2, 2)), jacket.Tanh(), jacket.Flatten(), jacket.Dense(18, 2)],
                           in_shape=(1, 3, 3)), ()),
}


@pytest.mark.parametrize("name", list(CASES))
def test_params_jacobian_equals_jacrev_in_every_order(name):
    chain, batch = CASES[name]
    params, x = _draw(chain, batch)

    orders = ORDERS if name == "mlp_one_example" else ORDERS[:2]  # "optimal" is one of the two
    got = _assert_orders_equal_jacrev(chain, params, x, orders)
    leaf = jax.tree_util.tree_leaves(params)[0]
    assert jax.tree_util.tree_leaves(got[0])[0].shape == batch + chain.out_shape + leaf.shape


@settings(max_examples=4, deadline=None)
@given(st.lists(trees(1), min_size=1, max_size=2), st.integers(0, 2 ** 16))
def test_random_nested_chains_equal_jacrev(body, seed):
    chain = jacket.Chain([jacket.Dense(2, D)] + body + [jacket.Dense(D, 2)])
    params, x = _draw(chain, (2,), seed)
    _assert_orders_equal_jacrev(chain, params, x, ORDERS)


def test_the_default_is_the_input_jacobian_and_list_params_give_lists():
    chain = jacket.mlp([3, 4, 2])
    params, x = _draw(chain, ())
    np.testing.assert_array_equal(chain.jacobian(params, x, wrt="x"), chain.jacobian(params, x))
    assert isinstance(chain.jacobian(list(params), x, "reverse", wrt="params"), list)


def test_optimal_is_the_cheaper_order_by_the_declared_costs():
    many_params = jacket.mlp([6, 8, 1])  # one output: reverse
    many_outputs = jacket.Chain([jacket.Dense(1, 1, bias=False),  # one parameter, eight outputs: forward
                                 jacket.Parallel([jacket.Tanh()] * 8, merge="concat")])
    for chain, best in ((many_params, "reverse"), (many_outputs, "forward")):
        costs = params_jacobian_costs(chain)
        assert min(("forward", "reverse"), key=costs.get) == best, costs
        assert chain.plan("optimal", wrt="params").order == best
    assert params_jacobian_costs(many_params)["entries"] == (56, 0, 9)


# ---- mixed plans: segments re-seeded at a boundary -------------------------------------------
# Eight tokens share the first Dense: its rules cost eight times its parameters, so rows through it
# are dear; after the one-wide Dense(48, 1) the output is eight wide again.
BOTTLENECK = jacket.Chain([jacket.Dense(3, 6), jacket.Tanh(), jacket.Flatten(), jacket.Dense(48, 1),
                           jacket.Dense(1, 8), jacket.Tanh(), jacket.Dense(8, 8)], in_shape=(8, 3))


def _all_segmentations(n, first):
    """Every cut of boundaries first … n into segments, each in either mode, from the output end."""
    if first == n:
        yield ()
        return
    for hi in range(first + 1, n + 1):
        for mode in ("forward", "reverse"):
            for rest in _all_segmentations(n, hi):
                yield tuple(sorted(((first, hi, mode),) + rest, key=lambda seg: -seg[1]))


@pytest.mark.parametrize("chain", [BOTTLENECK, jacket.mlp([4, 3, 5, 2]), BLOCKS,
                                   jacket.Chain([jacket.Tanh(), jacket.Dense(4, 1), jacket.Dense(1, 1, bias=False),
                                                 jacket.Parallel([jacket.Tanh()] * 6, merge="concat")], in_shape=(4,))],
                         ids=["bottleneck", "mlp", "blocks", "wide_output"])
def test_the_optimal_segmentation_costs_the_brute_force_minimum(chain):
    from jacket.compose._params import _costs, _segments_fma
    c = _costs(chain)
    every = {seg: _segments_fma(c, seg) for seg in _all_segmentations(len(chain), c.first)}
    plan = chain.plan("optimal", wrt="params")
    assert plan.fma == min(every.values()) == params_jacobian_costs(chain)["optimal"]
    assert plan.segments in every
    assert every[plan.segments] <= min(every[((c.first, len(chain), m),)] for m in ("forward", "reverse"))


def test_a_bottleneck_re_seeds_the_reverse_sweep_and_equals_jacrev():
    """Eight outputs behind a one-wide layer, a shared Dense before it: the optimal plan pulls 8
    rows back to the bottleneck and one row through the layers before it, then multiplies."""
    plan = BOTTLENECK.plan("optimal", wrt="params")
    costs = params_jacobian_costs(BOTTLENECK)
    assert plan.order == "mixed" and len(plan.segments) >= 2, plan.segments
    assert plan.fma < min(costs["forward"], costs["reverse"])
    assert "mixed" in str(plan) and "segment" in str(plan)
    params, x = _draw(BOTTLENECK, (2,))
    some = [plan.segments, ((4, 7, "forward"), (0, 4, "reverse")), ((2, 7, "reverse"), (0, 2, "forward")),
            ((6, 7, "forward"), (3, 6, "reverse"), (0, 3, "forward"))]
    _assert_orders_equal_jacrev(BOTTLENECK, params, x, [jacket.compose.ParamsPlan(BOTTLENECK, seg, "given")
                                                        for seg in some])


# ---- per-example gradients ------------------------------------------------------------------
def _per_example_reference(chain, loss):
    one = jax.value_and_grad(lambda p, xi, ti: loss.apply(chain.apply(p, xi), ti))
    return jax.vmap(one, in_axes=(None, 0, 0))


@pytest.mark.parametrize("case", ["mlp", "sequence"])
def test_per_example_grads_equal_vmap_of_grad(case):
    if case == "mlp":
        chain, target = jacket.mlp([3, 4, 3]), jnp.array([0, 2, 1, 2])
    else:  # (T, classes) logits, (T,) labels per example
        chain = jacket.Chain([jacket.Dense(2, 4), jacket.LayerNorm(4), jacket.Tanh(), jacket.Dense(4, 3)],
                             in_shape=(5, 2))
        target = jnp.asarray(np.random.default_rng(1).integers(0, 3, (4, 5)))
    loss = jacket.SoftmaxCrossEntropy()
    params, x = _draw(chain, (4,))
    fn = jacket.per_example_grads(chain, loss)
    (values, grads), (expected_values, expected_grads) = jax.jit(
        lambda p, x, t: (fn(p, x, t), _per_example_reference(chain, loss)(p, x, t)))(params, x, target)
    assert values.shape == (4,)
    assert_close(values, expected_values, FLOAT64)
    assert_close(grads, expected_grads, FLOAT64)


def test_per_example_grads_compile_to_one_batched_pass_without_a_loop():
    """Under jit, the vmap over examples is batched by XLA: no while loop, and no more dots than the
    batch-mean gradient (the per-example weight gradients are batched outer products)."""
    chain, loss = jacket.mlp([4, 5, 3]), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0))
    x, target = jnp.ones((8, 4), jnp.float32), jnp.zeros(8, jnp.int32)
    texts = [jax.jit(f).lower(params, x, target).compile().as_text()
             for f in (jacket.per_example_grads(chain, loss), jacket.value_and_grad(chain, loss))]
    per_example, mean = texts
    assert not re.search(r"\bwhile\(", per_example)
    assert len(re.findall(r"\bdot\(", per_example)) <= len(re.findall(r"\bdot\(", mean))
    assert "f32[8,4,5]" in per_example  # the first Dense layer's weight gradient, one per example


# ---- the empirical NTK --------------------------------------------------------------------
def test_ntk_equals_the_jacrev_reference_in_both_implementations():
    chain = BLOCKS
    params, x1 = _draw(chain, (3,))
    x2 = x1[:2] * 0.5

    @jax.jit
    def everything(params, x1, x2):
        ours = {(impl, trace): jacket.ntk(chain, impl)(params, x1, x2, trace=trace)
                for impl in ("jacobian", "ntvp") for trace in (False, True)}
        return ours, _ntk_reference(chain, params, x1, x2)
    ours, expected = everything(params, x1, x2)
    assert expected.shape == (3, 2, 2, 2)
    for (impl, trace), theta in ours.items():
        want = jnp.trace(expected, axis1=2, axis2=3) / 2 if trace else expected
        assert_close(theta, want, FLOAT64), (impl, trace)


def test_ntk_of_one_batch_is_symmetric_and_auto_uses_the_cost_model():
    chain = jacket.Chain([jacket.Dense(2, 3), jacket.Tanh(), jacket.Dense(3, 2)], in_shape=(2, 2))  # a sequence
    params, x = _draw(chain, (3,))
    theta = jacket.ntk(chain)(params, x)
    assert theta.shape == (3, 3, 2, 2, 2, 2)
    flat = theta.reshape(3, 3, 4, 4).transpose(0, 2, 1, 3).reshape(12, 12)
    assert_close(flat, flat.T, FLOAT64)
    costs = ntk_costs(chain, 3, 3)
    assert set(costs) == {"jacobian", "ntvp"} and all(c > 0 for c in costs.values())


# ---- errors ---------------------------------------------------------------------------------
def test_errors_name_what_was_given():
    chain = jacket.mlp([3, 4, 2])
    params, x = _draw(chain, ())
    with pytest.raises(ValueError, match=r"wrt must be 'x' or 'params', got 'weights'"):
        chain.jacobian(params, x, wrt="weights")
    with pytest.raises(ValueError, match=r"order must be one of .* got '\(J2 J1\)'.*not offered"):
        chain.jacobian(params, x, "(J2 J1)", wrt="params")
    with pytest.raises(ValueError, match=r"got Plan"):
        chain.jacobian(params, x, chain.plan("optimal"), wrt="params")
    with pytest.raises(ValueError, match=r"the plan was made for Chain\(\[Dense\(3, 5\)"):
        chain.jacobian(params, x, jacket.mlp([3, 5, 2]).plan("reverse", wrt="params"), wrt="params")
    with pytest.raises(ValueError, match=r"must have a batch axis"):
        jacket.per_example_grads(chain, jacket.MeanSquaredError())(params, x, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"target must have the batch axis of x \(2\)"):
        jacket.per_example_grads(chain, jacket.MeanSquaredError())(params, jnp.stack([x, x]), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"implementation must be .* got 'fast'"):
        jacket.ntk(chain, "fast")
    with pytest.raises(ValueError, match=r"x1 must have a batch axis"):
        jacket.ntk(chain)(params, x)


def test_the_params_plan_prints_both_orders_and_its_rows_sum_to_them(capsys):
    chain = jacket.Chain([jacket.Dense(3, 1), jacket.Tanh(), jacket.Dense(1, 8)])
    plan = chain.plan("optimal", wrt="params")
    costs = params_jacobian_costs(chain)
    assert plan.order == min(("forward", "reverse"), key=costs.get) and plan.fma == min(costs["forward"], costs["reverse"])
    text = chain.plan("forward", wrt="params").table()
    assert f"forward (one tangent per parameter):     {costs['forward']:,} fma" in text
    assert "x the better single mode" in text
    segments, layers = text.split("\n\n")[1:]
    assert segments.splitlines()[2].split()[:3] == ["1", "1-3", "forward"]
    rows = [line.split() for line in layers.splitlines()[2:]]
    assert len(rows) == len(chain)
    assert sum(int(r[-2].replace(",", "")) for r in rows) == costs["forward"]
    assert sum(int(r[-1].replace(",", "")) for r in rows) == costs["reverse"]
    with pytest.raises(ValueError, match=r"wrt must be 'x' or 'params', got 'theta'"):
        chain.plan(wrt="theta")
    with pytest.raises(ValueError, match=r"order must be one of .*got '\(J2 J1\)'"):
        chain.plan("(J2 J1)", wrt="params")
    from jacket import cli
    assert cli.main(["plan", "8,4,2", "--wrt", "params"]) == 0
    assert "Jacobian with respect to the params" in capsys.readouterr().out
