"""The Jacobian with respect to the parameters, ``jacket.jacobian(chain, 0)`` (transforms/_jacobian.py
over planning/_params.py and execute/), against JAX's autodiff in float64: every order against
``jax.jacrev`` (MLP, blocks, a sequence, an image, a batch, random nested chains), mixed plans
re-seeded at a bottleneck, the optimal segmentation against brute force, its printed plan, and
clear errors. (Per-example gradients and the NTK: test_per_example.py.)

Each case compiles one program holding the rules and the reference: compiling is what costs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from _helpers.api import jac, plan_of
from _helpers.trees import trees

import jacket

ORDERS = ("forward", "reverse", "optimal")
D = 3


def _draw(chain, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = chain.init(jax.random.PRNGKey(seed), jnp.float64)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)
    x = jnp.asarray(rng.standard_normal(batch + chain.in_shape))
    return params, x


def _jacrev(chain, params, x):
    """The reference: ``jax.jacrev`` with respect to params, per example for a batch."""
    one = lambda xi: jax.jacrev(lambda p: chain.apply(p, xi))(params)  # noqa: E731
    return one(x) if x.shape == chain.in_shape else jax.vmap(one)(x)


def _assert_orders_equal_jacrev(chain, params, x, orders):
    """Every order (a name, a segment string or a Plan) against jax.jacrev, compiled as one program."""
    @jax.jit
    def both(params, x):
        return [jac(chain, params, x, order, argnums=0) for order in orders], _jacrev(chain, params, x)
    got, expected = both(params, x)
    for order, result in zip(orders, got):
        assert_close(result, expected, FLOAT64), order
    return got


def _segments(plan):
    """``(a, b, mode)`` of a parameter plan's sweeps, from the output end (1-based layers)."""
    return tuple((s.lo, s.hi, "reverse" if s.op == "ADJ" else "forward")
                 for s in plan.steps if s.op in ("ADJ", "TAN"))


def _order(segments):
    """The order string of ``segments``: ``adj(J7..J5) tan(J4..J1)``."""
    return " ".join(f"{'adj' if mode == 'reverse' else 'tan'}(J{b}..J{a})" for a, b, mode in segments)


