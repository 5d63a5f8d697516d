"""The product rule: ``multiply(a, b) -> (a @ b, fma)``, keeping structure.

One function per pair of kinds, each returning the product with the fma of
:func:`~jacket.operators.product_fma` (tests/operators/test_operators.py counts the multiplications in each
function's jaxpr against it, so the executor's arithmetic and the planner's costs cannot drift).
"""
from __future__ import annotations

import jax.numpy as jnp

from ._operators import Diagonal, DiagonalPlusLowRank, LinearOperator, Matrix

__all__ = ["multiply"]


def _structured(op):
    """``(d, u, v)`` of a diagonal (rank 0: u and v are None) or diagonal-plus-low-rank operator."""
    if isinstance(op, Diagonal):
        return op.diagonal, None, None
    return op.diagonal, op.u, op.v


def _structured_structured(a, b):
    # (D1 + U1 V1ᵀ)(D2 + U2 V2ᵀ) = D1 D2 + (D1 U2 + U1 (V1ᵀ U2)) V2ᵀ + U1 (D2 V1)ᵀ
    # fma: n + n k2 + 2 n k1 k2 + n k1, the rank-0 terms dropping out for a diagonal factor.
    d1, u1, v1 = _structured(a)
    d2, u2, v2 = _structured(b)
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


def _structured_dense(a, b: Matrix):
    # (D + U Vᵀ) B: n c for the diagonal, 2 n k c for the low-rank part
    d, u, v = _structured(a)
    out = d[:, None] * b.matrix
    return Matrix(out if u is None else out + u @ (v.T @ b.matrix))


def _dense_structured(a: Matrix, b):
    # A (D + U Vᵀ): m n for the diagonal, 2 m n k for the low-rank part
    d, u, v = _structured(b)
    out = a.matrix * d[None, :]
    return Matrix(out if u is None else out + (a.matrix @ u) @ v.T)


def _dense_dense(a: Matrix, b: Matrix):
    return Matrix(a._contract(b))


def multiply(a: LinearOperator, b: LinearOperator) -> tuple[LinearOperator, int]:
    """``(a @ b, fma)`` for two operators; a clear error if the inner sizes differ."""
    structure, fma = a.structure.matmul(b.structure)  # checks sizes with a clear message
    dense_a, dense_b = isinstance(a, Matrix), isinstance(b, Matrix)
    if dense_a and dense_b:
        product = _dense_dense(a, b)
    elif dense_b:
        product = _structured_dense(a, b)
    elif dense_a:
        product = _dense_structured(a, b)
    else:
        product = _structured_structured(a, b)
    assert product.structure == structure, (product.structure, structure)
    return product, fma
