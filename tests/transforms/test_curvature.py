"""Curvature products (transforms/_curvature.py) against JAX in float64: Hessian-vector products
with respect to params and x, Gauss-Newton-vector products and dense Hessians, on small MLPs for
every activation with a second-order rule and every loss, on a chain of Residual and Parallel
blocks, on user layers with their own ``vjp_jvp``, on random small chains (hypothesis); and the
error naming the path to a layer without a second-order rule.

Each case runs the rules and the reference in one jitted program (compiling is the run time).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jacket

LOSSES = [cls() for cls in jacket.registry.LOSSES.values()]


# ---- user layers with their own second-order rules (no symbolic zeros: they get arrays) -------
class UserDense(jacket.Layer):
    """``y = x w + b`` written for this file, with ``vjp_jvp``."""

    def __init__(self, n_in, n_out):
        self.n_in, self.n_out = n_in, n_out

    def init(self, key):
        return {"w": jax.random.normal(key, (self.n_in, self.n_out)) / np.sqrt(self.n_in),
                "b": jnp.zeros(self.n_out)}

    def input_shape(self):
        return (self.n_in,)

    def output_shape(self, in_shape):
        return tuple(in_shape[:-1]) + (self.n_out,)

    def apply(self, params, x):
        return x @ params["w"] + params["b"]

    def jvp(self, params, x, y, x_dot, params_dot):
        return x_dot @ params["w"] + x @ params_dot["w"] + params_dot["b"]

    def vjp(self, params, x, y, y_bar):
        xs, ys = x.reshape(-1, self.n_in), y_bar.reshape(-1, self.n_out)
        return {"w": xs.T @ ys, "b": ys.sum(0)}, y_bar @ params["w"].T

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        xs, xds = x.reshape(-1, self.n_in), x_dot.reshape(-1, self.n_in)
        ys, yds = y_bar.reshape(-1, self.n_out), y_bar_dot.reshape(-1, self.n_out)
        return ({"w": xds.T @ ys + xs.T @ yds, "b": yds.sum(0)},
                y_bar_dot @ params["w"].T + y_bar @ params_dot["w"].T)


class UserTanh(jacket.Layer):
    def apply(self, params, x):
        return jnp.tanh(x)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def jvp(self, params, x, y, x_dot, params_dot):
        return (1 - y * y) * x_dot

    def vjp(self, params, x, y, y_bar):
        return {}, (1 - y * y) * y_bar

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        return {}, (1 - y * y) * y_bar_dot - 2 * y * y_dot * y_bar


class FirstOrderOnly(jacket.Layer):
    """``y = sin(x)`` with first-order rules only."""

    def apply(self, params, x):
        return jnp.sin(x)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def jvp(self, params, x, y, x_dot, params_dot):
        return jnp.cos(x) * x_dot

    def vjp(self, params, x, y, y_bar):
        return {}, jnp.cos(x) * y_bar


# ---- the references -------------------------------------------------------------------------
def target_for(loss, rng, shape):
    if isinstance(loss, jacket.SoftmaxCrossEntropy):
        return jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]))
    if isinstance(loss, jacket.BinaryCrossEntropyWithLogits):
        return jnp.asarray(rng.uniform(size=shape))
    return jnp.asarray(rng.standard_normal(shape))


def draw(chain, loss, seed, batch=2):
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)),
                                    chain.init(jax.random.PRNGKey(seed), jnp.float64))
    x = jnp.asarray(rng.standard_normal((batch,) + chain.in_shape))
    v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)
    v_x = jnp.asarray(rng.standard_normal(x.shape))
    return params, x, target_for(loss, rng, (batch,) + chain.out_shape), v, v_x


def products(chain, loss, params, x, target, v, v_x, hessians=False):
    """``{name: (ours, JAX's)}`` for one chain and loss, in one program."""
    def L(p, x):
        return loss.apply(chain.apply(p, x), target)

    def ggn_ref(p, v):
        y, y_dot = jax.jvp(lambda q: chain.apply(q, x), (p,), (v,))
        h = jax.hessian(lambda y: loss.apply(y, target))(y)
        u = jnp.tensordot(h, y_dot, axes=y.ndim)
        return jax.vjp(lambda q: chain.apply(q, x), p)[1](u)[0]

    out = {
        "hvp": (jacket.hvp(chain, loss)(params, x, target, v),
                jax.jvp(jax.grad(L), (params, x), (v, jnp.zeros_like(x)))[1]),
        "hvp_x": (jacket.hvp(chain, loss, argnums=1)(params, x, target, v_x),
                  jax.jvp(jax.grad(L, argnums=1), (params, x), (jax.tree_util.tree_map(jnp.zeros_like, v), v_x))[1]),
        "ggn": (jacket.ggn_vp(chain, loss)(params, x, target, v), ggn_ref(params, v)),
    }
    if hessians:
        flat, unravel = ravel_pytree(params)
        out["hessian"] = (jacket.hessian(chain, loss)(params, x, target),
                          jax.hessian(lambda f: L(unravel(f), x))(flat))
        out["hessian_x"] = (jacket.hessian(chain, loss, argnums=1)(params, x, target),
                            jax.hessian(L, argnums=1)(params, x))
    return out


def check(chain, loss, seed=0, hessians=False, batch=2):
    args = draw(chain, loss, seed, batch)
    results = jax.jit(products, static_argnums=(0, 1, 7))(chain, loss, *args, hessians)
    for name, (ours, ref) in results.items():
        assert_close(ours, ref, FLOAT64, scale=10)
    return results


# ---- MLPs and blocks --------------------------------------------------------------------------
ACTIVATIONS = ("tanh", "sigmoid", "softplus")  # the built-in activations with a second-order rule


@pytest.mark.parametrize("act, loss", list(zip(ACTIVATIONS, LOSSES)), ids=lambda a: str(a))
def test_mlp_products_match_jax(act, loss):
    """A 3-4-2 MLP: each loss with one activation (the full grid is the slow test below); the
    dense Hessians in params and x for the first."""
    chain = jacket.mlp([3, 4, 2], act)
    assert chain.has_second_order
    check(chain, loss, seed=1, hessians=(act == ACTIVATIONS[0]))


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES, ids=repr)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_mlp_products_match_jax_for_every_activation_and_loss(act, loss):
    check(jacket.mlp([3, 4, 2], act), loss, seed=2, hessians=True)


BLOCKS = jacket.Chain([
    jacket.Dense(3, 4), jacket.Tanh(),
    jacket.Residual([jacket.Dense(4, 4), jacket.Sigmoid()]),
    jacket.Parallel([jacket.Dense(4, 2), [jacket.Softplus(), jacket.Dense(4, 2)]], merge="sum"),
    jacket.Parallel([jacket.Tanh(), jacket.Chain([jacket.Dense(2, 1)])], merge="concat"),
    jacket.Dense(3, 2)])


def test_blocks_products_match_jax():
    """Residual, Parallel (sum and concat) and a nested Chain."""
    assert BLOCKS.has_second_order and BLOCKS[2].has_second_order
    check(BLOCKS, jacket.SoftmaxCrossEntropy(), seed=3)


@pytest.mark.slow
def test_blocks_hessians_match_jax():
    r = check(BLOCKS, jacket.BinaryCrossEntropyWithLogits(), seed=4, hessians=True)
    h = np.asarray(r["hessian"][0])
    assert h.shape == (ravel_pytree(r["hvp"][0])[0].size,) * 2
    np.testing.assert_allclose(h, h.T, atol=1e-12)


def test_a_float32_hessian_with_more_than_128_columns_equals_jax_hessian():
    """Realistic size, float32: 676 HVPs under one vmap, the softmax loss rule broadcast over
    them. jaxlib 0.10.2 (excluded in pyproject) miscompiled this on the CPU: every column past
    the 128th came out wrong (|error| ~ 0.1 against entries ~ 0.2); this guards the stack."""
    from conftest import FLOAT32
    chain, loss = jacket.mlp([16, 32, 4], activation="tanh"), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 16), jnp.float32)
    labels = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 4, jnp.int32)

    @jax.jit
    def both(params, x, labels):
        flat, unravel = ravel_pytree(params)
        expected = jax.hessian(lambda f: loss.apply(chain.apply(unravel(f), x), labels))(flat)
        return jacket.hessian(chain, loss)(params, x, labels), expected
    got, expected = both(params, x, labels)
    assert got.shape == (676, 676) and got.dtype == jnp.float32
    assert_close(got, expected, FLOAT32, scale=10)


