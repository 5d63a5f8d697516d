"""The product rule: ``multiply(a, b) -> (a @ b, fma)``, keeping structure.

One function per pair of kinds, each performing exactly the multiplications that
:meth:`Structure.matmul` counts (tests/operators/test_operators.py counts the multiplications in
each function's jaxpr against it), so the executor's arithmetic and the planner's costs cannot
drift. Block-diagonal operands (``T`` positions of a sequence) are multiplied block by block
with ``einsum`` over their stored arrays; a diagonal combines with any of them.
"""
from __future__ import annotations

import jax.numpy as jnp

from ._blocks import BlockDiagonal, Kronecker
from ._operators import Diagonal, DiagonalPlusLowRank, LinearOperator, Matrix, unblock
from ._structure import DIAGONAL, MATRIX

__all__ = ["multiply"]


def _low_rank(op, count):
    """``(d, u, v)`` of a diagonal (u, v None) or dplr operator, with a block axis of ``count``."""
    if isinstance(op, Diagonal):
        return op.diagonal.reshape(count, -1), None, None
    return op.factors3()


def _plain(op):
    """``(d, u, v)`` of an unblocked diagonal (u, v None) or dplr operator, as stored."""
    if isinstance(op, Diagonal):
        return op.diagonal, None, None
    return op.diagonal, op.u, op.v


def _structured_structured_plain(a, b):
    # the same products as below without a block axis (T = 1): no reshapes for XLA to carry
    d1, u1, v1 = _plain(a)
    d2, u2, v2 = _plain(b)
    d = d1 * d2
    us, vs = [], []
    if u2 is not None:
        us.append(d1[:, None] * u2 + (u1 @ (v1.T @ u2) if u1 is not None else 0))
        vs.append(v2)
    if u1 is not None:
        us.append(u1)
        vs.append(d2[:, None] * v1)
    if not us:
        return Diagonal(d)
    return DiagonalPlusLowRank(d, jnp.concatenate(us, axis=1) if len(us) > 1 else us[0],
                               jnp.concatenate(vs, axis=1) if len(vs) > 1 else vs[0])


def _structured_structured(a, b, count):
    # per block: (D1 + U1 V1ᵀ)(D2 + U2 V2ᵀ) = D1 D2 + (D1 U2 + U1 (V1ᵀ U2)) V2ᵀ + U1 (D2 V1)ᵀ
    # fma: p + p k2 + 2 p k1 k2 + p k1 per block, the rank-0 terms dropping out for a diagonal.
    if count == 1:
        return _structured_structured_plain(a, b)
    d1, u1, v1 = _low_rank(a, count)
    d2, u2, v2 = _low_rank(b, count)
    d = (d1 * d2).reshape(-1)
    us, vs = [], []
    if u2 is not None:
        term = d1[:, :, None] * u2
        if u1 is not None:
            term = term + jnp.einsum("tpa,tab->tpb", u1, jnp.einsum("tpa,tpb->tab", v1, u2))
        us.append(term)
        vs.append(v2)
    if u1 is not None:
        us.append(u1)
        vs.append(d2[:, :, None] * v1)
    if not us:
        return Diagonal(d)
    u = jnp.concatenate(us, axis=2) if len(us) > 1 else us[0]
    v = jnp.concatenate(vs, axis=2) if len(vs) > 1 else vs[0]
    return DiagonalPlusLowRank(d, u, v) if count > 1 else DiagonalPlusLowRank(d, u[0], v[0])


def _dense_times(a: Matrix, b: LinearOperator) -> Matrix:
    # A S: one row of A at a time through S, m · matvec(S)
    m = a.shape[0]
    if isinstance(b, Diagonal):
        return Matrix(a.matrix * b.diagonal[None, :])
    if isinstance(b, DiagonalPlusLowRank) and b.blocks == 1:
        out = a.matrix * b.diagonal[None, :]
        return Matrix(out + (a.matrix @ b.u) @ b.v.T)
    if isinstance(b, DiagonalPlusLowRank):
        d, u, v = b.factors3()
        count, p, _ = u.shape
        a3 = a.matrix.reshape(m, count, p)
        low = jnp.einsum("mtk,tqk->mtq", jnp.einsum("mtp,tpk->mtk", a3, u), v)
        return Matrix((a3 * d[None] + low).reshape(m, -1))
    count = b.structure.blocks
    a3 = a.matrix.reshape(m, count, -1)
    if isinstance(b, Kronecker):
        spec, block = b.einsum_block("p", "q")
        return Matrix(jnp.einsum(f"mtp,{spec}->mtq", a3, block).reshape(m, -1))
    return Matrix(jnp.einsum("mtp,tpq->mtq", a3, b.stored).reshape(m, -1))


