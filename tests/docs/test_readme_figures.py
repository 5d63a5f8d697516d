"""The benchmark figures quoted in the README are those in benchmarks/results/cpu/*.json.

Regenerating the results (``jacket bench --full``) without updating the README fails here.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "cpu"
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.skipif(not (RESULTS / "orders.json").exists(), reason="no committed CPU results")


def _load(name):
    return json.loads((RESULTS / f"{name}.json").read_text())


def _row(label):
    """The README benchmark-table row that starts with ``label``."""
    for line in README.splitlines():
        if line.startswith(f"| {label}"):
            return line
    raise AssertionError(f"README has no benchmark row starting with {label!r}")


def test_gradient_ratio():
    grad = _load("grad")
    assert f"| {grad['headline']['ratio']:.2f} (target" in _row("gradient, MLP 784-512-512-10")
    ratios = [case["ratio"] for case in grad["cases"]]
    assert f"{min(ratios):.2f}–{max(ratios):.2f}" in _row("gradient, MLP 784-512-512-10")


def test_associativity_ratios_and_slopes():
    assoc = _load("associativity")
    largest, slopes = assoc["points"][-1], assoc["slopes"]
    reverse, forward = _row("Jacobian of a scalar 4-block chain"), _row("same | forward")
    assert f"D = {largest['D']}" in reverse
    assert f"{largest['pair_ratio']['reverse']:.3f} in time" in reverse
    assert f"slope {slopes['reverse']:.2f} vs {slopes['jax.jacrev']:.2f}" in reverse
    assert f"{largest['pair_ratio']['forward']:.2f} in time" in forward
    assert f"slope {slopes['forward']:.2f} vs {slopes['jax.jacfwd']:.2f}" in forward


def test_orders_speedups():
    families = {f["family"]: f for f in _load("orders")["families"]}
    bottleneck = families["bottleneck"]
    row = _row("bottleneck chain")
    assert f"{1 / bottleneck['ratio']['optimal']:.1f}× / {1 / bottleneck['ratio']['fastest']:.1f}× faster" in row
    assert f"model predicts {1 / bottleneck['predicted_ratio']['optimal']:.0f}×" in row
    others = " / ".join(f"{1 / families[name]['ratio']['optimal']:.2f}×"
                        for name in ("uniform", "funnel", "expanding", "elementwise-heavy"))
    assert others in _row("uniform / funnel / expanding / elementwise-heavy")


def test_architecture_rows():
    grad = {(a["model"], a["batch"]): a["ratio"] for a in _load("grad")["architectures"]}
    cnn, transformer = _row("gradient, residual CNN"), _row("gradient, transformer block")
    assert " / ".join(f"{grad['cnn', b]:.2f}" for b in (32, 128, 512)) in cnn
    assert " / ".join(f"{grad['transformer', b]:.2f}" for b in (8, 32, 128)) in transformer
    families = {f["family"]: f for f in _load("orders")["families"]}
    row = _row("residual MLP / transformer block / residual CNN")
    names = ("residual-mlp", "transformer", "cnn")
    assert " / ".join(f"{families[n]['ratio']['optimal']:.2f}×" for n in names) + " the time" in row
    assert "model predicts " + " / ".join(f"{families[n]['predicted_ratio']['optimal']:.2f}×" for n in names) in row


def test_planning_time():
    results = {r["layers"]: r for r in _load("planning")["results"]}
    for layers, target in [(200, "50 ms"), (1000, "1 s")]:
        row = _row(f"planning a {layers}-layer chain")
        assert re.search(rf"\| {round(results[layers]['max_s'] * 1e3)} ms at most \(target < {target}\) \|", row)


def test_curvature_rows():
    curv = _load("curvature")
    hvp, pe, pj, hess = curv["hvp"]["ratio"], curv["per_example"], curv["params_jacobian"], curv["hessian"]
    assert f"| {hvp['jacket.hvp']:.2f} / {hvp['jacket.ggn_vp']:.2f} (target" in _row("Hessian-vector product")
    temp = pe["memory"]["jax vmap(grad)"]["temp_bytes"]
    assert pe["memory"]["jacket.per_example_grads"]["temp_bytes"] <= 1024  # "1 KiB"
    assert f"| {pe['ratio']['jacket.per_example_grads']:.2f} (target ≤ 1.0; temp memory 1 KiB against " \
           f"{round(temp / 1e6)} MB)" in _row("per-example gradients")
    ntk = " / ".join(f"{r['ratio']['jacket auto']:.2f}" for r in curv["ntk"])
    assert f"| {ntk} |" in _row("empirical NTK")
    model = pj["model_fma"]["optimal"] / pj["model_fma"]["reverse"]
    assert f"| {pj['ratio']['jacket optimal']:.2f} / {pj['ratio']['jacket reverse']:.2f} (target ≤ 1.0; model: " \
           f"mixed {model:.2f}× reverse's fma)" in _row("parameter Jacobian")
    mem = hess["memory"]
    assert f"| {hess['ratio']['jacket.hessian']:.2f} (temp memory {mem['jacket.hessian']['temp_bytes'] / 1e6:.1f} MB " \
           f"against {mem['jax.hessian']['temp_bytes'] / 1e6:.1f} MB)" in _row("dense Hessian")


def test_cost_model_and_autotune_rows():
    import math
    orders = _load("orders")
    p = orders["prediction"]
    row = _row("every order of the eight families")
    assert f"({p['calibrated']['points']} points)" in row
    assert (f"median ×{math.exp(p['calibrated']['median_abs_log']):.2f} / ×{math.exp(p['fma']['median_abs_log']):.2f} "
            f"off, rank correlation {p['calibrated']['spearman']:.2f} / {p['fma']['spearman']:.2f}") in row
    families, names = orders["families"], orders["orders"]
    slowest = min(families, key=lambda f: 1 / f["ratio"]["fastest"])
    worst = max(families, key=lambda f: f["median_s"]["fastest"] / min(f["median_s"][m] for m in names))
    gap = worst["median_s"]["fastest"] / min(worst["median_s"][m] for m in names)
    row = _row("the planner's choice")
    assert f"worst {1 / slowest['ratio']['fastest']:.2f}× the speed ({slowest['family']};" in row
    assert f"worst {gap:.2f}× the fastest order ({worst['family']};" in row


def test_memory_rows():
    mem = _load("memory")
    row = _row("bytes model, 8 families")
    assert f"temporaries median ×{mem['median_spread']:.2f}, worst ×{mem['max_spread']:.2f}" in row
    ck = mem["checkpoint"]
    temp, full = ck["temp_bytes"], ck["temp_bytes"]["full tape"]
    row = _row(f"gradient of {ck['layers']} layers")
    names = ("checkpoint sqrt", "checkpoint two-level", "checkpoint binomial 6")
    assert (" / ".join(f"{temp[k] / full:.2f}×" for k in names) + " the temporaries (target 0.25×) at "
            + " / ".join(f"{ck['ratio'][k]:.2f}×" for k in names) + " the time") in row
    assert f"batch {ck['batch']}" in row and f"Dense({ck['width']}, {ck['width']})" in row
    wide, deep = mem["limits"]
    row = _row("the wide chain above and per-example Jacobians")
    assert (f"at most {wide['worst_xla_vs_limit']:.2f}× / {deep['worst_xla_vs_limit']:.2f}× the limit; the "
            f"smallest limit is {wide['floor'] / wide['top']:.2f}× / {deep['floor'] / deep['top']:.2f}× the unlimited "
            f"plan's bytes, at {wide['cases'][-1]['time_vs_unlimited']:.1f}× / "
            f"{deep['cases'][-1]['time_vs_unlimited']:.2f}× its time") in row
    assert len(wide["cases"]) == len(deep["cases"]) == 6

    c1, c2 = mem["chunked"]
    k, k2 = c1["cases"]["optimal, chunk 128"], c1["cases"]["optimal, chunk 256"]
    row = _row("Jacobian of 1024 → 8192 → 8192 → 1024")
    assert (f"{k['temp_vs_jacrev']:.2f}× / {k2['temp_vs_jacrev']:.2f}× the temporaries at "
            f"{k['time_vs_best_jax']:.2f}× / {k2['time_vs_best_jax']:.2f}× the time") in row
    b = c2["cases"]["optimal"]
    assert f"{b['temp_vs_jacrev']:.3f}× the temporaries at {b['time_vs_best_jax']:.2f}× the time" in \
        _row("Jacobian of the bottleneck 4096")
