"""The cost model and the optimal planner, checked without running any Jacobian.

The centre is a brute force: an independent enumerator of every plan in the move set (JAC of
a factor; TAN/ADJ from unit vectors of any sub-chain; a product of any two adjacent sub-plans
in any of their forms; any accumulated sub-plan pushed forward through the following factors'
JVP rules or pulled back through the preceding factors' VJP rules), costed by its own
implementation of the rules: the layers' declarations (jvp_cost, vjp_cost, jacobian_cost,
jacobian_structure) and the product table of ``operators.py``'s docstring, never ``Model``.
Per sub-chain it keeps every distinct (cost, structure) pair, with one order string that
achieves it: exhaustive over achievable costs, since a step's cost depends on its inputs
only through their structure. The DP's plan must cost the minimum: on random chains of the
built-in layers, and on layers that only declare costs (JVP and VJP costs that differ,
Jacobians of any cost, higher ranks), with the seeds split over one or more devices.

Then the pinned formulas (Dense-only chains have closed forms), and the Plan object.
"""
from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.chains import ELEMENTWISE, KINDS, Declared, chain_specs, declared_chain, make_chain, random_chain
from _helpers.orders import bracketings, random_order, tree_string

import jacket
from jacket.operators import Structure
from jacket.planning import make_plan

# ---- an independent cost model ----------------------------------------------------------
# Structures are plain tuples (kind, rows, cols, rank), rank 0 unless kind is "dplr".
def _size(s):
    kind, rows, cols, rank = s
    return rows if kind == "diagonal" else rows * (1 + 2 * rank) if kind == "dplr" else rows * cols


def product(a, b):
    """(structure, fma) of a @ b, from the table in operators/_structure.py's docstring (a
    diagonal is rank 0: diag @ dplr scales d and U, n(1 + k))."""
    (ka, m, n, ra), (kb, _, c, rb) = a, b
    if ka == "diagonal" and kb == "diagonal":
        return a, n
    if ka != "matrix" and kb != "matrix":
        return ("dplr", n, n, ra + rb), n * (1 + ra + rb + 2 * ra * rb)
    if ka == "diagonal":
        return b, _size(b)
    if kb == "diagonal":
        return a, _size(a)
    if ka == "dplr":
        return ("matrix", n, c, 0), n * c * (1 + 2 * ra)
    if kb == "dplr":
        return ("matrix", m, n, 0), m * n * (1 + 2 * rb)
    return ("matrix", m, c, 0), m * n * c


