"""--warm-start: a new study seeded with the complete trials of earlier ones, through the Python
API on real journal and SQLite stores (the magic's path and its one-line notes are in
test_tracking_notebook's notebook and test_kernel-style checks below)."""

from __future__ import annotations

import optuna
import pytest

from hpt_jupyter import TuneError, compile_cell, start, tune
from hpt_jupyter.core.steered import COPY_KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)

SOURCE = """x = tune.float(-5, 5)
y = tune.float(-5, 5)
kind = tune.choice(["a", "b", "c"])
(x - 1) ** 2 + (y + 1) ** 2 + (kind == "b")
"""


def _run(source: str, name: str, directory, n: int = 10, sampler: str = "tpe", **options):
    cell = compile_cell(source, {"tune": tune})
    return start(cell, n_trials=n, seed=0, name=name, storage="studies.journal", directory=str(directory),
                 report=False, sampler=sampler, **options).wait()


@pytest.fixture
def source(tmp_path):
    return _run(SOURCE, "A", tmp_path, n=30)


def _copies(run) -> list:
    return [t for t in run.base_study.get_trials(deepcopy=False) if COPY_KEY in t.system_attrs]


def test_the_same_space_carries_every_complete_trial_and_runs_the_best_first(source, tmp_path):
    target = _run(SOURCE.replace("x - 1", "x - 1.2"), "B", tmp_path, n=8, warm_start="A", sampler="auto")
    warm = target.warm_start
    assert (warm.carried, warm.first, warm.notes) == (30, 3, [])
    assert "warm start: 30 trials carried over from A, their best 3 tried first" in target.opened
    copies = _copies(target)
    assert sorted(t.params["x"] for t in copies) == sorted(t.params["x"] for t in source.trials())
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in copies)
    # the study's own trials are numbered from 0 and counted alone; the copies are the sampler's
    own = target.trials(states=None)
    assert [t.number for t in own] == list(range(8)) and target.n_finished == 8
    best_three = sorted(source.trials(), key=lambda t: t.value)[:3]
    assert [t.params for t in own[:3]] == [t.params for t in best_three]
    # the sampler learnt from the copies: 8 trials end near the moved optimum (a cold start's 8 do not)
    cold = _run(SOURCE.replace("x - 1", "x - 1.2"), "cold", tmp_path, n=8, sampler="auto")
    assert target.best_value < 0.5 < cold.best_value


def test_a_narrower_range_and_fewer_options_leave_out_what_lies_outside(source, tmp_path):
    narrower = "x = tune.float(0, 5)\ny = tune.float(-5, 5)\nkind = tune.choice(['a', 'b'])\n(x - 1) ** 2 + y ** 2"
    target = _run(narrower, "B", tmp_path, n=3, warm_start="A")
    trials = source.trials()
    fits = [t for t in trials if t.params["x"] >= 0 and t.params["kind"] in ("a", "b")]
    assert target.warm_start.carried == len(fits) > 0
    outside = sum(t.params["x"] < 0 for t in trials)
    gone = sum(t.params["kind"] == "c" for t in trials)
    assert target.warm_start.notes == [f"x: {outside} of 30 trials with values outside 0 .. 5 left out",
                                       f"kind: {gone} of 30 trials with options no longer offered ['a', 'b'] left out"]
    assert all(0 <= t.params["x"] <= 5 and t.params["kind"] != "c" for t in _copies(target))
    # the copies carry this study's declarations, so the sampler's space is this one
    assert all(t.distributions["x"] == optuna.distributions.FloatDistribution(0, 5) for t in _copies(target))


def test_a_dropped_knob_is_removed_from_the_copies(source, tmp_path):
    target = _run("x = tune.float(-5, 5)\nkind = tune.choice(['a', 'b', 'c'])\n(x - 1) ** 2", "B", tmp_path, n=3,
                  warm_start="A")
    assert target.warm_start.carried == 30
    assert target.warm_start.notes == ["y is not in this space: dropped from the carried trials"]
    assert all(set(t.params) == {"x", "kind"} for t in _copies(target))


