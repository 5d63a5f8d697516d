"""Backpropagation, ``jacket.value_and_grad`` (transforms/_backprop.py), against
``jax.value_and_grad`` of ``loss.apply(chain.apply(...))``: random chains (hypothesis) in float64
with every loss, a fixed float32 MLP, a chain of blocks; jit against eager; and clear errors for
arguments that don't fit. (The sweeps it runs: tests/compose/test_chain.py; checkpointed
gradients: test_checkpoint.py.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT32, FLOAT64, assert_close, away_from_kinks, normal, random_params
from hypothesis import given, settings
from hypothesis import strategies as st

import jacket

ACTIVATIONS = [jacket.Tanh, jacket.Sigmoid, jacket.ReLU, jacket.Softplus, jacket.GELU, jacket.Softmax,
               jacket.LogSoftmax]
KINDS = ["dense", "layernorm"] + [cls.__name__ for cls in ACTIVATIONS]
LOSSES = [jacket.MeanSquaredError(), jacket.BinaryCrossEntropyWithLogits(), jacket.SoftmaxCrossEntropy()]


@st.composite
def chains(draw):
    """Lengths 1–6, widths 1–8, every layer kind: Dense changes the width (with or without bias),
    LayerNorm is built for the width it gets, activations keep it. (As tests/compose/test_chain.py.)"""
    n = n_0 = draw(st.integers(1, 8))
    layers = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "dense":
            out = draw(st.integers(1, 8))
            layers.append(jacket.Dense(n, out, bias=draw(st.booleans())))
            n = out
        elif kind == "layernorm":
            layers.append(jacket.LayerNorm(n))
        else:
            layers.append(getattr(jacket, kind)())
    in_shape = n_0 if layers[0].input_shape() is None else None
    return jacket.Chain(layers, in_shape=in_shape)


def draw_target(loss, rng, shape, dtype):
    if isinstance(loss, jacket.SoftmaxCrossEntropy):
        return jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]))
    if isinstance(loss, jacket.BinaryCrossEntropyWithLogits):
        return jnp.asarray(rng.uniform(size=shape), dtype)
    return normal(rng, shape, dtype)


def draw_case(chain, loss, batch, seed, dtype):
    """Random params (not init: LayerNorm's init would hide its scale and offset terms), an input
    away from ReLU's kink, and a target for ``loss``."""
    rng = np.random.default_rng(seed)
    params = tuple(random_params(layer, rng, dtype) for layer in chain)
    shape_in = (chain.dims[0],) if batch is None else (batch, chain.dims[0])
    x = away_from_kinks(rng, shape_in, dtype)
    return params, x, draw_target(loss, rng, shape_in[:-1] + (chain.dims[-1],), dtype)


def both(chain, loss, params, x, target):
    """``(ours, JAX's)`` value and gradient, for one compiled program."""
    return (jacket.value_and_grad(chain, loss)(params, x, target),
            jax.value_and_grad(lambda p: loss.apply(chain.apply(p, x), target))(params))


@settings(max_examples=15, deadline=None)
@given(chain=chains(), batch=st.sampled_from([None, 3]), loss=st.sampled_from(LOSSES),
       seed=st.integers(0, 2**16))
def test_random_chains_match_jax(chain, batch, loss, seed):
    """float64, tight; one compiled program per example."""
    params, x, target = draw_case(chain, loss, batch, seed, jnp.float64)
    ours, expected = jax.jit(both, static_argnums=(0, 1))(chain, loss, params, x, target)
    # ten times the one-layer tolerance: up to six layers of rounding, LayerNorm's 1/σ included
    assert_close(ours, expected, FLOAT64, scale=10)


def test_float32_mlp_matches_jax(key):
    chain, loss = jacket.mlp([64, 128, 128, 10], activation="tanh"), jacket.SoftmaxCrossEntropy()
    _, x, labels = draw_case(chain, loss, 32, 0, jnp.float32)
    params = chain.init(key)  # float32, LeCun-normal as in training
    ours, expected = jax.jit(both, static_argnums=(0, 1))(chain, loss, params, x, labels)
    assert ours[0].dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(ours[1])} == {jnp.dtype("float32")}
    # float32 through 128-wide products: a few hundred roundings per output
    assert_close(ours, expected, FLOAT32, scale=10)


def test_value_and_grad_through_blocks_equals_jax():
    D = 3
    chain = jacket.Chain([jacket.Dense(4, D), jacket.Residual([jacket.LayerNorm(D), jacket.Dense(D, D)]),
                          jacket.Parallel([jacket.Dense(D, 2), jacket.Dense(D, 2)]), jacket.LogSoftmax()])
    loss = jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(1), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)))
    target = jnp.array([0, 1, 1, 0, 1])
    (value, grads), (ref_value, ref_grads) = jax.jit(both, static_argnums=(0, 1))(chain, loss, params, x, target)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# ---- jit, and the arguments ------------------------------------------------------------------
SMALL = jacket.Chain([jacket.Dense(3, 4), jacket.GELU(), jacket.LayerNorm(4), jacket.Dense(4, 2, bias=False),
                      jacket.Softmax()])


def small_case():
    params, x, _ = draw_case(SMALL, jacket.MeanSquaredError(), 2, 1, jnp.float64)
    return params, x


def test_jit_matches_eager():
    params, x = small_case()
    labels = jnp.asarray([0, 1])
    fn = jacket.value_and_grad(SMALL, jacket.SoftmaxCrossEntropy())
    assert_close(jax.jit(fn)(params, x, labels), fn(params, x, labels), FLOAT64)


def test_bad_arguments_name_what_was_given():
    params, x = small_case()
    mse = jacket.MeanSquaredError()
    fn = jacket.value_and_grad(SMALL, mse)
    with pytest.raises(TypeError, match=r"jacket.value_and_grad: x must be a floating-point array, got dtype int"):
        fn(params, jnp.ones(3, jnp.int32), jnp.ones(2))
    with pytest.raises(ValueError, match=r"jacket.value_and_grad: x has shape \(5,\), but must have shape \(3,\)"):
        fn(params, jnp.ones(5), jnp.ones(2))
    with pytest.raises(ValueError, match=r"jacket.value_and_grad: params must be a tuple with one entry per layer "
                                         r"\(5\), got a tuple of length 6"):
        fn(params + ({},), x, jnp.ones(2))
    with pytest.raises(ValueError, match=r"target has shape \(2,\) but must have the shape of pred, \(2, 2\)"):
        fn(params, x, jnp.ones(2))
    with pytest.raises(TypeError, match=r"jacket.value_and_grad: its second argument must be a jacket.Loss, got the "
                                        r"layer Tanh\(\)"):
        jacket.value_and_grad(SMALL, jacket.Tanh())
    with pytest.raises(TypeError, match=r"got the class MeanSquaredError, not a loss: write MeanSquaredError\(\)"):
        jacket.value_and_grad(SMALL, jacket.MeanSquaredError)
    with pytest.raises(TypeError, match=r"pass the chain first and the loss second"):
        jacket.value_and_grad(mse, SMALL)
    with pytest.raises(TypeError, match=r"got the layer Dense\(3, 4\): write jacket.Chain\(\[Dense\(3, 4\)\]\)"):
        jacket.value_and_grad(jacket.Dense(3, 4), mse)
    with pytest.raises(TypeError):  # checkpoint is keyword-only
        jacket.value_and_grad(SMALL, mse, "sqrt")
