"""The operators that hold arrays: dense, diagonal, diagonal plus low rank. Pytrees, so they
pass through ``jax.jit`` and ``jax.vmap``; ``@`` multiplies with structure (``_product.py``)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._structure import DIAGONAL, LOWRANK, MATRIX, Structure

__all__ = ["LinearOperator", "Matrix", "Diagonal", "DiagonalPlusLowRank", "as_operator", "blocks_plus_low_rank"]


class LinearOperator:
    """Base class of the structured Jacobians. Subclasses hold arrays and are pytrees."""

    structure: Structure

    # NumPy arrays defer to us: ``ndarray @ op`` then reaches ``__rmatmul__`` instead of NumPy
    # trying (and failing) to treat the operator as an array.
    __array_ufunc__ = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.structure.shape

    @property
    def dtype(self):
        return self.to_dense().dtype

    def to_dense(self) -> jax.Array:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def T(self) -> "LinearOperator":  # pragma: no cover - abstract
        raise NotImplementedError

    def fma(self, other: "LinearOperator") -> int:
        """Cost in fma of ``self @ other``."""
        return self.structure.matmul(as_operator(other).structure)[1]

    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            from ._product import multiply
            return multiply(self, other)[0]
        other = jnp.asarray(other)
        if other.ndim == 1:
            # through the size check: a length-1 vector would otherwise broadcast silently
            return self.__matmul__(Matrix(other[:, None])).to_dense()[:, 0]
        return self.__matmul__(Matrix(other)).to_dense()

    def __rmatmul__(self, other):
        other = jnp.asarray(other)
        if other.ndim == 1:
            return (Matrix(other[None, :]) @ self).to_dense()[0]
        return (Matrix(other) @ self).to_dense()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.structure.describe()})"


@jax.tree_util.register_pytree_node_class
class Matrix(LinearOperator):
    """A dense ``(m, n)`` matrix.

    ``Matrix.transpose_of(a)`` is the matrix ``aᵀ`` without computing it: the array is stored as
    given and products contract it on the right axis with ``lax.dot_general``. A Dense layer's
    Jacobian ``wᵀ`` and a tangent sweep's result (one row per tangent) are stored this way, so
    XLA sees the arrays in the layout they were made in and never copies a transposed weight.
    """

    def __init__(self, matrix):
        self.stored, self.transposed = matrix, False
        self.structure = Structure(MATRIX, *matrix.shape[-2:])

    @classmethod
    def transpose_of(cls, a) -> "Matrix":
        """The operator ``aᵀ`` for a 2-D array ``a``, stored untransposed."""
        obj = cls(a)
        obj.transposed = True
        obj.structure = obj.structure.T
        return obj

    @property
    def matrix(self):
        return self.stored.T if self.transposed else self.stored

    def to_dense(self):
        return self.matrix

    @property
    def T(self):
        return Matrix(self.stored) if self.transposed else Matrix.transpose_of(self.stored)

    def _contract(self, other: "Matrix"):
        """``self @ other`` as one dot_general on the stored arrays."""
        lhs_axis = 0 if self.transposed else 1
        rhs_axis = 1 if other.transposed else 0
        return jax.lax.dot_general(self.stored, other.stored, (((lhs_axis,), (rhs_axis,)), ((), ())))

    def tree_flatten(self):
        return (self.stored,), self.transposed

    @classmethod
    def tree_unflatten(cls, transposed, children):
        obj = object.__new__(cls)
        obj.stored, = children
        obj.transposed = transposed
        shape = tuple(obj.stored.shape[-2:]) if hasattr(obj.stored, "shape") else (0, 0)
        obj.structure = Structure(MATRIX, *(shape[::-1] if transposed else shape))
        return obj


@jax.tree_util.register_pytree_node_class
class Diagonal(LinearOperator):
    """``diag(d)`` for a vector ``d`` of shape ``(n,)``."""

    def __init__(self, diagonal):
        self.diagonal = diagonal
        n = diagonal.shape[-1]
        self.structure = Structure(DIAGONAL, n, n)

    def to_dense(self):
        return jnp.diag(self.diagonal)

    @property
    def T(self):
        return self

    def tree_flatten(self):
        return (self.diagonal,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.diagonal, = children
        n = obj.diagonal.shape[-1] if hasattr(obj.diagonal, "shape") else 0
        obj.structure = Structure(DIAGONAL, n, n)
        return obj


@jax.tree_util.register_pytree_node_class
class DiagonalPlusLowRank(LinearOperator):
    """``diag(d) + U Vᵀ`` with ``d`` of shape ``(n,)`` and ``U``, ``V`` of shape ``(n, k)``; or block
    diagonal, ``⊕_t (diag(d_t) + U_t V_tᵀ)`` with ``U``, ``V`` of shape ``(T, n / T, k)`` (rank k per
    block: a last-axis layer on a ``(T, d)`` sequence)."""

    def __init__(self, diagonal, u, v):
        self.diagonal, self.u, self.v = diagonal, u, v
        self.structure = _dplr_structure(diagonal, u)

    @property
    def blocks(self) -> int:
        return self.structure.blocks

    def factors3(self):
        """``(d, U, V)`` with a block axis: ``(T, p)``, ``(T, p, k)``, ``(T, p, k)`` (T = 1 unblocked)."""
        count = self.blocks
        d = self.diagonal.reshape(count, -1)
        u, v = (a if a.ndim == 3 else a[None] for a in (self.u, self.v))
        return d, u, v

    def to_dense(self):
        if self.blocks == 1:
            return jnp.diag(self.diagonal) + self.u @ self.v.T
        d, u, v = self.factors3()
        blocks = jax.vmap(jnp.diag)(d) + jnp.einsum("tpk,tqk->tpq", u, v)
        return _block_diagonal_dense(blocks)

    @property
    def T(self):
        return DiagonalPlusLowRank(self.diagonal, self.v, self.u)

    def tree_flatten(self):
        return (self.diagonal, self.u, self.v), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.diagonal, obj.u, obj.v = children
        obj.structure = _dplr_structure(obj.diagonal, obj.u) if hasattr(obj.u, "shape") else \
            Structure(LOWRANK, 1, 1, 1)
        return obj


def _dplr_structure(diagonal, u) -> Structure:
    n = diagonal.shape[-1]
    if u.ndim == 3:
        return Structure(LOWRANK, n, n, u.shape[-1], u.shape[0])
    return Structure(LOWRANK, n, n, u.shape[-1])


def _block_diagonal_dense(blocks):
    """The dense matrix with the ``(T, p, q)`` blocks on its diagonal (placed, not multiplied)."""
    count, p, q = blocks.shape
    if count == 1:
        return blocks[0]
    index = jnp.arange(count)
    out = jnp.zeros((count, p, count, q), blocks.dtype).at[index, :, index, :].set(blocks)
    return out.reshape(count * p, count * q)


def unblock(op) -> LinearOperator:
    """``op`` without blocks (``Structure.unblocked``): a block-diagonal dplr as one dplr whose
    factors are embedded block by block (zeros elsewhere), dense blocks as a dense matrix."""
    if op.structure.blocks == 1:
        return op
    if isinstance(op, DiagonalPlusLowRank):
        _, u, v = op.factors3()
        count, p, k = u.shape
        index = jnp.arange(count)

        def embed(a):  # (T, p, k) -> (T·p, T·k), zero off the diagonal blocks
            out = jnp.zeros((count, p, count, k), a.dtype).at[index, :, index, :].set(a)
            return out.reshape(count * p, count * k)
        return DiagonalPlusLowRank(op.diagonal, embed(u), embed(v))
    return Matrix(op.to_dense())


def as_operator(a) -> LinearOperator:
    """Wrap a 2-D array as :class:`Matrix`; operators pass through."""
    if isinstance(a, LinearOperator):
        return a
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array or a LinearOperator, got shape {a.shape}")
    return Matrix(a)


def blocks_plus_low_rank(diagonal, u, v) -> DiagonalPlusLowRank:
    """The block-diagonal operator ``⊕_t (diag(d_t) + U_t V_tᵀ)`` over the leading axis of
    ``diagonal (T, n)``, ``u (T, n, k)``, ``v (T, n, k)``: rank k per block (row-major flattening,
    block t at rows t·n … t·n + n - 1). The Jacobian of a last-axis layer (softmax, LayerNorm) on a
    ``(T, n)`` input; with T = 1, the vector case (plain ``diag + U Vᵀ``)."""
    if u.shape[0] == 1:
        return DiagonalPlusLowRank(diagonal.reshape(-1), u[0], v[0])
    return DiagonalPlusLowRank(diagonal.reshape(-1), u, v)