def test_a_new_knob_carries_no_trial_but_the_best_configurations_run_first(source, tmp_path):
    with_new = SOURCE.replace("(x - 1)", "tune.int(1, 4, name='depth') + (x - 1)")
    target = _run(with_new, "B", tmp_path, n=4, warm_start="A")
    assert target.warm_start.carried == 0 and not _copies(target)
    assert target.warm_start.notes == ["depth is new: the earlier trials say nothing about it, so none is carried; "
                                       "their best configurations run first"]
    best = sorted(source.trials(), key=lambda t: t.value)[:3]
    first = target.trials()[:3]
    assert [{k: v for k, v in t.params.items() if k != "depth"} for t in first] == [t.params for t in best]
    assert all(1 <= t.params["depth"] <= 4 for t in first)  # the sampler picked the new knob


def test_a_knob_whose_kind_changed_counts_as_new(source, tmp_path):
    changed = SOURCE.replace("x = tune.float(-5, 5)", "x = tune.int(-5, 5)")
    target = _run(changed, "B", tmp_path, n=3, warm_start="A")
    assert target.warm_start.carried == 0
    assert target.warm_start.notes[0] == "x is an int here and was a float in 'A': its values are not carried"
    assert target.warm_start.notes[-1].startswith("x is new:")


def test_several_sources_in_other_stores_and_a_resume_keeps_what_was_carried(source, tmp_path):
    other = compile_cell(SOURCE, {"tune": tune})
    start(other, n_trials=5, seed=1, name="C", storage="other.db", directory=str(tmp_path), report=False).wait()
    target = _run(SOURCE, "B", tmp_path, n=4, warm_start=["A", f"C@sqlite:///{tmp_path}/other.db"])
    assert target.warm_start.sources == ["A", "C"] and target.warm_start.carried == 35
    tune.runs.clear()  # as after a kernel restart: the study is read back from the store
    resumed = _run(SOURCE, "B", tmp_path, n=6, warm_start=["A", f"C@sqlite:///{tmp_path}/other.db"])
    assert resumed.opened.startswith("resumed from") and "(4 stored trials)" in resumed.opened
    assert resumed.warm_start.carried == 35 and len(_copies(resumed)) == 35
    assert [t.number for t in resumed.trials()] == list(range(6))


def test_a_narrowing_keeps_the_carried_trials_for_the_sampler(source, tmp_path):
    target = _run(SOURCE, "B", tmp_path, n=3, warm_start="A")
    target.narrow(x=(0.0, 3.0))
    narrowed = target.study.get_trials(deepcopy=False)
    inside = [t for t in source.trials() if 0 <= t.params["x"] <= 3]
    carried_inside = [t for t in narrowed if isinstance(t.system_attrs.get(COPY_KEY), str)]
    assert len(carried_inside) == len(inside) > 0


def test_refusals_say_what_to_do_before_anything_is_stored(source, tmp_path):
    cases = [
        (dict(warm_start="missing"), "No study named 'missing'"),
        (dict(warm_start="A", direction="maximize"), "was run with --direction minimize"),
        (dict(warm_start="A", direction=["minimize", "minimize"]), "has 1 objective(s) and this study 2"),
        (dict(warm_start="A", scheduler="pbt"), "--scheduler pbt trains its members from scratch"),
        (dict(warm_start=[]), "needs at least one stored study"),
    ]
    for options, message in cases:
        with pytest.raises(TuneError, match=message.replace("(", r"\(").replace(")", r"\)")):
            _run(SOURCE, "new", tmp_path, n=2, **options)
    with pytest.raises(TuneError, match="that is this study itself"):
        _run(SOURCE, "A", tmp_path, n=2, warm_start="A")
    assert "new" not in [s.study_name for s in source.base_study._storage.get_all_studies()]


def test_a_study_with_its_own_trials_is_not_warm_started_afterwards(source, tmp_path):
    _run(SOURCE, "B", tmp_path, n=2)
    tune.runs.clear()
    again = _run(SOURCE, "B", tmp_path, n=3, warm_start="A")
    assert again.warm_start is None and not _copies(again)
    assert "--warm-start not applied: the study resumes with its own 2 trials" in again.opened


def test_a_range_no_earlier_trial_lies_in_carries_nothing_and_says_why(source, tmp_path):
    target = _run(SOURCE.replace("x = tune.float(-5, 5)", "x = tune.float(10, 20)"), "far", tmp_path, n=2,
                  warm_start="A")
    assert (target.warm_start.carried, target.warm_start.first) == (0, 0)
    assert target.warm_start.notes == ["x: 30 of 30 trials with values outside 10 .. 20 left out"]
    assert "warm start: 0 trials carried over from A" in target.opened
