"""A run: one Optuna study driven by its own ask/tell loop in a background thread.

The loop is what ``study.optimize`` does (``ask``, call the objective, ``tell``) plus
budget, control and events. Views subscribe to events; they never drive the loop, they
call :meth:`Run.stop`, :meth:`Run.pause`, :meth:`Run.resume` or :meth:`Run.extend`.
"""

from __future__ import annotations

import contextvars
import datetime
import inspect
import json
import logging
import math
import numbers
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from .errors import TuneError
from .space import ChoiceParam, Param, TrialContext, set_context
from .storage import set_lease

if TYPE_CHECKING:
    import pandas

    from .cell import CompiledCell

logger = logging.getLogger("hpt_jupyter")
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
TRACEBACK_KEY = "traceback"
ASSIGNED_KEY = "hpt:assigned"

# States a run moves through; the last three are final.
READY, RUNNING, PAUSED, STOPPING = "ready", "running", "paused", "stopping"
FINISHED, STOPPED, FAILED = "finished", "stopped", "failed"
FINAL_STATES = (FINISHED, STOPPED, FAILED)


@dataclass(frozen=True)
class Event:
    """What a run tells its subscribers. ``kind`` is one of: started, trial_started,
    trial_finished (any outcome: see ``trial.state``), paused, resumed, budget, finished."""

    kind: str
    run: Run
    trial: FrozenTrial | None = None
    number: int | None = None
    message: str | None = None


def _format_failure(error: BaseException) -> str:
    """The traceback without this package's own frames: it starts at the user's code."""
    summary = traceback.TracebackException.from_exception(error)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not frame.filename.startswith(_PACKAGE_DIR)]
    )
    return "".join(summary.format())


