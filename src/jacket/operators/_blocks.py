"""Block-diagonal dense operators: the Jacobians of layers acting on the last axis of a ``(T, d)``
sequence, one block per position, never materialised as ``(T·m) × (T·n)`` matrices.

* :class:`Kronecker` ``I_T ⊗ B``: every block the same, one stored (Dense's ``wᵀ``, kept as the
  weight itself, ``transposed``);
* :class:`BlockDiagonal` ``⊕_t B_t``: T blocks ``(T, p, q)``, what products of per-position
  Jacobians give.

Both are pytrees; their products and sums are in ``_product.py`` and ``_sum.py`` with the costs
of :class:`~._structure.Structure`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._operators import LinearOperator, _block_diagonal_dense
from ._structure import MATRIX, Structure

__all__ = ["Kronecker", "BlockDiagonal", "as_blocks"]


@jax.tree_util.register_pytree_node_class
class Kronecker(LinearOperator):
    """``I_count ⊗ B`` for a ``(p, q)`` block ``B`` (stored as given, or as its transpose when
    ``transposed``: the block is then ``stored.T`` without a copy)."""

    def __init__(self, stored, count: int, transposed: bool = False):
        self.stored, self.count, self.transposed = stored, int(count), bool(transposed)
        p, q = stored.shape[::-1] if transposed else stored.shape
        self.structure = Structure(MATRIX, self.count * p, self.count * q, 0, self.count, True)

    @property
    def block(self):
        return self.stored.T if self.transposed else self.stored

    def einsum_block(self, rows: str, cols: str) -> tuple[str, object]:
        """The block as an einsum operand with indices ``rows cols``, read in its stored layout."""
        return (cols + rows, self.stored) if self.transposed else (rows + cols, self.stored)

    def blocks(self):
        """The ``(count, p, q)`` blocks (the block broadcast)."""
        return jnp.broadcast_to(self.block, (self.count,) + self.block.shape)

    def to_dense(self):
        return _block_diagonal_dense(self.blocks())

    @property
    def T(self):
        return Kronecker(self.stored, self.count, not self.transposed)

    def tree_flatten(self):
        return (self.stored,), (self.count, self.transposed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.stored, = children
        obj.count, obj.transposed = aux
        shape = tuple(obj.stored.shape) if hasattr(obj.stored, "shape") else (0, 0)
        p, q = shape[::-1] if obj.transposed else shape
        obj.structure = Structure(MATRIX, obj.count * p, obj.count * q, 0, obj.count, True)
        return obj


@jax.tree_util.register_pytree_node_class
class BlockDiagonal(LinearOperator):
    """``⊕_t B_t`` for blocks ``(T, p, q)`` (T ≥ 1)."""

    def __init__(self, blocks):
        self.stored = blocks
        count, p, q = blocks.shape
        self.structure = Structure(MATRIX, count * p, count * q, 0, count)

    def blocks(self):
        return self.stored

    def to_dense(self):
        return _block_diagonal_dense(self.stored)

    @property
    def T(self):
        return BlockDiagonal(jnp.swapaxes(self.stored, 1, 2))

    def tree_flatten(self):
        return (self.stored,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.stored, = children
        shape = tuple(obj.stored.shape) if hasattr(obj.stored, "shape") else (1, 0, 0)
        obj.structure = Structure(MATRIX, shape[0] * shape[1], shape[0] * shape[2], 0, shape[0])
        return obj


def as_blocks(op, count: int):
    """``(count, p, q)`` dense blocks of a block-diagonal operator or a diagonal one."""
    from ._operators import Diagonal, DiagonalPlusLowRank
    if isinstance(op, (Kronecker, BlockDiagonal)):
        return op.blocks()
    if isinstance(op, Diagonal):
        d = op.diagonal.reshape(count, -1)
        return jax.vmap(jnp.diag)(d)
    if isinstance(op, DiagonalPlusLowRank):
        d, u, v = op.factors3()
        return jax.vmap(jnp.diag)(d) + jnp.einsum("tpk,tqk->tpq", u, v)
    raise TypeError(f"{type(op).__name__} is not block diagonal")
