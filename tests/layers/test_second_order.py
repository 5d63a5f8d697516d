"""The second-order rules (``vjp_jvp``, the tangent of the VJP) and their checker rows.

Every built-in with the rule is checked by ``check_layer`` in tests/layers/test_layers.py (float32
and float64, one example and a batch); here: that those reports hold passing ``vjp_jvp`` rows,
that planted second-order mistakes are caught and named, that a layer without the rule gets a
note (not a failure) and a clear NotImplementedError, and the symbolic-zero conventions of
``call_vjp_jvp``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacket
from jacket.core import Elementwise, Layer, call_vjp_jvp
from jacket.testing import RuleError, check_layer


def _vjp_jvp_rows(report):
    return [r for r in report.rows if r.rule == "vjp_jvp"]


@pytest.mark.parametrize("layer, in_shape", [(jacket.Dense(3, 2), (2, 3)), (jacket.Tanh(), (3,)),
                                             (jacket.LayerNorm(3), None), (jacket.Softmax(), (3,))],
                         ids=repr)
def test_reports_hold_passing_vjp_jvp_rows(layer, in_shape):
    report = check_layer(layer, in_shape=in_shape, dtype="float64")
    rows = _vjp_jvp_rows(report)
    assert rows and all(r.passed for r in rows)
    assert {r.reference for r in rows} == {"jax.jvp of jax.vjp"}
    assert any(r.case.startswith("batch") for r in rows) and any(r.case.startswith("single") for r in rows)
    assert any(r.rule == "finite-differences vjp_jvp" and r.passed for r in report.rows)
    arguments = {r.argument for r in rows}
    assert "x, along x_dot" in arguments
    if layer.init(jax.random.PRNGKey(0)):  # every params leaf has its rows
        assert any(a.startswith("params[") for a in arguments)
    assert not any("no second-order rule" in n for n in report.notes)


def test_which_builtins_have_the_rule():
    for layer in (jacket.Dense(2, 2), jacket.Dense(2, 2, bias=False), jacket.Tanh(), jacket.Sigmoid(),
                  jacket.ReLU(), jacket.Softplus(), jacket.GELU(), jacket.Softmax(), jacket.LogSoftmax(),
                  jacket.LayerNorm(2), jacket.Flatten(), jacket.Reshape((2,)), jacket.PositionEmbedding(2, 2)):
        assert layer.has_second_order and type(layer).has_second_order, layer


# ---- planted mistakes ----------------------------------------------------------------------
class TanhFlippedCurvature(jacket.Tanh):
    def second_derivative(self, x, y):
        return 2 * y * (1 - y * y)  # sign flipped


class DenseMissingWeightTangent(jacket.Dense):
    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        p_bar_dot, x_bar_dot = super().vjp_jvp(params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot)
        if params_dot is not None:  # drop the ȳ ẇᵀ term
            x_bar_dot = x_bar_dot - y_bar @ params_dot["w"].T
        return p_bar_dot, x_bar_dot


class LayerNormMissingRadiusTerm(jacket.LayerNorm):
    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        p_bar_dot, x_bar_dot = super().vjp_jvp(params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot)
        if x_dot is not None:  # drop ṙ/r · x_bar, the tangent of 1/sqrt(var + eps)
            x_hat, r = self._normalise(x)
            x_bar = self.vjp(params, x, y, y_bar)[1]
            x_bar_dot = x_bar_dot + r * (x_hat * x_dot).mean(axis=-1, keepdims=True) * x_bar
        return p_bar_dot, x_bar_dot


class SoftmaxWrongTerm(jacket.Softmax):
    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot=None, y_dot=None, y_bar_dot=None):
        _, x_bar_dot = super().vjp_jvp(params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot)
        if y_dot is not None:  # - s ⟨ṡ, ȳ⟩ written as + s ⟨ṡ, ȳ⟩
            x_bar_dot = x_bar_dot + 2 * y * (y_dot * y_bar).sum(axis=-1, keepdims=True)
        return {}, x_bar_dot


@pytest.mark.parametrize("mutant, in_shape", [(TanhFlippedCurvature(), (3,)),
                                              (DenseMissingWeightTangent(3, 2), None),
                                              (LayerNormMissingRadiusTerm(3), None),
                                              (SoftmaxWrongTerm(), (3,))],
                         ids=lambda m: type(m).__name__ if isinstance(m, Layer) else "")
def test_planted_second_order_mistakes_are_caught(mutant, in_shape):
    with pytest.raises(RuleError, match=r"rule vjp_jvp") as caught:
        check_layer(mutant, in_shape=in_shape, dtype="float64", batch=False)
    failed = {r.rule for r in caught.value.report.failures}
    assert failed == {"vjp_jvp", "finite-differences vjp_jvp"}  # first order still passes


# ---- a layer without the rule ----------------------------------------------------------------
class Scale(Layer):
    """``y = a x`` with a learned scalar: first-order rules only."""

    def init(self, key):
        return {"a": jnp.asarray(1.5, jnp.float32)}

    def apply(self, params, x):
        return params["a"] * x

    def jvp(self, params, x, y, x_dot, params_dot):
        return params["a"] * x_dot + params_dot["a"] * x

    def vjp(self, params, x, y, y_bar):
        return {"a": jnp.sum(x * y_bar)}, params["a"] * y_bar


class ScaleWithRule(Scale):
    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        # receives arrays (zeros for absent tangents): symbolic_zeros is False
        return ({"a": jnp.sum(x_dot * y_bar + x * y_bar_dot)},
                params_dot["a"] * y_bar + params["a"] * y_bar_dot)


class Cube(Elementwise):
    def apply(self, params, x):
        return x ** 3

    def derivative(self, x, y):
        return 3 * x * x


def test_a_layer_without_the_rule_gets_a_note_and_a_clear_error():
    report = check_layer(Scale(), in_shape=(3,), dtype="float64")
    assert not Scale.has_second_order and not Scale().has_second_order
    assert not any("vjp_jvp" in r.rule for r in report.rows)
    assert any("no second-order rule" in n for n in report.notes)
    x = jnp.ones(3)
    with pytest.raises(NotImplementedError, match=r"Scale\(\) has no second-order rule: define vjp_jvp\("):
        Scale().vjp_jvp({"a": 1.0}, x, x, x, x, {"a": 1.0}, x, x)
    assert not Cube().has_second_order  # an Elementwise without second_derivative
    with pytest.raises(NotImplementedError, match=r"Cube\(\) has no second-order rule: define second_derivative"):
        call_vjp_jvp(Cube(), {}, x, x, x, x, None, None, None)


def test_call_vjp_jvp_conventions():
    layer, params = ScaleWithRule(), {"a": jnp.asarray(2.0)}
    x, y_bar, x_dot = jnp.arange(3.0), jnp.ones(3), jnp.full(3, 0.5)
    assert layer.has_second_order
    assert call_vjp_jvp(layer, params, x, 2 * x, y_bar, None, None, None, None) == (None, None)
    # zeros stand in for the absent tangents of a layer without symbolic zeros
    p_bar_dot, x_bar_dot = call_vjp_jvp(layer, params, x, 2 * x, y_bar, x_dot, None, None, None)
    assert float(p_bar_dot["a"]) == 1.5 and np.all(np.asarray(x_bar_dot) == 0)
    # a symbolic-zeros built-in takes None; the result has the dtype of its primal
    dense = jacket.Dense(3, 2)
    p = dense.init(jax.random.PRNGKey(0))
    p_bar_dot, x_bar_dot = call_vjp_jvp(dense, p, x, dense.apply(p, x), jnp.ones(2), None, None, None,
                                        jnp.ones(2, jnp.float16))
    assert x_bar_dot.dtype == x.dtype and p_bar_dot["w"].dtype == p["w"].dtype
    np.testing.assert_allclose(x_bar_dot, p["w"].sum(axis=1), rtol=1e-3)
    np.testing.assert_allclose(p_bar_dot["w"], jnp.outer(x, jnp.ones(2)), rtol=1e-6)
