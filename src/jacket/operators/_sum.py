"""Sums and stacks of operators, keeping structure: the Jacobians of blocks.

``Residual(f)`` has the Jacobian ``I + J_f``, ``Parallel([f_1, …], merge="sum")`` has ``Σ J_k``,
and ``merge="concat"`` stacks the ``J_k``. Their costs are :meth:`Structure.add` and
:meth:`Structure.plus_identity`, checked here against the structure of what is built.
"""
from __future__ import annotations

import jax.numpy as jnp

from ._operators import Diagonal, DiagonalPlusLowRank, LinearOperator, Matrix

__all__ = ["add", "plus_identity", "concatenate"]


def _parts(op):
    """``(d, u, v)`` of a structured operator, ``u = v = None`` for a diagonal."""
    if isinstance(op, Diagonal):
        return op.diagonal, None, None
    return op.diagonal, op.u, op.v


def add(a: LinearOperator, b: LinearOperator) -> tuple[LinearOperator, int]:
    """``(a + b, cost)``: diagonals add, low-rank factors are concatenated (ranks add); a dense
    term makes the sum dense."""
    structure, cost = a.structure.add(b.structure)
    if isinstance(a, Matrix) or isinstance(b, Matrix):
        out = Matrix(a.to_dense() + b.to_dense())
    else:
        (d1, u1, v1), (d2, u2, v2) = _parts(a), _parts(b)
        us = [u for u in (u1, u2) if u is not None]
        vs = [v for v in (v1, v2) if v is not None]
        if not us:
            out = Diagonal(d1 + d2)
        else:
            out = DiagonalPlusLowRank(d1 + d2, jnp.concatenate(us, axis=1), jnp.concatenate(vs, axis=1))
    assert out.structure == structure, (out.structure, structure)
    return out, cost


def plus_identity(op: LinearOperator) -> LinearOperator:
    """``I + op`` for a square operator, with the structure of ``op``."""
    if isinstance(op, Matrix):
        dense = op.to_dense()
        return Matrix(dense + jnp.eye(dense.shape[0], dtype=dense.dtype))
    d, u, v = _parts(op)
    return Diagonal(d + 1) if u is None else DiagonalPlusLowRank(d + 1, u, v)


def concatenate(blocks, out_shapes, in_size: int, axis: int) -> Matrix:
    """The Jacobian of ``concatenate([f_1(x), …], axis)`` from the branch Jacobians ``blocks``
    (operators ``(size(out_k), in_size)``) and the branch output shapes ``out_shapes`` (one
    example): the rows of each branch are interleaved as the concatenation lays them out."""
    dense = [op.to_dense().reshape(tuple(shape) + (in_size,)) for op, shape in zip(blocks, out_shapes)]
    stacked = jnp.concatenate(dense, axis=axis if axis >= 0 else axis - 1)  # axis counted in one example
    return Matrix(stacked.reshape(-1, in_size))
