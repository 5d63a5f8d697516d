"""Sums and stacks of operators, keeping structure: the Jacobians of blocks.

``Residual(f)`` has the Jacobian ``I + J_f``, ``Parallel([f_1, …], merge="sum")`` has ``Σ J_k``,
and ``merge="concat"`` stacks the ``J_k``. Their costs are :meth:`Structure.add` and
:meth:`Structure.plus_identity`, checked here against the structure of what is built.
"""
from __future__ import annotations

import jax.numpy as jnp

from ._blocks import BlockDiagonal, Kronecker, as_blocks
from ._operators import Diagonal, DiagonalPlusLowRank, LinearOperator, Matrix, unblock
from ._structure import MATRIX

__all__ = ["add", "plus_identity", "concatenate"]


def _parts(op, count):
    """``(d, u, v)`` of a diagonal or dplr operator with a block axis, ``u = v = None`` for a diagonal."""
    if isinstance(op, Diagonal):
        return op.diagonal.reshape(count, -1), None, None
    return op.factors3()


def _plain(op):
    if isinstance(op, Diagonal):
        return op.diagonal, None, None
    return op.diagonal, op.u, op.v


def add(a: LinearOperator, b: LinearOperator) -> tuple[LinearOperator, int]:
    """``(a + b, cost)``: diagonals add, low-rank factors are concatenated (ranks add), block
    diagonals add block by block; a dense term (or blocks that don't match) makes the sum dense."""
    structure, cost = a.structure.add(b.structure)
    if not a.structure.compatible(b.structure):
        a, b = unblock(a), unblock(b)
    if structure.dense_plain:
        out = Matrix(a.to_dense() + b.to_dense())
    elif structure.kind == MATRIX:
        if isinstance(a, Kronecker) and isinstance(b, Kronecker):
            out = Kronecker(a.block + b.block, a.count)
        else:
            out = BlockDiagonal(as_blocks(a, structure.blocks) + as_blocks(b, structure.blocks))
    elif structure.blocks == 1 and structure.kind != MATRIX:
        (d1, u1, v1), (d2, u2, v2) = _plain(a), _plain(b)
        us = [u for u in (u1, u2) if u is not None]
        vs = [v for v in (v1, v2) if v is not None]
        out = Diagonal(d1 + d2) if not us else \
            DiagonalPlusLowRank(d1 + d2, jnp.concatenate(us, axis=1), jnp.concatenate(vs, axis=1))
    else:
        count = structure.blocks
        (d1, u1, v1), (d2, u2, v2) = _parts(a, count), _parts(b, count)
        us = [u for u in (u1, u2) if u is not None]
        vs = [v for v in (v1, v2) if v is not None]
        d = (d1 + d2).reshape(-1)
        if not us:
            out = Diagonal(d)
        else:
            u, v = jnp.concatenate(us, axis=2), jnp.concatenate(vs, axis=2)
            out = DiagonalPlusLowRank(d, u, v) if count > 1 else DiagonalPlusLowRank(d, u[0], v[0])
    assert out.structure == structure, (out.structure, structure)
    return out, cost


def plus_identity(op: LinearOperator) -> LinearOperator:
    """``I + op`` for a square operator, with the structure of ``op``."""
    if isinstance(op, Matrix):
        dense = op.to_dense()
        return Matrix(dense + jnp.eye(dense.shape[0], dtype=dense.dtype))
    if isinstance(op, Kronecker):
        block = op.block
        return Kronecker(block + jnp.eye(block.shape[0], dtype=block.dtype), op.count)
    if isinstance(op, BlockDiagonal):
        return BlockDiagonal(op.stored + jnp.eye(op.stored.shape[1], dtype=op.stored.dtype)[None])
    if isinstance(op, Diagonal):
        return Diagonal(op.diagonal + 1)
    return DiagonalPlusLowRank(op.diagonal + 1, op.u, op.v)


def concatenate(blocks, out_shapes, in_size: int, axis: int) -> Matrix:
    """The Jacobian of ``concatenate([f_1(x), …], axis)`` from the branch Jacobians ``blocks``
    (operators ``(size(out_k), in_size)``) and the branch output shapes ``out_shapes`` (one
    example): the rows of each branch are interleaved as the concatenation lays them out."""
    dense = [op.to_dense().reshape(tuple(shape) + (in_size,)) for op, shape in zip(blocks, out_shapes)]
    stacked = jnp.concatenate(dense, axis=axis if axis >= 0 else axis - 1)  # axis counted in one example
    return Matrix(stacked.reshape(-1, in_size))
