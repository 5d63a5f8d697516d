"""Memory limits: the planner's choices under a sweep of limits, measured by XLA, not by the model.

Per chain, the smallest limit the planner can meet (``floor``) and what the unconstrained optimum
needs (``top``) are read off the bytes model; ``points`` limits spaced geometrically between
them are planned (``jacket.plan(chain, 1, memory_limit=)``: bracketing, chunk size and checkpoints
chosen), compiled and timed (interleaved medians). Recorded per limit: the plan's order, chunk
and checkpoint, the model's bytes, XLA's (arguments + output + temporaries from
``memory_analysis()``), and the time against the unconstrained plan. The curve of time
against XLA's bytes is the trade-off; the check is that XLA's bytes stay within the limit.

Chains:

* ``wide``: the Jacobian of 1024 → 8192 → 8192 → 1024 (tanh) at one example: chunks trade the
  sweep's seeds for time;
* ``deep-batch``: per-example Jacobians of a two-class classifier, 24 × (Dense(256, 256), Tanh) →
  Dense(256, 2), for a batch of 512: reverse mode's tape is what a limit cuts (checkpoints).
"""
from __future__ import annotations

import math

LIMIT_SLACK = 1.0  # XLA's bytes must not exceed the limit


def limit_config(full: bool) -> dict:
    return {"wide": [1024, 8192, 8192, 1024] if full else [256, 2048, 2048, 256],
            "deep": {"blocks": 24, "width": 256, "batch": 512} if full else {"blocks": 12, "width": 128, "batch": 256}}


def chains(cfg: dict) -> dict:
    """name -> (chain, batch), from a :func:`limit_config` dict (``cfg["limit_chains"]`` of the run)."""
    import jacket
    wide = cfg["wide"]
    blocks, width, batch = cfg["deep"]["blocks"], cfg["deep"]["width"], cfg["deep"]["batch"]
    layers = []
    for _ in range(blocks):
        layers += [jacket.Dense(width, width), jacket.Tanh()]
    return {"wide": (jacket.mlp(wide, activation="tanh"), 1),
            "deep-batch": (jacket.Chain(layers + [jacket.Dense(width, 2)]), batch)}


def sweep(name, chain, batch, points: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import jacket
    from jacket.planning import smallest_limit
    from jacket.planning._limit import call_bytes

    from .timing import alternate, input_plan
    params = chain.init(jax.random.PRNGKey(0), jnp.float32)
    shape = (batch,) + chain.in_shape if batch > 1 else chain.in_shape
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
    free = input_plan(chain, "optimal")
    top, floor = call_bytes(free, free.memory, batch), smallest_limit(chain, batch=batch)
    limits = sorted({max(floor, round(math.exp(math.log(floor) + f * (math.log(top) - math.log(floor)))))
                     for f in [k / (points - 1) for k in range(points)]} | {top}, reverse=True)
    plans, cases = {}, []
    for index, limit in enumerate(limits):
        plan = input_plan(chain, "optimal", batch=batch, memory_limit=limit)
        one = jacket.jacobian(chain, 1, order=plan)  # one example; a batch: the per-example Jacobians
        fn = jax.jit(one if batch == 1 else jax.vmap(one, in_axes=(None, 0)))
        m = fn.lower(params, x).compile().memory_analysis()
        xla = int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)
        key = f"limit {index}: {limit / 1e6:.4g} MB"
        plans[key] = fn
        cases.append({"limit": limit, "order": plan.order, "chunk": plan.chunk, "checkpoint": plan.checkpoint,
                      "model_bytes": call_bytes(plan, plan.memory, batch), "xla_bytes": xla,
                      "xla_temp": int(m.temp_size_in_bytes), "xla_vs_limit": xla / limit, "key": key})
    timing = alternate(plans, (params, x), repeats=repeats, baseline=cases[0]["key"], min_sample_s=0.05)
    for c in cases:
        c["median_s"], c["time_vs_unlimited"] = timing["median_s"][c["key"]], timing["ratio"][c["key"]]
    return {"chain": name, "dims": list(chain.dims),
            "layers": len(chain), "batch": batch, "floor": floor, "top": top, "cases": cases,
            "within_limit": all(c["xla_bytes"] <= LIMIT_SLACK * c["limit"] for c in cases),
            "worst_xla_vs_limit": max(c["xla_vs_limit"] for c in cases)}


def run_limits(cfg: dict, tick=None) -> list:
    from jacket._table import format_table
    out = []
    for name, (chain, batch) in chains(cfg.get("limit_chains") or limit_config(cfg.get("full", False))).items():
        if tick:
            tick(f"memory limits {name}")
        r = sweep(name, chain, batch, cfg.get("limit_points", 6), cfg.get("limit_repeats", 3))
        out.append(r)
        print(format_table(["limit MB", "order", "chunk", "checkpoint", "model MB", "XLA MB", "XLA / limit",
                            "time / unlimited"],
                           [[c["limit"] / 1e6, c["order"][:40], c["chunk"] or "", c["checkpoint"] or "",
                             c["model_bytes"] / 1e6, c["xla_bytes"] / 1e6, c["xla_vs_limit"], c["time_vs_unlimited"]]
                            for c in r["cases"]],
                           title=f"Plans under memory limits: {name} ({r['layers']} layers, batch {batch})"))
    return out


def plot_limits(ax, limits: list):
    """Time against XLA's bytes, both over the unlimited plan's, one line per chain, one point per
    limit (log-log; labels: the limit in MB)."""
    for r in limits:
        base = r["cases"][0]
        xs = [c["xla_bytes"] / base["xla_bytes"] for c in r["cases"]]
        ys = [c["time_vs_unlimited"] for c in r["cases"]]
        ax.plot(xs, ys, "o-", label=f"{r['chain']} (batch {r['batch']}; unlimited {base['xla_bytes'] / 1e6:.3g} MB)")
        for c, x, y in zip(r["cases"], xs, ys):
            ax.annotate(f"{c['limit'] / 1e6:.3g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("XLA bytes of the call (arguments + output + temporaries) / the unlimited plan's")
    ax.set_ylabel("time / the unlimited optimal plan")
    ax.set_title("Plans under memory limits (labels: the limit, MB)")
    ax.legend(fontsize=7)
