"""Structured Jacobians: small linear operators with products, transposes and fma counts.

A layer's Jacobian rarely needs to be a full matrix: an elementwise layer's is diagonal,
Softmax's is ``diag(s) - s sᵀ`` (diagonal plus rank one), LayerNorm's is diagonal plus rank
two. Keeping that structure makes products cheaper, and the planner needs to know the cost
of every product *before* any array exists. So there are two levels here:

* :class:`Structure` — static: kind, shape and rank. ``a.matmul(b)`` returns the structure
  of the product and its cost in fma (multiply-adds). The planner works with these alone.
* :class:`Matrix`, :class:`Diagonal`, :class:`DiagonalPlusLowRank` — the operators that hold
  arrays. Their ``@`` computes the product with the same structure and the same fma count
  as the static rule (``op.structure.matmul(other.structure)``). The one exception is
  conservative: a diagonal times a diagonal-plus-rank-k operator is charged the other factor's
  size, n(1 + 2k), as the cost convention below says, while the code does n(1 + k).

Cost conventions (fma), pinned by the planner's tests:

=====================================  ================================
product                                cost
=====================================  ================================
dense (a×b) @ dense (b×c)              a·b·c
diagonal @ anything, anything @ diag   size of the other factor
(diag + U Vᵀ) (n, rank k) @ dense n×c  n·c·(1 + 2k)
dense m×n @ (diag + U Vᵀ)              m·n·(1 + 2k)
(D₁ + U₁V₁ᵀ)(D₂ + U₂V₂ᵀ)              n·(1 + k₁ + k₂ + 2k₁k₂), rank k₁ + k₂
=====================================  ================================

The derivation of the low-rank product is in ``notes/cost-model.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

__all__ = ["Structure", "LinearOperator", "Matrix", "Diagonal", "DiagonalPlusLowRank", "as_operator"]

MATRIX, DIAGONAL, LOWRANK = "matrix", "diagonal", "dplr"


@dataclass(frozen=True)
class Structure:
    """Static description of a linear operator: ``kind``, ``shape = (rows, cols)``, ``rank``.

    ``kind`` is ``"matrix"`` (dense), ``"diagonal"`` or ``"dplr"`` (diagonal plus a rank-``rank``
    product ``U Vᵀ``). Diagonal and dplr operators are square.
    """

    kind: str
    rows: int
    cols: int
    rank: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def size(self) -> int:
        """Floats stored by an operator of this structure."""
        if self.kind == DIAGONAL:
            return self.rows
        if self.kind == LOWRANK:
            return self.rows * (1 + 2 * self.rank)
        return self.rows * self.cols

    @property
    def matvec_cost(self) -> int:
        """fma to multiply one vector by this operator (either side): one per stored float."""
        return self.size

    @property
    def T(self) -> "Structure":
        return Structure(self.kind, self.cols, self.rows, self.rank)

    def dense(self) -> "Structure":
        return Structure(MATRIX, self.rows, self.cols)

    def describe(self) -> str:
        """Short text such as ``10×784`` or ``256×256 diag`` or ``10×10 diag+rank1``."""
        text = f"{self.rows}×{self.cols}"
        if self.kind == DIAGONAL:
            return text + " diag"
        if self.kind == LOWRANK:
            return text + f" diag+rank{self.rank}"
        return text

    def matmul(self, other: "Structure") -> tuple["Structure", int]:
        """Structure of ``self @ other`` and its cost in fma."""
        if self.cols != other.rows:
            raise ValueError(f"cannot multiply a {self.rows}×{self.cols} operator by a "
                             f"{other.rows}×{other.cols} one: inner sizes {self.cols} and {other.rows} differ")
        m, n, c = self.rows, self.cols, other.cols
        a, b = self.kind, other.kind
        if a == DIAGONAL and b == DIAGONAL:
            return Structure(DIAGONAL, n, n), n
        if a == DIAGONAL:
            return other, other.size
        if b == DIAGONAL:
            return self, self.size
        if a == LOWRANK and b == LOWRANK:
            k1, k2 = self.rank, other.rank
            return Structure(LOWRANK, n, n, k1 + k2), n * (1 + k1 + k2 + 2 * k1 * k2)
        if a == LOWRANK:
            return Structure(MATRIX, n, c), n * c * (1 + 2 * self.rank)
        if b == LOWRANK:
            return Structure(MATRIX, m, n), m * n * (1 + 2 * other.rank)
        return Structure(MATRIX, m, c), m * n * c


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
            self.structure.matmul(other.structure)  # checks sizes with a clear message
            return _product(self, other)
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
    """``diag(d) + U Vᵀ`` with ``d`` of shape ``(n,)`` and ``U``, ``V`` of shape ``(n, k)``."""

    def __init__(self, diagonal, u, v):
        self.diagonal, self.u, self.v = diagonal, u, v
        n, k = u.shape[-2:]
        self.structure = Structure(LOWRANK, n, n, k)

    def to_dense(self):
        return jnp.diag(self.diagonal) + self.u @ self.v.T

    @property
    def T(self):
        return DiagonalPlusLowRank(self.diagonal, self.v, self.u)

    def tree_flatten(self):
        return (self.diagonal, self.u, self.v), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.diagonal, obj.u, obj.v = children
        shape = obj.u.shape[-2:] if hasattr(obj.u, "shape") else (0, 0)
        obj.structure = Structure(LOWRANK, shape[0], shape[0], shape[1])
        return obj


def as_operator(a) -> LinearOperator:
    """Wrap a 2-D array as :class:`Matrix`; operators pass through."""
    if isinstance(a, LinearOperator):
        return a
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D array or a LinearOperator, got shape {a.shape}")
    return Matrix(a)


def _product(a: LinearOperator, b: LinearOperator) -> LinearOperator:
    """``a @ b`` for operators, keeping structure (costs as in :meth:`Structure.matmul`)."""
    if isinstance(a, Diagonal) and isinstance(b, Diagonal):
        return Diagonal(a.diagonal * b.diagonal)
    if isinstance(a, Diagonal):
        if isinstance(b, Matrix):
            return Matrix(a.diagonal[:, None] * b.matrix)
        return DiagonalPlusLowRank(a.diagonal * b.diagonal, a.diagonal[:, None] * b.u, b.v)
    if isinstance(b, Diagonal):
        if isinstance(a, Matrix):
            return Matrix(a.matrix * b.diagonal[None, :])
        return DiagonalPlusLowRank(a.diagonal * b.diagonal, a.u, b.diagonal[:, None] * a.v)
    if isinstance(a, DiagonalPlusLowRank) and isinstance(b, DiagonalPlusLowRank):
        # (D1 + U1 V1ᵀ)(D2 + U2 V2ᵀ) = D1 D2 + (D1 U2 + U1 (V1ᵀ U2)) V2ᵀ + U1 (D2 V1)ᵀ
        u = jnp.concatenate([a.diagonal[:, None] * b.u + a.u @ (a.v.T @ b.u), a.u], axis=1)
        v = jnp.concatenate([b.v, b.diagonal[:, None] * a.v], axis=1)
        return DiagonalPlusLowRank(a.diagonal * b.diagonal, u, v)
    if isinstance(a, DiagonalPlusLowRank):
        return Matrix(a.diagonal[:, None] * b.matrix + a.u @ (a.v.T @ b.matrix))
    if isinstance(b, DiagonalPlusLowRank):
        return Matrix(a.matrix * b.diagonal[None, :] + (a.matrix @ b.u) @ b.v.T)
    return Matrix(a._contract(b))