class Costs:
    """Per-factor costs straight from the layers' declarations (factors 1-based)."""

    def __init__(self, chain, devices=1):
        d, self.devices = chain.dims, devices
        self.dims = d
        self.jvp, self.vjp, self.jac, self.structure = {}, {}, {}, {}
        for i, layer in enumerate(chain.layers, 1):
            self.jvp[i] = layer.jvp_cost(chain.shapes[i - 1])
            self.vjp[i] = layer.vjp_cost(chain.shapes[i - 1])
            self.jac[i] = layer.jacobian_cost(chain.shapes[i - 1])
            s = layer.jacobian_structure(chain.shapes[i - 1])
            self.structure[i] = (s.kind, s.rows, s.cols, s.rank if s.kind == "dplr" else 0)

    def seeds(self, count):  # seed vectors per device
        return -(-count // self.devices)

    def sweep_forward(self, lo, a, b):
        """Columns of J_{a-1} ⋯ J_lo (n_{lo-1} of them) through the JVP rules of a..b."""
        return self.seeds(self.dims[lo - 1]) * sum(self.jvp[t] for t in range(a, b + 1))

    def sweep_backward(self, hi, a, b):
        """Rows of J_hi ⋯ J_{b+1} (n_hi of them) through the VJP rules of b..a."""
        return self.seeds(self.dims[hi]) * sum(self.vjp[t] for t in range(a, b + 1))

    def dense(self, lo, hi):
        return ("matrix", self.dims[hi], self.dims[lo - 1], 0)


def _run_text(a, b):
    return f"J{a}" if a == b else f"J{b}..J{a}"


def brute_force(chain, devices=1):
    """{(lo, hi): {(fma, structure): an order string achieving it}} over every plan."""
    c, n = Costs(chain, devices), len(chain)
    table = {}
    for length in range(1, n + 1):
        for lo in range(1, n - length + 2):
            hi = lo + length - 1
            found = {}
            dense = c.dense(lo, hi)
            found.setdefault((c.sweep_forward(lo, lo, hi), dense), f"tan({_run_text(lo, hi)})")
            found.setdefault((c.sweep_backward(hi, lo, hi), dense), f"adj({_run_text(lo, hi)})")
            if lo == hi:
                found.setdefault((c.jac[lo], c.structure[lo]), f"J{lo}")
            for k in range(lo, hi):  # right part lo..k, left part k+1..hi
                left, right = table[k + 1, hi], table[lo, k]
                for (fma_l, s_l), text_l in left.items():
                    for (fma_r, s_r), text_r in right.items():
                        s, step = product(s_l, s_r)
                        found.setdefault((fma_l + fma_r + step, s), f"({text_l} {text_r})")
                push = c.sweep_forward(lo, k + 1, hi)
                for (fma_r, _), text_r in right.items():
                    found.setdefault((fma_r + push, dense), f"tan({_run_text(k + 1, hi)} | {text_r})")
                pull = c.sweep_backward(hi, lo, k)
                for (fma_l, _), text_l in left.items():
                    found.setdefault((fma_l + pull, dense), f"adj({text_l} | {_run_text(lo, k)})")
            table[lo, hi] = found
    return table


def tree_cost(costs, node):
    """(fma, structure) of a plan tree, recomputed from ``costs`` (not from the node's own
    numbers); also checks that the node's shape of the move is one of the move set."""
    if node.op == "JAC":
        assert node.lo == node.hi
        return costs.jac[node.lo], costs.structure[node.lo]
    if node.op == "MUL":
        assert node.right.lo == node.lo and node.right.hi + 1 == node.left.lo and node.left.hi == node.hi
        (fma_l, s_l), (fma_r, s_r) = tree_cost(costs, node.left), tree_cost(costs, node.right)
        s, step = product(s_l, s_r)
        return fma_l + fma_r + step, s
    a, b = node.through
    seed = tree_cost(costs, node.seed)[0] if node.seed is not None else 0
    if node.op == "TAN":
        assert b == node.hi and a == (node.lo if node.seed is None else node.seed.hi + 1)
        assert node.seed is None or node.seed.lo == node.lo
        return seed + costs.sweep_forward(node.lo, a, b), costs.dense(node.lo, node.hi)
    assert node.op == "ADJ" and a == node.lo and b == (node.hi if node.seed is None else node.seed.lo - 1)
    assert node.seed is None or node.seed.hi == node.hi
    return seed + costs.sweep_backward(node.hi, a, b), costs.dense(node.lo, node.hi)


def structure_tuple(s: Structure):
    return (s.kind, s.rows, s.cols, s.rank if s.kind == "dplr" else 0)


def check_optimal(chain, devices=1, table=None):
    """The DP's plan costs the brute-force minimum, and its tree costs what Model says."""
    table = brute_force(chain, devices) if table is None else table
    everything = table[1, len(chain)]
    best = min(fma for fma, _ in everything)
    plan = make_plan(chain, "optimal", devices=devices)
    witness = min(everything.items())
    assert plan.fma == best, (f"{chain}: the DP plan {plan.order} costs {plan.fma:,} fma, but "
                              f"{witness[1]} costs {best:,}")
    costs = Costs(chain, devices)
    for node in plan.steps:  # every subtree, the root last
        fma, s = tree_cost(costs, node)
        assert node.fma == fma and structure_tuple(node.structure) == s
    assert (plan.fma, structure_tuple(plan.root.structure)) in everything
    return plan


# ---- brute force against the DP ---------------------------------------------------------
FAMILIES = {  # name: (layer kinds, how many seeded chains)
    "mixed": (KINDS, 120),
    "dense_only": (["dense"], 60),
    "structured_heavy": (ELEMENTWISE + ["softmax", "logsoftmax", "layernorm", "layernorm", "softmax"], 80),
    "runs_with_dense": (["dense", "tanh", "relu", "softmax", "layernorm"], 80),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("devices", [1, 3])
def test_optimal_plan_costs_the_brute_force_minimum(family, devices):
    kinds, count = FAMILIES[family]
    rng = random.Random(f"{family}-{devices}")
    for _ in range(count):
        check_optimal(random_chain(rng, rng.randint(1, 6), kinds), devices)


@pytest.mark.parametrize("devices", [1, 2])
def test_optimal_plan_costs_the_brute_force_minimum_for_declared_costs(devices):
    rng = random.Random(f"declared-{devices}")
    for _ in range(80):
        check_optimal(declared_chain(rng, rng.randint(1, 6)), devices)


@pytest.mark.parametrize("width", [10**5, 2 * 10**5])
def test_huge_widths_are_planned_exactly(width):
    """Single steps near 10¹⁶ fma: the DP's int64 keys must not wrap around."""
    chain = jacket.Chain([jacket.Dense(1, width), jacket.Dense(width, width), jacket.Dense(width, width),
                          jacket.Dense(width, 1)])
    check_optimal(chain)


def test_widths_beyond_int64_planning_are_refused():
    width = 10**6  # a (10⁶)³ product, times the DP's tie-break scale, does not fit in int64
    chain = jacket.Chain([jacket.Dense(1, width), jacket.Dense(width, width), jacket.Dense(width, 1)])
    with pytest.raises(ValueError, match="too large to plan exactly"):
        make_plan(chain)
    assert make_plan(chain, "forward").fma == 1 * (width + width * width + width)  # fixed orders still cost


@pytest.mark.parametrize("kind, rank", [("dplr", 0), ("diagonal", 1), ("diag", 0), ("lowrank", 1)])
def test_a_structure_the_planner_cannot_cost_is_rejected(kind, rank):
    chain = jacket.Chain([jacket.Dense(3, 3), Declared(3, 3, 1, 1, 1, kind, rank)])
    with pytest.raises(ValueError, match=r"layer 2 .* declares a Jacobian structure the planner cannot cost: .*"
                                         r"(kind must be|has no rank|needs rank)"):
        make_plan(chain)


def test_optimal_on_runs_of_structured_layers_between_dense_layers():
    """Long runs of elementwise, softmax and layernorm factors, where structured products
    compete with sweeps: the case a wrong structured-product cost would get wrong."""
    rng = random.Random(7)
    for _ in range(60):  # narrow widths: there sweeps and structured products cost alike
        width = rng.randint(1, 10)
        spec = [("dense", width)] + [(rng.choice(KINDS[1:]), 0) for _ in range(rng.randint(2, 5))]
        check_optimal(make_chain(rng.randint(1, 16), spec))


STRUCTURED = ELEMENTWISE + ["softmax", "logsoftmax", "layernorm"]


def runs_chain(rng, length, max_width):
    """Dense layers each followed by a run of 0–4 structured ones (diagonal, softmax, layernorm)."""
    spec = []
    while len(spec) < length:
        spec.append(("dense", rng.randint(1, max_width)))
        spec += [(rng.choice(STRUCTURED), 0) for _ in range(rng.randint(0, 4))]
    return make_chain(rng.randint(1, max_width), spec[:length])


def test_optimal_on_longer_chains_with_runs_of_structured_layers():
    """Chains of 6–9 factors, longer than the families above: the DP's shortcuts (running minima
    for seeded sweeps, structured halves only inside runs) against the brute force."""
    rng = random.Random("runs")
    for _ in range(16):
        check_optimal(runs_chain(rng, rng.randint(6, 9), 10), rng.choice([1, 2]))


@pytest.mark.parametrize("width", range(1, 10))
def test_diagonal_times_low_rank_is_costed_as_the_multiplications_done(width):
    """layernorm after tanh: materialise both and multiply (2n + n + n(1 + 2) = 6n: the product
    scales the layernorm's diagonal and its two U columns), or pull the n rows of the layernorm
    Jacobian through tanh (2n + n·n). The optimum is the smaller."""
    chain = jacket.Chain([jacket.Tanh(), jacket.LayerNorm(width)], in_shape=width)
    assert make_plan(chain, "(J2 J1)").fma == 6 * width
    assert make_plan(chain, "adj(J2 | J1)").fma == 2 * width + width * width
    assert make_plan(chain).fma == min(6 * width, 2 * width + width * width)


def test_brute_force_witnesses_cost_the_same_under_model_and_parser():
    """Every (cost, structure) the enumerator reaches, re-read through the order grammar, costs
    the same in Model: the two cost models and the parser agree over the whole move set."""
    rng = random.Random(11)
    for _ in range(12):
        chain = random_chain(rng, rng.randint(1, 5), KINDS, 12)
        everything = brute_force(chain)[1, len(chain)]
        for (fma, s), text in rng.sample(sorted(everything.items()), min(150, len(everything))):
            plan = make_plan(chain, text)
            assert plan.fma == fma, text
            assert structure_tuple(plan.root.structure) == s, text


@settings(max_examples=40, deadline=None)
@given(chain_specs(max_length=12, max_width=64), st.randoms(use_true_random=False))
def test_optimal_is_no_worse_than_any_order_and_round_trips(spec, rng):
    chain = make_chain(*spec)
    n = len(chain)
    plan = make_plan(chain)
    again = make_plan(chain, plan.order)
    assert again == plan and again.fma == plan.fma and again.order == plan.order
    assert plan.fma <= min(plan.forward_fma, plan.reverse_fma)
    costs = Costs(chain)
    assert tree_cost(costs, plan.root)[0] == plan.fma
    for _ in range(10):
        other = make_plan(chain, random_order(rng, 1, n))
        assert tree_cost(costs, other.root)[0] == other.fma
        assert plan.fma <= other.fma, other.order


# ---- pinned formulas ----------------------------------------------------------------------
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (3, 5), (7, 2)])
def test_dense_rules_cost_n_in_times_n_out_per_vector_and_nothing_to_materialise(n_in, n_out):
    layer = jacket.Dense(n_in, n_out)
    assert layer.jvp_cost((n_in,)) == layer.vjp_cost((n_in,)) == n_in * n_out and layer.jacobian_cost((n_in,)) == 0
    chain = jacket.Chain([layer])
    assert make_plan(chain, "forward").fma == n_in * (n_in * n_out)   # n_in tangents
    assert make_plan(chain, "reverse").fma == n_out * (n_in * n_out)  # n_out cotangents
    assert make_plan(chain, "J1").fma == 0
    assert make_plan(chain, "J1").root.structure == Structure("matrix", n_out, n_in)


