"""Checkpointed backprop and curvature (the transforms' ``checkpoint=``, over compose/_checkpoint.py
and jacket.checkpointing): value_and_grad(checkpoint=...) equals the full tape (to rounding:
XLA:CPU may compile a recomputed layer a few ulps differently) and jax.grad in float64 on random
chains and blocks, for one-level schedules and the two-level one; hvp and ggn_vp with a checkpoint
equal their full-tape products and JAX's; bad arguments are refused, and the compiled program
really holds fewer activations, fewer still with two levels (XLA's memory analysis of a deep
chain; compile only, no timing). (The sweeps themselves: tests/compose/test_checkpointed_pull.py.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT32, FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.trees import trees

import jacket
from jacket.checkpointing import schedule

CHECKPOINTS = ["sqrt", "two-level", 2, (1,), ("binomial", 3), ("binomial", 4)]


def random_problem(body, seed, dtype=jnp.float64):
    chain = jacket.Chain([jacket.Dense(2, 3)] + body + [jacket.Dense(3, 2)])
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape), dtype),
                                    chain.init(jax.random.PRNGKey(seed), dtype))
    x, labels = jnp.asarray(rng.standard_normal((4, 2)), dtype), jnp.asarray(rng.integers(0, 2, 4))
    return chain, params, x, labels


@pytest.mark.parametrize("make", [jacket.value_and_grad, jacket.per_example_grads, jacket.hvp, jacket.ggn_vp,
                                  jacket.hessian])
@pytest.mark.parametrize("bad", ["two_level", "three-level", 0, 2.5, (9,), ("binomial", 2), ("binomial",)])
def test_bad_schedules_are_refused_when_the_function_is_made(make, bad):
    chain = jacket.mlp([2, 3, 3, 2], activation="tanh")  # 5 layers: boundary 9 is out of range
    with pytest.raises(ValueError, match="checkpoint"):
        make(chain, jacket.MeanSquaredError(), checkpoint=bad)


@settings(max_examples=3, deadline=None)
@given(st.lists(trees(1), min_size=2, max_size=4), st.sampled_from(CHECKPOINTS), st.integers(0, 2 ** 16))
def test_checkpointed_gradients_equal_the_full_tape_and_jax_grad(body, checkpoint, seed):
    chain, params, x, labels = random_problem(body, seed)
    loss = jacket.SoftmaxCrossEntropy()

    @jax.jit
    def all_three(params, x, labels):
        return (jacket.value_and_grad(chain, loss, checkpoint=checkpoint)(params, x, labels),
                jacket.value_and_grad(chain, loss)(params, x, labels),
                jax.value_and_grad(lambda p: loss.apply(chain.apply(p, x), labels))(params))
    got, full, expected = all_three(params, x, labels)
    assert_close(got, full, FLOAT64)
    assert_close(got, expected, FLOAT64)


@settings(max_examples=2, deadline=None)
@given(st.lists(trees(0), min_size=7, max_size=10), st.integers(0, 2 ** 16))
def test_two_level_gradients_of_deeper_chains_equal_the_full_tape_and_jax_grad(body, seed):
    """9 to 12 layers: 3 outer segments of 3 or 4, each with 2 inner segments (nested conds).
    (Blocks nested in the chain: the test above.)"""
    chain, params, x, labels = random_problem(body, seed)
    loss = jacket.SoftmaxCrossEntropy()
    assert any(inner and any(sub for *_, sub in inner) for *_, inner in schedule(len(chain), "two-level"))

    @jax.jit
    def all_three(params, x, labels):
        return (jacket.value_and_grad(chain, loss, checkpoint="two-level")(params, x, labels),
                jacket.value_and_grad(chain, loss)(params, x, labels),
                jax.value_and_grad(lambda p: loss.apply(chain.apply(p, x), labels))(params))
    got, full, expected = all_three(params, x, labels)
    assert_close(got, full, FLOAT64)
    assert_close(got, expected, FLOAT64)


def check_curvature_products(chain, seed, checkpoints):
    """hvp (params and x) and ggn_vp with each checkpoint: the full-tape product and JAX's,
    ``jax.jvp(jax.grad(L))`` and ``Jᵀ (∇²loss) J v`` by ``jax.jvp``/``jax.vjp``, in one program."""
    _, params, x, labels = random_problem(list(chain.layers[1:-1]), seed)
    loss = jacket.SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed + 1)
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)
    v_x = jnp.asarray(rng.standard_normal(x.shape))

    @jax.jit
    def products(params, x, labels, v, v_x):
        L = lambda p, x: loss.apply(chain.apply(p, x), labels)  # noqa: E731
        y, y_dot = jax.jvp(lambda q: chain.apply(q, x), (params,), (v,))
        u = jax.jvp(jax.grad(lambda y: loss.apply(y, labels)), (y,), (y_dot,))[1]
        out = []
        for name, make, vec, ref in (
                ("hvp", jacket.hvp, v, jax.jvp(lambda p: jax.grad(L)(p, x), (params,), (v,))[1]),
                ("hvp_x", lambda *a, **k: jacket.hvp(*a, argnums=1, **k), v_x,
                 jax.jvp(lambda x: jax.grad(L, argnums=1)(params, x), (x,), (v_x,))[1]),
                ("ggn", jacket.ggn_vp, v, jax.vjp(lambda q: chain.apply(q, x), params)[1](u)[0])):
            if name.startswith("hvp") and not chain.has_second_order:
                continue
            full = make(chain, loss)(params, x, labels, vec)
            out += [(make(chain, loss, checkpoint=c)(params, x, labels, vec), full, ref) for c in checkpoints]
        return out
    for got, full, expected in products(params, x, labels, v, v_x):
        assert_close(got, full, FLOAT64)
        assert_close(got, expected, FLOAT64, scale=10)


def test_checkpointed_curvature_products_equal_the_full_tape_and_jax():
    """6 layers with a Residual block and a LayerNorm; two levels: outer (0, 3), (3, 6), each
    with inner segments (lo, lo + 2), (lo + 2, lo + 3): nested conds. (Each checkpointed product
    compiles in about half a second here, its conds' branches each compiled: two schedules only;
    random chains and every schedule: the slow test below.)"""
    chain = jacket.Chain([jacket.Dense(2, 3), jacket.Residual([jacket.Dense(3, 3), jacket.Tanh()]),
                          jacket.LayerNorm(3), jacket.Dense(3, 3), jacket.Tanh(), jacket.Dense(3, 2)])
    assert [lo for lo, *_ in schedule(6, "two-level")[0][2]] == [0, 2]
    check_curvature_products(chain, 0, ["two-level", 2])


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(st.lists(trees(1), min_size=2, max_size=6), st.sampled_from(CHECKPOINTS), st.integers(0, 2 ** 16))
def test_checkpointed_curvature_products_of_random_chains(body, checkpoint, seed):
    chain, *_ = random_problem(body, seed)
    check_curvature_products(chain, seed, [checkpoint])


def test_float32_checkpoints_equal_the_full_tape():
    """Float32, a 12-layer MLP (two levels: 3 outer segments of 4, each 2 inner ones of 2):
    gradients, Hessian- and Gauss-Newton-vector products of every schedule are the full tape's
    and JAX's within float32 tolerance."""
    chain, loss = jacket.mlp([4] * 7, activation="tanh"), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (8, 4)), jnp.arange(8) % 4
    v = jax.tree_util.tree_map(lambda a: jnp.full_like(a, 0.5), params)
    L = lambda p: loss.apply(chain.apply(p, x), labels)  # noqa: E731

    @jax.jit
    def everything(params, x, labels, v):
        def three(checkpoint):
            return (jacket.value_and_grad(chain, loss, checkpoint=checkpoint)(params, x, labels),
                    jacket.hvp(chain, loss, checkpoint=checkpoint)(params, x, labels, v),
                    jacket.ggn_vp(chain, loss, checkpoint=checkpoint)(params, x, labels, v))
        return [three(c) for c in ("two-level", 5)], three(None), \
            (jax.value_and_grad(L)(params), jax.jvp(jax.grad(L), (params,), (v,))[1])
    got, full, expected = everything(params, x, labels, v)
    for result in got:
        assert_close(result, full, FLOAT32)
    assert_close(full[:2], expected, FLOAT32, scale=10)


