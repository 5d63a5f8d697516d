"""The benchmark machinery on tiny sizes: timing helpers, results files, each benchmark's run,
and the ``jacket bench`` command line. No timing assertions: speed is measured by the
benchmarks themselves, not asserted by tests."""
import json
import math
import os

import jax
import jax.numpy as jnp
import pytest
from _helpers.api import plan_of

from jacket import cli
from jacket_bench import BENCHMARKS, load, select_device
from jacket_bench import timing

TINY_ROOFLINE = {"matmul_n": 32, "matvec_n": 64, "repeats": 1}


@pytest.fixture(autouse=True)
def restore_default_device():
    yield
    jax.config.update("jax_default_device", None)


def _finite_positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_alternate_ratios_against_baseline():
    a = jnp.ones((16, 16), jnp.float32)
    fns = {"matmul": lambda a: a @ a, "add": lambda a: a + 1.0, "sum": lambda a: a.sum()}
    result = timing.alternate(fns, (a,), repeats=3, baseline="add", min_sample_s=1e-4)
    for field in ("median_s", "compile_s", "number", "ratio"):
        assert set(result[field]) == set(fns), field
    assert result["baseline"] == "add" and result["ratio"]["add"] == 1.0
    assert all(_finite_positive(result["ratio"][k]) for k in fns)
    assert all(_finite_positive(result["median_s"][k]) for k in fns)
    assert len(result["rounds"]) == 3 and all(set(r) == set(fns) for r in result["rounds"])


def test_alternate_rejects_unknown_baseline():
    with pytest.raises(ValueError, match="baseline 'nope'"):
        timing.alternate({"f": lambda a: a}, (jnp.ones(2),), repeats=1, baseline="nope")


def test_paired_ratio_is_median_of_same_round_ratios():
    rounds = [{"a": 2.0, "b": 1.0}, {"a": 30.0, "b": 10.0}, {"a": 1.0, "b": 1.0}]
    assert timing.paired_ratio(rounds, "a", "b") == 2.0


def test_time_fn_and_compiled_input():
    x = jnp.arange(8.0)
    result = timing.time_fn(lambda x: x * 2, (x,), repeats=2, min_sample_s=1e-4)
    assert _finite_positive(result["median_s"]) and _finite_positive(result["compile_s"])
    compiled = jax.jit(lambda x: x + 1).lower(x).compile()
    again = timing.time_fn(compiled, (x,), repeats=1, min_sample_s=1e-4)
    assert _finite_positive(again["median_s"]) and math.isnan(again["compile_s"])


def test_roofline_and_rates():
    peak = timing.roofline(**TINY_ROOFLINE)
    assert all(_finite_positive(peak[k]) for k in ("matmul_gflops", "matvec_gbs", "copy_gbs"))
    assert timing.gflops(1e9, 2.0) == 1.0 and timing.gbytes_per_s(4e9, 2.0) == 2.0


def test_device_description_and_slug():
    info = timing.device_info()
    assert {"platform", "device_kind", "jax_version", "cpu_count"} <= set(info)
    assert timing.device_slug({"platform": "cpu", "device_kind": "cpu"}) == "cpu"
    assert timing.device_slug({"platform": "gpu", "device_kind": "NVIDIA H100 80GB HBM3"}) == \
        "gpu-nvidia-h100-80gb-hbm3"


def test_write_results_json_and_png(tmp_path):
    pytest.importorskip("matplotlib")

    def figure(record):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot(record["dims"], record["times"])
        return fig
    files = timing.write_results("demo", {"dims": [1, 2], "times": [0.1, 0.2], "ratio": {"x": 1.0}},
                                 out=str(tmp_path), figure=figure)
    assert files["json"] == os.path.join(str(tmp_path), timing.device_slug(), "demo.json")
    assert os.path.getsize(files["png"]) > 0
    record = json.load(open(files["json"]))
    for field in ("benchmark", "device", "jax_version", "timestamp_utc", "dims", "times", "ratio"):
        assert field in record, field
    assert record["jax_version"] == jax.__version__


