"""A run: the handle users hold on a search. Its state, queries, control and steering.

The loop that evaluates trials is the engine's (:mod:`hpt_jupyter.core.engine`): it keeps the
executor's slots full in background threads. Views subscribe to events; they never drive the
loop, they call :meth:`Run.stop`, :meth:`Run.pause`, :meth:`Run.resume` or :meth:`Run.extend`.
"""

from __future__ import annotations

import copy
import json
import logging
import numbers
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .engine import FINAL_STATES, FINISHED, PAUSED, READY, RUNNING, STOPPING, Engine
from .executors.base import Executor
from .space import ChoiceParam, FloatParam, IntParam, Param
from .steering import Narrowing, contains, describe, distribution, narrowed, near, share_of_space, span_of
from .storage import SEGMENT_MARK, TRACEBACK_KEY

__all__ = ["Run", "Event", "Segment", "FINAL_STATES", "FINISHED", "PAUSED", "READY", "RUNNING", "STOPPING",
           "TRACEBACK_KEY"]

if TYPE_CHECKING:
    import pandas

    from .cell import CompiledCell

logger = logging.getLogger("hpt_jupyter")
ASSIGNED_KEY = "hpt:assigned"
NARROWINGS_KEY = "hpt:narrowings"  # on the named study: the log of narrowings, with their studies
COPY_KEY = "hpt:copy_of"  # on a trial copied into a narrowed study: the run-wide number of the original


@dataclass
class Segment:
    """One study of a run: the named one, then one per narrowing. Its first ``seeded`` trials
    are copies of earlier ones; its own trials are numbered run-wide from ``base``."""

    study: optuna.Study
    seeded: int = 0
    base: int = 0

    def own_trials(self) -> list[FrozenTrial]:
        return [t for t in self.study.get_trials(deepcopy=False) if COPY_KEY not in t.system_attrs]


class RunningTrial(NamedTuple):
    number: int
    seconds: float
    params: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """What a run tells its subscribers. ``kind`` is one of: started, trial_started,
    trial_finished (any outcome: see ``trial.state``), paused, resumed, budget, narrowed,
    enqueued, finished. Trial numbers are run-wide (they go on across narrowings)."""

    kind: str
    run: Run
    trial: FrozenTrial | None = None
    number: int | None = None
    message: str | None = None