def test_user_layers_with_their_own_vjp_jvp_and_a_single_example():
    """Rules that receive zeros for absent tangents (no symbolic_zeros), a nested Chain as a
    layer, an unbatched input."""
    chain = jacket.Chain([UserDense(3, 4), UserTanh(), jacket.Residual([UserDense(4, 4), UserTanh()]),
                          jacket.Chain([UserTanh(), UserDense(4, 4)]), UserDense(4, 2)])
    assert chain[3].has_second_order
    args = draw(chain, jacket.MeanSquaredError(), 5)
    args = (args[0], args[1][0], args[2][0], args[3], args[4][0])  # one example
    results = jax.jit(products, static_argnums=(0, 1, 7))(chain, jacket.MeanSquaredError(), *args, False)
    for ours, ref in results.values():
        assert_close(ours, ref, FLOAT64, scale=10)


# ---- random small chains ----------------------------------------------------------------------
D = 3
LEAVES = {"dense": lambda: jacket.Dense(D, D), "tanh": jacket.Tanh, "sigmoid": jacket.Sigmoid,
          "softplus": jacket.Softplus, "user_dense": lambda: UserDense(D, D), "user_tanh": UserTanh}


def trees():
    leaf = st.sampled_from(sorted(LEAVES)).map(lambda k: LEAVES[k]())
    inner = st.lists(leaf, min_size=1, max_size=2)
    return st.one_of(leaf, inner.map(jacket.Residual), inner.map(jacket.Chain),
                     st.lists(inner, min_size=2, max_size=2).map(lambda b: jacket.Parallel(b, merge="sum")))


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(st.lists(trees(), min_size=1, max_size=3), st.sampled_from(range(len(LOSSES))), st.integers(0, 2 ** 16))
def test_random_chains_match_jax(body, loss_index, seed):
    chain = jacket.Chain([jacket.Dense(2, D)] + body + [jacket.Dense(D, 2)])
    check(chain, LOSSES[loss_index], seed)


