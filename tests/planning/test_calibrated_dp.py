"""The optimal-plan DP under a cost model other than fma (``_costs.py``): ``optimal_plan(model, cost)``
must attain the minimum of ``tree_ticks`` over every plan of the move set.

The brute force enumerates plan trees with the Model's node constructors (JAC; TAN/ADJ from unit
vectors; TAN/ADJ seeded with any sub-plan, dense or structured; a product of any two adjacent
sub-plans in any of their forms) and prices them with ``_costs.py``'s ``step_ticks``, never the
DP's arithmetic. Per sub-chain it keeps one tree per distinct (ticks, structure): exhaustive over
achievable costs, since a step's ticks depend on its inputs only through their structure (checked
against a full enumeration priced tree by tree with ``tree_ticks`` on chains of up to 4 factors).
"""
from __future__ import annotations

import random

import pytest
from _helpers.chains import ELEMENTWISE, make_chain, random_chain

import jacket
from jacket.planning import make_plan
from jacket.planning._costs import FMA, CalibratedCost, CostModel, Rates, step_ticks, tree_ticks
from jacket.planning._dp import optimal_plan
from jacket.planning._model import Model


def steps(node):
    return sum(1 for _ in node.postorder())


class Plans:
    """Every plan of every sub-chain of ``model``, priced under ``cost`` with ``step_ticks``.

    ``table[lo, hi]``: {(ticks, structure): (steps, recipe)}, the fewest steps per entry (enough:
    (ticks, steps) add up along a tree). A recipe says how the tree is made (the move, its split,
    the entries of its parts); :meth:`tree` builds it with the Model's constructors. A step's ticks
    depend on its parts only through their structure, so each is priced once per split and pair of
    structures, on trees built for the purpose, and the sums are taken over all entries.
    """

    def __init__(self, model: Model, cost: CostModel):
        self.model, self.cost, self.table, self.built = model, cost, {}, {}
        for length in range(1, model.n + 1):
            for lo in range(1, model.n - length + 2):
                self.table[lo, lo + length - 1] = self._enumerate(lo, lo + length - 1)

    def tree(self, lo, hi, key):
        if (lo, hi, key) not in self.built:
            model, recipe = self.model, self.table[lo, hi][key][1]
            move, k = recipe[0], recipe[1] if len(recipe) > 1 else None
            if move == "jac":
                node = model.jac(lo)
            elif move == "tan":
                node = model.tan(lo, hi) if k is None else model.tan(lo, hi, self.tree(lo, k, recipe[2]))
            elif move == "adj":
                node = model.adj(lo, hi) if k is None else model.adj(lo, hi, self.tree(k + 1, hi, recipe[2]))
            else:
                node = model.mul(self.tree(k + 1, hi, recipe[2]), self.tree(lo, k, recipe[3]))
            self.built[lo, hi, key] = node
        return self.built[lo, hi, key]

    def _enumerate(self, lo, hi):
        model, cost, found = self.model, self.cost, {}

        def add(node, ticks, count, recipe):  # node: this step (its parts of the right structure)
            key = (ticks + step_ticks(cost, model, node), node.structure)
            if key not in found or count + 1 < found[key][0]:
                found[key] = (count + 1, recipe)

        add(model.tan(lo, hi), 0, 0, ("tan",))
        add(model.adj(lo, hi), 0, 0, ("adj",))
        if lo == hi:
            add(model.jac(lo), 0, 0, ("jac",))
        for k in range(lo, hi):  # right part lo..k, left part k+1..hi
            left, right = self.table[k + 1, hi], self.table[lo, k]
            # a seeded sweep's ticks depend on the split only (not on the seed's form)
            push = model.tan(lo, hi, self.tree(lo, k, next(iter(right))))
            pull = model.adj(lo, hi, self.tree(k + 1, hi, next(iter(left))))
            for node, part, move in ((push, right, "tan"), (pull, left, "adj")):
                sweep = step_ticks(cost, model, node)
                for key, (count, _) in part.items():
                    found_key = (key[0] + sweep, node.structure)
                    if found_key not in found or count + 1 < found[found_key][0]:
                        found[found_key] = (count + 1, (move, k, key))
            priced = {}  # (left structure, right structure): (the product's step ticks, its structure)
            for key_l, (count_l, _) in left.items():
                for key_r, (count_r, _) in right.items():
                    pair = (key_l[1], key_r[1])
                    if pair not in priced:
                        node = model.mul(self.tree(k + 1, hi, key_l), self.tree(lo, k, key_r))
                        priced[pair] = (step_ticks(cost, model, node), node.structure)
                    step, s = priced[pair]
                    found_key, count = (key_l[0] + key_r[0] + step, s), count_l + count_r + 1
                    if found_key not in found or count < found[found_key][0]:
                        found[found_key] = (count, ("mul", k, key_l, key_r))
        return found


