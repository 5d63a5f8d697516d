"""The engine's conventions, as a new user meets them: rules written without any ``None``
handling, dtypes preserved as JAX preserves them, shaped inputs, a clear error for every kind of
bad input, and for every rule that returns the wrong thing, named by its path (core/_tangents.py,
core/_checks.py, core/_shapes.py)."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close
from _helpers.api import jac, per_example_jac, plan_of

import jacket
from jacket.compose import pull, push, record
from jacket.core._tangents import RuleOutputError
from jacket.testing import check_chain, check_layer


class Affine(jacket.Layer):
    """``y = a ⊙ x + c``, its JVP rule written the natural way: no ``None`` anywhere."""

    def __init__(self, features):
        self.features = features

    def init(self, key):
        return {"a": 1 + 0.3 * jax.random.normal(key, (self.features,)), "c": jnp.zeros((self.features,))}

    def input_shape(self):
        return (self.features,)

    def output_shape(self, in_shape):
        return in_shape

    def apply(self, params, x):
        return params["a"] * x + params["c"]

    def jvp(self, params, x, y, x_dot, params_dot):
        return params["a"] * x_dot + params_dot["a"] * x + params_dot["c"]

    def vjp(self, params, x, y, y_bar):
        rows = y_bar.reshape(-1, self.features)
        return {"a": (rows * x.reshape(-1, self.features)).sum(0), "c": rows.sum(0)}, params["a"] * y_bar


class Cube(jacket.Layer):
    """A parameter-free user layer (no output_shape: found by jax.eval_shape), rule without None."""

    def apply(self, params, x):
        return x ** 3

    def jvp(self, params, x, y, x_dot, params_dot):
        return 3 * x * x * x_dot

    def vjp(self, params, x, y, y_bar):
        return {}, 3 * x * x * y_bar


# ---- tangent conventions -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_rule_without_none_handling_passes_the_checker(dtype):
    check_layer(Affine(4), dtype=dtype)
    check_layer(Cube(), in_shape=(3,), dtype=dtype)
    check_layer(Cube(), in_shape=(2, 3), dtype=dtype)


def test_chain_jvp_with_only_params_dot_and_to_jax_in_both_modes():
    chain = jacket.Chain([Affine(3), jacket.Tanh(), Cube(), jacket.Dense(3, 2)])
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    params_dot = jax.tree_util.tree_map(jnp.ones_like, params)
    # only the last layer's params move: the layers before it are not differentiated at all
    only_last = (None, None, None, params_dot[3])
    full_last = tuple(jax.tree_util.tree_map(jnp.zeros_like, p) for p in params[:3]) + (params_dot[3],)

    @jax.jit  # one compiled program: eager JAX would compile every primitive on its own
    def results(params, x):
        f = lambda p: chain.apply(p, x)  # noqa: E731
        out = {"jvp": push(chain, params, x, None, params_dot), "jvp_ref": jax.jvp(f, (params,), (params_dot,)),
               "last": push(chain, params, x, None, only_last)[1], "last_ref": jax.jvp(f, (params,), (full_last,))[1],
               "layer": chain.jvp(params, x, f(params), None, params_dot),
               "grad_ref": jax.grad(lambda p: (f(p) ** 2).sum())(params)}
        for mode in ("vjp", "jvp"):
            g = jacket.to_jax(chain, mode=mode)
            out[f"grad_{mode}"] = jax.grad(lambda p: (g(p, x) ** 2).sum())(params)
        out["to_jax_jvp"] = jax.jvp(lambda p: jacket.to_jax(chain, mode="jvp")(p, x), (params,), (params_dot,))[1]
        return out
    r = results(params, x)
    assert_close(r["jvp"], r["jvp_ref"], FLOAT64)
    assert_close(r["layer"], r["jvp_ref"][1], FLOAT64)
    assert_close(r["last"], r["last_ref"], FLOAT64)
    assert_close(r["grad_vjp"], r["grad_ref"], FLOAT64)
    assert_close(r["grad_jvp"], r["grad_ref"], FLOAT64)
    assert_close(r["to_jax_jvp"], r["jvp_ref"][1], FLOAT64)
    check_chain(chain, dtype="float64")


# ---- what a rule returns is checked, and a mistake is named by its path ------------------------
class Unsummed(Affine):
    """Forgets to sum the parameter cotangents over the batch (right for one example only)."""

    def vjp(self, params, x, y, y_bar):
        return {"a": y_bar * x, "c": y_bar}, params["a"] * y_bar


class NarrowJvp(Affine):
    """Returns a tangent of the wrong shape."""

    def jvp(self, params, x, y, x_dot, params_dot):
        return (params["a"] * x_dot)[..., :2]


class MissingLeaf(Affine):
    """Leaves a parameter out of its cotangent."""

    def vjp(self, params, x, y, y_bar):
        params_bar, x_bar = super().vjp(params, x, y, y_bar)
        return {"a": params_bar["a"]}, x_bar


class IntegerCotangent(Affine):
    def vjp(self, params, x, y, y_bar):
        params_bar, x_bar = super().vjp(params, x, y, y_bar)
        return params_bar, x_bar.astype(jnp.int32)


def in_a_residual(layer):
    return jacket.Chain([jacket.Dense(3, 4), jacket.Residual([jacket.Tanh(), layer]), jacket.Dense(4, 2)])


PATH = r"layer 2 → Residual → layer 2: {layer}"


@pytest.mark.parametrize("layer, transforms, message", [
    (Unsummed(4), ("value_and_grad", "ggn_vp"),
     rf"{PATH}.vjp returned params_bar\['a'\] of shape \(6, 4\), expected the shape of params\['a'\], \(4,\) "
     r"\(summed over the batch\? a parameter's cotangent is summed over every leading axis of x\)"),
    (NarrowJvp(4), ("jacobian", "ggn_vp"), rf"{PATH}.jvp returned y_dot of shape \((6, 2|2,)\), expected the shape of y, "
                                           r"\((6, 4|4,)\)"),
    (MissingLeaf(4), ("value_and_grad", "jacobian", "params_jacobian", "ggn_vp"),
     rf"{PATH}.vjp returned params_bar with structure PyTreeDef\(\{{'a': \*\}}\), expected the structure of params, "
     r"PyTreeDef\(\{'a': \*, 'c': \*\}\)"),
    (IntegerCotangent(4), ("value_and_grad", "jacobian"),
     rf"{PATH}.vjp returned x_bar of dtype int32, expected a floating dtype like x's \(float64\)"),
], ids=["unsummed params_bar", "y_dot shape", "params_bar structure", "x_bar dtype"])
def test_a_rule_that_returns_the_wrong_thing_is_named_by_its_path(layer, transforms, message):
    """Checked when the engine calls the rule (at trace time), whichever transform runs it:
    a RuleOutputError (a ValueError) naming the public function, the path and both shapes."""
    chain, loss = in_a_residual(layer), jacket.MeanSquaredError()
    params = jax.eval_shape(lambda: chain.init(jax.random.PRNGKey(0), jnp.float64))  # shapes: nothing runs
    x, target = jax.ShapeDtypeStruct((6, 3), jnp.float64), jax.ShapeDtypeStruct((6, 2), jnp.float64)
    one = jax.ShapeDtypeStruct((3,), jnp.float64)
    order = "reverse" if type(layer).vjp is not Affine.vjp else "forward"  # a sweep through the wrong rule
    # traced only (jax.eval_shape): the checks run at trace time, nothing needs compiling
    runs = {"value_and_grad": lambda: jax.eval_shape(jacket.value_and_grad(chain, loss), params, x, target),
            "ggn_vp": lambda: jax.eval_shape(jacket.ggn_vp(chain, loss), params, x, target, params),
            "jacobian": lambda: jax.eval_shape(jacket.jacobian(chain, 1, order=order), params, one),
            "params_jacobian": lambda: jax.eval_shape(jacket.jacobian(chain, 0, order="reverse"), params,
                                                     one)}
    for name in transforms:
        prefix = rf"jacket.{name}: " if name in ("value_and_grad", "ggn_vp") else ""
        with pytest.raises(RuleOutputError, match=prefix + message.replace("{layer}", re.escape(repr(layer)))):
            runs[name]()
    assert issubclass(RuleOutputError, ValueError)


# ---- dtypes ----------------------------------------------------------------------------------
def test_gradients_keep_the_params_dtype_with_a_float64_input():
    """float32 params, float64 input: JAX returns float32 parameter gradients (and a float64
    x_bar); so do value_and_grad, pull, Chain.vjp and to_jax in both modes."""
    chain = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), Affine(4), jacket.LayerNorm(4), jacket.Dense(4, 2)])
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 3)), jnp.float64)
    loss = jacket.MeanSquaredError()
    target = jnp.zeros((6, 2), jnp.float64)

    @jax.jit
    def results(params, x):
        y, tape = record(chain, params, x)
        params_bar, x_bar = pull(chain, params, tape, jnp.ones_like(y))
        layer_bar, layer_x_bar = chain.vjp(params, x, y, jnp.ones_like(y))
        out = {"expected": jax.grad(lambda p: loss.apply(chain.apply(p, x), target))(params),
               "value_and_grad": jacket.value_and_grad(chain, loss)(params, x, target)[1],
               "pull": params_bar, "x_bar": x_bar, "Chain.vjp": layer_bar, "layer x_bar": layer_x_bar,
               "y_dot": push(chain, params, x, x.astype(jnp.float32))[1],  # a tangent of another dtype
               "layer y_dot": chain.jvp(params, x, y, x.astype(jnp.float32), None)}
        for mode in ("vjp", "jvp"):
            f = jacket.to_jax(chain, mode)
            out[f"to_jax {mode}"] = jax.grad(lambda p: loss.apply(f(p, x), target))(params)
        return out
    r = results(params, x)
    for name in ("expected", "value_and_grad", "pull", "Chain.vjp", "to_jax vjp", "to_jax jvp"):
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(r[name])} == {jnp.dtype("float32")}, name
    assert r["x_bar"].dtype == jnp.float64 and r["y_dot"].dtype == jnp.float64
    assert r["layer x_bar"].dtype == jnp.float64 and r["layer y_dot"].dtype == jnp.float64
    assert_close(r["value_and_grad"], r["expected"], FLOAT64, scale=1e5)  # float32 parameters: float32 rounding


# ---- shaped inputs ---------------------------------------------------------------------------
def test_a_sequence_chain_matches_jacfwd_in_every_order():
    """(T, d) inputs: Dense and LayerNorm act on the last axis, Softmax over it; the Jacobian has
    shape out_shape + in_shape, as jax.jacfwd's, in every order, batched or not."""
    chain = jacket.Chain([jacket.Dense(4, 6), jacket.GELU(), jacket.LayerNorm(6), jacket.Dense(6, 3),
                          jacket.Softmax()], in_shape=(5, 4))
    assert chain.shapes == ((5, 4), (5, 6), (5, 6), (5, 6), (5, 3), (5, 3)) and chain.dims == (20, 30, 30, 30, 15, 15)
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 4)))
    expected = jax.vmap(jax.jacfwd(lambda v: chain.apply(params, v)))(x)
    assert expected.shape == (2, 5, 3, 5, 4)
    for order in ("forward", "reverse", "optimal", "((J5 J4) (J3 (J2 J1)))", "tan(J5 J4 | adj(J3 | J2 J1))"):
        assert_close(jac(chain, params, x[0], order), expected[0], FLOAT64)
    for order in ("reverse", "optimal"):  # batched: one Jacobian per example
        assert_close(per_example_jac(chain, params, x, order), expected, FLOAT64)


