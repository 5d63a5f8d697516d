"""Backpropagation: ``jacket.value_and_grad`` against ``jax.value_and_grad`` of the same loss.

Both sides compute ``(loss, params_grad)`` of ``SoftmaxCrossEntropy()(chain.apply(params, x), labels)``
for an MLP ``n_in - width - width - 10`` with tanh, float32, jitted, timed interleaved; the
ratio is jacket / JAX (target: at most 1.05 on the headline case 784-512-512-10, batch 128).
For the headline case the compiled HLO of both is compared (op counts), so a gap can be traced
to the instructions that differ.
"""
from __future__ import annotations

import collections
import re

from .timing import alternate, gflops, roofline, write_results

NAME = "grad"
TARGET = 1.05
HEADLINE = {"n_in": 784, "width": 512, "classes": 10, "batch": 128}


def config(full: bool = False) -> dict:
    """Quick: width 512 at batches 32, 128 (the headline), 512; full: widths 256, 512, 1024 × those."""
    widths = (256, 512, 1024) if full else (512,)
    cases = [dict(HEADLINE)]
    for w in widths:
        for b in (32, 128, 512):
            case = {"n_in": 784, "width": w, "classes": 10, "batch": b}
            if case not in cases:
                cases.append(case)
    return {"cases": cases, "repeats": 15 if full else 7, "min_sample_s": 0.05 if full else 0.02, "roofline": {}}


def n_steps(cfg: dict) -> int:
    return len(cfg["cases"])


def case_name(case: dict) -> str:
    return f"{case['n_in']}-{case['width']}-{case['width']}-{case['classes']} b{case['batch']}"


def mlp(case: dict):
    """The case's chain: ``Dense, Tanh, Dense, Tanh, Dense``."""
    import jacket
    return jacket.mlp([case["n_in"], case["width"], case["width"], case["classes"]], activation="tanh")


def grad_fma(chain, batch: int) -> int:
    """Matrix-product fma of one value_and_grad: forward ``x W`` per Dense, backward ``xᵀ ȳ``
    per Dense and ``ȳ Wᵀ`` per Dense except the first (its input needs no cotangent)."""
    from jacket import Dense
    sizes = [layer.in_features * layer.out_features for layer in chain if isinstance(layer, Dense)]
    return batch * (3 * sum(sizes) - sizes[0])


def candidates(chain, loss):
    """``{"jacket": f, "jax": g}``, both ``(params, x, labels) -> (loss, params_grad)``."""
    import jax
    import jacket

    def reference_loss(params, x, labels):
        return loss.apply(chain.apply(params, x), labels)
    return {"jacket": jacket.value_and_grad(chain, loss), "jax": jax.value_and_grad(reference_loss)}


def inputs(chain, case: dict, seed: int = 0):
    import jax
    import jax.numpy as jnp
    k_params, k_x, k_y = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = chain.init(k_params, jnp.float32)
    x = jax.random.normal(k_x, (case["batch"], case["n_in"]), jnp.float32)
    labels = jax.random.randint(k_y, (case["batch"],), 0, case["classes"])
    return params, x, labels


def op_counts(hlo_text: str) -> dict:
    """Instructions per op code in the ENTRY computation of a compiled HLO module, fusions split by
    kind (``fusion:kLoop``, ``fusion:kCustom`` — on CPU the library-backed matmuls), plus
    ``dot (all)``: dots anywhere, fusion bodies included."""
    counts = collections.Counter()
    in_entry = False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
            continue
        if in_entry and line.startswith("}"):
            in_entry = False
        head, sep, rest = line.partition(" = ")
        if not sep or head.lstrip().startswith(("HloModule", "//")):
            continue
        match = re.search(r"(?:^|\s)([a-z][a-z0-9\-]*)\(", rest)
        if not match:
            continue
        op = match.group(1)
        if op == "dot":
            counts["dot (all)"] += 1
        if in_entry and op != "parameter":
            kind = re.search(r"kind=(k\w+)", rest) if op == "fusion" else None
            counts[f"fusion:{kind.group(1)}" if kind else op] += 1
    return dict(counts)