def all_trees(model: Model, lo, hi):
    """Every plan tree of J_hi ⋯ J_lo, without merging any (small chains only)."""
    trees = [model.tan(lo, hi), model.adj(lo, hi)] + ([model.jac(lo)] if lo == hi else [])
    for k in range(lo, hi):
        left, right = all_trees(model, k + 1, hi), all_trees(model, lo, k)
        trees += [model.mul(a, b) for a in left for b in right]
        trees += [model.tan(lo, hi, b) for b in right] + [model.adj(lo, hi, a) for a in left]
    return trees


def check_optimal(chain, cost, devices=1):
    """The DP's tree costs the brute-force minimum of ticks, in the fewest steps of any such plan;
    returns (tree, model)."""
    model = Model(chain, devices)
    plans = Plans(model, cost)
    found = plans.table[1, model.n]
    key, (fewest, _) = min(found.items(), key=lambda item: (item[0][0], item[1][0]))
    best = key[0]
    witness = plans.tree(1, model.n, key)
    assert tree_ticks(cost, model, witness) == best and steps(witness) == fewest
    tree = optimal_plan(model, cost)
    got = tree_ticks(cost, model, tree)
    assert got == best, f"{chain} ({cost.name}): the DP plan {tree.order()} costs {got:,} ticks, " \
                        f"but {witness.order()} costs {best:,}"
    assert steps(tree) == fewest, f"{tree.order()} takes {steps(tree)} steps, {witness.order()} {fewest}"
    return tree, model


# ---- synthetic rates (seconds per unit) -------------------------------------------------
BASE = dict(sweep_fma=2e-12, sweep_io=4e-12, mm_fma=1e-12, skinny_fma=3e-12, mm_io=2e-12, struct_fma=5e-12,
            step=2e-10)
RATES = {
    "plain": Rates("synthetic", **BASE),
    "huge_step": Rates("synthetic", **{**BASE, "step": 1e-6}),
    "slow_skinny": Rates("synthetic", **{**BASE, "skinny_fma": 4e-10}),
    "heavy_io": Rates("synthetic", **{**BASE, "sweep_io": 3e-10, "mm_io": 1e-12}),
    "costly_structure": Rates("synthetic", **{**BASE, "struct_fma": 2e-10}),
    "moderate_step": Rates("synthetic", **{**BASE, "step": 3e-8}),
    "heavy_mm_io": Rates("synthetic", **{**BASE, "mm_io": 2e-10}),
    "free_steps_no_io": Rates("synthetic", **{**BASE, "step": 0.0, "sweep_io": 0.0, "mm_io": 0.0}),
}
FAMILIES = {
    "dense": ["dense"],
    "elementwise": ["dense"] + ELEMENTWISE,
    "dplr": ["dense", "softmax", "layernorm", "tanh"],
    "structured_only": ELEMENTWISE + ["softmax", "layernorm", "logsoftmax"],
}


def wide_chain(rng, length, kinds):
    spec = [(rng.choice(kinds), rng.choice([2, 16, 63, 64, 80, 128])) for _ in range(length)]
    return make_chain(rng.choice([2, 64, 80, 128]), spec)


@pytest.mark.parametrize("rates", RATES)
@pytest.mark.parametrize("family", FAMILIES)
def test_calibrated_optimum_is_the_brute_force_minimum(rates, family):
    cost, kinds = CalibratedCost(RATES[rates]), FAMILIES[family]
    rng = random.Random(f"{rates}-{family}")
    for _ in range(5):
        chain = random_chain(rng, rng.randint(1, 5), kinds, max_width=rng.choice([8, 100]))
        check_optimal(chain, cost, rng.choice([1, 2]))
    for _ in range(3):  # widths about SKINNY (64): both dense-product rates, on wide products too
        check_optimal(wide_chain(rng, rng.randint(2, 5), kinds), cost, rng.choice([1, 2]))


def test_odd_multipliers_are_planned_exactly():
    """Cost models with arbitrary integer multipliers, a dense-product rate below the skinny one
    included (the DP adds their difference on the splits where no side is skinny)."""
    rng = random.Random("multipliers")
    for _ in range(40):
        cost = CostModel("test", *(rng.choice([0, 1, 2, 7, 50, 3000]) for _ in range(7)))
        kinds = FAMILIES[rng.choice(list(FAMILIES))]
        chain = wide_chain(rng, rng.randint(1, 5), kinds) if rng.random() < 0.5 else \
            random_chain(rng, rng.randint(1, 5), kinds, max_width=100)
        check_optimal(chain, cost, rng.choice([1, 2]))


