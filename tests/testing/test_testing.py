"""The rule checker: it passes every built-in layer and rejects planted mistakes, naming them."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacket
from jacket.cli.check import DTYPES, WIDTHS
from jacket.registry import builtin_layers
from jacket.cli import main
from jacket.core._tangents import RuleOutputError
from jacket.operators import Diagonal, Structure
from jacket.testing import RuleError, check_chain, check_layer, layer_test, parametrize_layers


# ---- a correct layer with parameters, and planted mistakes ----------------------------------
class Scale(jacket.Layer):
    """``y = s ⊙ x`` with params ``{"s": (features,)}``: right rules, the base of two planted ones."""

    def __init__(self, features):
        self.features = features

    def init(self, key):
        return {"s": 1 + 0.5 * jax.random.normal(key, (self.features,))}

    def input_shape(self):
        return (self.features,)

    def apply(self, params, x):
        return params["s"] * x

    def jvp(self, params, x, y, x_dot, params_dot=None):
        y_dot = jnp.zeros_like(y) if x_dot is None else params["s"] * x_dot
        return y_dot if params_dot is None else y_dot + params_dot["s"] * x

    def vjp(self, params, x, y, y_bar):
        return {"s": (y_bar * x).reshape(-1, self.features).sum(axis=0)}, params["s"] * y_bar

    def jacobian(self, params, x, y):
        return Diagonal(params["s"])

    def jacobian_structure(self, in_shape):
        return Structure("diagonal", in_shape[-1], in_shape[-1])


class SignFlippedTanh(jacket.Tanh):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        return -(1 - y * y) * x_dot  # sign flipped


class DoubledSigmoidVJP(jacket.Sigmoid):
    def vjp(self, params, x, y, y_bar):
        return {}, 2 * y * (1 - y) * y_bar  # a factor of two


class DenseWithoutWeightTangent(jacket.Dense):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        y_dot = jnp.zeros_like(y) if x_dot is None else x_dot @ params["w"]
        return y_dot if params_dot is None else y_dot + params_dot["b"]  # the term x @ w_dot is missing


class LayerNormWithoutProjection(jacket.LayerNorm):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        centred = x - x.mean(axis=-1, keepdims=True)
        r = 1 / jnp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.eps)
        y_dot = jnp.zeros_like(y)
        if x_dot is not None:  # the term -x̂ mean(x̂ ẋ) is missing
            y_dot = params["scale"] * r * (x_dot - x_dot.mean(axis=-1, keepdims=True))
        if params_dot is not None:
            y_dot = y_dot + params_dot["scale"] * centred * r + params_dot["offset"]
        return y_dot


class LayerNormVJPWithoutScale(jacket.LayerNorm):
    def vjp(self, params, x, y, y_bar):
        ones = {"scale": jnp.ones_like(params["scale"]), "offset": params["offset"]}
        return super().vjp(ones, x, y, y_bar)  # x_bar without the factor scale: right only at scale 1


class TanhWrongResidual(jacket.Tanh):
    def derivative(self, x, y):
        return 1 - x * x  # x where y belongs (used by jvp, vjp and jacobian alike)


class DenseTransposedInputBar(jacket.Dense):
    def vjp(self, params, x, y, y_bar):
        params_bar, _ = super().vjp(params, x, y, y_bar)
        return params_bar, y_bar @ params["w"]  # w where wᵀ belongs (square, so shapes fit)


class DenseTransposedWeightBar(jacket.Dense):
    def vjp(self, params, x, y, y_bar):
        params_bar, x_bar = super().vjp(params, x, y, y_bar)
        return {**params_bar, "w": params_bar["w"].T}, x_bar  # w_bar transposed (square)


class DenseBiasNotSummed(jacket.Dense):
    def vjp(self, params, x, y, y_bar):
        params_bar, x_bar = super().vjp(params, x, y, y_bar)
        return {**params_bar, "b": y_bar}, x_bar  # right for one example, not summed over a batch


class ScaleIgnoringParamsDot(Scale):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        return jnp.zeros_like(y) if x_dot is None else params["s"] * x_dot  # params_dot ignored


class SineWithWrongDerivative(jacket.Elementwise):
    def apply(self, params, x):
        return jnp.sin(x)

    def derivative(self, x, y):
        return jnp.cos(2 * x)  # jvp and vjp agree with each other, not with apply


class SoftmaxSummingAllAxes(jacket.Softmax):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        return y * (x_dot - (y * x_dot).sum())  # all axes, not the last: wrong only for a batch


class TanhWrongJacobian(jacket.Tanh):
    def jacobian(self, params, x, y):
        return Diagonal(1 - x * x)  # the override is wrong, the rules are right


class SoftmaxWrongStructure(jacket.Softmax):
    def jacobian_structure(self, in_shape):
        return Structure("diagonal", in_shape[-1], in_shape[-1])  # it returns diagonal plus rank one


class DenseForgetsBiasBar(jacket.Dense):
    def vjp(self, params, x, y, y_bar):
        params_bar, x_bar = super().vjp(params, x, y, y_bar)
        return {"w": params_bar["w"]}, x_bar  # no entry for "b"


class DenseWrongShapeVJP(jacket.Dense):
    def vjp(self, params, x, y, y_bar):
        params_bar, _ = super().vjp(params, x, y, y_bar)
        return params_bar, y_bar @ params["w"]  # not square: the product itself raises


# (layer, in_dim, anchored pattern of the first failure, (rule, argument) that must fail, rules that must pass)
PLANTED = [
    (SignFlippedTanh(), 3, r"SignFlippedTanh\(\): rule jvp, argument x, case single",
     {("jvp", "x"), ("transpose", "x"), ("finite-differences jvp", "x")}, {"vjp", "jacobian"}),
    (DoubledSigmoidVJP(), 5, r"DoubledSigmoidVJP\(\): rule vjp, argument x, case single",
     {("vjp", "x"), ("transpose", "x"), ("finite-differences vjp", "x")}, {"jvp", "jacobian"}),
    (DenseWithoutWeightTangent(4, 3), None, r"Dense\(4, 3\): rule jvp, argument params\['w'\], case single",
     {("jvp", "params['w']"), ("jvp", "x and params"), ("transpose", "params['w']")}, {"vjp", "jacobian"}),
    (LayerNormWithoutProjection(5), None, r"LayerNorm\(5\): rule jvp, argument x, case single",
     {("jvp", "x"), ("transpose", "x"), ("jvp", "x and params")}, {"vjp"}),
    (LayerNormVJPWithoutScale(3), None, r"LayerNorm\(3\): rule vjp, argument x, case single",
     {("vjp", "x"), ("transpose", "x")}, {"jvp", "jacobian"}),
    (TanhWrongResidual(), 5, r"TanhWrongResidual\(\): rule jvp, argument x, case single",
     {("jvp", "x"), ("vjp", "x"), ("jacobian", "x")}, {"transpose"}),
    (DenseTransposedInputBar(4, 4), None, r"Dense\(4, 4\): rule vjp, argument x, case single",
     {("vjp", "x"), ("transpose", "x")}, {"jvp", "jacobian"}),
    (DenseTransposedWeightBar(4, 4), None, r"Dense\(4, 4\): rule vjp, argument params\['w'\], case single",
     {("vjp", "params['w']"), ("transpose", "params['w']")}, {"jvp", "jacobian"}),
    (DenseBiasNotSummed(4, 3), None, r"Dense\(4, 3\): rule vjp, argument params\['b'\], case batch \(3, 4\)",
     {("vjp", "params['b']")}, {"jvp", "jacobian"}),
    (ScaleIgnoringParamsDot(4), None, r"ScaleIgnoringParamsDot\(features=4\): rule jvp, argument params\['s'\]",
     {("jvp", "params['s']"), ("transpose", "params['s']")}, {"vjp", "jacobian"}),
    (SineWithWrongDerivative(), 5, r"SineWithWrongDerivative\(\): rule jvp, argument x, case single",
     {("jvp", "x"), ("vjp", "x"), ("jacobian", "x")}, {"transpose"}),
    (SoftmaxSummingAllAxes(), 5, r"SoftmaxSummingAllAxes\(\): rule jvp, argument x, case batch \(3, 5\)",
     {("jvp", "x"), ("transpose", "x")}, {"vjp", "jacobian"}),
    (TanhWrongJacobian(), 5, r"TanhWrongJacobian\(\): rule jacobian, argument x",
     {("jacobian", "x")}, {"jvp", "vjp", "transpose"}),
    (SoftmaxWrongStructure(), 5, r"SoftmaxWrongStructure\(\): rule jacobian, argument structure",
     {("jacobian", "structure")}, {"jvp", "vjp", "transpose"}),
    (DenseForgetsBiasBar(4, 3), None, r"Dense\(4, 3\): rule vjp, argument params, case single",
     {("vjp", "params"), ("vjp", "params['b']")}, {"jvp", "jacobian"}),
    (DenseWrongShapeVJP(4, 3), None, r"Dense\(4, 3\): rule vjp, argument x, case single .*the call raised",
     {("vjp", "x")}, {"jvp", "jacobian"}),
]


@pytest.mark.parametrize("layer, in_dim, first, must_fail, must_pass", PLANTED,
                         ids=[type(p[0]).__name__ for p in PLANTED])
def test_planted_mistake_is_rejected_and_named(layer, in_dim, first, must_fail, must_pass):
    with pytest.raises(AssertionError, match="^" + first) as info:
        check_layer(layer, in_shape=in_dim, dtype="float64")
    failures = {(r.rule, r.argument) for r in info.value.report.failures}
    assert must_fail <= failures
    assert not {rule for rule, _ in failures} & must_pass, failures


def test_failure_message_has_index_and_values():
    with pytest.raises(RuleError) as info:
        check_layer(SignFlippedTanh(), in_shape=4, dtype="float64")
    first = str(info.value).splitlines()[0]
    pattern = (r"SignFlippedTanh\(\): rule jvp, argument x, case single \(4,\) float64: max error \S+ > "
               r"tolerance \S+; worst at index \(\d,\): expected (\S+), got (\S+) \(reference: jax.jvp\)")
    expected, got = re.fullmatch(pattern, first).groups()
    assert float(got) == pytest.approx(-float(expected), rel=1e-5)  # the sign flip, seen at that element


def test_tolerance_is_relative_and_overridable():
    class SlightlyOff(jacket.Tanh):
        def vjp(self, params, x, y, y_bar):
            return {}, (1 + 1e-6) * (1 - y * y) * y_bar
    with pytest.raises(AssertionError, match=r"^SlightlyOff\(\): rule vjp, argument x"):
        check_layer(SlightlyOff(), in_shape=4, dtype="float64")
    check_layer(SlightlyOff(), in_shape=4, dtype="float64", rtol=1e-4)
    check_layer(SlightlyOff(), in_shape=4, dtype="float32")  # within float32's default tolerance


# ---- every built-in layer passes, at the widths and dtypes of `jacket check` ---------------------
BUILTINS = [(layer, w) for w in WIDTHS for layer in builtin_layers(w)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer, width", BUILTINS, ids=[f"{layer!r}-{w}" for layer, w in BUILTINS])
def test_builtin_layer_passes(layer, width, dtype):
    report = check_layer(layer, in_shape=width if layer.input_shape() is None else None, dtype=dtype)
    rules = {r.rule for r in report.rows}
    # every built-in has a second-order rule; its finite differences run in float64 checks only
    # (in float32 they would need a float64 program of their own beside a working JAX reference)
    assert rules == {"jvp", "vjp", "transpose", "jacobian", "finite-differences jvp", "finite-differences vjp",
                     "vjp_jvp"} | ({"finite-differences vjp_jvp"} if str(dtype) == "float64" else set())
    assert {r.case.split(" ")[0] for r in report.rows} == {"single", "batch"}
    assert all(r.reference in ("jax.jvp", "jax.vjp", "jax.jacfwd", "own jvp", "finite differences",
                               "jacobian_structure", "jax.jvp of jax.vjp") for r in report.rows)
    assert not report.notes


def test_report_table_and_given_x():
    x = np.linspace(-1.5, 1.5, 12).reshape(3, 4)
    report = check_layer(jacket.LayerNorm(4), x=x, dtype="float64")
    text = str(report)
    assert text.splitlines()[0].split() == ["layer", "case", "rule", "argument", "reference", "max", "error",
                                            "tolerance", "pass"]
    assert {r.case for r in report.rows} == {"batch (3, 4) float64", "example 0 of batch (3, 4) float64"}
    assert "params['scale']" in text and " NO" not in text


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"Tanh\(\) takes inputs of any shape.*pass in_shape= or x="):
        check_layer(jacket.Tanh())
    with pytest.raises(ValueError, match=r"Dense\(4, 2\) does not take inputs of shape \(5,\): .*last axis has 4"):
        check_layer(jacket.Dense(4, 2), in_shape=5)
    with pytest.raises(ValueError, match=r"does not take inputs of shape \(2, 2, 3\)"):
        check_layer(jacket.Dense(4, 2), x=np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"check_layer: params\['b'\] for Dense\(4, 2\) has shape \(3,\), expected \(2,\)"):
        check_layer(jacket.Dense(4, 2), params={"w": np.zeros((4, 2)), "b": np.zeros(3)})
    with pytest.raises(TypeError, match="floating dtype"):
        check_layer(jacket.Tanh(), in_shape=3, dtype="int32")


# ---- apply that JAX cannot differentiate: finite differences are the reference ------------------
class CallbackSine(jacket.Layer):
    """``y = s ⊙ sin(x)`` computed by numpy through ``jax.pure_callback`` (JAX cannot differentiate it)."""

    def __init__(self, features, wrong=False):
        self.features, self.wrong = features, wrong

    def init(self, key):
        return {"s": 1 + 0.5 * jax.random.normal(key, (self.features,))}

    def input_shape(self):
        return (self.features,)

    def apply(self, params, x):
        return jax.pure_callback(lambda s, v: (s * np.sin(v)).astype(v.dtype),
                                 jax.ShapeDtypeStruct(x.shape, x.dtype), params["s"], x)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        derivative = -jnp.cos(x) if self.wrong else jnp.cos(x)
        y_dot = jnp.zeros_like(y) if x_dot is None else params["s"] * derivative * x_dot
        return y_dot if params_dot is None else y_dot + params_dot["s"] * jnp.sin(x)

    def vjp(self, params, x, y, y_bar):
        s_bar = (y_bar * jnp.sin(x)).reshape(-1, self.features).sum(axis=0)
        return {"s": s_bar}, params["s"] * jnp.cos(x) * y_bar

    def jacobian(self, params, x, y):
        return Diagonal(params["s"] * jnp.cos(x))

    def jacobian_structure(self, in_shape):
        return Structure("diagonal", in_shape[-1], in_shape[-1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_non_differentiable_apply_falls_back_on_finite_differences(dtype):
    report = check_layer(CallbackSine(3), dtype=dtype)
    by_rule = {r.rule: r.reference for r in report.rows if r.argument != "structure"}
    assert by_rule["jvp"] == by_rule["vjp"] == by_rule["jacobian"] == "finite differences"
    assert {a for r, a in ((r.rule, r.argument) for r in report.rows) if r == "vjp"} == {"x", "params['s']"}
    assert any("pure callbacks" in n.lower() and "finite differences" in n for n in report.notes)
    with pytest.raises(AssertionError, match=r"^CallbackSine\(features=3, wrong=True\): rule jvp, argument x, "
                                             r".*\(reference: finite differences\)"):
        check_layer(CallbackSine(3, wrong=True), dtype=dtype)


class NumpyTanh(jacket.Elementwise):
    """``tanh`` computed by numpy on concrete arrays: it runs eagerly, and JAX cannot trace it."""

    def apply(self, params, x):
        return jnp.asarray(np.tanh(np.asarray(x)))

    def derivative(self, x, y):
        return 1 - y * y


def test_numpy_apply_falls_back_on_finite_differences():
    report = check_layer(NumpyTanh(), in_shape=3, dtype="float64")
    assert {r.reference for r in report.rows if r.rule in ("jvp", "vjp")} == {"finite differences"}
    assert [n.split(" is compared")[0] for n in report.notes] == ["NumpyTanh(): the jvp rule",
                                                                  "NumpyTanh(): the vjp rule",
                                                                  "NumpyTanh(): no second-order rule (vjp_jvp), not checked"]
    assert all("TracerArrayConversionError" in n for n in report.notes[:2])


# ---- chains --------------------------------------------------------------------------------------
# The layers are those of the tables above, at the same widths: their checks are compiled already.
def test_check_chain_passes_a_good_chain():
    chain = jacket.Chain([jacket.Dense(8, 8, bias=False), jacket.Tanh(), jacket.LayerNorm(8), jacket.Softmax()])
    report = check_chain(chain, dtype="float64")
    layers = {r.layer for r in report.rows}
    assert layers == {"chain"} | {f"layer {i}: {layer!r}" for i, layer in enumerate(chain.layers, 1)}
    chain_jvp_arguments = {r.argument for r in report.rows if r.layer == "chain" and r.rule == "jvp"}
    assert chain_jvp_arguments == {"x", "params", "x and params"}  # the chain's params move all at once


def test_check_chain_names_the_first_bad_layer():
    chain = jacket.Chain([jacket.Dense(3, 3, bias=False), jacket.Tanh(), SignFlippedTanh(), jacket.LayerNorm(3)])
    with pytest.raises(AssertionError, match=r"^Chain\(.*\): first bad layer is layer 3: SignFlippedTanh\(\)\n"
                                             r"layer 3: SignFlippedTanh\(\): rule jvp, argument x") as info:
        check_chain(chain, dtype="float64")
    bad = {r.layer for r in info.value.report.failures}
    assert bad == {"chain", "layer 3: SignFlippedTanh()"}


def test_checker_compares_rule_outputs_that_the_engine_refuses():
    """jacket.testing calls the rules with check=False and compares what they return itself (a
    failed row with the shapes), where the engine checks every rule's output and raises
    RuleOutputError naming the layer's path; check_chain reports that error in its chain rows."""
    chain = jacket.Chain([jacket.Dense(4, 4), jacket.Tanh(), jacket.Residual([jacket.Tanh(), DenseBiasNotSummed(4, 4)])])
    path = r"layer 3 → Residual → layer 2"
    with pytest.raises(AssertionError, match=rf"^Chain\(.*\): first bad layer is {path}: Dense\(4, 4\)\n"
                                             rf"{path}: Dense\(4, 4\): rule vjp, argument params\['b'\], case batch "
                                             r"\(3, 4\) float64: .*the rule returned shape \(3, 4\), expected \(4,\)") as info:
        check_chain(chain, dtype="float64")
    failures = info.value.report.failures
    # the block's own rows run its children through the engine, as the chain's do
    assert {r.layer for r in failures} == {"chain", "layer 3: Residual([Tanh(), Dense(4, 4)])",
                                           "layer 3 → Residual → layer 2: Dense(4, 4)"}
    engine = ("the call raised RuleOutputError: layer 3 → Residual → layer 2: Dense(4, 4).vjp returned params_bar['b'] "
              "of shape (3, 4), expected the shape of params['b'], (4,)")
    chain_vjp = [r for r in failures if r.layer == "chain" and r.rule == "vjp"]
    assert chain_vjp and all(r.detail.startswith(engine) for r in chain_vjp)

    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    grad = jacket.value_and_grad(chain, jacket.MeanSquaredError())
    with pytest.raises(RuleOutputError, match=rf"^jacket\.value_and_grad: {path}: Dense\(4, 4\)\.vjp returned "
                                              r"params_bar\['b'\] of shape \(6, 4\), expected the shape of "
                                              r"params\['b'\], \(4,\) \(summed over the batch\?"):
        grad(params, jnp.ones((6, 4)), jnp.zeros((6, 4)))
    grad(params, jnp.ones(4), jnp.zeros(4))  # on one example the rule's output is right: the engine takes it


