"""Sizes and shapes: positive integers checked where they are given, shapes as tuples.

A layer maps inputs of shape ``in_shape`` (a tuple; a vector is ``(n,)``) to ``out_shape``, with
an optional leading batch axis. Plans and Jacobian factors work on the flattened sizes
``size(in_shape)``, ``size(out_shape)``.
"""
from __future__ import annotations

import math
import operator

__all__ = ["positive_int", "as_shape", "size", "split_batch", "describe_shape"]


def positive_int(value, what: str) -> int:
    """``value`` as an int, or a ValueError naming ``what``: ``Dense(3.5, 2)`` must not become
    ``Dense(3, 2)``, and a width of 0 must not surface later as a shape error."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be a positive integer, got {value!r} ({type(value).__name__})") from None
    if number < 1:
        raise ValueError(f"{what} must be a positive integer, got {number}")
    return number


def as_shape(shape, what: str) -> tuple[int, ...]:
    """A shape as a tuple of positive ints; an int ``n`` stands for the vector shape ``(n,)``."""
    if isinstance(shape, (tuple, list)):
        if not shape:
            raise ValueError(f"{what} must have at least one axis, got ()")
        return tuple(positive_int(n, f"{what} axis {i}") for i, n in enumerate(shape))
    return (positive_int(shape, what),)


def size(shape) -> int:
    """Number of elements of one example of this shape."""
    return math.prod(shape)


def split_batch(shape, in_shape, where: str, name: str = "x") -> tuple[int, ...]:
    """The batch part of ``shape``: ``()`` for one example of ``in_shape``, ``(batch,)`` for a
    leading batch axis; anything else is a ValueError naming both shapes."""
    shape, in_shape = tuple(shape), tuple(in_shape)
    if shape == in_shape:
        return ()
    if len(shape) == len(in_shape) + 1 and shape[1:] == in_shape:
        return shape[:1]
    raise ValueError(f"{where}: {name} has shape {shape}, but must have shape {in_shape} (one example) "
                     f"or (batch,) + {in_shape}")


def describe_shape(shape) -> str:
    """``(3, 8, 8)`` as ``3×8×8``, a vector ``(10,)`` as ``10``."""
    return "×".join(str(n) for n in shape)