def _short_failure(text: str) -> str:
    """``ValueError: boom (line 4)`` from a traceback text."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "unknown error"
    line_no = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("File ") and ", line " in stripped and "<tune" in stripped:
            line_no = stripped.split(", line ")[1].split(",")[0]
    return f"{last} (line {line_no})" if line_no else last


class Run:
    """A running (or finished) search. ``tune.runs[name]`` and ``tune.last`` are Runs."""

    def __init__(
        self,
        objective: Callable[..., Any],
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
    ) -> None:
        self.name = name
        self.study = study
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
        self._objective = objective
        self._wants_trial = _takes_trial(objective)
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

        # One read of the stored history; from here on the run counts in memory.
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        for trial in study.get_trials(deepcopy=False):
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
        front = self.study.best_trials
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

    def trials_dataframe(self, **kwargs: Any) -> pandas.DataFrame:
        """All trials of the study, as ``optuna.Study.trials_dataframe`` gives them."""
        return self.study.trials_dataframe(**kwargs)

    def failure(self, number: int) -> str:
        """The traceback of failed trial ``number``."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if trial.number == number:
                return trial.user_attrs.get(TRACEBACK_KEY, "(no traceback recorded)")
        raise KeyError(f"trial {number} did not fail")

    def progress(self) -> str:
        done = self.n_finished
        budget = f"/{self.budget}" if self.budget is not None else ""
        best = self.best_value
        if best is None:
            best_text = "no complete trial yet"
        elif self.is_multi_objective:
            best_text = f"{len(self.study.best_trials)} on the Pareto front"
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
        # The thread runs in a copy of the caller's context, so output it prints goes where
        # the caller's output goes (ipykernel routes output by a context variable).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name=f"hpt-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

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

    # --- the loop ----------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> None:
        event = Event(kind, self, **fields)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken view must not stop the search
                logger.exception("hpt_jupyter: a subscriber of run %r failed on %s", self.name, kind)

    def _end_reason(self) -> str | None:
        if self._stop_requested:
            return "stopped"
        if self.budget is not None and self.n_finished >= self.budget:
            return f"budget reached ({self.budget} trials)"
        if self.timeout is not None and time.monotonic() - self._loop_started >= self.timeout:
            return f"timeout ({self.timeout:g}s)"
        if self.target is not None and self._best is not None:
            better = self._best.value >= self.target if self.directions[0] == "maximize" \
                else self._best.value <= self.target
            if better:
                return f"target {self.target:g} reached"
        if self.max_failures and self._consecutive_failures >= self.max_failures:
            last = self.failures[-1][1] if self.failures else ""
            return f"{self._consecutive_failures} consecutive failures; last: {last}"
        if self.study._stop_flag:
            return "the sampler has no more trials to give (grid exhausted)" \
                if isinstance(self.study.sampler, optuna.samplers.GridSampler) else "study.stop() was called"
        return None

    def _loop(self) -> None:
        study = self.study
        # Like study.optimize: lets samplers (GridSampler) and objectives call study.stop().
        study._thread_local.in_optimize_loop = True
        study._stop_flag = False
        self._loop_started = time.monotonic()
        if self._owner is not None:  # lets a later kernel tell our RUNNING trials from a live one's
            set_lease(study, self._owner, "active")
        self._emit("started", message=self.opened)
        final_state, reason = FINISHED, ""
        try:
            while True:
                with self._condition:
                    while self._pause_requested and not self._stop_requested:
                        self._condition.wait()
                reason = self._end_reason()
                if reason:
                    break
                self._run_one_trial()
            if self._stop_requested:
                final_state = STOPPED
            elif self.max_failures and self._consecutive_failures >= self.max_failures:
                final_state = FAILED
        except TuneError as error:  # a mistake in the space found while a trial ran
            final_state, reason = FAILED, str(error)
        except Exception as error:  # noqa: BLE001 - the sampler or storage broke: say so, end
            final_state, reason = FAILED, f"{type(error).__name__}: {error}"
            logger.exception("hpt_jupyter: run %r failed", self.name)
        finally:
            study._thread_local.in_optimize_loop = False
            if self._owner is not None:
                try:
                    set_lease(study, self._owner, "ended")
                except Exception:  # noqa: BLE001 - the store may be what failed
                    logger.exception("hpt_jupyter: could not end the lease of run %r", self.name)
            with self._condition:
                self.state, self.reason = final_state, reason
                self.ended_at = time.monotonic()
            self._emit("finished", message=reason)
            self._done.set()

    def _run_one_trial(self) -> None:
        study = self.study
        start = time.perf_counter()
        trial = study.ask()
        ask_seconds = time.perf_counter() - start
        self._emit("trial_started", number=trial.number)
        context = TrialContext(trial, self)
        set_context(context)
        values: Any = None
        state = TrialState.COMPLETE
        failure = None
        space_error: TuneError | None = None
        objective_start = time.perf_counter()
        try:
            result = self._objective(trial) if self._wants_trial else self._objective()
            values, failure = self._check_score(result)
            if failure is not None:
                state = TrialState.FAIL
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TuneError as error:
            state, failure, space_error = TrialState.FAIL, str(error), error
        except BaseException as error:  # noqa: BLE001 - SystemExit from user code fails the trial too
            state, failure = TrialState.FAIL, _format_failure(error)
        finally:
            set_context(None)
        self.objective_seconds += time.perf_counter() - objective_start - context.sampler_seconds

        start = time.perf_counter()
        if state == TrialState.COMPLETE:
            self._keep_assignments(trial, context.assigned)
        else:
            values = None
            trial.set_user_attr(TRACEBACK_KEY, failure or "")
        # What study.optimize calls: study.tell is this plus a deep copy of the trial that
        # costs more than the rest of our loop (benchmarks/overhead.py).
        final_state, final_values, _ = _tell_with_warning(
            study, trial, values, None if state == TrialState.COMPLETE else state, suppress_warning=True)
        frozen = _finished_copy(trial, final_state, final_values)
        self.sampler_seconds += ask_seconds + context.sampler_seconds + time.perf_counter() - start
        self.n_run += 1
        self.counts[frozen.state] += 1
        if frozen.state == TrialState.COMPLETE:
            self._consecutive_failures = 0
            self._consider_best(frozen)
        elif frozen.state == TrialState.FAIL:
            self._consecutive_failures += 1
            self.failures.append((frozen.number, _short_failure(failure or "")))
        self._emit("trial_finished", trial=frozen, number=frozen.number,
                   message=self.failures[-1][1] if frozen.state == TrialState.FAIL else None)
        if space_error is not None:
            raise space_error

    def _check_score(self, result: Any) -> tuple[Any, str | None]:
        """The score as Optuna wants it, or a message saying why it is not one."""
        n = len(self.directions)
        if n > 1:
            if not isinstance(result, (tuple, list)) or len(result) != n:
                return None, (f"The study has {n} directions, so the cell must end with {n} scores "
                              f"(a tuple), but it gave {result!r:.80}.")
            scores = []
            for item in result:
                score, problem = _one_score(item)
                if problem:
                    return None, problem
                scores.append(score)
            return scores, None
        if isinstance(result, (tuple, list)):
            return None, (f"The cell gave {len(result)} scores but the study has one direction; "
                          f"give one --direction per score (e.g. --direction maximize minimize).")
        return _one_score(result)

    def _keep_assignments(self, trial: optuna.Trial, assigned: dict[str, Any]) -> None:
        differing = {k: v for k, v in assigned.items()
                     if k not in trial.params or not _same(self._decode(k, trial.params[k]), v)}
        if not differing:
            return
        self._assigned[trial.number] = differing
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


def _finished_copy(trial: optuna.Trial, state: TrialState, values: list[float] | None) -> FrozenTrial:
    """The told trial, built from the trial's own record: reading it back from a database
    costs a query per trial (about 7 ms on SQLite) for what we already know."""
    known = trial._cached_frozen_trial
    return FrozenTrial(
        number=known.number, state=state, value=None, values=values,
        datetime_start=known.datetime_start, datetime_complete=datetime.datetime.now(),
        params=dict(known.params), distributions=dict(known.distributions),
        user_attrs=dict(known.user_attrs), system_attrs=dict(known.system_attrs),
        intermediate_values=dict(known.intermediate_values), trial_id=trial._trial_id,
    )


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and odd objects: treat as different
        return False


def _one_score(value: Any) -> tuple[float | None, str | None]:
    if value is None:
        return None, ("The cell's last expression gave None, not a score: end the cell with the "
                      "value to optimise (a number), not a call such as print(...).")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # numpy scalars and 0-d arrays
            if getattr(value, "shape", None) == () or getattr(value, "size", 2) == 1:
                value = float(value)
            else:
                raise TypeError
        except (TypeError, ValueError):
            return None, f"The score must be a number, but the cell gave {type(value).__name__}: {value!r:.80}."
    value = float(value)
    if not math.isfinite(value):
        return None, f"The score is {value}, not a finite number; this trial counts as failed."
    return value, None


def _takes_trial(objective: Callable[..., Any]) -> bool:
    """``def objective(trial)`` gets the trial; a zero-argument callable uses ``tune.*``."""
    try:
        parameters = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
               for p in parameters)