def test_an_image_input_through_a_user_layer_without_declared_shapes():
    """(C, H, W) images: Cube declares no output shape (found by jax.eval_shape), a flattening
    layer maps the image to a vector for a Dense head."""
    class Flatten(jacket.Layer):
        symbolic_zeros = False

        def apply(self, params, x):
            return x.reshape(x.shape[:-3] + (-1,))

        def jvp(self, params, x, y, x_dot, params_dot):
            return x_dot.reshape(y.shape)

        def vjp(self, params, x, y, y_bar):
            return {}, y_bar.reshape(x.shape)

    chain = jacket.Chain([Cube(), Flatten(), jacket.Dense(2 * 3 * 3, 4), jacket.Tanh()], in_shape=(2, 3, 3))
    assert chain.shapes[1:3] == ((2, 3, 3), (18,)) and chain.out_shape == (4,)
    params = chain.init(jax.random.PRNGKey(1), jnp.float64)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 3, 3)))
    expected = jax.jacfwd(lambda v: chain.apply(params, v))(x)
    for order in ("forward", "reverse", "optimal"):
        assert_close(jac(chain, params, x, order), expected, FLOAT64)


# ---- bad input -------------------------------------------------------------------------------
SMALL = jacket.mlp([3, 4, 2])


def small_params():
    return SMALL.init(jax.random.PRNGKey(0))