@pytest.mark.parametrize("kind", ELEMENTWISE)
@pytest.mark.parametrize("n", [1, 4, 9])
def test_elementwise_rules_cost_n_per_vector_and_n_to_materialise(kind, n):
    chain = make_chain(n, [(kind, 0)])
    layer = chain.layers[0]
    assert layer.jvp_cost((n,)) == layer.vjp_cost((n,)) == layer.jacobian_cost((n,)) == n
    assert make_plan(chain, "forward").fma == n * n
    assert make_plan(chain, "reverse").fma == n * n
    assert make_plan(chain, "J1").fma == n
    assert make_plan(chain, "J1").root.structure == Structure("diagonal", n, n)


@pytest.mark.parametrize("a, b, c", [(1, 1, 1), (2, 3, 4), (5, 1, 6)])
def test_products_cost_abc_dense_and_the_other_size_with_a_diagonal(a, b, c):
    assert make_plan(jacket.Chain([jacket.Dense(a, b), jacket.Dense(b, c)]), "(J2 J1)").fma == a * b * c
    # dense b×a after or before a diagonal: the size of the dense factor, plus n to materialise
    assert make_plan(jacket.Chain([jacket.Dense(a, b), jacket.Tanh()]), "(J2 J1)").fma == b + a * b
    assert make_plan(jacket.Chain([jacket.Tanh(), jacket.Dense(a, b)], in_shape=a), "(J2 J1)").fma == a + a * b
    assert make_plan(jacket.Chain([jacket.Tanh(), jacket.GELU()], in_shape=a), "(J2 J1)").fma == a + a + a