# ---- what is missing ---------------------------------------------------------------------------
def test_a_layer_without_a_second_order_rule_is_named_by_its_path():
    chain = jacket.Chain([jacket.Dense(3, 3), jacket.Residual([FirstOrderOnly(), jacket.Tanh()]),
                          jacket.Dense(3, 2)])
    assert not chain.has_second_order and not chain[1].has_second_order
    assert not FirstOrderOnly().has_second_order
    loss = jacket.MeanSquaredError()
    pattern = r"jacket.hvp: layer 2 → Residual → layer 1 \(FirstOrderOnly\(\)\) has no second-order rule"
    with pytest.raises(NotImplementedError, match=pattern):
        jacket.hvp(chain, loss)
    with pytest.raises(NotImplementedError, match=pattern):
        jacket.hessian(chain, loss, argnums=1)
    with pytest.raises(NotImplementedError, match=r"Residual → layer 1 \(FirstOrderOnly\(\)\)"):
        chain[1].vjp_jvp({}, jnp.ones(3), None, jnp.ones(3), jnp.ones(3), None, None, None)

    @jax.jit
    def ggn(params, x, target, v):  # the Gauss-Newton product needs no second-order layer rule
        y, y_dot = jax.jvp(lambda q: chain.apply(q, x), (params,), (v,))
        ref = jax.vjp(lambda q: chain.apply(q, x), params)[1](2 * y_dot / y.size)[0]  # MSE: H = 2 I / size
        return jacket.ggn_vp(chain, loss)(params, x, target, v), ref
    assert_close(*ggn(*draw(chain, loss, 1)[:4]), FLOAT64, scale=10)


