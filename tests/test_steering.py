"""Narrowing a running search, enqueueing configurations, and what the samplers do after it,
in process through the Python API (the kernel and browser paths are in test_kernel_steering.py
and test_browser.py)."""

from __future__ import annotations

import time

import optuna
import pytest

from conftest import wait_until
from hpt_jupyter import TuneError, compile_cell, start, tune
from hpt_jupyter.core.space import ChoiceParam, FloatParam, IntParam
from hpt_jupyter.core.steering import percent, share_of_space
from hpt_jupyter.core.storage import study_names

optuna.logging.set_verbosity(optuna.logging.WARNING)

CELL = """x = tune.float(-5, 5)
lr = tune.float(1e-5, 1e-1, log=True)
depth = tune.int(2, 20, step=2)
kind = tune.choice(["a", "b", "c"])
pause(delay)
(x - 1) ** 2 + abs(lr - 1e-3) * 100 + depth / 10 + (kind == "b")
"""


def _cell(delay: float = 0.0):
    return compile_cell(CELL, {"pause": time.sleep, "delay": delay})


def _finished_trials(run, n: int) -> None:
    """Wait until ``run`` has finished ``n`` trials: steering then lands while its loop runs."""
    wait_until(lambda: run.n_finished >= n, f"{n} finished trials of {run.name!r}")


def _inside(run, first: int, **ranges) -> bool:
    later = [t for t in run.trials() if t.number >= first]
    assert later, "no trial ran after the narrowing"
    for trial in later:
        params = run._decoded(trial.params)
        for name, wanted in ranges.items():
            value = params[name]
            if isinstance(wanted, list):
                if value not in wanted:
                    return False
            elif not wanted[0] <= value <= wanted[1]:
                return False
    return True


def test_every_trial_asked_after_a_narrowing_lies_inside_it():
    run = start(_cell(0.01), n_trials=60, sampler="tpe", seed=0, storage="memory", report=False, name="inside")
    _finished_trials(run, 10)  # narrowed while the loop runs: it applies before the next trial
    record = run.narrow(x=(0, 2), lr=(1e-4, 1e-2), depth=(4, 9), kind=["a", "c"])
    run.wait()
    assert record.first_trial is not None and record.first_trial < 60
    assert record.seeded == sum(
        1 for t in run.trials() if t.number < record.first_trial and 0 <= t.params["x"] <= 2
        and 1e-4 <= t.params["lr"] <= 1e-2 and 4 <= t.params["depth"] <= 8 and t.params["kind"] != "b")
    assert _inside(run, record.first_trial, x=(0, 2), lr=(1e-4, 1e-2), depth=(4, 8), kind=["a", "c"])
    # depth snaps to its declared step grid (2, 4, 6, ...): 4 .. 9 becomes 4 .. 8
    assert {run._decoded(t.params)["depth"] for t in run.trials() if t.number >= record.first_trial} <= {4, 6, 8}
    # one history: numbers run on, the budget counts every trial once, the best spans all
    numbers = [t.number for t in run.trials(states=None)]
    assert numbers == list(range(60)) and run.n_finished == 60
    best = min(run.trials(), key=lambda t: t.value)
    assert run.best_trial.number == best.number
    frame = run.trials_dataframe()
    assert list(frame["number"]) == list(range(60)) and frame["study"].nunique() == 2


