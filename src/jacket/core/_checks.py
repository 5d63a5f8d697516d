"""Input checks shared by layers, losses and chains: clear errors instead of XLA tracebacks.

Each message names where the check ran (``Chain.forward``, a layer's repr), what was given and
what was expected: shapes, dtypes, the layer by its index and repr, a parameter by its leaf path.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ._shapes import split_batch

__all__ = ["check_array", "check_input", "check_like", "check_params", "expected_params", "check_last_axis", "check_key",
           "last_axis_shape"]


def check_array(x, where: str, name: str = "x"):
    """``x`` as an array (lists become arrays) with a floating dtype."""
    if getattr(x, "shape", None) is None:
        x = jnp.asarray(x)
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"{where}: {name} must be a floating-point array, got dtype {dtype} "
                        f"(cast it first, e.g. {name}.astype(jnp.float32))")
    return x


def check_input(x, in_shape, where: str, name: str = "x"):
    """Check that ``x`` is a floating array of shape ``in_shape`` or ``(batch,) + in_shape``."""
    x = check_array(x, where, name)
    split_batch(x.shape, in_shape, where, name)
    return x


def check_like(value, reference, where: str, name: str, ref_name: str):
    """Check that ``value`` (a tangent or cotangent) has the shape of ``reference``."""
    value = check_array(value, where, name)
    if tuple(value.shape) != tuple(reference.shape):
        raise ValueError(f"{where}: {name} has shape {tuple(value.shape)} but must have the shape of "
                         f"{ref_name}, {tuple(reference.shape)}")
    return value


@lru_cache(maxsize=1024)
def expected_params(layer):
    """``{leaf path: ShapeDtypeStruct}`` of ``layer.init``'s params (``jax.eval_shape``: nothing
    runs), or ``None`` when init cannot be traced (then params are not checked)."""
    try:
        shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - a user's init that eval_shape cannot trace
        return None
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}


def _kind(dtype):
    """The kind of a dtype (bfloat16 and float8 are floating: ``jnp.issubdtype`` knows them)."""
    dtype = jnp.dtype(dtype)
    if dtype == jax.dtypes.float0:
        return "float0"
    for kind, base in (("floating", jnp.inexact), ("integer", jnp.integer), ("boolean", jnp.bool_)):
        if jnp.issubdtype(dtype, base):
            return kind
    return str(dtype)


def check_params(layer, params, where: str, name: str = "params", expected=None):
    """Check ``params`` (one layer's pytree) against the structure, shapes and kinds of dtype of
    ``layer.init`` (or ``expected``, a ``{path: ShapeDtypeStruct}``): missing or extra leaves,
    wrong shapes, integer leaves where floats belong. Floating precision may differ (float64
    params for a float32 init are fine)."""
    expected = expected_params(layer) if expected is None else expected
    if expected is None:
        return
    try:
        given = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    except Exception as err:  # noqa: BLE001 - not a pytree at all
        raise TypeError(f"{where}: {name} for {layer!r} is not a pytree of arrays ({err})") from None
    if not expected and given:
        raise ValueError(f"{where}: {layer!r} takes no parameters, but {name} has "
                         f"{', '.join(name + p for p in given)}; pass {{}}")
    missing = [p for p in expected if p not in given]
    extra = [p for p in given if p not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(name + p for p in missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(name + p for p in extra)}")
        raise ValueError(f"{where}: {name} for {layer!r}: {'; '.join(parts)} "
                         f"(expected {', '.join(name + p for p in expected) or 'no parameters'})")
    for path, want in expected.items():
        leaf = given[path]
        shape, dtype = np.shape(leaf), getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.asarray(leaf).dtype
        if tuple(shape) != tuple(want.shape):
            raise ValueError(f"{where}: {name}{path} for {layer!r} has shape {tuple(shape)}, "
                             f"expected {tuple(want.shape)}")
        if _kind(dtype) != _kind(want.dtype) and _kind(dtype) != "float0":  # float0: JAX's tangent of an int
            raise TypeError(f"{where}: {name}{path} for {layer!r} has dtype {np.dtype(dtype)}, "
                            f"expected a {_kind(want.dtype)} dtype (like {np.dtype(want.dtype)})")


def check_last_axis(x, features: int, where: str, name: str = "x"):
    """Check that ``x`` is a floating array whose last axis has ``features`` entries."""
    x = check_array(x, where, name)
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(f"{where}: {name} has shape {tuple(x.shape)}, but its last axis must have "
                         f"{features} entries")
    return x


def last_axis_shape(layer, in_shape, features: int):
    """``in_shape`` if its last axis is ``features``, else a ValueError naming ``layer``."""
    in_shape = tuple(in_shape)
    if in_shape[-1] != features:
        raise ValueError(f"{layer!r} takes inputs whose last axis has {features} entries, got shape {in_shape}")
    return in_shape


def check_key(key, where: str):
    """``key`` as a PRNG key (``jax.random.key(n)`` or ``jax.random.PRNGKey(n)``): an int or any
    other value is a TypeError saying how to make one, instead of JAX's message about key shapes."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        raise TypeError(f"{where}: takes a PRNG key, got the int {key!r}: write jax.random.key({key!r})")
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        raise TypeError(f"{where}: takes a PRNG key (jax.random.key(0)), got {type(key).__name__}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if getattr(key, "ndim", 0) != 0:
            raise ValueError(f"{where}: takes one PRNG key, got an array of keys of shape {tuple(key.shape)}")
        return key
    if tuple(getattr(key, "shape", ())) != (2,) or not jnp.issubdtype(dtype, jnp.unsignedinteger):
        raise TypeError(f"{where}: takes a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), got an array "
                        f"of shape {tuple(getattr(key, 'shape', ()))} and dtype {dtype}")
    return key
