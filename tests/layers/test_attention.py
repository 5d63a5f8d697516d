"""The sequence layers (layers/_attention.py, layers/_embedding.py): their hand-written rules
against JAX and finite differences (``check_layer`` over the registry's rows, in tests/layers/test_layers.py), planted wrong rules
that the checker must catch, the declared costs against the multiplications the rules perform,
errors, and the Jacobian of a small transformer-like chain in every order.

Kept cheap: one small sequence (T = 5, d_model = 8), planted rules checked on one example in
float64 only (each check compiles a handful of programs, which is nearly all of its run time).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close, multiplications

import jacket
from jacket.layers._attention import MultiHeadSelfAttention
from jacket.layers._embedding import PositionEmbedding
from jacket.operators import Structure
from jacket.testing import RuleError, check_layer

T, D, H = 5, 8, 2
# The rules of MultiHeadSelfAttention (plain and causal) and PositionEmbedding pass check_layer in
# float32 and float64 in tests/layers/test_layers.py, from the registry (jacket/registry.py).


# ---- planted wrong rules: the checker must catch them ------------------------------------------
class UnscaledKeys(MultiHeadSelfAttention):
    """K_bar without the 1/sqrt(d_head) of the scores (Q_bar keeps it): right shapes, wrong values."""

    def _scores_vjp(self, s_bar, q, k):
        q_bar, _ = super()._scores_vjp(s_bar, q, k)
        return q_bar, jnp.einsum("...hts,...htk->...hsk", s_bar, q)


def test_planted_unscaled_term_is_caught():
    """One planted rule (on a causal layer, so the masked path runs too): each further check
    compiles its own programs, which is nearly all of this file's run time."""
    with pytest.raises(RuleError, match="vjp"):
        check_layer(UnscaledKeys(D, H, causal=True), in_shape=(T, D), dtype="float64", batch=False)


# ---- the declared costs against the multiplications performed -------------------------------
# (multiplications(jaxpr), from conftest, counts them, nested calls included)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_costs_count_the_multiplications_of_the_rules(causal):
    """jvp_cost = 4 T d² + 4 T² d + 3 H T²: the jvp's multiplications less those of recomputing the
    forward (Q, K, V, S, A: 3 T d² + T² d + H T²). The vjp's, less the forward, O = A V (T² d) and
    the four weight cotangents (4 T d², not part of an input cotangent), give vjp_cost."""
    layer = MultiHeadSelfAttention(D, H, causal=causal)
    params = layer.init(jax.random.PRNGKey(0))
    x = jnp.ones((T, D), jnp.float32)
    forward = multiplications(jax.make_jaxpr(layer._forward)(params, x).jaxpr)
    assert forward == 3 * T * D * D + T * T * D + H * T * T
    jvp = multiplications(jax.make_jaxpr(lambda x_dot: layer.jvp(params, x, x, x_dot, None))(x).jaxpr)
    assert layer.jvp_cost((T, D)) == 4 * T * D * D + 4 * T * T * D + 3 * H * T * T == jvp - forward
    vjp = multiplications(jax.make_jaxpr(lambda y_bar: layer.vjp(params, x, x, y_bar))(x).jaxpr)
    assert layer.vjp_cost((T, D)) == vjp - forward - T * T * D - 4 * T * D * D
    n = T * D
    assert layer.jacobian_structure((T, D)) == Structure("matrix", n, n)
    assert layer.jacobian_cost((T, D)) == n * layer.jvp_cost((T, D))


def test_embedding_costs_and_structure():
    layer = PositionEmbedding(T, D)
    n = T * D
    assert layer.jacobian_structure((T, D)) == Structure("diagonal", n, n)
    assert layer.jvp_cost((T, D)) == layer.vjp_cost((T, D)) == layer.jacobian_cost((T, D)) == n


# ---- shapes, repr, errors ------------------------------------------------------------------
def test_shapes_and_repr():
    assert repr(MultiHeadSelfAttention(64, 4)) == "MultiHeadSelfAttention(64, 4)"
    assert repr(MultiHeadSelfAttention(64, 4, causal=True)) == "MultiHeadSelfAttention(64, 4, causal=True)"
    assert repr(PositionEmbedding(5, 8)) == "PositionEmbedding(5, 8)"
    assert MultiHeadSelfAttention(D, H).input_shape() is None
    assert MultiHeadSelfAttention(D, H).output_shape((7, D)) == (7, D)  # T is free
    assert PositionEmbedding(T, D).input_shape() == (T, D) == PositionEmbedding(T, D).output_shape((T, D))
    assert MultiHeadSelfAttention(D, H) != MultiHeadSelfAttention(D, H, causal=True)
    params = MultiHeadSelfAttention(D, H).init(jax.random.PRNGKey(0))
    assert {k: v.shape for k, v in params.items()} == {**{f"w{n}": (D, D) for n in "qkvo"},
                                                       **{f"b{n}": (D,) for n in "qkvo"}}
    assert all(v.dtype == jnp.float32 for v in params.values())


def test_bad_configurations_and_inputs_give_clear_errors():
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention: d_model \(6\) must be divisible by heads \(4\)"):
        MultiHeadSelfAttention(6, 4)
    with pytest.raises(ValueError, match="MultiHeadSelfAttention heads must be a positive integer"):
        MultiHeadSelfAttention(8, 0)
    layer = MultiHeadSelfAttention(D, H)
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention\(8, 2\) takes one example of shape \(T, 8\), "
                                         r"got shape \(5, 6\)"):
        layer.output_shape((T, 6))
    with pytest.raises(ValueError, match=r"got shape \(8,\)"):
        layer.output_shape((D,))
    params = layer.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention\(8, 2\): x has shape \(5, 6\), but must be"):
        layer.apply(params, jnp.ones((T, 6)))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(5, 8\) takes one example of shape \(5, 8\), "
                                         r"got shape \(4, 8\)"):
        PositionEmbedding(T, D).output_shape((4, D))
    with pytest.raises(ValueError, match=r"PositionEmbedding\(5, 8\): x has shape \(2, 4, 8\)"):
        PositionEmbedding(T, D).apply({"table": jnp.zeros((T, D))}, jnp.ones((2, 4, D)))


def test_causal_attention_ignores_later_positions():
    """With causal=True, changing the last position leaves every earlier output unchanged."""
    layer = MultiHeadSelfAttention(D, H, causal=True)
    params = layer.init(jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((T, D)), jnp.float32)
    y1, y2 = jax.jit(layer.apply)(params, jnp.stack([x, x.at[-1].add(1.0)]))  # one compile, not one per op
    np.testing.assert_array_equal(y1[:-1], y2[:-1])
    assert not np.allclose(y1[-1], y2[-1])


# ---- a chain of them: the Jacobian in every order ----------------------------------------------
def test_chain_jacobian_in_every_order_matches_jacfwd():
    chain = jacket.Chain([PositionEmbedding(T, D), MultiHeadSelfAttention(D, H), jacket.LayerNorm(D),
                          jacket.Dense(D, D)], in_shape=(T, D))
    with jax.enable_x64(True):
        params = chain.init(jax.random.PRNGKey(0), jnp.float64)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((T, D)))

        @jax.jit
        def jacobians(params, x):
            return ([jacket.jacobian(chain, 1, order=order)(params, x) for order in ("forward", "reverse", "optimal")],
                    jax.jacfwd(chain.apply, argnums=1)(params, x))

        got, expected = jacobians(params, x)
        assert expected.shape == (T, D, T, D)
        for jac in got:
            assert jac.shape == expected.shape
            assert_close(jac, expected, FLOAT64)
