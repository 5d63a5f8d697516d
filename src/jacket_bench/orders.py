"""Orders: every accumulation order on chain families whose shape favours different orders.

Five MLP families (vector in, vector out) and three architectures with blocks and shaped
examples: a residual MLP (``Residual`` blocks as single factors of the outer plan), a pre-norm
transformer block on one sequence ``(T, d) = (16, 64)`` with 4 heads, and a small residual CNN
on one ``(1, 8, 8)`` image. For each family the full Jacobian at one input (shape
``s_N + s_0``, as ``jax.jacfwd``) is computed with jacket's ``forward``, ``reverse``, the two
dense bracketings of the top-level factors (blocks count as one factor; with two factors the
two bracketings are the same product), ``optimal``, and with ``jax.jacfwd`` / ``jax.jacrev`` of
the same ``chain.apply``, all jitted and timed interleaved. Each time is divided by the time of
the better of JAX's two (in the same round), and set beside the ratio the cost model predicts,
``plan(order).fma / min(plan("forward").fma, plan("reverse").fma)``.

The calibrated cost model is measured at the start of the run (``jacket calibrate``'s programs,
not the cache), and two more candidates use it: ``calibrated`` (the optimal plan under it) and
``fastest`` (autotuned: its best few candidates timed, :mod:`jacket.tuning`). Every jacket order
of every family is a point (measured seconds, fma, calibrated prediction); the fma model's
seconds are its fma times one fitted rate (:mod:`.prediction`). Targets: ``optimal`` at least
10× faster than the better of JAX's two on the bottleneck, and never more than 5% slower on any
family; the calibrated model's median ``|log(predicted / measured)|`` ≤ log 1.3 and its rank
correlation with the times ≥ 0.9; the planner's choice (``fastest``) never below 0.97× the speed
of the better JAX and within 5% of the fastest order measured on every family; the bottleneck
≥ 20× over JAX with it.
"""
from __future__ import annotations

import math

from .associativity import candidates, model_fma, order_strings
from .timing import alternate, gflops, input_plan, paired_ratio, roofline, write_results

NAME = "orders"
ORDERS = ("forward", "reverse", "left-nested", "right-nested", "optimal", "calibrated", "fastest")
JAX = ("jax.jacfwd", "jax.jacrev")
BOTTLENECK_SPEEDUP = 10.0
SLOWER_AT_MOST = 1.05
PREDICTION_WITHIN = 1.3  # median |log(predicted / measured)| <= log 1.3
RANK_CORRELATION = 0.9
CHOICE_SPEED = 0.97  # the planner's choice: at least this speed of the better JAX
CHOICE_VS_BEST = 1.05  # and within 5% of the fastest order measured
CHOICE_BOTTLENECK = 20.0


def _mlp(widths):
    import jacket
    return jacket.mlp(widths, activation="tanh")


def _elementwise_heavy(width):
    from jacket import GELU, Chain, Dense, LayerNorm, Sigmoid, Softmax, Softplus, Tanh
    return Chain([Dense(width, width), Tanh(), LayerNorm(width), GELU(), Sigmoid(), Softplus(),
                  LayerNorm(width), Tanh(), Softmax(), Sigmoid(), LayerNorm(width), Tanh()])


def residual_mlp(scale: int = 1):
    """``Dense(256, 256)``, 3 × ``Residual([Dense(256, 256), Tanh, Dense(256, 256)])``,
    ``Dense(256, 256)``: a square 256 × 256 Jacobian, forward and reverse equal in the model, so the
    optimal plan mixes sweeps with materialised block Jacobians."""
    from jacket import Chain, Dense, Residual, Tanh
    w = _w(256, scale)
    blocks = [Residual(Chain([Dense(w, w), Tanh(), Dense(w, w)])) for _ in range(3)]
    return Chain([Dense(w, w)] + blocks + [Dense(w, w)])