@pytest.mark.parametrize("rank_a", [0, 1, 2])
@pytest.mark.parametrize("rank_b", [0, 1, 2])
def test_structure_products_follow_the_table(rank_a, rank_b):
    n, m, c = 5, 3, 4

    def op(rank):
        return Structure("diagonal", n, n) if rank == 0 else Structure("dplr", n, n, rank)
    s, fma = op(rank_a).matmul(op(rank_b))
    assert (structure_tuple(s), fma) == product(structure_tuple(op(rank_a)), structure_tuple(op(rank_b)))
    assert Structure("matrix", m, n).matmul(op(rank_a)) == (Structure("matrix", m, n), m * n * (1 + 2 * rank_a))
    assert op(rank_a).matmul(Structure("matrix", n, c)) == (Structure("matrix", n, c), n * c * (1 + 2 * rank_a))
    # one formula for diagonals (rank 0) and low-rank factors alike
    assert fma == n * (1 + rank_a + rank_b + 2 * rank_a * rank_b) and s.kind != "matrix" and s.rank == rank_a + rank_b


def textbook_cost(dims, tree):
    """(rows, cols, fma) of a bracketing of dense factors J_i (n_i × n_{i-1})."""
    if isinstance(tree, int):
        return dims[tree], dims[tree - 1], 0
    rows, inner, left = textbook_cost(dims, tree[0])
    _, cols, right = textbook_cost(dims, tree[1])
    return rows, cols, left + right + rows * inner * cols


