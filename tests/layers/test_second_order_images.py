"""Second-order rules of the image and sequence layers (``vjp_jvp`` of layers/_conv.py and
layers/_attention.py): the tangent of the hand-written vjp against JAX differentiating ``apply``
twice, ``jax.jvp`` of ``jax.vjp(layer.apply)``, never the hand-written vjp itself.

Every case (each layer on one example and on a batch, with all tangents or with some of them
None) and two planted wrong rules run in ONE compiled program: compiling is nearly all the cost.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close

from jacket.layers._attention import MultiHeadSelfAttention
from jacket.layers._conv import AvgPool2D, Conv1D, Conv2D, MaxPool2D


class _ConvMissingTerm(Conv2D):
    """Planted: drops convT(w_dot, y_bar) from x_bar_dot (params_dot only enters through it)."""

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        return super().vjp_jvp(params, x, y, y_bar, x_dot, None, y_dot, y_bar_dot)


class _AttentionSignError(MultiHeadSelfAttention):
    """Planted: the softmax vjp's tangent with the sign of its -A ⟨A_bar, a_dot⟩ term flipped."""

    def _softmax_vjp_jvp(self, s, a, a_bar, s_dot, a_dot, a_bar_dot):
        right = super()._softmax_vjp_jvp(s, a, a_bar, s_dot, a_dot, a_bar_dot)
        return right + 2 * a * (a_bar * a_dot).sum(axis=-1, keepdims=True)


_CONV = Conv2D(2, 3, 3, stride=2, padding="SAME")
_ATTENTION, _CAUSAL = MultiHeadSelfAttention(4, 2), MultiHeadSelfAttention(4, 2, causal=True)
# (id, layer, x shape, variant): each layer on one example and on a batch of 2, one with every
# tangent ("all"), one with some tangent None (a symbolic zero; the reference takes zeros there).
# One variant per case: each costs a rule and a reference in the one program.
CASES = [
    ("conv2d_stride2_same-single", _CONV, (2, 5, 6), "all"),
    ("conv2d_stride2_same-batch", _CONV, (2, 2, 5, 6), "no_x_dot"),
    ("conv2d_valid_3x2-single", Conv2D(2, 2, (3, 2), padding="VALID"), (2, 5, 4), "no_params_dot"),
    ("conv2d_valid_3x2-batch", Conv2D(2, 2, (3, 2), padding="VALID"), (2, 2, 5, 4), "all"),
    ("conv1d-single", Conv1D(2, 3, 3, stride=2), (2, 7), "only_y_bar_dot"),
    ("conv1d-batch", Conv1D(2, 3, 3, stride=2), (2, 2, 7), "all"),
    ("avgpool2d-single", AvgPool2D(2, stride=1), (2, 4, 5), "all"),
    ("avgpool2d-batch", AvgPool2D(2, stride=1), (2, 2, 4, 5), "no_y_bar_dot"),
    ("maxpool2d-single", MaxPool2D((3, 2), stride=(2, 1)), (2, 5, 4), "no_x_dot"),
    ("maxpool2d-batch", MaxPool2D((3, 2), stride=(2, 1)), (2, 2, 5, 4), "all"),
    ("attention-single", _ATTENTION, (3, 4), "all"),
    ("attention-batch", _ATTENTION, (2, 3, 4), "no_x_dot"),
    ("attention-batch", _ATTENTION, (2, 3, 4), "only_y_bar_dot"),
    ("attention_causal-single", _CAUSAL, (3, 4), "no_params_dot"),
    ("attention_causal-batch", _CAUSAL, (2, 3, 4), "all"),
]
CASES = [(f"{name}-{variant}", layer, shape, variant) for name, layer, shape, variant in CASES]
# (id, planted layer, the case whose draws and reference it reuses: the same apply, all tangents)
_CASE = {case[0]: i for i, case in enumerate(CASES)}
MUTANTS = [
    ("conv_missing_convT_w_dot", _ConvMissingTerm(2, 3, 3, stride=2, padding="SAME"),
     _CASE["conv2d_stride2_same-single-all"]),
    ("attention_sign_error", _AttentionSignError(4, 2, causal=True), _CASE["attention_causal-batch-all"]),
]
# which of (x_dot, params_dot, y_bar_dot) each variant keeps
KEEP = {"all": (1, 1, 1), "no_x_dot": (0, 1, 1), "no_params_dot": (1, 0, 1),
        "only_y_bar_dot": (0, 0, 1), "no_y_bar_dot": (1, 1, 0)}