def test_the_merged_enumeration_finds_the_minimum_of_every_tree():
    """On chains of up to 4 factors, the per-(ticks, structure) enumeration has the same minimum as
    pricing every tree with ``tree_ticks``."""
    rng = random.Random("trees")
    for rates in ("plain", "slow_skinny", "costly_structure"):
        cost = CalibratedCost(RATES[rates])
        for _ in range(2):
            chain = random_chain(rng, rng.randint(2, 4), FAMILIES["dplr"], max_width=100)
            model = Model(chain, rng.choice([1, 2]))
            everything = min(tree_ticks(cost, model, t) for t in all_trees(model, 1, model.n))
            merged = min(ticks for ticks, _ in Plans(model, cost).table[1, model.n])
            assert everything == merged
            assert tree_ticks(cost, model, optimal_plan(model, cost)) == everything


def test_fma_is_the_default_and_the_fma_ticks_are_the_fma():
    rng = random.Random("fma")
    for _ in range(20):
        chain = random_chain(rng, rng.randint(1, 6), FAMILIES["dplr"], max_width=100)
        model = Model(chain, rng.choice([1, 2]))
        tree = optimal_plan(model)
        assert tree == optimal_plan(model, FMA) == make_plan(chain, "optimal", devices=model.devices).root
        assert tree_ticks(FMA, model, tree) == tree.fma


def test_a_huge_step_cost_gives_a_single_sweep():
    """Each step costs 1 ms: a plan of one TAN or ADJ beats the fma optimum, which here has several."""
    chain = make_chain(8, [("dense", 100), ("tanh", 0), ("dense", 2), ("dense", 100), ("softmax", 0)])
    model = Model(chain)
    fma_tree = optimal_plan(model)
    assert steps(fma_tree) > 1
    cost = CalibratedCost(Rates("synthetic", **{**BASE, "step": 1e-3}))
    tree, _ = check_optimal(chain, cost)
    assert tree.op in ("TAN", "ADJ") and tree.seed is None
    assert tree_ticks(cost, model, tree) < tree_ticks(cost, model, fma_tree)


@pytest.mark.parametrize("rates", ["slow_skinny", "heavy_io", "costly_structure"])
def test_calibrated_optima_differ_from_the_fma_optimum(rates):
    """For each skewed rate, some small chain has a calibrated optimum strictly cheaper (in ticks)
    than the fma optimum: the DP does follow the model."""
    cost, rng = CalibratedCost(RATES[rates]), random.Random(f"differ-{rates}")
    for _ in range(40):
        chain = random_chain(rng, rng.randint(2, 5), FAMILIES["dplr"], max_width=100)
        model = Model(chain)
        tree, fma_tree = optimal_plan(model, cost), optimal_plan(model)
        if tree_ticks(cost, model, tree) < tree_ticks(cost, model, fma_tree):
            assert tree != fma_tree and tree.fma >= fma_tree.fma
            return
    pytest.fail(f"no chain where the {rates} optimum differs from the fma one")


@pytest.mark.parametrize("width, rates", [(70, "plain"), (70, "costly_structure"), (6, "free_steps_no_io")])
def test_blocks_are_priced_with_their_inner_plans(width, rates):
    """A Residual's JAC carries its inner plan's ticks under the same cost model; on these chains
    the optimum materialises it."""
    inner = jacket.Chain([jacket.Dense(width, width), jacket.Tanh(), jacket.Dense(width, width)])
    chain = jacket.Chain([jacket.Dense(80 if width > 8 else 8, width), jacket.Residual(inner), jacket.Tanh(),
                          jacket.Dense(width, width), jacket.Dense(width, 80)])
    tree, _ = check_optimal(chain, CalibratedCost(RATES[rates]))
    assert any(node.op == "JAC" and node.lo == 2 for node in tree.postorder())


def test_steps_too_costly_for_int64_are_refused():
    chain = make_chain(4, [("dense", 4), ("tanh", 0)])
    model = Model(chain)
    optimal_plan(model, CalibratedCost(Rates("synthetic", **{**BASE, "step": 1.0})))  # 10¹² ticks fit
    with pytest.raises(ValueError, match="too large to plan exactly"):
        optimal_plan(model, CalibratedCost(Rates("synthetic", **{**BASE, "step": 1e6})))
