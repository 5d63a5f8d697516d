"""Backpropagation: ``jacket.value_and_grad`` against ``jax.value_and_grad`` of the same loss.

Both sides compute ``(loss, params_grad)`` of ``SoftmaxCrossEntropy()(chain.apply(params, x), labels)``
for an MLP ``n_in - width - width - 10`` with tanh, float32, jitted, timed interleaved; the
ratio is jacket / JAX (target: at most 1.05 on the headline case 784-512-512-10, batch 128).

Two architectures are timed the same way, each with the target 1.05 on every batch: the
residual CNN of ``orders.small_cnn`` on a batch of ``(1, 8, 8)`` images (logits ``(B, 10)``,
labels ``(B,)``), and ``orders.transformer_block`` with a head ``LayerNorm, Dense(64, 10)`` on a
batch of ``(16, 64)`` sequences (logits ``(B, 16, 10)``, labels ``(B, 16)``: the loss is the mean
over every position). For the headline case and the first batch of each architecture the
compiled HLO of both is compared (op counts), so a gap can be traced to the instructions that
differ.
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
    architectures = [{"model": "cnn", "batch": b} for b in ((128, 32, 512) if full else (128,))]
    architectures += [{"model": "transformer", "batch": b} for b in ((32, 8, 128) if full else (32,))]
    return {"cases": cases, "architectures": architectures, "repeats": 15 if full else 7,
            "min_sample_s": 0.05 if full else 0.02, "roofline": {}}


def n_steps(cfg: dict) -> int:
    return len(cfg["cases"]) + len(cfg.get("architectures", ()))


ARCHITECTURES = {"cnn": "CNN 1x8x8", "transformer": "transformer T16 d64 h4"}


def case_name(case: dict) -> str:
    if "model" in case:
        return f"{ARCHITECTURES[case['model']]} b{case['batch']}"
    return f"{case['n_in']}-{case['width']}-{case['width']}-{case['classes']} b{case['batch']}"


def architecture(case: dict, scale: int = 1):
    """The chain of an architecture case: ``orders.small_cnn`` (``(1, 8, 8)`` -> 10 logits) or
    ``orders.transformer_block`` with a 10-class head (``(16, 64)`` -> ``(16, 10)``)."""
    from .orders import small_cnn, transformer_block
    if case["model"] == "cnn":
        return small_cnn(scale)
    if case["model"] == "transformer":
        return transformer_block(scale, head=10)
    raise ValueError(f"unknown architecture {case['model']!r}; choose from {', '.join(ARCHITECTURES)}")


def chain_fma(chain, batch: int) -> int:
    """Approximate fma of one value_and_grad of an architecture: three times the forward pass as
    the cost model counts it (``chain.jvp_cost``: the forward, the input cotangents and the
    parameter gradients each cost about one forward pass), per example, times the batch."""
    return 3 * batch * chain.jvp_cost(chain.in_shape)


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
    """``(params, x, labels)``: a batch ``(B,) + chain.in_shape`` and integer labels for every
    position of the logits ``(B,) + chain.out_shape`` (the last axis is the classes)."""
    import jax
    import jax.numpy as jnp
    k_params, k_x, k_y = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = chain.init(k_params, jnp.float32)
    x = jax.random.normal(k_x, (case["batch"],) + tuple(chain.in_shape), jnp.float32)
    *positions, classes = chain.out_shape
    labels = jax.random.randint(k_y, (case["batch"], *positions), 0, classes)
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
    rows, results, arch_results = [], [], []
    hlo, arch_hlo = None, {}
    for case in list(cfg["cases"]) + list(cfg.get("architectures", ())):
        name = case_name(case)
        if tick:
            tick(f"grad {name}")
        is_arch = "model" in case
        chain = architecture(case, cfg.get("scale", 1)) if is_arch else mlp(case)
        fns, args = candidates(chain, loss), inputs(chain, case)
        timed = dict(fns)
        if case == HEADLINE:
            # Control: JAX against a second compilation of itself; its ratio is the noise floor.
            timed["jax (control)"] = lambda *a, f=fns["jax"]: f(*a)
        timing = alternate(timed, args, repeats=cfg["repeats"], baseline="jax", min_sample_s=cfg["min_sample_s"])
        fma = chain_fma(chain, case["batch"]) if is_arch else grad_fma(chain, case["batch"])
        rate = gflops(fma, timing["median_s"]["jacket"])
        ratio = timing["ratio"]["jacket"]
        result = {"case": name, **case, "fma": fma, "median_s": timing["median_s"],
                  "compile_s": timing["compile_s"], "ratio": ratio, "rounds": timing["rounds"],
                  "control_ratio": timing["ratio"].get("jax (control)"),
                  "gflops": {k: gflops(fma, t) for k, t in timing["median_s"].items()}}
        if is_arch:
            result.update(shapes=[list(s) for s in chain.shapes], layers=[repr(layer) for layer in chain])
            arch_results.append(result)
        else:
            results.append(result)
        rows.append([name, timing["median_s"]["jacket"] * 1e3, timing["median_s"]["jax"] * 1e3, ratio,
                     rate, 100 * rate / peak["matmul_gflops"]])
        if case == HEADLINE:
            hlo = compare_hlo(fns, args)
        elif is_arch and case["model"] not in arch_hlo:
            arch_hlo[case["model"]] = {"case": name, **compare_hlo(fns, args)}
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
    for model, compared in arch_hlo.items():
        print(f"compiled HLO, ENTRY ops (jacket/jax) for {compared['case']}:",
              ", ".join(f"{k} {v['jacket']}/{v['jax']}" for k, v in compared["ops"].items()))
    targets = {} if headline is None else {f"{headline['case']}: jacket / jax <= {TARGET}": headline["ratio"] <= TARGET}
    targets.update({f"{r['case']}: jacket / jax <= {TARGET}": r["ratio"] <= TARGET for r in arch_results})
    record = {"target_ratio": TARGET, "roofline": peak, "repeats": cfg["repeats"], "cases": results,
              "architectures": arch_results,
              "headline": None if headline is None else {
                  "case": headline["case"], "ratio": headline["ratio"], "met": headline["ratio"] <= TARGET,
                  "control_ratio": headline["control_ratio"]},
              "targets": targets, "hlo_headline": hlo, "hlo_architectures": arch_hlo}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Bar per case (MLP cases, then the architectures): jacket / jax time ratio, with the target line."""
    import matplotlib.pyplot as plt
    cases = record["cases"] + record.get("architectures", [])
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
