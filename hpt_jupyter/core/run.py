"""A run: the handle users hold on a search. Its state, queries and control; steering is
:mod:`hpt_jupyter.core.steered`'s.

The loop that evaluates trials is the engine's (:mod:`hpt_jupyter.core.engine`): it keeps the
executor's slots full in background threads. Views subscribe to events; they never drive the
loop, they call :meth:`Run.stop`, :meth:`Run.pause`, :meth:`Run.resume` or :meth:`Run.extend`.
"""

from __future__ import annotations

import copy
import json
import logging
import numbers
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .auto import SAMPLER_ATTR, AutoSampler
from .engine import FAILED, FINAL_STATES, FINISHED, PAUSED, READY, RUNNING, STOPPED, STOPPING, Engine
from .executors.base import Executor
from .heartbeat import DEFAULT_GRACE
from .pbt import LineageSegment
from .resilient import DEFAULT_LIMIT, ResilientStorage
from .scheduling import TrialScheduler
from .space import ChoiceParam, Param
from .stopping import AutoStop
from .steered import NARROWINGS_KEY, Stage, Steering, _same, _space_of
from .score import short_failure
from .storage import TRACEBACK_KEY, set_lease
from .trial_warnings import TrialSink, TrialWarning, WarningLog
from .warm import stored_warm_start

__all__ = ["Run", "Event", "Stage", "NARROWINGS_KEY", "FINAL_STATES", "FINISHED", "PAUSED", "READY",
           "RUNNING", "STOPPING", "TRACEBACK_KEY"]

if TYPE_CHECKING:
    import pandas

    from .cell import CompiledCell

logger = logging.getLogger("hpt_jupyter")
_report_writer: Callable[[Run, str], str] | None = None  # see Run.report and set_report_writer


def set_report_writer(writer: Callable[[Run, str], str]) -> None:
    """Plug in what ``Run.report(path)`` calls (the package plugs in its HTML report view)."""
    global _report_writer
    _report_writer = writer
ASSIGNED_KEY = "hpt:assigned"


class RunningTrial(NamedTuple):
    number: int
    seconds: float
    params: dict[str, Any]
    placement: str = ""  # its GPUs or cores, where the run hands them out ("GPU 2")


@dataclass(frozen=True)
class Event:
    """What a run tells its subscribers. ``kind`` is one of: started, trial_started,
    trial_finished (any outcome: see ``trial.state``), paused, resumed, budget, narrowed,
    enqueued, storage (the store stopped or started answering), tracking (the tracking server
    did), finished. Trial numbers are run-wide (they go on across narrowings)."""

    kind: str
    run: Run
    trial: FrozenTrial | None = None
    number: int | None = None
    message: str | None = None


