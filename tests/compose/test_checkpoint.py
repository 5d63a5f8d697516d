"""Checkpointed backprop (compose/_checkpoint.py): value_and_grad(checkpoint=...) equals the full
tape and jax.grad in float64 on random chains and blocks, its segments are what was asked for,
bad arguments are refused, and the compiled program really holds fewer activations (XLA's
memory analysis of a deep chain with a large batch; compile only, no timing)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from test_blocks import trees

import jacket
from jacket.compose._checkpoint import segments


def test_segments_cover_the_chain_as_asked():
    assert segments(5, None) == (0, 1, 2, 3, 4, 5)
    assert segments(16, "sqrt") == (0, 4, 8, 12, 16)
    assert segments(10, 3) == (0, 3, 7, 10) and segments(3, 9) == (0, 1, 2, 3)
    assert segments(6, (2, 5)) == (0, 2, 5, 6)
    for bad in ("half", 0, True, (3, 2), (0, 2), (2, 6), (1.5,)):
        with pytest.raises(ValueError, match="checkpoint"):
            segments(6, bad)


@settings(max_examples=4, deadline=None)
@given(st.lists(trees(1), min_size=2, max_size=4), st.sampled_from(["sqrt", 2, (1,)]), st.integers(0, 2 ** 16))
def test_checkpointed_gradients_equal_the_full_tape_and_jax_grad(body, checkpoint, seed):
    chain = jacket.Chain([jacket.Dense(2, 3)] + body + [jacket.Dense(3, 2)])
    loss = jacket.SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)),
                                    chain.init(jax.random.PRNGKey(seed), jnp.float64))
    x, labels = jnp.asarray(rng.standard_normal((4, 2))), jnp.asarray(rng.integers(0, 2, 4))

    @jax.jit
    def all_three(params, x, labels):
        return (jacket.value_and_grad(chain, loss, checkpoint=checkpoint)(params, x, labels),
                jacket.value_and_grad(chain, loss)(params, x, labels),
                jax.value_and_grad(lambda p: loss.apply(chain.apply(p, x), labels))(params))
    got, full, expected = all_three(params, x, labels)
    assert_close(got, full, FLOAT64)
    assert_close(got, expected, FLOAT64)


def test_checkpointing_holds_fewer_activations_in_the_compiled_program():
    """16 × (Dense(64, 64), Tanh) at batch 2048: one activation is 0.5 MB, the weights 0.5 MB in
    all, so the activations dominate XLA's temporaries. The full tape holds the 17 a VJP needs
    (the input and every tanh output); √32 → 6 segments keep 7 boundaries and one segment's
    activations at a time: about 11 (measured 11.0 with the suite's compile flags)."""
    layers = []
    for _ in range(16):
        layers += [jacket.Dense(64, 64), jacket.Tanh()]
    chain, loss = jacket.Chain(layers), jacket.MeanSquaredError()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x, target = jnp.ones((2048, 64), jnp.float32), jnp.zeros((2048, 64), jnp.float32)

    def temp(checkpoint):
        fn = jax.jit(jacket.value_and_grad(chain, loss, checkpoint=checkpoint))
        return fn.lower(params, x, target).compile().memory_analysis().temp_size_in_bytes
    full, sqrt = temp(None), temp("sqrt")
    activation = 2048 * 64 * 4
    assert full >= 12 * activation  # the full tape: every activation a VJP needs
    assert sqrt <= 0.75 * full, (sqrt / activation, full / activation)


def test_per_example_gradients_take_the_same_checkpoints():
    chain, loss = jacket.mlp([3, 4, 4, 4, 2], activation="tanh"), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x, labels = jax.random.normal(jax.random.PRNGKey(1), (5, 3), jnp.float64), jnp.array([0, 1, 1, 0, 1])
    both = jax.jit(lambda p, x, t: (jacket.per_example_grads(chain, loss, checkpoint=3)(p, x, t),
                                    jacket.per_example_grads(chain, loss)(p, x, t)))
    got, expected = both(params, x, labels)
    assert_close(got, expected, FLOAT64)