def compare_hlo(fns: dict, args) -> dict:
    """Op counts of each candidate's optimised HLO, and the op codes whose counts differ."""
    import jax
    counts = {name: op_counts(jax.jit(f).lower(*args).compile().as_text()) for name, f in fns.items()}
    names = list(counts)
    keys = sorted(set().union(*counts.values()))
    table = {k: {n: counts[n].get(k, 0) for n in names} for k in keys}
    return {"ops": table, "differs": {k: v for k, v in table.items() if len(set(v.values())) > 1}}


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket import SoftmaxCrossEntropy
    from jacket._table import format_table
    loss = SoftmaxCrossEntropy()
    peak = roofline(**cfg.get("roofline", {}))
    rows, results = [], []
    hlo = None
    for case in cfg["cases"]:
        name = case_name(case)
        if tick:
            tick(f"grad {name}")
        chain = mlp(case)
        fns, args = candidates(chain, loss), inputs(chain, case)
        timed = dict(fns)
        if case == HEADLINE:
            # Control: JAX against a second compilation of itself; its ratio is the noise floor.
            timed["jax (control)"] = lambda *a, f=fns["jax"]: f(*a)
        timing = alternate(timed, args, repeats=cfg["repeats"], baseline="jax", min_sample_s=cfg["min_sample_s"])
        fma = grad_fma(chain, case["batch"])
        rate = gflops(fma, timing["median_s"]["jacket"])
        ratio = timing["ratio"]["jacket"]
        results.append({"case": name, **case, "fma": fma, "median_s": timing["median_s"],
                        "compile_s": timing["compile_s"], "ratio": ratio, "rounds": timing["rounds"],
                        "control_ratio": timing["ratio"].get("jax (control)"),
                        "gflops": {k: gflops(fma, t) for k, t in timing["median_s"].items()}})
        rows.append([name, timing["median_s"]["jacket"] * 1e3, timing["median_s"]["jax"] * 1e3, ratio,
                     rate, 100 * rate / peak["matmul_gflops"]])
        if case == HEADLINE:
            hlo = compare_hlo(fns, args)
    print(format_table(["case", "jacket ms", "jax ms", "ratio", "GFLOP/s", "% matmul peak"], rows,
                       title=f"value_and_grad, jacket vs jax (float32, target ratio <= {TARGET}); "
                             f"matmul peak {peak['matmul_gflops']:.1f} GFLOP/s"))
    headline = next((r for r in results if r["case"] == case_name(HEADLINE)), None)
    if headline is not None:
        print(f"headline {headline['case']}: jacket / jax = {headline['ratio']:.3f} "
              f"({'met' if headline['ratio'] <= TARGET else 'MISSED'}); noise floor, jax / a second "
              f"compilation of jax = {headline['control_ratio']:.3f}")
    if hlo is not None:
        print("compiled HLO, ENTRY ops (jacket/jax) for the headline:",
              ", ".join(f"{k} {v['jacket']}/{v['jax']}" for k, v in hlo["ops"].items()))
    record = {"target_ratio": TARGET, "roofline": peak, "repeats": cfg["repeats"], "cases": results,
              "headline": None if headline is None else {
                  "case": headline["case"], "ratio": headline["ratio"], "met": headline["ratio"] <= TARGET,
                  "control_ratio": headline["control_ratio"]},
              "targets": {} if headline is None else
              {f"{headline['case']}: jacket / jax <= {TARGET}": headline["ratio"] <= TARGET},
              "hlo_headline": hlo}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Bar per case: jacket / jax time ratio, with the target line."""
    import matplotlib.pyplot as plt
    cases = record["cases"]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(cases) + 2), 3.5))
    ratios = [c["ratio"] for c in cases]
    ax.bar(range(len(cases)), ratios, color=["tab:green" if r <= record["target_ratio"] else "tab:red" for r in ratios])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(record["target_ratio"], color="tab:red", ls="--", lw=1, label=f"target {record['target_ratio']}")
    ax.set_xticks(range(len(cases)), [c["case"] for c in cases], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(min(0.8, min(ratios) - 0.05), max(1.2, max(ratios) + 0.05))
    ax.set_ylabel("time jacket / time jax")
    ax.set_title(f"value_and_grad vs jax.value_and_grad ({record['device']['device_kind']})")
    ax.legend()
    return fig