def test_bad_arguments_are_refused():
    chain = jacket.mlp([3, 4, 2])
    loss = jacket.MeanSquaredError()
    for make in (jacket.hvp, jacket.ggn_vp, jacket.hessian):
        for bad in ("x", "params", 2, True, (0, 1)):
            with pytest.raises(ValueError, match=r"argnums must be 0 \(the parameters\) or 1 \(the input x\)"):
                make(chain, loss, argnums=bad)
        with pytest.raises(TypeError):  # every option is keyword-only
            make(chain, loss, 1)
    with pytest.raises(TypeError, match=r"jacket.ggn_vp: its second argument must be a jacket.Loss"):
        jacket.ggn_vp(chain, "mse")
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x, target = jnp.ones((2, 3)), jnp.ones((2, 2))
    with pytest.raises(ValueError, match=r"jacket.hvp: v has shape \(3,\) but must have the shape of x, \(2, 3\)"):
        jacket.hvp(chain, loss, argnums=1)(params, x, target, jnp.ones((3,)))
    with pytest.raises(TypeError, match=r"with argnums=1, v must be an array shaped like x"):
        jacket.ggn_vp(chain, loss, argnums=1)(params, x, target, params)


def test_tangents_of_the_wrong_shape_name_the_layer_and_leaf():
    """``v`` along the parameters is checked as params are: the layer, the leaf and both shapes."""
    chain = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.Dense(4, 2)])
    loss = jacket.MeanSquaredError()
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x, target = jnp.ones((2, 3)), jnp.ones((2, 2))
    swapped = ({"w": params[0]["w"].T, "b": params[0]["b"]},) + params[1:]
    missing_bias = ({"w": params[0]["w"]},) + params[1:]
    for make in (jacket.hvp, jacket.ggn_vp):
        where = make.__name__
        fn = make(chain, loss)
        with pytest.raises(ValueError, match=rf"jacket.{where}: layer 1: v\[0\]\['w'\] for Dense\(3, 4\) has shape "
                                             r"\(4, 3\), expected \(3, 4\)"):
            fn(params, x, target, swapped)
        with pytest.raises(ValueError, match=r"layer 1: v\[0\] for Dense\(3, 4\): missing v\[0\]\['b'\]"):
            fn(params, x, target, missing_bias)
        with pytest.raises(ValueError, match=rf"jacket.{where}: v must be a tuple with one entry per layer \(3\), "
                                             r"got a tuple of length 2"):
            fn(params, x, target, params[:2])


def test_the_dense_hessian_is_refused_above_its_memory_limit_and_chunks_give_the_same_matrix():
    chain, loss = jacket.mlp([3, 4, 2], "tanh"), jacket.MeanSquaredError()  # 26 parameters
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x, target = jnp.ones((2, 3)), jnp.ones((2, 2))
    assert jacket.transforms.HESSIAN_LIMIT == 2 ** 30
    with pytest.raises(ValueError, match=r"jacket.hessian: the Hessian over 26 parameters is a 26 × 26 matrix .* more "
                                         r"than memory_limit=5,000 bytes; use jacket.hvp"):
        jacket.hessian(chain, loss, memory_limit=5000)(params, x, target)
    with pytest.raises(ValueError, match=r"the Hessian over 6 input entries"):
        jacket.hessian(chain, loss, argnums=1, memory_limit="100B")(params, x, target)
    both = jax.jit(lambda p, x, t: (jacket.hessian(chain, loss, chunk=5, memory_limit=None)(p, x, t),
                                    jacket.hessian(chain, loss, memory_limit=26 * 26 * 8)(p, x, t)))
    chunked, whole = both(params, x, target)
    assert chunked.shape == (26, 26)
    assert_close(chunked, whole, FLOAT64)
