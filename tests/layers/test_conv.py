"""The image layers (layers/_conv.py): their hand-written rules against JAX and finite differences
(``check_layer``, one example and a batch), planted wrong rules that the checker must catch,
shapes, costs and error messages, and the Jacobian of a small convolutional chain in every order.

Kept cheap: small images, and most configurations in one dtype only (each check compiles a
handful of programs, which is nearly all of its run time).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close

import jacket
from jacket.core import size
from jacket.layers._conv import AvgPool2D, Conv1D, Conv2D, MaxPool2D
from jacket.operators import Structure
from jacket.testing import RuleError, check_layer

# (layer, in_shape, dtype). With the registry's rows: stride 1 and 2, SAME and VALID, odd and even
# kernels, H ≠ W, sizes the stride does not divide, overlapping pooling windows.
# The registry's rows (conv2d, conv2d_valid, conv1d, avgpool2d, maxpool2d) pass check_layer in both
# dtypes in tests/layers/test_layers.py; these are further geometries, one dtype each.
CASES = [
    (AvgPool2D(2), (1, 5, 6), "float32"),
    (MaxPool2D((3, 2), stride=(2, 1)), (1, 7, 6), "float64"),
]


@pytest.mark.parametrize("layer, shape, dtype", CASES, ids=[f"{c[0]!r}-{c[2]}" for c in CASES])
def test_rules_pass_the_checker(layer, shape, dtype):
    check_layer(layer, in_shape=shape, dtype=dtype)


# More convolution geometries, cheaper than check_layer: every rule against jax.jvp / jax.vjp in
# one compiled program. (layer, x shape: one example or a batch)
MORE = [
    (Conv2D(1, 2, (4, 2), stride=2, padding=((1, 3), (0, 2)), bias=False), (2, 1, 6, 5)),  # pads wider than the kernel
    (Conv1D(2, 3, 2, stride=3, padding="VALID"), (2, 2, 8)),  # even kernel, entries the stride never reads
    (Conv1D(2, 1, 4, stride=2), (2, 7)),                      # even kernel, SAME with lo < hi
]


def test_more_geometries_match_jax():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        draws = []
        for layer, shape in MORE:
            params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)),
                                            jax.eval_shape(layer.init, jax.random.PRNGKey(0)))
            x, x_dot = (jnp.asarray(rng.standard_normal(shape)) for _ in range(2))
            params_dot = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), params)
            y_bar = jnp.asarray(rng.standard_normal(jax.eval_shape(layer.apply, params, x).shape))
            draws.append((params, x, x_dot, params_dot, y_bar))

        @jax.jit
        def results(draws):
            out = []
            for (layer, _), (params, x, x_dot, params_dot, y_bar) in zip(MORE, draws):
                y = layer.apply(params, x)
                out.append(((layer.jvp(params, x, y, x_dot, params_dot), layer.jvp(params, x, y, x_dot, None),
                             layer.jvp(params, x, y, None, params_dot), layer.vjp(params, x, y, y_bar)),
                            (jax.jvp(layer.apply, (params, x), (params_dot, x_dot))[1],
                             jax.jvp(lambda x: layer.apply(params, x), (x,), (x_dot,))[1],
                             jax.jvp(lambda p: layer.apply(p, x), (params,), (params_dot,))[1],
                             jax.vjp(layer.apply, params, x)[1](y_bar))))
            return out

        for (layer, shape), (got, expected) in zip(MORE, results(draws)):
            assert got[3][1].shape == shape, layer
            assert_close(got, expected, FLOAT64)


# ---- planted wrong rules ---------------------------------------------------------------------
class UnflippedConv(Conv2D):
    """x_bar with the kernel not flipped: right shape, wrong values."""

    def _x_bar(self, w, x_shape, y_bar):
        return super()._x_bar(jnp.flip(w, axis=(2, 3)), x_shape, y_bar)


class FirstEntryMaxPool(MaxPool2D):
    """Cotangent sent to the first entry of each window instead of its maximum."""

    def vjp(self, params, x, y, y_bar):
        parts = [self._batched(y_bar)] + [jnp.zeros_like(self._batched(y_bar))] * (size(self.kernel) - 1)
        return {}, self._like(self._scatter(parts, self._batched(x).shape), x)


@pytest.mark.parametrize("layer, shape", [(UnflippedConv(1, 2, 3, stride=2), (1, 5, 6)),
                                          (FirstEntryMaxPool(2), (1, 4, 6))], ids=repr)
def test_planted_wrong_rules_are_caught(layer, shape):
    with pytest.raises(RuleError):
        check_layer(layer, in_shape=shape, dtype="float64", batch=False)


# ---- a chain of them: the Jacobian in every order ----------------------------------------------
def test_chain_jacobian_in_every_order_matches_jacfwd():
    chain = jacket.Chain([Conv2D(2, 3, 3), jacket.Tanh(), AvgPool2D(2), MaxPool2D(2, stride=1),
                          Conv2D(3, 2, 2, padding="VALID")], in_shape=(2, 6, 6))
    assert chain.shapes[-1] == (2, 1, 1)
    with jax.enable_x64(True):
        params = chain.init(jax.random.PRNGKey(0), jnp.float64)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6)))

        @jax.jit
        def jacobians(params, x):
            return ([jacket.jacobian(chain, 1, order=order)(params, x) for order in ("forward", "reverse", "optimal")],
                    jax.jacfwd(chain.apply, argnums=1)(params, x))

        got, expected = jacobians(params, x)
        assert expected.shape == (2, 1, 1, 2, 6, 6)
        for jac in got:
            assert_close(jac, expected, FLOAT64)


# ---- shapes, costs, repr, errors -------------------------------------------------------------
def test_output_shapes():
    assert Conv2D(3, 8, 3).output_shape((3, 7, 6)) == (8, 7, 6)
    assert Conv2D(2, 3, 3, stride=2).output_shape((2, 7, 6)) == (3, 4, 3)
    assert Conv2D(2, 3, (3, 2), stride=(2, 1), padding="valid").output_shape((2, 7, 6)) == (3, 3, 5)
    assert Conv2D(1, 1, 2, padding=((1, 2), (0, 0))).output_shape((1, 4, 4)) == (1, 6, 3)
    assert Conv1D(2, 4, 3, stride=2).output_shape((2, 9)) == (4, 5)
    assert AvgPool2D(2).output_shape((5, 7, 6)) == (5, 3, 3)
    assert MaxPool2D(3, stride=2).output_shape((1, 7, 6)) == (1, 3, 2)
    assert Conv2D(3, 8, 3).input_shape() is None and MaxPool2D(2).input_shape() is None
    assert MaxPool2D(2).init(jax.random.PRNGKey(0)) == {}


def test_init_shapes_and_scale():
    params = Conv2D(2, 3, 3).init(jax.random.PRNGKey(0))  # the shape check_layer draws above: compiled once
    assert params["w"].shape == (3, 2, 3, 3) and params["b"].shape == (3,)
    assert params["w"].dtype == params["b"].dtype == jnp.float32
    assert 0.6 < float(np.std(params["w"])) * np.sqrt(2 * 9) < 1.4  # LeCun normal: variance 1/fan_in
    assert set(jax.eval_shape(Conv2D(4, 16, 3, bias=False).init, jax.random.PRNGKey(0))) == {"w"}


def test_costs_and_structure():
    conv = Conv2D(2, 3, 3, stride=2)
    assert conv.jvp_cost((2, 7, 6)) == conv.vjp_cost((2, 7, 6)) == 4 * 3 * 3 * 2 * 9
    assert conv.jacobian_structure((2, 7, 6)) == Structure("matrix", 36, 84)
    assert conv.jacobian_cost((2, 7, 6)) == 36 * conv.jvp_cost((2, 7, 6))  # rows: the smaller side
    assert AvgPool2D(2).jvp_cost((2, 4, 6)) == 12 * 4
    assert MaxPool2D(2).jvp_cost((2, 4, 6)) == 12
    assert MaxPool2D(2).jacobian_cost((2, 4, 6)) == 12 * 12


def test_repr_equality_and_hash():
    assert repr(Conv2D(3, 8, 3)) == "Conv2D(3, 8, 3)"
    assert repr(Conv2D(3, 8, 3, stride=2, padding="VALID")) == "Conv2D(3, 8, 3, stride=2, padding='VALID')"
    assert repr(Conv2D(3, 8, (3, 2), stride=(2, 1), bias=False)) == \
        "Conv2D(3, 8, (3, 2), stride=(2, 1), bias=False)"
    assert repr(Conv1D(2, 4, 5)) == "Conv1D(2, 4, 5)"
    assert repr(AvgPool2D(2)) == "AvgPool2D(2)" and repr(MaxPool2D(3, stride=2)) == "MaxPool2D(3, stride=2)"
    assert Conv2D(3, 8, 3) == Conv2D(3, 8, (3, 3), stride=(1, 1)) and hash(Conv2D(3, 8, 3)) == hash(Conv2D(3, 8, 3))
    assert len({Conv2D(3, 8, 3), Conv2D(3, 8, 3, stride=2), Conv2D(3, 8, 3, padding="VALID"),
                AvgPool2D(2), MaxPool2D(2), AvgPool2D(2, stride=1)}) == 6


def test_bad_configurations():
    with pytest.raises(ValueError, match=r"Conv2D in_channels must be a positive integer, got 0"):
        Conv2D(0, 3, 3)
    with pytest.raises(ValueError, match=r"Conv2D kernel_size must be an int or 2 ints"):
        Conv2D(1, 3, (3, 3, 3))
    with pytest.raises(ValueError, match=r"Conv2D padding must be 'SAME', 'VALID' or 2 pairs"):
        Conv2D(1, 3, 3, padding="FULL")
    with pytest.raises(ValueError, match=r"MaxPool2D stride must be a positive integer"):
        MaxPool2D(2, stride=0)


def test_bad_input_shapes_name_the_layer():
    conv = Conv2D(3, 8, 3, padding="VALID")
    with pytest.raises(ValueError, match=r"Conv2D\(3, 8, 3, padding='VALID'\) takes inputs of shape \(3, H, W\) "
                                         r"\(channels first\), got \(4, 6, 6\)"):
        conv.output_shape((4, 6, 6))
    with pytest.raises(ValueError, match=r"takes inputs of shape \(3, H, W\).*got \(6, 6\)"):
        conv.output_shape((6, 6))
    with pytest.raises(ValueError, match=r"needs an image of at least 3×3 \(with its padding\), got 2×6"):
        conv.output_shape((3, 2, 6))
    with pytest.raises(ValueError, match=r"AvgPool2D\(4\) needs an image of at least 4×4"):
        AvgPool2D(4).output_shape((2, 3, 8))
    with pytest.raises(ValueError, match=r"Conv1D\(2, 4, 3\) takes inputs of shape \(2, L\)"):
        Conv1D(2, 4, 3).output_shape((2, 5, 5))


def test_bad_inputs_to_apply_give_clear_errors():
    conv = Conv2D(3, 8, 3)
    params = {"w": np.ones((8, 3, 3, 3)), "b": np.ones(8)}
    with pytest.raises(ValueError, match=r"Conv2D\(3, 8, 3\): x has shape \(6, 6\), but must have shape "
                                         r"\(3, H, W\) \(one example\) or \(batch, 3, H, W\)"):
        conv.apply(params, np.ones((6, 6)))
    with pytest.raises(ValueError, match=r"Conv2D\(3, 8, 3\): x has shape \(2, 4, 6, 6\): .*got \(4, 6, 6\)"):
        conv.apply(params, np.ones((2, 4, 6, 6)))
    with pytest.raises(TypeError, match=r"Conv2D\(3, 8, 3\): x must be a floating-point array"):
        conv.apply(params, np.ones((3, 6, 6), jnp.int32))
    with pytest.raises(ValueError, match=r"MaxPool2D\(3\): x has shape \(1, 2, 2\): .*at least 3×3"):
        MaxPool2D(3).apply({}, np.ones((1, 2, 2)))


def test_maxpool_ties_go_to_the_first_entry_as_in_jax():
    pool = MaxPool2D(2)
    x = jnp.zeros((1, 2, 4))

    @jax.jit
    def both(x):
        y = pool.apply({}, x)
        return pool.vjp({}, x, y, jnp.ones_like(y))[1], jax.vjp(lambda x: pool.apply({}, x), x)[1](jnp.ones_like(y))[0]

    x_bar, expected = both(x)
    assert np.asarray(x_bar).tolist() == np.asarray(expected).tolist() == [[[1, 0, 1, 0], [0, 0, 0, 0]]]
