"""The checkpointed reverse sweep (compose/_checkpoint.py): ``forward_boundaries`` keeps the
activations at a schedule's boundaries only, and ``pull_checkpointed`` over the schedule equals
the full tape's ``record`` + ``pull`` (to rounding: XLA:CPU may compile a recomputed layer a few
ulps differently) and ``jax.vjp``, in float64 on random chains of blocks, for one-level
schedules, the two-level one and binomial ones. (The transforms that take ``checkpoint=``, and the
memory they save: tests/transforms/test_checkpoint.py.)"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.trees import trees

import jacket
from jacket.checkpointing import boundaries, schedule
from jacket.compose import forward_boundaries, pull, pull_checkpointed, record

CHECKPOINTS = ["sqrt", "two-level", 2, (1,), ("binomial", 3)]


@settings(max_examples=3, deadline=None)
@given(st.lists(trees(1), min_size=2, max_size=5), st.sampled_from(CHECKPOINTS), st.integers(0, 2 ** 16))
def test_checkpointed_pull_equals_the_full_tape_and_jax_vjp(body, checkpoint, seed):
    chain = jacket.Chain([jacket.Dense(2, 3)] + body + [jacket.Dense(3, 2)])
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)),
                                    chain.init(jax.random.PRNGKey(seed), jnp.float64))
    x, y_bar = jnp.asarray(rng.standard_normal((4, 2))), jnp.asarray(rng.standard_normal((4, 2)))
    nodes = schedule(len(chain), checkpoint)
    bounds = boundaries(nodes)

    @jax.jit
    def three(params, x, y_bar):
        y, kept = forward_boundaries(chain, params, x, bounds)
        y_full, tape = record(chain, params, x)
        y_ref, pullback = jax.vjp(chain.apply, params, x)
        return ((y, pull_checkpointed(chain, params, kept, nodes, y_bar)), (y_full, pull(chain, params, tape, y_bar)),
                (y_ref, pullback(y_bar)), kept, tape)
    got, full, expected, kept, tape = three(params, x, y_bar)
    assert sorted(kept) == sorted(set(bounds) | {len(chain)})  # only the boundaries (and the output)
    for b, activation in kept.items():
        assert_close(activation, tape[b], FLOAT64)
    assert_close(got, full, FLOAT64)
    assert_close(got, expected, FLOAT64)
    assert isinstance(got[1][0], tuple)  # params_bar has the structure of params


def test_list_params_give_list_cotangents():
    chain = jacket.mlp([2, 3, 3, 2], activation="tanh")
    params = list(chain.init(jax.random.PRNGKey(0), jnp.float64))
    x, y_bar = jnp.ones((2, 2)), jnp.ones((2, 2))
    nodes = schedule(len(chain), "sqrt")
    _, kept = forward_boundaries(chain, params, x, boundaries(nodes))
    params_bar, x_bar = pull_checkpointed(chain, params, kept, nodes, y_bar)
    assert isinstance(params_bar, list)
    assert_close((params_bar, x_bar), pull(chain, params, record(chain, params, x)[1], y_bar), FLOAT64)
