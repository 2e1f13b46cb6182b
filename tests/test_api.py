"""The headless core through the plain Python API, in process."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import threading
import time

import optuna
import pytest

from conftest import wait_until
from hpt_jupyter import TuneError, compile_cell, optimize, start, tune
from hpt_jupyter.core.run import TRACEBACK_KEY
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)


def quadratic():
    x = tune.float(-5, 5)
    y = tune.int(0, 4)
    kind = tune.choice(["a", "b"])
    return (x - 1) ** 2 + y + (kind == "b")


def test_named_sampler_gives_exactly_optunas_trials():
    run = optimize(quadratic, n_trials=25, sampler="tpe", seed=11, storage="memory", report=False)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        y = trial.suggest_int("y", 0, 4)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        return (x - 1) ** 2 + y + (kind == "b")

    bare = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=11))
    bare.optimize(objective, n_trials=25)
    assert [t.params for t in run.study.trials] == [t.params for t in bare.trials]
    assert [t.value for t in run.study.trials] == [t.value for t in bare.trials]


def test_optuna_style_objective_and_names_from_plain_functions():
    run = optimize(lambda trial: trial.suggest_float("z", 0, 1), n_trials=3, storage="memory", report=False)
    assert run.n_complete == 3 and set(run.best_params) == {"z"}
    run = optimize(quadratic, n_trials=3, storage="memory", report=False, name="q")
    assert set(run.best_params) == {"x", "y", "kind"}


def test_object_choices_are_stored_as_labels_and_given_back_as_objects():
    def objective():
        cls = tune.choice([dict, list])
        return len(cls())

    run = optimize(objective, n_trials=4, storage="memory", report=False, seed=0)
    assert run.best_params["cls"] in (dict, list)
    assert {t.params["cls"] for t in run.study.trials} <= {"dict", "list"}


def test_failures_are_recorded_with_tracebacks_and_the_study_goes_on():
    def objective():
        x = tune.float(0, 1)
        if x > 0.5:
            raise ValueError("x too big")
        return x

    run = optimize(objective, n_trials=20, sampler="random", seed=0, storage="memory", report=False,
                   max_failures=0)
    failed = [t for t in run.study.trials if t.state == TrialState.FAIL]
    assert failed and run.n_finished == 20 and run.n_complete == 20 - len(failed)
    text = run.failure(failed[0].number)
    assert "ValueError: x too big" in text and 'raise ValueError("x too big")' in text
    assert "hpt_jupyter" not in text  # the traceback starts at the user's code


def test_consecutive_failures_stop_the_study():
    def objective():
        tune.float(0, 1, name="x")
        raise RuntimeError("broken")

    run = optimize(objective, n_trials=50, storage="memory", report=False, max_failures=3)
    assert run.state == "failed" and run.n_failed == 3
    assert "3 consecutive failures" in run.reason and "RuntimeError: broken" in run.reason


@pytest.mark.parametrize("score, message", [(float("nan"), "not a finite number"), (None, "gave None"),
                                            ("high", "must be a number"), ((1, 2), "2 scores")])
def test_a_score_that_is_not_a_number_fails_the_trial_with_a_message(score, message):
    def objective():
        tune.float(0, 1, name="x")
        return score

    run = optimize(objective, n_trials=2, storage="memory", report=False, max_failures=0)
    assert run.n_failed == 2
    assert message in run.study.trials[0].user_attrs[TRACEBACK_KEY]


def test_equal_values_make_the_lowest_numbered_trial_the_best_whatever_order_they_finish_in(tmp_path):
    # Trial 0 finishes after trial 1 with the same score: the best is still trial 0, so a
    # rerun with the same seed injects the same values, and a journal store's
    # study.best_trial (the lowest number among equals) names the same trial.
    trial_one_done = threading.Event()

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        if trial.number == 0:
            trial_one_done.wait(10)
        elif trial.number == 1:
            threading.Timer(0.2, trial_one_done.set).start()
        return 1.0

    run = optimize(objective, n_trials=4, jobs=2, storage=str(tmp_path / "studies.journal"), report=False)
    finished = sorted(run.study.trials, key=lambda t: t.datetime_complete)
    assert finished[0].number == 1  # the order the test arranged
    assert run.best_trial.number == run.study.best_trial.number == 0


def test_multi_objective():
    def objective():
        x = tune.float(0, 1)
        return x, 1 - x

    run = optimize(objective, n_trials=12, direction=["minimize", "minimize"], storage="memory",
                   report=False, seed=1)
    assert run.sampler_name == "auto" and run.n_complete == 12
    # two numeric objectives, few trials: auto runs Optuna's multi-objective GP after its warm-up
    assert run.sampler_text().startswith("auto: gp (1 numeric knob, 2 objectives")
    assert [t.system_attrs["hpt:sampler"] for t in run.study.trials][-1] == "gp"
    assert len(run.best_value) == 2 and run.best_trial in run.study.best_trials


def test_target_and_timeout_end_the_study():
    run = optimize(lambda: tune.float(0, 1, name="x"), n_trials=500, direction="maximize", target=0.9,
                   sampler="random", seed=0, storage="memory", report=False)
    assert run.reason.startswith("target 0.9 reached") and run.best_value >= 0.9 and run.n_finished < 500

    def slow():
        time.sleep(0.05)
        return tune.float(0, 1, name="x")

    run = optimize(slow, timeout=0.3, storage="memory", report=False)
    assert run.reason.startswith("timeout") and 2 <= run.n_finished < 20


def test_stop_pause_resume_extend():
    gate = threading.Event()

    def objective():
        gate.wait(5)
        time.sleep(0.02)  # 100 trials take >= 2 s: stop() below lands well before the budget
        return tune.float(0, 1, name="x")

    run = start(objective, n_trials=100, storage="memory", report=False, launch=False)
    started: list[int] = []
    running, finished = threading.Event(), threading.Event()

    def note(event):
        if event.kind == "trial_started":
            started.append(event.number)
            running.set()
        elif event.kind == "trial_finished":
            finished.set()

    run.subscribe(note)
    run.start()
    assert running.wait(60), "the first trial never started"
    run.pause()  # trial 0 is held at the gate; with one slot no other trial is asked meanwhile
    gate.set()
    assert finished.wait(60), "the trial running when the run was paused never finished"
    time.sleep(0.3)  # let time pass: a paused run starts no trial
    assert run.state == "paused" and started == [0] and run.n_finished == 1
    run.resume()
    wait_until(lambda: run.n_finished >= 3, "trials to run again after resume()")
    run.stop()
    run.wait(60)
    assert run.state == "stopped" and 3 <= run.n_finished < 100
    done = run.n_finished
    run.extend(3)  # a finished run starts again
    run.wait(60)
    assert run.n_finished == done + 3 and run.state == "finished"


def test_events_reach_subscribers_and_a_broken_subscriber_does_not_stop_the_study():
    seen = []
    gate = threading.Event()

    def objective():
        gate.wait(5)
        return tune.float(0, 1, name="x")

    run = start(objective, n_trials=5, storage="memory", report=False, name="ev")

    def broken(event):
        raise RuntimeError("view bug")

    run.subscribe(broken)
    run.subscribe(lambda event: seen.append(event.kind))
    gate.set()
    run.wait(10)
    assert run.n_complete == 5 and seen.count("trial_finished") == 5 and seen[-1] == "finished"


def test_grid_sampler_stops_when_the_grid_is_exhausted():
    cell = compile_cell("a = tune.int(1, 3)\nb = tune.choice([0, 10])\na + b", {})
    run = optimize(cell, sampler="grid", storage="memory", report=False)
    assert run.n_complete == 6 and "grid exhausted" in run.reason
    assert sorted((t.params["a"], t.params["b"]) for t in run.study.trials) == [
        (a, b) for a in (1, 2, 3) for b in (0, 10)]


def test_bad_options_are_refused_before_any_study():
    for options, message in [({"n_trials": 0}, "positive whole number"), ({"timeout": -1}, "--timeout"),
                             ({"direction": "up"}, "not one of"), ({"sampler": "nope"}, "not one I know"),
                             ({"storage": "nowhere"}, "not a store I know"), ({"max_failures": -2}, ">= 0"),
                             ({"direction": ["minimize", "maximize"], "target": 1.0}, "one objective only")]:
        with pytest.raises(TuneError, match=None) as caught:
            start(quadratic, report=False, name="bad", **({"storage": "memory"} | options))
        assert message in str(caught.value)
    assert "bad" not in tune.runs or tune.runs["bad"].n_finished == 0


def test_gp_sampler_names_the_extra_when_torch_is_missing(monkeypatch):
    import importlib.util

    # The tests install PyTorch; this hides it, as a machine without the gp extra lacks it.
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    with pytest.raises(TuneError, match=r"pip install 'hpt-jupyter\[gp\]'"):
        start(quadratic, sampler="gp", storage="memory", report=False)
    with pytest.raises(TuneError, match=r"--stop auto needs PyTorch"):
        start(quadratic, stop="auto", storage="memory", report=False)


def test_journal_store_resumes_counts_the_budget_and_starts_over(tmp_path):
    store = str(tmp_path / "s.journal")
    first = optimize(quadratic, n_trials=5, storage=store, report=False, name="r", seed=0)
    params = [t.params for t in first.study.trials]
    second = optimize(quadratic, n_trials=8, storage=store, report=False, name="r", seed=0)
    assert second.n_run == 3 and second.n_finished == 8
    assert [t.params for t in second.study.trials[:5]] == params
    assert "resumed" in second.opened
    third = optimize(quadratic, n_trials=8, storage=store, report=False, name="r")
    assert third.n_run == 0 and third.reason.startswith("budget reached")
    fresh = optimize(quadratic, n_trials=2, storage=store, report=False, name="r", mode="fresh")
    assert fresh.n_finished == 2 and "deleted 8" in fresh.opened
    with pytest.raises(TuneError, match="was created with --direction minimize"):
        start(quadratic, n_trials=2, storage=store, report=False, name="r", direction="maximize")


def test_text_reporter_prints_throttled_progress_and_a_final_table():
    out = io.StringIO()
    run = optimize(quadratic, n_trials=300, storage="memory", sampler="random", stream=out)
    text = out.getvalue()
    updates = text.count("\r")
    assert "Tuning 'quadratic'" in text and "Top 5 trials:" in text and "finished: budget reached" in text
    # Throttled to about one update a second, not one per trial.
    assert updates <= math.ceil(run.elapsed) + 2 < 300


def test_plain_script_prints_text_progress_and_uses_the_embedded_store(tmp_path):
    script = tmp_path / "tune_script.py"
    script.write_text(
        "from hpt_jupyter import tune, optimize\n"
        "def objective():\n"
        "    x = tune.float(-1, 1)\n"
        "    return (x - 0.2) ** 2\n"
        "run = optimize(objective, n_trials=30, seed=0)\n"
        "print('BEST', run.best_params['x'], run.best_value)\n"
    )
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Tuning 'objective'" in result.stdout and "Top 5 trials:" in result.stdout
    best_x, best_value = map(float, result.stdout.split("BEST ")[1].split())
    assert best_value == pytest.approx((best_x - 0.2) ** 2)
    stored = optuna.load_study(study_name="objective", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "hpt_studies.journal"))))
    assert len(stored.trials) == 30 and stored.best_value == best_value


def test_the_core_imports_no_ipython_and_no_widgets():
    code = ("import sys, hpt_jupyter\n"
            "from hpt_jupyter import optimize, tune\n"
            "run = optimize(lambda: tune.float(0, 1, name='x'), n_trials=2, storage='memory', report=False)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel', 'ipywidgets')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name, make", [
    ("random", lambda seed: optuna.samplers.RandomSampler(seed=seed)),
    ("qmc", lambda seed: optuna.samplers.QMCSampler(seed=seed)),
    ("cmaes", lambda seed: optuna.samplers.CmaEsSampler(seed=seed)),
    ("nsga2", lambda seed: optuna.samplers.NSGAIISampler(seed=seed)),
    ("gp", lambda seed: optuna.samplers.GPSampler(seed=seed)),
])
def test_every_named_sampler_is_optunas_own_with_its_defaults(name, make):
    import warnings

    def objective():
        x = tune.float(-3, 3)
        y = tune.float(0.1, 10, log=True)
        return (x - 1) ** 2 + y

    def bare_objective(trial):
        return (trial.suggest_float("x", -3, 3) - 1) ** 2 + trial.suggest_float("y", 0.1, 10, log=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = optimize(objective, n_trials=14, sampler=name, seed=5, storage="memory", report=False)
        bare = optuna.create_study(sampler=make(5))
        bare.optimize(bare_objective, n_trials=14)
    assert [t.params for t in run.study.trials] == [t.params for t in bare.trials]


def test_sqlite_url_store_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    first = optimize(quadratic, n_trials=3, storage=url, report=False, name="sq", seed=0)
    params = [t.params for t in first.study.trials]
    second = optimize(quadratic, n_trials=5, storage=url, report=False, name="sq", seed=0)
    assert second.n_run == 2 and [t.params for t in second.study.trials[:3]] == params
