"""Losses: values against plain formulas and optax, rules against JAX, the fused gradients,
extreme logits, and clear errors for targets that don't fit the prediction."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DTYPES, FLOAT64, assert_close, normal

import jacket

CLASSES = 5


def draw_target(loss, rng, pred_shape, dtype):
    """A target that fits ``loss`` for predictions of ``pred_shape``."""
    if isinstance(loss, jacket.SoftmaxCrossEntropy):
        return jnp.asarray(rng.integers(0, pred_shape[-1], size=pred_shape[:-1]))
    if isinstance(loss, jacket.BinaryCrossEntropyWithLogits):
        return jnp.asarray(rng.uniform(size=pred_shape), dtype)  # soft labels in [0, 1]
    return normal(rng, pred_shape, dtype)


def plain_value(loss, z, t):
    """The textbook formulas, written without any care for stability."""
    if isinstance(loss, jacket.MeanSquaredError):
        return jnp.mean((z - t) ** 2)
    if isinstance(loss, jacket.BinaryCrossEntropyWithLogits):
        p = 1 / (1 + jnp.exp(-z))
        return jnp.mean(-t * jnp.log(p) - (1 - t) * jnp.log(1 - p))
    probs = jnp.exp(z) / jnp.exp(z).sum(axis=-1, keepdims=True)
    picked = jnp.take_along_axis(probs, t[..., None], axis=-1)[..., 0]
    return jnp.mean(-jnp.log(picked))


def optax_value(loss, z, t):
    if isinstance(loss, jacket.MeanSquaredError):
        return jnp.mean(2 * optax.l2_loss(z, t))  # optax's l2 is ½(z - t)²
    if isinstance(loss, jacket.BinaryCrossEntropyWithLogits):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, t))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, t))


LOSSES = [cls() for cls in jacket.registry.LOSSES.values()]  # the one registry: a new loss adds rows here
MAKE = {repr(loss): loss for loss in LOSSES}
over_losses = pytest.mark.parametrize("loss_id", list(MAKE))
over_dtypes = pytest.mark.parametrize("dt", DTYPES, ids=repr)
over_batches = pytest.mark.parametrize("batch", [None, 4], ids=["single", "batch4"])


def compare(loss, pred, target, pred_dot):
    """The loss and its rules next to the references (plain formula, optax, JAX autodiff)."""
    value = loss.apply(pred, target)
    grad = jax.grad(loss.apply)(pred, target)
    return {
        "value": value, "plain": plain_value(loss, pred, target), "optax": optax_value(loss, pred, target),
        "vjp": loss.vjp(pred, target, value), "vjp_2.5": loss.vjp(pred, target, value, 2.5),
        "grad": grad, "2.5_grad": 2.5 * grad,
        "jvp": loss.jvp(pred, target, value, pred_dot),
        "jvp_ref": jax.jvp(lambda p: loss.apply(p, target), (pred,), (pred_dot,))[1],
        "hvp": loss.hvp(pred, target, pred_dot),
        "hvp_ref": jax.jvp(jax.grad(lambda p: loss.apply(p, target)), (pred,), (pred_dot,))[1],
    }


@functools.lru_cache(maxsize=None)
def case(loss_id, dt, batch):
    """Draw one case and run ``compare`` in one compiled program (much faster than compiling each
    primitive eagerly), cached across the tests below."""
    rng = np.random.default_rng(0)
    loss = MAKE[loss_id]
    shape = (CLASSES,) if batch is None else (batch, CLASSES)
    pred, target = normal(rng, shape, dt.dtype), draw_target(loss, rng, shape, dt.dtype)
    return pred, target, jax.jit(compare, static_argnums=0)(loss, pred, target,
                                                            normal(rng, shape, dt.dtype))


@over_losses
@over_dtypes
@over_batches
def test_value_matches_formula_and_optax(loss_id, dt, batch):
    r = case(loss_id, dt, batch)[-1]
    assert r["value"].shape == () and r["value"].dtype == dt.dtype
    assert_close(r["value"], r["plain"], dt)
    assert_close(r["value"], r["optax"], dt)


@over_losses
@over_dtypes
@over_batches
def test_vjp_matches_grad(loss_id, dt, batch):
    r = case(loss_id, dt, batch)[-1]
    assert_close(r["vjp"], r["grad"], dt)
    assert_close(r["vjp_2.5"], r["2.5_grad"], dt)  # linear in the seed


@over_losses
@over_dtypes
@over_batches
def test_jvp_matches_jax(loss_id, dt, batch):
    r = case(loss_id, dt, batch)[-1]
    assert_close(r["jvp"], r["jvp_ref"], dt)


@over_losses
@over_dtypes
@over_batches
def test_hvp_matches_jvp_of_grad(loss_id, dt, batch):
    """The second-order rule: H_loss · pred_dot against ``jax.jvp(jax.grad(apply))``."""
    pred, _, r = case(loss_id, dt, batch)
    assert r["hvp"].shape == pred.shape and r["hvp"].dtype == dt.dtype
    assert_close(r["hvp"], r["hvp_ref"], dt)


@over_losses
def test_hvp_over_a_sequence_and_its_hessian_is_symmetric(loss_id):
    """(batch, T, classes) predictions: the reductions over every position, in float64; and
    ⟨u, H v⟩ = ⟨H u, v⟩."""
    rng = np.random.default_rng(7)
    loss = MAKE[loss_id]
    shape = (2, 3, CLASSES)
    pred, target = normal(rng, shape, jnp.float64), draw_target(loss, rng, shape, jnp.float64)
    u, v = normal(rng, shape, jnp.float64), normal(rng, shape, jnp.float64)

    @jax.jit
    def run(pred, target, u, v):
        ref = jax.jvp(jax.grad(lambda p: loss.apply(p, target)), (pred,), (v,))[1]
        return loss.hvp(pred, target, u), loss.hvp(pred, target, v), ref
    hu, hv, ref = run(pred, target, u, v)
    assert_close(hv, ref, FLOAT64)
    np.testing.assert_allclose(jnp.vdot(u, hv), jnp.vdot(hu, v), rtol=1e-12)


def test_a_loss_without_hvp_names_itself():
    class Plain(jacket.Loss):
        def apply(self, pred, target):
            return (pred * target).sum()

        def vjp(self, pred, target, value, value_bar=1.0):
            return value_bar * target

    with pytest.raises(NotImplementedError, match=r"Plain\(\) has no second-order rule: define Plain.hvp"):
        Plain().hvp(jnp.ones(3), jnp.ones(3), jnp.ones(3))


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_hvp_rejects_a_tangent_of_another_shape(loss):
    target = jnp.zeros((4,), jnp.int32) if isinstance(loss, jacket.SoftmaxCrossEntropy) else jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"pred_dot has shape \(12,\) but must have the shape of pred"):
        loss.hvp(jnp.zeros((4, 3)), target, jnp.ones(12))


@over_batches
def test_mse_gradient_is_two_residuals_over_size(batch):
    pred, target, r = case("MeanSquaredError()", FLOAT64, batch)
    expected = 2 * (np.asarray(pred) - np.asarray(target)) / pred.size
    assert_close(r["vjp"], expected, FLOAT64)


@over_batches
def test_bce_gradient_is_sigmoid_minus_target_over_size(batch):
    """The fused gradient of logistic regression: (σ(z) - t) / size."""
    z, t, r = case("BinaryCrossEntropyWithLogits()", FLOAT64, batch)
    z, t = np.asarray(z), np.asarray(t)
    assert_close(r["vjp"], (1 / (1 + np.exp(-z)) - t) / z.size, FLOAT64)


@over_batches
def test_sce_gradient_is_softmax_minus_onehot_over_batch(batch):
    z, labels, r = case("SoftmaxCrossEntropy()", FLOAT64, batch)
    z = np.asarray(z)
    softmax = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    onehot = np.eye(CLASSES)[np.asarray(labels)]
    assert_close(r["vjp"], (softmax - onehot) / (1 if batch is None else batch), FLOAT64)


# ---- extreme logits ----------------------------------------------------------------------
@over_dtypes
def test_bce_extreme_logits_stay_finite_and_correct(dt):
    loss = jacket.BinaryCrossEntropyWithLogits()
    z = jnp.asarray([100.0, -100.0, 100.0, -100.0], dt.dtype)
    t = jnp.asarray([0.0, 1.0, 1.0, 0.0], dt.dtype)
    value = loss.apply(z, t)
    grad = loss.vjp(z, t, value)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # two confidently wrong logits cost 100 each, the two right ones ~e^-100 each
    assert_close(value, optax_value(loss, z, t), dt)
    assert_close(value, jnp.asarray(50.0, dt.dtype), dt)
    assert_close(grad, jnp.asarray([0.25, -0.25, 0.0, 0.0], dt.dtype), dt)


@over_dtypes
def test_sce_extreme_logits_stay_finite_and_correct(dt):
    loss = jacket.SoftmaxCrossEntropy()
    z = jnp.asarray([[100.0, -100.0, 0.0], [-100.0, 100.0, -100.0]], dt.dtype)
    labels = jnp.asarray([1, 1])

    @jax.jit
    def run(z):
        value = loss.apply(z, labels)
        return (value, loss.vjp(z, labels, value), optax_value(loss, z, labels),
                jax.grad(lambda z: optax_value(loss, z, labels))(z))
    value, grad, value_ref, grad_ref = run(z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert_close(value, value_ref, dt)
    assert_close(value, jnp.asarray(100.0, dt.dtype), dt)  # (200 + ~0) / 2
    assert_close(grad, grad_ref, dt)


# ---- bad input ---------------------------------------------------------------------------
def test_sce_rejects_labels_of_the_wrong_shape():
    loss = jacket.SoftmaxCrossEntropy()
    logits, labels = jnp.zeros((4, 3)), jnp.zeros((3,), jnp.int32)
    pattern = r"labels have shape \(3,\) but logits \(4, 3\) need labels of shape \(4,\)"
    with pytest.raises(ValueError, match=pattern):
        loss.apply(logits, labels)
    with pytest.raises(ValueError, match=pattern):
        loss.vjp(logits, labels, 0.0)
    with pytest.raises(ValueError, match=r"labels have shape \(4, 3\)"):
        loss.apply(logits, jnp.zeros((4, 3), jnp.int32))  # one-hot labels are not accepted


def test_sce_rejects_float_labels():
    loss = jacket.SoftmaxCrossEntropy()
    with pytest.raises(TypeError, match="labels must be integer class indices, got dtype float"):
        loss.apply(jnp.zeros((4, 3)), jnp.zeros((4,)))


@pytest.mark.parametrize("loss", [jacket.MeanSquaredError(), jacket.BinaryCrossEntropyWithLogits()],
                         ids=repr)
def test_target_shape_mismatch(loss):
    pred = jnp.zeros((4, 3))
    pattern = r"target has shape \(3,\) but must have the shape of pred, \(4, 3\)"
    with pytest.raises(ValueError, match=pattern):
        loss.apply(pred, jnp.zeros(3))
    # the rules check too: broadcasting (3,) against (4, 3) would give a silently wrong gradient
    with pytest.raises(ValueError, match=pattern):
        loss.vjp(pred, jnp.zeros(3), 0.0)
    with pytest.raises(ValueError, match=pattern):
        loss.jvp(pred, jnp.zeros(3), 0.0, jnp.ones((4, 3)))


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_integer_predictions_and_bad_tangents_are_rejected(loss):
    target = jnp.zeros((4,), jnp.int32) if isinstance(loss, jacket.SoftmaxCrossEntropy) \
        else jnp.zeros((4, 3))
    with pytest.raises(TypeError, match="pred must be a floating-point array, got dtype int"):
        loss.apply(jnp.zeros((4, 3), jnp.int32), target)
    with pytest.raises(ValueError, match=r"pred_dot has shape \(3, 4\) but must have the shape of "
                                         r"pred, \(4, 3\)"):
        loss.jvp(jnp.zeros((4, 3)), target, 0.0, jnp.ones((3, 4)))


def test_softmax_cross_entropy_over_a_sequence_averages_every_position():
    """Logits (batch, T, classes) with labels (batch, T): the mean over all batch·T positions."""
    rng = np.random.default_rng(4)
    z = jnp.asarray(rng.standard_normal((2, 3, 5)))
    t = jnp.asarray(rng.integers(0, 5, size=(2, 3)))
    loss = jacket.SoftmaxCrossEntropy()
    value = loss.apply(z, t)
    np.testing.assert_allclose(value, optax_value(loss, z, t), rtol=1e-12)
    np.testing.assert_allclose(loss.vjp(z, t, value), jax.grad(lambda q: optax_value(loss, q, t))(z), rtol=1e-10,
                               atol=1e-14)
