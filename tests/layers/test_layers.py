"""Every built-in layer's hand-written rules against JAX's autodiff of its own ``apply``.

Parametrised over the layer table (conftest.LAYERS) × dtypes (float32, float64) × widths (1
included), plus a batch of 3 in float64:
JVP (input and parameter tangents), VJP (parameter cotangents summed over the batch), the
materialised Jacobian and its declared structure, the dot-product test between the layer's own
JVP and VJP, and jit / vmap of the rules. Then hashing and the cost declarations.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (ArrayScale, DTYPES, FLOAT32, FLOAT64, LAYER_FACTORIES, LAYER_IDS, LAYERS, assert_close,
                      away_from_kinks, in_shape, normal, random_like, random_params, tree_vdot)

import jacket
from jacket.core import call_jvp, call_vjp
from jacket.testing import check_layer
from jacket.operators import Structure

WIDTHS = [1, 4]
MAKE = dict(LAYERS)

over_layers = pytest.mark.parametrize("layer_id", LAYER_IDS)
over_dtypes = pytest.mark.parametrize("dt", DTYPES, ids=repr)
over_widths = pytest.mark.parametrize("width", WIDTHS, ids=[f"n{w}" for w in WIDTHS])
# Batching does not depend on the dtype, so the batched case runs in float64 only (run time).
over_dtypes_batches = pytest.mark.parametrize(
    "dt,batch", [(FLOAT32, None), (FLOAT64, None), (FLOAT64, 3)],
    ids=["float32-single", "float64-single", "float64-batch3"])


def draw(layer_id, dt, batch, width):
    """A layer, random params, an input away from kinks, and random tangents and cotangent."""
    rng = np.random.default_rng(0)
    layer = MAKE[layer_id](width)
    params = random_params(layer, rng, dt.dtype)
    x = away_from_kinks(rng, in_shape(width, batch), dt.dtype)
    y_shape = in_shape(layer.output_shape((width,))[0], batch)
    return (layer, params, x, normal(rng, x.shape, dt.dtype), random_like(rng, params, dt.dtype),
            normal(rng, y_shape, dt.dtype))


def compare(layer, params, x, x_dot, params_dot, y_bar):
    """Each rule of ``layer`` next to JAX's autodiff of ``layer.apply`` (the reference)."""
    y = layer.apply(params, x)
    out = {"y": y}
    out["jvp_x"] = call_jvp(layer, params, x, y, x_dot, None)
    out["y_ref"], out["jvp_x_ref"] = jax.jvp(lambda x: layer.apply(params, x), (x,), (x_dot,))
    out["jvp_both"] = call_jvp(layer, params, x, y, x_dot, params_dot)
    out["jvp_both_ref"] = jax.jvp(layer.apply, (params, x), (params_dot, x_dot))[1]
    # x_dot=None stands for a zero input tangent (built-ins receive it as a symbolic zero)
    # with no tangent at all (a parameter-free layer) the engine skips the rule: a symbolic zero
    out["jvp_params"] = call_jvp(layer, params, x, y, None, params_dot)
    out["no_tangent"] = out["jvp_params"] is None
    if out["no_tangent"]:
        out["jvp_params"] = jnp.zeros_like(y)
    out["jvp_params_ref"] = jax.jvp(layer.apply, (params, x), (params_dot, jnp.zeros_like(x)))[1]
    # jax.vjp of apply sums the parameter cotangents over the batch, as the rule must
    out["vjp"] = call_vjp(layer, params, x, y, y_bar)
    out["vjp_ref"] = jax.vjp(layer.apply, params, x)[1](y_bar)
    # dot-product test between the layer's own rules: ⟨ȳ, J (ẋ, ṗ)⟩ = ⟨Jᵀȳ, (ẋ, ṗ)⟩
    params_bar, x_bar = out["vjp"]
    out["dot_lhs"] = jnp.vdot(y_bar, out["jvp_both"])
    out["dot_rhs"] = jnp.vdot(x_bar, x_dot) + tree_vdot(params_bar, params_dot)
    out["dot_size"] = jnp.vdot(jnp.abs(y_bar), jnp.abs(out["jvp_both"])) + 1
    if x.ndim == 1:
        out["jacobian"] = layer.jacobian(params, x, y)
        out["jacobian_dense"] = out["jacobian"].to_dense()
        out["jacobian_ref"] = jax.jacfwd(lambda x: layer.apply(params, x))(x)
    return out


