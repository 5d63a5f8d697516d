"""The optimal-plan dynamic programme over sub-chains ``J_j ⋯ J_i`` (see ``_plan.py``).

It minimises the ticks of a cost model (``_costs.py``; the default :data:`~._costs.FMA`: ticks
are fma). Per sub-chain it keeps two int64 keys, ``ticks · scale + steps``: the cheapest dense
result and, when every factor is structured, the cheapest structured one. Intervals of one
length (a diagonal of the tables) are done together with numpy, on zero-copy strided views:

* TAN / ADJ from unit vectors: O(1) per interval from prefix sums of the rule costs.
* TAN with a seed (push J_k ⋯ J_i through k+1..j) costs ``best[i, k] − c_i P_k + c_i P_j + step``
  (``c_i`` the seed count, ``P`` the prefix sums of the per-vector sweep ticks
  ``jvp_t · sweep_fma + (n_{t−1} + n_t) · sweep_io``): its minimum over k is a running minimum
  over the row i, updated with one new split per diagonal, O(1) per interval. ADJ with a seed
  likewise down the column j (VJP costs).
* products with a structured half: that half lies in one run of structured factors (consecutive
  factors whose Jacobians are diagonal, diagonal plus low rank or block diagonal with one block
  count T: a run of layers acting on the positions of a sequence), so only the splits within
  the longest run (R factors) are tried, O(min(L, R)) per interval; the structured result itself
  likewise, only on diagonals L ≤ R. Within a run the kind of a sub-product does not depend on
  its bracketing (block dense if any factor is, else diagonal plus the summed ranks per block),
  so prefix sums over the run give every cost (``_runs``).
* dense @ dense: all L − 1 splits, ``m[i, k] + m[k+1, j] + n_j n_k n_{i−1}``, four passes over
  a (intervals × splits) block: N³/6 element operations in all. Under a cost model the product
  is ``n_k (n_j n_{i−1} skinny_fma + (n_j + n_{i−1}) mm_io)`` plus, where no side is skinny,
  ``[n_k ≥ SKINNY] n_k n_j n_{i−1} (mm_fma − skinny_fma)``, and a per-interval constant
  (``step + n_j n_{i−1} mm_io``) added after the minimum: a product and a sum more per element
  when the two fma rates differ and some interval has no skinny side.
* structured products and JAC steps: ``step + fma · struct_fma``, the fma as before.

So O(N³) in the one product term (the matrix-chain recurrence, unpruned) and O(N² R)
otherwise; every minimum is taken over the same candidates as the plain recurrence, with the
same tie-break (move order, then the smallest split), so the plan is the one it gives. With
R = N (structured factors only) the structured moves are O(N³) too, with a few times the
constant: about 3 s for 1000 LayerNorm and Softmax layers, against 0.7 s for 1000 mixed ones.
"""
from __future__ import annotations

from itertools import accumulate

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..operators._structure import DIAGONAL, MATRIX
from ._costs import FMA, SKINNY, CostModel, factor_weights, step_ticks
from ._model import Model
from ._nodes import Jac, Node

__all__ = ["optimal_plan"]

_INF = np.iinfo(np.int64).max // 4

# Move codes stored by the DP, per interval, for the dense result.
# For sub-chains of two or more factors, equal keys go to the smallest code.
_TAN, _ADJ, _MUL_MM, _MUL_MS, _MUL_SM, _PUSH, _PULL, _JAC = range(8)


class _Bound:
    """What :class:`Model` reads of a chain (``len``, ``dims``, ``layers``, ``shapes``), from a
    block's inner :class:`~._plan.Plan`."""

    def __init__(self, plan):
        self.layers, self.shapes, self.dims = plan.layers, plan.shapes, plan.dims

    def __len__(self):
        return len(self.layers)


def _tree_ticks(cost: CostModel, model: Model, root: Node) -> int:
    """``tree_ticks`` of ``_costs.py``, with a block's inner plans priced under their own Model
    (built from the Plan's layers and shapes)."""
    total = 0
    for node in root.postorder():
        plans = node.plans if isinstance(node, Jac) else ()
        if plans:
            inner = (_tree_ticks(cost, getattr(p, "model", None) or Model(_Bound(p), p.devices), p.root)
                     for p in plans)
            total += cost.structured(node.step_fma) + sum(inner)
        else:
            total += step_ticks(cost, model, node)
    return total


