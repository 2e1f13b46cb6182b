"""Steering a run: narrowing its space, focusing on the best trials, resetting, enqueueing.

A narrowing opens a new Optuna study on the narrowed space (a *stage* of the run), seeded
with the complete trials inside it, so the sampler keeps learning; trials are numbered run-wide
across stages. :class:`Steering` is the part of :class:`~hpt_jupyter.core.run.Run` that does
this; it works on the run's state and never runs trials.
"""

from __future__ import annotations

import copy
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import FrozenTrial

from ..errors import TuneError
from .scheduling import TrialScheduler
from .space import ChoiceParam, FloatParam, IntParam, Param
from .steering import Narrowing, contains, describe, distribution, narrowed, near, share_of_space, span_of
from .storage import STAGE_MARK

NARROWINGS_KEY = "hpt:narrowings"  # on the named study: the log of narrowings, with their studies
COPY_KEY = "hpt:copy_of"  # on a trial copied into a narrowed study: the run-wide number of the original
# (a warm start's copy names its study instead: "study#12")


def carried_over(trial: FrozenTrial) -> bool:
    """A warm start's copy of another study's trial (not this study's own, nor a narrowing's
    copy of its own): what this study measures, a constraint say, it never measured."""
    return isinstance(trial.system_attrs.get(COPY_KEY), str)


@dataclass
class Stage:
    """One study of a run: the named one, then one per narrowing. Its first ``seeded`` trials
    are copies of earlier ones; its own trials are numbered run-wide from ``base``."""

    study: optuna.Study
    seeded: int = 0
    base: int = 0

    def own_trials(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if COPY_KEY not in t.system_attrs]



