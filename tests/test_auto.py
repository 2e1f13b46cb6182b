"""``--sampler auto`` and ``--stop auto`` through the Python API (the magic's code path), in process."""

from __future__ import annotations

import math
import re
import warnings

import optuna
import pytest
from optuna.trial import TrialState

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
    # then the GP first, and TPE next, each fitted to the whole history, sharing the trials by
    # how far each moved the best: one TPE and one GP sampler, taking turns
    kinds = chosen(run)
    assert kinds[:6] == ["random"] + ["qmc"] * 3 + ["gp", "tpe"] and set(kinds[4:]) == {"gp", "tpe"}
    kept = run.study.sampler._kept
    assert isinstance(kept["gp"], optuna.samplers.GPSampler) and isinstance(kept["hedge"], optuna.samplers.TPESampler)
    hedge = run.study.sampler.hedge
    assert re.fullmatch(r"auto: (gp|tpe) \(2 numeric knobs, 19 trials: gp \d+% / tpe \d+%: (gp|tpe)'s trials "
                        r"moved the best further \(gp \d+ of \d+, tpe \d+ of \d+ improved it\)"
                        r"(; the GP's .* the cheaper TPE favoured)?\)", run.sampler_text()), run.sampler_text()
    assert len(hedge.records["gp"]) + len(hedge.records["tpe"]) == len(kinds[4:]) - 1  # all but the last
    assert run.best_value < 1.0  # the minimum is 0.398; random search needs ~100 trials for this


def _trial(number: int, value: float | None, model: str) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(
        value=value, state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        system_attrs={auto.SAMPLER_ATTR: model})
    trial.number = number
    return trial


def test_each_model_is_credited_with_the_trials_that_improved_the_best():
    # warm-up 10, 6, 8; then gp 2 (improves), tpe 7 (does not), gp 1 (improves), a pruned tpe
    # trial (does not), tpe 1 (ties the best: does not)
    trials = [_trial(0, 10, "qmc"), _trial(1, 6, "qmc"), _trial(2, 8, "qmc"), _trial(3, 2, "gp"),
              _trial(4, 7, "tpe"), _trial(5, 1, "gp"), _trial(6, None, "tpe"), _trial(7, 1, "tpe")]
    records = auto.hedge_records(trials[::-1], maximize=False)  # by number, whatever order they come in
    assert records == {"gp": [1.0, 1.0], "tpe": [0.0, 0.0, 0.0]}
    # maximised, only the first tpe trial (7 after 10, 6, 8, 2) improves nothing; 10 stays best
    assert auto.hedge_records(trials, maximize=True) == {"gp": [0.0, 0.0], "tpe": [0.0, 0.0, 0.0]}


def test_the_hedge_shares_trials_by_each_models_progress_and_keeps_a_floor():
    no_cost = {"gp": None, "tpe": None}
    start = auto.Hedge({"gp": [], "tpe": []}, no_cost, None)
    assert 0.6 < start.gp_share < 0.7 and start.next_model() == "gp"  # the GP first while trials are few
    gp_wins = auto.Hedge({"gp": [1, 0, 1, 1, 0, 1, 0, 1], "tpe": [0, 0, 0, 0]}, no_cost, None)
    tpe_wins = auto.Hedge({"gp": [0, 0, 0, 0, 0, 0, 0, 0], "tpe": [1, 0, 1, 1]}, no_cost, None)
    assert gp_wins.gp_share >= 0.85 and tpe_wins.gp_share <= 0.2
    floor = auto.Hedge({"gp": [0] * 30, "tpe": [1] * 15}, no_cost, None)
    assert floor.gp_share == auto.FLOOR and auto.Hedge({"gp": [1] * 30, "tpe": [0] * 15}, no_cost, None).gp_share \
        == 1 - auto.FLOOR
    assert "gp's trials moved the best further" in gp_wins.describe()
    assert "tpe's trials moved the best further" in tpe_wins.describe()
    # the next trial goes to the model furthest below its share: at the start, about two GP
    # trials to one TPE trial, evenly spread
    order: list = []
    for _ in range(6):
        shares = auto.Hedge({"gp": [], "tpe": []}, no_cost, None,
                            assigned={m: order.count(m) for m in ("gp", "tpe")})
        order.append(shares.next_model())
    assert order == ["gp", "tpe", "gp", "gp", "tpe", "gp"]