def tanh_blocks(blocks, width=64):
    """``blocks`` × (Dense(width, width), Tanh)."""
    layers = []
    for _ in range(blocks):
        layers += [jacket.Dense(width, width), jacket.Tanh()]
    return jacket.Chain(layers)


def test_checkpointing_holds_fewer_activations_in_the_compiled_program():
    """16 × (Dense(64, 64), Tanh) at batch 2048: one activation is 0.5 MB, the weights 0.5 MB in
    all, so the activations dominate XLA's temporaries. The full tape holds the 17 a VJP needs
    (the input and every tanh output); √32 → 6 segments keep 7 boundaries and one segment's
    activations at a time: about 11 (measured 11.0 with the suite's compile flags)."""
    chain, loss = tanh_blocks(16), jacket.MeanSquaredError()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x, target = jnp.ones((2048, 64), jnp.float32), jnp.zeros((2048, 64), jnp.float32)

    def temp(checkpoint):
        fn = jax.jit(jacket.value_and_grad(chain, loss, checkpoint=checkpoint))
        return fn.lower(params, x, target).compile().memory_analysis().temp_size_in_bytes
    full, sqrt = temp(None), temp("sqrt")
    activation = 2048 * 64 * 4
    assert full >= 12 * activation  # the full tape: every activation a VJP needs
    assert sqrt <= 0.75 * full, (sqrt / activation, full / activation)


