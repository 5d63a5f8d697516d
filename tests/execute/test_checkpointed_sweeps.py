"""Checkpointed ADJ sweeps: ``jacket.jacobian(chain, 1, checkpoint=k)`` / ``plan.checkpointed(k)`` pull
the cotangent rows back segment by segment, recomputing each segment's activations from its
first one. Results equal ``jax.jacfwd`` in float64 in every order, with and without chunks; the
compiled program really recomputes (one ``conditional`` per recomputed segment, the forward
layers again) and XLA's temporaries of a deep batched Jacobian shrink, as the bytes model says.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.api import plan_of

import jacket
from jacket.checkpointing import boundaries
from jacket.execute._executor import _batched
from jacket.planning import make_plan
from jacket.planning._nodes import sweep_schedule


def deep(blocks=6, width=24, out=3):
    layers = []
    for _ in range(blocks):
        layers += [jacket.Dense(width, width), jacket.Tanh()]
    return jacket.Chain(layers + [jacket.Dense(width, out)])


@pytest.mark.parametrize("batch", [False, True])
def test_checkpointed_jacobians_equal_jacfwd_in_every_order(batch):
    chain = jacket.Chain([jacket.Dense(5, 7), jacket.Tanh(), jacket.Dense(7, 6), jacket.Softplus(),
                          jacket.LayerNorm(6), jacket.Dense(6, 4), jacket.Sigmoid()])
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5) if batch else (5,), jnp.float64)
    want = jax.jacfwd(chain.apply, argnums=1)(params, x)  # on a batch: (3,) + s_N + (3,) + s_0
    cases = [("reverse", 3, 2)] if batch else \
        [("reverse", 7, 2), ("adj(J7 | J6..J1)", "two-level", None), ("(adj(J7..J3) (J2 J1))", ("binomial", 3), 3)]
    for order, checkpoint, chunk in cases:
        got = jacket.jacobian(chain, 1, order=order, checkpoint=checkpoint, chunk=chunk)(params, x)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13, err_msg=f"{order} {checkpoint} {chunk}")


def test_a_sweep_is_scheduled_over_its_own_factors():
    assert boundaries(sweep_schedule(1, 9, "sqrt")) == (0, 3, 6, 9)
    assert boundaries(sweep_schedule(3, 7, 2)) == (0, 2, 5)  # local indices: factor 3 is layer 0
    assert boundaries(sweep_schedule(4, 5, 10)) == (0, 1, 2)


def test_a_deep_batched_jacobian_recomputes_and_holds_less():
    chain = deep(blocks=12, width=32)
    params = chain.init(jax.random.PRNGKey(0))
    x = jnp.ones((128, 32))
    whole, ckpt = plan_of(chain, "reverse"), plan_of(chain, "reverse", checkpoint="sqrt")
    assert ckpt.fma == whole.fma and ckpt != whole and "checkpoint:" in str(ckpt) and ckpt.checkpoint == "sqrt"
    assert ckpt == jacket.plan(chain, 1, order="reverse", checkpoint="sqrt")(params, x)
    compiled = {name: _batched.lower(chain, plan, params, x).compile() for name, plan in
                (("whole", whole), ("sqrt", ckpt))}
    text = compiled["sqrt"].as_text()
    assert text.count(" conditional(") == sum(1 for *_, inner in sweep_schedule(1, len(chain), "sqrt") if inner)
    assert text.count("tanh(") > compiled["whole"].as_text().count("tanh(")  # the forward layers again
    temp = {k: c.memory_analysis().temp_size_in_bytes for k, c in compiled.items()}
    assert temp["sqrt"] < 0.8 * temp["whole"], temp
    assert ckpt.memory.temp_bytes < whole.memory.temp_bytes


def test_bad_checkpoints_are_refused():
    chain = deep(blocks=2)
    for bad in (0, -1, "cbrt", True, 1.5, (2, 5), ("binomial", 2)):
        with pytest.raises(ValueError, match=rf"jacket\.plan: checkpoint.* got {re.escape(repr(bad))}"):
            jacket.plan(chain, 1, order="reverse", checkpoint=bad)
        with pytest.raises(ValueError, match="checkpoint must be"):
            make_plan(chain, "reverse", checkpoint=bad)
    with pytest.raises(ValueError, match="parameter Jacobian .* without chunks, checkpoints.*checkpoint=2"):
        jacket.jacobian(chain, 0, order="reverse", checkpoint=2)


def test_a_chain_without_params_keeps_its_conds_for_a_batch():
    """The conds' predicate comes from the params, or, for a chain with none, from the whole batch
    outside the examples' vmap: unbatched either way, so the recomputation stays a ``cond`` (a
    batched predicate would make it a select of both branches)."""
    chain = jacket.Chain([jacket.Tanh(), jacket.Sigmoid(), jacket.Softplus(), jacket.Tanh(), jacket.Sigmoid(),
                          jacket.Tanh()], in_shape=8)
    params = chain.init(jax.random.PRNGKey(0))
    for shape in ((8,), (4, 8)):
        x = jnp.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)
        jac = jacket.jacobian(chain, 1, order="reverse", checkpoint=2)
        text = jax.jit(lambda x: jac(params, x)).lower(x).compile().as_text()
        assert text.count(" conditional(") == 2 and " select(" not in text, shape
        np.testing.assert_allclose(jac(params, x), jacket.jacobian(chain, 1, order="reverse")(params, x), rtol=1e-12)
