"""``--sampler auto`` and ``--stop auto`` through the Python API (the magic's code path), in process."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest

from hpt_jupyter import TuneError, optimize, start, tune
from hpt_jupyter.core import auto

optuna.logging.set_verbosity(optuna.logging.WARNING)


def branin():
    x = tune.float(-5, 10)
    y = tune.float(0, 15)
    return (y - 5.1 / (4 * math.pi ** 2) * x * x + 5 / math.pi * x - 6) ** 2 \
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10


def chosen(run) -> list[str]:
    return [t.system_attrs[auto.SAMPLER_ATTR] for t in run.study.trials]


def test_numeric_space_warms_up_quasi_randomly_then_runs_a_gaussian_process():
    run = optimize(branin, n_trials=20, seed=0, storage="memory", report=False, name="b")
    # 2 knobs: 1 random point, then Sobol up to dimension + 1 = 3, raised to the minimum of 4
    assert auto.warmup_length(2, 20) == 4
    # then the GP, with every third model trial TPE's: one TPE and one GP sampler, taking turns
    assert chosen(run) == ["random"] + ["qmc"] * 3 + ["gp", "gp", "tpe"] * 5 + ["gp"]
    kept = run.study.sampler._kept
    assert isinstance(kept["gp"], optuna.samplers.GPSampler) and isinstance(kept["hedge"], optuna.samplers.TPESampler)
    assert run.sampler_text() == ("auto: gp (2 numeric knobs, 19 trials: few trials, "
                                  "a GP is the most sample-efficient)")
    assert run.best_value < 1.0  # the minimum is 0.398; random search needs ~100 trials for this


def test_warmup_follows_the_dimension_and_the_budget():
    assert [auto.warmup_length(d, None) for d in (1, 3, 6, 9, 20)] == [4, 4, 7, 10, 10]
    assert auto.warmup_length(8, 30) == 6  # a fifth of 30
    assert auto.warmup_length(8, 5) == 2


def test_same_seed_same_trials():
    first = optimize(branin, n_trials=12, seed=7, storage="memory", report=False, name="s1")
    second = optimize(branin, n_trials=12, seed=7, storage="memory", report=False, name="s2")
    other = optimize(branin, n_trials=12, seed=8, storage="memory", report=False, name="s3")
    params = [t.params for t in first.study.trials]
    assert params == [t.params for t in second.study.trials] != [t.params for t in other.study.trials]


def test_a_conditional_space_goes_to_grouped_tpe():
    def objective():
        kind = tune.choice(["linear", "rbf"])
        if kind == "rbf":
            gamma = tune.float(1e-3, 1.0, log=True)
            return abs(math.log10(gamma) + 1)
        return 1 + tune.float(0, 1, name="slope")

    run = optimize(objective, n_trials=16, seed=0, storage="memory", report=False, name="c")
    assert chosen(run)[-1] == "tpe"
    sampler = run.study.sampler._sampler
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._group and sampler._multivariate
    assert "knobs that only some trials declare" in run.sampler_text()


def test_parallel_trials_run_under_the_gaussian_process():
    run = optimize(branin, n_trials=12, seed=0, storage="memory", report=False, name="p", jobs=2)
    assert run.n_complete == 12 and chosen(run)[-1] == "gp"


def test_many_trials_move_to_cma_es_warm_started(monkeypatch):
    # The limit is 200 complete trials; lowered here so the test needs 14, not 200, GP trials.
    monkeypatch.setattr(auto, "MODEL_TRIAL_LIMIT", 10)
    run = optimize(branin, n_trials=14, seed=0, storage="memory", report=False, name="m")
    assert chosen(run)[-3:] == ["cmaes"] * 3
    sampler = run.study.sampler._sampler
    assert isinstance(sampler, optuna.samplers.CmaEsSampler) and len(sampler._source_trials) >= 10
    assert "CMA-ES scales past a GP" in run.sampler_text()


def test_under_a_time_budget_a_gp_slower_than_the_trials_gives_way_to_tpe():
    # Trials that take no time: the GP's own tens of milliseconds are far above a tenth of them.
    run = optimize(branin, timeout=8, seed=0, storage="memory", report=False, name="t")
    kinds = chosen(run)
    first_gp = kinds.index("gp")
    # three timed GP trials (TPE's hedge between them), judged when the next is asked: TPE from
    # then on (past 200 trials, CMA-ES, as without a time budget)
    assert kinds[first_gp:first_gp + 5] == ["gp", "gp", "tpe", "gp", "tpe"] and kinds.count("gp") == 3
    assert run.study.sampler._gp_too_slow


def test_without_pytorch_tpe_stands_in_and_says_so_once(monkeypatch):
    # The tests install PyTorch; this hides it, as a machine without the gp extra lacks it.
    monkeypatch.setattr(auto, "gp_installed", lambda: False)
    monkeypatch.setattr(auto, "_told_no_gp", False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        run = optimize(branin, n_trials=8, seed=0, storage="memory", report=False, name="n1")
        optimize(branin, n_trials=2, seed=0, storage="memory", report=False, name="n2")
    told = [str(w.message) for w in said if "PyTorch" in str(w.message)]
    assert len(told) == 1 and "\n" not in told[0] and "pip install 'hpt-jupyter[gp]'" in told[0]
    assert chosen(run)[-1] == "tpe" and "a GP needs PyTorch" in run.sampler_text()


def test_stop_auto_ends_a_study_that_stopped_paying():
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)

    def objective():
        C = tune.float(1e-4, 1e2, log=True)
        scores = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500)), X, y, cv=5)
        tune.cv_scores(scores)
        return scores.mean()

    run = optimize(objective, n_trials=80, direction="maximize", seed=0, storage="memory", report=False,
                   stop="auto", name="wine")
    assert 20 <= run.n_complete < 80
    bound, error = run.auto_stop.last
    assert bound < error
    assert run.reason.startswith("more trials are unlikely to pay") and "(--stop auto)" in run.reason
    assert "cross-validation folds" in run.reason


def test_stop_auto_lets_a_study_that_still_pays_go_on():
    def objective():
        x = tune.float(-100, 100)
        value = x * x
        tune.cv_scores([value, value + 1e-9])  # folds that agree: any possible gain is worth trials
        return value

    run = optimize(objective, n_trials=30, seed=0, storage="memory", report=False, stop="auto", name="pays")
    assert run.n_complete == 30 and run.reason == "budget reached (30 trials)"
    bound, error = run.auto_stop.last
    assert bound > error


@pytest.mark.parametrize("options, message", [
    ({"stop": "soon"}, "--stop 'soon' is not a rule I know"),
    ({"stop": "auto", "direction": ["minimize", "maximize"]}, "--stop auto weighs one score"),
])
def test_bad_stop_options_get_one_message(options, message):
    with pytest.raises(TuneError, match=message):
        start(branin, storage="memory", report=False, **options)


def test_cv_scores_needs_two_folds():
    def objective():
        x = tune.float(0, 1)
        tune.cv_scores([x])
        return x

    run = optimize(objective, n_trials=1, storage="memory", report=False, name="folds", max_failures=1)
    assert run.n_failed == 1 and "tune.cv_scores needs the scores of 2 folds or more, got 1" in run.failures[0][1]