class Run:
    """A running (or finished) search. ``tune.runs[name]`` and ``tune.last`` are Runs."""

    def __init__(
        self,
        executor: Executor,
        study: optuna.Study,
        *,
        name: str,
        n_trials: int | None = None,
        timeout: float | None = None,
        target: float | None = None,
        max_failures: int | None = 5,
        cell: CompiledCell | None = None,
        owner: str | None = None,
        opened: str = "",
        sampler_name: str = "",
        sampler_factory: Callable[[int], optuna.samplers.BaseSampler] | None = None,
        trial_timeout: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.name = name
        self.study = study  # the study trials are asked from: the named one, or its latest narrowing
        self.base_study = study
        self.cell = cell
        self.opened = opened
        self.sampler_name = sampler_name or type(study.sampler).__name__
        self.timeout = timeout
        self.target = target
        self.max_failures = max_failures
        self.directions = [d.name.lower() for d in study.directions]
        self.space: dict[str, Param] = {}
        self.state = READY
        self.reason = ""
        self.executor = executor
        self.trial_timeout = trial_timeout
        self.seed = seed
        self._engine: Engine | None = None
        self._owner = owner
        self._subscribers: list[Callable[[Event], None]] = []
        self._condition = threading.Condition()
        self._stop_requested = False
        self._pause_requested = False
        self._thread: threading.Thread | None = None
        # Set once the loop has ended and its "finished" event is delivered. Liveness comes from
        # here, not Thread.is_alive(): an interrupted Thread.join() can make that report False.
        self._done = threading.Event()
        self._done.set()
        self._assigned: dict[int, dict[str, Any]] = {}
        self._best: FrozenTrial | None = None
        self._consecutive_failures = 0
        self.failures: list[tuple[int, str]] = []  # (trial number, short message)
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.sampler_seconds = 0.0  # time in ask, suggest and tell, summed over this run's trials
        self.objective_seconds = 0.0
        self.n_run = 0  # trials this run has finished

        # Steering: the narrowed knobs (name -> the same kind of knob, smaller), the studies
        # that searched each space, a narrowing waiting for the loop, configurations to try.
        if sampler_factory is None:
            pristine = copy.deepcopy(study.sampler)
            sampler_factory = lambda k: copy.deepcopy(pristine)  # noqa: E731
        self._sampler_factory = sampler_factory
        self.overrides: dict[str, Param] = {}
        self.narrowings: list[Narrowing] = []
        self.segments = [Segment(study)]
        self._pending_narrowing: tuple[dict[str, Param], Narrowing] | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._steer_lock = threading.Lock()  # one narrowing at a time, whoever asks
        self._loop_takes_steering = False  # True while a loop runs and applies narrowings between trials
        self._restore_narrowings()

        # One read of the stored history; from here on the run counts in memory.
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self._next_number = 0
        self.space.update(_space_of(self.segments, self.overrides))
        for trial in self.trials(states=None):
            self._next_number = trial.number + 1
            if trial.state in self.counts:
                self.counts[trial.state] += 1
                if trial.state == TrialState.COMPLETE:
                    self._consider_best(trial)
        self.n_stored = self.n_finished
        self.budget = n_trials  # total finished trials the study should reach

    # --- facts -------------------------------------------------------------------------

    @property
    def n_finished(self) -> int:
        return sum(self.counts.values())

    @property
    def n_complete(self) -> int:
        return self.counts[TrialState.COMPLETE]

    @property
    def n_failed(self) -> int:
        return self.counts[TrialState.FAIL]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.ended_at or time.monotonic()) - self.started_at

    @property
    def is_alive(self) -> bool:
        return not self._done.is_set()

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The best complete trial; for several objectives, the Pareto-optimal trial that is
        best in the first objective."""
        if not self.is_multi_objective:
            return self._best
        front = self.pareto_front()
        if not front:
            return None
        sign = -1 if self.directions[0] == "maximize" else 1
        return min(front, key=lambda t: (sign * t.values[0], t.number))

    @property
    def best_value(self) -> float | list[float] | None:
        trial = self.best_trial
        if trial is None:
            return None
        return trial.values if self.is_multi_objective else trial.value

    @property
    def best_params(self) -> dict[str, Any]:
        trial = self.best_trial
        return self._decoded(trial.params) if trial is not None else {}

    def best_assignments(self) -> dict[str, Any]:
        """What the best trial's cell really assigned to each knob's name: the knob's value,
        or, where the cell chose otherwise (``gamma = ... if ... else "scale"``), that."""
        trial = self.best_trial
        if trial is None:
            return {}
        values = self._decoded(trial.params)
        values.update(self._assigned.get(trial.number) or trial.user_attrs.get(ASSIGNED_KEY) or {})
        return values

    def pareto_front(self) -> list[FrozenTrial]:
        """The complete trials no other complete trial beats in every objective."""
        from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

        return _get_pareto_front_trials_by_trials(self.trials(), self.base_study.directions)

    def trials(self, states: tuple[TrialState, ...] | None = (TrialState.COMPLETE,)) -> list[FrozenTrial]:
        """Every trial of the run's history, across narrowings, numbered run-wide (copies seeded
        into a narrowed study are left out: each trial appears once). ``states=None``: all."""
        found = []
        for segment in self.segments:
            for trial in segment.own_trials():
                if states is None or trial.state in states:
                    found.append(self._renumbered(trial, segment))
        return found

    def trial(self, number: int) -> FrozenTrial:
        """Trial ``number`` (run-wide)."""
        for segment in reversed(self.segments):
            if number >= segment.base:
                local = number - segment.base + segment.seeded
                for trial in segment.study.get_trials(deepcopy=False):
                    if trial.number == local:
                        return self._renumbered(trial, segment)
                break
        raise KeyError(f"'{self.name}' has no trial #{number}")

    @staticmethod
    def _renumbered(trial: FrozenTrial, segment: Segment) -> FrozenTrial:
        if not segment.base and not segment.seeded:
            return trial
        trial = copy.copy(trial)  # a shallow copy: the stored trial keeps its own number
        trial.number = segment.base + trial.number - segment.seeded
        return trial

    def trials_dataframe(self, **kwargs: Any) -> pandas.DataFrame:
        """All trials, as ``optuna.Study.trials_dataframe`` gives them, numbered run-wide across
        narrowings (a column ``study`` says which study asked each)."""
        import pandas

        frames = []
        for segment in self.segments:
            frame = segment.study.trials_dataframe(**kwargs)
            if frame.empty:
                continue
            frame = frame[frame["number"] >= segment.seeded].copy()
            frame["number"] = frame["number"] - segment.seeded + segment.base
            frame["study"] = segment.study.study_name
            frames.append(frame)
        return pandas.concat(frames, ignore_index=True) if frames else self.study.trials_dataframe(**kwargs)

    def failure(self, number: int) -> str:
        """The traceback of failed trial ``number``."""
        trial = self.trial(number)
        if trial.state != TrialState.FAIL:
            raise KeyError(f"trial {number} did not fail")
        return trial.user_attrs.get(TRACEBACK_KEY, "(no traceback recorded)")

    def progress(self) -> str:
        done = self.n_finished
        budget = f"/{self.budget}" if self.budget is not None else ""
        best = self.best_value
        if best is None:
            best_text = "no complete trial yet"
        elif self.is_multi_objective:
            best_text = f"{len(self.pareto_front())} on the Pareto front"
        else:
            best_text = f"best {best:.6g} (#{self._best.number})"
        parts = [f"{done}{budget} trials", best_text]
        if self.n_failed:
            parts.append(f"{self.n_failed} failed")
        parts.append(f"{self.elapsed:.1f}s")
        eta = self.eta()
        if eta is not None and self.state == RUNNING:
            parts.append(f"ETA {eta:.0f}s")
        return " · ".join(parts)

    def eta(self) -> float | None:
        if self.budget is None or self.n_run == 0:
            return None
        remaining = max(self.budget - self.n_finished, 0)
        return remaining * self.elapsed / self.n_run

    def status(self) -> str:
        line = f"{self.name}: {self.state}"
        if self.reason and self.state in FINAL_STATES:
            line += f" ({self.reason})"
        return f"{line} · {self.sampler_name} · {'/'.join(self.directions)} · {self.progress()}"

    def __repr__(self) -> str:
        return f"<Run {self.status()}>"

    # --- control -----------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every event (from the run's thread: keep it quick).
        Returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def start(self) -> Run:
        """Start the loop in a background thread; returns at once."""
        with self._condition:
            if self.is_alive:
                return self
            self._stop_requested = False
            self.state = PAUSED if self._pause_requested else RUNNING
            self.reason = ""
            self.ended_at = None
            if self.started_at is None:
                self.started_at = time.monotonic()
            self._done.clear()
        with self._steer_lock:
            self._loop_takes_steering = True
        self._engine = Engine(self, self.executor)
        self._thread = self._engine.start()
        return self

    def slots_text(self) -> str:
        """`` · 4 process slots`` where trials do not run one at a time in the kernel."""
        executor = self.executor
        return "" if executor.name == "thread" and executor.jobs == 1 else f" · {executor.describe()}"

    def running_trials(self) -> list[RunningTrial]:
        """The trials running now, oldest first: number (run-wide), seconds so far, and the
        values sampled so far."""
        engine = self._engine
        if engine is None or not self.is_alive:
            return []
        now = time.monotonic()
        with self._condition:
            running = sorted(engine.running.items())
            contexts = dict(engine.contexts)
        found = []
        for number, started in running:
            context = contexts.get(number)
            params = dict(context.trial._cached_frozen_trial.params) if context is not None else {}
            found.append(RunningTrial(number, now - started, self._decoded(params)))
        return found

    def stop(self) -> None:
        """Stop after the running trial finishes (graceful: its result is kept)."""
        with self._condition:
            self._stop_requested = True
            if self.is_alive:
                self.state = STOPPING
            self._condition.notify_all()

    def pause(self) -> None:
        """Finish the running trial, then start no new one until :meth:`resume`."""
        with self._condition:
            self._pause_requested = True
            if self.state == RUNNING:
                self.state = PAUSED
            self._condition.notify_all()
        self._emit("paused")

    def resume(self) -> None:
        with self._condition:
            self._pause_requested = False
            if self.state == PAUSED:
                self.state = RUNNING
            self._condition.notify_all()
        self._emit("resumed")

    def extend(self, n: int) -> None:
        """Add ``n`` trials to the budget; a finished run starts again."""
        if not isinstance(n, numbers.Integral) or n < 1:
            raise TuneError(f"extend needs a positive number of trials, got {n!r}.")
        with self._condition:
            # Running: raise the budget. Ended (stopped, timed out): n more trials from here.
            alive = self.is_alive and not self._stop_requested
            base = self.budget if alive and self.budget is not None else self.n_finished
            self.budget = base + int(n)
            self._condition.notify_all()
        self._emit("budget")
        if not self.is_alive:
            self.start()

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run ends. An interrupt (Ctrl-C, the notebook's stop button) stops
        it gracefully; a second interrupt stops waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._join(deadline)
        except KeyboardInterrupt:
            if not self.is_alive:
                raise
            print(f"Interrupted: stopping '{self.name}' after its running trial "
                  "(interrupt again to stop waiting).", flush=True)
            self.stop()
            self._join(None)
        return self

    def _join(self, deadline: float | None) -> None:
        while not self._done.wait(0.05):  # short waits keep the main thread interruptible
            if deadline is not None and time.monotonic() >= deadline:
                return

    # --- steering ----------------------------------------------------------------------

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
        study_name = f"{self.name}{SEGMENT_MARK}{k}"
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
        for trial in self.trials():
            if not all(contains(p, trial.params[n]) for n, p in overrides.items() if n in trial.params):
                continue
            try:
                seeds.append(optuna.trial.create_trial(
                    params=trial.params,
                    distributions={n: distribution(overrides.get(n) or declared[n]) if n in declared
                                   else d for n, d in trial.distributions.items()},
                    values=trial.values, user_attrs=trial.user_attrs,
                    system_attrs={COPY_KEY: trial.number}, intermediate_values=trial.intermediate_values))
            except ValueError:  # a knob whose bounds the cell computes, outside them now: not a seed
                continue
        study.add_trials(seeds)
        record.study, record.seeded, record.first_trial = study_name, len(seeds), self._next_number
        self.segments.append(Segment(study, len(seeds), self._next_number))
        self.study, self.overrides = study, overrides
        self.narrowings.append(record)
        self._save_narrowings()
        self._emit("narrowed", message=record.describe())

    def _save_narrowings(self) -> None:
        log = []
        for record, segment in zip(self.narrowings, self.segments[1:]):
            entry = record.as_dict()
            entry["base"] = segment.base
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
            self.segments.append(Segment(study, entry["seeded"], entry["base"]))
            self.narrowings.append(Narrowing(entry["source"], entry["ranges"], entry["study"], entry["seeded"],
                                             entry["first_trial"], entry["at"]))
        self.study = self.segments[-1].study
        self.overrides = {name: _param_from_spec(name, spec) for name, spec in saved["overrides"].items()}

    # --- the loop ----------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        event = Event(kind, self, **fields)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken view must not stop the search
                logger.exception("hpt_jupyter: a subscriber of run %r failed on %s", self.name, kind)

    def _take_steering(self) -> None:
        """Before each ask (the engine holds the study lock): a requested narrowing, then the
        next queued configuration."""
        with self._steer_lock:
            pending, self._pending_narrowing = self._pending_narrowing, None
            if pending is not None:
                self._apply_space(*pending)
        if self._queue:
            self.study.enqueue_trial(self._queue.popleft(), skip_if_exists=False)

    def _keep_assignments(self, trial: optuna.Trial, number: int, assigned: dict[str, Any]) -> None:
        differing = {k: v for k, v in assigned.items()
                     if k not in trial.params or not _same(self._decode(k, trial.params[k]), v)}
        if not differing:
            return
        self._assigned[number] = differing
        try:  # persisted when it can be, so a resumed study injects the same values
            json.dumps(differing)
        except (TypeError, ValueError):
            return
        trial.set_user_attr(ASSIGNED_KEY, differing)

    def _consider_best(self, trial: FrozenTrial) -> None:
        if len(self.directions) > 1:
            return
        if self._best is None:
            self._best = trial
        elif self.directions[0] == "maximize":
            if trial.value > self._best.value:
                self._best = trial
        elif trial.value < self._best.value:
            self._best = trial

    def _note_param(self, param: Param) -> None:
        if self.space.get(param.name) != param:
            self.space[param.name] = param

    def _decode(self, name: str, value: Any) -> Any:
        param = self.space.get(name)
        return param.decode(value) if isinstance(param, ChoiceParam) else value

    def _decoded(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: self._decode(k, v) for k, v in params.items()}


def _space_of(segments: list[Segment], narrowed: Mapping[str, Param]) -> dict[str, Param]:
    """The knobs a stored history declared, so a resumed run can be steered before its first new
    trial. Narrowed studies asked narrowed knobs: those come from the first study only."""
    space: dict[str, Param] = {}
    for k, segment in enumerate(segments):
        for trial in segment.study.get_trials(deepcopy=False):
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
