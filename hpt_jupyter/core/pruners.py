"""Pruner names to Optuna pruners: ``--pruner "hyperband(min_resource=1, reduction_factor=3)"``.

A named pruner is Optuna's, with Optuna's defaults and the settings given, so a seeded study
prunes the same trials at the same steps as bare Optuna with that pruner. Settings are Python
literals; a setting the pruner does not have, or a value it refuses, is one message before any
trial runs. Values are checked here, not left to Optuna: some of its pruners take any value at
construction and fail only at the first ``tune.report`` (``hyperband(min_resource=-1)``: a math
domain error mid-study), or never fail and never prune (``hyperband(min_resource=5, max_resource=3)``).
"""

from __future__ import annotations

import ast
import inspect
import math
import warnings
from typing import Any, Callable, NamedTuple

import optuna
from optuna.pruners import BasePruner

from ..errors import TuneError

_P = optuna.pruners


def _patient(wrapped: str | None = None, patience: int = 3, min_delta: float = 0.0) -> BasePruner:
    inner = make_pruner(wrapped)[0] if wrapped not in (None, "none") else None
    return _P.PatientPruner(inner, patience=patience, min_delta=min_delta)


def _percentile(percentile: float = 25.0, n_startup_trials: int = 5, n_warmup_steps: int = 0,
                interval_steps: int = 1, n_min_trials: int = 1) -> BasePruner:
    return _P.PercentilePruner(percentile, n_startup_trials, n_warmup_steps, interval_steps,
                               n_min_trials=n_min_trials)


def _threshold(lower: float | None = None, upper: float | None = None, n_warmup_steps: int = 0,
               interval_steps: int = 1) -> BasePruner:
    return _P.ThresholdPruner(lower, upper, n_warmup_steps, interval_steps)


# name -> (what builds it, one line for %%tune?)
PRUNERS: dict[str, tuple[Callable[..., BasePruner], str]] = {
    "none": (_P.NopPruner, "no early stopping (default); tune.report only records the curve"),
    "median": (_P.MedianPruner, "stop a trial worse than the median of earlier trials at the same step "
                                "(Katib's median stopping rule)"),
    "percentile": (_percentile, "stop a trial outside the best percentile (default 25) at the same step"),
    "sha": (_P.SuccessiveHalvingPruner, "asynchronous successive halving (ASHA)"),
    "hyperband": (_P.HyperbandPruner, "Hyperband: successive halving over several brackets"),
    "threshold": (_threshold, "stop a trial whose value leaves [lower, upper]"),
    "patient": (_patient, "stop a trial with no improvement in `patience` steps "
                          "(optionally only when wrapped='median' also says so)"),
    "wilcoxon": (_P.WilcoxonPruner, "Wilcoxon signed-rank test against the best trial (steps are "
                                    "instances, e.g. folds)"),
}


class _Rule(NamedTuple):
    """What a setting's value must be: ``ok(value)``, said as ``must be {text}``."""
    ok: Callable[[Any], bool]
    text: str


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(at_least: int, auto: bool = False) -> _Rule:
    def ok(value: Any) -> bool:
        return (auto and value == "auto") or (_is_whole(value) and value >= at_least)
    return _Rule(ok, f"a whole number >= {at_least}" + (' or "auto"' if auto else ""))


def _number(low: float | None = None, high: float | None = None, none: bool = False) -> _Rule:
    def ok(value: Any) -> bool:
        if none and value is None:
            return True
        return _is_number(value) and (low is None or value >= low) and (high is None or value <= high)
    if low is not None and high is not None:
        text = f"a number from {low:g} to {high:g}"
    elif low is not None:
        text = f"a finite number >= {low:g}"
    else:
        text = "a finite number"
    return _Rule(ok, text + (" or None" if none else ""))


