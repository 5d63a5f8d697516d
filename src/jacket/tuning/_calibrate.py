"""``jacket calibrate``: measure the calibrated cost model's rates on a device and cache them.

The model is linear in its rates (``jacket/planning/_costs.py``): a program's predicted time is
``f · u``, with ``u`` the nine rates (call, step, mm_fma, skinny_fma, mm_io, sweep_fma,
sweep_fma_few, sweep_io, struct_fma) and ``f`` its features: how many calls, steps, fma of each
class and floats moved it has, read off the same formulas by pricing it under one unit-rate
model per rate. So calibration times a set of programs that spans the regimes (tiny calls and
chains of steps; square, skinny and thin dense products; diagonal products; forward and reverse
Jacobians and the optimal plans of a few chains, with many and with few seeds) and fits ``u ≥ 0``
by non-negative least squares on the relative errors (each program's row divided by its time).

About 10–30 s on a 2-core CPU. The rates are stored as JSON under
``<cache>/calibration/<device>.json`` (see :mod:`._cache`) with every program's time, features
and fitted prediction; a missing, corrupt or stale file (another format or JAX version) is
measured again.
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from ..planning._costs import CostModel, Rates
from ._cache import cache_dir, device_slug, read_json, write_json
from ._timing import median_seconds

__all__ = ["calibrate", "load_rates", "rates_for", "calibration_path", "nnls"]

RATES = ("call", "step", "mm_fma", "skinny_fma", "mm_io", "sweep_fma", "sweep_fma_few", "sweep_io", "struct_fma")


def _device(device=None):
    import jax
    if device is not None:
        return device
    chosen = jax.config.jax_default_device
    if chosen is None:
        return jax.devices()[0]
    return jax.devices(chosen)[0] if isinstance(chosen, str) else chosen


def calibration_path(device=None):
    return cache_dir() / "calibration" / f"{device_slug(_device(device))}.json"


def _unit(name) -> CostModel:
    """The cost model whose ticks count the feature of rate ``name`` (all other rates zero)."""
    ints = {k: int(k == name) for k in ("sweep_fma", "sweep_io", "mm_fma", "skinny_fma", "mm_io", "struct_fma",
                                        "step")}
    return CostModel(f"unit {name}", **ints, tick_s=1.0, sweep_few=int(name == "sweep_fma_few"),
                     call=int(name == "call"))


UNITS = {name: _unit(name) for name in RATES}


def _plan_features(plan) -> list:
    return [plan.predict(UNITS[name]) for name in RATES]


def _product_features(m, k, n, count=1) -> list:
    return [1.0 if name == "call" else count * float(UNITS[name].dense_product(m, k, n)) for name in RATES]


def _programs(big: bool):
    """``(label, fn, args, features)`` of every program timed."""
    import jax
    import jax.numpy as jnp
    from ..compose import Chain, mlp
    from ..execute import input_jacobian
    from ..layers import Dense, LayerNorm, Sigmoid, Softmax, Tanh
    from ..planning import make_plan
    f32 = jnp.float32
    out = [("x + 1 (8 floats)", lambda x: x + 1, (jnp.ones(8, f32),),
            [1.0 if name in ("call", "step") else 0.0 for name in RATES])]
    w = jnp.full((8, 8), 0.125, f32)

    def small_chain(x, w):
        for _ in range(32):
            x = jnp.tanh(x @ w)
        return x
    out.append(("32 tiny products", small_chain, (jnp.ones((8, 8), f32), w),
                [1.0 if n == "call" else 32.0 * UNITS[n].dense_product(8, 8, 8) for n in RATES]))
    scale = 4 if big else 1
    for m, k, n in ((256, 256, 256), (512, 512, 512), (1024, 1024, 1024 if big else 512), (2048, 2048, 8),
                    (8, 256, 1024), (16, 1024, 1024), (1024, 1024, 16), (64, 256, 1024)):
        m, k = m * scale if m > 64 else m, k * scale if k > 64 else k
        a, b = jnp.ones((m, k), f32) / k, jnp.ones((k, n), f32)
        out.append((f"{m}x{k} @ {k}x{n}", lambda a, b: a @ b, (a, b), _product_features(m, k, n)))
    for rows, cols in ((1024 * scale, 1024), (2048 * scale, 256)):
        d, mat = jnp.linspace(0.5, 1.5, rows, dtype=f32), jnp.ones((rows, cols), f32)
        feats = [1.0 if name == "call" else float(UNITS[name].structured(rows * cols)) for name in RATES]
        out.append((f"diag({rows}) @ {rows}x{cols}", lambda d, m: d[:, None] * m, (d, mat), feats))
    width = 256 * (2 if big else 1)
    chains = {"MLP 256 x 6": mlp([width] * 6, activation="tanh"),
              "expanding 8-64-256-1024": mlp([8, 64, 256, 1024 * scale], activation="tanh"),
              "funnel 1024-256-64-8": mlp([1024 * scale, 256, 64, 8], activation="tanh"),
              "bottleneck 512-512-16-512-512": mlp([512 * scale, 512, 16, 512, 512 * scale], activation="tanh"),
              "elementwise 256": Chain([Dense(width, width), Tanh(), LayerNorm(width), Sigmoid(), Softmax(), Tanh(),
                                        LayerNorm(width)])}
    for name, chain in chains.items():
        params = chain.init(jax.random.PRNGKey(0), f32)
        x = jax.random.normal(jax.random.PRNGKey(1), chain.in_shape, f32)
        for order in ("forward", "reverse", "optimal"):
            plan = make_plan(chain, order)
            out.append((f"{name}: {order}", lambda p, x, chain=chain, plan=plan: input_jacobian(chain, plan, p, x),
                        (params, x), _plan_features(plan)))
    return out


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 200) -> np.ndarray:
    """``argmin ‖a u − b‖`` over ``u ≥ 0`` (Lawson and Hanson's active-set method)."""
    rows, cols = a.shape
    u, passive = np.zeros(cols), np.zeros(cols, dtype=bool)
    for _ in range(iterations):
        grad = a.T @ (b - a @ u)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= 1e-12 * max(1.0, np.abs(grad).max()):
            break
        passive[np.argmax(np.where(passive, -np.inf, grad))] = True
        while True:
            z = np.zeros(cols)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                u = z
                break
            bad = passive & (z <= 0)
            alpha = np.min(u[bad] / (u[bad] - z[bad] + 1e-300))
            u = u + alpha * (z - u)
            passive &= u > 1e-15 * max(1.0, np.abs(u).max())
            u[~passive] = 0.0
    return u


def _fit(features: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Rates ≥ 0 minimising the relative errors; columns scaled to 1 for the solver."""
    rel = features / times[:, None]
    norm = np.where(rel.max(axis=0) > 0, rel.max(axis=0), 1.0)
    return nnls(rel / norm, np.ones(len(times))) / norm


def _progress(enabled, total):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="calibrating", unit="program", file=sys.stderr, leave=False)


def calibrate(device=None, progress: bool = True, save: bool = True) -> Rates:
    """Time the programs on ``device`` (default: JAX's default device), fit the rates of
    :class:`~jacket.planning._costs.Rates` and, with ``save``, write them to the cache."""
    import jax
    device = _device(device)
    start = time.perf_counter()
    with jax.default_device(device):
        programs = _programs(big=device.platform != "cpu")
        bar = _progress(progress, len(programs))
        times = []
        for label, fn, args, _ in programs:
            if bar is not None:
                bar.set_postfix_str(label[:30])
            times.append(median_seconds(fn, args, repeats=5, min_sample_s=0.02))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    features, measured = np.array([p[3] for p in programs], dtype=float), np.array(times)
    u = _fit(features, measured)
    rates = Rates(device=device_slug(device), **{name: float(v) for name, v in zip(RATES, u)})
    if save:
        predicted = features @ u
        write_json(calibration_path(device), {
            "device": rates.device, "device_kind": str(device.device_kind),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.perf_counter() - start, 2),
            "rates": rates.as_dict(), "measured_s": {p[0]: t for p, t in zip(programs, times)},
            "predicted_s": {p[0]: float(q) for p, q in zip(programs, predicted)},
            "features": {p[0]: dict(zip(RATES, p[3])) for p in programs}})
    return rates


def load_rates(device=None) -> tuple[Rates | None, str]:
    """``(rates, "")`` from the cache, or ``(None, why)``: missing, corrupt, stale, or rates
    that don't parse."""
    path = calibration_path(device)
    data, why = read_json(path)
    if data is None:
        return None, why
    try:
        return Rates.from_dict(data.get("rates") or {}), ""
    except (TypeError, ValueError) as err:
        return None, f"corrupt ({err})"


def rates_for(device=None) -> Rates:
    """The cached rates of ``device``, calibrating first when there are none (with a message on
    stderr) and when the cache can't be used (with a warning that says why)."""
    rates, why = load_rates(device)
    if rates is not None:
        return rates
    path = calibration_path(device)
    if why == "missing":
        print(f"jacket: no calibration for this device yet ({path}); measuring it now "
              f"(seconds on a CPU; `jacket calibrate` does it ahead of time)", file=sys.stderr)
    else:
        warnings.warn(f"jacket: the calibration file {path} is {why}; measuring it again", RuntimeWarning,
                      stacklevel=3)
    return calibrate(device, progress=sys.stderr.isatty())
