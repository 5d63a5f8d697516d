"""The front door, ``jacket.jacobian(chain, argnums)`` and ``jacket.plan`` (transforms/_jacobian.py),
equals JAX's in float64: against ``jax.jacfwd(chain, argnums)`` and ``jax.jacrev`` for argnums 0, 1
and (0, 1), on one example and on a batch (where the input Jacobian is jacfwd's block-diagonal
``(B,) + s_N + (B,) + s_0``), and ``jax.vmap`` of it over a batch against ``jax.vmap`` of jacfwd
(the per-example Jacobians), eagerly and under ``jax.jit``, on a small MLP and on a chain with a
Residual and a Parallel block; and ``jacket.plan`` returns the plan that ``jacket.jacobian`` runs,
for arrays, ``jax.ShapeDtypeStruct`` inputs and ``params=None``.

Small widths, and each chain's comparisons compiled as one program."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FLOAT64, assert_close

import jacket

ARGNUMS = (0, 1, (0, 1))
B = 2
CHAINS = {
    "mlp": jacket.mlp([3, 4, 2], activation="tanh"),
    "blocks": jacket.Chain([jacket.Dense(3, 4), jacket.Residual([jacket.LayerNorm(4), jacket.Dense(4, 4)]),
                            jacket.Tanh(), jacket.Parallel([jacket.Dense(4, 2), jacket.Tanh()], merge="concat")]),
}


def _draw(chain, seed=0):
    """Random params (LayerNorm's init of ones and zeros would hide terms), an example and a batch."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)),
                                    chain.init(jax.random.PRNGKey(seed), jnp.float64))
    return params, jnp.asarray(rng.standard_normal(chain.in_shape)), \
        jnp.asarray(rng.standard_normal((B,) + chain.in_shape))


def _ours(chain, params, x, xb):
    """``{str(argnums): (one example, a batch, vmapped over the batch)}`` by jacket.jacobian."""
    out = {}
    for a in ARGNUMS:
        fn = jacket.jacobian(chain, a)
        out[str(a)] = (fn(params, x), fn(params, xb), jax.vmap(fn, in_axes=(None, 0))(params, xb))
    return out


def _jax(chain, params, x, xb):
    """The same by ``jax.jacfwd`` and ``jax.jacrev`` with respect to both arguments (for each argnums,
    its part of them): ``(jacfwd's three, jacrev's one example and batch)``."""
    fwd, rev = jax.jacfwd(chain, (0, 1)), jax.jacrev(chain, (0, 1))
    return ((fwd(params, x), fwd(params, xb), jax.vmap(fwd, in_axes=(None, 0))(params, xb)),
            (rev(params, x), rev(params, xb)))


def _part(jacobians, argnums):
    """The part of a ``(params, x)`` pair of Jacobians that ``argnums`` asks for."""
    return jacobians if isinstance(argnums, tuple) else jacobians[argnums]


@pytest.mark.parametrize("name", list(CHAINS))
def test_jacobian_equals_jacfwd_and_jacrev_for_every_argnums(name):
    chain = CHAINS[name]
    params, x, xb = _draw(chain)
    both = jax.jit(lambda p, x, xb: (_ours(chain, p, x, xb), _jax(chain, p, x, xb)))
    # to NumPy at once: slicing device arrays eagerly would compile a program per slice
    jitted, expected, eager = jax.device_get((*both(params, x, xb), _ours(chain, params, x, xb)))
    s_0, s_N = chain.in_shape, chain.out_shape
    for a in ARGNUMS:
        (fwd_one, fwd_batch, fwd_vmap), (rev_one, rev_batch) = ([_part(j, a) for j in group] for group in expected)
        for ours in (jitted[str(a)], eager[str(a)]):
            one, batch, vmapped = ours
            assert_close(one, fwd_one, FLOAT64)
            assert_close(one, rev_one, FLOAT64)
            assert_close(batch, fwd_batch, FLOAT64)
            assert_close(batch, rev_batch, FLOAT64)
            assert_close(vmapped, fwd_vmap, FLOAT64)
        one, batch, vmapped = jitted[str(a)]
        input_jac = {0: None, 1: (one, batch, vmapped), (0, 1): (one[1], batch[1], vmapped[1])}[a]
        if input_jac is not None:  # the shapes of the input Jacobian, spelled out
            assert input_jac[0].shape == s_N + s_0
            assert input_jac[1].shape == (B,) + s_N + (B,) + s_0  # block diagonal: zero across examples
            assert input_jac[2].shape == (B,) + s_N + s_0
            for i in range(B):
                assert_close(input_jac[1][i, ..., i, :], input_jac[2][i], FLOAT64)
                for j in set(range(B)) - {i}:
                    assert not np.any(input_jac[1][i, ..., j, :])
        params_jac = {0: (one, batch, vmapped), 1: None, (0, 1): (one[0], batch[0], vmapped[0])}[a]
        if params_jac is not None:  # leaves s_N + leaf; on a batch and vmapped (B,) + s_N + leaf
            leaf = jax.tree_util.tree_leaves(params)[0].shape
            assert jax.tree_util.tree_leaves(params_jac[0])[0].shape == s_N + leaf
            assert jax.tree_util.tree_leaves(params_jac[1])[0].shape == (B,) + s_N + leaf
            assert_close(params_jac[1], params_jac[2], FLOAT64)
        if isinstance(a, tuple):
            assert isinstance(one, tuple) and len(one) == 2 and hasattr(one[1], "shape")
        assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(one)} == {jnp.dtype("float64")}


