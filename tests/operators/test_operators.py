"""Structured operators: products of every pair of kinds against dense products, the structure
and fma count of each product against the cost table of operators/_structure.py (recomputed here
from the table, not from the code) and against the multiplications counted in the jaxpr of the
product rule, transposes, the adjoint test, products with vectors, size errors."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest
from conftest import FLOAT64, assert_close, multiplications

from jacket.operators import Diagonal, DiagonalPlusLowRank, Matrix, Structure, as_operator, multiply

N, M, C = 4, 3, 5  # square operators are N×N; a dense left factor is M×N, a dense right one N×C
# "matrix_t" is a dense operator stored transposed (Matrix.transpose_of, as Dense's Jacobian wᵀ)
KINDS = ["matrix", "matrix_t", "diagonal", "dplr1", "dplr2"]
RANK = {"matrix": 0, "matrix_t": 0, "diagonal": 0, "dplr1": 1, "dplr2": 2}
DENSE = ("matrix", "matrix_t")


def make(kind, rng, side="left"):
    """An operator of ``kind``; dense ones are non-square (M×N on the left, N×C on the right) so
    that every size in the cost formulas is distinct."""
    def draw(*shape):
        return jnp.asarray(rng.standard_normal(shape))
    if kind == "matrix":
        return Matrix(draw(M, N) if side == "left" else draw(N, C))
    if kind == "matrix_t":
        return Matrix.transpose_of(draw(N, M) if side == "left" else draw(C, N))
    if kind == "diagonal":
        return Diagonal(draw(N))
    k = RANK[kind]
    return DiagonalPlusLowRank(draw(N), draw(N, k), draw(N, k))


def stored_size(kind, rows, cols):
    """Floats an operator stores: the table's "size of the other factor"."""
    if kind == "diagonal":
        return rows
    if kind in DENSE:
        return rows * cols
    return rows * (1 + 2 * RANK[kind])


def expected_product(a, b):
    """(kind, shape, rank, fma) of left-kind ``a`` @ right-kind ``b``, from the documented table."""
    m = M if a in DENSE else N
    c = C if b in DENSE else N
    k1, k2 = RANK[a], RANK[b]
    if a == "diagonal" and b == "diagonal":
        return "diagonal", (N, N), 0, N
    if a not in DENSE and b not in DENSE:  # a diagonal is rank 0: diag @ dplr scales d and U
        return "dplr", (N, N), k1 + k2, N * (1 + k1 + k2 + 2 * k1 * k2)
    if a == "diagonal":
        return ("matrix" if b in DENSE else "dplr"), (N, c), k2, stored_size(b, N, c)
    if b == "diagonal":
        return ("matrix" if a in DENSE else "dplr"), (m, N), k1, stored_size(a, m, N)
    if a not in DENSE and b not in DENSE:
        return "dplr", (N, N), k1 + k2, N * (1 + k1 + k2 + 2 * k1 * k2)
    if a not in DENSE:  # (diag + U Vᵀ) @ dense N×C
        return "matrix", (N, C), 0, N * C * (1 + 2 * k1)
    if b not in DENSE:  # dense M×N @ (diag + U Vᵀ)
        return "matrix", (M, N), 0, M * N * (1 + 2 * k2)
    return "matrix", (M, C), 0, M * N * C


PAIRS = list(itertools.product(KINDS, KINDS))


@pytest.mark.parametrize("a_kind,b_kind", PAIRS, ids=[f"{a}@{b}" for a, b in PAIRS])
def test_product_matches_dense_structure_and_cost(a_kind, b_kind, rng):
    a, b = make(a_kind, rng, "left"), make(b_kind, rng, "right")
    product = a @ b
    assert_close(product.to_dense(), a.to_dense() @ b.to_dense(), FLOAT64)

    structure, fma = a.structure.matmul(b.structure)
    assert product.structure == structure
    kind, shape, rank, expected_fma = expected_product(a_kind, b_kind)
    assert (structure.kind, structure.shape, structure.rank) == (kind, shape, rank)
    assert fma == expected_fma
    assert a.fma(b) == expected_fma

    # operators are pytrees: the product works under jit with the same structure
    jitted = jax.jit(lambda a, b: a @ b)(a, b)
    assert jitted.structure == structure
    assert_close(jitted.to_dense(), product.to_dense(), FLOAT64)