@functools.lru_cache(maxsize=None)
def case(layer_id, dt, batch, width):
    """``compare`` for one case, in one compiled program, cached across the tests below.
    Run eagerly, every primitive would be compiled once per new shape and dtype, several times
    slower; that eager and jitted rules agree is checked in test_rules_under_jit_and_vmap."""
    layer, *arrays = draw(layer_id, dt, batch, width)
    return layer, jax.jit(compare, static_argnums=0)(layer, *arrays)


# ---- JVP ---------------------------------------------------------------------------------
@over_layers
@over_dtypes_batches
@over_widths
def test_jvp_input_tangent_matches_jax(layer_id, dt, batch, width):
    _, r = case(layer_id, dt, batch, width)
    assert r["jvp_x"].dtype == dt.dtype and r["jvp_x"].shape == r["y"].shape
    assert_close(r["y"], r["y_ref"], dt)
    assert_close(r["jvp_x"], r["jvp_x_ref"], dt)


@over_layers
@over_dtypes_batches
@over_widths
def test_jvp_params_tangent_matches_jax(layer_id, dt, batch, width):
    _, r = case(layer_id, dt, batch, width)
    assert_close(r["jvp_both"], r["jvp_both_ref"], dt)
    assert r["jvp_params"].shape == r["y"].shape
    assert r["no_tangent"] == (not jax.tree_util.tree_leaves(MAKE[layer_id](width).init(jax.random.PRNGKey(0))))
    assert_close(r["jvp_params"], r["jvp_params_ref"], dt)


# ---- VJP ---------------------------------------------------------------------------------
@over_layers
@over_dtypes_batches
@over_widths
def test_vjp_matches_jax(layer_id, dt, batch, width):
    _, r = case(layer_id, dt, batch, width)
    (params_bar, x_bar), (params_bar_ref, x_bar_ref) = r["vjp"], r["vjp_ref"]
    assert_close(params_bar, params_bar_ref, dt)
    assert_close(x_bar, x_bar_ref, dt)


@over_layers
@over_dtypes_batches
@over_widths
def test_dot_product_jvp_vjp(layer_id, dt, batch, width):
    """⟨ȳ, J (ẋ, ṗ)⟩ = ⟨Jᵀȳ, (ẋ, ṗ)⟩ between the layer's own rules, parameters included."""
    _, r = case(layer_id, dt, batch, width)
    # a sum of products: compare relative to the size of the terms, not of the (maybe small) sum
    assert abs(float(r["dot_lhs"] - r["dot_rhs"])) <= 10 * dt.rtol * float(r["dot_size"])


# ---- Jacobian ----------------------------------------------------------------------------
@over_layers
@over_dtypes
@over_widths
def test_jacobian_matches_jacfwd_and_structure(layer_id, dt, width):
    layer, r = case(layer_id, dt, None, width)
    op = r["jacobian"]
    assert op.shape == (layer.output_shape((width,))[0], width)
    assert op.structure == layer.jacobian_structure((width,))  # kind, shape and rank
    assert_close(r["jacobian_dense"], r["jacobian_ref"], dt)


# ---- transformations ---------------------------------------------------------------------
@over_layers
@over_dtypes
def test_rules_under_jit_and_vmap(layer_id, dt):
    """Eager and jit agree; vmap of the one-example rules gives the batched rules (parameter
    cotangents: the per-example ones summed)."""
    layer, params, x, x_dot, params_dot, y_bar = draw(layer_id, dt, 3, 4)
    y = layer.apply(params, x)
    y_dot = layer.jvp(params, x, y, x_dot, params_dot)
    params_bar, x_bar = layer.vjp(params, x, y, y_bar)

    rules = jax.jit(lambda params, x, x_dot, params_dot, y_bar: (
        layer.apply(params, x),
        layer.jvp(params, x, layer.apply(params, x), x_dot, params_dot),
        layer.vjp(params, x, layer.apply(params, x), y_bar)))
    assert_close(rules(params, x, x_dot, params_dot, y_bar), (y, y_dot, (params_bar, x_bar)), dt)

    per_example = jax.jit(jax.vmap(lambda x, y, x_dot, y_bar: (
        layer.jvp(params, x, y, x_dot, params_dot), layer.vjp(params, x, y, y_bar))))
    y_dot_each, (params_bar_each, x_bar_each) = per_example(x, y, x_dot, y_bar)
    assert_close(y_dot_each, y_dot, dt)
    assert_close(x_bar_each, x_bar, dt)
    assert_close(jax.tree_util.tree_map(lambda a: a.sum(axis=0), params_bar_each), params_bar, dt)