DENSE_DIMS = [(3,), (2, 7), (4, 1, 6), (5, 3, 8, 2), (1, 6, 2, 9, 4), (7, 2, 5, 3, 6, 1)]


@pytest.mark.parametrize("dims", DENSE_DIMS[1:], ids=str)
def test_dense_chains_forward_reverse_and_every_bracketing_have_closed_forms(dims):
    chain = jacket.Chain([jacket.Dense(a, b) for a, b in zip(dims[:-1], dims[1:])])
    n = len(chain)
    weights = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    assert make_plan(chain, "forward").fma == dims[0] * weights
    assert make_plan(chain, "reverse").fma == dims[-1] * weights
    cheapest = min(make_plan(chain, "forward").fma, make_plan(chain, "reverse").fma)
    for tree in bracketings(1, n):
        fma = textbook_cost(dims, tree)[2]
        assert make_plan(chain, tree_string(tree)).fma == fma
        cheapest = min(cheapest, fma)
    assert make_plan(chain).fma <= cheapest


@pytest.mark.parametrize("D", [1, 2, 3, 8, 100, 1000])
def test_a_scalar_output_costs_order_d_squared_in_reverse_and_d_cubed_forward(D):
    """Dense(D, D) three times then Dense(D, 1): Σ n_{i-1} n_i = 3D² + D."""
    chain = jacket.Chain([jacket.Dense(D, D)] * 3 + [jacket.Dense(D, 1)])
    weights = 3 * D * D + D
    assert make_plan(chain, "reverse").fma == weights
    assert make_plan(chain, "forward").fma == D * weights
    assert make_plan(chain, "(((J4 J3) J2) J1)").fma == 3 * D * D      # row vector times D×D, 3 times
    assert make_plan(chain, "(J4 (J3 (J2 J1)))").fma == 2 * D ** 3 + D * D
    assert make_plan(chain).fma <= 3 * D * D


# ---- the Plan object --------------------------------------------------------------------
BOTTLENECK = jacket.mlp([1024, 1024, 16, 1024, 1024], activation="tanh", final="tanh")


