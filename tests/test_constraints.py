"""tune.constraint: feasible when every value is <= 0; the best trial, the injected values and
--refit are the best feasible; the samplers get the constraints; the dashboard marks what broke
them. Through the Python API on threads and worker processes, and through a real kernel."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from hpt_jupyter import TuneError, start, tune
from hpt_jupyter.views.readable import number
from test_dashboard import _decoded_widgets, _figure_marks, _header, _html, _widgets_once

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _disc_objective():
    """Minimise x² + y² with x + y >= 1 and x <= 0.8: the best feasible point is (0.5, 0.5), value 0.5,
    while the unconstrained best (0, 0) breaks the first constraint. Made inside a function, so that
    worker processes get it by value (this test module is not importable there)."""

    def disc() -> float:
        x = tune.float(-2, 2, name="x")
        y = tune.float(-2, 2, name="y")
        tune.constraint(1 - x - y)
        tune.constraint(x - 0.8, name="x_max")
        return x * x + y * y

    return disc


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_the_best_trial_is_the_best_feasible_one_at_the_known_point(backend):
    run = start(_disc_objective(), n_trials=40, seed=1, storage="memory", name=f"disc-{backend}", backend=backend,
                report=False).wait()
    trials = run.trials()
    for trial in trials:  # Optuna's own constraints, as every sampler and study.best_trial read them
        assert set(trial.constraints) == {"0", "x_max"}
        x, y = trial.params["x"], trial.params["y"]
        assert math.isclose(trial.constraints["0"], 1 - x - y, abs_tol=1e-12)
    feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
    infeasible = [t for t in trials if t not in feasible]
    assert infeasible and run.n_infeasible == len(infeasible)
    assert min(t.value for t in trials) < 0.5  # the unconstrained optimum was visited, and is not the best
    assert run.best_trial.number == min(feasible, key=lambda t: t.value).number
    assert 0.5 <= run.best_value < 0.52  # the constrained optimum, found
    assert run.best_value == run.study.best_trial.value  # Optuna agrees
    assert f"{len(infeasible)} infeasible" in run.progress()


def test_a_study_where_nothing_is_feasible_says_so():
    def never():
        x = tune.float(0, 1, name="x")
        tune.constraint(1 + x)
        return x

    run = start(never, n_trials=5, storage="memory", name="never", report=False).wait()
    assert run.best_trial is None and run.best_params == {}
    assert "no feasible trial yet (all 5 complete broke a constraint)" in run.progress()


def test_two_objectives_keep_only_feasible_trials_on_the_front():
    def two():
        x = tune.float(0, 1, name="x")
        tune.constraint(0.3 - x)  # x >= 0.3
        return x, 1 - x

    run = start(two, n_trials=20, seed=0, direction=["minimize", "minimize"], storage="memory", name="two",
                report=False).wait()
    assert run.pareto_front() and all(t.params["x"] >= 0.3 for t in run.pareto_front())
    assert any(t.params["x"] < 0.3 for t in run.trials())


@pytest.mark.parametrize("value, message", [
    ("a", "tune.constraint needs a number"), (True, "tune.constraint needs a number"),
    (float("nan"), "tune.constraint got NaN"),
])
def test_a_bad_constraint_value_is_one_clear_failure(value, message):
    def objective():
        x = tune.float(0, 1, name="x")
        tune.constraint(value)
        return x

    run = start(objective, n_trials=1, storage="memory", name="bad", report=False).wait()
    assert run.n_failed == 1 and message in run.failures[0][1]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_name_given_twice_in_one_trial_is_said_at_its_line(backend):
    def objective():
        x = tune.float(0, 1, name="x")
        tune.constraint(x, name="size")
        tune.constraint(x, name="size")
        return x

    run = start(objective, n_trials=1, storage="memory", name=f"twice-{backend}", backend=backend,
                report=False).wait()
    assert run.n_failed == 1 and "tune.constraint(name='size') is set twice in one trial" in run.failures[0][1]


def test_outside_a_trial_it_says_where_it_works():
    with pytest.raises(TuneError, match="works only while a trial runs"):
        tune.constraint(1.0)


def test_the_kernel_injects_and_refits_the_best_feasible_and_the_dashboard_marks_the_rest(kernel):
    cell = kernel.run(
        "%%tune -n 30 --seed 1 --name disc --refit\n"
        "x = tune.float(-2, 2)\n"
        "y = tune.float(-2, 2)\n"
        "tune.constraint(1 - x - y)\n"
        "fitted = (x, y)\n"
        "x * x + y * y\n")
    assert cell.error is None, cell.error_text
    kernel.run("%tune wait disc")
    best = kernel.value("(tune.last.best_trial.number, tune.last.best_value, tune.last.n_infeasible)")
    trials = kernel.value("[(t.number, t.value, t.constraints['0']) for t in tune.last.trials()]")
    feasible = [t for t in trials if t[2] <= 0]
    assert list(best[:2]) == list(min(feasible, key=lambda t: t[1])[:2]) and best[2] == len(trials) - len(feasible) > 0
    assert kernel.value("x + y >= 1 and fitted == (x, y)")  # injected and refit with a feasible trial's values

    def marked(states: dict) -> bool:
        return "infeasible" in _header(states) and any("hpt-infeasible" in v for v in _html(states))

    states = _widgets_once(kernel, cell.msg_id, marked, "the header's infeasible count and the table's marked rows")
    assert f"{best[2]} infeasible" in _header(states)
    table = next(v for v in _html(states) if "hpt-trials" in v)
    assert table.count("hpt-infeasible") == min(best[2], table.count("<tr") - 1)
    states = _decoded_widgets(kernel, cell.msg_id)
    crosses = _figure_marks(states, "optimisation history")[-1]
    assert crosses["marker"] == "cross"
    infeasible = sorted(t[0] for t in trials if t[2] > 0)
    assert sorted(np.asarray(crosses["x"], dtype=float).astype(int).tolist()) == infeasible
    # and on each knob's slice: a cross at each infeasible trial's value of it
    xs = dict(kernel.value("[(t.number, t.params['x']) for t in tune.last.trials()]"))
    on_slice = _figure_marks(states, "x")[1]
    assert sorted(np.asarray(on_slice["x"], dtype=float).tolist()) == sorted(xs[n] for n in infeasible)
    # and on the parallel coordinates: grey dashed lines apart from the coloured ones, whose
    # colour bar runs from the worst feasible score to the best feasible one
    broken, kept = _figure_marks(states, "parallel coordinates")[:2]
    assert broken["line_style"] == "dashed" and broken["colors"] == ["#8c959f"]
    assert np.asarray(broken["y"]).shape[0] == len(infeasible) and np.asarray(kept["y"]).shape[0] == len(feasible)
    assert all(label.endswith("broke a constraint") for label in broken["labels"])
    legend = next(v for v in _html(states) if "colour: value" in v)
    values = sorted(t[1] for t in feasible)
    assert f"worst {number(values[-1])}" in legend and f"best {number(values[0])}" in legend, legend
    assert f"broke a constraint ({len(infeasible)} shown)" in legend


def test_the_kernel_says_when_nothing_was_feasible(kernel):
    cell = kernel.run("%%tune -n 4 --name never\nx = tune.float(0, 1)\ntune.constraint(1 + x)\nx\n")
    assert cell.error is None, cell.error_text
    reply = kernel.run("%tune wait never")
    assert "none of its 4 complete trials kept its constraints" in reply.stdout
    assert kernel.value("'x' in dir()") is False


@pytest.mark.parametrize("sampler", ["gp", "tpe", "auto"])
def test_a_constraint_only_some_trials_set_counts_as_kept_where_it_is_not_set(sampler):
    # Optuna's GP alone refuses trials whose constraints differ ("The constraint names must be the
    # same for all trials"), which would end the study from inside the sampler.
    def conditional():
        x = tune.float(-2, 2, name="x")
        if x > 0:
            tune.constraint(x - 1.0, name="small")  # x <= 1 where x > 0
        return (x - 1.5) ** 2

    run = start(conditional, n_trials=14, seed=0, sampler=sampler, storage="memory", name=f"cond-{sampler}",
                report=False).wait()
    assert run.state == "finished" and run.n_complete == 14, run.reason
    assert run.best_params["x"] <= 1.0


def test_a_constrained_study_warm_started_from_an_unconstrained_one_runs_on(tmp_path):
    from hpt_jupyter import compile_cell

    source = "x = tune.float(-2, 2)\ny = tune.float(-2, 2)\nx * x + y * y\n"
    start(compile_cell(source, {"tune": tune}), n_trials=10, seed=0, name="free", storage="s.journal",
          directory=str(tmp_path), report=False).wait()
    constrained = compile_cell(source.replace("x * x", "tune.constraint(1 - x - y)\nx * x"), {"tune": tune})
    run = start(constrained, n_trials=12, seed=0, name="bound", storage="s.journal", directory=str(tmp_path),
                sampler="gp", warm_start="free", report=False).wait()
    assert run.warm_start.carried == 10
    assert run.state == "finished" and run.n_complete == 12, run.reason
    assert run.best_params["x"] + run.best_params["y"] >= 1


def test_the_gp_reads_an_unset_constraint_as_kept_in_its_own_trials_and_unknown_in_carried_ones():
    from optuna.samplers._gp import sampler as gp_sampler

    from hpt_jupyter.core.steered import COPY_KEY

    def trial(constraints: dict, copied=None) -> optuna.trial.FrozenTrial:
        attrs = {f"constraints:{k}": v for k, v in constraints.items()}
        if copied is not None:
            attrs[COPY_KEY] = copied
        return optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                         value=1.0, system_attrs=attrs)

    trials = [trial({"a": -1.0, "b": 2.0}), trial({"a": -1.0}), trial({}, copied="old#3"), trial({"a": 0.5}, copied=4)]
    values, feasible = gp_sampler._get_constraint_vals_and_feasibility(trials)
    assert np.isnan(values[1, 1]) and np.isnan(values[2]).all()  # unset: not measured, left out of the models
    assert feasible.tolist() == [False, True, False, False]  # own unset: kept; carried unset: not known feasible