def test_relu_derivative_at_zero_is_zero_as_jax():
    """At the kink both the rule and JAX's derivative of apply use 0 (jax.nn.relu's choice)."""
    relu = jacket.ReLU()
    x = jnp.array([-1.0, 0.0, 2.0])
    ones = jnp.ones(3)
    rule = relu.jvp({}, x, relu.apply({}, x), ones)
    _, ref = jax.jvp(lambda x: relu.apply({}, x), (x,), (ones,))
    assert_close(rule, ref, FLOAT64)
    assert float(rule[1]) == 0.0


# ---- hashing and equality ----------------------------------------------------------------
@pytest.mark.parametrize("factory", LAYER_FACTORIES, ids=LAYER_IDS)
def test_equal_configs_are_equal_and_hash_equal(factory):
    a, b = factory(3), factory(3)
    assert a is not b
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1


def test_different_configs_differ():
    distinct = [jacket.Dense(3, 4), jacket.Dense(4, 3), jacket.Dense(3, 4, bias=False),
                jacket.LayerNorm(3), jacket.LayerNorm(4), jacket.LayerNorm(3, eps=1e-3),
                jacket.Tanh(), jacket.Sigmoid(), jacket.ReLU(), jacket.Softplus(), jacket.GELU(),
                jacket.Softmax(), jacket.LogSoftmax()]
    for i, a in enumerate(distinct):
        for b in distinct[i + 1:]:
            assert a != b, (a, b)
    assert len(set(distinct)) == len(distinct)
    assert len({hash(layer) for layer in distinct}) == len(distinct)


def test_user_layer_is_hashable_and_uses_the_defaults(key, rng):
    assert ArrayScale(3) == ArrayScale(3) and hash(ArrayScale(3)) == hash(ArrayScale(3))
    assert ArrayScale(3) != ArrayScale(4) and ArrayScale(3) != ArrayScale(3, label="other")
    assert "features=3" in repr(ArrayScale(3))

    layer = ArrayScale(3)
    params = layer.init(key).astype(jnp.float64)
    x = away_from_kinks(rng, (3,), jnp.float64)
    op = layer.jacobian(params, x, layer.apply(params, x))  # default: JVPs of unit vectors
    assert op.structure == Structure("matrix", 3, 3) == layer.jacobian_structure((3,))
    assert_close(op.to_dense(), jax.jacfwd(lambda x: layer.apply(params, x))(x), FLOAT64)
    assert layer.jvp_cost((3,)) == 9 and layer.vjp_cost((3,)) == 9 and layer.jacobian_cost((3,)) == 27


def test_layer_holding_an_array_is_rejected_by_hash():
    class Holder(jacket.Layer):
        def __init__(self):
            self.table = [1, 2, 3]  # a list: not static configuration

    with pytest.raises(TypeError, match="Holder is not hashable.*arrays go in params"):
        hash(Holder())


# ---- cost declarations -------------------------------------------------------------------
@pytest.mark.parametrize("n_in,n_out", [(1, 1), (3, 5), (7, 2)])
def test_dense_costs(n_in, n_out):
    layer = jacket.Dense(n_in, n_out)
    assert layer.jvp_cost((n_in,)) == n_in * n_out
    assert layer.vjp_cost((n_in,)) == n_in * n_out
    assert layer.jacobian_cost((n_in,)) == 0
    assert layer.jacobian_structure((n_in,)) == Structure("matrix", n_out, n_in)
    # on a sequence (T, n_in): the same map at every position, Jacobian I_T ⊗ wᵀ (4 shared blocks)
    assert layer.jvp_cost((4, n_in)) == 4 * n_in * n_out
    assert layer.jacobian_structure((4, n_in)) == Structure("matrix", 4 * n_out, 4 * n_in, blocks=4, shared=True)


