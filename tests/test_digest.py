"""The digest the views read: bounded samples, best rows, Pareto front and table order, checked
against plain recomputation over every trial of real Optuna studies."""

from __future__ import annotations

import random

import optuna
import pytest

from hpt_jupyter.views.digest import Digest, SeriesSample, StrideSample, TableOrder, sort_key

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(n: int, directions: list[str], seed: int = 0) -> optuna.Study:
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=seed))

    def objective(trial: optuna.Trial):
        x = trial.suggest_float("x", -5, 5)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        if kind == "b":
            trial.suggest_int("depth", 1, 8)  # conditional
        if x > 4.5:
            raise ValueError("a failed trial")
        if len(directions) == 1:
            return (x - 1) ** 2 + (kind == "b")
        return x ** 2, (x - 2) ** 2 + (kind == "b")

    study.optimize(objective, n_trials=n, catch=(ValueError,))
    return study


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_best_rows_and_history_match_a_full_recount(direction):
    study = _study(3000, [direction])
    trials = study.get_trials(deepcopy=False)
    digest = Digest([direction], categorical={"kind"}, max_points=200, top=50)
    for start in range(0, len(trials), 7):  # in uneven batches, as trials arrive
        digest.fold(trials[start:start + 7])
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    sign = -1 if direction == "maximize" else 1
    expected = sorted(complete, key=lambda t: (sign * t.value, t.number))[:50]
    assert [row.number for row in digest.top] == [t.number for t in expected]
    assert digest.best.number == study.best_trial.number
    assert digest.n_complete == len(complete) and digest.count == len(trials)
    assert digest.failed == [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert digest.param_names == ["x", "kind", "depth"]
    # The history keeps every improvement and a bounded stride of the rest.
    xs, ys = digest.history_xy()
    best_so_far, improvements = None, []
    for t in complete:
        if best_so_far is None or sign * t.value < sign * best_so_far:
            best_so_far = t.value
            improvements.append(float(t.number))
    assert set(improvements) <= set(xs.tolist())
    assert len(xs) <= 200 + len(improvements) and len(xs) == len(ys)
    line_x, line_y = digest.best_line()
    assert line_x[:-1] == improvements and line_y[-1] == study.best_value
    # Slices hold the kept rows, each knob only where the trial had it.
    depth_x, depth_y = digest.slices["depth"]
    kept = {row.number: row for row in digest.kept.items()}
    assert len(depth_x) == sum(1 for row in kept.values() if "depth" in row.params)
    assert all(isinstance(v, str) for v in digest.slices["kind"][0])
    assert len(digest.slices["x"][0]) == len(kept) <= 100 + len(improvements)


def test_pareto_front_matches_optuna_for_mixed_directions():
    directions = ["minimize", "maximize"]
    study = _study(800, directions, seed=3)
    digest = Digest(directions)
    for trial in study.get_trials(deepcopy=False):
        digest.fold((trial,))
    assert sorted(row.number for row in digest.front) == sorted(t.number for t in study.best_trials)


@pytest.mark.parametrize("key", ["value", "#", "seconds", "state", "x", "kind", "depth"])
@pytest.mark.parametrize("descending", [False, True])
def test_table_order_kept_incrementally_equals_a_full_sort(key, descending):
    study = _study(600, ["minimize"], seed=1)
    trials = study.get_trials(deepcopy=False)
    digest = Digest(["minimize"], categorical={"kind"})
    table = TableOrder(digest, 25, key, descending)
    for trial in trials:
        for row in digest.fold((trial,)):
            table.add(row)
    expected = sorted(digest.rows, key=sort_key(key, descending))[:25]
    assert [r.number for r in table.shown] == [r.number for r in expected]
    table.reorder(digest, "#", not descending)
    expected = sorted(digest.rows, key=sort_key("#", not descending))[:25]
    assert [r.number for r in table.shown] == [r.number for r in expected]


def test_series_sample_keeps_what_the_stride_sample_keeps_and_stays_bounded():
    rng = random.Random(0)
    series, reference = SeriesSample(100), StrideSample(100)
    for i in range(20_000):
        improved = rng.random() < 0.002
        series.add(float(i), 2.0 * i, improved)
        reference.add((float(i), 2.0 * i), improved)
    xs, ys = series.xy()
    assert xs.tolist() == [p[0] for p in reference.items()]
    assert ys.tolist() == [p[1] for p in reference.items()]
    assert len(reference.points) <= 100 and series.stride == reference.stride >= 128


def test_decoders_turn_stored_labels_back_into_the_cells_values():
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + len(t.suggest_categorical("model", ["0", "1"])),
                   n_trials=5)
    objects = [object(), object()]
    digest = Digest(["minimize"], decoders={"model": lambda label: objects[int(label)]})
    rows = digest.fold(study.trials)
    assert all(row.params["model"] in objects for row in rows)
    assert all(isinstance(row.params["x"], float) for row in rows)


def test_pruned_trials_are_reporters_but_not_scores():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.ThresholdPruner(upper=0.5))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            trial.report(x, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=30)
    trials = study.get_trials(deepcopy=False)
    pruned = [t.number for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert 0 < len(pruned) < 30
    digest = Digest(["minimize"], reporters=50)
    rows = digest.fold(trials)
    assert [r.number for r in rows if r.state == "pruned"] == pruned
    assert [r.number for r in digest.reporters] == [t.number for t in trials]  # pruned ones too
    for row in digest.reporters:
        assert row.intermediate == (((0, row.params["x"]),) if row.number in pruned
                                    else tuple((s, row.params["x"]) for s in range(3)))
    assert digest.n_complete == 30 - len(pruned) and digest.count == 30
    assert not set(pruned) & {r.number for r in digest.top}
    assert digest.best.number == study.best_trial.number