class Run(Steering):
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
        patience: int | None = None,
        pruner_name: str = "none",
        scheduler: TrialScheduler | None = None,
        auto_stop: AutoStop | None = None,
        storage_wait: float = DEFAULT_LIMIT,
        grace_period: float = DEFAULT_GRACE,
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
        self.patience = patience  # end after this many complete trials without improvement
        self._since_improvement = 0  # complete trials since the best improved, in this start
        self._front: list[list[float]] = []  # several objectives: the values on the Pareto front
        self.pruner_name = pruner_name
        self.scheduler = scheduler or TrialScheduler()  # population-based training, or the sampler's
        self.auto_stop = auto_stop  # --stop auto: Optuna's Terminator, or None
        self._auto_stop_reason: str | None = None
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
        self._warning_log = WarningLog()  # warnings the trials raised (see run.warnings)
        self.storage_wait = storage_wait  # seconds of store outage before the run pauses
        self.grace_period = grace_period  # seconds without a heartbeat before another kernel's trial fails
        self.storage_problem: str | None = None  # "storage unreachable since 14:03:07, retrying (...)"
        self._unwritten: list[Callable[[], Any]] = []  # results the store could not take: written on resume
        self._waiting_for_store = False  # ended because the store stayed away: resume() starts it again
        self._store_unsubscribe: Callable[[], None] | None = None
        self.store = ""  # where the study is stored, as the start line says it (no password)
        self.tracker: Any = None  # --log mlflow: the tracker that logs this run's trials

        self._init_steering(study, sampler_factory)
        # --warm-start: the study's first trials are copies of earlier studies' (the sampler's
        # knowledge, not this study's own trials)
        self.warm_start = stored_warm_start(study)
        if self.warm_start is not None:
            self.stages[0].seeded = self.warm_start.carried

        # One read of the stored history; from here on the run counts in memory.
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self.n_infeasible = 0  # complete trials that broke a tune.constraint (never the best)
        self._next_number = 0
        self.space.update(_space_of(self.stages, self.overrides))
        for trial in self.trials(states=None):
            self._next_number = trial.number + 1
            if trial.state in self.counts:
                self.counts[trial.state] += 1
                if trial.state == TrialState.COMPLETE:
                    self._consider_best(trial)
        self.n_stored = self.n_finished
        self.scheduler.load(self.trials(states=None))  # a resumed PBT study goes on with its population
        self.budget = n_trials  # total finished trials the study should reach

    # --- facts -------------------------------------------------------------------------

    @property
    def n_finished(self) -> int:
        return sum(self.counts.values())

    @property
    def n_complete(self) -> int:
        return self.counts[TrialState.COMPLETE]

    @property
    def n_pruned(self) -> int:
        return self.counts[TrialState.PRUNED]

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
    def waiting_for_store(self) -> bool:
        """The run paused because its store stayed away (``resume()`` goes on)."""
        return self._waiting_for_store and not self.is_alive

    @property
    def is_alive(self) -> bool:
        return not self._done.is_set()

    @property
    def best_trial(self) -> FrozenTrial | None:
        """The best complete trial; for several objectives, the Pareto-optimal trial that is
        best in the first objective; under population-based training, the latest segment of
        the member whose latest score is best."""
        chosen = self.scheduler.best_trial()
        if chosen is not None:
            return chosen
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

    @property
    def best_schedule(self) -> list[dict[str, Any]]:
        """Under population-based training, the hyperparameters of the best member's training
        over steps, following its lineage back through the members it cloned: one entry per
        segment, ``{"trial", "member", "start", "end", "value", **params}``."""
        if not self.scheduler.population_based:
            raise TuneError("best_schedule exists for population-based training (--scheduler pbt) only; "
                            "this run's best hyperparameters are run.best_params.")
        best = self.best_trial
        if best is None:
            return []
        return [{"trial": s.number, "member": s.member, "start": s.start, "end": s.end, "value": s.value,
                 **self._decoded(s.params)} for s in self.scheduler.schedule_of(best.number)]

    def lineage(self) -> list[LineageSegment]:
        """Under population-based training, every segment of every member (who cloned whom,
        when, with which hyperparameters), in trial order; [] otherwise."""
        if not self.scheduler.population_based:
            return []
        with self.scheduler.lock:
            return [self.scheduler.lineage[n] for n in sorted(self.scheduler.lineage)]

    def sampler_text(self) -> str:
        """The sampler's name; for ``auto``, what it runs now and why:
        ``auto: gp (6 numeric knobs, 23 trials: gp 78% / tpe 22%: gp's trials moved the best
        further (gp 5 of 12, tpe 0 of 5 improved it))``."""
        sampler = self.study.sampler
        if isinstance(sampler, AutoSampler):
            return f"auto: {sampler.describe()}"
        return self.sampler_name

    def samplers_used(self) -> dict[str, int]:
        """Under ``auto``: how many trials each sampler it chose sampled, in order of first use."""
        used: dict[str, int] = {}
        for trial in self.trials(states=None):
            kind = trial.system_attrs.get(SAMPLER_ATTR)
            if kind is not None:
                used[kind] = used.get(kind, 0) + 1
        return used

    def scheduler_text(self) -> str:
        """What decides when trials (and the study) stop: `` · PBT · population 4 · every 5
        steps``, `` · pruner hyperband``, `` · stop auto``, or nothing."""
        text = "" if self.auto_stop is None else " · stop auto"
        if self.scheduler.describe():
            return f" · {self.scheduler.describe()}{text}"
        return text if self.pruner_name == "none" else f" · pruner {self.pruner_name}{text}"

    def pareto_front(self) -> list[FrozenTrial]:
        """The complete trials no other complete trial beats in every objective."""
        from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

        return _get_pareto_front_trials_by_trials(self.trials(), self.base_study.directions, consider_constraint=True)

    def trials(self, states: tuple[TrialState, ...] | None = (TrialState.COMPLETE,)) -> list[FrozenTrial]:
        """Every trial of the run's history, across narrowings, numbered run-wide (copies seeded
        into a narrowed study are left out: each trial appears once). ``states=None``: all."""
        found = []
        for stage in self.stages:
            for trial in stage.own_trials():
                if states is None or trial.state in states:
                    found.append(self._renumbered(trial, stage))
        return found

    def trial(self, number: int) -> FrozenTrial:
        """Trial ``number`` (run-wide)."""
        for stage in reversed(self.stages):
            if number >= stage.base:
                local = number - stage.base + stage.seeded
                for trial in stage.study.get_trials(deepcopy=False):
                    if trial.number == local:
                        return self._renumbered(trial, stage)
                break
        raise KeyError(f"'{self.name}' has no trial #{number}")

    @staticmethod
    def _renumbered(trial: FrozenTrial, stage: Stage) -> FrozenTrial:
        if not stage.base and not stage.seeded:
            return trial
        trial = copy.copy(trial)  # a shallow copy: the stored trial keeps its own number
        trial.number = stage.base + trial.number - stage.seeded
        return trial

    def trials_dataframe(self, **kwargs: Any) -> pandas.DataFrame:
        """All trials, as ``optuna.Study.trials_dataframe`` gives them, numbered run-wide across
        narrowings (a column ``study`` says which study asked each)."""
        import pandas

        frames = []
        for stage in self.stages:
            frame = stage.study.trials_dataframe(**kwargs)
            if frame.empty:
                continue
            frame = frame[frame["number"] >= stage.seeded].copy()
            frame["number"] = frame["number"] - stage.seeded + stage.base
            frame["study"] = stage.study.study_name
            frames.append(frame)
        return pandas.concat(frames, ignore_index=True) if frames else self.study.trials_dataframe(**kwargs)

    @property
    def warnings(self) -> list[TrialWarning]:
        """The warnings this run's trials raised, one record per kind (a category raised at one
        line): ``category``, ``message`` (its first text), ``where`` (``file:line``), ``count``,
        ``trials`` (run-wide numbers) and ``first_trial``. Each kind was shown once, when it first
        occurred; the rest were counted here."""
        return self._warning_log.records()

    def warnings_summary(self) -> str:
        """One line per warning the trials raised more than once (``ConvergenceWarning: … — in 29
        of 30 trials, shown once (tune.runs['NAME'].warnings)``), "" when there is none: what
        the views print when the run ends."""
        return self._warning_log.summary(self.n_run, f"tune.runs[{self.name!r}].warnings")

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
        if best is None and self.n_complete and self.n_infeasible >= self.n_complete:
            best_text = f"no feasible trial yet (all {self.n_complete} complete broke a constraint)"
        elif best is None:
            best_text = "no complete trial yet"
        elif self.is_multi_objective:
            best_text = f"{len(self.pareto_front())} on the Pareto front"
        else:
            best_text = f"best {best:.6g} (#{self._best.number})"
        parts = [f"{done}{budget} trials", best_text]
        if self.n_infeasible and best is not None:
            parts.append(f"{self.n_infeasible} infeasible")
        if self.n_pruned:
            parts.append(f"{self.n_pruned} pruned")
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
        elif self.storage_problem:
            line += f" ({self.storage_problem})"
        what = f"{self.sampler_text()}{self.scheduler_text()} · {'/'.join(self.directions)}"
        return f"{line} · {what} · {self.progress()}"

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
            self._since_improvement = 0  # --patience counts within each start (+N restarts it)
            self._auto_stop_reason = None  # as does --stop auto: +N asks for more trials regardless
            self._done.clear()
        with self._steer_lock:
            self._loop_takes_steering = True
        self._engine = Engine(self, self.executor)
        self._thread = self._engine.start()
        return self

    def to_katib(self, directory: str, *, image: str | None = None, namespace: str = "kubeflow",
                 name: str | None = None) -> dict[str, str]:
        """Write this study as a Kubeflow Katib Experiment (``experiment.yaml``) with the cell as
        its trial (``trial.py``, ``cell.pkl``, ``space.json``, ``requirements.txt``,
        ``Dockerfile``) into ``directory``; returns the files' paths."""
        from .katib import export

        return export(self, directory, image=image, namespace=namespace, name=name)

    def import_katib(self, path: str) -> str:
        """Add the finished trials of a Katib experiment (``kubectl get trials -l
        katib.kubeflow.org/experiment=NAME -o json``) to this study, as if they had run here:
        views, counts, the best trial and ``%tune status`` follow. Returns a summary line."""
        from .katib import read_trials

        if self.is_alive:
            raise TuneError(f"'{self.name}' is running: import the cluster's trials when it has ended "
                            f"(%tune stop {self.name}, or %tune wait {self.name}).")
        if len(self.stages) > 1:
            raise TuneError(f"'{self.name}' was narrowed in the notebook; import into the study as exported, "
                            "before narrowing it.")
        known = {t.user_attrs["katib_trial"] for t in self.base_study.get_trials(deepcopy=False)
                 if "katib_trial" in t.user_attrs}
        trials, unfinished, again = read_trials(path, self.declared_space(), known)
        for trial in trials:
            self.base_study.add_trial(trial)
        added = self.base_study.get_trials(deepcopy=False)[len(self.base_study.get_trials(deepcopy=False)) - len(trials):]
        for trial in added:
            self._next_number = max(self._next_number, trial.number + 1)
            self.record(trial, trial.user_attrs.get(TRACEBACK_KEY), 0.0, 0.0)  # as a trial run here
        with self._condition:
            self.n_run -= len(added)  # they ran on the cluster, not in this run
            self.n_stored += len(added)
        counts = ", ".join(f"{n} {s.name.lower()}" for s, n in
                           ((s, sum(t.state == s for t in added)) for s in self.counts) if n)
        text = f"'{self.name}': imported {len(added)} Katib trials ({counts or 'none'})"
        if unfinished:
            text += f"; {unfinished} had not finished and were left out"
        if again:
            text += f"; {again} imported before were skipped"
        best = self.best_trial
        return text + (f"; best {best.value:.6g} (trial #{best.number})." if best is not None else ".")

    def report(self, path: str) -> str:
        """Write one self-contained HTML file (the summary, the best trial, the trial table and
        the dashboard's charts) that opens in any browser without a kernel or a network;
        returns its path. The writer is a view (``hpt_jupyter.views.report``), which the
        package plugs in here: the core draws nothing itself."""
        if _report_writer is None:
            raise TuneError("No report writer is installed: import hpt_jupyter (it plugs in views.report).")
        return _report_writer(self, path)

    def slots_text(self) -> str:
        """`` · 4 process slots · 1 GPU each`` where trials do not run one at a time in the
        kernel, or are given devices or threads."""
        executor = self.executor
        if executor.name == "thread" and executor.jobs == 1 and not executor.resources.assigns:
            return ""
        return f" · {executor.describe()}"

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
            placement = context.placement if context is not None else ""
            found.append(RunningTrial(number, now - started, self._decoded(params), placement))
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
        """Go on after :meth:`pause`; a run that paused because its store stayed away starts
        again, writing first the results it kept."""
        with self._condition:
            self._pause_requested = False
            if self.state == PAUSED:
                self.state = RUNNING
            self._condition.notify_all()
            restart = self._waiting_for_store and not self.is_alive
        self._emit("resumed")
        if restart:
            self.start()

    def extend(self, n: int) -> None:
        """Add ``n`` trials to the budget; a finished run starts again."""
        if not isinstance(n, numbers.Integral) or n < 1:
            raise TuneError(f"extend needs a positive number of trials, got {n!r}.")
        with self._condition:
            # Running: raise the budget. Ended (stopped, timed out): n more trials from here.
            alive = self.is_alive and not self._stop_requested
            base = self.budget if alive and self.budget is not None else self.n_finished
            self.budget = base + int(n)
            if isinstance(self.study.sampler, AutoSampler):
                self.study.sampler.budget = self.budget
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

    # --- the engine's door: the run keeps its own books ---------------------------------

    @property
    def condition(self) -> threading.Condition:
        """Guards the run's state and books; the engine's slots wait on it for a stop, a pause,
        +N or another slot's result."""
        return self._condition

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    @property
    def pause_requested(self) -> bool:
        return self._pause_requested

    def loop_started(self) -> None:
        """The engine's loop begins: hear about the store's outages, write what an earlier
        outage kept, take the lease."""
        storage = self.base_study._storage
        self._waiting_for_store = False
        if isinstance(storage, ResilientStorage):
            storage.limit = self.storage_wait
            self._store_unsubscribe = storage.subscribe(self._store_changed)
        while self._unwritten:  # a StoreUnavailable here ends the loop before any trial
            self._unwritten[0]()
            self._unwritten.pop(0)
        if self._owner is not None:  # lets a later kernel tell our RUNNING trials from a live one's
            set_lease(self.base_study, self._owner, "active")
        self._emit("started", message=self.opened)

    def _store_changed(self, problem: str | None) -> None:
        self.storage_problem = problem
        self._emit("storage", message=problem)

    def keep_unwritten(self, write: Callable[[], Any]) -> None:
        """A trial's result the store could not take before the run gave up waiting: ``write()``
        writes it when the run resumes."""
        with self._condition:
            self._unwritten.append(write)
            self._waiting_for_store = True

    def paused_for_store(self, error: Exception) -> tuple[str, str]:
        """The final state and reason of a loop that gave up waiting for its store."""
        with self._condition:
            self._waiting_for_store = True
        kept = len(self._unwritten)
        kept = f"; {kept} result{' is' if kept == 1 else 's are'} kept in this kernel" if kept else ""
        return STOPPED, (f"paused: {error}{kept}. When the store is back, %tune resume {self.name} "
                         f"(or tune.runs[{self.name!r}].resume()) goes on")

    def trial_failed_elsewhere(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Another kernel's trial, failed here because that kernel stopped beating: count it and
        show it failed."""
        stage = next((s for s in self.stages if s.study._study_id == study._study_id), self.stages[0])
        trial = self._renumbered(trial, stage)
        message = short_failure(trial.user_attrs.get(TRACEBACK_KEY, ""))
        with self._condition:
            self.counts[TrialState.FAIL] += 1
            self.failures.append((trial.number, message))
        self._emit("trial_finished", trial=trial, number=trial.number, message=message)

    def watched_studies(self) -> list[optuna.Study]:
        """The studies whose RUNNING trials the heartbeat check looks at: the named one and the
        one trials are asked from now."""
        return [self.base_study] if self.study is self.base_study else [self.base_study, self.study]

    def end_reason(self, in_flight: int, started: float) -> str | None:
        """Why no further trial should start (the engine holds :attr:`condition`), or None.
        ``in_flight``: trials started or about to be; ``started``: the loop's monotonic start."""
        if self.budget is not None and self.n_finished + in_flight >= self.budget:
            return f"budget reached ({self.budget} trials)"
        if self.timeout is not None and time.monotonic() - started >= self.timeout:
            return f"timeout ({self.timeout:g}s)"
        if self.target is not None and self._best is not None:
            better = self._best.value >= self.target if self.directions[0] == "maximize" \
                else self._best.value <= self.target
            if better:
                return f"target {self.target:g} reached"
        if self.max_failures and self._consecutive_failures >= self.max_failures:
            last = self.failures[-1][1] if self.failures else ""
            return f"{self._consecutive_failures} consecutive failures; last: {last}"
        if self._auto_stop_reason is not None:
            return self._auto_stop_reason
        if self.patience is not None and self._since_improvement >= self.patience:
            return f"no improvement in {self.patience} complete trials (--patience {self.patience})"
        if self.study._stop_flag:
            return "the sampler has no more trials to give (grid exhausted)" \
                if isinstance(self.study.sampler, optuna.samplers.GridSampler) else "study.stop() was called"
        return None

    def final_state(self, reason: str) -> tuple[str, str]:
        """How a loop whose slots all left, the last for ``reason``, ended."""
        if self._stop_requested:
            return STOPPED, "stopped"
        if self.max_failures and self._consecutive_failures >= self.max_failures:
            return FAILED, reason
        return FINISHED, reason

    def before_ask(self) -> tuple[optuna.Study, Stage]:
        """A requested narrowing, then the next queued configuration: the study and stage the
        engine asks from (it holds the study lock)."""
        self._take_steering()
        return self.study, self.stages[-1]

    def number_asked(self, trial: optuna.Trial, stage: Stage) -> int:
        """The run-wide number of a trial just asked from ``stage``'s study."""
        number = stage.base + trial.number - stage.seeded
        self._next_number = max(self._next_number, number + 1)
        return number

    def trial_started(self, number: int) -> None:
        self._emit("trial_started", number=number)

    def warning_sink(self, number: int) -> TrialSink:
        """Where the warnings trial ``number`` raises are counted."""
        return TrialSink(self._warning_log, number)

    def note_auto_stop(self, reason: str) -> None:
        with self._condition:
            self._auto_stop_reason = reason
            self._condition.notify_all()

    def note_assignments(self, trial: optuna.Trial, number: int, assigned: dict[str, Any]) -> None:
        """Before a complete trial is told: what its cell assigned to the knobs' names, where
        that differs from the sampled values."""
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

    def record(self, trial: FrozenTrial, failure: str | None, sampler_seconds: float,
               objective_seconds: float) -> None:
        """A told trial: count it, follow the best, and tell the views."""
        with self._condition:
            self.sampler_seconds += sampler_seconds
            self.objective_seconds += objective_seconds
            self.n_run += 1
            self.counts[trial.state] += 1
            if trial.state == TrialState.COMPLETE:
                self._consecutive_failures = 0
                self._since_improvement = 0 if self._consider_best(trial) else self._since_improvement + 1
            elif trial.state == TrialState.FAIL:
                self._consecutive_failures += 1
                self.failures.append((trial.number, short_failure(failure or "")))
        self._emit("trial_finished", trial=trial, number=trial.number,
                   message=self.failures[-1][1] if trial.state == TrialState.FAIL else None)

    def loop_ended(self, final_state: str, reason: str) -> None:
        """The engine's slots have all left: apply a narrowing that waited, end the lease, say so."""
        try:  # a narrowing asked for while the last trials ran holds for the next start
            with self._steer_lock:
                self._loop_takes_steering = False  # from now on a narrowing applies at once
                pending, self._pending_narrowing = self._pending_narrowing, None
                if pending is not None:
                    self._apply_space(*pending)
        except Exception:  # noqa: BLE001 - the store may be what failed
            logger.exception("hpt_jupyter: could not apply the narrowing of run %r", self.name)
        if self._owner is not None and not self._waiting_for_store:
            try:
                set_lease(self.base_study, self._owner, "ended")
            except Exception:  # noqa: BLE001 - the store may be what failed
                logger.exception("hpt_jupyter: could not end the lease of run %r", self.name)
        if self._store_unsubscribe is not None:
            self._store_unsubscribe()
            self._store_unsubscribe = None
        self.storage_problem = None
        with self._condition:
            self.state, self.reason = final_state, reason
            self.ended_at = time.monotonic()
        self._emit("finished", message=reason)
        self._done.set()

    # --- the loop ----------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        event = Event(kind, self, **fields)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken view must not stop the search
                logger.exception("hpt_jupyter: a subscriber of run %r failed on %s", self.name, kind)

    def _consider_best(self, trial: FrozenTrial) -> bool:
        """Note a complete trial; True when it improved the best (for several objectives:
        when no trial so far dominates it). A trial that broke a constraint never does."""
        if any(v > 0 for v in trial.constraints.values()):
            self.n_infeasible += 1
            return False
        if len(self.directions) > 1:
            return self._onto_front(trial.values)
        if self._best is None:
            self._best = trial
            return True
        gain = trial.value - self._best.value if self.directions[0] == "maximize" else self._best.value - trial.value
        if gain == 0 and trial.number < self._best.number:
            # Trials finish out of order; among equal values the lowest number is the best, as
            # Optuna's study.best_trial has it, so both name the same trial. Not an improvement.
            self._best = trial
        if gain <= 0:
            return False
        self._best = trial
        return True

    def _onto_front(self, values: list[float]) -> bool:
        signs = [1 if d == "minimize" else -1 for d in self.directions]
        point = [s * v for s, v in zip(signs, values)]

        def dominates(a: list[float], b: list[float]) -> bool:
            return all(x <= y for x, y in zip(a, b)) and a != b

        if any(dominates(kept, point) or kept == point for kept in self._front):
            return False
        self._front = [kept for kept in self._front if not dominates(point, kept)] + [point]
        return True

    def _note_param(self, param: Param) -> None:
        if self.space.get(param.name) != param:
            self.space[param.name] = param

    def _decode(self, name: str, value: Any) -> Any:
        param = self.space.get(name)
        return param.decode(value) if isinstance(param, ChoiceParam) else value

    def _decoded(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: self._decode(k, v) for k, v in params.items()}