def transformer_block(scale: int = 1, heads: int = 4, head: int | None = None):
    """``jacket.examples.architectures.transformer_block`` on one sequence ``(T, d) = (16, 64)``
    (divided by ``scale``), 4 heads: pre-norm attention and GELU MLP, each inside a ``Residual``;
    ``head`` classes add ``LayerNorm(d), Dense(d, head)`` (per-position logits, the grad
    benchmark's model)."""
    from jacket import Chain, Dense, LayerNorm
    from jacket.examples.architectures import transformer_block as block
    t, d = max(2, 16 // scale), max(heads, 64 // scale // heads * heads)
    chain = block(t, d, heads)
    return chain if not head else Chain(list(chain.layers) + [LayerNorm(d), Dense(d, head)], in_shape=(t, d))


def small_cnn(scale: int = 1):
    """The residual CNN of ``jacket train cnn`` (``jacket.examples.architectures.cnn``) on one
    ``(1, 8, 8)`` image, with 16 channels divided by ``scale``: ``Conv2D(1, c, 3)``, ReLU,
    ``Residual([Conv2D(c, c, 3), ReLU, Conv2D(c, c, 3)])``, ReLU, ``MaxPool2D(2)``, Flatten,
    ``Dense(c·4·4, 10)``."""
    from jacket.examples.architectures import cnn
    return cnn(_w(16, scale))


# Widths are divided by ``scale`` (tests use tiny chains); scale 1 is the benchmark.
FAMILIES = {
    "uniform": lambda s: _mlp((_w(256, s),) * 7),
    "funnel": lambda s: _mlp(tuple(_w(w, s) for w in (1024, 512, 256, 64, 8))),
    "expanding": lambda s: _mlp(tuple(_w(w, s) for w in (8, 64, 256, 1024))),
    "bottleneck": lambda s: _mlp(tuple(_w(w, s) for w in (1024, 1024, 16, 1024, 1024))),
    "elementwise-heavy": lambda s: _elementwise_heavy(_w(256, s)),
    "residual-mlp": residual_mlp,
    "transformer": transformer_block,
    "cnn": small_cnn,
}
MLP_FAMILIES = ("uniform", "funnel", "expanding", "bottleneck", "elementwise-heavy")


def _w(width: int, scale: int) -> int:
    return max(2, width // scale)


def config(full: bool = False) -> dict:
    """``calibrate``: measure the calibrated model's rates at the start (False, for the tests'
    tiny runs only: fixed placeholder rates, recorded as such); ``autotune_rounds``: timing
    rounds of ``order="fastest"``."""
    return {"families": tuple(FAMILIES), "scale": 1, "repeats": 21 if full else 5,
            "min_sample_s": 0.05 if full else 0.01, "roofline": {}, "calibrate": True, "autotune_rounds": 9}


# What a run with calibrate=False prices plans with (the tests' tiny runs): not a measurement.
PLACEHOLDER_RATES = dict(device="placeholder", sweep_fma=2e-11, sweep_io=2e-10, mm_fma=1e-11, skinny_fma=3e-11,
                         mm_io=2e-10, struct_fma=4e-10, step=2e-6, sweep_fma_few=5e-11, call=5e-6)


def n_steps(cfg: dict) -> int:
    return len(cfg["families"])


def example_inputs(chain, seed: int):
    """``(params, x)`` for one Jacobian: float32 params and one random example of ``chain.in_shape``
    (a vector ``(n_0,)``, a sequence ``(T, d)`` or an image ``(C, H, W)``)."""
    import jax
    import jax.numpy as jnp
    k_params, k_x = jax.random.split(jax.random.PRNGKey(seed))
    return chain.init(k_params, jnp.float32), jax.random.normal(k_x, chain.in_shape, jnp.float32)


def measure(name: str, chain, repeats: int, min_sample_s: float, cost, autotune_rounds: int = 9) -> dict:
    """Time one family; ratios are against the better (by median) of jax.jacfwd / jax.jacrev.
    ``cost``: the calibrated cost model of this run (plans "calibrated" and "fastest")."""
    import jacket
    from jacket.tuning import fastest_plan
    plans = {m: input_plan(chain, o, cost=cost) for m, o in order_strings(chain, optimal=True).items()}
    plans["calibrated"] = input_plan(chain, "optimal", cost=cost)
    plans["fastest"] = fastest_plan(chain, cost=cost, cache=False, repeats=autotune_rounds)
    fns = candidates(chain, optimal=True)
    for m in ("calibrated", "fastest"):
        fns[m] = jacket.jacobian(chain, 1, order=plans[m])
    timing = alternate(fns, example_inputs(chain, seed=len(name)), repeats=repeats,
                       baseline="jax.jacrev", min_sample_s=min_sample_s)
    best_jax = min(JAX, key=lambda m: timing["median_s"][m])
    fma = dict(model_fma(chain, optimal=True), calibrated=plans["calibrated"].fma, fastest=plans["fastest"].fma)
    best_mode_fma = min(fma["forward"], fma["reverse"])
    names = ORDERS + JAX
    return {"family": name, "dims": list(chain.dims), "shapes": [list(s) for s in chain.shapes],
            "layers": [repr(layer) for layer in chain],
            "order_strings": dict(order_strings(chain, optimal=True), calibrated=plans["calibrated"].order,
                                  fastest=plans["fastest"].order),
            "optimal_order": input_plan(chain, "optimal").order,
            "fma": fma, "median_s": timing["median_s"], "compile_s": timing["compile_s"],
            "rounds": timing["rounds"], "best_jax": best_jax,
            "ratio": {m: paired_ratio(timing["rounds"], m, best_jax) for m in names},
            "predicted_ratio": {m: fma[m] / best_mode_fma for m in names},
            "predicted_s": {m: plans[m].predicted_s for m in ORDERS},
            "gflops": {m: gflops(fma[m], timing["median_s"][m]) for m in names}}


def prediction_points(families) -> list:
    """One point per (family, jacket order): measured seconds, fma, the calibrated prediction,
    and the fma model's seconds at one fitted rate."""
    from .prediction import fma_seconds
    points = [{"family": f["family"], "order": m, "measured_s": f["median_s"][m], "fma": f["fma"][m],
               "calibrated_s": f["predicted_s"][m]} for f in families for m in ORDERS]
    rate = fma_seconds(points)
    for p in points:
        p["fma_s"] = p["fma"] * rate
    return points


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    from jacket.planning._costs import CalibratedCost, Rates
    from jacket.tuning import calibrate
    from .prediction import accuracy
    peak = roofline(**cfg.get("roofline", {}))
    rates = calibrate(progress=False, save=False) if cfg.get("calibrate", True) else Rates(**PLACEHOLDER_RATES)
    cost = CalibratedCost(rates)
    families = []
    for name in cfg["families"]:
        if tick:
            tick(f"orders {name}")
        families.append(measure(name, FAMILIES[name](cfg["scale"]), cfg["repeats"], cfg["min_sample_s"], cost,
                                cfg.get("autotune_rounds", 9)))
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
    # One target per group, naming its worst family, so a miss on an architecture is not hidden
    # behind the MLP families' (and the reverse).
    groups = {"MLP families": [f for f in families if f["family"] in MLP_FAMILIES],
              "architectures": [f for f in families if f["family"] not in MLP_FAMILIES]}
    for group, members in groups.items():
        if not members:
            continue
        worst = max(members, key=lambda f: f["ratio"]["optimal"])
        targets[f"optimal never > {SLOWER_AT_MOST}x the better JAX on the {group} "
                f"(worst: {worst['family']} {worst['ratio']['optimal']:.3f}x)"] = \
            worst["ratio"]["optimal"] <= SLOWER_AT_MOST
    points = prediction_points(families)
    models = {m: accuracy([p[f"{m}_s"] for p in points], [p["measured_s"] for p in points])
              for m in ("fma", "calibrated")}
    cal = models["calibrated"]
    targets[f"calibrated model: median |log(predicted/measured)| <= log {PREDICTION_WITHIN} "
            f"(x{math.exp(cal['median_abs_log']):.2f})"] = cal["median_abs_log"] <= math.log(PREDICTION_WITHIN)
    targets[f"calibrated model: rank correlation >= {RANK_CORRELATION} ({cal['spearman']:.3f})"] = \
        cal["spearman"] >= RANK_CORRELATION
    slowest = max(families, key=lambda f: f["ratio"]["fastest"])
    targets[f"fastest never below {CHOICE_SPEED}x the speed of the better JAX (worst: {slowest['family']} "
            f"{1 / slowest['ratio']['fastest']:.3f}x)"] = 1 / slowest["ratio"]["fastest"] >= CHOICE_SPEED
    worst = max(families, key=lambda f: f["median_s"]["fastest"] / min(f["median_s"][m] for m in ORDERS))
    gap = worst["median_s"]["fastest"] / min(worst["median_s"][m] for m in ORDERS)
    targets[f"fastest within {CHOICE_VS_BEST}x of the fastest order measured (worst: {worst['family']} "
            f"{gap:.3f}x)"] = gap <= CHOICE_VS_BEST
    if "bottleneck" in by_name:
        speedup = 1 / by_name["bottleneck"]["ratio"]["fastest"]
        targets[f"fastest >= {CHOICE_BOTTLENECK:g}x faster on bottleneck ({speedup:.1f}x)"] = \
            speedup >= CHOICE_BOTTLENECK
    print("cost models against the clock: " + "; ".join(
        f"{m}: median x{math.exp(a['median_abs_log']):.2f}, worst x{math.exp(a['max_abs_log']):.1f}, "
        f"rank correlation {a['spearman']:.3f}" for m, a in models.items()))
    print("optimal: " + ", ".join(f"{f['family']} {1 / f['ratio']['optimal']:.2f}x" for f in families)
          + " faster than the better JAX; " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {"orders": list(ORDERS), "jax": list(JAX), "repeats": cfg["repeats"], "families": families,
              "targets": targets, "roofline": peak, "rates": rates.as_dict(), "points": points,
              "prediction": models}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Top: grouped bars, time / better JAX per family and order (log scale), the fma model's
    ratio as ticks. Bottom: predicted against measured time for both cost models (log-log)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from .prediction import scatter
    families = record["families"]
    names = record["orders"] + record["jax"]
    width = 0.8 / len(names)
    fig = plt.figure(figsize=(max(9, 1.6 * len(families) + 2), 10))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.1), hspace=0.55)
    ax = fig.add_subplot(grid[0, :])
    for col, model in enumerate(("fma", "calibrated")):
        a = record["prediction"][model]
        scatter(fig.add_subplot(grid[1, col]), record["points"], f"{model}_s",
                f"{model} model: median ×{math.exp(a['median_abs_log']):.2f}, rank corr. {a['spearman']:.2f}"
                + (" (one fitted rate)" if model == "fma" else ""))
    colors = plt.get_cmap("tab10")
    for j, m in enumerate(names):
        xs = np.arange(len(families)) + (j - (len(names) - 1) / 2) * width
        ax.bar(xs, [f["ratio"][m] for f in families], width, color=colors(j), label=m)
        ax.scatter(xs, [f["predicted_ratio"][m] for f in families], marker="_", color="black", s=60, zorder=3)
    ax.scatter([], [], marker="_", color="black", label="cost model")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(families)), [f["family"] for f in families], rotation=20, ha="right")
    ax.set_ylabel("time / better of jax.jacfwd, jax.jacrev")
    ax.set_title(f"Jacobian accumulation orders ({record['device']['device_kind']})")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return fig
