"""to_jax: JAX differentiates a chain with the chain's own rules, and gets JAX's own answers."""
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jacket
from jacket.cli import main

MODES = ("vjp", "jvp")
# every built-in layer, once, in one chain (float64: comparisons at rounding level)
ALL_LAYERS = jacket.Chain([
    jacket.Dense(3, 5), jacket.Tanh(), jacket.Dense(5, 5, bias=False), jacket.Sigmoid(), jacket.LayerNorm(5),
    jacket.ReLU(), jacket.Dense(5, 5), jacket.Softplus(), jacket.GELU(), jacket.Softmax(), jacket.LogSoftmax(),
    jacket.Dense(5, 2),
])


SMALL = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.LayerNorm(4), jacket.Dense(4, 2)])


def random_params(chain, seed=0):
    """Initial parameters plus noise: LayerNorm's scale of ones and zero biases would hide terms."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a) + 0.3 * rng.standard_normal(a.shape)),
                                  chain.init(jax.random.PRNGKey(seed), jnp.float64))


def random_x(chain, *batch, seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((*batch, chain.dims[0])))


def assert_trees_close(actual, expected, rtol=1e-10, atol=1e-12):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def squared(f):
    return lambda params, x: (f(params, x) ** 2).sum()


@pytest.mark.parametrize("mode", MODES)
def test_grad_jacrev_and_vmap_under_jit_equal_jax(mode):
    f, chain = jacket.to_jax(SMALL, mode), SMALL
    params, x = random_params(chain), random_x(chain, 4)

    def derivatives(g):  # gradient, Jacobian at one example, per-example gradients
        return (jax.grad(squared(g), argnums=(0, 1))(params, x), jax.jacrev(g, argnums=(0, 1))(params, x[0]),
                jax.vmap(jax.grad(squared(g)), in_axes=(None, 0))(params, x))
    ours, by_jax = jax.jit(lambda: (derivatives(f), derivatives(chain.apply)))()
    assert_trees_close(ours, by_jax)
    np.testing.assert_array_equal(f(params, x), chain.apply(params, x))


def test_jvp_mode_gives_forward_mode():
    f, chain = jacket.to_jax(SMALL, "jvp"), SMALL
    params, x = random_params(chain), random_x(chain)
    jacobians = jax.jit(lambda p, v: (jax.jacfwd(f, argnums=(0, 1))(p, v),
                                      jax.jacfwd(chain.apply, argnums=(0, 1))(p, v)))
    assert_trees_close(*jacobians(params, x))


def test_jvp_mode_reverse_mode_transposes_every_builtin_rule():
    # JAX linearises each layer's JVP rule and transposes it: every rule must be linear in the
    # tangents and built from transposable operations
    f, chain = jacket.to_jax(ALL_LAYERS, "jvp"), ALL_LAYERS
    params, x = random_params(chain), random_x(chain, 4)
    grads = jax.jit(lambda p, v: (jax.grad(squared(f), argnums=(0, 1))(p, v),
                                  jax.grad(squared(chain.apply), argnums=(0, 1))(p, v)))
    assert_trees_close(*grads(params, x))


def test_vjp_mode_refuses_forward_mode_as_jax_does():
    f = jacket.to_jax(SMALL, "vjp")
    params, x = random_params(SMALL), random_x(SMALL)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda v: f(params, v), (x,), (x,))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"mode must be one of \('vjp', 'jvp'\), got 'reverse'"):
        jacket.to_jax(SMALL, mode="reverse")
    with pytest.raises(TypeError, match="expects a jacket.Chain, got Dense"):
        jacket.to_jax(jacket.Dense(2, 2))


def test_params_as_a_list():
    params, x = list(random_params(SMALL)), random_x(SMALL, 4)
    grads = jax.jit(lambda p, v: (jax.grad(squared(jacket.to_jax(SMALL)))(p, v),
                                  jax.grad(squared(SMALL.apply))(p, v)))
    grad, grad_by_jax = grads(params, x)
    assert isinstance(grad, list)
    assert_trees_close(grad, grad_by_jax)


# ---- the wrapped function really runs the engine's rules: a wrong rule shows up in JAX --------
class DoubledTanhVJP(jacket.Tanh):
    def vjp(self, params, x, y, y_bar):
        return {}, 2 * (1 - y * y) * y_bar


class DoubledTanhJVP(jacket.Tanh):
    def jvp(self, params, x, y, x_dot, params_dot=None):
        return 2 * (1 - y * y) * x_dot


def test_a_wrong_vjp_rule_shows_up_in_jax_grad():
    right = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.Dense(4, 2)])
    wrong = jacket.Chain([jacket.Dense(3, 4), DoubledTanhVJP(), jacket.Dense(4, 2)])
    params, x = random_params(right), random_x(right, 5)
    grad = jax.grad(squared(jacket.to_jax(wrong)), argnums=(0, 1))(params, x)
    expected = jax.grad(squared(right.apply), argnums=(0, 1))(params, x)
    # everything below the Tanh is pulled through the doubled rule; the last Dense is not
    assert_trees_close(grad[0][0], jax.tree_util.tree_map(lambda g: 2 * g, expected[0][0]))
    assert_trees_close(grad[1], 2 * expected[1])
    assert_trees_close(grad[0][2], expected[0][2])


def test_a_wrong_jvp_rule_shows_up_in_jax_jvp_and_its_transpose():
    right = jacket.Chain([jacket.Dense(3, 4), jacket.Tanh(), jacket.Dense(4, 2)])
    wrong = jacket.Chain([jacket.Dense(3, 4), DoubledTanhJVP(), jacket.Dense(4, 2)])
    params, x = random_params(right), random_x(right, 5)
    x_dot = random_x(right, 5, seed=2)
    f = jacket.to_jax(wrong, "jvp")
    _, y_dot = jax.jvp(lambda v: f(params, v), (x,), (x_dot,))
    _, expected = jax.jvp(lambda v: right.apply(params, v), (x,), (x_dot,))
    assert_trees_close(y_dot, 2 * expected)
    # reverse mode is JAX's transpose of the (wrong) JVP rule, so the gradient is doubled as well
    grad = jax.grad(squared(f), argnums=1)(params, x)
    assert_trees_close(grad, 2 * jax.grad(squared(right.apply), argnums=1)(params, x))


# ---- optax -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_optax_adam_steps_equal_those_with_jax_autodiff(mode):
    chain = jacket.Chain([jacket.Dense(2, 8), jacket.Tanh(), jacket.LayerNorm(8), jacket.Dense(8, 1)])
    x = random_x(chain, 32)
    target = jnp.sin(x[:, :1]) * x[:, 1:]
    optimizer = optax.adam(1e-2)

    def train(f, steps=20):
        params = random_params(chain)
        state = optimizer.init(params)

        def loss(params):
            return jnp.mean((f(params, x) - target) ** 2)

        @jax.jit
        def step(params, state):
            value, grads = jax.value_and_grad(loss)(params)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value
        values = []
        for _ in range(steps):
            params, state, value = step(params, state)
            values.append(float(value))
        return params, values

    params, values = train(jacket.to_jax(chain, mode))
    params_by_jax, values_by_jax = train(chain.apply)
    assert values[-1] < values[0]
    np.testing.assert_allclose(values, values_by_jax, rtol=1e-9)
    assert_trees_close(params, params_by_jax, rtol=1e-8, atol=1e-10)


# ---- notes/custom-layer.md runs as written -------------------------------------------------------
NOTE = Path(__file__).resolve().parents[2] / "notes" / "custom-layer.md"


def test_custom_layer_note_runs(tmp_path, monkeypatch, capsys):
    text = NOTE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (command,) = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)
    # the first block is the module sine.py; the others run after it, in its namespace
    (tmp_path / "sine.py").write_text(blocks[0])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    monkeypatch.delitem(sys.modules, "sine", raising=False)
    import sine
    namespace = dict(vars(sine))
    try:
        for block in blocks[1:]:
            exec(compile(block, str(NOTE), "exec"), namespace)
        assert "rule vjp, argument x," in capsys.readouterr().out
        # the shell command, through the same entry point as the `jacket` script
        argv = command.split()
        assert argv[:2] == ["jacket", "check"]
        assert main([a.strip("'") for a in argv[1:]]) == 0
        assert "Sine(features=4)" in capsys.readouterr().out
    finally:
        sys.modules.pop("sine", None)
