"""jacket.tuning: the calibration file (round trip, missing, corrupt, stale), the calibrated cost
model in plans and tables, autotuning with its disk cache (keys, reuse without timing, a stale
entry), and the commands. Timing is never asserted: fixed synthetic rates stand in for a
measurement wherever a test needs one, and the one real calibration only checks its shape."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers.api import plan_of

import jacket
from jacket import cli
from jacket.planning import make_plan
from jacket.planning._costs import FMA, CalibratedCost, Rates
from jacket.tuning import _autotune, _calibrate, cache_dir, load_rates, rates_for
from jacket.tuning._cache import write_json

RATES = Rates(device="cpu", sweep_fma=2e-11, sweep_io=2e-10, mm_fma=1e-11, skinny_fma=3e-11, mm_io=2e-10,
              struct_fma=4e-10, step=2e-6)
BOTTLENECK = jacket.mlp([64, 64, 4, 64, 64], activation="tanh")


def _store(rates=RATES):
    write_json(_calibrate.calibration_path(), {"rates": rates.as_dict(), "measured_s": {"a program": 1e-3}})


@pytest.fixture
def no_measuring(monkeypatch):
    """calibrate() returns RATES (and stores them) instead of timing; counts its calls."""
    calls = []

    def fake(device=None, progress=True, save=True):
        calls.append(1)
        if save:
            _store()
        return RATES
    monkeypatch.setattr(_calibrate, "calibrate", fake)
    return calls


def test_calibration_files_round_trip_and_live_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JACKET_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    assert load_rates() == (None, "missing")
    _store()
    assert load_rates() == (RATES, "")
    data = json.loads(_calibrate.calibration_path().read_text())
    assert data["format"] == 1 and data["jax"] == jax.__version__ and data["rates"]["step"] == RATES.step


@pytest.mark.parametrize("content, why", [("{not json", "corrupt"), ('["a list"]', "corrupt"),
                                           ("STALE", "stale"), ("NEGATIVE", "corrupt")])
def test_a_corrupt_or_stale_calibration_is_measured_again_with_a_warning(content, why, no_measuring):
    path = _calibrate.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "STALE":
        _store()
        data = json.loads(path.read_text())
        path.write_text(json.dumps(dict(data, jax="0.0.1")))
    elif content == "NEGATIVE":
        _store()
        data = json.loads(path.read_text())
        path.write_text(json.dumps(dict(data, rates=dict(data["rates"], step=-1.0))))
    else:
        path.write_text(content)
    with pytest.warns(RuntimeWarning, match=why):
        assert rates_for() == RATES
    assert no_measuring == [1] and load_rates() == (RATES, "")


def test_a_missing_calibration_is_measured_first_with_a_message(no_measuring, capsys):
    assert rates_for() == RATES
    assert "no calibration for this device yet" in capsys.readouterr().err and no_measuring == [1]
    assert rates_for() == RATES and no_measuring == [1]  # then read from the file


def test_nnls_recovers_non_negative_rates():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (30, 5))
    truth = np.array([2.0, 0.0, 0.5, 0.0, 3.0])
    np.testing.assert_allclose(_calibrate.nnls(a, a @ truth), truth, atol=1e-9)
    got = _calibrate.nnls(a, a @ np.array([1.0, -2.0, 0.0, 0.0, 1.0]))  # the unconstrained fit is negative
    assert (got >= 0).all() and got[1] == 0


def test_rates_refuse_missing_and_invalid_fields():
    with pytest.raises(ValueError, match="missing step"):
        Rates.from_dict({k: v for k, v in RATES.as_dict().items() if k != "step"})
    for bad in (float("nan"), float("inf"), "fast", True):
        with pytest.raises(ValueError, match="mm_fma must be a finite number"):
            Rates.from_dict(dict(RATES.as_dict(), mm_fma=bad))


@pytest.mark.slow  # 11-13 s: it times the 27 programs for real
def test_one_real_calibration_fits_every_rate_and_stores_its_programs():
    rates = _calibrate.calibrate(progress=False)
    values = [v for k, v in rates.as_dict().items() if k != "device"]
    assert all(math.isfinite(v) and v >= 0 for v in values) and max(values) > 0  # a fit: a rate may be 0
    assert load_rates()[0] == rates  # saved
    data = json.loads(_calibrate.calibration_path().read_text())
    assert set(data["measured_s"]) == set(data["predicted_s"]) == set(data["features"]) and len(data["features"]) > 20
    assert cli.main(["calibrate", "--show"]) == 0


# ---- the calibrated model in plans --------------------------------------------------------
def test_calibrated_plans_predict_seconds_step_by_step(no_measuring, capsys):
    plan = plan_of(BOTTLENECK, "optimal", cost="calibrated")
    assert plan.cost == CalibratedCost(RATES) and plan.predicted_s > 0 and no_measuring == [1]
    assert plan == make_plan(BOTTLENECK, "optimal", cost=CalibratedCost(RATES))
    assert plan_of(BOTTLENECK, "optimal").cost is FMA and plan_of(BOTTLENECK, "optimal").predicted_s is None
    assert plan_of(BOTTLENECK, "optimal", cost=RATES).cost == CalibratedCost(RATES)  # Rates are a cost too
    text = str(plan)
    header = next(line for line in text.splitlines() if line.startswith("step"))
    assert "predicted time:" in text and "calibrated on cpu" in text and header.split()[-1] == "predicted"
    # the total is the sum of the steps' predictions; forward/reverse are priced the same way
    from jacket.planning._costs import step_ticks
    assert plan.ticks == sum(step_ticks(plan.cost, plan.model, s) for s in plan.steps)
    assert plan.predict(FMA) is None and plan.predict(plan.cost) == plan.predicted_s
    assert cli.main(["plan", "64,64,4,64,64", "--cost", "calibrated"]) == 0
    assert "predicted time:" in capsys.readouterr().out


def test_a_huge_step_cost_makes_the_calibrated_optimum_a_single_sweep():
    slow_steps = CalibratedCost(Rates(**dict(RATES.as_dict(), step=10.0)))
    plan = plan_of(BOTTLENECK, "optimal", cost=slow_steps)
    assert len(plan.steps) == 1 and plan.order in ("tan(J7..J1)", "adj(J7..J1)"), plan.order
    assert plan == make_plan(BOTTLENECK, "optimal", cost=slow_steps) and plan.cost == slow_steps
    assert len(plan_of(BOTTLENECK, "optimal").steps) > 1  # the fma optimum mixes


def test_cost_arguments_are_checked(no_measuring):
    with pytest.raises(ValueError, match="cost must be 'fma', 'calibrated', a jacket.planning.Rates or a CostModel, "
                                         "got 'time'"):
        jacket.plan(BOTTLENECK, 1, cost="time")
    with pytest.raises(ValueError, match="cost must be 'fma', 'calibrated', a jacket.planning.Rates or a CostModel, "
                                         "got 'time'"):
        jacket.jacobian(BOTTLENECK, 1, cost="time")
    # the planner takes cost models only: the front door resolves the names
    with pytest.raises(TypeError, match="cost must be a CostModel"):
        make_plan(BOTTLENECK, "optimal", cost="calibrated")
    # the parameter Jacobian is planned by fma, refused before anything is measured
    with pytest.raises(ValueError, match="planned by fma .*cost='calibrated'"):
        jacket.plan(BOTTLENECK, 0, cost="calibrated")
    with pytest.raises(ValueError, match="planned by fma .*cost='calibrated'"):
        jacket.jacobian(BOTTLENECK, (0, 1), cost="calibrated")
    with pytest.raises(ValueError, match="planned by fma .*cost='calibrated'"):
        make_plan(BOTTLENECK, "optimal", argnums=0, cost=CalibratedCost(RATES))
    assert no_measuring == []


# ---- autotuning -----------------------------------------------------------------------------
def test_fastest_times_candidates_once_and_a_new_process_reuses_the_winner(no_measuring, monkeypatch):
    timed = []
    real = _autotune._time

    def counting(chain, plans, dtype, repeats):
        timed.append([p.order for p in plans])
        return real(chain, plans, dtype, 1)
    monkeypatch.setattr(_autotune, "_time", counting)
    plan = plan_of(BOTTLENECK, "fastest")  # float32
    assert len(timed) == 1 and {"tan(J7..J1)", "adj(J7..J1)"} <= set(timed[0]) and plan.order in timed[0]
    assert plan.cost == CalibratedCost(RATES) and "timed" in plan.name
    _autotune._MEMORY.clear()  # as a new process: only the file is left
    again = plan_of(BOTTLENECK, "fastest")
    assert len(timed) == 1 and again == plan and "earlier" in again.name
    params = BOTTLENECK.init(jax.random.PRNGKey(0), jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (64,), jnp.float64)
    np.testing.assert_allclose(jacket.jacobian(BOTTLENECK, 1, order="fastest")(params, x),
                               jax.jacfwd(BOTTLENECK.apply, argnums=1)(params, x), rtol=1e-10, atol=1e-12)
    assert len(timed) == 2  # float64 is tuned apart from float32


def test_the_autotune_key_tells_widths_dtypes_and_devices_apart():
    key = _autotune.autotune_key
    base = key(BOTTLENECK, jnp.float32)
    assert base == key(jacket.mlp([64, 64, 4, 64, 64], activation="tanh"), jnp.float32)
    others = {key(jacket.mlp([64, 64, 8, 64, 64], activation="tanh"), jnp.float32), key(BOTTLENECK, jnp.float64),
              key(BOTTLENECK, jnp.float32, devices=2),
              key(jacket.mlp([64, 64, 4, 64, 64], activation="relu"), jnp.float32)}
    assert base not in others and len(others) == 4


def test_a_cached_order_that_does_not_parse_is_tuned_again(no_measuring, monkeypatch):
    monkeypatch.setattr(_autotune, "_time", lambda chain, plans, dtype, repeats: {p.order: [1.0] for p in plans})
    key = _autotune.autotune_key(BOTTLENECK, jnp.float32)
    write_json(cache_dir() / "autotune" / f"{key}.json", {"order": "(J9 J1)"})
    with pytest.warns(RuntimeWarning, match="does not fit this chain"):
        plan = plan_of(BOTTLENECK, "fastest")
    assert json.loads((cache_dir() / "autotune" / f"{key}.json").read_text())["order"] == plan.order
    with pytest.raises(ValueError, match="tunes plans on one device"):
        jacket.plan(BOTTLENECK, 1, order="fastest", mesh=2)
    with pytest.raises(ValueError, match="tunes plans on one device"):
        _autotune.fastest_plan(BOTTLENECK, devices=2)
