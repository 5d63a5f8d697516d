"""``order="fastest"``: autotuning a chain's Jacobian plan on the device at hand.

The candidates are always the fma optimum (what ``order="optimal"`` runs) and the calibrated
optimum; then the optimal plans of four perturbed calibrated models (step cost ×0.2 and ×5,
activation traffic ×0.5 and ×2: plans a small error in one rate would pick), the best ``k`` by
the calibrated prediction, and the four classic orders (forward, reverse, both dense
bracketings). Each is compiled and timed (its Jacobian at random params and one random input of
the dtype asked for) in interleaved rounds, and compared with the fma optimum round by round.

The fastest by median keeps its place only if it beats the fma optimum beyond the noise of the
measurement: in at least three rounds out of four (the upper quartile of its per-round time
ratios to the fma optimum is below 1). Otherwise the fma optimum is the answer, so ``"fastest"``
is never measurably slower than ``"optimal"``. The choice is cached on disk under
``<cache>/autotune/<key>.json`` (the key a hash of the layers, shapes, dtype, device kind and JAX
version) with every candidate's times, so a new process reuses it without timing; a cached order
that no longer parses is tuned again with a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
import warnings

from ._cache import cache_dir, device_slug, read_json, versions, write_json
from ._timing import interleaved_samples

__all__ = ["fastest_plan", "autotune_key", "candidates"]

_MEMORY: dict = {}


def autotune_key(chain, dtype, devices: int = 1, device=None) -> str:
    """The cache key of one tuning: layers, shapes, dtype, devices, device kind, JAX version."""
    import numpy as np
    from ._calibrate import _device
    text = json.dumps({"layers": [repr(layer) for layer in chain.layers], "shapes": [list(s) for s in chain.shapes],
                       "dtype": np.dtype(dtype).name, "devices": devices, "device": device_slug(_device(device)),
                       **versions()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def candidates(chain, cost, k: int = 3, devices: int = 1) -> list:
    """The plans to time, the fma optimum first and the calibrated optimum second, then the best
    ``k`` other distinct optimal plans of perturbed calibrated models by ``cost``'s prediction,
    then the classic orders."""
    from ..planning import FMA
    from ..planning._costs import CalibratedCost
    from ..planning._plan import make_plan
    rates = cost.rates
    fixed = [make_plan(chain, "optimal", devices=devices, cost=model).order for model in (FMA, cost)]
    perturbed = {}
    for change in ({"step": rates.step * 0.2}, {"step": rates.step * 5},
                   {"sweep_io": rates.sweep_io * 0.5, "mm_io": rates.mm_io * 0.5},
                   {"sweep_io": rates.sweep_io * 2, "mm_io": rates.mm_io * 2}):
        plan = make_plan(chain, "optimal", devices=devices, cost=CalibratedCost(dataclasses.replace(rates, **change)))
        if plan.order not in fixed:
            perturbed.setdefault(plan.order, plan)
    ranked = list(dict.fromkeys(fixed)) + sorted(perturbed, key=lambda order: perturbed[order].predict(cost))[:k]
    n = len(chain)
    classic = ["forward", "reverse"] + ([_nested(n, left=True), _nested(n, left=False)] if n > 2 else [])
    for order in classic:
        if make_plan(chain, order, devices=devices).order not in ranked:
            ranked.append(make_plan(chain, order, devices=devices).order)
    return [make_plan(chain, order, devices=devices, cost=cost) for order in ranked]


def _nested(n: int, left: bool) -> str:
    """The dense bracketing ``((J_n J_{n−1}) …) J_1`` (left) or ``J_n (… (J_2 J_1))`` (right)."""
    text = "J1" if not left else f"J{n}"
    for i in (range(2, n + 1) if not left else range(n - 1, 0, -1)):
        text = f"(J{i} {text})" if not left else f"({text} J{i})"
    return text


def _time(chain, plans, dtype, repeats):
    """``{order: [seconds per call, one per round]}`` of every plan, interleaved."""
    import jax
    import jax.numpy as jnp

    from ..execute import input_jacobian
    params = chain.init(jax.random.PRNGKey(0), dtype)
    x = jax.random.normal(jax.random.PRNGKey(1), chain.in_shape, jnp.dtype(dtype))
    fns = {plan.order: (lambda p, x, plan=plan: input_jacobian(chain, plan, p, x)) for plan in plans}
    return interleaved_samples(fns, (params, x), rounds=repeats)


def decide(samples: dict, reference: str) -> tuple[str, dict]:
    """``(order, ratios)``: the fastest order by median that beats ``reference`` (the fma optimum)
    in at least three rounds out of four (upper quartile of its per-round ratios below 1), else
    ``reference``; ``ratios[order]`` is the median per-round ratio to the reference."""
    def quantile(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))]
    ratios = {order: [t / r for t, r in zip(times, samples[reference])] for order, times in samples.items()}
    medians = {order: quantile(values, 0.5) for order, values in ratios.items()}
    best = min(medians, key=medians.get)
    if best != reference and quantile(ratios[best], 0.75) >= 1.0:
        best = reference
    return best, medians


def fastest_plan(chain, devices: int = 1, dtype="float32", k: int = 3, repeats: int = 9, cache: bool = True,
                 cost=None):
    """The fastest plan of ``chain``'s Jacobian on this device (see the module docstring), priced
    under the calibrated model (``cost``; default: this device's cached rates); ``plan.name``
    says whether it was timed now or read from the cache (``cache=False``: neither read nor
    written, always timed). One device only: a plan for a mesh is not timed on one."""
    import jax.numpy as jnp
    from ..planning._costs import CalibratedCost
    from ..planning._plan import make_plan
    from ._calibrate import rates_for
    if devices != 1:
        raise ValueError(f"order='fastest' tunes plans on one device, got devices={devices}; plan with "
                         f"order='optimal' and cost='calibrated' for a mesh")
    dtype = jnp.dtype(dtype)
    cost = CalibratedCost(rates_for()) if cost is None else cost
    path = cache_dir() / "autotune" / f"{autotune_key(chain, dtype, devices)}.json"
    key = str(path)  # the in-process memo follows the cache folder too
    if cache and key in _MEMORY:
        return _MEMORY[key]
    if cache:
        data, why = read_json(path)
        if data is not None:
            try:
                plan = make_plan(chain, data["order"], devices=devices, cost=cost)
            except (KeyError, TypeError, ValueError) as err:
                warnings.warn(f"jacket: the autotuned plan in {path} does not fit this chain ({err}); tuning again",
                              RuntimeWarning, stacklevel=3)
            else:
                plan = dataclasses.replace(plan, name="fastest, autotuned earlier")
                _MEMORY[key] = plan
                return plan
        elif why != "missing":
            warnings.warn(f"jacket: the autotune cache file {path} is {why}; tuning again", RuntimeWarning,
                          stacklevel=3)
    plans = candidates(chain, cost, k, devices)
    start = time.perf_counter()
    samples = _time(chain, plans, dtype, repeats)
    order, ratios = decide(samples, plans[0].order)
    best = next(p for p in plans if p.order == order)
    if cache:
        write_json(path, {"order": best.order, "chain": repr(chain), "dtype": str(dtype), "reference": plans[0].order,
                          "measured_s": {o: statistics.median(t) for o, t in samples.items()},
                          "ratio_to_fma_optimum": ratios, "predicted_s": {p.order: p.predicted_s for p in plans},
                          "tuning_s": round(time.perf_counter() - start, 2)})
    kept = "the fma optimum: no candidate beat it beyond the noise" if order == plans[0].order and \
        min(ratios.values()) < 1 else f"fastest of {len(plans)} timed"
    plan = dataclasses.replace(best, name=kept)
    if cache:
        _MEMORY[key] = plan
    return plan
