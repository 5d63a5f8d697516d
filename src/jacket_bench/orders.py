"""Orders: every accumulation order on chain families whose shape favours different orders.

For each family the full Jacobian at one input is computed with jacket's ``forward``,
``reverse``, the two dense bracketings, ``optimal``, and with ``jax.jacfwd`` / ``jax.jacrev`` of
the same ``chain.apply``, all jitted and timed interleaved. Each time is divided by the time of
the better of JAX's two (in the same round), and set beside the ratio the cost model predicts,
``plan(order).fma / min(plan("forward").fma, plan("reverse").fma)``. Targets: ``optimal`` at
least 10× faster than the better of JAX's two on the bottleneck, and never more than 5% slower
on any family.
"""
from __future__ import annotations

from .associativity import candidates, jacobian_inputs, model_fma, order_strings
from .timing import alternate, gflops, paired_ratio, roofline, write_results

NAME = "orders"
ORDERS = ("forward", "reverse", "left-nested", "right-nested", "optimal")
JAX = ("jax.jacfwd", "jax.jacrev")
BOTTLENECK_SPEEDUP = 10.0
SLOWER_AT_MOST = 1.05


def _mlp(widths):
    import jacket
    return jacket.mlp(widths, activation="tanh")


def _elementwise_heavy(width):
    from jacket import GELU, Chain, Dense, LayerNorm, Sigmoid, Softmax, Softplus, Tanh
    return Chain([Dense(width, width), Tanh(), LayerNorm(width), GELU(), Sigmoid(), Softplus(),
                  LayerNorm(width), Tanh(), Softmax(), Sigmoid(), LayerNorm(width), Tanh()])


# Widths are divided by ``scale`` (tests use tiny chains); scale 1 is the benchmark.
FAMILIES = {
    "uniform": lambda s: _mlp((_w(256, s),) * 7),
    "funnel": lambda s: _mlp(tuple(_w(w, s) for w in (1024, 512, 256, 64, 8))),
    "expanding": lambda s: _mlp(tuple(_w(w, s) for w in (8, 64, 256, 1024))),
    "bottleneck": lambda s: _mlp(tuple(_w(w, s) for w in (1024, 1024, 16, 1024, 1024))),
    "elementwise-heavy": lambda s: _elementwise_heavy(_w(256, s)),
}


def _w(width: int, scale: int) -> int:
    return max(2, width // scale)


def config(full: bool = False) -> dict:
    return {"families": tuple(FAMILIES), "scale": 1, "repeats": 21 if full else 5,
            "min_sample_s": 0.05 if full else 0.01, "roofline": {}}


def n_steps(cfg: dict) -> int:
    return len(cfg["families"])


def measure(name: str, chain, repeats: int, min_sample_s: float) -> dict:
    """Time one family; ratios are against the better (by median) of jax.jacfwd / jax.jacrev."""
    timing = alternate(candidates(chain, optimal=True), jacobian_inputs(chain, seed=len(name)), repeats=repeats,
                       baseline="jax.jacrev", min_sample_s=min_sample_s)
    best_jax = min(JAX, key=lambda m: timing["median_s"][m])
    fma = model_fma(chain, optimal=True)
    best_mode_fma = min(fma["forward"], fma["reverse"])
    names = ORDERS + JAX
    return {"family": name, "dims": list(chain.dims), "layers": [repr(layer) for layer in chain],
            "order_strings": order_strings(chain, optimal=True), "optimal_order": chain.plan("optimal").order,
            "fma": fma, "median_s": timing["median_s"], "compile_s": timing["compile_s"],
            "rounds": timing["rounds"], "best_jax": best_jax,
            "ratio": {m: paired_ratio(timing["rounds"], m, best_jax) for m in names},
            "predicted_ratio": {m: fma[m] / best_mode_fma for m in names},
            "gflops": {m: gflops(fma[m], timing["median_s"][m]) for m in names}}


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    peak = roofline(**cfg.get("roofline", {}))
    families = []
    for name in cfg["families"]:
        if tick:
            tick(f"orders {name}")
        families.append(measure(name, FAMILIES[name](cfg["scale"]), cfg["repeats"], cfg["min_sample_s"]))
    rows = []
    for fam in families:
        for m in ORDERS + JAX:
            rows.append([fam["family"], m, fam["median_s"][m] * 1e3, fam["ratio"][m], fam["predicted_ratio"][m],
                         fam["gflops"][m]])
    print(format_table(["family", "order", "ms", "time / best JAX", "model fma / best mode", "GFLOP/s"], rows,
                       title=f"Full Jacobian per order (time ratio < 1: faster than the better of jacfwd/jacrev); "
                             f"GFLOP/s from the model's fma, matmul peak {peak['matmul_gflops']:.1f}"))
    targets = {}
    by_name = {f["family"]: f for f in families}
    if "bottleneck" in by_name:
        speedup = 1 / by_name["bottleneck"]["ratio"]["optimal"]
        targets[f"optimal >= {BOTTLENECK_SPEEDUP:g}x faster on bottleneck"] = speedup >= BOTTLENECK_SPEEDUP
    worst = max(families, key=lambda f: f["ratio"]["optimal"])
    targets[f"optimal never > {SLOWER_AT_MOST}x the better JAX (worst: {worst['family']})"] = \
        worst["ratio"]["optimal"] <= SLOWER_AT_MOST
    print("optimal: " + ", ".join(f"{f['family']} {1 / f['ratio']['optimal']:.2f}x" for f in families)
          + " faster than the better JAX; " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {"orders": list(ORDERS), "jax": list(JAX), "repeats": cfg["repeats"], "families": families,
              "targets": targets, "roofline": peak}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Grouped bars: time / better JAX per family and order (log scale); model ratio as ticks."""
    import matplotlib.pyplot as plt
    import numpy as np
    families = record["families"]
    names = record["orders"] + record["jax"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(families) + 2), 4.5))
    colors = plt.get_cmap("tab10")
    for j, m in enumerate(names):
        xs = np.arange(len(families)) + (j - (len(names) - 1) / 2) * width
        ax.bar(xs, [f["ratio"][m] for f in families], width, color=colors(j), label=m)
        ax.scatter(xs, [f["predicted_ratio"][m] for f in families], marker="_", color="black", s=60, zorder=3)
    ax.scatter([], [], marker="_", color="black", label="cost model")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(families)), [f["family"] for f in families])
    ax.set_ylabel("time / better of jax.jacfwd, jax.jacrev")
    ax.set_title(f"Jacobian accumulation orders ({record['device']['device_kind']})")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    return fig