# ---- jacket.plan is the plan jacket.jacobian runs ---------------------------------------------
@pytest.fixture
def ran(monkeypatch):
    """The plans jacket.jacobian hands to the executor, recorded as they pass."""
    from jacket import execute
    plans = []
    for name in ("input_jacobian", "params_jacobian"):
        original = getattr(execute, name)

        def recording(chain, plan, *args, original=original, **kwargs):
            plans.append(plan)
            return original(chain, plan, *args, **kwargs)
        monkeypatch.setattr(execute, name, recording)
    return plans


OPTIONS = [(0, {}), (0, {"order": "reverse"}), (1, {}), (1, {"order": "forward"}), (1, {"order": "bracketing"}),
           (1, {"chunk": 2}), (1, {"checkpoint": "sqrt", "order": "reverse"}), (1, {"memory_limit": "1MB"}),
           ((0, 1), {}), ((0, 1), {"order": ("forward", "reverse")})]


@pytest.mark.parametrize("name", list(CHAINS))
def test_plan_returns_the_plan_that_jacobian_runs(name, ran):
    """Traced only (``jax.eval_shape``): nothing is compiled."""
    chain = CHAINS[name]
    params, x, xb = _draw(chain)
    params_shapes = jax.eval_shape(lambda: params)
    n = len(chain)
    for argnums, options in OPTIONS:
        if options.get("order") == "bracketing":
            options = {"order": f"(J{n} tan(J{n - 1}..J1))"}
        for inputs in (x, xb):
            ran.clear()
            jax.eval_shape(jacket.jacobian(chain, argnums, **options), params, inputs)
            by_jacobian = tuple(ran) if isinstance(argnums, tuple) else ran[0]
            assert len(ran) == (len(argnums) if isinstance(argnums, tuple) else 1)
            plan_fn = jacket.plan(chain, argnums, **options)
            spec = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)
            for planned in (plan_fn(params, inputs), plan_fn(None, spec), plan_fn(params_shapes, spec)):
                assert planned == by_jacobian, (argnums, options)
                pairs = zip(planned, by_jacobian) if isinstance(argnums, tuple) else [(planned, by_jacobian)]
                for p, q in pairs:
                    assert p.order == q.order and p.fma == q.fma and (p.chunk, p.checkpoint) == (q.chunk, q.checkpoint)
                    assert p.argnums == q.argnums
                    if p.argnums == 1:
                        assert (p.dtype, p.memory_limit) == (q.dtype, q.memory_limit) == ("float64", p.memory_limit)
    # a plan passed back as the order runs as itself; its order string re-parses to it
    for argnums in (0, 1):
        plan = jacket.plan(chain, argnums, order="forward")(None, jax.ShapeDtypeStruct(chain.in_shape, jnp.float64))
        ran.clear()
        jax.eval_shape(jacket.jacobian(chain, argnums, order=plan), params, x)
        assert ran == [plan]
        assert jacket.plan(chain, argnums, order=plan.order)(None, x) == plan


def test_plan_checks_what_it_is_given():
    chain = CHAINS["mlp"]
    with pytest.raises(ValueError, match=r"jacket.plan: x has shape \(4,\), but must have shape \(3,\)"):
        jacket.plan(chain, 1)(None, jax.ShapeDtypeStruct((4,), jnp.float32))
    with pytest.raises(ValueError, match=r"jacket.plan: params must be a tuple with one entry per layer"):
        jacket.plan(chain, 1)(({},), jnp.ones(3))
    with pytest.raises(ValueError, match=r"order has 1 entries for argnums \(0, 1\)"):
        jacket.plan(chain, (0, 1), order=("forward",))
    with pytest.raises(TypeError, match=r"jacket.jacobian: takes a jacket.Chain \(or a jacket layer\); a plain "
                                        r"function \(sin\) is not supported yet"):
        jacket.jacobian(jnp.sin, 1)
    with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh"):
        jacket.jacobian(chain, 1, mesh=2)
    assert jacket.plan(chain, 1, mesh=2)(None, jnp.ones(3)).devices == 2  # a plan may be for a device count
