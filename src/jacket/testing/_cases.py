"""Set-up of a check: its dtype, keys and random generator, the parameters (spread around
constant values), the input cases (one example and a batch) and the tolerances."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

#: dtype -> ((rtol, atol) against autodiff, (rtol, atol) against finite differences)
TOLERANCES = {
    "float64": ((1e-9, 1e-12), (1e-6, 1e-8)),
    "float32": ((1e-4, 1e-5), (1e-3, 1e-4)),
    "float16": ((3e-2, 1e-2), (5e-2, 2e-2)),
    "bfloat16": ((3e-2, 1e-2), (5e-2, 2e-2)),
}
BATCH = 3


def _resolve_dtype(dtype, x, params):
    if dtype is None:
        floats = [np.asarray(a).dtype for a in jax.tree_util.tree_leaves((x, params))
                  if jnp.issubdtype(np.asarray(a).dtype, jnp.floating)]
        dtype = floats[0] if floats else jnp.float32
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"the rules can only be checked in a floating dtype, got {dtype}")
    return dtype


def _x64_for(dtype):
    """float64 arrays need x64: enable it for the duration of the check only."""
    return jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()


def _keys(key):
    """The JAX key for ``init`` and a numpy generator seeded from it (numpy draws compile nothing)."""
    key = jax.random.PRNGKey(0 if key is None else key) if key is None or isinstance(key, int) else key
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return key, np.random.default_rng(np.asarray(data).astype(np.uint32).ravel().tolist())


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: _put(np.asarray(a, dtype)) if jnp.issubdtype(np.asarray(a).dtype, jnp.floating) else a, tree)


def _spread(params, rng):
    """Initial parameters, with each constant leaf (a scale of ones, an offset of zeros) spread
    around its value: at scale 1 and offset 0, a rule that drops those terms would still pass."""
    def spread(a):
        a = np.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.floating) or a.size == 0 or np.ptp(a) != 0:
            return a
        z = rng.standard_normal(a.shape)
        return (a * (1 + z / 4) if a.flat[0] != 0 else z / 2).astype(a.dtype)
    return jax.tree_util.tree_map(spread, params)


def _put(a):
    """numpy -> JAX without compiling anything (``jnp.asarray`` compiles a copy per shape)."""
    return jax.device_put(np.asarray(a))


def _normal(rng, like):
    return _put(rng.standard_normal(np.shape(like)).astype(like.dtype))


def _random_cases(rng, n, dtype):
    x = rng.standard_normal((BATCH + 1, n)).astype(dtype)  # standard normal: ReLU-like kinks at 0 are rarely near
    return [(f"single ({n},) {dtype}", _put(x[BATCH])), (f"batch ({BATCH}, {n}) {dtype}", _put(x[:BATCH]))]


def _given_case(x, dtype, where):
    x = np.asarray(x, dtype)
    if x.ndim not in (1, 2):
        raise ValueError(f"{where}: x must have shape (n,) or (batch, n), got {x.shape}")
    return (f"{'single' if x.ndim == 1 else 'batch'} {tuple(x.shape)} {dtype}", _put(x))


def _tolerances(dtype, rtol, atol):
    (ad_rtol, ad_atol), (fd_rtol, fd_atol) = TOLERANCES.get(dtype.name, TOLERANCES["float16"])
    ad = (ad_rtol if rtol is None else rtol, ad_atol if atol is None else atol)
    return ad, (max(fd_rtol, ad[0]), max(fd_atol, ad[1]))