def test_widening_and_reset_seed_every_trial_inside_the_new_space():
    run = start(_cell(), n_trials=30, sampler="random", seed=1, storage="memory", report=False, name="widen")
    run.wait()
    narrow = run.narrow(x=(0, 1))
    run.extend(10)
    run.wait()
    wide = run.narrow(x=(-5, 3))
    assert wide.seeded == sum(1 for t in run.trials() if -5 <= t.params["x"] <= 3)
    reset = run.reset()
    assert run.overrides == {} and reset.seeded == run.n_complete == 40
    run.extend(5)
    run.wait()
    assert [n.source for n in run.narrowings] == ["api", "api", "reset"]
    assert narrow.seeded < wide.seeded < reset.seeded
    assert run.n_finished == 45 and reset.first_trial == 40
    # after the reset, trials are asked from the whole declared space again: the widened
    # narrowing's bound (x <= 3) no longer holds, for the sampler or for the values it gives
    after_reset = [t for t in run.trials() if t.number >= reset.first_trial]
    assert len(after_reset) == 5
    assert all((t.distributions["x"].low, t.distributions["x"].high) == (-5, 5) for t in after_reset)
    assert any(t.params["x"] > 3 for t in after_reset)


@pytest.mark.parametrize("request_, message", [
    ({"x": (2, 1)}, "is empty (low > high)"),
    ({"x": (-10, 1)}, "outside the declared range"),
    ({"lr": (1e-7, 1e-3)}, "outside the declared range"),
    ({"kind": []}, "Keep at least one option"),
    ({"kind": ["z"]}, "has no option 'z'"),
    ({"depth": (5, 5)}, "no value of step 2"),
    ({"nope": (0, 1)}, "has no knob 'nope'"),
    ({"x": "wide"}, "give its new range as (low, high)"),
])
def test_bad_narrowing_is_refused_with_one_message_and_changes_nothing(request_, message):
    run = start(_cell(), n_trials=10, sampler="random", seed=0, storage="memory", report=False, name="refused")
    run.wait()
    with pytest.raises(TuneError, match=None) as raised:
        run.narrow(**request_)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert run.overrides == {} and run.narrowings == [] and len(run.stages) == 1
    run.extend(5)
    run.wait()
    assert run.n_finished == 15 and run.state == "finished"


def test_enqueued_configurations_run_next_in_order():
    run = start(_cell(0.02), n_trials=40, sampler="tpe", seed=0, storage="memory", report=False, name="queue")
    _finished_trials(run, 3)  # enqueued while the loop runs
    run.enqueue({"x": 1.0, "kind": "c"})
    run.enqueue({"x": -2.5, "lr": 1e-3, "depth": 10, "kind": "a"})
    enqueued_at = max(t.number for t in run.trials(states=None))
    run.wait()
    after = [run._decoded(t.params) for t in run.trials(states=None) if t.number > enqueued_at]
    first, second = after[0], after[1]
    if first["x"] != 1.0:  # the trial asked while we enqueued may come first
        first, second = after[1], after[2]
    assert first["x"] == 1.0 and first["kind"] == "c"
    assert second == {"x": -2.5, "lr": 1e-3, "depth": 10, "kind": "a"}
    with pytest.raises(TuneError, match="outside the range searched now"):
        run.enqueue({"x": 9.0})
    with pytest.raises(TuneError, match="not among the options"):
        run.enqueue({"kind": "z"})


def test_try_near_a_trial_stays_close_and_inside():
    run = start(_cell(), n_trials=20, sampler="random", seed=2, storage="memory", report=False, name="near")
    run.wait()
    base = run._decoded(run.trial(7).params)
    stored = run.enqueue_near(7, spread=0.05, seed=0)
    assert abs(stored["x"] - base["x"]) <= 0.05 * 10 + 1e-9 and -5 <= stored["x"] <= 5
    assert stored["kind"] == base["kind"] and stored["depth"] % 2 == 0
    run.extend(1)
    run.wait()
    assert run._decoded(run.trial(20).params) == stored


def test_focus_proposes_the_box_of_the_best_trials():
    run = start(_cell(), n_trials=40, sampler="random", seed=3, storage="memory", report=False, name="focus")
    run.wait()
    best = sorted(run.trials(), key=lambda t: t.value)[:10]
    ranges = run.propose_focus(0.25)
    xs = [t.params["x"] for t in best]
    assert ranges["x"] == (min(xs), max(xs))
    assert set(ranges["kind"]) == {t.params["kind"] for t in best}
    record = run.focus(0.25)
    assert record.source == "top" and record.seeded >= 10