def test_a_gp_that_reads_the_scores_as_noise_cedes_trials_to_tpe():
    records = {"gp": [1, 0, 0, 1, 0, 0], "tpe": [0, 1, 0]}
    no_cost = {"gp": None, "tpe": None}
    smooth = auto.Hedge(records, no_cost, None, noise_share=1e-5)
    rugged = auto.Hedge(records, no_cost, None, noise_share=0.1)  # Rastrigin's ripples after 35 trials
    assert not smooth.rugged() and rugged.rugged()
    assert rugged.gp_share < smooth.gp_share - 0.25 and smooth.gp_share == auto.Hedge(records, no_cost, None).gp_share
    assert "reads 10% of the scores' variance as noise" in rugged.describe()


def test_a_gp_much_slower_than_the_trials_cedes_trials_to_tpe_and_says_so():
    records = {"gp": [0.2] * 6, "tpe": [0.2] * 3}
    quick = auto.Hedge(records, {"gp": 0.01, "tpe": 0.002}, 0.5)  # 10 ms on a 500 ms trial: no matter
    slow = auto.Hedge(records, {"gp": 0.4, "tpe": 0.004}, 0.02, "trials")  # 400 ms on a 20 ms trial
    timed = auto.Hedge(records, {"gp": 0.4, "tpe": 0.004}, 0.02, "time")  # the same under --timeout
    assert timed.gp_share < slow.gp_share < quick.gp_share
    assert "the cheaper TPE favoured" in slow.describe() and "400 ms" in slow.describe()
    assert "favoured" not in quick.describe()
    # a trial budget and a GP too quick to notice: nothing taken off
    tiny = auto.Hedge(records, {"gp": 0.03, "tpe": 0.001}, 0.0, "trials")
    assert tiny.gp_share == quick.gp_share


def test_on_a_smooth_quadratic_the_hedge_gives_the_gp_most_trials(monkeypatch):
    # The GP's own time is weighed apart (above); here a loaded machine must not move the shares.
    monkeypatch.setattr(auto, "NOTICEABLE", math.inf)

    def bowl():
        return sum((tune.float(-5, 5, name=f"x{i}") - 1) ** 2 for i in range(3))

    run = optimize(bowl, n_trials=40, seed=0, storage="memory", report=False, name="bowl")
    models = [kind for kind in chosen(run) if kind in ("gp", "tpe")]
    assert models[-20:].count("gp") >= 14 and run.study.sampler.hedge.gp_share >= 0.7
    assert run.best_value < 1e-3


def test_on_a_rugged_function_the_hedge_gives_tpe_most_trials():
    # Rastrigin, 4-D: ripples a GP cannot follow (it reads them as noise); TPE beats it there.
    def rastrigin():
        xs = [tune.float(-5.12, 5.12, name=f"x{i}") for i in range(4)]
        return 10 * len(xs) + sum(x * x - 10 * math.cos(2 * math.pi * x) for x in xs)

    run = optimize(rastrigin, n_trials=45, seed=0, storage="memory", report=False, name="ripples")
    models = [kind for kind in chosen(run) if kind in ("gp", "tpe")]
    hedge = run.study.sampler.hedge
    assert models[-20:].count("tpe") >= 14 and hedge.gp_share <= 0.3 and hedge.rugged()
    assert "a rugged function, TPE favoured" in run.sampler_text()


