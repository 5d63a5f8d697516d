"""Sharded paths against single-device results, on several (simulated) devices.

Run by tests/execute/test_sharding.py in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set before JAX is
imported); skipped when JAX sees fewer than two devices.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacket
from jacket.execute.sharding import data_parallel, make_mesh
from jacket.planning import make_plan

jax.config.update("jax_enable_x64", True)

pytestmark = pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices (see tests/execute/test_sharding.py)")

CHAINS = {
    "mlp": lambda: jacket.mlp([7, 6, 3]),
    "structured": lambda: jacket.Chain([jacket.Dense(5, 6), jacket.GELU(), jacket.LayerNorm(6),
                                        jacket.Dense(6, 6), jacket.Softmax()]),
    "bottleneck": lambda: jacket.mlp([9, 9, 2, 9, 9]),
}
ORDERS = ["forward", "reverse", "optimal"]


def _setup(name, dtype=jnp.float64):
    chain = CHAINS[name]()
    params = chain.init(jax.random.key(0), dtype)
    x = jax.random.normal(jax.random.key(1), (chain.dims[0],), dtype)
    return chain, params, x


@pytest.mark.parametrize("devices", [2, 4])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_sharded_jacobian_equals_single_device(name, order, devices):
    # seed counts 7, 5, 9, 3 are not multiples of 2 or 4: uneven splits are padded
    chain, params, x = _setup(name)
    mesh = make_mesh(devices)
    single = jacket.jacobian(chain, 1, order=order)(params, x)
    sharded = jacket.jacobian(chain, 1, order=order, mesh=mesh)(params, x)
    np.testing.assert_allclose(sharded, single, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sharded, jax.jacfwd(chain.apply, argnums=1)(params, x), rtol=1e-10, atol=1e-12)


def test_uneven_split_is_really_uneven():
    chain, params, x = _setup("mlp")
    assert chain.dims[0] % 4 and chain.dims[-1] % 4  # 7 columns, 3 rows over 4 devices


def test_sharded_computation_is_partitioned():
    chain, params, x = _setup("mlp")
    mesh = make_mesh(4)
    compiled = jax.jit(jacket.jacobian(chain, 1, order="forward", mesh=mesh)).lower(params, x).compile()
    text = compiled.as_text()
    assert "num_partitions=4" in text  # one SPMD program for 4 devices, not 4 copies of the work


def test_plan_counts_cost_per_device():
    chain, params, x = _setup("bottleneck")
    one, four = make_plan(chain, "forward"), make_plan(chain, "forward", devices=4)
    assert four.devices == 4 and "devices" in str(four)
    # at the front door: a number of devices, or the mesh itself, for one example
    assert jacket.plan(chain, 1, order="forward", mesh=4)(params, x) == four
    assert jacket.plan(chain, 1, order="forward", mesh=make_mesh(4))(params, x) == four
    # 9 tangent columns: ceil(9 / 4) = 3 per device
    assert four.fma * 9 == one.fma * 3


@pytest.mark.parametrize("batch", [4, 6])
def test_sharded_batched_jacobian(batch):
    chain, params, _ = _setup("structured")
    xb = jax.random.normal(jax.random.key(2), (batch, chain.dims[0]), jnp.float64)
    mesh = make_mesh(4)
    # the Jacobian of the batched call, (batch,) + s_N + (batch,) + s_0, with the examples split over the mesh
    sharded = jacket.jacobian(chain, 1, order="optimal", mesh=mesh)(params, xb)
    assert sharded.shape == (batch, chain.dims[-1], batch, chain.dims[0])
    np.testing.assert_allclose(sharded, jacket.jacobian(chain, 1, order="optimal")(params, xb), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sharded, jax.jacfwd(chain.apply, argnums=1)(params, xb), rtol=1e-10, atol=1e-12)
    # and per example, as the executor's batched path returns them
    per_example = jacket.execute.input_jacobian(chain, make_plan(chain, "optimal"), params, xb, batched=True,
                                                mesh=mesh)
    assert per_example.shape == (batch, chain.dims[-1], chain.dims[0])
    np.testing.assert_allclose(per_example, jax.vmap(jax.jacfwd(chain.apply, argnums=1), in_axes=(None, 0))(params, xb),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-12), (jnp.float32, 1e-5)])
def test_data_parallel_value_and_grad(dtype, rtol):
    chain, params, _ = _setup("mlp", dtype)
    loss = jacket.SoftmaxCrossEntropy()
    x = jax.random.normal(jax.random.key(3), (16, chain.dims[0]), dtype)
    labels = jnp.arange(16) % chain.dims[-1]
    step = jax.jit(jacket.value_and_grad(chain, loss))
    value, grads = step(params, x, labels)
    dp = data_parallel(4)
    xs, ys = dp.put_batch(x, labels)
    value4, grads4 = step(dp.put_replicated(params), xs, ys)
    assert xs.sharding.spec == jax.sharding.PartitionSpec("batch")
    np.testing.assert_allclose(value4, value, rtol=rtol)
    for a, b in zip(jax.tree_util.tree_leaves(grads4), jax.tree_util.tree_leaves(grads)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2)


def test_data_parallel_rejects_uneven_batch():
    dp = data_parallel(4)
    with pytest.raises(ValueError, match="does not split evenly over 4 devices"):
        dp.put_batch(jnp.ones((6, 3)))


def test_train_mlp_data_parallel_matches_one_device():
    pytest.importorskip("sklearn")
    from jacket.examples import mlp
    one = mlp.train(epochs=1, max_steps=15, progress=False, log=None)
    four = mlp.train(epochs=1, max_steps=15, progress=False, log=None, devices=4)
    np.testing.assert_allclose(four.step_losses, one.step_losses, rtol=1e-4)
    assert abs(four.test_accuracy - one.test_accuracy) <= 0.01


def test_train_command_with_devices(capsys):
    pytest.importorskip("sklearn")
    from jacket.cli import main
    assert main(["train", "mlp", "--quick", "--no-plot", "--no-progress", "--devices", "4"]) == 0
    out = capsys.readouterr().out
    assert "data-parallel over 4 devices" in out and "test accuracy: " in out


def test_the_plan_is_made_for_what_runs(monkeypatch):
    """One example on a mesh: seeds split, planned for mesh.size devices. A batch on a mesh: the
    examples are split and every device runs the one-device plan, so it is planned for one."""
    import jacket.planning
    asked = []
    real = jacket.planning.make_plan
    monkeypatch.setattr(jacket.planning, "make_plan", lambda chain, order, **kw: asked.append(kw.get("devices", 1))
                        or real(chain, order, **kw))
    chain, params, x = _setup("bottleneck")
    mesh = make_mesh(4)
    batch = jnp.stack([x, 2 * x, -x])
    one = jacket.jacobian(chain, 1, order="optimal", mesh=mesh)(params, x)
    many = jacket.jacobian(chain, 1, order="optimal", mesh=mesh)(params, batch)
    assert asked == [4, 1]
    np.testing.assert_allclose(many[1, :, 1], jacket.jacobian(chain, 1, order="optimal")(params, batch[1]),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one, many[0, :, 0], rtol=1e-10, atol=1e-12)
