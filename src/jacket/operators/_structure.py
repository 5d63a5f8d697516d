"""Static structure of an operator, and the cost rule of a product of two operators.

Cost conventions (fma = multiply-adds), with a structured operator of rank r (0: diagonal,
r ≥ 1: diagonal plus ``U Vᵀ`` of rank r; both square, n × n):

=====================================  ====================================
product                                cost
=====================================  ====================================
dense (a×b) @ dense (b×c)              a·b·c
structured (n, rank r) @ dense n×c     n·c·(1 + 2r)      (diagonal: n·c)
dense m×n @ structured (n, rank r)     m·n·(1 + 2r)
structured r₁ @ structured r₂          n·(1 + r₁ + r₂ + 2r₁r₂), rank r₁ + r₂
=====================================  ====================================

Sums (the Jacobians of blocks: ``Residual``'s ``I + J_f``, ``Parallel``'s ``Σ J_k``) cost one add
per stored float of the result: ``n`` when both terms are structured (the low-rank factors are
concatenated, ranks add), ``m·n`` when one is dense.

These are the multiplications ``_product.py`` performs (tests/operators/test_operators.py counts them in
the jaxpr); the derivation of the low-rank product is in ``notes/cost-model.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Structure", "product_fma", "DENSE_RANK", "MATRIX", "DIAGONAL", "LOWRANK"]

MATRIX, DIAGONAL, LOWRANK = "matrix", "diagonal", "dplr"
DENSE_RANK = -1  # the rank code of a dense operator in product_fma (0: diagonal, r ≥ 1: dplr)


def product_fma(rows, inner, cols, rank_left, rank_right):
    """fma of ``(rows × inner) @ (inner × cols)`` for operators with rank codes ``rank_left``,
    ``rank_right`` (``DENSE_RANK``, 0 or r ≥ 1). Elementwise on numpy arrays, as the planner
    evaluates it for all sub-chains of one length at once; Python ints give a Python int."""
    rows, inner, cols, r1, r2 = (np.asarray(a, dtype=np.int64) for a in (rows, inner, cols, rank_left, rank_right))
    dense1, dense2 = r1 < 0, r2 < 0
    cost = np.where(dense1 & dense2, rows * inner * cols,
                    np.where(dense2, inner * cols * (1 + 2 * r1),
                             np.where(dense1, rows * inner * (1 + 2 * r2),
                                      inner * (1 + r1 + r2 + 2 * r1 * r2))))
    return int(cost) if cost.ndim == 0 else cost


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
    def rank_code(self) -> int:
        """``DENSE_RANK`` for a dense operator, else the rank (0 for a diagonal)."""
        return DENSE_RANK if self.kind == MATRIX else (0 if self.kind == DIAGONAL else self.rank)

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

    @staticmethod
    def of_rank(n: int, rank: int) -> "Structure":
        """The square structured operator of rank code ``rank`` (0: diagonal)."""
        return Structure(DIAGONAL, n, n) if rank == 0 else Structure(LOWRANK, n, n, rank)

    def add(self, other: "Structure") -> tuple["Structure", int]:
        """Structure of ``self + other`` and its cost (one add per float of a dense result, one
        per diagonal entry of a structured one)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot add a {self.rows}×{self.cols} operator to a {other.rows}×{other.cols} one")
        r1, r2 = self.rank_code, other.rank_code
        if r1 >= 0 and r2 >= 0:
            return Structure.of_rank(self.rows, r1 + r2), self.rows
        return Structure(MATRIX, self.rows, self.cols), self.rows * self.cols

    def plus_identity(self) -> tuple["Structure", int]:
        """Structure of ``I + self`` (square) and its cost: ``n`` adds on the diagonal."""
        if self.rows != self.cols:
            raise ValueError(f"I + J needs a square J, got {self.rows}×{self.cols}")
        return self, self.rows

    def matmul(self, other: "Structure") -> tuple["Structure", int]:
        """Structure of ``self @ other`` and its cost in fma (:func:`product_fma`)."""
        if self.cols != other.rows:
            raise ValueError(f"cannot multiply a {self.rows}×{self.cols} operator by a "
                             f"{other.rows}×{other.cols} one: inner sizes {self.cols} and {other.rows} differ")
        r1, r2 = self.rank_code, other.rank_code
        fma = product_fma(self.rows, self.cols, other.cols, r1, r2)
        if r1 >= 0 and r2 >= 0:
            return Structure.of_rank(self.rows, r1 + r2), fma
        return Structure(MATRIX, self.rows, other.cols), fma
