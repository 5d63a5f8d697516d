"""Structured Jacobians: small linear operators, and the one product rule (result and cost).

A layer's Jacobian rarely needs to be a full matrix: an elementwise layer's is diagonal,
Softmax's is ``diag(s) - s sᵀ`` (diagonal plus rank one), LayerNorm's is diagonal plus rank
two, and any layer acting on the last axis of a ``(T, d)`` sequence is block diagonal, one block
per position (Dense's is ``I_T ⊗ wᵀ``). Keeping that structure makes products cheaper, and the
planner needs the cost of every product before any array exists. So there are two levels:

* :class:`Structure` (``_structure.py``): static kind, shape, rank and blocks;
  ``a.matmul(b)`` gives the structure of the product and its fma, the one cost rule, which the
  planner's dynamic programme also evaluates (vectorised over sub-chains).
* :class:`Matrix`, :class:`Diagonal`, :class:`DiagonalPlusLowRank` (``_operators.py``),
  :class:`Kronecker` and :class:`BlockDiagonal` (``_blocks.py``) hold arrays; :func:`multiply`
  (``_product.py``) multiplies two of them and returns ``(product, fma)``, and a test counts the
  multiplications in its jaxpr against that fma for every pair of kinds.
"""
from ._blocks import BlockDiagonal, Kronecker
from ._operators import Diagonal, DiagonalPlusLowRank, LinearOperator, Matrix, as_operator, blocks_plus_low_rank
from ._product import multiply
from ._structure import Structure
from ._sum import add, concatenate, plus_identity

__all__ = ["Structure", "LinearOperator", "Matrix", "Diagonal", "DiagonalPlusLowRank", "Kronecker", "BlockDiagonal",
           "as_operator", "multiply", "add", "plus_identity", "concatenate", "blocks_plus_low_rank"]
