"""``order="fastest"``: autotuning a chain's Jacobian plan on the device at hand.

The candidates are the optimal plans under the calibrated cost model and under fma, the optimal
plans of four perturbed calibrated models (step cost ×0.2 and ×5, activation traffic ×0.5 and ×2:
plans a small error in one rate would pick), ranked by the calibrated prediction; the best ``k``
of them plus the four classic orders (forward, reverse, both dense bracketings of the factors)
are compiled and timed (``chain.jacobian`` of random
params and one random input of the dtype asked for, in interleaved rounds, the median of each),
and the fastest wins. The winner's order string is cached on disk under
``<cache>/autotune/<key>.json``, the key
a hash of the layers, shapes, dtype, device kind and JAX version, so a new process reuses it
without timing; a cached order that no longer parses is tuned again with a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings

from ._cache import cache_dir, device_slug, read_json, versions, write_json
from ._timing import interleaved_medians

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
    """The plans to time: the best ``k`` distinct optimal plans (calibrated, fma, perturbed
    calibrated models) by ``cost``'s prediction, then forward and reverse."""
    from ..planning._costs import CalibratedCost
    from ..planning._plan import make_plan
    rates = cost.rates
    models = [cost, None] + [CalibratedCost(dataclasses.replace(rates, **change)) for change in (
        {"step": rates.step * 0.2}, {"step": rates.step * 5},
        {"sweep_io": rates.sweep_io * 0.5, "mm_io": rates.mm_io * 0.5},
        {"sweep_io": rates.sweep_io * 2, "mm_io": rates.mm_io * 2})]
    found = {}
    for model in models:
        plan = make_plan(chain, "optimal", devices, model)
        found.setdefault(plan.order, plan)
    ranked = sorted(found, key=lambda order: found[order].predict(cost))[:k]
    n = len(chain)
    classic = ["forward", "reverse"] + ([_nested(n, left=True), _nested(n, left=False)] if n > 2 else [])
    for order in classic:
        if make_plan(chain, order, devices).order not in ranked:
            ranked.append(make_plan(chain, order, devices).order)
    return [make_plan(chain, order, devices, cost) for order in ranked]


def _nested(n: int, left: bool) -> str:
    """The dense bracketing ``((J_n J_{n−1}) …) J_1`` (left) or ``J_n (… (J_2 J_1))`` (right)."""
    text = "J1" if not left else f"J{n}"
    for i in (range(2, n + 1) if not left else range(n - 1, 0, -1)):
        text = f"(J{i} {text})" if not left else f"({text} J{i})"
    return text


def _time(chain, plans, dtype, repeats):
    import jax
    import jax.numpy as jnp
    params = chain.init(jax.random.PRNGKey(0), dtype)
    x = jax.random.normal(jax.random.PRNGKey(1), chain.in_shape, jnp.dtype(dtype))
    fns = {plan.order: (lambda p, x, plan=plan: chain.jacobian(p, x, plan)) for plan in plans}
    return interleaved_medians(fns, (params, x), rounds=repeats)


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
                plan = make_plan(chain, data["order"], devices, cost)
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
    times = _time(chain, plans, dtype, repeats)
    best = min(plans, key=lambda p: times[p.order])
    if cache:
        write_json(path, {"order": best.order, "chain": repr(chain), "dtype": str(dtype),
                          "measured_s": times, "predicted_s": {p.order: p.predicted_s for p in plans},
                          "tuning_s": round(time.perf_counter() - start, 2)})
    plan = dataclasses.replace(best, name=f"fastest of {len(plans)} timed")
    if cache:
        _MEMORY[key] = plan
    return plan
