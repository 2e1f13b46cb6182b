"""Warm starts: a new study that begins with what earlier studies learnt.

``--warm-start A B`` copies the complete trials of the stored studies A and B that fit this
run's space into the new study, before its first trial (marked as copies, as a narrowing's seeds
are: the sampler learns from them, while tables, counts and the best trial are this study's
own), and enqueues their best configurations to run first. What does not fit is handled as a
user would expect and said in one line each:

- a knob the earlier study had and this space has not: dropped from the copies;
- a range that changed: trials outside the new range are left out;
- choice options that changed: trials with an option no longer offered are left out;
- a knob this space adds (or whose kind changed): no trial can say anything about it, and
  Optuna's GP and multivariate TPE model only knobs every trial has, so the copies would blind
  them to it: no trial is copied, and the best configurations still run first (the sampler
  picks the new knob).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial

from ..errors import TuneError
from .history import StudyHistory, load_history
from .space import ChoiceParam, FloatParam, IntParam, Param
from .steered import COPY_KEY
from .steering import contains, describe, distribution

WARM_START_KEY = "hpt:warm_start"  # on the warm-started study: what was carried over (a WarmStart)
TRIED_FIRST = 3  # the earlier studies' best configurations that run first


@dataclass
class WarmStart:
    """What a warm start carried over into a study, kept with it so a resumed study says the same."""

    sources: list[str]
    carried: int  # trials copied in (they come before the study's own)
    first: int  # best configurations queued to run first
    notes: list[str] = field(default_factory=list)  # one line per mismatch

    def describe(self) -> str:
        text = f"warm start: {self.carried} trial{'' if self.carried == 1 else 's'} carried over from " \
               f"{', '.join(self.sources)}"
        if self.first:
            text += f", their best {self.first} tried first"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stored_warm_start(study: optuna.Study) -> WarmStart | None:
    saved = study._storage.get_study_system_attrs(study._study_id).get(WARM_START_KEY)
    return WarmStart(**saved) if saved else None


def read_sources(specs: str | Sequence[str], directions: list[str], storage: str | None,
                 directory: str | None, name: str) -> list[StudyHistory]:
    """The studies to warm-start from, checked before any study is touched."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise TuneError("--warm-start needs at least one stored study: --warm-start NAME [NAME@STORE ...].")
    histories = []
    for spec in specs:
        history = load_history(spec, storage, directory)
        if history.name == name and (history.run is not None or "@" not in spec):
            raise TuneError(f"--warm-start {spec}: that is this study itself; name an earlier study "
                            f"(or use --resume to go on with '{name}').")
        if len(history.directions) != len(directions):
            raise TuneError(f"--warm-start {spec}: '{history.name}' has {len(history.directions)} objective(s) and "
                            f"this study {len(directions)}; its values cannot seed this one.")
        if history.directions != directions:
            raise TuneError(f"--warm-start {spec}: '{history.name}' was run with --direction "
                            f"{' '.join(history.directions)} and this study asks for {' '.join(directions)}; "
                            "its values cannot seed this one. Warm-start from a study of the same direction.")
        if not history.complete:
            raise TuneError(f"--warm-start {spec}: '{history.name}' has no complete trial to learn from.")
        histories.append(history)
    return histories


