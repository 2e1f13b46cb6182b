"""The values of --pruner settings: a value the pruner cannot use is one line, before any trial
(from the API and from the magic); a value it can use, edge values included, reaches the pruner."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpt_jupyter import optimize, start, tune
from hpt_jupyter.core.pruners import PRUNERS, RULES, _settings_of, make_pruner
from hpt_jupyter.errors import TuneError

optuna.logging.set_verbosity(optuna.logging.WARNING)

# spec -> the whole message. Several of these Optuna takes at construction and trips over at the
# first prune (a math domain error, a division by zero) or never prunes at all.
BAD = {
    "hyperband(min_resource=-1)":
        "--pruner hyperband(min_resource=-1): min_resource must be a whole number >= 1 (default 1); got -1.",
    "hyperband(min_resource=0)":
        "--pruner hyperband(min_resource=0): min_resource must be a whole number >= 1 (default 1); got 0.",
    "hyperband(min_resource='auto')":
        "--pruner hyperband(min_resource='auto'): min_resource must be a whole number >= 1 (default 1); got 'auto'.",
    "hyperband(min_resource=1.5)":
        "--pruner hyperband(min_resource=1.5): min_resource must be a whole number >= 1 (default 1); got 1.5.",
    "hyperband(max_resource=0)":
        '--pruner hyperband(max_resource=0): max_resource must be a whole number >= 1 or "auto" (default "auto"); '
        "got 0.",
    "hyperband(min_resource=5, max_resource=3)":
        "--pruner hyperband(min_resource=5, max_resource=3): max_resource must be >= min_resource (5), "
        "or Hyperband never prunes; got 3.",
    "hyperband(reduction_factor=1)":
        "--pruner hyperband(reduction_factor=1): reduction_factor must be a whole number >= 2 (default 3); got 1.",
    "hyperband(reduction_factor=2.5)":
        "--pruner hyperband(reduction_factor=2.5): reduction_factor must be a whole number >= 2 (default 3); "
        "got 2.5.",
    "hyperband(bootstrap_count=-1)":
        "--pruner hyperband(bootstrap_count=-1): bootstrap_count must be a whole number >= 0 (default 0); got -1.",
    "hyperband(bootstrap_count=2)":
        '--pruner hyperband(bootstrap_count=2): bootstrap_count=2 needs a whole max_resource, not "auto" '
        "(the default); add e.g. max_resource=100 (the steps of a full trial).",
    "sha(min_resource=-1)":
        '--pruner sha(min_resource=-1): min_resource must be a whole number >= 1 or "auto" (default "auto"); '
        "got -1.",
    "sha(min_resource='fast')":
        '--pruner sha(min_resource=\'fast\'): min_resource must be a whole number >= 1 or "auto" '
        "(default \"auto\"); got 'fast'.",
    "sha(min_early_stopping_rate=0.5)":
        "--pruner sha(min_early_stopping_rate=0.5): min_early_stopping_rate must be a whole number >= 0 "
        "(default 0); got 0.5.",
    "sha(bootstrap_count=2)":
        '--pruner sha(bootstrap_count=2): bootstrap_count=2 needs a whole min_resource, not "auto" '
        "(the default); add e.g. min_resource=1.",
    "median(n_startup_trials=-1)":
        "--pruner median(n_startup_trials=-1): n_startup_trials must be a whole number >= 0 (default 5); got -1.",
    "median(n_startup_trials='5')":
        "--pruner median(n_startup_trials='5'): n_startup_trials must be a whole number >= 0 (default 5); got '5'.",
    "median(n_warmup_steps=2.5)":
        "--pruner median(n_warmup_steps=2.5): n_warmup_steps must be a whole number >= 0 (default 0); got 2.5.",
    "median(interval_steps=0)":
        "--pruner median(interval_steps=0): interval_steps must be a whole number >= 1 (default 1); got 0.",
    "median(n_min_trials=True)":
        "--pruner median(n_min_trials=True): n_min_trials must be a whole number >= 1 (default 1); got True.",
    "percentile(percentile=101)":
        "--pruner percentile(percentile=101): percentile must be a number from 0 to 100 (default 25.0); got 101.",
    "percentile(percentile=-0.5)":
        "--pruner percentile(percentile=-0.5): percentile must be a number from 0 to 100 (default 25.0); got -0.5.",
    "percentile(percentile=None)":
        "--pruner percentile(percentile=None): percentile must be a number from 0 to 100 (default 25.0); "
        "got None.",
    "threshold(upper='0.5')":
        "--pruner threshold(upper='0.5'): upper must be a finite number or None; got '0.5'.",
    "threshold(lower=1e999)":
        "--pruner threshold(lower=1e999): lower must be a finite number or None; got inf.",
    "threshold(lower=1, upper=0)":
        "--pruner threshold(lower=1, upper=0): lower must be <= upper, or every trial is pruned; "
        "got lower=1, upper=0.",
    "threshold(upper=1, interval_steps=0)":
        "--pruner threshold(upper=1, interval_steps=0): interval_steps must be a whole number >= 1 (default 1); "
        "got 0.",
    "patient(patience=-1)":
        "--pruner patient(patience=-1): patience must be a whole number >= 0 (default 3); got -1.",
    "patient(patience=2.5)":
        "--pruner patient(patience=2.5): patience must be a whole number >= 0 (default 3); got 2.5.",
    "patient(min_delta=-0.1)":
        "--pruner patient(min_delta=-0.1): min_delta must be a finite number >= 0 (default 0.0); got -0.1.",
    "patient(wrapped=3)":
        "--pruner patient(wrapped=3): wrapped must be the name of another pruner, e.g. wrapped='median', "
        "or None; got 3.",
    "patient(wrapped='median(n_startup_trials=-1)')":
        "--pruner median(n_startup_trials=-1): n_startup_trials must be a whole number >= 0 (default 5); got -1.",
    "wilcoxon(p_threshold=1.5)":
        "--pruner wilcoxon(p_threshold=1.5): p_threshold must be a number from 0 to 1 (default 0.1); got 1.5.",
    "wilcoxon(n_startup_steps=-2)":
        "--pruner wilcoxon(n_startup_steps=-2): n_startup_steps must be a whole number >= 0 (default 2); got -2.",
    "median(n_startup_trials=3, n_startup_trials=4)":
        "--pruner 'median(n_startup_trials=3, n_startup_trials=4)': n_startup_trials is given twice; give it once.",
}


def _recording():
    calls = []

    def objective():
        calls.append(1)
        x = tune.float(0, 1)
        for step in range(4):
            tune.report(x + step, step)
        return x

    return objective, calls


@pytest.mark.parametrize("spec", BAD)
def test_a_bad_value_is_one_line_before_any_trial(spec):
    objective, calls = _recording()
    with pytest.raises(TuneError) as raised:
        start(objective, n_trials=3, storage="memory", report=False, name="bad", pruner=spec)
    assert str(raised.value) == BAD[spec]
    assert "\n" not in str(raised.value)
    assert calls == [] and "bad" not in tune.runs


@pytest.mark.parametrize("spec", ["hyperband(min_resource=-1)", "percentile(percentile=101)",
                                  "threshold(lower=1, upper=0)"])
def test_optimize_refuses_before_any_trial_too(spec):
    objective, calls = _recording()
    with pytest.raises(TuneError, match="^--pruner "):
        optimize(objective, n_trials=3, storage="memory", report=False, name="bad", pruner=spec)
    assert calls == [] and "bad" not in tune.runs


def test_every_setting_of_every_pruner_has_a_rule():
    for name, (build, _) in PRUNERS.items():
        assert set(RULES[name]) == set(_settings_of(build)), name


# spec -> (the Optuna pruner, its attributes that hold the settings given)
GOOD = {
    "hyperband(min_resource=1, max_resource=1, reduction_factor=2)":
        (optuna.pruners.HyperbandPruner, {"_min_resource": 1, "_max_resource": 1, "_reduction_factor": 2}),
    "hyperband(min_resource=3, max_resource='auto')":
        (optuna.pruners.HyperbandPruner, {"_min_resource": 3, "_max_resource": "auto"}),
    "hyperband(max_resource=9, bootstrap_count=1)":
        (optuna.pruners.HyperbandPruner, {"_max_resource": 9, "_bootstrap_count": 1}),
    "sha(min_resource='auto', reduction_factor=2, min_early_stopping_rate=0, bootstrap_count=0)":
        (optuna.pruners.SuccessiveHalvingPruner, {"_min_resource": None, "_reduction_factor": 2,
                                                  "_min_early_stopping_rate": 0, "_bootstrap_count": 0}),
    "sha(min_resource=1, bootstrap_count=3)":
        (optuna.pruners.SuccessiveHalvingPruner, {"_min_resource": 1, "_bootstrap_count": 3}),
    "median(n_startup_trials=0, n_warmup_steps=0, interval_steps=1, n_min_trials=1)":
        (optuna.pruners.MedianPruner, {"_n_startup_trials": 0, "_n_warmup_steps": 0, "_interval_steps": 1,
                                       "_n_min_trials": 1, "_percentile": 50.0}),
    "percentile(percentile=0)": (optuna.pruners.PercentilePruner, {"_percentile": 0}),
    "percentile(percentile=100, n_min_trials=4)":
        (optuna.pruners.PercentilePruner, {"_percentile": 100, "_n_min_trials": 4}),
    "percentile(percentile=12.5)": (optuna.pruners.PercentilePruner, {"_percentile": 12.5}),
    "threshold(lower=0.5, upper=0.5)": (optuna.pruners.ThresholdPruner, {"_lower": 0.5, "_upper": 0.5}),
    "threshold(lower=-2, upper=None, n_warmup_steps=0)":
        (optuna.pruners.ThresholdPruner, {"_lower": -2.0, "_upper": float("inf"), "_n_warmup_steps": 0}),
    "patient(patience=0, min_delta=0)": (optuna.pruners.PatientPruner, {"_patience": 0, "_min_delta": 0}),
    "patient(patience=4, min_delta=0.01, wrapped=None)":
        (optuna.pruners.PatientPruner, {"_patience": 4, "_min_delta": 0.01, "_wrapped_pruner": None}),
    "wilcoxon(p_threshold=0, n_startup_steps=0)":
        (optuna.pruners.WilcoxonPruner, {"_p_threshold": 0, "_n_startup_steps": 0}),
    "wilcoxon(p_threshold=1)": (optuna.pruners.WilcoxonPruner, {"_p_threshold": 1}),
}


@pytest.mark.parametrize("spec", GOOD)
def test_a_good_value_reaches_the_pruner(spec):
    kind, attributes = GOOD[spec]
    pruner, description = make_pruner(spec)
    assert type(pruner) is kind, spec
    for attribute, value in attributes.items():
        assert getattr(pruner, attribute) == value, (spec, attribute)
    assert description == spec  # the settings as given, for the start line


def test_patient_wraps_a_pruner_written_with_or_without_quotes():
    for spec in ("patient(wrapped=median(n_startup_trials=2), patience=1)",
                 "patient(wrapped='median(n_startup_trials=2)', patience=1)"):
        pruner, _ = make_pruner(spec)
        inner = pruner._wrapped_pruner
        assert isinstance(inner, optuna.pruners.MedianPruner) and inner._n_startup_trials == 2, spec


@pytest.mark.parametrize("spec", ["hyperband(min_resource=1, max_resource=1, reduction_factor=2)",
                                  "hyperband(min_resource=2, max_resource=4, bootstrap_count=1)",
                                  "sha(min_resource='auto', reduction_factor=2)", "patient(patience=0)",
                                  "percentile(percentile=100, n_startup_trials=0)",
                                  "wilcoxon(p_threshold=0, n_startup_steps=0)"])
def test_edge_values_run_a_study_without_a_failed_trial(spec):
    objective, calls = _recording()
    run = start(objective, n_trials=6, storage="memory", report=False, name="edge", pruner=spec,
                sampler="random", seed=0).wait()
    states = [t.state for t in run.trials(states=None)]
    assert len(calls) == 6 and len(states) == 6, spec
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), (spec, states)


def test_the_magic_says_the_same_line_and_starts_nothing(kernel):
    kernel.run("calls = []")
    for spec in ("hyperband(min_resource=-1)", "median(interval_steps=0)", "patient(min_delta=-1)"):
        reply = kernel.run(f'%%tune -n 3 --storage memory --pruner "{spec}"\n'
                           "calls.append(1)\nx = tune.float(0, 1)\ntune.report(x, 0)\nx")
        assert reply.error is not None and reply.error["ename"] == "UsageError", spec
        assert reply.error["evalue"] == BAD.get(spec, reply.error["evalue"]), spec
        assert reply.error["evalue"].startswith(f"--pruner {spec}: "), reply.error["evalue"]
        assert "\n" not in reply.error["evalue"] and "Traceback" not in reply.error_text
    assert kernel.value("(calls, len(tune.runs))") == ([], 0)



@pytest.mark.parametrize("spec, expected", [
    ("pbt(resample_probability=True)", "resample_probability must be in [0, 1], got True"),
    ("pbt(factors=(True, 1e999))", "factors must be a list of positive numbers"),
    ("pbt(quantile=1e999)", "quantile must be in (0, 0.5]"),
    ("pbt(population=2, population=3)", "population given twice"),
])
def test_pbt_settings_values_are_checked_before_any_trial(spec, expected):
    from hpt_jupyter.core.pbt import make_scheduler

    with pytest.raises(TuneError) as raised:
        make_scheduler(spec)
    assert expected in str(raised.value) and "\n" not in str(raised.value)