BLOCKS = jacket.Chain([
    jacket.Dense(2, D),
    jacket.Residual([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Parallel([jacket.Dense(D, D), jacket.Tanh()]),
    jacket.Chain([jacket.Tanh(), jacket.Dense(D, 2)]),
])
CASES = {
    "mlp_one_example": (jacket.mlp([3, 4, 2]), ()),
    "blocks_batch": (BLOCKS, (2,)),
    "sequence_batch": (jacket.Chain([jacket.Dense(2, D), jacket.LayerNorm(D), jacket.Tanh(), jacket.Dense(D, 2)],
                                    in_shape=(3, 2)), (2,)),
    "image": (jacket.Chain([jacket.Conv2D(1, 2, (2, 2)), jacket.Tanh(), jacket.Flatten(), jacket.Dense(18, 2)],
                           in_shape=(1, 3, 3)), ()),
}


@pytest.mark.parametrize("name", list(CASES))
def test_params_jacobian_equals_jacrev_in_every_order(name):
    chain, batch = CASES[name]
    params, x = _draw(chain, batch)
    optimal = plan_of(chain, "optimal", argnums=0)
    if name != "mlp_one_example":  # "optimal" is one of the two: not compiled again
        assert optimal in (plan_of(chain, "forward", argnums=0), plan_of(chain, "reverse", argnums=0))
    orders = ORDERS if name == "mlp_one_example" else ORDERS[:2]
    got = _assert_orders_equal_jacrev(chain, params, x, orders)
    leaf = jax.tree_util.tree_leaves(params)[0]
    assert jax.tree_util.tree_leaves(got[0])[0].shape == batch + chain.out_shape + leaf.shape


@settings(max_examples=4, deadline=None)
@given(st.lists(trees(1), min_size=1, max_size=2), st.integers(0, 2 ** 16))
def test_random_nested_chains_equal_jacrev(body, seed):
    chain = jacket.Chain([jacket.Dense(2, D)] + body + [jacket.Dense(D, 2)])
    params, x = _draw(chain, (2,), seed)
    _assert_orders_equal_jacrev(chain, params, x, ORDERS)


def test_the_default_is_the_params_jacobian_as_for_jacfwd_and_list_params_give_lists():
    """``argnums=0`` by default, as ``jax.jacfwd``; ``(0, 1)`` gives both; params as a list give lists."""
    chain = jacket.mlp([3, 4, 2])
    params, x = _draw(chain, ())
    default, by_params, (both_params, both_x) = (jacket.jacobian(chain)(params, x), jac(chain, params, x, argnums=0),
                                                 jac(chain, params, x, argnums=(0, 1)))
    assert_close(default, by_params, FLOAT64)
    assert_close(both_params, by_params, FLOAT64)
    assert_close(both_x, jac(chain, params, x), FLOAT64)
    assert jacket.plan(chain)(None, x).argnums == 0 and jacket.plan(chain, 1)(None, x).argnums == 1
    assert isinstance(jac(chain, list(params), x, "reverse", argnums=0), list)


def test_optimal_is_the_cheaper_order_by_the_declared_costs():
    many_params = jacket.mlp([6, 8, 1])  # one output: reverse
    many_outputs = jacket.Chain([jacket.Dense(1, 1, bias=False),  # one parameter, eight outputs: forward
                                 jacket.Parallel([jacket.Tanh()] * 8, merge="concat")])
    for chain, best in ((many_params, "reverse"), (many_outputs, "forward")):
        costs = {mode: plan_of(chain, mode, argnums=0).fma for mode in ("forward", "reverse")}
        assert min(("forward", "reverse"), key=costs.get) == best, costs
        optimal = plan_of(chain, "optimal", argnums=0)
        assert optimal == plan_of(chain, best, argnums=0) and optimal.order == plan_of(chain, best, argnums=0).order
        assert (optimal.forward_fma, optimal.reverse_fma) == (costs["forward"], costs["reverse"])
    assert plan_of(many_params, argnums=0).model.entries == (0, 56, 0, 9)  # entries[0]: no layer 0


# ---- mixed plans: segments re-seeded at a boundary -------------------------------------------
# Eight tokens share the first Dense: its rules cost eight times its parameters, so rows through it
# are dear; after the one-wide Dense(48, 1) the output is eight wide again.
BOTTLENECK = jacket.Chain([jacket.Dense(3, 6), jacket.Tanh(), jacket.Flatten(), jacket.Dense(48, 1),
                           jacket.Dense(1, 8), jacket.Tanh(), jacket.Dense(8, 8)], in_shape=(8, 3))


def _all_segmentations(n, first):
    """Every cut of layers first … n into segments (a, b, mode), each in either mode, from the output end."""
    if first > n:
        yield ()
        return
    for hi in range(first, n + 1):
        for mode in ("forward", "reverse"):
            for rest in _all_segmentations(n, hi + 1):
                yield tuple(sorted(((first, hi, mode),) + rest, key=lambda seg: -seg[1]))


@pytest.mark.parametrize("chain", [BOTTLENECK, jacket.mlp([4, 3, 5, 2]), BLOCKS,
                                   jacket.Chain([jacket.Tanh(), jacket.Dense(4, 1), jacket.Dense(1, 1, bias=False),
                                                 jacket.Parallel([jacket.Tanh()] * 6, merge="concat")], in_shape=(4,))],
                         ids=["bottleneck", "mlp", "blocks", "wide_output"])
def test_the_optimal_segmentation_costs_the_brute_force_minimum(chain):
    plan = plan_of(chain, "optimal", argnums=0)
    model = plan.model
    n, first = len(chain), model.first

    def fma(segments):  # each sweep, and its product by ∂y_N/∂y_b below the top segment
        return sum(model.sweep_fma(a, b, mode) + model.product_fma(a, b) for a, b, mode in segments)
    every = {seg: fma(seg) for seg in _all_segmentations(n, first)}
    assert plan.fma == min(every.values())
    assert _segments(plan) in every and _segments(plan) == model.optimal_segments()
    assert every[_segments(plan)] <= min(every[((first, n, m),)] for m in ("forward", "reverse"))
    assert (plan.forward_fma, plan.reverse_fma) == (every[((first, n, "forward"),)], every[((first, n, "reverse"),)])
    assert plan_of(chain, plan.order, argnums=0) == plan  # the order string re-parses to the same plan


def test_a_bottleneck_re_seeds_the_reverse_sweep_and_equals_jacrev():
    """Eight outputs behind a one-wide layer, a shared Dense before it: the optimal plan pulls 8
    rows back to the bottleneck and one row through the layers before it, then multiplies."""
    plan = plan_of(BOTTLENECK, "optimal", argnums=0)
    segments = _segments(plan)
    assert plan.name == "optimal" and len(segments) >= 2, segments
    assert plan.fma < min(plan.forward_fma, plan.reverse_fma)
    assert [step.op for step in plan.steps].count("MUL") == len(segments) - 1
    text = str(plan)
    assert plan.order in text and "MUL" in text and "fewer than the better single mode" in text
    params, x = _draw(BOTTLENECK, (2,))
    some = [segments, ((5, 7, "forward"), (1, 4, "reverse")), ((3, 7, "reverse"), (1, 2, "forward")),
            ((7, 7, "forward"), (4, 6, "reverse"), (1, 3, "forward"))]
    # as order strings, and as the plans those strings give (both are accepted as order=)
    orders = [_order(seg) for seg in some[:2]] + [plan_of(BOTTLENECK, _order(seg), argnums=0) for seg in some[2:]]
    assert [_segments(plan_of(BOTTLENECK, o, argnums=0)) if isinstance(o, str) else _segments(o)
            for o in orders] == some
    _assert_orders_equal_jacrev(BOTTLENECK, params, x, orders)


# ---- errors ---------------------------------------------------------------------------------
def test_errors_name_what_was_given():
    chain = jacket.mlp([3, 4, 2])
    params, x = _draw(chain, ())
    with pytest.raises(ValueError, match=r"argnums must be 0 \(the parameters\), 1 \(the input x\) or a tuple of "
                                         r"them.*got 'weights'"):
        jacket.jacobian(chain, "weights")
    with pytest.raises(ValueError, match=r"invalid order '\(J2 J1\)' for a parameter Jacobian: expected "
                                         r"tan\(Jb..Ja\) or adj\(Jb..Ja\)"):
        jac(chain, params, x, "(J2 J1)", argnums=0)
    with pytest.raises(ValueError, match=r"this plan is for the Jacobian with respect to the input \(argnums=1\), "
                                         r"not the parameters \(argnums=0\)"):
        jac(chain, params, x, plan_of(chain, "optimal"), argnums=0)
    with pytest.raises(ValueError, match=r"this plan was made for another chain \(\(Dense\(3, 5\)"):
        jac(chain, params, x, plan_of(jacket.mlp([3, 5, 2]), "reverse", argnums=0), argnums=0)
    for option in ({"chunk": 2}, {"checkpoint": "sqrt"}, {"memory_limit": "1MB"}, {"mesh": jacket.make_mesh()}):
        with pytest.raises(ValueError, match=r"jacket.jacobian: the parameter Jacobian \(argnums=0\) is planned by "
                                             r"fma on one device"):
            jacket.jacobian(chain, 0, **option)
    with pytest.raises(ValueError, match=r"order='fastest' tunes the input Jacobian"):
        jacket.jacobian(chain, 0, order="fastest")


def test_the_params_plan_prints_both_orders_and_its_rows_sum_to_them(capsys):
    chain = jacket.Chain([jacket.Dense(3, 1), jacket.Tanh(), jacket.Dense(1, 8)])
    plan = plan_of(chain, "optimal", argnums=0)
    forward, reverse = plan_of(chain, "forward", argnums=0), plan_of(chain, "reverse", argnums=0)
    assert plan == min((forward, reverse), key=lambda p: p.fma) and plan.fma == min(forward.fma, reverse.fma)
    text = forward.table()
    assert f"forward (one tangent per parameter):     {forward.fma:,} fma" in text
    assert f"reverse (8 adjoint rows, shared):        {reverse.fma:,} fma" in text
    assert "x the better single mode" in text
    steps, layers = text.split("\n\n")[1:]
    row = steps.splitlines()[2]
    assert row.split()[:2] == ["1", "TAN"] and "J3..J1" in row
    rows = [line.split() for line in layers.splitlines()[2:]]
    assert len(rows) == len(chain)
    assert sum(int(r[-2].replace(",", "")) for r in rows) == forward.fma
    assert sum(int(r[-1].replace(",", "")) for r in rows) == reverse.fma
    with pytest.raises(ValueError, match=r"argnums must be 0 \(the parameters\), 1 \(the input x\).*got 'theta'"):
        jacket.plan(chain, "theta")
    with pytest.raises(ValueError, match=r"invalid order '\(J2 J1\)' for a parameter Jacobian"):
        plan_of(chain, "(J2 J1)", argnums=0)
    from jacket import cli
    assert cli.main(["plan", "8,4,2", "--wrt", "params"]) == 0
    assert "Jacobian with respect to the params" in capsys.readouterr().out