@pytest.mark.parametrize("mutate, error, message", [
    (lambda p: ({"w": p[0]["w"].T, "b": p[0]["b"]},) + p[1:], ValueError,
     r"Chain: layer 1: params\[0\]\['w'\] for Dense\(3, 4\) has shape \(4, 3\), expected \(3, 4\)"),
    (lambda p: ({"w": p[0]["w"]},) + p[1:], ValueError,
     r"layer 1: params\[0\] for Dense\(3, 4\): missing params\[0\]\['b'\] \(expected params\[0\]\['b'\], "
     r"params\[0\]\['w'\]\)"),
    (lambda p: p[:2] + ({**p[2], "scale": jnp.ones(2)},), ValueError,
     r"layer 3: params\[2\] for Dense\(4, 2\): unexpected params\[2\]\['scale'\]"),
    (lambda p: p[:1] + ({"w": jnp.ones(4)},) + p[2:], ValueError,
     r"layer 2: Tanh\(\) takes no parameters, but params\[1\] has params\[1\]\['w'\]; pass \{\}"),
    (lambda p: ({"w": p[0]["w"].astype(jnp.int32), "b": p[0]["b"]},) + p[1:], TypeError,
     r"params\[0\]\['w'\] for Dense\(3, 4\) has dtype int32, expected a floating dtype"),
], ids=["shape", "missing key", "extra key", "params for a parameter-free layer", "dtype"])
def test_bad_params_name_layer_and_leaf(mutate, error, message):
    params = mutate(small_params())
    x = jnp.ones((2, 3))
    with pytest.raises(error, match=message):
        SMALL.apply(params, x)
    with pytest.raises(error, match=message.replace("Chain:", "jacket.jacobian:")):
        jac(SMALL, params, x[0])
    with pytest.raises(error):
        jacket.value_and_grad(SMALL, jacket.MeanSquaredError())(params, x, jnp.zeros((2, 2)))


