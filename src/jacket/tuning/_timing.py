"""Wall-clock timing of a jitted function: compile apart, warm up, median of samples, each
sample long enough for the timer (the benchmarks' method, ``jacket_bench.timing``, in small)."""
from __future__ import annotations

import statistics
import time

__all__ = ["median_seconds", "interleaved_medians", "interleaved_samples"]


def _sample(compiled, args, number: int) -> float:
    import jax
    start = time.perf_counter()
    for _ in range(number):
        jax.block_until_ready(compiled(*args))
    return (time.perf_counter() - start) / number


def median_seconds(fn, args, repeats: int = 5, min_sample_s: float = 0.01, warmup: int = 1) -> float:
    """Seconds per call of ``jax.jit(fn)(*args)``, the median of ``repeats`` samples of at least
    ``min_sample_s`` each; compilation and warm-up are not counted."""
    import jax
    compiled = jax.jit(fn).lower(*args).compile()
    once = min(_sample(compiled, args, 1) for _ in range(max(1, warmup)))
    number = max(1, int(min_sample_s / max(once, 1e-9)) + 1) if once < min_sample_s else 1
    return statistics.median(_sample(compiled, args, number) for _ in range(repeats))


def interleaved_medians(fns: dict, args, rounds: int = 7, min_sample_s: float = 0.01) -> dict:
    """``{name: seconds per call}`` of several functions of the same ``args``, timed in rounds
    A B C, B C A, …, each the median over rounds: slow drift of the machine hits all alike."""
    return {name: statistics.median(values)
            for name, values in interleaved_samples(fns, args, rounds, min_sample_s).items()}


def interleaved_samples(fns: dict, args, rounds: int = 7, min_sample_s: float = 0.01) -> dict:
    """``{name: [seconds per call in round r]}``, the rounds as in :func:`interleaved_medians`."""
    import jax
    compiled, number = {}, {}
    for name, fn in fns.items():
        compiled[name] = jax.jit(fn).lower(*args).compile()
        once = _sample(compiled[name], args, 1)
        number[name] = max(1, int(min_sample_s / max(once, 1e-9)) + 1) if once < min_sample_s else 1
    names, samples = list(fns), {name: [] for name in fns}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(_sample(compiled[name], args, number[name]))
    return samples
