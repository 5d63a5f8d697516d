"""Per-example quantities (transforms/_per_example.py) against JAX's autodiff in float64:
per-example gradients against ``jax.vmap(jax.grad)`` (and their compiled HLO: no per-example
loop), the empirical NTK in both implementations against one built from ``jax.jacrev``, the
cost choice (``ntk_costs``) and clear errors.

Each case compiles one program holding the rules and the reference: compiling is what costs."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close

import jacket
from jacket.transforms import ntk_costs

D = 3


def _draw(chain, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = chain.init(jax.random.PRNGKey(seed), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)
    x = jnp.asarray(rng.standard_normal(batch + chain.in_shape))
    return params, x


def _jacrev(chain, params, x):
    """The reference: ``jax.jacrev`` with respect to params, per example for a batch."""
    one = lambda xi: jax.jacrev(lambda p: chain.apply(p, xi))(params)  # noqa: E731
    return one(x) if x.shape == chain.in_shape else jax.vmap(one)(x)


def _ntk_reference(chain, params, x1, x2):
    j1, j2 = _jacrev(chain, params, x1), _jacrev(chain, params, x2)
    n_out = chain.dims[-1]
    theta = sum(jnp.einsum("iap,jbp->ijab", a.reshape(a.shape[0], n_out, -1), b.reshape(b.shape[0], n_out, -1))
                for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)))
    return theta.reshape((x1.shape[0], x2.shape[0]) + chain.out_shape * 2)


BLOCKS = jacket.Chain([
    jacket.Dense(2, D),
    jacket.Residual([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Parallel([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Chain([jacket.Tanh(), jacket.Dense(D, 2)]),
])


# ---- per-example gradients ------------------------------------------------------------------
def _per_example_reference(chain, loss):
    one = jax.value_and_grad(lambda p, xi, ti: loss.apply(chain.apply(p, xi), ti))
    return jax.vmap(one, in_axes=(None, 0, 0))


@pytest.mark.parametrize("case", ["mlp", "sequence"])
def test_per_example_grads_equal_vmap_of_grad(case):
    if case == "mlp":
        chain, target = jacket.mlp([3, 4, 3]), jnp.array([0, 2, 1, 2])
    else:  # (T, classes) logits, (T,) labels per example
        chain = jacket.Chain([jacket.Dense(2, 4), jacket.LayerNorm(4), jacket.Tanh(), jacket.Dense(4, 3)],
                             in_shape=(5, 2))
        target = jnp.asarray(np.random.default_rng(1).integers(0, 3, (4, 5)))
    loss = jacket.SoftmaxCrossEntropy()
    params, x = _draw(chain, (4,))
    fn = jacket.per_example_grads(chain, loss)
    (values, grads), (expected_values, expected_grads) = jax.jit(
        lambda p, x, t: (fn(p, x, t), _per_example_reference(chain, loss)(p, x, t)))(params, x, target)
    assert values.shape == (4,)
    assert_close(values, expected_values, FLOAT64)
    assert_close(grads, expected_grads, FLOAT64)


def test_per_example_grads_compile_to_one_batched_pass_without_a_loop():
    """Under jit, the vmap over examples is batched by XLA: no while loop, and no more dots than the
    batch-mean gradient (the per-example weight gradients are batched outer products)."""
    chain, loss = jacket.mlp([4, 5, 3]), jacket.SoftmaxCrossEntropy()
    params = chain.init(jax.random.PRNGKey(0))
    x, target = jnp.ones((8, 4), jnp.float32), jnp.zeros(8, jnp.int32)
    texts = [jax.jit(f).lower(params, x, target).compile().as_text()
             for f in (jacket.per_example_grads(chain, loss), jacket.value_and_grad(chain, loss))]
    per_example, mean = texts
    assert not re.search(r"\bwhile\(", per_example)
    assert len(re.findall(r"\bdot\(", per_example)) <= len(re.findall(r"\bdot\(", mean))
    assert "f32[8,4,5]" in per_example  # the first Dense layer's weight gradient, one per example


# ---- the empirical NTK --------------------------------------------------------------------
def test_ntk_equals_the_jacrev_reference_in_both_implementations():
    chain = BLOCKS
    params, x1 = _draw(chain, (3,))
    x2 = x1[:2] * 0.5

    @jax.jit
    def everything(params, x1, x2):
        ours = {(impl, trace): jacket.ntk(chain, implementation=impl, trace=trace)(params, x1, x2)
                for impl in ("jacobian", "ntvp") for trace in (False, True)}
        return ours, _ntk_reference(chain, params, x1, x2)
    ours, expected = everything(params, x1, x2)
    assert expected.shape == (3, 2, 2, 2)
    for (impl, trace), theta in ours.items():
        want = jnp.trace(expected, axis1=2, axis2=3) / 2 if trace else expected
        assert_close(theta, want, FLOAT64), (impl, trace)


def test_ntk_of_one_batch_is_symmetric_and_auto_uses_the_cost_model():
    chain = jacket.Chain([jacket.Dense(2, 3), jacket.Tanh(), jacket.Dense(3, 2)], in_shape=(2, 2))  # a sequence
    params, x = _draw(chain, (3,))
    theta = jacket.ntk(chain)(params, x)
    assert theta.shape == (3, 3, 2, 2, 2, 2)
    flat = theta.reshape(3, 3, 4, 4).transpose(0, 2, 1, 3).reshape(12, 12)
    assert_close(flat, flat.T, FLOAT64)
    costs = ntk_costs(chain, 3, 3)
    assert set(costs) == {"jacobian", "ntvp"} and all(c > 0 for c in costs.values())
    # "jacobian": both batches' parameter Jacobians (planned as jacket.plan(chain, 0)) and their contraction
    plan = jacket.plan(chain, 0, order="reverse")(None, x)
    n_out = chain.dims[-1]
    assert costs["jacobian"] == 6 * plan.fma + 9 * n_out * n_out * plan.model.total
    assert ntk_costs(chain, 3, 3, trace=True)["jacobian"] == 6 * plan.fma + 9 * n_out * plan.model.total


# ---- errors ---------------------------------------------------------------------------------
def test_errors_name_what_was_given():
    chain = jacket.mlp([3, 4, 2])
    params, x = _draw(chain, ())
    with pytest.raises(ValueError, match=r"jacket.per_example_grads: x must have a batch axis"):
        jacket.per_example_grads(chain, jacket.MeanSquaredError())(params, x, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"target must have the batch axis of x \(2\)"):
        jacket.per_example_grads(chain, jacket.MeanSquaredError())(params, jnp.stack([x, x]), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"implementation must be .* got 'fast'"):
        jacket.ntk(chain, implementation="fast")
    with pytest.raises(TypeError, match=r"trace must be True or False"):
        jacket.ntk(chain, trace="yes")
    with pytest.raises(TypeError):  # every option is keyword-only
        jacket.ntk(chain, "jacobian")
    with pytest.raises(TypeError):
        jacket.per_example_grads(chain, jacket.MeanSquaredError(), "sqrt")
    with pytest.raises(ValueError, match=r"jacket.ntk: x1 must have a batch axis"):
        jacket.ntk(chain)(params, x)
    with pytest.raises(ValueError, match=r"invalid order '\(J2 J1\)' for a parameter Jacobian"):
        jacket.ntk(chain, order="(J2 J1)")
