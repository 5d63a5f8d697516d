"""``jacket train logistic | mlp | cnn | transformer`` and the examples behind them (src/jacket/examples/).

Quick runs by default; the full runs (mlp ≥ 0.95, cnn ≥ 0.97 test accuracy, transformer held-out
loss < 0.3 ln V) and the full notes check are slow.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacket
from jacket import cli

pytest.importorskip("sklearn", reason="the examples' data sets come from scikit-learn")

from jacket.examples import cnn, logistic, mlp, split, transformer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ACCURACY_LINE = re.compile(r"^test accuracy: [01]\.\d{4}$")
SEQUENCE_LINE = re.compile(r"^held-out sequence accuracy: [01]\.\d{4}$")


def _max_diff(a, b) -> float:
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree_util.tree_leaves(a),
                                                               jax.tree_util.tree_leaves(b)))


# ---- data ------------------------------------------------------------------------------------
def test_split_is_a_seeded_partition():
    train, test = split(100, 0.2, seed=3)
    assert len(test) == 20 and len(train) == 80
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    again, _ = split(100, 0.2, seed=3)
    other, _ = split(100, 0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_logistic_data_standardised_with_train_statistics_only():
    data = logistic.load_data(seed=0)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1, atol=1e-12)
    # The test split is scaled with the train statistics, so its mean is not exactly zero.
    assert np.abs(data.x_test.mean(axis=0)).max() > 1e-3
    assert set(np.unique(data.y_train)) == {0.0, 1.0} and data.y_train.shape == (len(data.x_train), 1)


# ---- logistic regression ---------------------------------------------------------------------
# (dtype, bound on |difference| / largest gradient entry): float64 leaves only rounding;
# float32 rounds each of the N terms of Xᵀ(p − y)/N at about 6e-8.
@pytest.mark.parametrize("dtype, rel_tol", [("float64", 1e-13), ("float32", 5e-5)])
def test_logistic_gradient_agrees_every_step(dtype, rel_tol):
    result = logistic.train(steps=25, dtype=dtype)
    assert result.checks == 2 * 25  # both optimizers, every step
    for pair, rel in result.max_rel_diff.items():
        assert rel <= rel_tol, f"{pair}: relative difference {rel:.2e} > {rel_tol:.0e} ({dtype})"
    if dtype == "float64":
        for pair, diff in result.max_diff.items():
            assert diff <= 1e-14, f"{pair}: {diff:.2e}"


def test_logistic_loss_decreases():
    result = logistic.train(steps=25)
    descent, adam = result.methods
    # Gradient descent on a smooth convex loss with a step below 2/L never goes up.
    assert np.all(np.diff(descent.losses) < 0), descent.losses
    assert adam.losses[-1] < 0.5 * adam.losses[0]
    assert descent.test_accuracy > 0.8 and adam.test_accuracy > 0.8


def test_closed_form_against_jax_grad_at_random_weights(key):
    data = logistic.load_data()
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    k_w, k_b = jax.random.split(key)
    params = {"w": jax.random.normal(k_w, (30, 1), jnp.float64), "b": jax.random.normal(k_b, (1,), jnp.float64)}
    chain = jacket.Chain([jacket.Dense(30, 1)])
    _, engine, diffs = logistic.checked_gradient(chain, jacket.BinaryCrossEntropyWithLogits(), params, x, y)
    engine_closed, engine_jax, closed_jax, scale = np.asarray(diffs)
    assert scale > 0.1  # random weights: far from the optimum, large gradients
    assert max(engine_closed, engine_jax, closed_jax) < 1e-13 * scale


def test_gradient_descent_step_is_w_minus_alpha_grad():
    params = {"w": jnp.array([[1.0], [2.0]]), "b": jnp.array([3.0])}
    grads = {"w": jnp.array([[0.5], [-1.0]]), "b": jnp.array([2.0])}
    new = logistic.gradient_descent_step(params, grads, 0.1)
    np.testing.assert_allclose(new["w"], [[0.95], [2.1]])
    np.testing.assert_allclose(new["b"], [2.8])


def test_train_logistic_command(capsys):
    assert cli.main(["train", "logistic", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "gradient agreement over 50 steps (float64)" in out
    for row in ("engine vs closed form", "engine vs jax.grad", "closed form vs jax.grad"):
        line = next(line for line in out.splitlines() if line.startswith(row))
        diff = float(line.split()[-2])
        assert diff <= 1e-14, line


# ---- the digits network ----------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_delta_recursion_by_hand_matches_engine_and_jax(activation, key):
    data = mlp.load_data()
    chain = mlp.make_chain(activation=activation)
    loss = jacket.SoftmaxCrossEntropy()
    params = chain.init(key, dtype=jnp.float64)
    x, y = jnp.asarray(data.x_train[:50], jnp.float64), jnp.asarray(data.y_train[:50])

    @jax.jit  # one compilation, not one per operation
    def gradients(params, x, y):
        hand = mlp.backprop_by_hand(chain, params, x, y)
        _, engine = jacket.value_and_grad(chain, loss)(params, x, y)
        reference = jax.grad(lambda p: loss.apply(chain.apply(p, x), y))(params)
        return hand, engine, reference

    hand, engine, reference = gradients(params, x, y)
    assert _max_diff(hand, engine) < 1e-14
    assert _max_diff(engine, reference) < 1e-14


def test_mlp_gradient_check_float32(key):
    data = mlp.load_data()
    chain = mlp.make_chain()
    params = chain.init(key, dtype=jnp.float32)
    diff, scale = mlp.gradient_check(chain, jacket.SoftmaxCrossEntropy(), params,
                                     jnp.asarray(data.x_train[:32]), jnp.asarray(data.y_train[:32]))
    assert scale > 1e-3  # a gradient worth comparing
    assert diff <= 1e-5 * scale


def test_mlp_quick_run_learns_and_is_reproducible():
    run = dict(epochs=1, max_steps=15, progress=False, log=None)
    first = mlp.train(seed=0, **run)
    again = mlp.train(seed=0, **run)
    assert first.steps == len(first.step_losses) == 15
    assert first.epoch_train_loss[-1] < 0.7 * first.initial_train_loss
    assert first.step_losses == again.step_losses and first.test_accuracy == again.test_accuracy


def test_train_mlp_command(tmp_path, capsys):
    plot = tmp_path / "curve.png"
    assert cli.main(["train", "mlp", "--quick", "--no-progress", "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert ACCURACY_LINE.match(lines[-1]), lines[-1]
    check = next(line for line in lines if line.startswith("gradient check"))
    assert float(re.search(r"= ([0-9.e+-]+)", check).group(1)) < 1e-5
    assert any(line.startswith("epoch   1") for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_mlp_without_tqdm_and_matplotlib(monkeypatch, tmp_path, capsys):
    for name in ("tqdm", "matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them now raises ImportError
    assert cli.main(["train", "mlp", "--quick", "--plot", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert any(line.startswith("epoch   1") for line in lines)  # per-epoch lines replace the bar
    assert ACCURACY_LINE.match(lines[-1])
    assert 'pip install "jacket[examples]"' in captured.err
    assert not (tmp_path / "c.png").exists()


# ---- the residual CNN ------------------------------------------------------------------------
def _reference_gradients(chain, params, x, y):
    """The engine's value and gradient next to jax.grad's (the reference), in one compilation."""
    loss = jacket.SoftmaxCrossEntropy()

    @jax.jit
    def both(params):
        value, engine = jacket.value_and_grad(chain, loss)(params, x, y)
        return value, engine, jax.grad(lambda p: loss.apply(chain.apply(p, x), y))(params)
    return both(params)


def test_cnn_data_are_the_mlp_digits_as_images():
    images, flat = cnn.load_data(seed=1), mlp.load_data(seed=1)
    assert images.x_train.shape == (len(flat.x_train), 1, 8, 8) and images.x_train.dtype == np.float32
    np.testing.assert_array_equal(images.x_test.reshape(len(flat.x_test), 64), flat.x_test)
    np.testing.assert_array_equal(images.y_train, flat.y_train)


def test_cnn_gradient_matches_jax_grad(key):
    chain = cnn.make_chain(channels=4)
    assert chain.shapes == ((1, 8, 8), (4, 8, 8), (4, 8, 8), (4, 8, 8), (4, 8, 8), (4, 4, 4), (64,), (10,))
    data = cnn.load_data()
    params = jax.jit(chain.init, static_argnames="dtype")(key, dtype=jnp.float64)  # one compilation, not one per draw
    x, y = jnp.asarray(data.x_train[:5], jnp.float64), jnp.asarray(data.y_train[:5])
    value, engine, reference = _reference_gradients(chain, params, x, y)
    assert value > 0.5  # random weights: far from the optimum
    assert _max_diff(engine, reference) < 1e-12


def test_train_cnn_command(tmp_path, capsys):
    plot = tmp_path / "curve.png"
    assert cli.main(["train", "cnn", "--quick", "--no-progress", "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert ACCURACY_LINE.match(lines[-1]), lines[-1]
    assert float(lines[-1].split()[-1]) > 0.5  # 20 steps; chance is 0.1
    assert lines[0] == "epoch   1" + lines[0][9:] and "Residual([Conv2D(16, 16, 3)" in lines[-5]
    start, end = map(float, re.fullmatch(r"train loss: (\S+) -> (\S+)", lines[-3]).groups())
    assert end < 0.6 * start
    assert "20 steps of batch 32" in lines[-4]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the transformer -------------------------------------------------------------------------
@pytest.mark.parametrize("task", transformer.TASKS)
def test_transformer_strings_and_targets(task):
    data = transformer.load_data(task, n_train=300, n_test=200, length=6, vocab=5, seed=2)
    assert data.x_train.shape == (300, 6, 5) and data.y_train.shape == (300, 6)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    tokens = data.x_train.argmax(axis=-1)
    np.testing.assert_array_equal(data.x_train.sum(axis=-1), 1)  # one-hot rows
    expected = np.sort(tokens, axis=1) if task == "sort" else tokens[:, ::-1]
    np.testing.assert_array_equal(data.y_train, expected)
    # held out: no test string occurs in training (5^6 strings, so a few were dropped)
    seen = {row.tobytes() for row in tokens}
    assert not any(row.tobytes() in seen for row in data.x_test.argmax(axis=-1))
    assert 150 < len(data.x_test) <= 200


def test_transformer_gradient_matches_jax_grad(key):
    chain = transformer.make_chain(length=5, vocab=7, d_model=8, heads=2)
    data = transformer.load_data(n_train=3, n_test=1, length=5, vocab=7)
    params = jax.jit(chain.init, static_argnames="dtype")(key, dtype=jnp.float64)
    x, y = jnp.asarray(data.x_train, jnp.float64), jnp.asarray(data.y_train)
    assert jax.eval_shape(chain.apply, params, x).shape == (3, 5, 7)  # logits (B, T, V), labels (B, T)
    value, engine, reference = _reference_gradients(chain, params, x, y)
    assert value > 1.0
    assert _max_diff(engine, reference) < 1e-12


@pytest.mark.slow  # 6 s; the transformer's gradient against jax.grad stays in the default run
def test_train_transformer_command_without_scikit_learn(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # it makes its own data
    assert cli.main(["train", "transformer", "--quick", "--no-progress", "--no-plot"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert SEQUENCE_LINE.match(lines[-1]), lines[-1]
    report = dict(line.split(": ", 1) for line in lines if ": " in line)
    chance = float(report["chance level ln 10"])
    assert chance == pytest.approx(np.log(10), abs=1e-4)
    start, end = map(float, re.match(r"(\S+) -> (\S+)", report["held-out loss"]).groups())
    assert start > 0.9 * chance and end < 0.5 * chance  # 60 steps
    assert float(report["held-out token accuracy"]) > 0.5  # chance: 0.1
    assert "60 steps of batch 64" in report["epochs"]


# ---- the command line --------------------------------------------------------------------------
def test_missing_scikit_learn_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert cli.main(["train", "logistic", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "scikit-learn" in err and 'pip install "jacket[examples]"' in err


@pytest.mark.parametrize("argv, words", [
    (["train", "mlp", "--epochs", "0"], "epochs"),
    (["train", "mlp", "--batch-size", "5000", "--quick"], "batch_size 5000"),
    (["train", "logistic", "--steps", "0"], "steps"),
    (["train", "cnn", "--epochs", "0"], "epochs"),
    (["train", "cnn", "--batch-size", "5000", "--quick"], "batch_size 5000"),
    (["train", "transformer", "--heads", "3"], "divisible by heads"),
    (["train", "transformer", "--batch-size", "9000"], "batch_size 9000"),
])
def test_bad_options_give_clear_errors(argv, words, capsys):
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("example, function, renames", [
    ("logistic", logistic.train, {"lr": "learning_rate", "adam_lr": "adam_learning_rate"}),
    ("mlp", mlp.train, {"lr": "learning_rate"}),
    ("cnn", cnn.train, {"lr": "learning_rate"}),
    ("transformer", transformer.train, {"lr": "learning_rate"}),
])
def test_command_defaults_are_the_functions_defaults(example, function, renames):
    # The command keeps its imports light, so it repeats the defaults; they must not drift.
    args = cli.build_parser().parse_args(["train", example])
    defaults = {k: p.default for k, p in inspect.signature(function).parameters.items()}
    compared = 0
    for option, value in vars(args).items():
        name = renames.get(option, option)
        if name in defaults:
            assert value == defaults[name], f"jacket train {example} --{option.replace('_', '-')}"
            compared += 1
    assert compared >= 4


# ---- the notes -------------------------------------------------------------------------------
def _generate(*args):
    return subprocess.run([sys.executable, str(ROOT / "notes" / "generate.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_notes_costs_and_gradients_in_sync(monkeypatch, capsys):
    # The parts that train nothing: planner costs (exact) and the float64 gradient comparisons,
    # in this process (the full check below runs the script as a user would).
    spec = importlib.util.spec_from_file_location("notes_generate", ROOT / "notes" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generate)  # dataclasses look their module up
    spec.loader.exec_module(generate)
    status = generate.main(["--check", "--parts", "free,cost,digits"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err


@pytest.mark.slow
def test_notes_fully_in_sync():
    done = _generate("--check")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_train_mlp_full_run_reaches_95_percent(capsys):
    assert cli.main(["train", "mlp", "--no-plot", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert ACCURACY_LINE.match(last), last
    assert float(last.split()[-1]) >= 0.95


def test_mlp_rejects_nonpositive_devices_clearly(capsys):
    from jacket.cli import main
    assert main(["train", "mlp", "--quick", "--no-plot", "--no-progress", "--devices", "0"]) == 2
    assert "devices must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cnn_full_run_reaches_97_percent(capsys):
    assert cli.main(["train", "cnn", "--no-plot", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert ACCURACY_LINE.match(last), last
    assert float(last.split()[-1]) >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("task", transformer.TASKS)
def test_transformer_full_run_far_below_chance(task):
    result = transformer.train(task=task, progress=False, log=None)
    assert result.epoch_test_loss[-1] < 0.3 * result.chance
    assert result.test_accuracy > 0.95


# ---- newton: Gauss-Newton / Levenberg-Marquardt by conjugate gradient -----------------------
from jacket.examples import float64, newton  # noqa: E402


def test_newton_cg_direction_and_lm_step_match_a_dense_solve():
    # A tiny MLP (26 parameters): G built densely from ggn_vp on unit vectors, (G + λI) d = −g
    # solved by numpy; CG with enough iterations must find the same d, and one accepted LM step
    # must move the parameters by exactly that d.
    from jax.flatten_util import ravel_pytree

    with float64():
        chain, loss = jacket.mlp([3, 4, 2], activation="tanh"), jacket.SoftmaxCrossEntropy()
        params = chain.init(jax.random.PRNGKey(1), dtype=jnp.float64)
        x = jax.random.normal(jax.random.PRNGKey(2), (6, 3), jnp.float64)
        y = jnp.array([0, 1, 1, 0, 1, 0])
        flat, unravel = ravel_pytree(params)
        size, damping = flat.size, 0.5
        product = jacket.ggn_vp(chain, loss)
        columns = jax.jit(jax.vmap(lambda e: ravel_pytree(product(params, x, y, unravel(e)))[0]))
        gram = np.asarray(columns(jnp.eye(size))).T  # row k of the vmap: G e_k
        np.testing.assert_allclose(gram, gram.T, atol=1e-12)  # symmetric, positive semi-definite
        assert np.linalg.eigvalsh(gram).min() > -1e-12
        _, grads = jacket.value_and_grad(chain, loss)(params, x, y)
        g = np.asarray(ravel_pytree(grads)[0])
        exact = np.linalg.solve(gram + damping * np.eye(size), -g)

        d, _, _ = newton.damped_direction(product, params, x, y, grads, damping, 3 * size)
        np.testing.assert_allclose(np.asarray(d), exact, rtol=1e-7, atol=1e-10)
        few, _, _ = newton.damped_direction(product, params, x, y, grads, damping, 2)
        assert np.linalg.norm(np.asarray(few) - exact) > 1e-6  # two iterations are not the solve

        step = newton.make_lm_step(chain, loss, 3 * size)
        new_params, new_damping, value = step(params, jnp.asarray(damping), x, y)
        moved = np.asarray(ravel_pytree(new_params)[0]) - np.asarray(flat)
        np.testing.assert_allclose(moved, exact, rtol=1e-7, atol=1e-10)
        assert float(loss.apply(chain.apply(new_params, x), y)) < float(value)
        assert float(new_damping) <= damping  # accepted: λ kept or lowered


def test_newton_quick_logistic_beats_gradient_descent():
    result = newton.train_problem("logistic", steps=15)
    gn, nc, gd = result.method("Gauss-Newton"), result.method("Newton-CG"), result.method("gradient")
    assert len(gn.losses) == 16
    assert np.all(np.diff(gn.losses) <= 0), gn.losses  # a rejected step leaves the loss unchanged
    assert gn.losses[-1] < 0.1 * gn.losses[0]
    assert gn.losses[-1] < gd.losses[-1] and gn.losses[-1] < result.method("optax.adam").losses[-1]
    # A linear model: the Gauss-Newton matrix is the Hessian, so ggn_vp and hvp steps agree.
    np.testing.assert_allclose(gn.losses, nc.losses, rtol=1e-9)


def test_train_newton_command(tmp_path, capsys):
    plot = tmp_path / "newton.png"
    assert cli.main(["train", "newton", "--quick", "--problem", "logistic", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert plot.stat().st_size > 0
    for words in ("Gauss-Newton LM", "Newton-CG LM", "gradient descent", "optax.adam", "steps to target"):
        assert words in out
    assert out.strip().splitlines()[-1].startswith("logistic: Gauss-Newton ")
    args = cli.build_parser().parse_args(["train", "newton"])
    defaults = inspect.signature(newton.train).parameters
    assert (args.problem, args.steps, args.seed) == tuple(defaults[k].default for k in ("problem", "steps", "seed"))


def test_train_newton_rejects_bad_steps(capsys):
    assert cli.main(["train", "newton", "--steps", "0", "--no-plot"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_newton_full_run_needs_fewer_steps_than_first_order():
    result = newton.train()  # the command's defaults (checked above), without the plot
    lines = newton.format_report(result).splitlines()
    assert lines[-2].startswith("logistic: Gauss-Newton reached") and lines[-1].startswith("mlp: Gauss-Newton reached")
    for problem in result.problems:
        gn = problem.method("Gauss-Newton")
        assert gn.steps_to_target is not None, problem.name
        for other in (problem.method("gradient"), problem.method("optax.adam")):
            assert other.steps_to_target is None or gn.steps_to_target * 3 <= other.steps_to_target, \
                (problem.name, other.name, gn.steps_to_target, other.steps_to_target)