def _tiny(name):
    module = load(name)
    cfg = module.config(full=False)
    cfg.update(repeats=2, min_sample_s=1e-4, roofline=TINY_ROOFLINE)
    if name == "grad":
        cfg["cases"] = [{"n_in": 6, "width": 5, "classes": 3, "batch": 4}]
        cfg.update(architectures=[{"model": "cnn", "batch": 2}, {"model": "transformer", "batch": 2}], scale=8)
    elif name == "associativity":
        cfg.update(sizes=(4, 8), depth=1)
    elif name == "orders":
        cfg.update(families=("bottleneck", "transformer"), scale=128, calibrate=False, autotune_rounds=1)
    elif name == "planning":
        cfg = dict(cfg, lengths=(3, 6), repeats=1)
    elif name == "scaling":
        cfg.update(devices=(1, 2), width=8, depth=1, batch=8)
    elif name == "memory":
        cfg.update(families=("bottleneck",), scale=16, checkpoint={"blocks": 3, "width": 8, "batch": 16},
                   checkpoint_repeats=1, chunked=[[6, 12, 12, 6]], chunks=[4], chunk_repeats=1, limit_points=2,
                   limit_repeats=1, limit_chains={"wide": [6, 12, 12, 6], "deep": {"blocks": 3, "width": 8, "batch": 4}})
    elif name == "curvature":
        cfg.update(mlp=(6, 5, 5, 3), per_example_mlp=(6, 5, 3), batch=4, scale=8,
                   ntk=[{"name": "mlp", "widths": (4, 3, 5), "n": 2}], params_batch=2, hessian_mlp=(4, 3, 2),
                   hessian_batch=4, params_chain={"tokens": 3, "features": 2, "hidden": 3, "bottleneck": 1, "width": 4})  # the CNN shape compiles for ~10 s
    return module, cfg


# the tiny runs of orders (it calibrates and autotunes), curvature (every group), grad and scaling (a
# subprocess on simulated devices) take 8-10 s each: in the slow suite; the others stay in the default one
SLOW_TINY = ("orders", "curvature", "scaling", "grad")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TINY else n for n in BENCHMARKS])
def test_benchmark_runs_on_tiny_sizes(name, tmp_path, capsys):
    module, cfg = _tiny(name)
    ticks = []
    record = module.run(cfg, out=str(tmp_path), tick=ticks.append)
    assert len(ticks) == module.n_steps(cfg)
    saved = json.load(open(record["files"]["json"]))
    assert saved["benchmark"] == module.NAME and "device" in saved and "targets" in saved
    assert all(isinstance(v, bool) for v in saved["targets"].values())
    assert capsys.readouterr().out.strip()  # printed a table


def test_grad_candidates_agree():
    from jacket import SoftmaxCrossEntropy
    from jacket_bench import grad
    case = {"n_in": 6, "width": 5, "classes": 3, "batch": 4}
    chain = grad.mlp(case)
    fns, args = grad.candidates(chain, SoftmaxCrossEntropy()), grad.inputs(chain, case)
    (v1, g1), (v2, g2) = jax.jit(fns["jacket"])(*args), jax.jit(fns["jax"])(*args)
    assert jnp.allclose(v1, v2, rtol=1e-5)
    assert all(jnp.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(jax.tree_util.tree_leaves(g1),
                                                                         jax.tree_util.tree_leaves(g2)))


@pytest.mark.slow  # the library's Jacobians of these blocks are checked in tests/compose; this checks the benchmark's wiring
@pytest.mark.parametrize("family", ["residual-mlp", "transformer", "cnn"])
def test_orders_architectures_agree_with_jax(family):
    """The architecture families on tiny sizes: every order's Jacobian (shape s_N + s_0) is jax.jacfwd's."""
    from jacket_bench.associativity import candidates
    from jacket_bench.orders import FAMILIES, example_inputs
    chain = FAMILIES[family](16)
    params, x = example_inputs(chain, seed=0)
    fns = candidates(chain, optimal=True)
    expected = fns.pop("jax.jacfwd")(params, x)
    assert expected.shape == tuple(chain.out_shape) + tuple(chain.in_shape)
    for name, fn in fns.items():
        assert jnp.allclose(jax.jit(fn)(params, x), expected, rtol=1e-4, atol=1e-5), name


def test_grad_architectures_agree():
    from jacket import SoftmaxCrossEntropy
    from jacket_bench import grad
    for case in ({"model": "cnn", "batch": 3}, {"model": "transformer", "batch": 2}):
        chain = grad.architecture(case, scale=8)
        fns, args = grad.candidates(chain, SoftmaxCrossEntropy()), grad.inputs(chain, case)
        (v1, g1), (v2, g2) = jax.jit(fns["jacket"])(*args), jax.jit(fns["jax"])(*args)
        assert jnp.allclose(v1, v2, rtol=1e-5)
        assert all(jnp.allclose(a, b, rtol=1e-4, atol=1e-6)
                   for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)))


def test_op_counts_reads_entry_and_fusion_kinds():
    from jacket_bench.grad import op_counts
    text = jax.jit(lambda a, b: jnp.tanh(a @ b) + 1).lower(jnp.ones((4, 4)), jnp.ones((4, 4))).compile().as_text()
    counts = op_counts(text)
    assert counts.get("dot (all)", 0) >= 1 and "parameter" not in counts