def test_bottleneck_chain_plans_more_than_ten_times_cheaper_than_either_mode():
    plan = make_plan(BOTTLENECK)
    assert plan.speedup > 10
    assert plan.speedup == min(plan.forward_fma, plan.reverse_fma) / plan.fma
    assert plan.forward_fma == make_plan(BOTTLENECK, "forward").fma
    assert plan.reverse_fma == make_plan(BOTTLENECK, "reverse").fma


@pytest.mark.parametrize("order", ["optimal", "forward", "reverse", "(J8 (J7 (J6 (J5 (J4 (J3 (J2 J1)))))))",
                                   "tan(J8..J5 | adj(J4..J1))"])
def test_plan_table_has_the_totals_memory_and_one_row_per_step(order):
    plan = make_plan(BOTTLENECK, order)
    text = str(plan)
    assert text == plan.table()
    for label, value in [("forward (tangents):", f"{plan.forward_fma:,} fma"),
                         ("reverse (adjoints):", f"{plan.reverse_fma:,} fma"),
                         ("this plan:", f"{plan.fma:,} fma"),
                         ("speedup vs best mode:", f"{plan.speedup:.3g}x"),
                         ("largest intermediate:", f"{plan.largest_intermediate:,} floats"),
                         ("memory (model):", f"{plan.memory.temp_bytes / 1e6:.3g} MB temporaries, "
                                             f"{plan.memory.result_bytes / 1e6:.3g} MB result")]:
        line = next(line for line in text.splitlines() if label in line)
        assert value in line, (label, line)
    assert plan.order in text
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("----"))
    rows = lines[rule + 1:]
    assert len(rows) == len(plan.steps)
    for k, (row, step) in enumerate(zip(rows, plan.steps), 1):
        cells = row.split()
        assert cells[0] == str(k) and cells[1] == step.op and cells[-2] == f"{step.step_fma:,}"
        live = next(m.live_bytes for m in plan.memory.steps if (m.op, m.factors) == (step.op, step.describe()))
        assert cells[-1] == f"{live / 1e6:.3g}", (row, live)
    assert sum(step.step_fma for step in plan.steps) == plan.fma


def test_plan_memory_figures_are_consistent():
    for order in ["optimal", "forward", "reverse", "(J8 (J7 (J6 (J5 (J4 (J3 (J2 J1)))))))"]:
        plan = make_plan(BOTTLENECK, order)
        assert plan.largest_intermediate == max(s.structure.size for s in plan.steps)
        memory, item = plan.memory, 4  # float32 bytes
        # the activations, the result, and the largest intermediate live at the worst moment
        assert memory.tape_bytes == item * sum(BOTTLENECK.dims[1:])
        assert memory.result_bytes == item * BOTTLENECK.dims[0] * BOTTLENECK.dims[-1]
        assert memory.peak_live_bytes == max(step.live_bytes for step in memory.steps)
        assert memory.peak_live_bytes >= max(memory.temp_bytes, item * plan.largest_intermediate)


def test_planning_200_layers_is_fast():
    """A loose guard against a gross slowdown (tens of ms here); the targets (50 ms at 200 layers,
    1 s at 1000) are checked by the planning benchmark."""
    rng = random.Random(3)
    chain = random_chain(rng, 200, KINDS, 512)
    start = time.perf_counter()
    plan = make_plan(chain)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"planning 200 layers took {elapsed:.2f} s"
    assert plan.root.lo == 1 and plan.root.hi == 200
    assert plan.fma <= min(plan.forward_fma, plan.reverse_fma)
    assert tree_cost(Costs(chain), plan.root)[0] == plan.fma


def test_a_long_chain_with_runs_of_structured_layers_plans():
    rng = random.Random(5)
    chain = runs_chain(rng, 320, 256)
    plan = make_plan(chain)
    assert plan.root.lo == 1 and plan.root.hi == 320
    assert plan.fma <= min(plan.forward_fma, plan.reverse_fma)
    assert tree_cost(Costs(chain), plan.root)[0] == plan.fma
    assert make_plan(chain, plan.order).fma == plan.fma
