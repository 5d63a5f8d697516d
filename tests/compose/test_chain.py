"""Chain: forward and reverse accumulation (the sweeps ``jacket.compose.record``, ``push``,
``pull``, and the chain's own layer protocol ``chain.jvp`` / ``chain.vjp``) against JAX's autodiff
of ``chain.apply``, on random chains (hypothesis) in float64 and a fixed float32 MLP; jit and
vmap; dims inference; and clear errors for input that doesn't fit. (Backpropagation with a loss,
``jacket.value_and_grad``: tests/transforms/test_backprop.py.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ArrayScale, FLOAT32, FLOAT64, assert_close, away_from_kinks, normal, random_like, random_params
from hypothesis import given, settings
from hypothesis import strategies as st

import jacket
from jacket.compose import pull, push, record

ACTIVATIONS = [jacket.Tanh, jacket.Sigmoid, jacket.ReLU, jacket.Softplus, jacket.GELU, jacket.Softmax,
               jacket.LogSoftmax]
KINDS = ["dense", "layernorm"] + [cls.__name__ for cls in ACTIVATIONS]


@st.composite
def chains(draw):
    """Lengths 1–6, widths 1–8, every layer kind: Dense changes the width (with or without bias),
    LayerNorm is built for the width it gets, activations keep it."""
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
    # in_shape only where the first layer doesn't fix it: the rest is inferred
    in_shape = n_0 if layers[0].input_shape() is None else None
    chain = jacket.Chain(layers, in_shape=in_shape)
    assert chain.dims[0] == n_0 and chain.dims[-1] == n
    return chain


def draw_case(chain, batch, seed, dtype):
    """Random params (not init: LayerNorm's init would hide its scale and offset terms), an input
    and tangents."""
    rng = np.random.default_rng(seed)
    params = tuple(random_params(layer, rng, dtype) for layer in chain)
    shape_in = (chain.dims[0],) if batch is None else (batch, chain.dims[0])
    shape_out = shape_in[:-1] + (chain.dims[-1],)
    x = away_from_kinks(rng, shape_in, dtype)
    return (params, x, normal(rng, shape_in, dtype), random_like(rng, params, dtype),
            normal(rng, shape_out, dtype), rng)


def compare(chain, params, x, x_dot, params_dot, y_bar):
    """The chain's own accumulations next to JAX's autodiff of ``chain.apply`` (the reference):
    the sweeps (push, record + pull) and the chain as a layer (``chain.jvp``, ``chain.vjp``)."""
    out = {}
    out["jvp"] = push(chain, params, x, x_dot)
    out["jvp_ref"] = jax.jvp(lambda x: chain.apply(params, x), (x,), (x_dot,))
    out["jvp_params"] = push(chain, params, x, x_dot, params_dot)
    out["jvp_params_ref"] = jax.jvp(chain.apply, (params, x), (params_dot, x_dot))
    y, tape = record(chain, params, x)
    y_ref, pullback_ref = jax.vjp(chain.apply, params, x)
    out["vjp"] = (y, pull(chain, params, tape, y_bar))
    out["vjp_ref"] = (y_ref, pullback_ref(y_bar))
    # the layer protocol: y given, tangents and cotangents only
    out["layer"] = (chain.jvp(params, x, y, x_dot, params_dot), chain.vjp(params, x, y, y_bar))
    out["layer_ref"] = (out["jvp_params_ref"][1], out["vjp_ref"][1])
    return out


@settings(max_examples=15, deadline=None)
@given(chain=chains(), batch=st.sampled_from([None, 3]), seed=st.integers(0, 2**16))
def test_random_chains_match_jax(chain, batch, seed):
    """push (input and parameter tangents), record + pull, and the chain's layer rules in float64,
    tight. One compiled program per example: compiling each primitive eagerly for every new shape
    is much slower."""
    params, x, x_dot, params_dot, y_bar, _ = draw_case(chain, batch, seed, jnp.float64)
    r = jax.jit(compare, static_argnums=0)(chain, params, x, x_dot, params_dot, y_bar)
    for name in ("jvp", "jvp_params", "vjp", "layer"):
        # ten times the one-layer tolerance: up to six layers of rounding, LayerNorm's 1/σ included
        assert_close(r[name], r[name + "_ref"], FLOAT64, scale=10)


# ---- a fixed, realistic float32 case -----------------------------------------------------
MLP = jacket.mlp([64, 128, 128, 10], activation="tanh")


def test_float32_mlp_matches_jax(key):
    _, x, x_dot, params_dot, y_bar, _ = draw_case(MLP, 32, 0, jnp.float32)
    params = MLP.init(key)  # float32, LeCun-normal as in training
    r = jax.jit(compare, static_argnums=0)(MLP, params, x, x_dot, params_dot, y_bar)
    assert r["vjp"][0].dtype == jnp.float32 and r["jvp"][1].dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(r["vjp"][1][0])} == {jnp.dtype("float32")}
    for name in ("jvp", "jvp_params", "vjp", "layer"):
        # float32 through 128-wide products: a few hundred roundings per output
        assert_close(r[name], r[name + "_ref"], FLOAT32, scale=10)


# ---- parameter tangents ------------------------------------------------------------------
SMALL = jacket.Chain([jacket.Dense(3, 4), jacket.GELU(), jacket.LayerNorm(4), jacket.Dense(4, 2, bias=False),
                      jacket.Softmax()])


def small_case(batch=2):
    """One shape for every test of SMALL: eager primitives compiled once serve them all."""
    params, x, x_dot, params_dot, y_bar, _ = draw_case(SMALL, batch, 1, jnp.float64)
    return params, x, x_dot, params_dot, y_bar


def test_params_dot_with_absent_entries_and_no_x_dot():
    """``None`` (or ``{}``) entries are zero tangents; ``x_dot=None`` is a zero input tangent."""
    params, x, x_dot, params_dot, _ = small_case()
    partial = (None, {}, params_dot[2], None, {})
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    reference = (zeros[0], zeros[1], params_dot[2], zeros[3], zeros[4])
    y, y_dot = push(SMALL, params, x, None, partial)
    y_ref, y_dot_ref = jax.jvp(SMALL.apply, (params, x), (reference, jnp.zeros_like(x)))
    assert_close((y, y_dot), (y_ref, y_dot_ref), FLOAT64)
    assert float(jnp.abs(y_dot).max()) > 0  # the LayerNorm tangent does reach the output
    # the chain as a layer: the same tangent, y given
    assert_close(SMALL.jvp(params, x, y, None, partial), y_dot_ref, FLOAT64)

    # no tangent at all: the output tangent is absent (None, a symbolic zero), the output is y
    for absent in (None, (None,) * 5, ({},) * 5):
        y, y_dot = push(SMALL, params, x, None, absent)
        assert y_dot is None
        assert_close(y, y_ref, FLOAT64)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_user_layer_with_array_params_takes_a_params_tangent(jit):
    chain = jacket.Chain([jacket.Dense(3, 3), ArrayScale(3), jacket.Tanh()])
    rng = np.random.default_rng(2)
    params = (random_params(chain[0], rng, jnp.float64), normal(rng, (3,), jnp.float64), {})
    x, x_dot = normal(rng, (2, 3), jnp.float64), normal(rng, (2, 3), jnp.float64)
    params_dot = random_like(rng, params, jnp.float64)
    def run(params, x, x_dot, params_dot):
        return push(chain, params, x, x_dot, params_dot)
    run = jax.jit(run) if jit else run
    assert_close(run(params, x, x_dot, params_dot),
                 jax.jvp(chain.apply, (params, x), (params_dot, x_dot)), FLOAT64)


# ---- transformations ---------------------------------------------------------------------
def test_jit_with_the_chain_as_static_argument():
    traces = []

    def apply(chain, params, x):
        traces.append(chain)
        return chain.apply(params, x)
    apply = jax.jit(apply, static_argnums=0)

    params, x, *_ = small_case()
    twin = jacket.Chain(list(SMALL.layers))  # built separately, equal and equal hash
    assert twin == SMALL and hash(twin) == hash(SMALL) and twin is not SMALL
    assert_close(apply(SMALL, params, x), SMALL.apply(params, x), FLOAT64)
    assert_close(apply(twin, params, x), SMALL.apply(params, x), FLOAT64)
    assert len(traces) == 1  # the twin hit the cache

    other = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.LayerNorm(4), jacket.Dense(4, 2, bias=False),
                          jacket.Softmax()])
    assert other != SMALL
    apply(other, params, x)
    assert len(traces) == 2


def test_jit_matches_eager():
    params, x, x_dot, params_dot, y_bar = small_case()

    def everything(params, x, x_dot, params_dot, y_bar):
        y, tape = record(SMALL, params, x)
        return (push(SMALL, params, x, x_dot, params_dot), pull(SMALL, params, tape, y_bar),
                SMALL.vjp(params, x, y, y_bar))
    assert_close(jax.jit(everything)(params, x, x_dot, params_dot, y_bar),
                 everything(params, x, x_dot, params_dot, y_bar), FLOAT64)


def test_vmap_of_per_example_vjp():
    """Per-example gradients: vmap of the one-example pullback; their sum is the batch pullback."""
    params, x, _, _, y_bar = small_case()

    def one(x, y_bar):
        return pull(SMALL, params, record(SMALL, params, x)[1], y_bar)

    def one_ref(x, y_bar):
        return jax.vjp(SMALL.apply, params, x)[1](y_bar)
    per_example, per_example_ref = jax.jit(lambda x, y_bar: (jax.vmap(one)(x, y_bar),
                                                             jax.vmap(one_ref)(x, y_bar)))(x, y_bar)
    assert_close(per_example, per_example_ref, FLOAT64)
    params_bar_each, x_bar_each = per_example
    assert jax.tree_util.tree_leaves(params_bar_each)[0].shape[0] == x.shape[0]
    params_bar, x_bar = pull(SMALL, params, record(SMALL, params, x)[1], y_bar)
    assert_close(x_bar_each, x_bar, FLOAT64)
    assert_close(jax.tree_util.tree_map(lambda a: a.sum(axis=0), params_bar_each), params_bar, FLOAT64)


# ---- dims --------------------------------------------------------------------------------
def test_dims_are_inferred():
    assert SMALL.dims == (3, 4, 4, 4, 2, 2)
    assert len(SMALL) == 5 and SMALL[0] == jacket.Dense(3, 4) and list(SMALL) == list(SMALL.layers)
    assert jacket.Chain([jacket.LayerNorm(6)]).dims == (6, 6)
    assert jacket.Chain([jacket.Dense(2, 7)], in_shape=2).dims == (2, 7)


def test_in_shape_needed_when_the_first_layer_is_an_activation():
    unbound = jacket.Chain([jacket.Tanh(), jacket.Dense(3, 2)])  # a block: bound where it is used
    assert not unbound.bound and unbound.bind((3,)).dims == (3, 3, 2)
    for use in (lambda c: c.dims, lambda c: jacket.plan(c, 1), lambda c: c.apply(({}, {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}), jnp.ones(3))):
        with pytest.raises(ValueError, match=r"does not know its input shape: its first layer Tanh\(\) takes any "
                                             r"shape; pass Chain\(\.\.\., in_shape=\)"):
            use(unbound)
    assert jacket.Chain([jacket.Tanh(), jacket.Dense(3, 2)], in_shape=3).dims == (3, 3, 2)
    assert jacket.Chain([jacket.Softmax()], in_shape=5).dims == (5, 5)


# ---- bad input ---------------------------------------------------------------------------
def test_layers_that_dont_fit_name_the_layer_and_both_shapes():
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\(5, 2\)\) cannot take layer 1 \(Dense\(3, 4\)\) of "
                                         r"shape \(4,\): .*last axis has 5 entries"):
        jacket.Chain([jacket.Dense(3, 4), jacket.Dense(5, 2)])
    with pytest.raises(ValueError, match=r"layer 3 \(LayerNorm\(2\)\) cannot take layer 2 \(Tanh\(\)\) of shape \(4,\)"):
        jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.LayerNorm(2)])
    with pytest.raises(ValueError, match=r"layer 1 \(Dense\(3, 4\)\) cannot take the chain's input of shape \(5,\)"):
        jacket.Chain([jacket.Dense(3, 4)], in_shape=5)


@pytest.mark.parametrize("in_shape, error", [(0, ValueError), (-2, ValueError), (2.5, TypeError),
                                             (True, TypeError), ((3, 0), ValueError), ((), ValueError)])
def test_in_shape_must_be_positive_integers(in_shape, error):
    with pytest.raises(error, match=r"Chain in_shape( axis \d)? must (be a positive integer|have at least one axis)"):
        jacket.Chain([jacket.Tanh()], in_shape=in_shape)


def test_chain_rejects_what_is_not_a_layer():
    with pytest.raises(ValueError, match="Chain needs at least one layer"):
        jacket.Chain([])
    with pytest.raises(TypeError, match=r"layer 2 is 'relu' \(str\), not a jacket.Layer"):
        jacket.Chain([jacket.Dense(2, 2), "relu"])


def test_x_of_the_wrong_width_or_rank_or_dtype():
    params, x, *_ = small_case()
    with pytest.raises(ValueError, match=r"Chain: x has shape \(2, 5\), but must have shape \(3,\) "
                                         r"\(one example\) or \(batch,\) \+ \(3,\)"):
        SMALL.apply(params, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"jacket.jacobian: x has shape \(5,\)"):
        jacket.jacobian(SMALL, 1)(params, jnp.ones(5))
    with pytest.raises(ValueError, match=r"x has shape \(2, 2, 3\), but must have shape \(3,\)"):
        SMALL(params, jnp.ones((2, 2, 3)))
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype int"):
        SMALL.apply(params, jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"where: x_dot has shape \(2, 5\), but must have shape \(3,\)"):
        SMALL.check_input(jnp.ones((2, 5)), "where", "x_dot")
    assert SMALL.check_input(x, "where") is x


def test_tangents_of_the_wrong_shape():
    """The sweeps take their tangents unchecked (the front door checks what users pass:
    tests/transforms); a chain's own check names the tangent, the layer and the leaf."""
    *_, params_dot, _ = small_case()
    SMALL.check_params(params_dot, "where", "params_dot")  # a tangent like params passes
    swapped = ({"w": params_dot[0]["w"].T, "b": params_dot[0]["b"]},) + params_dot[1:]
    with pytest.raises(ValueError, match=r"where: layer 1: params_dot\[0\]\['w'\] for Dense\(3, 4\) has shape "
                                         r"\(4, 3\), expected \(3, 4\)"):
        SMALL.check_params(swapped, "where", "params_dot")
    missing_bias = ({"w": params_dot[0]["w"]},) + params_dot[1:]
    with pytest.raises(ValueError, match=r"layer 1: params_dot\[0\] for Dense\(3, 4\): missing params_dot\[0\]\['b'\]"):
        SMALL.check_params(missing_bias, "where", "params_dot")
    with pytest.raises(ValueError, match=r"where: params_dot must be a tuple with one entry per layer \(5\), "
                                         r"got a tuple of length 4"):
        SMALL.check_params(params_dot[:4], "where", "params_dot")


def test_params_of_the_wrong_length():
    params, x, *_ = small_case()
    with pytest.raises(ValueError, match=r"Chain: params must be a tuple with one entry per "
                                         r"layer \(5\), got a tuple of length 4"):
        SMALL.apply(params[:4], x)
    with pytest.raises(ValueError, match=r"params must be a tuple with one entry per layer \(5\), got dict"):
        jacket.jacobian(SMALL, 1)(params[0], x)
    with pytest.raises(ValueError, match=r"one entry per layer \(5\), got a tuple of length 6"):
        SMALL(params + ({},), x)
