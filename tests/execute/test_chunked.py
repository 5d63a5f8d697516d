"""Chunked sweeps: jacket.jacobian(chain, 1, chunk=k) runs every TAN/ADJ step k seed vectors at a time.
Results equal the unchunked plan and jax.jacfwd in float64 in every order (chunks that divide
the seeds and chunks that don't); the bytes model and XLA's compiled temporaries both shrink, and
agree within 1.5x; the calibrated prediction pays a step per extra batch; bad arguments are refused."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from _helpers.api import plan_of
from conftest import FLOAT64, assert_close

import jacket
from jacket.planning import make_plan
from jacket.planning._costs import CalibratedCost, Rates

CHAIN = jacket.mlp([6, 12, 3, 12, 10], activation="tanh")


def _inputs(chain, batch=()):
    params = chain.init(jax.random.PRNGKey(0), jnp.float64)
    return params, jax.random.normal(jax.random.PRNGKey(1), batch + chain.in_shape, jnp.float64)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_chunked_jacobians_equal_jacfwd_in_every_order(batch):
    params, x = _inputs(CHAIN, batch)
    orders = ("forward", "reverse", "optimal", "((J7 J6) (J5 (J4 (J3 (J2 J1)))))")

    @jax.jit
    def all_of_them(params, x):  # on a batch: the Jacobian of the batched call, (2,) + s_N + (2,) + s_0
        got = [jacket.jacobian(CHAIN, 1, order=o, chunk=c)(params, x) for o in orders for c in (1, 4, 5)]
        return got, jax.jacfwd(CHAIN.apply, argnums=1)(params, x)
    got, expected = all_of_them(params, x)
    for jac in got:
        assert_close(jac, expected, FLOAT64)


def test_chunks_hold_fewer_seeds_in_the_model_and_in_xla():
    chain = jacket.mlp([64, 256, 256, 256], activation="tanh")  # reverse: 256 rows through wide layers
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jnp.ones(64, jnp.float32)
    whole, chunked = plan_of(chain, "reverse"), plan_of(chain, "reverse", chunk=16)
    assert chunked.fma == whole.fma and chunked != whole and "chunk:" in str(chunked) and chunked.chunk == 16
    assert chunked == jacket.plan(chain, 1, order="reverse", chunk=16)(params, x)
    assert chunked.memory.temp_bytes < whole.memory.temp_bytes
    temp = {k: jax.jit(jacket.jacobian(chain, 1, order=plan)).lower(params, x).compile()
            .memory_analysis().temp_size_in_bytes for k, plan in (("whole", whole), ("chunked", chunked))}
    assert temp["chunked"] < temp["whole"], temp
    rates = Rates(device="synthetic", sweep_fma=1e-11, sweep_io=1e-10, mm_fma=1e-11, skinny_fma=2e-11,
                  mm_io=1e-10, struct_fma=2e-10, step=1e-6, sweep_fma_few=3e-11, call=1e-6)
    cost = CalibratedCost(rates)
    assert whole.predict(cost) < chunked.predict(cost)  # 15 more batches of fixed cost, the few-seed rate


# (widths, order, chunks): unit seeds and seeded sweeps, chunks that divide the seeds and that don't
MODELLED = [((64, 512, 512, 512, 128), "reverse", (32, 48)), ((128, 512, 512, 512, 64), "forward", (32, 48)),
            ((128, 512, 512, 128), "optimal", (32, 48)), ((128, 512, 512, 128), "adj(J5 | J4..J1)", (48,)),
            ((128, 512, 512, 128), "tan(J5 J4 | adj(J3..J1))", (32, 48))]


@pytest.mark.parametrize("widths, order, chunks", MODELLED)
def test_the_model_counts_what_a_chunked_sweep_allocates(widths, order, chunks):
    """Within 1.5x of XLA's temporaries (compiled, not run): the map's stacked output, the seeds
    as the loop reads them (a remainder's slice), what the body reads; the plain count of one batch
    came out at 0.1-0.7x."""
    chain = jacket.mlp(list(widths), activation="tanh")
    params = jax.eval_shape(lambda: chain.init(jax.random.PRNGKey(0), jnp.float32))
    x = jax.ShapeDtypeStruct(chain.in_shape, jnp.float32)
    for k in chunks:
        plan = jacket.plan(chain, 1, order=order, chunk=k)(params, x)
        xla = jax.jit(jacket.jacobian(chain, 1, order=plan)).lower(params, x).compile().memory_analysis()
        assert plan.memory.result_bytes == xla.output_size_in_bytes
        ratio = plan.memory.temp_bytes / xla.temp_size_in_bytes
        assert 1 / 1.5 <= ratio <= 1.5, (widths, order, k, plan.memory.temp_bytes, xla.temp_size_in_bytes)


def test_bad_chunks_are_refused():
    params, x = _inputs(CHAIN)
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ValueError, match="chunk must be a positive number"):
            jacket.jacobian(CHAIN, 1, order="reverse", chunk=bad)
        with pytest.raises(ValueError, match="chunk must be a positive number"):
            make_plan(CHAIN, "reverse").chunked(bad)
    with pytest.raises(ValueError, match="applies to one device"):
        make_plan(CHAIN, "reverse", devices=2, chunk=4)
    with pytest.raises(ValueError, match="chunk= and mesh= don't combine for one example"):
        jacket.plan(CHAIN, 1, order="reverse", mesh=2, chunk=4)(params, x)
    with pytest.raises(ValueError, match="parameter Jacobian .* without chunks.*chunk=4"):
        jacket.jacobian(CHAIN, 0, order="reverse", chunk=4)


def test_batches_of_one_seed_are_counted_with_their_copy():
    """``lax.map(..., batch_size=1)`` copies its seeds for the loop (a unit identity twice, a
    computed seed densified): the model counts it, within 1.5x of XLA's temporaries."""
    chain = jacket.mlp([64, 512, 512, 64], activation="tanh")
    params = chain.init(jax.random.PRNGKey(0))
    for order in ("optimal", "reverse", "forward"):
        plan = plan_of(chain, order, chunk=1)
        xla = jax.jit(jacket.jacobian(chain, 1, order=plan)).lower(params, jnp.ones(64, jnp.float32)).compile() \
            .memory_analysis().temp_size_in_bytes
        assert 1 / 1.5 <= plan.memory.temp_bytes / xla <= 1.5, (order, plan.memory.temp_bytes, xla)
