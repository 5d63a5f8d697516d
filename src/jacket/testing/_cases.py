"""Set-up of a check: its dtype, keys and random generator, the parameters (spread around
constant values), the input cases (one example and a batch) and the tolerances."""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from ..core._shapes import as_shape, split_batch

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


def _random_cases(rng, in_shape, dtype):
    """One example of ``in_shape`` and a batch of ``BATCH``, standard normal (ReLU-like kinks at 0
    are rarely near)."""
    x = rng.standard_normal((BATCH + 1,) + tuple(in_shape)).astype(dtype)
    return [(f"single {tuple(in_shape)} {dtype}", _put(x[BATCH])), (f"batch {x[:BATCH].shape} {dtype}", _put(x[:BATCH]))]


def _given_case(x, in_shape, dtype, where):
    """The case of a given ``x``: one example of ``in_shape``, or a batch of them."""
    x = np.asarray(x, dtype)
    batch = split_batch(x.shape, in_shape, where)
    return (f"{'batch' if batch else 'single'} {tuple(x.shape)} {dtype}", _put(x))


def _layer_in_shape(layer, in_shape, x, where):
    """The input shape to check ``layer`` at: ``in_shape`` if given, else the layer's own, else
    that of a given ``x`` (one example); a clear error when none is known or the layer refuses it."""
    if in_shape is None:
        in_shape = layer.input_shape()
        if in_shape is not None and x is not None and np.shape(x) != tuple(in_shape) \
                and np.shape(x)[1:] != tuple(in_shape):
            in_shape = np.shape(x)  # e.g. LayerNorm(4) given one (T, 4) example
    if in_shape is None:
        if x is None:
            raise ValueError(f"{where}: {layer!r} takes inputs of any shape (input_shape() is None); "
                             f"pass in_shape= or x=")
        in_shape = np.shape(x)
    in_shape = as_shape(in_shape, f"{where}: in_shape")
    try:
        layer.output_shape(in_shape)
    except Exception as err:  # noqa: BLE001 - the layer's refusal, with its reason
        raise ValueError(f"{where}: {layer!r} does not take inputs of shape {in_shape}: {err}") from None
    return in_shape


def _tolerances(dtype, rtol, atol):
    (ad_rtol, ad_atol), (fd_rtol, fd_atol) = TOLERANCES.get(dtype.name, TOLERANCES["float16"])
    ad = (ad_rtol if rtol is None else rtol, ad_atol if atol is None else atol)
    return ad, (max(fd_rtol, ad[0]), max(fd_atol, ad[1]))