def _is_fma(cost: CostModel) -> bool:
    return (cost.sweep_fma, cost.sweep_io, cost.mm_fma, cost.skinny_fma, cost.mm_io, cost.struct_fma,
            cost.step) == (1, 0, 1, 1, 0, 1, 0) and cost.sweep_few in (None, 1)


def _jac_ticks(cost: CostModel, model: Model, i: int) -> int:
    """Ticks of materialising factor i (a block's with its inner plans' ticks)."""
    if not model.block_plans[i]:
        return cost.structured(model.jac_cost[i])
    if _is_fma(cost):
        return model.jac_cost[i]  # its merge plus its plans' fma, as Model counts it
    return _tree_ticks(cost, model, model.jac(i))


class _Runs:
    """The runs of structured factors of a chain (``Structure`` of each factor J_1 … J_N): maximal
    consecutive factors that are not plain dense and share one block count T (a diagonal fits
    any), with prefix sums over factors (index 0 … N + 1) of what a sub-product's kind and cost
    depend on: ``rank`` (per-block ranks), ``mats`` (block-dense factors), ``unshared`` (factors
    that are not ``I_T ⊗ B``); ``count`` is each factor's run's T, ``run_id`` its run (-1: none)."""

    def __init__(self, structures):
        n = len(structures)
        self.structured = np.array([False] + [not s.dense_plain for s in structures] + [False])
        self.run_id = np.full(n + 2, -1, dtype=np.int64)
        self.count = np.ones(n + 2, dtype=np.int64)
        counts = []  # the block count of each run (None: diagonals only so far)
        for i, s in enumerate(structures, 1):
            if s.dense_plain:
                continue
            t = None if s.kind == DIAGONAL else s.blocks
            joins = self.structured[i - 1] and (t is None or counts[-1] is None or t == counts[-1])
            if not joins:
                counts.append(t)
            elif t is not None:
                counts[-1] = t
            self.run_id[i] = len(counts) - 1
        for i in range(1, n + 1):
            if self.run_id[i] >= 0:
                self.count[i] = counts[self.run_id[i]] or 1
        run = np.zeros(n + 2, dtype=np.int64)  # run[i]: factors i, i+1, ... in i's run
        for i in range(n, 0, -1):
            run[i] = (run[i + 1] + 1 if self.run_id[i + 1] == self.run_id[i] else 1) if self.structured[i] else 0
        self.longest = int(run.max())

        def prefix(values):
            return np.cumsum([0] + list(values), dtype=np.int64)
        self.rank = prefix(s.rank for s in structures)
        self.mats = prefix(int(s.kind == MATRIX and not s.dense_plain) for s in structures)
        self.unshared = prefix(int(not s.shared) for s in structures)

    @staticmethod
    def matvec(rank, rows, cols, ranks, mats, count):
        """fma of one vector through a run's sub-product (``rows × cols``): ``rows·cols/T`` if it
        has a block-dense factor, else ``rows·(1 + 2·rank)`` (square)."""
        return np.where(mats > 0, rows * cols // count, rows * (1 + 2 * ranks))

    @staticmethod
    def product(n_j, n_k, n_i, a, b, left_mats, right_mats, shared, count):
        """fma of ``S(k+1..j) @ S(i..k)`` within a run (the table of ``operators/_structure.py``):
        ranks a, b per block of the halves when neither has a block-dense factor."""
        low = n_j * (1 + a + b + 2 * a * b)
        left = n_j * n_k * (1 + 2 * b) // count
        right = n_k * n_i * (1 + 2 * a) // count
        both = n_j * n_k * n_i // (count * count) // np.where(shared, count, 1)
        return np.where(left_mats > 0, np.where(right_mats > 0, both, left), np.where(right_mats > 0, right, low))


def optimal_plan(model: Model, cost: CostModel = FMA, max_dense: int | None = None) -> Node:
    """The cheapest plan tree over the move set described in ``_plan.py``'s docstring, in the
    ticks of ``cost`` (``_costs.py``; default :data:`~._costs.FMA`, ticks = fma), priced step by
    step exactly as :func:`~._costs.tree_ticks` prices a tree.

    ``max_dense``: the cheapest plan among those whose dense intermediates (every sub-product
    materialised as a matrix, ``n_j n_{i−1}`` floats, the result excepted) have at most that many
    floats; a factor whose Jacobian is a parameter (its footprint says so: Dense's weight), an
    argument, is always allowed. The
    memory-limited planner (``_limit.py``) walks these caps down.

    Among plans of equal cost the one with fewest steps wins: the DP minimises the key
    ``ticks · scale + steps``, exact in int64 for chains up to about 10¹⁵ ticks.
    Time O(N³/6) int64 operations for the dense products, O(N² R) for the rest (R: the longest
    run of structured factors); memory 7 (N+2)² int64 tables.
    """
    n, d = model.n, np.asarray(model.dims, dtype=np.int64)
    per_device = -(-d // model.devices)  # seeds per device for TAN/ADJ steps
    scale = 1 << max(4, (4 * n).bit_length())
    sweep_fma, sweep_io, mm_fma, skinny_fma = cost.sweep_fma, cost.sweep_io, cost.mm_fma, cost.skinny_fma
    mm_io, struct_fma, fixed = cost.mm_io, cost.struct_fma, cost.step
    # ticks of one vector through factor t: its rule's fma, and the activations it reads and writes
    dims = model.dims
    io = (0,) + tuple(dims[t - 1] + dims[t] for t in range(1, n + 1))
    tan_t = tuple(model.jvp[t] * sweep_fma + io[t] * sweep_io for t in range(n + 1))
    adj_t = tuple(model.vjp[t] * sweep_fma + io[t] * sweep_io for t in range(n + 1))
    tan_prefix, adj_prefix = tuple(accumulate(tan_t)), tuple(accumulate(adj_t))
    # sweeps with fewer than SKINNY seeds run their rules at another rate (skinny products)
    few_rate = cost.sweep_rate(1)
    split_rates = few_rate != sweep_fma
    tan_few_t = tuple(model.jvp[t] * few_rate + io[t] * sweep_io for t in range(n + 1))
    adj_few_t = tuple(model.vjp[t] * few_rate + io[t] * sweep_io for t in range(n + 1))
    # every step reads each factor's parameters once: Σ w_t · mm_io over the factors it sweeps
    weights = factor_weights(model) if mm_io else (0,) * (n + 1)
    weight_t = tuple(w * mm_io for w in weights)
    jac_ticks = (0,) + tuple(_jac_ticks(cost, model, i) for i in range(1, n + 1))
    # Every single step must fit: a sweep over the whole chain at the widest width, a product of
    # the widest operators carrying all ranks, a Jacobian. Then every interval's best key stays
    # below its own TAN key, and no sum of three keys overflows.
    widest, ranks = max(dims), sum(s.rank for s in model.jac_structure[1:])
    largest_step = max(fixed + sum(weight_t) + max(widest * max(tan_prefix[n], adj_prefix[n],
                                                                sum(tan_few_t), sum(adj_few_t)),
                                   widest ** 3 * max(mm_fma, skinny_fma) + 3 * widest ** 2 * mm_io,
                                   widest ** 3 * (1 + 2 * ranks) * struct_fma,
                                   2 * widest * (1 + ranks) ** 2 * struct_fma),
                       max(jac_ticks))
    if largest_step >= _INF // (4 * scale):
        raise ValueError(f"chain too large to plan exactly in int64 (widths {model.dims})")
    jvp = scale * np.asarray(tan_prefix, dtype=np.int64)  # P_t, scaled
    vjp = scale * np.asarray(adj_prefix, dtype=np.int64)
    jvp_few = scale * np.asarray(tuple(accumulate(tan_few_t)), dtype=np.int64)
    vjp_few = scale * np.asarray(tuple(accumulate(adj_few_t)), dtype=np.int64)
    wp = scale * np.asarray(tuple(accumulate(weight_t)), dtype=np.int64)  # W_t, scaled
    read_weights = bool(wp[-1])

    def rate_of(seeds, few, many):
        """The prefix sums each interval's sweep uses: the few-seed ones where it has < SKINNY seeds."""
        return np.where(seeds < SKINNY, few, many) if split_rates else many
    fixed_key = scale * fixed  # every step's fixed ticks, scaled
    runs = _Runs(model.jac_structure[1:])
    structured, rank, longest = runs.structured, runs.rank, runs.longest

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
        c, r = int(per_device[i - 1]), int(per_device[i])
        tan = scale * (fixed + c * (tan_few_t[i] if c < SKINNY else tan_t[i]) + weight_t[i]) + 1
        adj = scale * (fixed + r * (adj_few_t[i] if r < SKINNY else adj_t[i]) + weight_t[i]) + 1
        jac = scale * jac_ticks[i] + 1
        best, move = (tan, _TAN) if tan <= adj else (adj, _ADJ)
        if not structured[i]:
            if jac < best:
                best, move = jac, _JAC
        else:
            key_s[i, i] = key_st[i, i] = jac
        if max_dense is not None and n > 1 and int(d[i] * d[i - 1]) > max_dense:
            # too large as a matrix: only a Jacobian that is a parameter (an argument) may stand for it
            best, move = (jac, _JAC) if model.jacobian_is_argument(i) else (_INF, move)
        key_m[i, i] = key_mt[i, i] = best
        move_m[i, i] = move

    buf = np.empty(((n + 1) // 2 + 1) ** 2 + n, dtype=np.int64)
    # the dense @ dense rates: one multiplier when they are alike, else the skinny rate on every
    # split plus the difference on splits where no side is skinny
    plain_mm = mm_fma == skinny_fma and not mm_io
    if not plain_mm:
        buf2 = np.empty_like(buf)
        wide = np.where(d >= SKINNY, d, 0)  # n_k where that side is not skinny
        rate_gap = mm_fma - skinny_fma
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
        # the prefix sums of each interval's sweeps (by its seed count): P at j, i − 1 and k
        p_j, p_i = rate_of(cols_dev, jvp_few[length:], jvp[length:]), rate_of(cols_dev, jvp_few[:m], jvp[:m])
        p_k = rate_of(cols_dev, jvp_few[length - 1:n], jvp[length - 1:n])
        v_j, v_i = rate_of(rows_dev, vjp_few[length:], vjp[length:]), rate_of(rows_dev, vjp_few[:m], vjp[:m])
        v_k = rate_of(rows_dev, vjp_few[1:m + 1], vjp[1:m + 1])
        # push J_k ⋯ J_i through k+1..j: min over k of best[i, k] − c_i P_k − W_k, one new k = j − 1
        new = prev[:m] - cols_dev * p_k
        if read_weights:
            new -= wp[length - 1:n]
        better = new < push[1:m + 1]  # ties keep the smaller k
        np.copyto(push[1:m + 1], new, where=better)
        np.copyto(push_k[1:m + 1], j - 1, where=better)
        # pull J_j ⋯ J_{k+1} back through i..k: min over k of best[k+1, j] + r_j V_k + W_k, new k = i
        new = prev[1:] + rows_dev * v_k
        if read_weights:
            new += wp[1:m + 1]
        better = new <= pull[length:]  # the new k is the smallest
        np.copyto(pull[length:], new, where=better)
        np.copyto(pull_k[length:], i, where=better)
        np.multiply(cols_dev, p_j - p_i, out=cand[_TAN])
        np.multiply(rows_dev, v_j - v_i, out=cand[_ADJ])
        np.multiply(cols_dev, p_j, out=cand[_PUSH])
        cand[_PUSH] += push[1:m + 1]
        np.multiply(rows_dev, v_i, out=cand[_PULL])
        np.subtract(pull[length:], cand[_PULL], out=cand[_PULL])
        if read_weights:
            span_w = wp[length:] - wp[:m]
            cand[_TAN] += span_w
            cand[_ADJ] += span_w
            cand[_PUSH] += wp[length:]
            cand[_PULL] -= wp[:m]
        if fixed_key:
            for code in (_TAN, _ADJ, _PUSH, _PULL):
                cand[code] += fixed_key
        cand_k[_TAN] = cand_k[_ADJ] = i
        cand_k[_PUSH], cand_k[_PULL] = push_k[1:m + 1], pull_k[length:]
        # dense @ dense over all splits k = i + c: m[i, k] + m[k+1, j] + n_j n_k n_{i−1}
        block = buf[:m * splits].reshape(m, splits)
        if plain_mm:
            np.multiply(sliding(d, 1, m, splits), (product if mm_fma == 1 else mm_fma * product)[:, None], out=block)
            extra = fixed_key
        else:
            # n_k (n_j n_{i−1} skinny_fma + (n_j + n_{i−1}) mm_io), scaled
            per_k = skinny_fma * product + scale * mm_io * (d[length:] + d[:m])
            np.multiply(sliding(d, 1, m, splits), per_k[:, None], out=block)
            gap = np.where(np.minimum(d[length:], d[:m]) >= SKINNY, rate_gap * product, 0)
            if gap.any():
                more = buf2[:m * splits].reshape(m, splits)
                np.multiply(sliding(wide, 1, m, splits), gap[:, None], out=more)
                np.add(block, more, out=block)
            extra = fixed_key + mm_io * product  # step + n_j n_{i−1} mm_io, the same for every k
        np.add(block, window(key_m, 1, 1, m, splits), out=block)
        np.add(block, window(key_mt, length, 2, m, splits), out=block)
        arg = block.argmin(axis=1)
        cand[_MUL_MM], cand_k[_MUL_MM] = block[index[:m], arg], i + arg
        if not plain_mm or fixed_key:
            cand[_MUL_MM] += extra
        width = min(splits, longest)
        n_j, n_i = d[length:, None], d[:m, None]  # n_j and n_{i−1} per interval, as columns
        if width:
            # dense @ structured: the right half J_k ⋯ J_i in a run, k = i + c: n_j · matvec
            n_k = sliding(d, 1, m, width)
            ms = runs.matvec(rank, n_k, n_i, sliding(rank, 1, m, width) - rank[:m, None],
                             sliding(runs.mats, 1, m, width) - runs.mats[:m, None], runs.count[1:m + 1, None])
            ms *= scale * struct_fma * n_j
            ms += window(key_s, 1, 1, m, width)
            ms += window(key_mt, length, 2, m, width)
            arg = ms.argmin(axis=1)
            np.minimum(ms[index[:m], arg] + fixed_key, _INF, out=cand[_MUL_MS])
            cand_k[_MUL_MS] = i + arg
            # structured @ dense: the left half J_j ⋯ J_{k+1} in a run, k = j − width + c: n_{i−1} · matvec
            n_k = sliding(d, length - width, m, width)
            sm = runs.matvec(rank, n_j, n_k, rank[length:, None] - sliding(rank, length - width, m, width),
                             runs.mats[length:, None] - sliding(runs.mats, length - width, m, width),
                             runs.count[length:n + 1, None])
            sm *= scale * struct_fma * n_i
            sm += window(key_st, length, length - width + 1, m, width)
            sm += window(key_m, 1, length - width, m, width)
            arg = sm.argmin(axis=1)
            np.minimum(sm[index[:m], arg] + fixed_key, _INF, out=cand[_MUL_SM])
            cand_k[_MUL_SM] = j - width + arg
        else:
            cand[_MUL_MS] = cand[_MUL_SM] = _INF
        if length <= longest:
            # structured @ structured: both halves in one run; kind and rank don't depend on k
            r, mats = sliding(rank, 1, m, splits), sliding(runs.mats, 1, m, splits)
            ss = runs.product(n_j, sliding(d, 1, m, splits), n_i, rank[length:, None] - r, r - rank[:m, None],
                              runs.mats[length:, None] - mats, mats - runs.mats[:m, None],
                              (runs.unshared[length:] == runs.unshared[:m])[:, None], runs.count[1:m + 1, None])
            ss *= scale * struct_fma
            ss += fixed_key + 1
            ss[runs.run_id[1:m + 1] != runs.run_id[length:n + 1]] = _INF  # the halves must share a run
            ss += window(key_st, length, 2, m, splits)
            ss += window(key_s, 1, 1, m, splits)
            arg = ss.argmin(axis=1)
            best = np.minimum(ss[index[:m], arg], _INF)
            diagonal(key_s, length, m)[:] = best
            diagonal(key_st, length, m, True)[:] = best
            diagonal(split_s, length, m)[:] = i + arg
        move = cand.argmin(axis=0)  # the first of equal keys: move order, as the codes
        best = cand[move, index[:m]] + 1
        if max_dense is not None and length < n:  # the result (length n) is the output, always allowed
            best = np.where(product > scale * max_dense, _INF, np.minimum(best, _INF))
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
