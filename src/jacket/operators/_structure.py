"""Static structure of an operator, and the cost rule of a product of two operators.

Kinds: ``"matrix"`` (dense), ``"diagonal"``, ``"dplr"`` (diagonal plus ``U Vᵀ`` of rank r), each
optionally **block diagonal**: ``blocks = T`` equal blocks along the diagonal, one per position
of a ``(T, d)`` sequence (a layer acting on the last axis maps each position alone). A dense
block diagonal is ``I_T ⊗ B`` when every block is the same (``shared``: Dense's ``wᵀ``, one
block stored); a dplr one has rank r per block. A diagonal is block diagonal for any T, and
combines with any of them.

Cost conventions (fma = multiply-adds). ``matvec`` is the cost of one vector through an operator
(either side): ``m·n`` dense, ``n`` diagonal, ``n(1 + 2r)`` dplr of rank r per block, ``m·n/T``
block diagonal (``T`` blocks of ``m/T × n/T``, shared or not: each position is multiplied).

=============================================  ======================================================
product                                        cost
=============================================  ======================================================
dense (a×b) @ dense (b×c)                      a·b·c
dense (m×n) @ S, S @ dense (n×c)               m·matvec(S), c·matvec(S)
diagonal @ diagonal                            n
dplr r₁ @ dplr r₂ (T blocks each, or none)     n·(1 + r₁ + r₂ + 2r₁r₂), rank r₁ + r₂ per block
blocks (T: p×q) @ blocks (T: q×s)              T·p·q·s (shared @ shared: p·q·s, shared)
blocks (p×q) @ dplr r (q×q) and the mirror     T·p·q·(1 + 2r) (a diagonal: r = 0)
structured operands with different T           both unblocked first (a dplr's blocks become one
                                               dplr of rank T·r, dense blocks a dense matrix)
=============================================  ======================================================

Sums (the Jacobians of blocks: ``Residual``'s ``I + J_f``, ``Parallel``'s ``Σ J_k``) cost one add
per stored float of the result: ``n`` when both terms are diagonal or dplr (low-rank factors
concatenated, ranks add), the result's size for block-diagonal matrices, ``m·n`` when one term is
dense.

These are the multiplications ``_product.py`` performs (tests/operators/test_operators.py counts
them in the jaxpr); the derivation of the low-rank product is in ``notes/cost-model.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Structure", "MATRIX", "DIAGONAL", "LOWRANK"]

MATRIX, DIAGONAL, LOWRANK = "matrix", "diagonal", "dplr"


@dataclass(frozen=True)
class Structure:
    """Static description of a linear operator: ``kind``, ``shape = (rows, cols)``, ``rank`` (of
    each block, for ``"dplr"``), ``blocks`` (T equal diagonal blocks; 1: none) and ``shared``
    (every block the same, ``I_T ⊗ B``: one block stored). Diagonal and dplr operators are square.
    """

    kind: str
    rows: int
    cols: int
    rank: int = 0
    blocks: int = 1
    shared: bool = False

    def __post_init__(self):
        if self.kind not in (MATRIX, DIAGONAL, LOWRANK):
            raise ValueError(f"Structure kind must be 'matrix', 'diagonal' or 'dplr', got {self.kind!r}")
        if self.kind == DIAGONAL:  # a diagonal is block diagonal for every T: kept free of blocks
            if self.rank:
                raise ValueError(f"a diagonal Structure has no rank, got rank={self.rank} (a diagonal plus a rank-"
                                 f"{self.rank} product is kind 'dplr')")
            object.__setattr__(self, "blocks", 1)
        if self.kind == LOWRANK and self.rank < 1:
            raise ValueError(f"a 'dplr' Structure needs rank >= 1, got {self.rank} (rank 0 is kind 'diagonal')")
        if self.blocks < 1 or self.rows % self.blocks or self.cols % self.blocks:
            raise ValueError(f"{self.blocks} blocks do not divide a {self.rows}×{self.cols} operator")
        if self.blocks == 1 or self.kind != MATRIX:
            object.__setattr__(self, "shared", False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def dense_plain(self) -> bool:
        """A dense matrix without blocks: what the planner's dense products take."""
        return self.kind == MATRIX and self.blocks == 1

    @property
    def block_shape(self) -> tuple[int, int]:
        return (self.rows // self.blocks, self.cols // self.blocks)

    @property
    def size(self) -> int:
        """Floats stored by an operator of this structure."""
        if self.kind == DIAGONAL:
            return self.rows
        if self.kind == LOWRANK:
            return self.rows * (1 + 2 * self.rank)
        p, q = self.block_shape
        return p * q * (1 if self.shared else self.blocks)

    @property
    def matvec_cost(self) -> int:
        """fma to multiply one vector by this operator (either side)."""
        if self.kind == DIAGONAL:
            return self.rows
        if self.kind == LOWRANK:
            return self.rows * (1 + 2 * self.rank)
        return self.rows * self.cols // self.blocks

    @property
    def T(self) -> "Structure":
        return Structure(self.kind, self.cols, self.rows, self.rank, self.blocks, self.shared)

    def dense(self) -> "Structure":
        return Structure(MATRIX, self.rows, self.cols)

    def describe(self) -> str:
        """Short text such as ``10×784``, ``256×256 diag``, ``10×10 diag+rank1`` or
        ``1024×512 16 blocks`` (``I⊗B`` when shared)."""
        text = f"{self.rows}×{self.cols}"
        blocks = f" {self.blocks} blocks" if self.blocks > 1 else ""
        if self.kind == DIAGONAL:
            return text + " diag"
        if self.kind == LOWRANK:
            return text + f" diag+rank{self.rank}" + (f" per block,{blocks}" if blocks else "")
        if self.shared:
            return text + f" I{self.blocks}⊗B"
        return text + blocks

    @staticmethod
    def of_rank(n: int, rank: int, blocks: int = 1) -> "Structure":
        """The square diagonal (rank 0) or dplr structure with ``rank`` per block."""
        return Structure(DIAGONAL, n, n) if rank == 0 else Structure(LOWRANK, n, n, rank, blocks)

    def unblocked(self) -> "Structure":
        """The same operator without blocks: dense blocks as a dense matrix, a dplr's T blocks of
        rank r as one dplr of rank T·r (their factors embedded, no arithmetic)."""
        if self.blocks == 1:
            return self
        if self.kind == LOWRANK:
            return Structure(LOWRANK, self.rows, self.cols, self.rank * self.blocks)
        return Structure(MATRIX, self.rows, self.cols)

    def compatible(self, other: "Structure") -> bool:
        """Whether a product or sum of the two keeps block structure: the same block count, or a
        diagonal on either side."""
        return self.kind == DIAGONAL or other.kind == DIAGONAL or self.blocks == other.blocks

    def add(self, other: "Structure") -> tuple["Structure", int]:
        """Structure of ``self + other`` and its cost (one add per float of the result)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot add a {self.rows}×{self.cols} operator to a {other.rows}×{other.cols} one")
        if not self.compatible(other):
            return self.unblocked().add(other.unblocked())
        if self.dense_plain or other.dense_plain:
            return Structure(MATRIX, self.rows, self.cols), self.rows * self.cols
        blocks = max(self.blocks, other.blocks)
        if MATRIX in (self.kind, other.kind):
            both_shared = self.shared and other.shared
            result = Structure(MATRIX, self.rows, self.cols, 0, blocks, both_shared)
            return result, result.size
        return Structure.of_rank(self.rows, self.rank + other.rank, blocks), self.rows

    def plus_identity(self) -> tuple["Structure", int]:
        """Structure of ``I + self`` (square) and its cost: one add per diagonal entry (per
        block entry of a shared block)."""
        if self.rows != self.cols:
            raise ValueError(f"I + J needs a square J, got {self.rows}×{self.cols}")
        return self, self.block_shape[0] if self.shared else self.rows

    def matmul(self, other: "Structure") -> tuple["Structure", int]:
        """Structure of ``self @ other`` and its cost in fma (the table above)."""
        if self.cols != other.rows:
            raise ValueError(f"cannot multiply a {self.rows}×{self.cols} operator by a "
                             f"{other.rows}×{other.cols} one: inner sizes {self.cols} and {other.rows} differ")
        m, k, n = self.rows, self.cols, other.cols
        if self.dense_plain and other.dense_plain:
            return Structure(MATRIX, m, n), m * k * n
        if not self.compatible(other):
            return self.unblocked().matmul(other.unblocked())
        if self.dense_plain:
            return Structure(MATRIX, m, n), m * other.matvec_cost
        if other.dense_plain:
            return Structure(MATRIX, m, n), n * self.matvec_cost
        if self.kind == DIAGONAL and other.kind == DIAGONAL:
            return self, m
        blocks = max(self.blocks, other.blocks)
        if self.kind != MATRIX and other.kind != MATRIX:  # dplr or diagonal, per block
            r1, r2 = self.rank, other.rank
            return Structure.of_rank(m, r1 + r2, blocks), m * (1 + r1 + r2 + 2 * r1 * r2)
        if self.kind == MATRIX and other.kind == MATRIX:
            p, q, s = m // blocks, k // blocks, n // blocks
            shared = self.shared and other.shared
            return Structure(MATRIX, m, n, 0, blocks, shared), p * q * s * (1 if shared else blocks)
        if self.kind == MATRIX:  # blocks @ dplr or diagonal
            return Structure(MATRIX, m, n, 0, blocks), m * k // blocks * (1 + 2 * other.rank)
        return Structure(MATRIX, m, n, 0, blocks), k * n // blocks * (1 + 2 * self.rank)