def test_a_loss_inside_a_chain_is_refused_at_construction():
    with pytest.raises(TypeError, match=r"layer 2 is the loss SoftmaxCrossEntropy\(\): a loss ends the "
                                        r"computation .* jacket.value_and_grad\(chain, loss\)"):
        jacket.Chain([jacket.Dense(3, 4), jacket.SoftmaxCrossEntropy()])
    with pytest.raises(TypeError, match=r"jacket.value_and_grad: its second argument must be a jacket.Loss, got the "
                                        r"layer Tanh\(\) \(a layer belongs in the chain\)"):
        jacket.value_and_grad(SMALL, jacket.Tanh())


@pytest.mark.parametrize("build, error, message", [
    (lambda: jacket.Dense(3.5, 2), TypeError, r"Dense in_features must be a positive integer, got 3.5 \(float\)"),
    (lambda: jacket.Dense(3, 0), ValueError, r"Dense out_features must be a positive integer, got 0"),
    (lambda: jacket.Dense(True, 2), TypeError, r"Dense in_features must be a positive integer, got True"),
    (lambda: jacket.LayerNorm(-1), ValueError, r"LayerNorm features must be a positive integer, got -1"),
    (lambda: jacket.mlp([784, 2.5, 10]), TypeError, r"mlp width 1 must be a positive integer, got 2.5"),
    (lambda: jacket.Chain([jacket.Tanh()], in_shape=(3, 1.5)), TypeError, r"Chain in_shape axis 1 must be"),
], ids=["float", "zero", "bool", "negative", "mlp", "in_shape"])
def test_sizes_must_be_positive_integers(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_labels_out_of_range_are_refused_when_concrete_and_nan_under_jit():
    loss = jacket.SoftmaxCrossEntropy()
    logits = jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\) for 4 classes, got 1 outside it "
                                         r"\(for example 7\)"):
        loss.apply(logits, jnp.array([0, 7, 1]))
    with pytest.raises(ValueError, match=r"got 1 outside it \(for example -1\)"):
        jacket.value_and_grad(SMALL, loss)(small_params(), jnp.ones((3, 3)), jnp.array([0, -1, 1]))
    value = jax.jit(loss.apply)(logits, jnp.array([0, 7, 1]))  # documented: NaN, never a plausible number
    assert np.isnan(float(value))
    assert np.isfinite(float(jax.jit(loss.apply)(logits, jnp.array([0, 3, 1]))))


