"""``jacket plan`` (widths or a named architecture, nested plan tables) and ``jacket demo``
(slow: it times and checks everything, as a user's first command does)."""
from __future__ import annotations

import re

import pytest
from _helpers.api import plan_of

from jacket import cli
from jacket.examples import architectures


def test_named_architectures_build_with_their_documented_shapes():
    assert architectures.residual_mlp().shapes[0] == (784,) and architectures.residual_mlp().out_shape == (10,)
    assert architectures.transformer_block().shapes == ((16, 64),) * 3
    assert architectures.cnn().in_shape == (1, 8, 8) and architectures.cnn().out_shape == (10,)
    assert len(architectures.residual_mlp(blocks=5)) == 8
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet'; choose from residual-mlp, transformer, cnn"):
        architectures.build("resnet")


def test_plan_of_a_transformer_block_shows_the_nested_plan(capsys):
    assert cli.main(["plan", "--model", "transformer"]) == 0
    out = capsys.readouterr().out
    chain = architectures.transformer_block()
    plan = plan_of(chain, "optimal")  # what the command plans: one float32 example
    assert re.search(rf"this plan: +{plan.fma:,} fma", out)
    assert "J2 = Residual from the plan below" in out
    nested = re.findall(r"^1\.\d+ ", out, flags=re.M)
    assert nested, out  # the block's inner plan, numbered under its step
    assert plan.fma < min(plan_of(chain, "forward").fma, plan_of(chain, "reverse").fma)


def test_plan_takes_inner_orders_and_refuses_bad_arguments(capsys):
    assert cli.main(["plan", "--model", "residual-mlp", "--order", "J6 (J5 (J4[forward] (J3 (J2 J1))))"]) == 0
    assert "J4[tan(J3..J1)]" in capsys.readouterr().out  # forward, inside the block
    assert cli.main(["plan"]) == 2
    assert "give either widths" in capsys.readouterr().out
    assert cli.main(["plan", "8,4,2", "--model", "cnn"]) == 2
    assert "not both or neither" in capsys.readouterr().out
    # --act shapes a chain of widths; an architecture's activations are its own
    assert cli.main(["plan", "--model", "cnn", "--act", "relu"]) == 2
    assert "--act applies to a chain of widths, not to --model cnn" in capsys.readouterr().out
    # an empty width is a typo, not a width to skip
    assert cli.main(["plan", "784,,10"]) == 2
    assert ("widths must be comma-separated integers without gaps, got '784,,10' (an empty width at position 2)"
            in capsys.readouterr().out)
    assert cli.main(["plan", "784,ten"]) == 2
    assert "widths must be comma-separated integers, got '784,ten'" in capsys.readouterr().out
    assert cli.main(["plan", "784"]) == 2
    assert "need at least two positive widths, got '784'" in capsys.readouterr().out
    assert cli.main(["plan", "--model", "cnn", "--order", "J3[forward] J2 J1"]) == 2
    assert "at position 15" in capsys.readouterr().out


def test_plan_under_a_memory_limit_chunks_checkpoints_or_names_the_smallest_limit(capsys):
    from jacket import mlp
    from jacket.planning import smallest_limit
    chain = mlp([64, 512, 512, 64], activation="tanh")
    floor = smallest_limit(chain, batch=8)
    assert cli.main(["plan", "64,512,512,64", "--memory-limit", str(floor), "--batch", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"memory limit: +[\d.]+ MB for 8 examples; this plan needs", out) and "chunk:" in out, out
    assert cli.main(["plan", "64,512,512,64", "--memory-limit", str(floor - 1), "--batch", "8"]) == 2
    assert f"pass memory_limit >= {floor}" in capsys.readouterr().out
    assert cli.main(["plan", "64,512,512,64", "--order", "reverse", "--checkpoint", "2", "--dtype", "float64"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    assert cli.main(["plan", "64,512,512,64", "--memory-limit", "a lot"]) == 2
    assert "cannot read 'a lot' as bytes" in capsys.readouterr().out
    assert cli.main(["plan", "64,512,512,64", "--order", "reverse", "--checkpoint", "binomial:3"]) == 0
    assert "('binomial', 3)" in capsys.readouterr().out
    assert cli.main(["plan", "64,512,512,64", "--checkpoint", "many"]) == 2
    assert "--checkpoint must be" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_and_agrees_with_jax(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "all results agree with JAX: yes" in out
    for name in ("residual MLP", "transformer block", "residual CNN"):
        assert name in out
