"""Associativity: one Jacobian, four orders of multiplication, four different costs.

The chain is ``depth`` blocks ``Dense(D, D), Tanh`` then ``Dense(D, 1)``: a scalar function of
D inputs, so its Jacobian is a gradient, shape ``(1, D)``. With L = 2·depth + 1 factors:

* ``reverse`` pulls one cotangent back (vector–matrix products): O(depth · D²);
* ``forward`` pushes D tangents through: O(depth · D³);
* ``left-nested`` ``((J_L J_{L-1}) …) J_1`` multiplies dense factors from the output side,
  every product a row times a matrix: O(depth · D²), like reverse;
* ``right-nested`` ``J_L (… (J_2 J_1))`` multiplies from the input side, matrix times matrix:
  O(depth · D³), like forward;

against ``jax.jacrev`` and ``jax.jacfwd`` of ``chain.apply``. The log-log slope of time against
D shows the exponent (fitted over the largest four sizes); targets: reverse's slope at most
jacrev's + 0.3, forward's at least jacfwd's − 0.3, and each within 1.10× of its JAX counterpart
in time at the largest D.
"""
from __future__ import annotations

from .timing import alternate, default_device, gbytes_per_s, gflops, input_plan, paired_ratio, roofline, write_results

NAME = "associativity"
SLOPE_MARGIN = 0.3
TIME_TARGET = 1.10
FIT_POINTS = 4
METHODS = ("reverse", "forward", "left-nested", "right-nested", "jax.jacrev", "jax.jacfwd")
PAIRS = (("reverse", "jax.jacrev"), ("forward", "jax.jacfwd"))


def config(full: bool = False) -> dict:
    on_cpu = default_device().platform == "cpu"
    if full:
        sizes = (64, 128, 256, 512, 1024, 2048) if on_cpu else (64, 128, 256, 512, 1024, 2048, 4096, 8192)
    else:
        sizes = (64, 128, 256, 512) if on_cpu else (64, 128, 256, 512, 1024, 2048)
    return {"sizes": sizes, "depth": 4, "repeats": 9 if full else 5, "min_sample_s": 0.05 if full else 0.01,
            "roofline": {}}


def n_steps(cfg: dict) -> int:
    return len(cfg["sizes"])


def scalar_chain(width: int, depth: int):
    """``depth`` × ``(Dense(width, width), Tanh)``, then ``Dense(width, 1)``."""
    import jacket
    return jacket.mlp([width] * (depth + 1) + [1], activation="tanh")


def left_nested(n_factors: int) -> str:
    """``"((J3 J2) J1)"`` for 3 factors: products taken from the output side."""
    text = f"J{n_factors}"
    for i in range(n_factors - 1, 0, -1):
        text = f"({text} J{i})"
    return text


def right_nested(n_factors: int) -> str:
    """``"(J3 (J2 J1))"`` for 3 factors: products taken from the input side."""
    text = "J1"
    for i in range(2, n_factors + 1):
        text = f"(J{i} {text})"
    return text


def order_strings(chain, optimal: bool = False) -> dict:
    """jacket's methods as order strings for ``jacket.jacobian`` (``optimal`` adds "optimal")."""
    n = len(chain)
    strings = {"forward": "forward", "reverse": "reverse", "left-nested": left_nested(n),
               "right-nested": right_nested(n)}
    return dict(strings, optimal="optimal") if optimal else strings


def candidates(chain, optimal: bool = False) -> dict:
    """name -> ``(params, x) -> (n_N, n_0)`` Jacobian: jacket's orders, ``jax.jacfwd``, ``jax.jacrev``."""
    import jax

    import jacket
    fns = {name: jacket.jacobian(chain, 1, order=order)
           for name, order in order_strings(chain, optimal).items()}
    fns["jax.jacfwd"] = jax.jacfwd(chain.apply, argnums=1)
    fns["jax.jacrev"] = jax.jacrev(chain.apply, argnums=1)
    return fns


def model_fma(chain, optimal: bool = False) -> dict:
    """Model cost of every candidate; JAX's two are costed as forward and reverse."""
    fma = {name: input_plan(chain, order).fma for name, order in order_strings(chain, optimal).items()}
    fma["jax.jacfwd"], fma["jax.jacrev"] = fma["forward"], fma["reverse"]
    return fma


def jacobian_inputs(chain, seed: int):
    """``(params, x)`` for one Jacobian: float32 params and a random input ``(n_0,)``."""
    import jax
    import jax.numpy as jnp
    k_params, k_x = jax.random.split(jax.random.PRNGKey(seed))
    return chain.init(k_params, jnp.float32), jax.random.normal(k_x, (chain.dims[0],), jnp.float32)


def weight_bytes(chain) -> int:
    """float32 bytes of the Dense weights: what a matrix–vector sweep must read at least once."""
    from jacket import Dense
    return 4 * sum(layer.in_features * layer.out_features for layer in chain if isinstance(layer, Dense))