def test_an_input_of_neither_shape_is_refused():
    params = small_params()
    for bad in (jnp.ones((3, 2)), jnp.ones((2, 2, 3)), jnp.ones(())):
        with pytest.raises(ValueError, match=rf"x has shape {re.escape(str(bad.shape))}, but must have shape "
                                             r"\(3,\) \(one example\) or \(batch,\) \+ \(3,\)"):
            SMALL.apply(params, bad)


def test_old_protocol_names_get_a_clear_error():
    with pytest.raises(TypeError, match=r"Old\.required_in_dim: the layer protocol now works with shapes; "
                                        r"define input_shape\(\)"):
        class Old(jacket.Layer):
            def required_in_dim(self):
                return 3


# ---- plans are cached -------------------------------------------------------------------------
def test_plans_are_cached_per_chain_order_and_devices():
    chain = jacket.mlp([6, 5, 4, 3])
    assert plan_of(chain, "optimal") is plan_of(chain, "optimal")
    assert plan_of(jacket.mlp([6, 5, 4, 3]), "optimal") is plan_of(chain, "optimal")  # equal chains share it
    assert plan_of(chain, "optimal", mesh=2) is not plan_of(chain, "optimal")
    assert plan_of(chain, "optimal", mesh=2) is plan_of(chain, "optimal", mesh=2)
    assert plan_of(chain, "reverse") is not plan_of(chain, "forward")
    assert plan_of(chain, "optimal", argnums=0) is plan_of(chain, "optimal", argnums=0)


# ---- rules are hand-written -------------------------------------------------------------------
def test_no_engine_code_calls_jax_autodiff():
    """JAX's autodiff is the reference in tests, never the implementation: outside the checker
    (testing/), the export to JAX (interop.py) and the CLI/examples that compare against JAX, no
    module of the engine calls jax.jvp, vjp, grad, linearize, jacfwd, jacrev, jacobian or hessian."""
    import ast
    from pathlib import Path
    root = Path(jacket.__file__).parent
    banned = {"jvp", "vjp", "grad", "value_and_grad", "linearize", "jacfwd", "jacrev", "jacobian", "hessian"}
    allowed = ("testing", "interop.py", "cli", "examples")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in banned and \
                    isinstance(node.value, ast.Name) and node.value.id == "jax":
                offenders.append(f"{path.relative_to(root)}:{node.lineno} jax.{node.attr}")
    assert len(list(root.rglob("*.py"))) > 20 and not offenders, offenders


def test_list_params_give_list_gradients_and_bfloat16_params_are_accepted():
    params = list(SMALL.init(jax.random.PRNGKey(0)))
    x = jnp.ones((2, 3))
    _, grads = jacket.value_and_grad(SMALL, jacket.MeanSquaredError())(params, x, jnp.zeros((2, 2)))
    assert isinstance(grads, list)
    half = SMALL.init(jax.random.PRNGKey(0), jnp.bfloat16)
    assert SMALL.apply(half, x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_the_jacobian_has_the_output_dtype_in_every_order():
    chain = jacket.mlp([3, 4, 2])
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x = jnp.ones(3, jnp.float32)
    expected = jax.jacfwd(chain.apply, argnums=1)(params, x).dtype
    assert {jac(chain, params, x, order).dtype for order in ("forward", "reverse", "optimal")} == {expected}


def test_check_layer_without_a_batch_for_a_one_example_layer():
    class MatVec(jacket.Layer):
        """``y = W x`` written for one example only (``W @ x`` does not batch)."""

        def init(self, key):
            return {"w": jax.random.normal(key, (2, 3))}

        def input_shape(self):
            return (3,)

        def apply(self, params, x):
            return params["w"] @ x

        def jvp(self, params, x, y, x_dot, params_dot):
            return params["w"] @ x_dot + params_dot["w"] @ x

        def vjp(self, params, x, y, y_bar):
            return {"w": jnp.outer(y_bar, x)}, params["w"].T @ y_bar

    report = check_layer(MatVec(), dtype="float64", batch=False)
    assert report.passed and all("single" in row.case for row in report.rows)
