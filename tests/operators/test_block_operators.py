"""Block-diagonal operators (one block per position of a sequence): every product and sum with
every other kind equals the dense computation, keeps the structure :class:`Structure` promises,
and performs exactly the multiplications it counts (its jaxpr)."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import multiplications

from jacket.operators import (BlockDiagonal, Diagonal, DiagonalPlusLowRank, Kronecker, Matrix, Structure, add,
                              multiply, plus_identity)

T, P = 3, 4  # positions and features of the square operators


def make(kind, rng, rows=T * P, cols=T * P, count=T):
    """An operator of ``kind`` (``rows × cols``; block kinds with ``count`` blocks)."""
    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape))
    if kind == "dense":
        return Matrix(normal(rows, cols))
    if kind == "dense-t":
        return Matrix.transpose_of(normal(cols, rows))
    if kind == "diag":
        return Diagonal(normal(rows))
    if kind == "dplr":
        return DiagonalPlusLowRank(normal(rows), normal(rows, 2), normal(rows, 2))
    if kind == "dplr-blocks":
        return DiagonalPlusLowRank(normal(rows), normal(count, rows // count, 2), normal(count, rows // count, 2))
    if kind == "kron":
        return Kronecker(normal(rows // count, cols // count), count)
    if kind == "kron-t":
        return Kronecker(normal(cols // count, rows // count), count, transposed=True)
    if kind == "blocks":
        return BlockDiagonal(normal(count, rows // count, cols // count))
    raise ValueError(kind)


KINDS = ["dense", "dense-t", "diag", "dplr", "dplr-blocks", "kron", "kron-t", "blocks"]


@pytest.mark.parametrize("left, right", list(itertools.product(KINDS, KINDS)))
def test_products_equal_dense_keep_structure_and_count_their_multiplications(left, right):
    rng = np.random.default_rng(len(left) * 31 + len(right))
    a, b = make(left, rng), make(right, rng)
    product, fma = multiply(a, b)
    np.testing.assert_allclose(product.to_dense(), a.to_dense() @ b.to_dense(), rtol=1e-10, atol=1e-10)
    assert product.structure == a.structure.matmul(b.structure)[0]
    jaxpr = jax.make_jaxpr(lambda x, y: multiply(x, y)[0])(a, b).jaxpr
    assert multiplications(jaxpr) == fma, (left, right, a.structure, b.structure)


@pytest.mark.parametrize("left, right", [("blocks", "dense"), ("kron", "dense"), ("dense", "kron-t"),
                                         ("kron-t", "blocks"), ("blocks", "kron")])
def test_rectangular_blocks_multiply_block_by_block(left, right):
    rng = np.random.default_rng(7)
    a = make(left, rng, rows=T * 2, cols=T * 5) if left != "dense" else make(left, rng, rows=6, cols=T * 5)
    b = make(right, rng, rows=T * 5, cols=T * 3) if right != "dense" else make(right, rng, rows=T * 5, cols=4)
    product, fma = multiply(a, b)
    np.testing.assert_allclose(product.to_dense(), a.to_dense() @ b.to_dense(), rtol=1e-10, atol=1e-10)
    jaxpr = jax.make_jaxpr(lambda x, y: multiply(x, y)[0])(a, b).jaxpr
    assert multiplications(jaxpr) == fma


@pytest.mark.parametrize("left, right", [("kron", "blocks"), ("dplr-blocks", "blocks"), ("dplr-blocks", "dplr-blocks")])
def test_blocks_of_different_counts_are_unblocked_first(left, right):
    rng = np.random.default_rng(3)
    a, b = make(left, rng, count=3), make(right, rng, rows=12, cols=12, count=2)
    product, fma = multiply(a, b)
    assert (product.structure, fma) == a.structure.unblocked().matmul(b.structure.unblocked())
    np.testing.assert_allclose(product.to_dense(), a.to_dense() @ b.to_dense(), rtol=1e-10, atol=1e-10)
    jaxpr = jax.make_jaxpr(lambda x, y: multiply(x, y)[0])(a, b).jaxpr
    assert multiplications(jaxpr) == fma


@pytest.mark.parametrize("left, right", list(itertools.combinations_with_replacement(
    ["dense", "diag", "dplr-blocks", "kron", "blocks"], 2)))
def test_sums_and_the_identity_keep_block_structure(left, right):
    rng = np.random.default_rng(5)
    a, b = make(left, rng), make(right, rng)
    total, cost = add(a, b)
    np.testing.assert_allclose(total.to_dense(), a.to_dense() + b.to_dense(), rtol=1e-12, atol=1e-12)
    assert (total.structure, cost) == a.structure.add(b.structure)
    shifted = plus_identity(a)
    assert shifted.structure == a.structure.plus_identity()[0]
    np.testing.assert_allclose(shifted.to_dense(), a.to_dense() + np.eye(T * P), rtol=1e-12, atol=1e-12)


def test_kronecker_stores_one_block_and_costs_per_position():
    s = Structure("matrix", 16 * 32, 16 * 64, blocks=16, shared=True)
    assert s.size == 32 * 64 and s.matvec_cost == 16 * 32 * 64
    assert s.describe() == "512×1024 I16⊗B"
    assert Structure("dplr", 64, 64, 2, blocks=4).size == 64 * 5  # rank 2 per block, not 2·4