def _times_dense(a: LinearOperator, b: Matrix) -> Matrix:
    # S B: one column of B at a time, c · matvec(S)
    c = b.shape[1]
    if isinstance(a, Diagonal):
        return Matrix(a.diagonal[:, None] * b.matrix)
    if isinstance(a, DiagonalPlusLowRank) and a.blocks == 1:
        out = a.diagonal[:, None] * b.matrix
        return Matrix(out + a.u @ (a.v.T @ b.matrix))
    if isinstance(a, DiagonalPlusLowRank):
        d, u, v = a.factors3()
        count, p, _ = u.shape
        b3 = b.matrix.reshape(count, p, c)
        low = jnp.einsum("tpk,tkc->tpc", u, jnp.einsum("tpk,tpc->tkc", v, b3))
        return Matrix((d[:, :, None] * b3 + low).reshape(-1, c))
    if isinstance(a, Kronecker):
        spec, block = a.einsum_block("p", "q")
        b3 = b.matrix.reshape(a.count, -1, c)
        return Matrix(jnp.einsum(f"{spec},tqc->tpc", block, b3).reshape(-1, c))
    count = a.structure.blocks
    return Matrix(jnp.einsum("tpq,tqc->tpc", a.stored, b.matrix.reshape(count, -1, c)).reshape(-1, c))


def _blocks_blocks(a, b):
    # T·p·q·s, or p·q·s for two shared blocks (the product is shared)
    if isinstance(a, Kronecker) and isinstance(b, Kronecker):
        left, x = a.einsum_block("p", "q")
        right, y = b.einsum_block("q", "s")
        return Kronecker(jnp.einsum(f"{left},{right}->ps", x, y), a.count)
    if isinstance(a, Kronecker):
        spec, block = a.einsum_block("p", "q")
        return BlockDiagonal(jnp.einsum(f"{spec},tqs->tps", block, b.stored))
    if isinstance(b, Kronecker):
        spec, block = b.einsum_block("q", "s")
        return BlockDiagonal(jnp.einsum(f"tpq,{spec}->tps", a.stored, block))
    return BlockDiagonal(jnp.einsum("tpq,tqs->tps", a.stored, b.stored))


def _operand(op, rows: str, cols: str):
    """A block-diagonal operand for einsum: ``(spec, array)``, the block axis ``t`` omitted when shared."""
    if isinstance(op, Kronecker):
        return op.einsum_block(rows, cols)
    return "t" + rows + cols, op.stored


def _blocks_structured(a, b, count):
    # B (D + U Vᵀ) per block: B D + (B U) Vᵀ, T·p·q·(1 + 2r)
    spec, block = _operand(a, "p", "q")
    d, u, v = _low_rank(b, count)
    out = jnp.einsum(f"{spec},tq->tpq", block, d) if spec[0] != "t" else block * d[:, None, :]
    if u is not None:
        out = out + jnp.einsum("tpk,tqk->tpq", jnp.einsum(f"{spec},tqk->tpk", block, u), v)
    return BlockDiagonal(out)


def _structured_blocks(a, b, count):
    # (D + U Vᵀ) B per block: D B + U (Vᵀ B), T·q·s·(1 + 2r)
    spec, block = _operand(b, "q", "s")
    d, u, v = _low_rank(a, count)
    out = jnp.einsum(f"tq,{spec}->tqs", d, block) if spec[0] != "t" else d[:, :, None] * block
    if u is not None:
        out = out + jnp.einsum("tqk,tks->tqs", u, jnp.einsum("tqk,{0}->tks".format(spec), v, block))
    return BlockDiagonal(out)


def _dense_dense(a: Matrix, b: Matrix):
    return Matrix(a._contract(b))


def multiply(a: LinearOperator, b: LinearOperator) -> tuple[LinearOperator, int]:
    """``(a @ b, fma)`` for two operators; a clear error if the inner sizes differ."""
    structure, fma = a.structure.matmul(b.structure)  # checks sizes with a clear message
    sa, sb = a.structure, b.structure
    if not sa.compatible(sb):
        a, b = unblock(a), unblock(b)
        sa, sb = a.structure, b.structure
    if sa.dense_plain and sb.dense_plain:
        product = _dense_dense(a, b)
    elif sa.dense_plain:
        product = _dense_times(a, b)
    elif sb.dense_plain:
        product = _times_dense(a, b)
    else:
        count = max(sa.blocks, sb.blocks)
        if sa.kind != MATRIX and sb.kind != MATRIX:
            product = Diagonal(a.diagonal * b.diagonal) if sa.kind == sb.kind == DIAGONAL else \
                _structured_structured(a, b, count)
        elif sa.kind == MATRIX and sb.kind == MATRIX:
            product = _blocks_blocks(a, b)
        elif sa.kind == MATRIX:
            product = _blocks_structured(a, b, count)
        else:
            product = _structured_blocks(a, b, count)
    assert product.structure == structure, (product.structure, structure)
    return product, fma
