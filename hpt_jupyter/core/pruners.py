"""Pruner names to Optuna pruners: ``--pruner "hyperband(min_resource=1, reduction_factor=3)"``.

A named pruner is Optuna's, with Optuna's defaults and the settings given, so a seeded study
prunes the same trials at the same steps as bare Optuna with that pruner. Settings are Python
literals; a setting the pruner does not have, or a value it refuses, is one message before any
trial runs.
"""

from __future__ import annotations

import ast
import inspect
import warnings
from typing import Any, Callable

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
    if lower is None and upper is None:
        raise ValueError("give lower=, upper= or both: threshold(lower=0.5)")
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
        value_node = keyword.value
        if isinstance(value_node, ast.Name) and keyword.arg == "wrapped":
            settings[keyword.arg] = value_node.id  # patient(wrapped=median)
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