def test_share_of_space_is_measured_on_each_knobs_own_scale():
    declared = {d.name: d.param for d in _cell().declarations}
    searched = dict(declared)
    searched.update({"x": FloatParam("x", 0, 2.5), "lr": FloatParam("lr", 1e-4, 1e-2, log=True),
                     "depth": IntParam("depth", 2, 10, step=2), "kind": ChoiceParam("kind", ("a",), ("a",))})
    # x: 2.5 of 10; lr: 2 of 4 decades; depth: 5 of 10 grid points; kind: 1 of 3 options
    assert share_of_space(declared, searched) == pytest.approx(0.25 * 0.5 * 0.5 / 3)
    assert share_of_space(declared, declared) == 1.0
    assert [percent(v) for v in (1.0, 0.62, 0.062, 0.0034)] == ["100%", "62%", "6.2%", "0.34%"]


def test_preview_tells_what_a_narrowing_keeps_and_applies_nothing():
    run = start(_cell(), n_trials=30, sampler="random", seed=5, storage="memory", report=False, name="preview")
    run.wait()
    share, inside = run.preview(x=(0, 2.5), kind=["a"])
    assert share == pytest.approx(0.25 / 3)
    assert inside == sum(0 <= t.params["x"] <= 2.5 and t.params["kind"] == "a" for t in run.trials())
    with pytest.raises(TuneError, match="is empty"):
        run.preview(x=(3, 1))
    with pytest.raises(TuneError, match="has no knob 'y' to narrow"):
        run.preview(y=(0, 1))
    assert run.narrowings == [] and run.overrides == {}
    assert run.narrow(x=(0, 2.5), kind=["a"]).seeded == inside


def _count_calls(obj, method: str) -> list:
    calls: list = []
    original = getattr(obj, method)

    def counted(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else None)
        return original(*args, **kwargs)

    setattr(obj, method, counted)
    return calls


def test_tpe_keeps_its_joint_model_after_a_narrowing():
    """Optuna 5's TPE is multivariate: a knob outside its joint (relative) model, and every
    knob during its 10 random startup trials, goes through sample_independent."""
    run = start(_cell(), n_trials=30, sampler="tpe", seed=0, storage="memory", report=False, name="tpe-fallback")
    run.wait()
    record = run.narrow(x=(-2, 3), lr=(1e-5, 1e-2))
    assert record.seeded >= 10  # the startup is 10 trials: the seeds stand in for it
    assert run.study.sampler._is_multivariate(run.study)
    fallbacks = _count_calls(run.study.sampler, "sample_independent")
    run.extend(15)
    run.wait()
    assert fallbacks == []
    # The counter does see fallbacks: a narrowing that keeps only a few trials starts at random.
    sparse = run.narrow(x=(4.5, 5))
    assert sparse.seeded < 10
    fallbacks = _count_calls(run.study.sampler, "sample_independent")
    run.extend(3)
    run.wait()
    assert fallbacks
    # And so does changing a distribution in place, what narrowing avoids.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", -5, 5) ** 2, n_trials=20)
    in_place = _count_calls(study.sampler, "sample_independent")
    study.optimize(lambda t: t.suggest_float("x", -1, 3) ** 2 + t.suggest_float("y", -5, 5) ** 2, n_trials=5)
    assert in_place.count("x") == 5