def fit_slope(sizes, times) -> float:
    """Slope of ``log t`` against ``log D`` (least squares)."""
    import numpy as np
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    peak = roofline(**cfg.get("roofline", {}))
    points = []
    for width in cfg["sizes"]:
        if tick:
            tick(f"associativity D={width}")
        chain = scalar_chain(width, cfg["depth"])
        args = jacobian_inputs(chain, seed=width)
        timing = alternate(candidates(chain), args, repeats=cfg["repeats"], baseline="jax.jacrev",
                           min_sample_s=cfg["min_sample_s"])
        fma = model_fma(chain)
        points.append({"D": width, "order_strings": order_strings(chain), "fma": fma, "median_s": timing["median_s"],
                       "compile_s": timing["compile_s"], "rounds": timing["rounds"],
                       "weight_bytes": weight_bytes(chain),
                       "pair_ratio": {a: paired_ratio(timing["rounds"], a, b) for a, b in PAIRS}})
    sizes = [p["D"] for p in points]
    # Fit over the largest FIT_POINTS sizes: at small D a fixed per-call cost flattens the curve.
    fitted = points[-FIT_POINTS:]
    slopes = {m: fit_slope([p["D"] for p in fitted], [p["median_s"][m] for p in fitted])
              for m in METHODS} if len(fitted) > 1 else {}
    last = points[-1]
    targets = {}
    if slopes:
        targets["reverse slope <= jacrev slope + 0.3"] = slopes["reverse"] <= slopes["jax.jacrev"] + SLOPE_MARGIN
        targets["forward slope >= jacfwd slope - 0.3"] = slopes["forward"] >= slopes["jax.jacfwd"] - SLOPE_MARGIN
    targets[f"reverse / jacrev <= {TIME_TARGET} at D={last['D']}"] = last["pair_ratio"]["reverse"] <= TIME_TARGET
    targets[f"forward / jacfwd <= {TIME_TARGET} at D={last['D']}"] = last["pair_ratio"]["forward"] <= TIME_TARGET

    rows = [[p["D"]] + [p["median_s"][m] * 1e3 for m in METHODS] for p in points]
    if slopes:
        rows.append(["slope"] + [slopes[m] for m in METHODS])
    print(format_table(["D"] + [f"{m} ms" for m in METHODS], rows,
                       title=f"Jacobian of a scalar chain ({cfg['depth']} × Dense+Tanh, then Dense(D, 1))"))
    rates = []
    for m in METHODS:
        t = last["median_s"][m]
        rates.append([m, last["fma"][m], gflops(last["fma"][m], t), gbytes_per_s(last["weight_bytes"], t)])
    print(format_table(["method", "model fma", "GFLOP/s", "weights GB/s"], rates,
                       title=f"achieved rates at D={last['D']} (roofline: matmul {peak['matmul_gflops']:.1f} "
                             f"GFLOP/s, matvec {peak['matvec_gbs']:.1f} GB/s)"))
    print(f"reverse / jacrev = {last['pair_ratio']['reverse']:.3f}, forward / jacfwd = "
          f"{last['pair_ratio']['forward']:.3f} at D={last['D']}; "
          + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {"depth": cfg["depth"], "sizes": sizes, "methods": list(METHODS), "repeats": cfg["repeats"],
              "slope_fit_sizes": [p["D"] for p in fitted],
              "points": points, "slopes": slopes, "targets": targets, "roofline": peak,
              "rates_at_largest": {r[0]: {"gflops": r[2], "weights_gbs": r[3]} for r in rates}}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    """Time against D, log-log, fitted slopes in the legend; the cost model through the first point."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    sizes = record["sizes"]
    styles = {"reverse": ("tab:blue", "o"), "forward": ("tab:red", "s"), "left-nested": ("tab:cyan", "^"),
              "right-nested": ("tab:orange", "v"), "jax.jacrev": ("navy", "x"), "jax.jacfwd": ("darkred", "+")}
    for m in record["methods"]:
        color, marker = styles[m]
        times = [p["median_s"][m] for p in record["points"]]
        slope = record["slopes"].get(m)
        label = m if slope is None else f"{m} (slope {slope:.2f})"
        ax.loglog(sizes, times, marker=marker, color=color, ls="-" if not m.startswith("jax") else ":", label=label)
        if not m.startswith("jax"):
            # The model counts fma only, so anchor it at the largest D, where fixed costs matter least.
            fma = [p["fma"][m] for p in record["points"]]
            model = [times[-1] * f / fma[-1] for f in fma]
            ax.loglog(sizes, model, color=color, lw=0.8, ls="--", alpha=0.6)
    ax.plot([], [], color="gray", ls="--", lw=0.8, label="cost model (fma), through the largest D")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("width D")
    ax.set_ylabel("seconds per Jacobian")
    ax.set_title(f"Jacobian of a {record['depth']}-block scalar chain ({record['device']['device_kind']})")
    ax.legend(fontsize=8)
    return fig
