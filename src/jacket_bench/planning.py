"""Planning time: how long ``jacket.plan(chain, 1)`` takes for long chains.

Chains are random mixes of Dense layers (widths drawn from 8–1024) and activations, 10 to 1000
layers. Planning is static (no arrays, no JAX), so it is timed with a wall clock; every sample
plans a freshly drawn chain, so no cache can answer for it. Targets, on the slowest sample:
under 50 ms at 200 layers and under 1 s at 1000. Chains of 500 layers and more are sampled
fewer times (``long_repeats``), to keep the quick run quick.
"""
from __future__ import annotations

import statistics
import time

from .timing import input_plan, write_results

NAME = "planning"
TARGETS_S = {200: 0.05, 1000: 1.0}  # layers: the most seconds a plan may take
LONG = 500  # from this many layers on, ``long_repeats`` samples
ACTIVATIONS = ("Tanh", "Sigmoid", "ReLU", "GELU", "Softplus", "Softmax", "LayerNorm")


def config(full: bool = False) -> dict:
    return {"lengths": (10, 50, 100, 200, 500, 1000), "repeats": 7 if full else 3,
            "long_repeats": 3 if full else 1, "min_width": 8, "max_width": 1024}


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
    plan = input_plan(chain, "optimal")
    return time.perf_counter() - start, plan


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    time_plan(random_chain(5, seed=0))  # first call pays imports; keep it out of the numbers
    rows, results = [], []
    for n in cfg["lengths"]:
        if tick:
            tick(f"planning {n} layers")
        repeats = cfg["repeats"] if n < LONG else cfg.get("long_repeats", cfg["repeats"])
        times, speedups = [], []
        for r in range(repeats):
            seconds, plan = time_plan(random_chain(n, seed=1000 * n + r, min_width=cfg["min_width"],
                                                   max_width=cfg["max_width"]))
            times.append(seconds)
            speedups.append(plan.speedup)
        results.append({"layers": n, "repeats": repeats, "median_s": statistics.median(times), "max_s": max(times),
                        "times_s": times, "speedup_vs_best_mode": speedups})
        rows.append([n, repeats, statistics.median(times) * 1e3, max(times) * 1e3, statistics.median(speedups)])
    print(format_table(["layers", "chains", "median ms", "max ms", "model speedup vs best mode"], rows,
                       title='jacket.plan(chain, 1) on random chains'))
    targets, targets_s = {}, {}
    for result in results:
        limit = TARGETS_S.get(result["layers"])
        if limit is not None:
            met = result["max_s"] < limit
            print(f"{result['layers']} layers: {result['max_s'] * 1e3:.1f} ms at most "
                  f"({'met' if met else 'MISSED'}: target < {limit * 1e3:g} ms)")
            targets[f"plan of {result['layers']} layers < {limit:g} s"] = met
            targets_s[str(result["layers"])] = limit
    record = {"repeats": cfg["repeats"], "long_repeats": cfg.get("long_repeats", cfg["repeats"]),
              "widths": [cfg["min_width"], cfg["max_width"]], "results": results, "targets_s": targets_s,
              "targets": targets}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = [r["layers"] for r in record["results"]]
    ax.loglog(lengths, [r["median_s"] for r in record["results"]], "o-", label="median")
    ax.loglog(lengths, [r["max_s"] for r in record["results"]], "v:", label="max")
    targets = record["targets_s"]
    if targets:
        ax.plot([int(n) for n in targets], list(targets.values()), "r_", ms=24, mew=2, ls="none",
                label="targets (max)")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("layers in the chain")
    ax.set_ylabel('seconds for jacket.plan(chain, 1)')
    ax.set_title("Planning time (random widths 8–1024)")
    ax.legend()
    return fig
