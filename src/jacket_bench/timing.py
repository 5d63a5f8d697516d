"""Timing shared by every benchmark: jit, separate compile time, warm-up, medians, interleaved
candidates, a machine roofline measured in the same run, and the results writer.

Method (see benchmarks/README.md):

* every candidate is jitted and compiled ahead of time (``jax.jit(f).lower(*args).compile()``),
  so compile time is measured on its own and never pollutes a steady-state sample;
* each sample calls the compiled function ``number`` times, blocking on every result
  (``jax.block_until_ready``), and reports seconds per call; ``number`` is calibrated so that
  a sample lasts at least ``min_sample_s``, which keeps timer resolution out of the numbers;
* ``alternate`` runs the candidates interleaved, A B C A B C …, rotating who goes first, and
  the ratio of a candidate to the baseline is the median over rounds of the ratio *within* a
  round, so slow drift of the machine (other load, clock changes) cancels.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from typing import Callable, Mapping, Sequence

__all__ = [
    "compile_fn", "time_fn", "alternate", "paired_ratio", "roofline", "gflops", "gbytes_per_s",
    "device_info", "device_slug", "default_device", "write_results", "DEFAULT_OUT", "input_plan",
]

DEFAULT_OUT = os.path.join("benchmarks", "results")


def default_device():
    """The device JAX places new arrays and computations on (honours ``jax_default_device``)."""
    import jax
    chosen = jax.config.jax_default_device
    if chosen is None:
        return jax.devices()[0]
    if isinstance(chosen, str):  # a platform name
        return jax.devices(chosen)[0]
    return chosen


def compile_fn(fn: Callable, args: Sequence) -> tuple[Callable, float]:
    """``(compiled, seconds)``: ``fn`` jitted, lowered and compiled for ``args``; the seconds are
    tracing + lowering + XLA compilation, timed apart from any run. An already compiled ``fn``
    (``jax.jit(f).lower(...).compile()``) is used as is, with compile time ``nan``."""
    import jax
    if isinstance(fn, jax.stages.Compiled):
        return fn, float("nan")
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _sample(compiled, args, number: int) -> float:
    """Seconds per call over ``number`` calls, each one waited for."""
    import jax
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(compiled(*args))
    return (time.perf_counter() - start) / number


def _calibrate(compiled, args, min_sample_s: float, warmup: int) -> int:
    """Warm up, then pick how many calls make one sample last at least ``min_sample_s``."""
    for _ in range(max(warmup, 1)):
        once = _sample(compiled, args, 1)
    return max(1, int(min_sample_s / max(once, 1e-9)) + 1) if once < min_sample_s else 1


def time_fn(fn: Callable, args: Sequence, repeats: int = 7, warmup: int = 2,
            min_sample_s: float = 0.02) -> dict:
    """Time one function: ``{"median_s", "times_s", "number", "compile_s"}`` (seconds per call)."""
    compiled, compile_s = compile_fn(fn, args)
    number = _calibrate(compiled, args, min_sample_s, warmup)
    times = [_sample(compiled, args, number) for _ in range(repeats)]
    return {"median_s": statistics.median(times), "times_s": times, "number": number, "compile_s": compile_s}


def alternate(fns: Mapping[str, Callable], args: Sequence, repeats: int = 7, baseline: str | None = None,
              warmup: int = 2, min_sample_s: float = 0.02) -> dict:
    """Time the candidates interleaved in one process.

    ``fns``: name -> function of ``*args`` (jitted here). Each of ``repeats`` rounds takes one
    sample of every candidate, starting from a different one each round. Returns::

        {"baseline": name, "repeats": R,
         "median_s": {name: s}, "compile_s": {name: s}, "number": {name: calls per sample},
         "ratio": {name: median over rounds of t_name / t_baseline in the same round},
         "rounds": [{name: s, …}, …]}

    ``baseline`` defaults to the first candidate.
    """
    if not fns:
        raise ValueError("alternate: no candidates")
    names = list(fns)
    baseline = names[0] if baseline is None else baseline
    if baseline not in fns:
        raise ValueError(f"alternate: baseline {baseline!r} is not one of the candidates {names}")
    compiled, compile_s, number = {}, {}, {}
    for name in names:
        compiled[name], compile_s[name] = compile_fn(fns[name], args)
        number[name] = _calibrate(compiled[name], args, min_sample_s, warmup)
    rounds = []
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        rounds.append({name: _sample(compiled[name], args, number[name]) for name in order})
    return {
        "baseline": baseline,
        "repeats": repeats,
        "median_s": {n: statistics.median(rd[n] for rd in rounds) for n in names},
        "compile_s": compile_s,
        "number": number,
        "ratio": {n: paired_ratio(rounds, n, baseline) for n in names},
        "rounds": [{n: rd[n] for n in names} for rd in rounds],
    }


def paired_ratio(rounds: Sequence[Mapping[str, float]], name: str, reference: str) -> float:
    """Median over rounds of ``t_name / t_reference`` taken in the same round."""
    return statistics.median(rd[name] / rd[reference] for rd in rounds)


# ---- machine roofline -------------------------------------------------------------------
def roofline(matmul_n: int | None = None, matvec_n: int | None = None, repeats: int = 9) -> dict:
    """The machine's rates, measured now, float32, on the default device:

    * ``matmul_gflops``: a jitted ``(n × n) @ (n × n)`` product, ``2 n³`` flop;
    * ``matvec_gbs``: a jitted ``(m × m) @ (m,)`` product, which reads ``4 m²`` bytes once,
      the bound for matrix–vector work (reverse accumulation of a gradient);
    * ``copy_gbs``: a jitted ``a + 1`` over ``m²`` floats (read + write ``8 m²`` bytes).

    Each rate is taken from the fastest of ``repeats`` samples: a roofline is what the machine
    can do, and on a shared machine the median would mostly measure the other load.
    Sizes default to 1024 and 4096 on a CPU, 8192 and 16384 on an accelerator (big enough
    to leave its caches). Cached per process, so every benchmark of one run reports the same roofline.
    """
    on_cpu = default_device().platform == "cpu"
    matmul_n = matmul_n or (1024 if on_cpu else 8192)
    matvec_n = matvec_n or (4096 if on_cpu else 16384)
    return _roofline(matmul_n, matvec_n, repeats, str(default_device()))


@functools.lru_cache(maxsize=None)
def _roofline(matmul_n: int, matvec_n: int, repeats: int, device: str) -> dict:
    import jax
    import jax.numpy as jnp
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (matmul_n, matmul_n), jnp.float32)
    b = jax.random.normal(key_b, (matmul_n, matmul_n), jnp.float32)
    mm = time_fn(lambda a, b: a @ b, (a, b), repeats=repeats)
    m = jax.random.normal(key_a, (matvec_n, matvec_n), jnp.float32)
    v = jax.random.normal(key_b, (matvec_n,), jnp.float32)
    mv = time_fn(lambda m, v: m @ v, (m, v), repeats=repeats)
    cp = time_fn(lambda m: m + 1.0, (m,), repeats=repeats)
    return {
        "matmul_n": matmul_n, "matvec_n": matvec_n,
        "matmul_gflops": gflops(matmul_n ** 3, min(mm["times_s"])),
        "matvec_gbs": gbytes_per_s(4 * matvec_n ** 2, min(mv["times_s"])),
        "copy_gbs": gbytes_per_s(8 * matvec_n ** 2, min(cp["times_s"])),
    }


def gflops(fma: float, seconds: float) -> float:
    """Achieved GFLOP/s for ``fma`` multiply-adds (2 flop each) in ``seconds``."""
    return 2.0 * fma / seconds / 1e9


def gbytes_per_s(nbytes: float, seconds: float) -> float:
    """Achieved GB/s for ``nbytes`` moved in ``seconds``."""
    return nbytes / seconds / 1e9


# ---- where we ran -------------------------------------------------------------------------
def device_info() -> dict:
    """Platform, device kind, JAX version and CPU count of this run."""
    import jax
    dev = default_device()
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": len(jax.devices(dev.platform)),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def device_slug(info: Mapping | None = None) -> str:
    """Folder name for results: ``"cpu"``, or ``"<platform>-<kind>"`` (``"gpu-nvidia-h100-80gb-hbm3"``)."""
    info = device_info() if info is None else info
    if info["platform"] == "cpu":
        return "cpu"
    platform_name = "gpu" if info["platform"] in ("gpu", "cuda", "rocm") else info["platform"]
    kind = "".join(c if c.isalnum() else "-" for c in str(info["device_kind"]).lower())
    kind = "-".join(part for part in kind.split("-") if part)
    return f"{platform_name}-{kind}" if kind else platform_name


# ---- results --------------------------------------------------------------------------------
def write_results(name: str, payload: Mapping, out: str | None = None,
                  figure: Callable | None = None) -> dict:
    """Write ``<out>/<device>/<name>.json`` (and ``<name>.png`` if ``figure`` is given).

    ``payload`` holds the benchmark's own fields (dims, times, fma, ratios, roofline …); the
    device description, JAX version and a UTC timestamp are added here. ``figure(payload)``
    returns a matplotlib Figure; without matplotlib the PNG is skipped and the JSON says so.
    Returns ``{"json": path, "png": path or None}``.
    """
    info = device_info()
    folder = os.path.join(DEFAULT_OUT if out is None else out, device_slug(info))
    os.makedirs(folder, exist_ok=True)
    record = {"benchmark": name, "device": info, "jax_version": info["jax_version"],
              "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record.update(payload)
    png = None
    if figure is not None:
        png = _save_figure(figure, record, os.path.join(folder, f"{name}.png"))
        if png is None:
            record["png"] = "skipped: matplotlib is not installed"
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=_jsonable)
        f.write("\n")
    return {"json": path, "png": png}


def _save_figure(figure, record, path):
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    fig = figure(record)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _jsonable(value):
    """numpy scalars and arrays -> plain Python for json."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def input_plan(chain, order="optimal", dtype="float32", batch: int = 1, **options):
    """``jacket.plan(chain, 1, order=…, **options)`` for inputs of ``chain.in_shape`` (a batch of
    ``batch`` examples when > 1) in ``dtype``, without arrays: the benchmarks' shorthand."""
    import jax

    import jacket
    shape = chain.in_shape if batch == 1 else (batch,) + tuple(chain.in_shape)
    return jacket.plan(chain, 1, order=order, **options)(None, jax.ShapeDtypeStruct(shape, dtype))