@pytest.mark.parametrize("layer", [jacket.Tanh(), jacket.Sigmoid(), jacket.ReLU(), jacket.Softplus(),
                                   jacket.GELU()], ids=repr)
@pytest.mark.parametrize("n", [1, 6])
def test_elementwise_costs(layer, n):
    assert layer.jvp_cost((n,)) == n
    assert layer.vjp_cost((n,)) == n
    assert layer.jacobian_cost((n,)) == n
    assert layer.jacobian_structure((n,)) == Structure("diagonal", n, n)
    assert layer.jacobian_structure((2, 3, n)) == Structure("diagonal", 6 * n, 6 * n)


@pytest.mark.parametrize("layer,rank", [(jacket.Softmax(), 1), (jacket.LogSoftmax(), 1),
                                        (jacket.LayerNorm(5), 2)], ids=repr)
def test_low_rank_structures(layer, rank):
    assert layer.jacobian_structure((5,)) == Structure("dplr", 5, 5, rank)
    # over the last axis of a (3, 5) sequence: one block per position, each of that rank
    assert layer.jacobian_structure((3, 5)) == Structure("dplr", 15, 15, rank, blocks=3)


def test_dense_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"Dense in_features must be a positive integer, got 0"):
        jacket.Dense(0, 3)
    with pytest.raises(ValueError, match=r"takes inputs whose last axis has 3 entries, got shape \(4,\)"):
        jacket.Dense(3, 2).output_shape((4,))
    with pytest.raises(ValueError, match=r"Dense\(3, 2\): x has shape \(4,\), but its last axis must have 3"):
        jacket.Dense(3, 2).apply({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, jnp.ones(4))


# ---- shaped inputs -----------------------------------------------------------------------
@pytest.mark.parametrize("entry", jacket.registry.LAYERS, ids=lambda e: e.name)
def test_every_builtin_on_a_sequence_passes_the_checker(entry):
    """Every built-in on a (T, d) example and a batch of them: jvp, vjp, the structured Jacobian
    (block structure over positions) and its declared structure against jax.jvp/vjp/jacfwd."""
    check_layer(entry.build(4, 3), in_shape=(2, 4), dtype="float64")


# ---- the shaped built-ins: images, sequences, glue, blocks ----------------------------------------
def _shaped_cases():
    """(entry, dtype) for every shaped built-in; attention's float32 runs (5 s each, its float64
    runs check the same rules tighter) are in the slow suite."""
    for entry in jacket.registry.SHAPED:
        for dtype in DTYPES:
            slow = entry.name.startswith("attention") and dtype.name == "float32"
            yield pytest.param(entry, dtype, id=f"{entry.name}-{dtype!r}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("entry, dtype", list(_shaped_cases()))
def test_every_shaped_builtin_passes_the_checker(entry, dtype):
    """Every image, sequence, glue and block built-in at its registry shape, on one example and a
    batch: jvp, vjp (parameter cotangents included), the Jacobian and its declared structure
    against jax.jvp / jax.vjp / jax.jacfwd and finite differences."""
    check_layer(entry.build(), in_shape=entry.in_shape, dtype=dtype.name)


def test_shaped_registry_names_and_shapes():
    names = [entry.name for entry in jacket.registry.SHAPED + jacket.registry.LAYERS]
    assert len(names) == len(set(names))
    for entry in jacket.registry.SHAPED:
        layer = entry.build()
        assert isinstance(layer, jacket.Layer) and entry.family in ("image", "sequence", "glue", "block")
        assert layer.bind(entry.in_shape).output_shape(entry.in_shape)  # the shape is one the layer takes
    assert jacket.registry.layer("conv2d").in_shape == (2, 7, 6)
    with pytest.raises(ValueError, match=r"unknown built-in layer 'conv3d'; choose from dense, .*attention"):
        jacket.registry.layer("conv3d")