def test_low_rank_product_by_hand():
    """The rank-two product in closed form on a case small enough to check by eye."""
    a = DiagonalPlusLowRank(jnp.array([1.0, 2.0]), jnp.array([[1.0], [0.0]]), jnp.array([[0.0], [1.0]]))
    # a = [[1, 1], [0, 2]]; a @ a = [[1, 3], [0, 4]]
    assert_close((a @ a).to_dense(), jnp.array([[1.0, 3.0], [0.0, 4.0]]), FLOAT64)
    assert (a @ a).structure == Structure("dplr", 2, 2, 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_transpose_and_adjoint(kind, side, rng):
    a = make(kind, rng, side)
    dense = a.to_dense()
    assert_close(a.T.to_dense(), dense.T, FLOAT64)
    assert a.T.structure == a.structure.T
    assert a.T.shape == dense.T.shape
    # ⟨A v, w⟩ = ⟨v, Aᵀ w⟩
    v = jnp.asarray(rng.standard_normal(a.shape[1]))
    w = jnp.asarray(rng.standard_normal(a.shape[0]))
    assert_close(jnp.vdot(a @ v, w), jnp.vdot(v, a.T @ w), FLOAT64)


@pytest.mark.parametrize("kind", KINDS)
def test_products_with_arrays(kind, rng):
    a = make(kind, rng, "left")
    dense = a.to_dense()
    rows, cols = a.shape
    v, u = rng.standard_normal(cols), rng.standard_normal(rows)
    assert_close(a @ jnp.asarray(v), dense @ v, FLOAT64)
    assert_close(jnp.asarray(u) @ a, u @ dense, FLOAT64)
    assert_close(u @ a, u @ dense, FLOAT64)  # a NumPy array on the left defers to the operator
    right, left = rng.standard_normal((cols, 2)), rng.standard_normal((2, rows))
    assert_close(a @ jnp.asarray(right), dense @ right, FLOAT64)
    assert_close(jnp.asarray(left) @ a, left @ dense, FLOAT64)


# ---- size errors -------------------------------------------------------------------------
def test_operator_size_mismatch_names_both_shapes(rng):
    a = make("matrix", rng, "left")  # 3×4
    with pytest.raises(ValueError, match="cannot multiply a 3×4 operator by a 5×5 one: "
                                         "inner sizes 4 and 5 differ"):
        a @ Diagonal(jnp.ones(5))
    with pytest.raises(ValueError, match="inner sizes 4 and 3 differ"):
        a @ a
    with pytest.raises(ValueError, match="inner sizes 4 and 2 differ"):
        make("dplr1", rng) @ DiagonalPlusLowRank(jnp.ones(2), jnp.ones((2, 1)), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="inner sizes 4 and 5 differ"):
        a.fma(Diagonal(jnp.ones(5)))


@pytest.mark.parametrize("kind", KINDS)
def test_vector_of_the_wrong_length_is_rejected(kind, rng):
    """Every kind, including a length-1 vector that would otherwise broadcast silently."""
    a = make(kind, rng)
    for length in (1, a.shape[1] + 1):
        with pytest.raises(ValueError, match=f"inner sizes {a.shape[1]} and {length} differ"):
            a @ jnp.ones(length)
    with pytest.raises(ValueError, match=f"cannot multiply a 1×{N + 1} operator by a {a.shape[0]}×"):
        jnp.ones(N + 1) @ a


def test_as_operator():
    m = as_operator(jnp.ones((2, 3)))
    assert isinstance(m, Matrix) and m.structure == Structure("matrix", 2, 3)
    d = Diagonal(jnp.ones(2))
    assert as_operator(d) is d
    with pytest.raises(ValueError, match=r"expected a 2-D array or a LinearOperator, got shape \(3,\)"):
        as_operator(jnp.ones(3))


def test_structure_sizes_and_descriptions():
    assert Structure("matrix", 10, 784).describe() == "10×784"
    assert Structure("diagonal", 256, 256).describe() == "256×256 diag"
    assert Structure("dplr", 10, 10, 1).describe() == "10×10 diag+rank1"
    assert Structure("matrix", 3, 4).size == 12 == Structure("matrix", 3, 4).matvec_cost
    assert Structure("diagonal", 4, 4).size == 4
    assert Structure("dplr", 4, 4, 2).size == 4 * 5
    assert Structure("matrix", 3, 4).T == Structure("matrix", 4, 3)


@pytest.mark.parametrize("a_kind,b_kind", PAIRS, ids=[f"{a}@{b}" for a, b in PAIRS])
def test_product_rule_performs_the_multiplications_it_charges(a_kind, b_kind, rng):
    """The one product rule returns (product, fma); the planner charges that fma. Counting the
    multiplications in the rule's jaxpr shows the arithmetic and the charge agree exactly."""
    a, b = make(a_kind, rng, "left"), make(b_kind, rng, "right")
    product, fma = multiply(a, b)
    assert fma == a.structure.matmul(b.structure)[1]
    jaxpr = jax.make_jaxpr(lambda a, b: multiply(a, b)[0])(a, b).jaxpr
    assert multiplications(jaxpr) == fma