def seed_study(study: optuna.Study, histories: list[StudyHistory], declared: dict[str, Param],
               computed: set[str] | None = None) -> WarmStart:
    """Copy what fits into the new, empty ``study`` and queue the best configurations; returns
    what was done (also stored with the study). ``declared``: this run's knobs as the cell
    declares them; ``computed``: knobs it declares with bounds computed as it runs (carried as
    they were). A plain function's space is unknown before it runs: ``computed=None`` carries
    every knob as it was."""
    known_space = computed is not None
    notes: list[str] = []
    copies: list[tuple[FrozenTrial, dict[str, Any], dict[str, BaseDistribution], str]] = []
    dropped: dict[str, str] = {}  # knob -> why it was dropped from the copies
    left_out: dict[str, list[int]] = {}  # knob -> [trials left out, total]
    measured: set[str] = set()  # knobs of this space the earlier trials set (of the same kind)
    for history in histories:
        for trial in history.complete:
            params, dists, fits = {}, {}, True
            for knob, value in trial.params.items():
                source = trial.distributions[knob]
                param = declared.get(knob)
                if param is None:
                    measured.add(knob)
                    if known_space and knob not in computed:
                        dropped.setdefault(knob, f"{knob} is not in this space: dropped from the carried trials")
                        continue
                    params[knob], dists[knob] = value, source  # a plain function's knob: as it was
                    continue
                if _kind(source) != _kind_of_param(param):
                    dropped.setdefault(knob, f"{knob} is {_kind_of_param(param)} here and was {_kind(source)} in "
                                             f"'{history.name}': its values are not carried")
                    continue
                measured.add(knob)
                count = left_out.setdefault(knob, [0, 0])
                count[1] += 1
                if not contains(param, value) or not _on_grid(param, value):
                    count[0] += 1
                    fits = False
                    continue
                params[knob], dists[knob] = value, distribution(param)
            if fits:
                copies.append((trial, params, dists, history.name))
    for knob, (out, total) in left_out.items():
        if out:
            param = declared[knob]
            what = "options no longer offered" if isinstance(param, ChoiceParam) else "values outside"
            notes.append(f"{knob}: {out} of {total} trials with {what} {describe(param)} left out")
    notes.extend(dropped.values())
    new = [knob for knob in [*declared, *(computed or ())] if knob not in measured]
    best_first = _best_configurations(copies, histories[0].directions)
    if new:  # copies without the knob would hide it from the GP: only the best configurations carry over
        notes.append(f"{', '.join(new)} {'is' if len(new) == 1 else 'are'} new: the earlier trials say nothing about "
                     f"{'it' if len(new) == 1 else 'them'}, so none is carried; their best configurations run first")
        copies = []
    seeds = []
    for trial, params, dists, source in copies:
        system_attrs = {COPY_KEY: f"{source}#{trial.number}"}
        system_attrs.update({k: v for k, v in trial.system_attrs.items() if k.startswith("constraints")})
        seeds.append(optuna.trial.create_trial(params=params, distributions=dists, values=trial.values,
                                               intermediate_values=trial.intermediate_values,
                                               system_attrs=system_attrs))
    study.add_trials(seeds)
    for params in best_first:
        study.enqueue_trial(params, skip_if_exists=False)
    warm = WarmStart([h.name for h in histories], len(seeds), len(best_first), notes)
    study._storage.set_study_system_attr(study._study_id, WARM_START_KEY, warm.as_dict())
    return warm


def _best_configurations(copies: list, directions: list[str]) -> list[dict[str, Any]]:
    """The best feasible fitting trials' values (first objective), distinct, at most TRIED_FIRST."""
    sign = -1.0 if directions[0] == "maximize" else 1.0
    ranked = sorted((c for c in copies if not any(v > 0 for v in c[0].constraints.values())
                     and c[0].values is not None and not math.isnan(c[0].values[0])),
                    key=lambda c: sign * c[0].values[0])
    chosen: list[dict[str, Any]] = []
    for _, params, _, _ in ranked:
        if params and params not in chosen:
            chosen.append(dict(params))
        if len(chosen) == TRIED_FIRST:
            break
    return chosen


def _kind(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "a choice"
    if isinstance(dist, IntDistribution):
        return "an int"
    return "a float"


def _kind_of_param(param: Param) -> str:
    if isinstance(param, ChoiceParam):
        return "a choice"
    return "an int" if isinstance(param, IntParam) else "a float"


def _on_grid(param: Param, value: Any) -> bool:
    """An int or stepped float knob's value lies on this space's grid."""
    if isinstance(param, (IntParam, FloatParam)) and param.step:
        steps = (value - param.low) / param.step
        return abs(steps - round(steps)) < 1e-9
    return True