# What Optuna 5.1's pruners accept (optuna/pruners/*.py), including what they only find out at
# the first prune: Hyperband's min_resource goes into a division and a logarithm (so >= 1, and no
# "auto", which only successive halving estimates); a reduction factor below 2 divides by zero;
# float counts of trials or steps index lists or never match a step.
_STEPS = {"n_warmup_steps": _whole(0), "interval_steps": _whole(1)}
_MEDIAN = {"n_startup_trials": _whole(0), **_STEPS, "n_min_trials": _whole(1)}
RULES: dict[str, dict[str, _Rule]] = {
    "none": {},
    "median": _MEDIAN,
    "percentile": {"percentile": _number(0, 100), **_MEDIAN},
    "sha": {"min_resource": _whole(1, auto=True), "reduction_factor": _whole(2),
            "min_early_stopping_rate": _whole(0), "bootstrap_count": _whole(0)},
    "hyperband": {"min_resource": _whole(1), "max_resource": _whole(1, auto=True),
                  "reduction_factor": _whole(2), "bootstrap_count": _whole(0)},
    "threshold": {"lower": _number(none=True), "upper": _number(none=True), **_STEPS},
    "patient": {"wrapped": _Rule(lambda v: v is None or isinstance(v, str),
                                 "the name of another pruner, e.g. wrapped='median', or None"),
                "patience": _whole(0), "min_delta": _number(0)},
    "wilcoxon": {"p_threshold": _number(0, 1), "n_startup_steps": _whole(0)},
}


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _check_values(name: str, settings: dict[str, Any], build: Callable[..., BasePruner], where: str) -> None:
    """One message for the first value the pruner cannot use (``where``: ``--pruner spec``)."""
    parameters = inspect.signature(build).parameters
    for key, value in settings.items():
        rule = RULES[name].get(key)
        if rule is not None and not rule.ok(value):
            default = parameters[key].default
            hint = "" if default in (None, inspect.Parameter.empty) else f" (default {_shown(default)})"
            raise TuneError(f"{where}: {key} must be {rule.text}{hint}; got {value!r}.")
    values = {key: p.default for key, p in parameters.items() if p.default is not p.empty}
    values.update(settings)
    if name == "sha" and values["bootstrap_count"] > 0 and values["min_resource"] == "auto":
        raise TuneError(f"{where}: bootstrap_count={values['bootstrap_count']} needs a whole min_resource, "
                        "not \"auto\" (the default); add e.g. min_resource=1.")
    if name == "hyperband":
        if values["bootstrap_count"] > 0 and values["max_resource"] == "auto":
            raise TuneError(f"{where}: bootstrap_count={values['bootstrap_count']} needs a whole max_resource, "
                            "not \"auto\" (the default); add e.g. max_resource=100 (the steps of a full trial).")
        if values["max_resource"] != "auto" and values["max_resource"] < values["min_resource"]:
            raise TuneError(f"{where}: max_resource must be >= min_resource ({values['min_resource']}), or Hyperband "
                            f"never prunes; got {values['max_resource']!r}.")
    if name == "threshold":
        lower, upper = values["lower"], values["upper"]
        if lower is None and upper is None:
            raise TuneError(f"{where}: give lower=, upper= or both: threshold(lower=0.5).")
        if lower is not None and upper is not None and lower > upper:
            raise TuneError(f"{where}: lower must be <= upper, or every trial is pruned; got lower={lower!r}, "
                            f"upper={upper!r}.")


def _settings_of(build: Callable[..., BasePruner]) -> list[str]:
    return [p.name for p in inspect.signature(build).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "wrapped_pruner"]


def _parse(spec: str) -> tuple[str, dict[str, Any]]:
    text = spec.strip()
    usage = "write a name, or a name with settings: --pruner \"hyperband(min_resource=1, reduction_factor=3)\""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise TuneError(f"--pruner {spec!r} cannot be read; {usage}.") from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise TuneError(f"--pruner {spec!r} cannot be read; {usage}.")
    if node.args:
        raise TuneError(f"--pruner {spec!r}: name each setting, e.g. {node.func.id}(reduction_factor=3).")
    settings = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise TuneError(f"--pruner {spec!r}: name each setting, e.g. {node.func.id}(reduction_factor=3).")
        if keyword.arg in settings:
            raise TuneError(f"--pruner {spec!r}: {keyword.arg} is given twice; give it once.")
        value_node = keyword.value
        if isinstance(value_node, (ast.Name, ast.Call)) and keyword.arg == "wrapped":
            settings[keyword.arg] = ast.unparse(value_node)  # patient(wrapped=median(n_startup_trials=3))
            continue
        try:
            settings[keyword.arg] = ast.literal_eval(value_node)
        except ValueError:
            raise TuneError(f"--pruner {spec!r}: the value of {keyword.arg} must be a number, a string, "
                            "True/False or None.") from None
    return node.func.id, settings


def make_pruner(spec: str | BasePruner | None) -> tuple[BasePruner, str]:
    """``(pruner, description)`` for ``--pruner spec`` (None: no pruner)."""
    if isinstance(spec, BasePruner):
        return spec, type(spec).__name__
    if spec is None:
        return _P.NopPruner(), "none"
    if not isinstance(spec, str):
        raise TuneError(f"pruner must be a name such as 'median' or an Optuna pruner, got {type(spec).__name__}.")
    name, settings = _parse(spec)
    if name not in PRUNERS:
        raise TuneError(f"--pruner {name!r} is not one I know; choose one of: {', '.join(PRUNERS)}.")
    build = PRUNERS[name][0]
    known = _settings_of(build)
    unknown = [key for key in settings if key not in known]
    if unknown:
        offered = f"its settings are: {', '.join(known)}" if known else "it has no settings"
        raise TuneError(f"--pruner {name}: no setting called {unknown[0]!r}; {offered}.")
    _check_values(name, settings, build, f"--pruner {spec.strip()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner = build(**settings)
    except TuneError:
        raise
    except (TypeError, ValueError) as error:
        raise TuneError(f"--pruner {spec.strip()}: {error}") from None
    description = name if not settings else f"{name}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"
    return pruner, description
