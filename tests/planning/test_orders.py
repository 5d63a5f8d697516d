"""The order grammar (``_orders.py``): every bracketing, tan/adj orders, round trips, and the
error messages for bad orders (what is wrong, and where). The generators of bracketings and
random orders live in ``tests/_helpers/orders.py``.
"""
from __future__ import annotations

import random
import re

import jax
import pytest
from _helpers.orders import bracketings, catalan, dense_chain, random_order, tree_string

import jacket
from jacket.planning import make_plan

# A 5-factor chain with every kind of Jacobian structure (dense, diagonal, diagonal + rank 1/2).
CHAIN5 = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.LayerNorm(4), jacket.Softmax(),
                       jacket.Dense(4, 2)])


# ---- bracketings ------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(1, 7))
def test_bracketing_generator_gives_catalan_many_distinct(n):
    strings = [tree_string(t) for t in bracketings(1, n)]
    assert len(strings) == catalan(n - 1)
    assert len(set(strings)) == len(strings)


@pytest.mark.parametrize("n", range(1, 6))
def test_every_bracketing_parses_and_formats_back_unchanged(n):
    chain = dense_chain(tuple(range(2, n + 3)))
    plans = set()
    for tree in bracketings(1, n):
        text = tree_string(tree)
        plan = make_plan(chain, text)
        assert plan.order == text
        assert all(step.op in ("JAC", "MUL") for step in plan.steps)
        assert sum(step.op == "JAC" for step in plan.steps) == n
        plans.add(plan)
    assert len(plans) == catalan(n - 1)  # distinct trees give distinct plans


def test_outer_parentheses_case_and_spacing_are_optional():
    chain = dense_chain((2, 3, 4, 5))
    reference = make_plan(chain, "(J3 (J2 J1))")
    for text in ["J3 (J2 J1)", "  ( J3(J2 J1) ) ", "(j3 (j2 j1))", "(J3\t(J2  J1))"]:
        assert make_plan(chain, text) == reference, text


def test_tan_and_adj_from_unit_vectors_are_forward_and_reverse():
    for spelling in ["tan(J5..J1)", "tan(J5 J4 J3 J2 J1)", "TAN( J5..J1 )"]:
        assert make_plan(CHAIN5, spelling) == make_plan(CHAIN5, "forward")
    for spelling in ["adj(J5..J1)", "adj(J5 J4 J3 J2 J1)"]:
        assert make_plan(CHAIN5, spelling) == make_plan(CHAIN5, "reverse")
    assert make_plan(CHAIN5, "forward").order == "tan(J5..J1)"
    assert make_plan(CHAIN5, "reverse").order == "adj(J5..J1)"


def test_seeded_tan_and_adj_parse_to_the_intended_steps():
    plan = make_plan(CHAIN5, "tan(J5 J4 | adj(J3..J1))")
    root = plan.root
    assert (root.op, root.lo, root.hi, root.through) == ("TAN", 1, 5, (4, 5))
    assert (root.seed.op, root.seed.lo, root.seed.hi, root.seed.through) == ("ADJ", 1, 3, (1, 3))
    plan = make_plan(CHAIN5, "adj((J5 J4) | J3..J1)")
    root = plan.root
    assert (root.op, root.lo, root.hi, root.through) == ("ADJ", 1, 5, (1, 3))
    assert (root.seed.op, root.seed.lo, root.seed.hi) == ("MUL", 4, 5)
    # a single factor before '|' is a seed, not a factor list
    root = make_plan(CHAIN5, "adj(J5 | J4..J1)").root
    assert (root.seed.op, root.seed.lo, root.through) == ("JAC", 5, (1, 4))


@pytest.mark.parametrize("seed", range(40))
def test_random_mixed_orders_round_trip(seed):
    rng = random.Random(seed)
    text = random_order(rng, 1, len(CHAIN5))
    plan = make_plan(CHAIN5, text)
    again = make_plan(CHAIN5, plan.order)
    assert again == plan, (text, plan.order)
    assert again.fma == plan.fma and again.order == plan.order


