"""Memory: the plan's bytes model (``Plan.memory``) against XLA's compiled memory analysis.

For every family of :mod:`.orders` (at ``scale``, 1 = the benchmark's widths) and every jacket
order (forward, reverse, the two nested bracketings, optimal), the jitted
``jacket.jacobian(chain, 1, order=plan)(params, x)`` is lowered and compiled, never run: XLA's
``memory_analysis()`` gives the temporaries, arguments and output in bytes. Recorded per case:
the model's bytes, XLA's, and the ratio model / XLA of the temporaries; per family and overall,
the median and the largest ``max(ratio, 1 / ratio)``. Arguments and output are compared exactly.
Target: the temporaries within 1.5× of XLA's on every family and order.

**Checkpointing**: ``jacket.value_and_grad`` of 32 × (Dense(256, 256), Tanh) at batch 4096
(float32, ``MeanSquaredError``; activations dominate) with the full tape, with
``checkpoint="sqrt"``, ``"two-level"`` and ``("binomial", 6)`` (a schedule holding at most 6 states at once) and
``jax.value_and_grad``: XLA's temporaries of each
(compiled), the activations' share of them (the temporaries less the part that does not grow
with depth, measured at half the depth) and their times (interleaved, median). Targets: ≤ 1/4
of the full tape's temporaries at ≤ 1.5× its time.

**Chunked sweeps**: the Jacobians of 1024 → 8192 → 8192 → 1024 and of the bottleneck
4096-4096-16-4096-4096 (tanh) with ``jax.jacrev``, ``jax.jacfwd`` and jacket's optimal plan whole
and in chunks of 512, 256 and 128 seeds: XLA's temporaries, the model's, and the times
(interleaved medians). Target per chain: some plan with ≤ 1/4 of ``jax.jacrev``'s temporaries at
≤ 1.5× the time of the better of JAX's two. The chunk sizes trace the time/memory trade-off.

**Memory limits** (:mod:`.memory_limits`): the planner's plans under a sweep of limits, their
bytes by XLA against the limit and their times against the unlimited plan.
"""
from __future__ import annotations

import statistics

from .timing import input_plan, write_results

NAME = "memory"
WITHIN = 1.5
CHECKPOINT_MEMORY = 0.25
CHECKPOINT_TIME = 1.5
CHUNK_MEMORY = 0.25
CHUNK_TIME = 1.5
ORDERS = ("forward", "reverse", "left-nested", "right-nested", "optimal")


def config(full: bool = False) -> dict:
    """``scale`` divides the families' widths (the quick run uses 4: compiling the full cnn and
    transformer Jacobians takes most of a full run)."""
    from .orders import FAMILIES
    return {"families": tuple(FAMILIES), "scale": 1 if full else 4,
            "checkpoint": {"blocks": 32, "width": 256, "batch": 4096 if full else 1024, "binomial": 6},
            "checkpoint_repeats": 7 if full else 3,
            "chunked": [[1024, 8192, 8192, 1024], [4096, 4096, 16, 4096, 4096]] if full else
                       [[256, 2048, 2048, 256], [1024, 1024, 16, 1024, 1024]],
            "chunks": [512, 256, 128], "chunk_repeats": 3, "full": full, "limit_points": 6,
            "limit_repeats": 5 if full else 3}


def n_steps(cfg: dict) -> int:
    return len(cfg["families"]) + 1 + len(cfg["chunked"]) + 2


def measure(chain, plan, params, x) -> dict:
    """Model and XLA bytes of one plan (compiled, not run)."""
    import jax

    import jacket
    compiled = jax.jit(jacket.jacobian(chain, 1, order=plan)).lower(params, x).compile()
    xla = compiled.memory_analysis()
    model = plan.memory
    temp = int(xla.temp_size_in_bytes)
    return {"order": plan.order, "model_temp": model.temp_bytes, "xla_temp": temp,
            "ratio": model.temp_bytes / max(temp, 1),
            "model_result": model.result_bytes, "xla_output": int(xla.output_size_in_bytes),
            "model_arguments": model.argument_bytes, "xla_arguments": int(xla.argument_size_in_bytes),
            "xla_alias": int(xla.alias_size_in_bytes), "model_tape": model.tape_bytes}


