"""A study's history read back for another use: comparing studies, or warm-starting a new one.

A study is named ``NAME`` (a run of this kernel, else a study in the given or default store) or
``NAME@STORE`` (any ``--storage`` value: ``old@sqlite:///studies.db``, ``old@memory``). Its
trials are the run's own, numbered run-wide across its narrowings, as ``Run.trials`` gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .steered import COPY_KEY, NARROWINGS_KEY
from .storage import resolve_storage, study_names


@dataclass
class StudyHistory:
    """One study's finished trials (run-wide numbers) and what it searched."""

    name: str
    where: str  # the store, as headers show it ("this kernel" for a run of this kernel)
    directions: list[str]
    trials: list[FrozenTrial]  # every trial (any state), in number order
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)  # each knob's widest declaration
    run: Any = None  # the Run, when the study is one of this kernel's

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def label(self) -> str:
        return self.name


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"NAME@STORE"`` -> ``("NAME", "STORE")``; a plain name has no store. The first ``@``
    splits, so a database URL with a password (``u:pw@host``) stays whole."""
    name, at, store = spec.partition("@")
    return name, (store if at else None)


def load_history(study: Any, storage: str | None = None, directory: str | None = None) -> StudyHistory:
    """The history of ``study``: a Run, or a spec (see the module's docstring); ``storage`` is the
    store a plain name is looked up in when it is not a run of this kernel (default: the
    embedded default store)."""
    from .space import tune

    if hasattr(study, "base_study") and hasattr(study, "trials"):  # a Run (not imported: it imports us)
        return _of_run(study)
    if not isinstance(study, str) or not study:
        raise TuneError(f"A study is named by its name (or NAME@STORE), or given as a run; got {study!r}.")
    name, store = split_spec(study)
    if store is None and name in tune.runs:
        return _of_run(tune.runs[name])
    store = store if store is not None else storage
    backend, where, _ = resolve_storage(store, directory)
    try:
        loaded = optuna.load_study(study_name=name, storage=backend)
    except KeyError:
        known = ", ".join(study_names(backend)) or "none"
        raise TuneError(f"No study named '{name}' in {where} (stored there: {known}); name one of them, "
                        "or give its store as NAME@STORE.") from None
    studies = [(loaded, 0, 0)]
    log = (backend.get_study_system_attrs(loaded._study_id).get(NARROWINGS_KEY) or {"log": []})["log"]
    for entry in log:  # the studies of its narrowed spaces are part of its history
        studies.append((optuna.load_study(study_name=entry["study"], storage=backend), entry["seeded"],
                        entry["base"]))
    trials = []
    for part, seeded, base in studies:
        for trial in part.get_trials(deepcopy=False):
            if COPY_KEY in trial.system_attrs:
                continue
            if base or seeded:
                trial = _renumbered(trial, base + trial.number - seeded)
            trials.append(trial)
    directions = [d.name.lower() for d in loaded.directions]
    return StudyHistory(name, where, directions, trials, _distributions(trials))


def _of_run(run: Any) -> StudyHistory:
    trials = run.trials(states=None)
    return StudyHistory(run.name, run.store or "this kernel", list(run.directions), trials,
                        _distributions(trials), run)


def _renumbered(trial: FrozenTrial, number: int) -> FrozenTrial:
    import copy

    trial = copy.copy(trial)
    trial.number = number
    return trial


def _distributions(trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Each knob's declaration; where trials declared it differently (a narrowed range), the
    widest, so that every trial's value lies inside."""
    found: dict[str, BaseDistribution] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            kept = found.get(name)
            if kept is None:
                found[name] = dist
            elif isinstance(kept, optuna.distributions.FloatDistribution) and \
                    isinstance(dist, optuna.distributions.FloatDistribution) and kept.step == dist.step:
                found[name] = optuna.distributions.FloatDistribution(
                    min(kept.low, dist.low), max(kept.high, dist.high), log=kept.log, step=kept.step)
            elif isinstance(kept, optuna.distributions.IntDistribution) and \
                    isinstance(dist, optuna.distributions.IntDistribution) and kept.step == dist.step:
                found[name] = optuna.distributions.IntDistribution(
                    min(kept.low, dist.low), max(kept.high, dist.high), log=kept.log, step=kept.step)
            elif isinstance(kept, optuna.distributions.CategoricalDistribution) and \
                    isinstance(dist, optuna.distributions.CategoricalDistribution):
                extra = tuple(c for c in dist.choices if c not in kept.choices)
                if extra:
                    found[name] = optuna.distributions.CategoricalDistribution(kept.choices + extra)
    return found