def test_cmaes_keeps_its_joint_model_after_a_narrowing():
    cell = compile_cell("x = tune.float(-5, 5)\ny = tune.float(-5, 5)\n(x - 1) ** 2 + (y + 2) ** 2", {})
    run = start(cell, n_trials=20, sampler="cmaes", seed=0, storage="memory", report=False, name="cma")
    run.wait()
    run.narrow(x=(-1, 3), y=(-4, 0))
    fallbacks = _count_calls(run.study.sampler._independent_sampler, "sample_independent")
    run.extend(30)
    run.wait()
    assert fallbacks == []
    assert run.best_value < 1.0
    # Changing the space in place (what narrowing avoids) does fall back, and is counted.
    study = optuna.create_study(sampler=optuna.samplers.CmaEsSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", -5, 5) ** 2, n_trials=10)
    in_place = _count_calls(study.sampler._independent_sampler, "sample_independent")
    study.optimize(lambda t: t.suggest_float("x", -1, 3) ** 2 + t.suggest_float("y", -4, 0) ** 2, n_trials=10)
    assert len(in_place) >= 10


def test_a_resumed_study_goes_on_in_its_narrowed_space(tmp_path):
    store = str(tmp_path / "steer.journal")
    run = start(_cell(), n_trials=20, sampler="tpe", seed=0, storage=store, report=False, name="resumable")
    run.wait()
    record = run.narrow(x=(0, 2), kind=["a"])
    run.extend(10)
    run.wait()
    tune.runs.clear()
    again = start(_cell(), n_trials=40, sampler="tpe", seed=0, storage=store, report=False, name="resumable")
    again.wait()
    assert [n.first_trial for n in again.narrowings] == [record.first_trial]
    assert again.overrides.keys() == {"x", "kind"}
    assert [t.number for t in again.trials(states=None)] == list(range(40))
    assert _inside(again, record.first_trial, x=(0, 2), kind=["a"])
    assert again.best_trial.number == min(again.trials(), key=lambda t: t.value).number
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(store))
    assert study_names(storage) == ["resumable"]  # the narrowed studies are part of it
    fresh = start(_cell(), n_trials=5, sampler="tpe", seed=0, storage=store, report=False, name="resumable",
                  mode="fresh")
    fresh.wait()
    assert fresh.narrowings == [] and len(storage.get_all_studies()) == 1


def _function_objective() -> float:
    x = tune.float(-5, 5)
    depth = tune.int(2, 20, step=2)
    kind = tune.choice(["a", "b", "c"])
    return (x - 1) ** 2 + depth / 10 + (kind == "b")


def test_a_resumed_function_study_can_be_steered_before_its_next_trial(tmp_path):
    """A plain function declares its knobs only when a trial runs: a resumed study learns them
    from its stored trials (the declared ranges, not a narrowed study's)."""
    store = str(tmp_path / "function.journal")
    run = start(_function_objective, n_trials=20, sampler="tpe", seed=1, storage=store, report=False, name="fn")
    run.wait()
    run.narrow(x=(0, 2))
    run.extend(5)
    run.wait()
    tune.runs.clear()
    again = start(_function_objective, n_trials=25, sampler="tpe", seed=1, storage=store, report=False, name="fn")
    again.wait()
    assert again.n_run == 0  # nothing ran: all it knows comes from the store
    declared = again.declared_space()
    assert (declared["x"].low, declared["x"].high) == (-5, 5)
    assert (declared["depth"].low, declared["depth"].high, declared["depth"].step) == (2, 20, 2)
    assert declared["kind"].labels == ("a", "b", "c")
    assert again.effective_space()["x"].high == 2
    ranges = again.propose_focus(0.25)
    assert set(ranges) == {"x", "depth", "kind"}
    record = again.focus(0.25)
    again.extend(10)
    again.wait()
    assert _inside(again, record.first_trial, **{k: v for k, v in ranges.items() if k != "depth"})


def test_a_grid_search_cannot_be_narrowed():
    cell = compile_cell("k = tune.choice([1, 2, 3])\nk", {})
    run = start(cell, sampler="grid", storage="memory", report=False, name="grid-narrow")
    run.wait()
    with pytest.raises(TuneError, match="grid search tries a fixed grid"):
        run.narrow(k=[1])