# ---- the one-line pytest helper ------------------------------------------------------------------
test_one_line_helper = layer_test(Scale(3), jacket.Softplus(), in_shape=3)


def test_layer_test_rejects_a_bad_layer():
    test = layer_test(SignFlippedTanh(), in_shape=3, dtypes=("float64",))
    (mark,) = test.pytestmark
    assert mark.args[0] == "layer, dtype" and [p.values for p in mark.args[1]] == [(SignFlippedTanh(), "float64")]
    with pytest.raises(AssertionError, match=r"^SignFlippedTanh\(\): rule jvp"):
        test(SignFlippedTanh(), "float64")
    assert parametrize_layers(jacket.Tanh()).args[1][0].id == "Tanh()-float32"


# ---- `jacket check` ------------------------------------------------------------------------------
@pytest.mark.slow  # every built-in, both dtypes: the same checks as tests/layers, through the CLI
def test_cli_check_every_builtin_passes(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "LayerNorm(8)" in out and "Dense(3, 5)" in out and "MultiHeadSelfAttention(8, 2)" in out
    assert " NO" not in out and re.search(r"all \d+ comparisons passed", out)


def test_cli_check_builtins_pass(capsys):
    assert main(["check", "--only", "layernorm,dense,maxpool2d,parallel_sum"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:5] == ["layer", "width", "dtype", "case", "rule"]
    assert "LayerNorm(8)" in out and "Dense(3, 5)" in out and " NO" not in out
    assert re.search(r"MaxPool2D\(2\) +2×5×6 +float32", out) and "merge='sum'" in out
    assert "Sigmoid()" not in out and "Conv2D" not in out  # --only: no other built-ins
    assert re.search(r"all \d+ comparisons passed", out)
    assert main(["check", "--only", "conv3d"]) == 2
    assert "unknown built-in layer 'conv3d'" in capsys.readouterr().err
    # -v: one row per comparison, among them every parameter leaf and both cases
    assert main(["check", "--widths", "3", "--dtypes", "float64", "--only", "layernorm", "-v"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("LayerNorm(3)")]
    assert {"params['scale']", "params['offset']", "single", "batch"} <= {cell for row in rows for cell in row}


def test_cli_check_flags_a_planted_bad_layer(capsys):
    assert main(["check", f"{__name__}:DenseWithoutWeightTangent", "--args", "[3, 2]", "--dtypes", "float64"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"Dense\(3, 2\) +3 +float64 +\S+ +jvp +params\['w'\] .* NO", out)
    assert "FAILED" in out


def test_cli_check_reports_an_unloadable_layer(capsys):
    assert main(["check", "no_such_module_here:Layer"]) == 2
    assert "cannot load" in capsys.readouterr().err
    assert main(["check", f"{__name__}:re"]) == 2  # not a Layer subclass