class Steering:
    """Narrow, focus, reset and enqueue (mixed into Run, whose state it uses)."""

    name: str
    study: optuna.Study
    base_study: optuna.Study
    cell: Any
    space: dict[str, Param]
    directions: list[str]
    is_multi_objective: bool
    scheduler: TrialScheduler
    _next_number: int

    def _init_steering(self, study: optuna.Study,
                       sampler_factory: Callable[[int], optuna.samplers.BaseSampler] | None) -> None:
        """The narrowed knobs (name -> the same kind of knob, smaller), the studies that searched
        each space, a narrowing waiting for the loop, configurations to try."""
        if sampler_factory is None:
            pristine = copy.deepcopy(study.sampler)
            sampler_factory = lambda k: copy.deepcopy(pristine)  # noqa: E731
        self._sampler_factory = sampler_factory
        self.overrides: dict[str, Param] = {}
        self.narrowings: list[Narrowing] = []
        self.stages = [Stage(study)]
        self._pending_narrowing: tuple[dict[str, Param], Narrowing] | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._steer_lock = threading.Lock()  # one narrowing at a time, whoever asks
        self._loop_takes_steering = False  # True while a loop runs and applies narrowings between trials
        self._restore_narrowings()

    def declared_space(self) -> dict[str, Param]:
        """Every knob as the cell (or objective) declares it: from the cell's code, and from
        the trials so far (stored ones included) for knobs whose bounds are computed at run time
        and for plain functions."""
        space = dict(self.space)  # the cell's literal declarations win over a stored history's
        if self.cell is not None:
            space.update({d.name: d.param for d in self.cell.declarations if d.name and d.param is not None})
        return space

    def effective_space(self) -> dict[str, Param]:
        """The space trials are asked from now: the declared one with the narrowings applied."""
        return self._space_with(self.overrides)

    def _space_with(self, overrides: Mapping[str, Param]) -> dict[str, Param]:
        space = self.declared_space()
        for name, override in overrides.items():
            declared = space.get(name)
            if isinstance(declared, ChoiceParam) and isinstance(override, ChoiceParam):
                keep = [i for i, label in enumerate(declared.labels) if label in override.labels]
                options = tuple(declared.options[i] for i in keep)
                labels = options if declared.labels is declared.options else tuple(declared.labels[i] for i in keep)
                space[name] = ChoiceParam(name, options, labels)
            else:
                space[name] = override
        return space

    def narrow(self, source: str = "api", **ranges: Any) -> Narrowing:
        """Search only part of the declared space from the next trial on: ``(low, high)`` for a
        number, a list of options for a choice. ``run.narrow(lr=(1e-4, 1e-2), kernel=["rbf"])``.

        The sampler keeps learning: a new study on the narrowed space, seeded with the
        complete trials inside it, takes over (the earlier ones stay as history; tables, plots,
        the best trial and injection span them all). A request outside the declared space, an
        empty range or no option left raises :class:`TuneError` and changes nothing."""
        if self.scheduler.steering_refusal is not None:
            raise TuneError(self.scheduler.steering_refusal)
        if not ranges:
            raise TuneError("narrow needs at least one knob, e.g. run.narrow(lr=(1e-4, 1e-2)).")
        if isinstance(self.study.sampler, optuna.samplers.GridSampler):
            raise TuneError("A grid search tries a fixed grid: narrowing does not apply. Start a new "
                            "%%tune with a smaller grid, or use another --sampler.")
        declared = self.declared_space()
        with self._steer_lock:
            pending = self._pending_narrowing
            overrides = dict(pending[0] if pending else self.overrides)
            described = {}
            for name, request in ranges.items():
                param = self._knob_to_narrow(declared, name)
                new = narrowed(param, request)
                described[name] = describe(new)
                same = new == param if not isinstance(param, ChoiceParam) else new.labels == param.labels
                if same:
                    overrides.pop(name, None)
                else:
                    overrides[name] = new
            if pending:  # not yet applied: this request joins it
                described = {**pending[1].ranges, **described}
            return self._request_space(overrides, Narrowing(source, described))

    def _knob_to_narrow(self, declared: Mapping[str, Param], name: str) -> Param:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none yet"
            raise TuneError(f"'{self.name}' has no knob '{name}' to narrow; its knobs: {known}.")
        return declared[name]

    def reset(self, source: str = "reset") -> Narrowing:
        """Search the whole declared space again (a new study seeded with every complete trial)."""
        if self.scheduler.steering_refusal is not None:
            raise TuneError(self.scheduler.steering_refusal)
        with self._steer_lock:
            return self._request_space({}, Narrowing(source, {}))

    def focus(self, top: float = 0.25, source: str = "top") -> Narrowing:
        """Narrow every knob to the range the best ``top`` fraction of complete trials span."""
        return self.narrow(source=source, **self.propose_focus(top))

    def propose_focus(self, top: float = 0.25) -> dict[str, Any]:
        """The ranges :meth:`focus` would apply, without applying them."""
        if self.is_multi_objective:
            raise TuneError("focus needs one objective: with several there is no single 'best X%'; "
                            "narrow by hand with run.narrow(...).")
        if not (isinstance(top, (int, float)) and 0 < top <= 1):
            raise TuneError(f"top is a fraction of the trials, between 0 and 1 (e.g. 0.25), got {top!r}.")
        complete = self.trials()
        if len(complete) < 2:
            raise TuneError(f"focus needs at least 2 complete trials; '{self.name}' has {len(complete)}.")
        sign = -1 if self.directions[0] == "maximize" else 1
        complete.sort(key=lambda t: (sign * t.value, t.number))
        best = complete[: max(2, round(len(complete) * top))]
        return span_of(self.declared_space(), [self._decoded(t.params) for t in best])

    def preview(self, **ranges: Any) -> tuple[float, int]:
        """What ``narrow(**ranges)`` would keep, without applying it: the share of the declared
        space searched afterwards and how many complete trials lie inside (they seed the new
        study). Raises :class:`TuneError` for a request ``narrow`` would refuse."""
        declared = self.declared_space()
        pending = self._pending_narrowing  # a request the loop has not applied yet counts
        searched = self._space_with(pending[0] if pending else self.overrides)
        for name, request in ranges.items():
            searched[name] = narrowed(self._knob_to_narrow(declared, name), request)
        cut = {n: p for n, p in searched.items() if p != declared.get(n)}
        inside = sum(all(contains(p, trial.params[n]) for n, p in cut.items() if n in trial.params)
                     for trial in self.trials())
        return share_of_space(declared, searched), inside

    def enqueue(self, values: Mapping[str, Any], source: str = "api") -> dict[str, Any]:
        """Try ``values`` (some or all knobs; the sampler picks the rest) as the next trial.
        Values must lie in the space searched now."""
        if self.scheduler.steering_refusal is not None:
            raise TuneError(self.scheduler.steering_refusal)
        space = self.effective_space()
        stored: dict[str, Any] = {}
        for name, value in dict(values).items():
            param = space.get(name)
            if param is None:
                known = ", ".join(sorted(space)) or "none yet"
                raise TuneError(f"'{self.name}' has no knob '{name}'; its knobs: {known}.")
            if isinstance(param, ChoiceParam):
                matches = [label for option, label in zip(param.options, param.labels)
                           if option is value or _same(option, value) or _same(label, value)]
                if not matches:
                    raise TuneError(f"{name}={value!r} is not among the options searched now: "
                                    f"{list(param.labels)!r}.")
                stored[name] = matches[0]
            elif not contains(param, value) or (isinstance(param, IntParam) and not float(value).is_integer()):
                raise TuneError(f"{name}={value!r} lies outside the range searched now ({describe(param)}); "
                                "reset or widen the narrowing first.")
            else:
                stored[name] = value
        self._queue.append(stored)
        self._emit("enqueued", message=f"{source}: " + ", ".join(f"{k}={v!r}" for k, v in stored.items()))
        return stored

    def enqueue_near(self, number: int, spread: float = 0.05, seed: int | None = None) -> dict[str, Any]:
        """"Try near this": trial ``number``'s values, each number moved by up to ``spread`` of
        its range, clipped into the space searched now."""
        trial = self.trial(number)
        space = self.effective_space()
        values = near(space, self._decoded(trial.params), spread, random.Random(seed))
        for name, value in list(values.items()):
            param = space.get(name)
            if param is not None and not isinstance(param, ChoiceParam):
                values[name] = min(max(value, param.low), param.high)
            elif isinstance(param, ChoiceParam) and not any(_same(value, o) or value is o for o in param.options):
                del values[name]  # an option narrowed away: let the sampler choose
        return self.enqueue(values, source=f"near #{number}")

    def _request_space(self, overrides: dict[str, Param], record: Narrowing) -> Narrowing:
        """Apply now if no trial loop runs; else hand it to the loop for its next trial
        (called with ``_steer_lock`` held, which the loop takes to stop taking requests)."""
        if self._loop_takes_steering:
            self._pending_narrowing = (overrides, record)
            return record
        self._apply_space(overrides, record)
        return record

    def _apply_space(self, overrides: dict[str, Param], record: Narrowing) -> None:
        """Open a study on the new space, seed it with the complete trials inside it, ask from
        it (the loop's thread between trials, or the caller's when no loop runs)."""
        k = len(self.narrowings) + 1
        study_name = f"{self.name}{STAGE_MARK}{k}"
        storage = self.base_study._storage
        try:  # a study of that name left by a run that crashed mid-narrowing
            optuna.delete_study(study_name=study_name, storage=storage)
        except KeyError:
            pass
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(study_name=study_name, storage=storage, sampler=self._sampler_factory(k),
                                        pruner=self.base_study.pruner,
                                        directions=self.directions)
        finally:
            optuna.logging.set_verbosity(level)
        declared = self.declared_space()
        seeds = []
        carried = [t for t in self.stages[0].study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                   if COPY_KEY in t.system_attrs]  # a warm start's trials: the sampler keeps them too
        for trial in [*self.trials(), *carried]:
            if not all(contains(p, trial.params[n]) for n, p in overrides.items() if n in trial.params):
                continue
            try:
                seeds.append(optuna.trial.create_trial(
                    params=trial.params,
                    distributions={n: distribution(overrides.get(n) or declared[n]) if n in declared
                                   else d for n, d in trial.distributions.items()},
                    values=trial.values, user_attrs=trial.user_attrs,
                    system_attrs={COPY_KEY: trial.system_attrs.get(COPY_KEY, trial.number),
                                  # its tune.constraint values: the sampler still avoids what broke them
                                  **{k: v for k, v in trial.system_attrs.items() if k.startswith("constraints")}},
                    intermediate_values=trial.intermediate_values))
            except ValueError:  # a knob whose bounds the cell computes, outside them now: not a seed
                continue
        study.add_trials(seeds)
        record.study, record.seeded, record.first_trial = study_name, len(seeds), self._next_number
        self.stages.append(Stage(study, len(seeds), self._next_number))
        self.study, self.overrides = study, overrides
        self.narrowings.append(record)
        self._save_narrowings()
        self._emit("narrowed", message=record.describe())

    def _save_narrowings(self) -> None:
        log = []
        for record, stage in zip(self.narrowings, self.stages[1:]):
            entry = record.as_dict()
            entry["base"] = stage.base
            log.append(entry)
        spaces = {name: _param_spec(p) for name, p in self.overrides.items()}
        self.base_study._storage.set_study_system_attr(
            self.base_study._study_id, NARROWINGS_KEY, {"log": log, "overrides": spaces})

    def _restore_narrowings(self) -> None:
        """A resumed study goes on in its latest narrowed space, with the same history."""
        saved = self.base_study._storage.get_study_system_attrs(self.base_study._study_id).get(NARROWINGS_KEY)
        if not saved:
            return
        for k, entry in enumerate(saved["log"], start=1):
            study = optuna.load_study(study_name=entry["study"], storage=self.base_study._storage,
                                      pruner=self.base_study.pruner,
                                      sampler=self._sampler_factory(k))
            self.stages.append(Stage(study, entry["seeded"], entry["base"]))
            self.narrowings.append(Narrowing(entry["source"], entry["ranges"], entry["study"], entry["seeded"],
                                             entry["first_trial"], entry["at"]))
        self.study = self.stages[-1].study
        self.overrides = {name: _param_from_spec(name, spec) for name, spec in saved["overrides"].items()}

    def _take_steering(self) -> None:
        """Before each ask (the engine holds the study lock): a requested narrowing, then the
        next queued configuration."""
        with self._steer_lock:
            pending, self._pending_narrowing = self._pending_narrowing, None
            if pending is not None:
                self._apply_space(*pending)
        if self._queue:
            self.study.enqueue_trial(self._queue.popleft(), skip_if_exists=False)