# ---- bad orders -------------------------------------------------------------------------
BAD_ORDERS = [  # (factors in the chain, order, what the message must say)
    (5, "(J5 (J4 (J3 (J2 J0))))", r"unknown factor 'J0': this chain has factors J1\.\.J5"),
    (5, "(J9 (J4 (J3 (J2 J1))))", r"unknown factor 'J9': this chain has factors J1\.\.J5"),
    (5, "(J4 (J3 (J2 J1)))", r"missing factor\(s\) J5"),
    (5, "(J5 (J4 (J3 J1)))", r"factor\(s\) J2 missing between J3 and J1"),
    (5, "(J5 (J2 J1))", r"factor\(s\) J4\.\.J3 missing between J5 and J2"),
    (2, "(J1 J2)", r"out of product order: J2 must stand to the left of J1"),
    (5, "(J5 (J4 (J3 (J1 J2))))", r"out of product order"),
    (2, "(J2 J2)", r"factor J2 repeated"),
    (5, "((J5 (J4 (J3 (J2 J1))))", r"unbalanced parentheses: '\(' at position 0 is never closed"),
    (5, "(J5 (J4 (J3 (J2 J1)))", r"unbalanced parentheses: '\(' at position 0 is never closed"),
    (5, "(J5 (J4 (J3 (J2 J1)))))", r"unbalanced parentheses: '\)' closes nothing"),
    (5, "backward", r"unknown word 'backward'"),
    (2, "(J2 foo)", r"unknown word 'foo'"),
    (3, "J3 J2 J1", r"unexpected 'J1' after a complete product .*bracket it"),
    (3, "(J3 J2 J1)", r"a bracket must hold exactly two sub-products; found a third, 'J1'"),
    (3, "(J3)", r"a bracket must hold exactly two sub-products, found one"),
    (3, "", r"empty order"),
    (3, "forward (J2 J1)", r"'forward' names a whole order"),
    (3, "(J3 + (J2 J1))", r"unexpected '\+'"),
    (5, "tan(J1..J5)", r"a range runs from the later factor down: write J5\.\.J1"),
    (5, "tan(J5..J1", r"'\(' at position 0 is never closed"),
    (5, "adj(J5 J3 J2 J1)", r"J3 does not follow J5: factor\(s\) J4 missing"),
    (5, "tan(J5 J3..J1)", r"J3 does not follow J5: factor\(s\) J4 missing"),
    (5, "tan(J5 J4 | (J2 J1))", r"the seed after '\|' must end just before J4"),
    (5, "adj((J5 J4) | J2 J1)", r"the factors after '\|' must end just before J4"),
    (5, "adj(J5..J1 J3)", r"expected '\)' or '\|'"),
]


@pytest.mark.parametrize("n, order, message", BAD_ORDERS, ids=[o or "empty" for _, o, _ in BAD_ORDERS])
def test_bad_order_says_what_and_where(n, order, message):
    chain = jacket.Chain([jacket.Tanh()] * n, in_shape=3)
    with pytest.raises(ValueError, match=message) as info:
        make_plan(chain, order)
    text = str(info.value)
    # where: "at position P", the order echoed, and a caret under column P
    position = int(re.findall(r"at position (\d+)", text)[-1])  # the last: a message may cite another
    lines = text.splitlines()
    assert lines[-2] == "    " + order
    assert lines[-1] == "    " + " " * position + "^"
    assert 0 <= position <= len(order)


def test_caret_points_at_the_offending_token():
    with pytest.raises(ValueError, match="position") as info:
        make_plan(CHAIN5, "(J5 (J4 (J3 (J2 J7))))")
    caret_line = str(info.value).splitlines()[-1]
    assert "(J5 (J4 (J3 (J2 J7))))"[caret_line.index("^") - 4:].startswith("J7")


@pytest.mark.parametrize("order", [3, None, ["forward"], b"forward"])
def test_an_order_that_is_not_a_string_or_plan_is_a_type_error(order):
    with pytest.raises(TypeError, match=f"order must be a string or a Plan, got {type(order).__name__}"):
        make_plan(CHAIN5, order)
    if isinstance(order, list):
        return  # the front door reads a list as one order per argnum (here one, "forward")
    # the front door checks it when the transform is made, before any array exists
    with pytest.raises(TypeError, match=rf"order must be a string .* or a Plan from jacket.plan, got "
                                        rf"{type(order).__name__}"):
        jacket.plan(CHAIN5, 1, order=order)


def test_a_plan_for_another_chain_is_rejected():
    other = dense_chain((3, 4, 4, 4, 4, 2))
    with pytest.raises(ValueError, match=r"made for another chain \(.*\), widths \(3, 4, 4, 4, 4\)\), not Chain"):
        make_plan(other, make_plan(jacket.Chain(CHAIN5.layers[:4])))
    # same widths, other layers: the plan's costs would be wrong for this chain
    tanh, softmax = jacket.Chain([jacket.Dense(4, 4), jacket.Tanh()]), jacket.Chain([jacket.Dense(4, 4), jacket.Softmax()])
    with pytest.raises(ValueError, match=r"made for another chain \(\(Dense\(4, 4\), Tanh\(\)\)"):
        make_plan(softmax, make_plan(tanh))
    with pytest.raises(ValueError, match="widths"):
        make_plan(dense_chain((3, 5, 2)), make_plan(dense_chain((3, 4, 2)), "forward"))
    # the front door refuses it too, when its function is called
    x = jax.ShapeDtypeStruct((3,), "float32")
    with pytest.raises(ValueError, match="widths"):
        jacket.plan(dense_chain((3, 5, 2)), 1, order=make_plan(dense_chain((3, 4, 2)), "forward"))(None, x)
    with pytest.raises(ValueError, match="widths"):
        jacket.plan(dense_chain((3, 5, 2)), 1, order=jacket.plan(dense_chain((3, 4, 2)), 1, order="forward")(None, x))(None, x)
    # and the same plan is accepted (returned as is) by its own chain
    plan = make_plan(CHAIN5)
    assert make_plan(CHAIN5, plan) is plan
    assert jacket.plan(CHAIN5, 1, order=plan)(None, jax.ShapeDtypeStruct((3,), "float32")) is plan
