"""The optimal-plan dynamic programme over sub-chains ``J_j ⋯ J_i`` (see ``_plan.py``).

Per sub-chain it keeps two int64 keys, ``fma · scale + steps``: the cheapest dense result and,
when every factor is structured, the cheapest structured one. Intervals of one length (a
diagonal of the tables) are done together with numpy, on zero-copy strided views:

* TAN / ADJ from unit vectors: O(1) per interval from prefix sums of the rule costs.
* TAN with a seed (push J_k ⋯ J_i through k+1..j) costs ``best[i, k] − c_i P_k + c_i P_j``
  (``c_i`` the seed count, ``P`` the prefix sums of JVP costs): its minimum over k is a running
  minimum over the row i, updated with one new split per diagonal, O(1) per interval. ADJ with
  a seed likewise down the column j.
* products with a structured half: that half lies in one run of structured factors, so only
  the splits within the longest run (R factors) are tried, O(min(L, R)) per interval; the
  structured result itself likewise, only on diagonals L ≤ R.
* dense @ dense: all L − 1 splits, ``m[i, k] + m[k+1, j] + n_j n_k n_{i−1}``, four passes over
  a (intervals × splits) block: N³/6 element operations in all.

So O(N³) in the one product term (the matrix-chain recurrence, unpruned) and O(N² R)
otherwise; every minimum is taken over the same candidates as the plain recurrence, with the
same tie-break (move order, then the smallest split), so the plan is the one it gives. With
R = N (structured factors only) the structured moves are O(N³) too, with a few times the
constant: about 3 s for 1000 LayerNorm and Softmax layers, against 0.7 s for 1000 mixed ones.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._model import Model
from ._nodes import Node

__all__ = ["optimal_plan"]

_INF = np.iinfo(np.int64).max // 4

# Move codes stored by the DP, per interval, for the dense result.
# For sub-chains of two or more factors, equal keys go to the smallest code.
_TAN, _ADJ, _MUL_MM, _MUL_MS, _MUL_SM, _PUSH, _PULL, _JAC = range(8)


def optimal_plan(model: Model) -> Node:
    """The cheapest plan tree (in fma) over the move set described in ``_plan.py``'s docstring.

    Among plans of equal cost the one with fewest steps wins: the DP minimises the key
    ``fma · scale + steps``, exact in int64 for chains up to about 10¹⁵ fma.
    Time O(N³/6) int64 operations for the dense products, O(N² R) for the rest (R: the longest
    run of structured factors); memory 7 (N+2)² int64 tables.
    """
    n, d = model.n, np.asarray(model.dims, dtype=np.int64)
    per_device = -(-d // model.devices)  # seeds per device for TAN/ADJ steps
    scale = 1 << max(4, (4 * n).bit_length())
    # Every single step must fit: a sweep over the whole chain at the widest width, a product of
    # the widest operators carrying all ranks, a Jacobian. Then every interval's best key stays
    # below its own TAN key, and no sum of three keys overflows.
    widest, ranks = max(model.dims), sum(s.rank for s in model.jac_structure[1:])
    largest_step = max(widest * max(model.jvp_prefix[n], model.vjp_prefix[n]), widest ** 3 * (1 + 2 * ranks),
                       2 * widest * (1 + ranks) ** 2, max(model.jac_cost))
    if largest_step >= _INF // (4 * scale):
        raise ValueError(f"chain too large to plan exactly in int64 (widths {model.dims})")
    jvp = scale * np.asarray(model.jvp_prefix, dtype=np.int64)  # P_t, scaled
    vjp = scale * np.asarray(model.vjp_prefix, dtype=np.int64)
    structured = np.array([False] + [s.kind != "matrix" for s in model.jac_structure[1:]] + [False])
    rank = np.cumsum([0] + [s.rank for s in model.jac_structure[1:]], dtype=np.int64)  # prefix of ranks
    run = np.zeros(n + 2, dtype=np.int64)  # run[i]: structured factors i, i+1, ... in a row
    for i in range(n, 0, -1):
        run[i] = run[i + 1] + 1 if structured[i] else 0
    longest = int(run.max())

    S = n + 2
    # key_m / key_s [i, j]: best key for J_j ⋯ J_i dense / structured; *_t their transposes, so
    # that both the row i (right halves) and the column j (left halves) are contiguous
    key_m, key_s = np.full((S, S), _INF, dtype=np.int64), np.full((S, S), _INF, dtype=np.int64)
    key_mt, key_st = np.full((S, S), _INF, dtype=np.int64), np.full((S, S), _INF, dtype=np.int64)
    move_m, split_m, split_s = (np.zeros((S, S), dtype=np.int64) for _ in range(3))
    step = 8 * (S + 1)  # bytes from (i, ·) to (i+1, ·+1)

    def diagonal(a, length, m, transposed=False):
        """The view a[i, i + length − 1] (transposed: a[i + length − 1, i]) for i = 1..m."""
        return a.reshape(-1)[length * S + 1 if transposed else S + length::S + 1][:m]

    def window(a, row, col, m, width):
        """The (m × width) view a[row + t, col + t + c] for t < m, c < width."""
        return as_strided(a[row:, col:], shape=(m, width), strides=(step, 8))

    def sliding(v, start, m, width):
        """The (m × width) view v[start + t + c] of a vector."""
        return as_strided(v[start:], shape=(m, width), strides=(8, 8))

    for i in range(1, n + 1):
        tan = scale * per_device[i - 1] * model.jvp[i] + 1
        adj = scale * per_device[i] * model.vjp[i] + 1
        jac = scale * model.jac_cost[i] + 1
        best, move = (tan, _TAN) if tan <= adj else (adj, _ADJ)
        if not structured[i]:
            if jac < best:
                best, move = jac, _JAC
        else:
            key_s[i, i] = key_st[i, i] = jac
        key_m[i, i] = key_mt[i, i] = best
        move_m[i, i] = move

    buf = np.empty(((n + 1) // 2 + 1) ** 2 + n, dtype=np.int64)
    table = np.empty((_PULL + 1, n), dtype=np.int64)  # per move (its code), per interval: best key
    table_k = np.empty((_PULL + 1, n), dtype=np.int64)  # and its split
    push = np.full(n + 1, 2 * _INF, dtype=np.int64)  # running minima over the seed's split, by i
    push_k = np.zeros(n + 1, dtype=np.int64)
    pull = np.full(n + 1, 2 * _INF, dtype=np.int64)  # by j
    pull_k = np.zeros(n + 1, dtype=np.int64)
    index = np.arange(n + 2)
    for length in range(2, n + 1):
        m, splits = n - length + 1, length - 1
        i, j = index[1:m + 1], index[length:n + 1]  # the intervals J_j ⋯ J_i of this length
        rows_dev, cols_dev = per_device[length:], per_device[:m]  # n_j, n_{i−1} per device
        product = scale * d[length:] * d[:m]  # n_j n_{i−1}, scaled
        cand, cand_k = table[:, :m], table_k[:, :m]
        prev = diagonal(key_m, splits, m + 1)  # best keys of length − 1
        if splits <= longest:
            prev = np.minimum(prev, diagonal(key_s, splits, m + 1))
        # push J_k ⋯ J_i through k+1..j: min over k of best[i, k] − c_i P_k, one new k = j − 1
        new = prev[:m] - cols_dev * jvp[length - 1:n]
        better = new < push[1:m + 1]  # ties keep the smaller k
        np.copyto(push[1:m + 1], new, where=better)
        np.copyto(push_k[1:m + 1], j - 1, where=better)
        # pull J_j ⋯ J_{k+1} back through i..k: min over k of best[k+1, j] + r_j V_k, new k = i
        new = prev[1:] + rows_dev * vjp[1:m + 1]
        better = new <= pull[length:]  # the new k is the smallest
        np.copyto(pull[length:], new, where=better)
        np.copyto(pull_k[length:], i, where=better)
        np.multiply(cols_dev, jvp[length:] - jvp[:m], out=cand[_TAN])
        np.multiply(rows_dev, vjp[length:] - vjp[:m], out=cand[_ADJ])
        np.multiply(cols_dev, jvp[length:], out=cand[_PUSH])
        cand[_PUSH] += push[1:m + 1]
        np.multiply(rows_dev, vjp[:m], out=cand[_PULL])
        np.subtract(pull[length:], cand[_PULL], out=cand[_PULL])
        cand_k[_TAN] = cand_k[_ADJ] = i
        cand_k[_PUSH], cand_k[_PULL] = push_k[1:m + 1], pull_k[length:]
        # dense @ dense over all splits k = i + c: m[i, k] + m[k+1, j] + n_j n_k n_{i−1}
        block = buf[:m * splits].reshape(m, splits)
        np.multiply(sliding(d, 1, m, splits), product[:, None], out=block)
        np.add(block, window(key_m, 1, 1, m, splits), out=block)
        np.add(block, window(key_mt, length, 2, m, splits), out=block)
        arg = block.argmin(axis=1)
        cand[_MUL_MM], cand_k[_MUL_MM] = block[index[:m], arg], i + arg
        width = min(splits, longest)
        if width:
            # dense @ structured: the right half J_k ⋯ J_i in a run, k = i + c (n_k = n_{i−1}),
            # n_j n_k (1 + 2 rank) with rank = rank_k − rank_{i−1} (prefix sums)
            ms = sliding(rank, 1, m, width) * (2 * product)[:, None]
            ms += ((1 - 2 * rank[:m]) * product)[:, None]
            ms += window(key_s, 1, 1, m, width)
            ms += window(key_mt, length, 2, m, width)
            arg = ms.argmin(axis=1)
            np.minimum(ms[index[:m], arg], _INF, out=cand[_MUL_MS])
            cand_k[_MUL_MS] = i + arg
            # structured @ dense: the left half J_j ⋯ J_{k+1} in a run, k = j − width + c (n_k = n_j)
            sm = sliding(rank, length - width, m, width) * (-2 * product)[:, None]
            sm += ((1 + 2 * rank[length:]) * product)[:, None]
            sm += window(key_st, length, length - width + 1, m, width)
            sm += window(key_m, 1, length - width, m, width)
            arg = sm.argmin(axis=1)
            np.minimum(sm[index[:m], arg], _INF, out=cand[_MUL_SM])
            cand_k[_MUL_SM] = j - width + arg
        else:
            cand[_MUL_MS] = cand[_MUL_SM] = _INF
        if length <= longest:
            # structured @ structured: both halves in one run; kind and rank don't depend on k
            # n (1 + a + b + 2ab) for ranks a, b of the halves, a + b that of the whole
            r = sliding(rank, 1, m, splits)
            ss = (rank[length:, None] - r) * (r - rank[:m, None])
            ss *= (2 * scale * d[length:])[:, None]
            ss += (scale * d[length:] * (1 + rank[length:] - rank[:m]) + 1)[:, None]
            ss += window(key_st, length, 2, m, splits)
            ss += window(key_s, 1, 1, m, splits)
            arg = ss.argmin(axis=1)
            best = np.minimum(ss[index[:m], arg], _INF)
            diagonal(key_s, length, m)[:] = best
            diagonal(key_st, length, m, True)[:] = best
            diagonal(split_s, length, m)[:] = i + arg
        move = cand.argmin(axis=0)  # the first of equal keys: move order, as the codes
        best = cand[move, index[:m]] + 1
        diagonal(key_m, length, m)[:] = best
        diagonal(key_mt, length, m, True)[:] = best
        diagonal(move_m, length, m)[:] = move
        diagonal(split_m, length, m)[:] = cand_k[move, index[:m]]

    def build(lo, hi, structured):
        if structured:
            if lo == hi:
                return model.jac(lo)
            k = split_s[lo, hi]
            return model.mul(build(k + 1, hi, True), build(lo, k, True))
        move, k = move_m[lo, hi], split_m[lo, hi]
        if move == _JAC:
            return model.jac(lo)
        if move == _TAN:
            return model.tan(lo, hi)
        if move == _ADJ:
            return model.adj(lo, hi)
        if move == _PUSH:
            return model.tan(lo, hi, build(lo, k, key_s[lo, k] < key_m[lo, k]))
        if move == _PULL:
            return model.adj(lo, hi, build(k + 1, hi, key_s[k + 1, hi] < key_m[k + 1, hi]))
        return model.mul(build(k + 1, hi, move == _MUL_SM), build(lo, k, move == _MUL_MS))

    return build(1, n, key_s[1, n] < key_m[1, n])