def _draw(rng, layer, shape):
    normal = lambda s: jnp.asarray(rng.standard_normal(s))  # noqa: E731
    params = jax.tree_util.tree_map(lambda a: normal(a.shape), jax.eval_shape(layer.init, jax.random.PRNGKey(0)))
    x, x_dot = normal(shape), normal(shape)
    params_dot = jax.tree_util.tree_map(lambda a: normal(a.shape), params)
    out = jax.eval_shape(layer.apply, params, x).shape
    return params, x, normal(out), x_dot, params_dot, normal(out)


def _rule(layer, params, x, y_bar, x_dot, params_dot, y_bar_dot):
    """``layer.vjp_jvp`` with ``y`` and ``y_dot`` from the layer's own rules; Nones as zeros."""
    if not jax.tree_util.tree_leaves(params_dot):
        params_dot = None
    y = layer.apply(params, x)
    y_dot = None if x_dot is None and params_dot is None else layer.jvp(params, x, y, x_dot, params_dot)
    params_bar_dot, x_bar_dot = layer.vjp_jvp(params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot)
    if params_bar_dot is None:
        params_bar_dot = jax.tree_util.tree_map(jnp.zeros_like, params)
    return params_bar_dot, jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot


def _reference(layer, params, x, y_bar, x_dot, params_dot, y_bar_dot):
    """JAX's tangent of ``jax.vjp(layer.apply)`` (``apply`` differentiated twice); None as zeros."""
    zeros = lambda t, like: jax.tree_util.tree_map(jnp.zeros_like, like) if t is None else t  # noqa: E731
    pullback = lambda p, x, yb: jax.vjp(layer.apply, p, x)[1](yb)  # noqa: E731
    return jax.jvp(pullback, (params, x, y_bar),
                   (zeros(params_dot, params), zeros(x_dot, x), zeros(y_bar_dot, y_bar)))[1]


def _variant(draw, variant):
    params, x, y_bar, x_dot, params_dot, y_bar_dot = draw
    keep_x, keep_p, keep_yb = KEEP[variant]
    return (params, x, y_bar, x_dot if keep_x else None, params_dot if keep_p else None,
            y_bar_dot if keep_yb else None)


@pytest.fixture(scope="module")
def results():
    """(rule, reference) per case, then per mutant: all from one jitted call."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        draws = [_draw(rng, layer, shape) for _, layer, shape, _ in CASES]

        @jax.jit
        def compute(draws):
            draws = [_variant(draw, case[3]) for case, draw in zip(CASES, draws)]
            out = [(_rule(case[1], *draw), _reference(case[1], *draw)) for case, draw in zip(CASES, draws)]
            return out + [(_rule(layer, *draws[case]), out[case][1]) for _, layer, case in MUTANTS]

        return jax.device_get(compute(draws))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_vjp_jvp_matches_jax(results, index):
    rule, reference = results[index]
    assert_close(rule, reference, FLOAT64, scale=10)


@pytest.mark.parametrize("index", range(len(MUTANTS)), ids=[m[0] for m in MUTANTS])
def test_planted_wrong_rules_differ(results, index):
    rule, reference = results[len(CASES) + index]
    with pytest.raises(AssertionError):
        assert_close(rule, reference, FLOAT64, scale=1e6)