def _space_of(stages: list[Stage], narrowed: Mapping[str, Param]) -> dict[str, Param]:
    """The knobs a stored history declared, so a resumed run can be steered before its first new
    trial. Narrowed studies asked narrowed knobs: those come from the first study only."""
    space: dict[str, Param] = {}
    for k, stage in enumerate(stages):
        for trial in stage.study.get_trials(deepcopy=False):
            for name, dist in trial.distributions.items():
                if name in space or (k and name in narrowed):
                    continue
                if isinstance(dist, optuna.distributions.CategoricalDistribution):
                    labels = tuple(dist.choices)
                    space[name] = ChoiceParam(name, labels, labels)  # objects' options come with the next trial
                elif isinstance(dist, optuna.distributions.IntDistribution):
                    space[name] = IntParam(name, dist.low, dist.high, dist.log, dist.step)
                elif isinstance(dist, optuna.distributions.FloatDistribution):
                    space[name] = FloatParam(name, dist.low, dist.high, dist.log, dist.step)
    return space


def _param_spec(param: Param) -> dict[str, Any]:
    if isinstance(param, ChoiceParam):
        return {"kind": "choice", "labels": list(param.labels)}
    return {"kind": type(param).__name__, "low": param.low, "high": param.high, "log": param.log, "step": param.step}


def _param_from_spec(name: str, spec: dict[str, Any]) -> Param:
    if spec["kind"] == "choice":
        labels = tuple(spec["labels"])
        return ChoiceParam(name, labels, labels)  # options come from the declared knob when trials ask
    kind = FloatParam if spec["kind"] == "FloatParam" else IntParam
    return kind(name, spec["low"], spec["high"], spec["log"], spec["step"])


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and odd objects: treat as different
        return False