def checkpoint_chain(blocks: int = 32, width: int = 256):
    """``blocks`` × (Dense(width, width), Tanh): the checkpointing group's chain."""
    import jacket
    layers = []
    for _ in range(blocks):
        layers += [jacket.Dense(width, width), jacket.Tanh()]
    return jacket.Chain(layers)


def measure_checkpoint(cfg) -> dict:
    """value_and_grad with the full tape, ``checkpoint="sqrt"``, ``"two-level"`` and
    jax.value_and_grad: XLA's temp bytes of each and their times (interleaved medians),
    MeanSquaredError, float32. The activations' share of the temporaries is measured too: the
    full tape's temporaries at half the depth give the bytes per block (a line through the two),
    and what is left at depth 0 is the working set that does not grow with depth (the gradient
    pass's cotangents and products); a schedule's activation bytes are its temporaries less that."""
    import jax
    import jax.numpy as jnp
    import jacket
    from .timing import alternate
    c = cfg["checkpoint"]
    chain, loss = checkpoint_chain(c["blocks"], c["width"]), jacket.MeanSquaredError()
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (c["batch"], c["width"]), jnp.float32)
    target = jnp.zeros_like(x)
    fns = {"full tape": jacket.value_and_grad(chain, loss),
           "checkpoint sqrt": jacket.value_and_grad(chain, loss, checkpoint="sqrt"),
           "checkpoint two-level": jacket.value_and_grad(chain, loss, checkpoint="two-level"),
           f"checkpoint binomial {c.get('binomial', 6)}": jacket.value_and_grad(
               chain, loss, checkpoint=("binomial", c.get("binomial", 6))),
           "jax.value_and_grad": jax.value_and_grad(lambda p, x, t: loss.apply(chain.apply(p, x), t))}
    temp = {k: int(jax.jit(f).lower(params, x, target).compile().memory_analysis().temp_size_in_bytes)
            for k, f in fns.items()}
    half = checkpoint_chain(c["blocks"] // 2, c["width"])
    half_temp = int(jax.jit(jacket.value_and_grad(half, loss)).lower(half.init(jax.random.PRNGKey(0)), x, target)
                    .compile().memory_analysis().temp_size_in_bytes)
    per_block = (temp["full tape"] - half_temp) / (c["blocks"] - c["blocks"] // 2)
    fixed = temp["full tape"] - per_block * c["blocks"]
    activations = {k: v - fixed for k, v in temp.items()}
    timing = alternate(fns, (params, x, target), repeats=cfg.get("checkpoint_repeats", 7), baseline="full tape",
                       min_sample_s=0.05)
    return {"layers": len(chain), "width": c["width"], "batch": c["batch"], "temp_bytes": temp,
            "activation_bytes": 4 * c["batch"] * c["width"], "median_s": timing["median_s"],
            "ratio": timing["ratio"], "memory_ratio": temp["checkpoint sqrt"] / temp["full tape"],
            "memory_ratio_two_level": temp["checkpoint two-level"] / temp["full tape"],
            "half_depth_temp": half_temp, "fixed_temp": fixed, "per_block_temp": per_block,
            "activation_temp": activations,
            "activation_ratio": {k: activations[k] / activations["full tape"] for k in fns
                                 if k.startswith("checkpoint")}}


def measure_chunked(widths, cfg) -> dict:
    """One chain of the chunked group: temporaries (XLA and model) and times of jax.jacrev,
    jax.jacfwd and the optimal plan whole and chunked."""
    import jax
    import jax.numpy as jnp
    import jacket
    from .timing import alternate
    chain = jacket.mlp(list(widths), activation="tanh")
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (widths[0],), jnp.float32)
    plans = {"optimal": input_plan(chain, "optimal")}
    plans.update({f"optimal, chunk {k}": plans["optimal"].chunked(k) for k in cfg["chunks"]})
    fns = {"jax.jacrev": jax.jacrev(chain.apply, argnums=1), "jax.jacfwd": jax.jacfwd(chain.apply, argnums=1)}
    fns.update({k: jacket.jacobian(chain, 1, order=plan) for k, plan in plans.items()})
    temp = {k: int(jax.jit(f).lower(params, x).compile().memory_analysis().temp_size_in_bytes) for k, f in fns.items()}
    timing = alternate(fns, (params, x), repeats=cfg.get("chunk_repeats", 3), baseline="jax.jacrev", min_sample_s=0.05)
    best = min(("jax.jacrev", "jax.jacfwd"), key=lambda k: timing["median_s"][k])
    cases = {k: {"xla_temp": temp[k], "model_temp": plans[k].memory.temp_bytes if k in plans else None,
                 "median_s": timing["median_s"][k], "time_vs_best_jax": timing["median_s"][k] / timing["median_s"][best],
                 "temp_vs_jacrev": temp[k] / max(temp["jax.jacrev"], 1)} for k in fns}
    fits = [k for k in plans if cases[k]["temp_vs_jacrev"] <= CHUNK_MEMORY and cases[k]["time_vs_best_jax"] <= CHUNK_TIME]
    return {"widths": list(widths), "order": plans["optimal"].order, "cases": cases, "best_jax": best,
            "fits": fits}


def _spread(ratio: float) -> float:
    return max(ratio, 1 / ratio) if ratio > 0 else float("inf")


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    from .associativity import order_strings
    from .orders import FAMILIES, example_inputs
    families, rows = [], []
    for name in cfg["families"]:
        if tick:
            tick(f"memory {name}")
        chain = FAMILIES[name](cfg["scale"])
        params, x = example_inputs(chain, seed=len(name))
        cases = {m: measure(chain, input_plan(chain, o), params, x)
                 for m, o in order_strings(chain, optimal=True).items()}
        spreads = [_spread(c["ratio"]) for c in cases.values()]
        families.append({"family": name, "dims": list(chain.dims), "cases": cases,
                         "median_spread": statistics.median(spreads), "max_spread": max(spreads)})
        for m, c in cases.items():
            rows.append([name, m, c["model_temp"] / 1e6, c["xla_temp"] / 1e6, c["ratio"],
                         "yes" if (c["model_result"], c["model_arguments"]) ==
                         (c["xla_output"], c["xla_arguments"]) else "NO"])
    print(format_table(["family", "order", "model MB", "XLA temp MB", "model / XLA", "result, args exact"], rows,
                       title=f"Plan.memory against XLA's memory analysis (scale {cfg['scale']}, compiled only)"))
    spreads = [_spread(c["ratio"]) for f in families for c in f["cases"].values()]
    worst = max(families, key=lambda f: f["max_spread"])
    exact = all((c["model_result"], c["model_arguments"]) == (c["xla_output"], c["xla_arguments"])
                for f in families for c in f["cases"].values())
    targets = {f"temporaries within {WITHIN}x of XLA's on every family (worst: {worst['family']} "
               f"{worst['max_spread']:.2f}x)": worst["max_spread"] <= WITHIN,
               "result and argument bytes equal XLA's": exact}
    print(f"model / XLA temporaries: median x{statistics.median(spreads):.2f}, worst x{max(spreads):.2f} "
          f"({worst['family']}); " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    if tick:
        tick("memory checkpointing")
    ck = measure_checkpoint(cfg)
    print(format_table(["value_and_grad", "XLA temp MB", "activations MB", "ms", "time / full tape"],
                       [[k, ck["temp_bytes"][k] / 1e6, ck["activation_temp"][k] / 1e6, ck["median_s"][k] * 1e3,
                         ck["ratio"][k]] for k in ck["temp_bytes"]],
                       title=f"Checkpointing: {ck['layers']} layers, width {ck['width']}, batch {ck['batch']} "
                             f"(activations: temporaries less the {ck['fixed_temp'] / 1e6:.3g} MB that do not "
                             f"grow with depth)"))
    for key in ck["activation_ratio"]:
        name = key.removeprefix("checkpoint ")
        targets[f"checkpoint {name}: temporaries <= {CHECKPOINT_MEMORY} x the full tape's "
                f"({ck['temp_bytes'][key] / ck['temp_bytes']['full tape']:.2f}; activations "
                f"{ck['activation_ratio'][key]:.2f})"] = ck["temp_bytes"][key] / ck["temp_bytes"]["full tape"] \
            <= CHECKPOINT_MEMORY
        targets[f"checkpoint {name}: time <= {CHECKPOINT_TIME} x the full tape's ({ck['ratio'][key]:.2f})"] = \
            ck["ratio"][key] <= CHECKPOINT_TIME
    chunked = []
    for widths in cfg["chunked"]:
        if tick:
            tick(f"memory chunked {'-'.join(map(str, widths))}")
        r = measure_chunked(widths, cfg)
        chunked.append(r)
        print(format_table(["Jacobian", "XLA temp MB", "model MB", "temp / jacrev", "time / best JAX"],
                           [[k, c["xla_temp"] / 1e6, c["model_temp"] / 1e6 if c["model_temp"] is not None else "",
                             c["temp_vs_jacrev"], c["time_vs_best_jax"]] for k, c in r["cases"].items()],
                           title=f"Chunked sweeps, {'-'.join(map(str, widths))} (optimal: {r['order']})"))
        targets[f"{'-'.join(map(str, widths))}: a plan with <= {CHUNK_MEMORY} x jacrev's temporaries at <= "
                f"{CHUNK_TIME} x the better JAX's time ({', '.join(r['fits']) or 'none'})"] = bool(r["fits"])
    from .memory_limits import run_limits
    limits = run_limits(cfg, tick)
    for r in limits:
        targets[f"{r['chain']}: XLA's bytes within every memory limit (worst {r['worst_xla_vs_limit']:.2f}x the "
                f"limit)"] = r["within_limit"]
    record = {"scale": cfg["scale"], "orders": list(ORDERS), "families": families,
              "median_spread": statistics.median(spreads), "max_spread": max(spreads), "targets": targets,
              "checkpoint": ck, "chunked": chunked, "limits": limits}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Model / XLA temporaries per family and order (log scale), the 1.5× band shaded; beside it,
    time against XLA's bytes under the sweep of memory limits."""
    import matplotlib.pyplot as plt
    import numpy as np
    families, orders = record["families"], record["orders"]
    width = 0.8 / len(orders)
    limits = record.get("limits")
    fig, axes = plt.subplots(1, 2 if limits else 1, figsize=(max(8, 1.4 * len(families) + 2) + (6 if limits else 0), 4.5),
                             squeeze=False)
    ax = axes[0][0]
    if limits:
        from .memory_limits import plot_limits
        plot_limits(axes[0][1], limits)
    colors = plt.get_cmap("tab10")
    for j, m in enumerate(orders):
        xs = np.arange(len(families)) + (j - (len(orders) - 1) / 2) * width
        ax.bar(xs, [f["cases"][m]["ratio"] for f in families], width, color=colors(j), label=m)
    ax.axhspan(1 / WITHIN, WITHIN, color="green", alpha=0.08, label=f"within {WITHIN}x")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(families)), [f["family"] for f in families], rotation=20, ha="right")
    ax.set_ylabel("model temporaries / XLA temp_size_in_bytes")
    ax.set_title(f"Plan.memory against XLA's memory analysis ({record['device']['device_kind']}, "
                 f"scale {record['scale']})")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    return fig
