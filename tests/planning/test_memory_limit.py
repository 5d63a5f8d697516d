"""Plans under a memory limit (``planning/_limit.py``): ``jacket.plan(chain, 1, memory_limit=)``, planned by
``jacket.planning.make_plan(chain, order, memory_limit=)``.

* the capped DP (``optimal_plan(model, max_dense=)``) attains the minimum fma over every plan
  tree of the move set whose dense intermediates fit the cap (an exhaustive enumeration);
* the planner never returns a plan above the limit by the bytes model; a larger limit never
  gives a costlier plan; the unconstrained optimum comes back when it fits; below every
  candidate, the error names the smallest limit that fits, and that limit works;
* memory-limited Jacobians equal ``jax.jacfwd`` in float64, and XLA's compiled bytes of a few
  of them are checked against the limit.
"""
from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.chains import KINDS, random_chain

import jacket
from jacket.planning import make_plan, smallest_limit
from jacket.planning._dp import optimal_plan
from jacket.planning._limit import call_bytes, largest_dense, parse_bytes
from jacket.planning._model import Model


def all_trees(model, lo, hi, memo):
    """Every plan tree of J_hi ⋯ J_lo in the move set (small chains only)."""
    if (lo, hi) in memo:
        return memo[lo, hi]
    trees = [model.tan(lo, hi), model.adj(lo, hi)] + ([model.jac(lo)] if lo == hi else [])
    for k in range(lo, hi):
        right, left = all_trees(model, lo, k, memo), all_trees(model, k + 1, hi, memo)
        trees += [model.tan(lo, hi, r) for r in right] + [model.adj(lo, hi, l_) for l_ in left]
        trees += [model.mul(l_, r) for l_ in left for r in right]
    memo[lo, hi] = trees
    return trees


def dense_sizes(chain, root):
    return [step.structure.size for step in root.postorder()
            if step is not root and step.structure.kind == "matrix"
            and not (step.op == "JAC" and type(chain.layers[step.lo - 1]).__name__ == "Dense")]


@pytest.mark.parametrize("seed", range(12))
def test_the_capped_dp_attains_the_minimum_over_every_tree_under_the_cap(seed):
    rng = random.Random(seed)
    chain = random_chain(rng, rng.randint(2, 4), KINDS, max_width=12)
    model = Model(chain)
    trees = all_trees(model, 1, model.n, {})
    caps = sorted({s for t in trees for s in dense_sizes(chain, t)} | {1})
    for cap in caps:
        fits = [t for t in trees if max(dense_sizes(chain, t), default=0) <= cap]
        root = optimal_plan(model, max_dense=cap)
        assert max(dense_sizes(chain, root), default=0) <= cap, (chain, cap, root.order())
        assert root.fma == min(t.fma for t in fits), (chain, cap, root.order())


def _chain():
    return jacket.Chain([jacket.Dense(16, 96), jacket.Tanh(), jacket.Dense(96, 96), jacket.Tanh(),
                         jacket.Dense(96, 24)])


def test_the_unconstrained_optimum_comes_back_when_it_fits():
    chain = _chain()
    best = make_plan(chain, "optimal")
    got = make_plan(chain, "optimal", memory_limit=best.memory.total_bytes)
    assert got == best and got.chunk is None and got.memory_limit == best.memory.total_bytes
    text = str(got)
    assert "memory limit:" in text and "live MB" in text


@given(st.integers(0, 2 ** 31), st.floats(0.0, 1.0))
@settings(max_examples=25, deadline=None)
def test_plans_never_exceed_the_limit_and_more_memory_never_costs_more(seed, where):
    rng = random.Random(seed)
    chain = random_chain(rng, rng.randint(2, 6), KINDS, max_width=48)
    top = make_plan(chain, "optimal").memory.total_bytes
    floor = smallest_limit(chain)
    limits = sorted({floor, int(floor + where * (top - floor)), top})
    plans = [make_plan(chain, "optimal", memory_limit=limit) for limit in limits]
    for limit, plan in zip(limits, plans):
        assert call_bytes(plan, plan.memory) <= limit
    fmas = [p.fma for p in plans]
    assert fmas == sorted(fmas, reverse=True), (limits, fmas)