@pytest.mark.parametrize("product", ["value_and_grad", "hvp"])
def test_two_levels_hold_fewer_activations_than_one(product):
    """12 × (Dense(64, 64), Tanh) at batch 512, float32 (one activation 128 KB). Measured, in
    activations: value_and_grad full tape 13, "sqrt" (5 segments) 10, "two-level" (3 outer
    segments of 8, each 3 inner ones) 9; hvp, which keeps (x, x_dot) pairs: 47, 23, 18."""
    chain, loss = tanh_blocks(12), jacket.MeanSquaredError()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x, target = jnp.ones((512, 64), jnp.float32), jnp.zeros((512, 64), jnp.float32)
    activation = 512 * 64 * 4

    def temp(checkpoint):
        if product == "hvp":
            fn, args = jax.jit(jacket.hvp(chain, loss, checkpoint=checkpoint)), (params, x, target, params)
        else:
            fn, args = jax.jit(jacket.value_and_grad(chain, loss, checkpoint=checkpoint)), (params, x, target)
        return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / activation
    full, sqrt, two = temp(None), temp("sqrt"), temp("two-level")
    assert two <= sqrt - 0.5 and sqrt <= full - 2, (full, sqrt, two)


def test_per_example_gradients_and_hessians_take_the_same_checkpoints():
    chain, loss = jacket.mlp([3, 4, 4, 4, 2], activation="tanh"), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (5, 3), jnp.float64), jnp.array([0, 1, 1, 0, 1])
    both = jax.jit(lambda p, x, t: ([jacket.per_example_grads(chain, loss, checkpoint=c)(p, x, t)
                                     for c in (3, "two-level")], jacket.per_example_grads(chain, loss)(p, x, t)))
    got, expected = both(params, x, labels)
    for g in got:
        assert_close(g, expected, FLOAT64)
    hessians = jax.jit(lambda p, x, t: (jacket.hessian(chain, loss, checkpoint="sqrt")(p, x[:1], t[:1]),
                                        jacket.hessian(chain, loss)(p, x[:1], t[:1])))
    assert_close(*hessians(params, x, labels), FLOAT64)
