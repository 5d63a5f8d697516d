"""Planning time: how long ``chain.plan("optimal")`` takes for long chains.

Chains are random mixes of Dense layers (widths drawn from 8–1024) and activations, 10 to 200
layers. Planning is static (no arrays, no JAX), so it is timed with a wall clock; every sample
plans a freshly drawn chain, so no cache can answer for it. Target: well under 1 s at 200 layers.
"""
from __future__ import annotations

import statistics
import time

from .timing import write_results

NAME = "planning"
TARGET_S = 1.0
ACTIVATIONS = ("Tanh", "Sigmoid", "ReLU", "GELU", "Softplus", "Softmax", "LayerNorm")


def config(full: bool = False) -> dict:
    return {"lengths": (10, 50, 100, 200), "repeats": 7 if full else 3, "min_width": 8, "max_width": 1024}


def n_steps(cfg: dict) -> int:
    return len(cfg["lengths"])


def random_chain(n_layers: int, seed: int, min_width: int = 8, max_width: int = 1024):
    """A chain of ``n_layers`` layers, about half Dense (random widths), the rest activations."""
    import numpy as np
    import jacket
    rng = np.random.default_rng(seed)
    width = int(rng.integers(min_width, max_width + 1))
    layers = [jacket.Dense(width, width := int(rng.integers(min_width, max_width + 1)))]
    while len(layers) < n_layers:
        if rng.random() < 0.5:
            layers.append(jacket.Dense(width, width := int(rng.integers(min_width, max_width + 1))))
        else:
            name = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
            layers.append(jacket.LayerNorm(width) if name == "LayerNorm" else getattr(jacket, name)())
    return jacket.Chain(layers)


def time_plan(chain) -> tuple[float, object]:
    start = time.perf_counter()
    plan = chain.plan("optimal")
    return time.perf_counter() - start, plan


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    time_plan(random_chain(5, seed=0))  # first call pays imports; keep it out of the numbers
    rows, results = [], []
    for n in cfg["lengths"]:
        if tick:
            tick(f"planning {n} layers")
        times, speedups = [], []
        for r in range(cfg["repeats"]):
            seconds, plan = time_plan(random_chain(n, seed=1000 * n + r, min_width=cfg["min_width"],
                                                   max_width=cfg["max_width"]))
            times.append(seconds)
            speedups.append(plan.speedup)
        results.append({"layers": n, "median_s": statistics.median(times), "max_s": max(times), "times_s": times,
                        "speedup_vs_best_mode": speedups})
        rows.append([n, statistics.median(times) * 1e3, max(times) * 1e3, statistics.median(speedups)])
    print(format_table(["layers", "median ms", "max ms", "model speedup vs best mode"], rows,
                       title=f'chain.plan("optimal") on random chains ({cfg["repeats"]} chains per length)'))
    longest = results[-1]
    met = longest["max_s"] < TARGET_S
    print(f"{longest['layers']} layers: {longest['max_s'] * 1e3:.1f} ms at most "
          f"({'met' if met else 'MISSED'}: target < {TARGET_S:g} s)")
    record = {"repeats": cfg["repeats"], "widths": [cfg["min_width"], cfg["max_width"]], "results": results,
              "target_s": TARGET_S, "targets": {f"plan of {longest['layers']} layers < {TARGET_S:g} s": met}}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = [r["layers"] for r in record["results"]]
    ax.loglog(lengths, [r["median_s"] for r in record["results"]], "o-", label="median")
    ax.loglog(lengths, [r["max_s"] for r in record["results"]], "v:", label="max")
    ax.axhline(record["target_s"], color="tab:red", ls="--", label=f"target {record['target_s']:g} s")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("layers in the chain")
    ax.set_ylabel('seconds for chain.plan("optimal")')
    ax.set_title("Planning time (random widths 8–1024)")
    ax.legend()
    return fig
