"""Input checks shared by layers, losses and chains: clear errors instead of XLA tracebacks."""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["check_input", "check_like"]


def check_input(x, width: int | None, where: str, name: str = "x"):
    """Check that ``x`` is a floating array of shape ``(width,)`` or ``(batch, width)``."""
    shape = getattr(x, "shape", None)
    if shape is None:
        x = jnp.asarray(x)
        shape = x.shape
    dtype = getattr(x, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"{where}: {name} must be a floating-point array, got dtype {dtype} "
                        f"(cast it first, e.g. {name}.astype(jnp.float32))")
    if len(shape) not in (1, 2):
        raise ValueError(f"{where}: {name} must have shape (n,) or (batch, n), got {tuple(shape)}")
    if width is not None and shape[-1] != width:
        raise ValueError(f"{where}: {name} has width {shape[-1]} (shape {tuple(shape)}) but {width} was expected")
    return x


def check_like(value, reference, where: str, name: str, ref_name: str):
    """Check that ``value`` (a tangent or cotangent) has the shape of ``reference``."""
    shape = getattr(value, "shape", None)
    if shape is None:
        value = jnp.asarray(value)
        shape = value.shape
    if tuple(shape) != tuple(reference.shape):
        raise ValueError(f"{where}: {name} has shape {tuple(shape)} but must have the shape of "
                         f"{ref_name}, {tuple(reference.shape)}")
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"{where}: {name} must be a floating-point array, got dtype {dtype}")
    return value