def test_below_every_plan_the_error_names_the_smallest_limit_that_fits():
    chain = _chain()
    with pytest.raises(ValueError, match=r"no plan of this chain fits memory_limit=.*pass memory_limit >= (\d+)") as info:
        make_plan(chain, "optimal", memory_limit=100)
    need = int(str(info.value).split("memory_limit >= ")[1].split()[0])
    assert need == smallest_limit(chain)
    assert "arguments" in str(info.value) and "temporaries" in str(info.value)
    plan = make_plan(chain, "optimal", memory_limit=need)
    assert plan.memory.total_bytes == need
    with pytest.raises(ValueError, match="no plan"):
        make_plan(chain, "optimal", memory_limit=need - 1)


def test_a_named_order_keeps_its_tree_and_gets_a_chunk():
    chain = _chain()
    reverse = make_plan(chain, "reverse")
    limit = (reverse.memory.total_bytes + reverse.memory.argument_bytes + reverse.memory.result_bytes) // 2
    got = make_plan(chain, "reverse", memory_limit=limit)
    assert got.root == reverse.root and got.chunk is not None and got.memory.total_bytes <= limit


def test_memory_limited_jacobians_equal_jacfwd_and_xla_stays_near_the_limit():
    chain = jacket.Chain([jacket.Dense(12, 160), jacket.Tanh(), jacket.Dense(160, 160), jacket.Softplus(),
                          jacket.Dense(160, 20)])
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (12,), jnp.float64)
    want = jax.jacfwd(chain.apply, argnums=1)(params, x)
    plans = {}
    top = jacket.planning.make_plan(chain, "optimal", dtype="float64").memory.total_bytes
    need = smallest_limit(chain, dtype="float64")
    for fraction in (1.0, 0.5, 0.0):
        limit = int(need + fraction * (top - need))
        got = jacket.jacobian(chain, 1, memory_limit=limit)(params, x)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        plan = jacket.planning.make_plan(chain, "optimal", dtype="float64", memory_limit=limit)
        assert plan.dtype == "float64" and call_bytes(plan, plan.memory) <= limit
        plans[fraction] = (plan, limit)
    # XLA's bytes for a batch of 64, where the sweeps (not the params) dominate: every plan
    # within the limit (XLA needed 0.84-0.97x of the model at these sizes: it over-counts a little)
    xb = jax.random.normal(jax.random.PRNGKey(2), (64, 12), jnp.float64)
    top = call_bytes(plans[1.0][0], plans[1.0][0].memory, 64)
    floor = smallest_limit(chain, dtype="float64", batch=64)
    for limit in (top, int((top * floor) ** 0.5), floor):
        plan = jacket.planning.make_plan(chain, "optimal", dtype="float64", memory_limit=limit, batch=64)
        per_example = jax.vmap(jacket.jacobian(chain, 1, order=plan), in_axes=(None, 0))
        m = jax.jit(per_example).lower(params, xb).compile().memory_analysis()
        xla = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
        assert xla <= limit, (plan.order, plan.chunk, xla, limit)
    # a batch at the front door: planned for its 3 examples, the Jacobian of the batched call
    got = jacket.jacobian(chain, 1, order="reverse", memory_limit="50MB")(params, xb[:3])
    np.testing.assert_allclose(got, jax.jacfwd(chain.apply, argnums=1)(params, xb[:3]), rtol=1e-10, atol=1e-12)
    got = jax.vmap(jacket.jacobian(chain, 1, order="reverse", memory_limit="50MB"), in_axes=(None, 0))(params, xb[:3])
    np.testing.assert_allclose(got, jax.vmap(lambda xi: jax.jacfwd(chain.apply, argnums=1)(params, xi))(xb[:3]),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("text, want", [(4096, 4096), ("64MB", 64 * 10 ** 6), ("1.5 GiB", int(1.5 * 2 ** 30)),
                                        ("2kib", 2048), (1e6, 10 ** 6)])
def test_limits_read_as_bytes(text, want):
    assert parse_bytes(text) == want


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", -5, 0, True, None, [1]])
def test_bad_limits_are_refused_with_their_value(bad):
    if bad is None:  # no limit at the front door; parse_bytes itself refuses it
        with pytest.raises(ValueError, match="memory_limit"):
            parse_bytes(bad)
        return
    with pytest.raises(ValueError, match="memory_limit"):
        jacket.plan(_chain(), 1, memory_limit=bad)
    with pytest.raises(ValueError, match="memory_limit"):
        make_plan(_chain(), "optimal", memory_limit=bad)


def test_what_cannot_take_a_limit_says_so():
    chain = _chain()
    with pytest.raises(ValueError, match="fastest.*memory_limit"):
        jacket.plan(chain, 1, order="fastest", memory_limit="1GB")
    with pytest.raises(ValueError, match="fastest.*memory_limit"):
        jacket.jacobian(chain, 1, order="fastest", memory_limit="1GB")
    with pytest.raises(ValueError, match="memory limit"):
        jacket.plan(chain, 0, memory_limit="1GB")
    with pytest.raises(ValueError, match="memory limit"):
        make_plan(chain, "optimal", argnums=0, memory_limit="1GB")


def test_largest_dense_ignores_dense_weights_and_the_result():
    chain = _chain()
    assert largest_dense(make_plan(chain, "forward")) == 0
    assert largest_dense(make_plan(chain, "((J5 (J4 J3)) (J2 J1))")) == 96 * 96


@given(st.integers(0, 2 ** 31), st.floats(0.0, 1.0), st.booleans())
@settings(max_examples=2, deadline=None)
def test_memory_limited_and_checkpointed_jacobians_of_random_chains_equal_jacfwd(seed, where, batch):
    """float64: a random chain of the registry's layers, planned under a random limit between the
    smallest and the unlimited plan's bytes (the planner picks bracketing, chunk and checkpoints),
    then the reverse plan with its ADJ sweep checkpointed in two segments."""
    rng = random.Random(seed)
    chain = random_chain(rng, rng.randint(2, 5), KINDS, max_width=10)
    params = chain.init(jax.random.PRNGKey(seed % 1000), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(seed % 997 + 1), ((3,) if batch else ()) + chain.in_shape, jnp.float64)
    want = jax.jacfwd(chain.apply, argnums=1)(params, x)  # on a batch: (3,) + s_N + (3,) + s_0
    examples = 3 if batch else 1
    top = jacket.planning.make_plan(chain, "optimal", dtype="float64")
    top = call_bytes(top, top.memory, examples)
    floor = smallest_limit(chain, dtype="float64", batch=examples)
    limit = int(floor + where * max(top - floor, 0))
    got = jacket.jacobian(chain, 1, memory_limit=limit)(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    got = jacket.jacobian(chain, 1, order="reverse", checkpoint=2)(params, x)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_a_limit_that_needs_checkpoints_gets_them_and_xla_stays_within_it():
    """Per-example Jacobians (2 × 64) of 12 × (Dense(64, 64), Tanh) for 256 examples: the tape
    outweighs the sweep, so the smallest limit is met by checkpointed ADJ sweeps; the bytes model
    over-counts a recomputing conditional's buffers a little (1.1-1.45x of XLA's temporaries
    measured on such chains), so XLA stays within the limit."""
    layers = []
    for _ in range(12):
        layers += [jacket.Dense(64, 64), jacket.Tanh()]
    chain = jacket.Chain(layers + [jacket.Dense(64, 2)])
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (256, 64), jnp.float32)
    limit = smallest_limit(chain, batch=256)
    plan = jacket.plan(chain, 1, memory_limit=limit)(None, jax.ShapeDtypeStruct((256, 64), jnp.float32))
    assert plan == make_plan(chain, "optimal", memory_limit=limit, batch=256) and plan.batch == 256
    assert plan.checkpoint == "sqrt" and plan.chunk is None
    best = make_plan(chain, "optimal")
    assert call_bytes(plan, plan.memory, 256) <= limit < call_bytes(best, best.memory, 256)
    per_example = jax.vmap(jacket.jacobian(chain, 1, order=plan), in_axes=(None, 0))
    m = jax.jit(per_example).lower(params, x).compile().memory_analysis()
    assert m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes <= limit