@pytest.mark.parametrize("n", [1, 2, 5])
def test_bracketings(n):
    from jacket_bench.associativity import left_nested, right_nested, scalar_chain
    assert left_nested(3) == "((J3 J2) J1)" and right_nested(3) == "(J3 (J2 J1))"
    chain = scalar_chain(4, n)  # 2n + 1 factors
    for text in (left_nested(len(chain)), right_nested(len(chain))):
        assert plan_of(chain, text).fma > 0


def test_cli_parses_bench_flags():
    args = cli.build_parser().parse_args(["bench", "--full", "--device", "cpu", "--only", "grad,planning",
                                          "--out", "somewhere"])
    assert (args.full, args.device, args.only, args.out) == (True, "cpu", "grad,planning", "somewhere")
    from jacket.cli.bench import selected
    assert selected("planning,grad") == ["grad", "planning"]
    assert selected("curvature") == ["curvature"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        selected("grad,nope")


@pytest.mark.slow  # run() already stores these relative errors; this asserts them
def test_curvature_candidates_agree():
    """The curvature benchmark's wiring on tiny sizes: jacket's products equal its JAX references."""
    from jacket import SoftmaxCrossEntropy
    from jacket_bench import curvature
    loss = SoftmaxCrossEntropy()
    chain = curvature._mlp((6, 5, 5, 3))
    args = curvature._batch(chain, 4)
    out = {k: jax.jit(f)(*args) for k, f in curvature.hvp_candidates(chain, loss).items()}
    assert curvature.rel_error(out["jacket.hvp"], out["jax hvp"]) < 1e-4
    assert curvature.rel_error(out["jacket.ggn_vp"], out["jax ggn"]) < 1e-4
    fns = curvature.per_example_candidates(chain, loss)
    assert curvature.rel_error(jax.jit(fns["jacket.per_example_grads"])(*args[:3]),
                               jax.jit(fns["jax vmap(grad)"])(*args[:3])) < 1e-4
    for shape in ({"widths": (4, 3, 5)}, {"widths": (3, 4, 1)}):
        chain = curvature.ntk_chain(shape)
        params = chain.init(jax.random.PRNGKey(0), jnp.float32)
        x1 = jax.random.normal(jax.random.PRNGKey(1), (2,) + tuple(chain.in_shape))
        x2 = jax.random.normal(jax.random.PRNGKey(2), (3,) + tuple(chain.in_shape))
        fns = curvature.ntk_candidates(chain)
        expected = jax.jit(fns["jax jacrev"])(params, x1, x2)
        assert expected.shape == (2, 3) + tuple(chain.out_shape) * 2
        for impl in ("auto", "jacobian", "ntvp"):
            assert curvature.rel_error(jax.jit(fns[f"jacket {impl}"])(params, x1, x2), expected) < 1e-4, impl
    chain = curvature.bottleneck_sequence(tokens=3, features=2, hidden=3, bottleneck=1, width=4)
    # the group measures what it says: the optimal parameter plan is mixed (several segments, one MUL
    # step joining each lower segment to the output), not one forward or reverse sweep
    plan = plan_of(chain, "optimal", argnums=0)
    assert len([step for step in plan.steps if step.op in ("ADJ", "TAN")]) > 1, plan.order
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (2,) + tuple(chain.in_shape))
    out = {k: jax.jit(f)(params, x) for k, f in curvature.params_jacobian_candidates(chain).items()}
    for name in ("jacket optimal", "jacket reverse"):
        assert curvature.rel_error(out[name], out["jax jacrev"]) < 1e-4, name
    chain = curvature._mlp((4, 3, 2))
    args = curvature._batch(chain, 5)[:3]
    out = {k: jax.jit(f)(*args) for k, f in curvature.hessian_candidates(chain, loss).items()}
    assert out["jax.hessian"].shape == (23, 23)
    assert curvature.rel_error(out["jacket.hessian"], out["jax.hessian"]) < 1e-4


def test_cli_rejects_unknown_benchmark(capsys):
    assert cli.main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_gpu_request_without_gpu_is_a_clear_error(capsys):
    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU"):
        select_device("gpu")
    assert cli.main(["bench", "--device", "gpu", "--only", "planning"]) == 2
    assert "--device gpu" in capsys.readouterr().err


def test_cli_runs_planning(tmp_path, capsys, monkeypatch):
    real = timing.roofline
    monkeypatch.setattr(timing, "roofline", lambda **kw: real(**TINY_ROOFLINE))
    assert cli.main(["bench", "--only", "planning", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "planning" in out and os.path.exists(os.path.join(str(tmp_path), "cpu", "planning.json"))