def test_the_gp_is_fitted_to_warped_scores_and_optunas_own_gp_is_not():
    import numpy as np

    def standardised(values: np.ndarray) -> np.ndarray:
        return (values - values.mean()) / values.std()

    heavy = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [100.0]])
    for sign in (1, -1):  # a heavy upper tail, and (a minimised score, negated) a heavy lower one
        plain, bent = standardised(sign * heavy[:, 0]), standardised(auto.warped(sign * heavy)[:, 0])
        assert list(np.argsort(bent)) == list(np.argsort(plain))  # the order is kept
        # the six ordinary scores, squashed into 5% of the range by the outlier, now spread out
        assert np.ptp(bent[:6]) > 4 * np.ptp(plain[:6])

    def goldstein_price():
        a, b = tune.float(-2, 2, name="a"), tune.float(-2, 2, name="b")
        return ((1 + (a + b + 1) ** 2 * (19 - 14 * a + 3 * a * a - 14 * b + 6 * a * b + 3 * b * b))
                * (30 + (2 * a - 3 * b) ** 2 * (18 - 32 * a + 12 * a * a + 48 * b - 36 * a * b + 27 * b * b)))

    def fitted_to(gp: optuna.samplers.GPSampler, study: optuna.Study) -> np.ndarray:
        return gp._gprs_cache_list[0]._y_train.squeeze(-1).numpy()

    run = optimize(goldstein_price, n_trials=14, seed=0, storage="memory", report=False, name="gold")
    gp = run.study.sampler._kept["gp"]
    assert isinstance(gp, optuna.samplers.GPSampler)
    # what auto's GP last fitted: the trials before its last one, minimised (so negated), warped
    last_gp = max(t.number for t in run.study.trials if t.system_attrs[auto.SAMPLER_ATTR] == "gp")
    before = np.array([[-t.value] for t in run.study.trials if t.number < last_gp])
    assert np.allclose(fitted_to(gp, run.study), standardised(auto.warped(before)[:, 0]))
    assert not np.allclose(fitted_to(gp, run.study), standardised(before[:, 0]))
    # Optuna's own GP (--sampler gp) is fitted to the scores as they are
    plain = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0, n_startup_trials=4))
    plain.optimize(lambda t: t.suggest_float("x", 0, 1) ** 8 * 1e6, n_trials=6)
    scores = np.array([-t.value for t in plain.trials[:5]])
    assert np.allclose(fitted_to(plain.sampler, plain), standardised(scores))


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
    run = optimize(branin, n_trials=16, seed=0, storage="memory", report=False, name="p", jobs=2)
    kinds = chosen(run)
    assert run.n_complete == 16 and "gp" in kinds[4:]
    # trials still running count toward the shares: two at a time do not both go to one model
    models = [k for k in kinds if k in ("gp", "tpe")]
    hedge = run.study.sampler.hedge
    assert "tpe" in models and sum(hedge.assigned.values()) == len(models) - 1
    assert sum(len(r) for r in hedge.records.values()) <= sum(hedge.assigned.values())


def test_many_trials_move_to_cma_es_warm_started(monkeypatch):
    # The limit is 200 complete trials; lowered here so the test needs 14, not 200, GP trials.
    monkeypatch.setattr(auto, "MODEL_TRIAL_LIMIT", 10)
    run = optimize(branin, n_trials=14, seed=0, storage="memory", report=False, name="m")
    assert chosen(run)[-3:] == ["cmaes"] * 3
    sampler = run.study.sampler._sampler
    assert isinstance(sampler, optuna.samplers.CmaEsSampler) and len(sampler._source_trials) >= 10
    assert "CMA-ES scales past a GP" in run.sampler_text()


def test_under_a_time_budget_a_gp_slower_than_the_trials_cedes_trials_to_tpe():
    # Trials that take no time: the GP's own milliseconds make its trials many times slower than
    # TPE's, so under --timeout (a time budget) the GP's share drops, and the header says why.
    run = optimize(branin, timeout=6, seed=0, storage="memory", report=False, name="t")
    models = [kind for kind in chosen(run) if kind in ("gp", "tpe")]
    assert models[:2] == ["gp", "tpe"], models
    # How many trials each gets depends on this machine's speed and on the GP's lead (on Branin
    # its trials improve the best far more often): the time term itself is checked here.
    hedge = run.study.sampler.hedge
    # The hedge's own words, as the header showed them while it ran: a fast machine passes 200
    # trials within the 6 s, and auto then hands the study to CMA-ES, whose line replaces it.
    assert "the cheaper TPE favoured" in hedge.describe()
    # the same evidence under a trial budget gives the GP more: there, time weighs a quarter
    same = auto.Hedge(hedge.records, hedge.costs, hedge.trial_seconds, "trials", noise_share=hedge.noise_share)
    assert hedge.gp_share < same.gp_share


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
