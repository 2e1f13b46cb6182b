"""The engine: keeps a run's trial slots full.

Each of the executor's ``jobs`` slots is a thread of the kernel that loops: wait while paused,
check the budget and the other reasons to end, apply a waiting narrowing, ``ask`` a trial, hand
it to the slot's runner (a thread, a worker process, a Dask task), ``tell`` the outcome. Ask,
tell and every sampler call of a running trial go through one lock, so the sampler sees one
ordered history whatever the backend. With one slot this is exactly ``study.optimize``'s loop
(plus budget, control and events). The run ends when every slot has left its loop.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import logging
import threading
import time
from typing import Any

import optuna
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .executors.base import Executor, TrialRequest
from .pbt import PBT_KEY
from .samplers import reseed_for_trial
from .score import short_failure
from .space import TrialContext
from .storage import TRACEBACK_KEY, masked, set_lease
from .trial_warnings import TrialSink, activate, deactivate, enter, leave

logger = logging.getLogger("hpt_jupyter")

# States a run moves through; the last three are final.
READY, RUNNING, PAUSED, STOPPING = "ready", "running", "paused", "stopping"
FINISHED, STOPPED, FAILED = "finished", "stopped", "failed"
FINAL_STATES = (FINISHED, STOPPED, FAILED)


class Engine:
    """One start of a run: its slots, from the first ask to the ``finished`` event."""

    def __init__(self, run: Any, executor: Executor) -> None:  # run: a Run (which imports this module)
        self.run = run
        self.executor = executor
        self.study_lock = threading.RLock()  # ask, tell, suggest, report: one at a time
        self.running: dict[int, float] = {}  # run-wide trial number -> when it started
        self.reserved = 0  # slots that may start a trial and have not asked it yet
        self.contexts: dict[int, TrialContext] = {}  # run-wide trial number -> its context, while running
        self._fatal: tuple[str, str] | None = None  # (final state, reason) when a slot broke
        self._ending: str | None = None  # the reason the last slot left with
        # --seed with several slots: each trial draws from its own seed (see _run_one_trial)
        self.trial_seed = run.seed if executor.jobs > 1 else None
        self.started = 0.0

    # --- the run's thread --------------------------------------------------------------

    def start(self) -> threading.Thread:
        # The threads run in copies of the caller's context, so output the trials print goes
        # where the caller's output goes (ipykernel routes output by a context variable).
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._drive,), name=f"hpt-{self.run.name}",
                                  daemon=True)
        thread.start()
        return thread

    def _drive(self) -> None:
        run = self.run
        self.started = time.monotonic()
        if run._owner is not None:  # lets a later kernel tell our RUNNING trials from a live one's
            set_lease(run.base_study, run._owner, "active")
        run._emit("started", message=run.opened)
        final_state, reason = FINISHED, ""
        activate()  # warnings from trials: each kind shown once, all counted (trial_warnings.py)
        try:
            self.executor.open()
            slots = []
            for k in range(self.executor.jobs):
                context = contextvars.copy_context()
                slot = threading.Thread(target=context.run, args=(self._slot_loop, k),
                                        name=f"hpt-{run.name}-slot{k}", daemon=True)
                slot.start()
                slots.append(slot)
            for slot in slots:
                slot.join()
            reason = self._ending or ""
            if self._fatal is not None:
                final_state, reason = self._fatal
            elif run._stop_requested:
                final_state, reason = STOPPED, "stopped"
            elif run.max_failures and run._consecutive_failures >= run.max_failures:
                final_state = FAILED
        except TuneError as error:  # the executor could not start
            final_state, reason = FAILED, str(error)
        except Exception as error:  # noqa: BLE001 - workers or storage broke: say so, end
            final_state, reason = FAILED, f"{type(error).__name__}: {error}"
            logger.exception("hpt_jupyter: run %r failed", run.name)
        finally:
            deactivate()
            self._finish(final_state, masked(reason))  # a database's error may quote its URL

    def _finish(self, final_state: str, reason: str) -> None:
        run = self.run
        try:
            self.executor.close()
        except Exception:  # noqa: BLE001 - a worker that will not close must not hide the result
            logger.exception("hpt_jupyter: could not close the workers of run %r", run.name)
        try:  # a narrowing asked for while the last trials ran holds for the next start
            with run._steer_lock:
                run._loop_takes_steering = False  # from now on a narrowing applies at once
                pending, run._pending_narrowing = run._pending_narrowing, None
                if pending is not None:
                    run._apply_space(*pending)
        except Exception:  # noqa: BLE001 - the store may be what failed
            logger.exception("hpt_jupyter: could not apply the narrowing of run %r", run.name)
        if run._owner is not None:
            try:
                set_lease(run.base_study, run._owner, "ended")
            except Exception:  # noqa: BLE001 - the store may be what failed
                logger.exception("hpt_jupyter: could not end the lease of run %r", run.name)
        with run._condition:
            run.state, run.reason = final_state, reason
            run.ended_at = time.monotonic()
        run._emit("finished", message=reason)
        run._done.set()

    # --- a slot ------------------------------------------------------------------------

    def _slot_loop(self, slot: int) -> None:
        run = self.run
        runner = None
        try:
            runner = self.executor.runner(slot)
            while (ticket := self._next_trial_may_start()) is not None:
                try:
                    self._run_one_trial(runner, ticket if ticket is not True else None)
                finally:
                    with run._condition:
                        run._condition.notify_all()
        except Exception as error:  # noqa: BLE001 - the sampler, storage or a worker broke
            if not isinstance(error, TuneError):
                logger.exception("hpt_jupyter: a slot of run %r failed", run.name)
            reason = str(error) if isinstance(error, TuneError) else f"{type(error).__name__}: {error}"
            with run._condition:
                if self._fatal is None:
                    self._fatal = (FAILED, reason)
                run._condition.notify_all()
        finally:
            if runner is not None:
                runner.close()

    def _next_trial_may_start(self) -> Any:
        """Wait until this slot may ask a trial (True, or under PBT the member's segment it
        runs), or until the run ends (None). A slot that has nothing to do waits while others
        run: their results, +N or a stop decide."""
        run = self.run
        scheduler = run.scheduler
        with run._condition:
            while True:
                if self._fatal is not None or self._ending is not None:
                    return None
                if run._stop_requested:
                    return None
                if run._pause_requested:
                    run._condition.wait()
                    continue
                reason = self._end_reason()
                if reason is None and scheduler is not None:
                    plan = scheduler.claim(run.space)
                    if plan is not None:
                        self.reserved += 1
                        return plan
                    # every member is running or done: wait for one, or end when all are done
                    reason = "every member of the population finished its training" \
                        if scheduler.all_finished() else None
                    if reason is None:
                        run._condition.wait(0.5)
                        continue
                if reason is None:
                    self.reserved += 1
                    return True
                if not self.in_flight:
                    self._ending = reason
                    run._condition.notify_all()
                    return None
                run._condition.wait(0.5)

    @property
    def in_flight(self) -> int:
        return self.reserved + len(self.running)

    def _end_reason(self) -> str | None:
        run = self.run
        if run.budget is not None and run.n_finished + self.in_flight >= run.budget:
            return f"budget reached ({run.budget} trials)"
        if run.timeout is not None and time.monotonic() - self.started >= run.timeout:
            return f"timeout ({run.timeout:g}s)"
        if run.target is not None and run._best is not None:
            better = run._best.value >= run.target if run.directions[0] == "maximize" \
                else run._best.value <= run.target
            if better:
                return f"target {run.target:g} reached"
        if run.max_failures and run._consecutive_failures >= run.max_failures:
            last = run.failures[-1][1] if run.failures else ""
            return f"{run._consecutive_failures} consecutive failures; last: {last}"
        if run._auto_stop_reason is not None:
            return run._auto_stop_reason
        if run.patience is not None and run._since_improvement >= run.patience:
            return f"no improvement in {run.patience} complete trials (--patience {run.patience})"
        if any(segment.study._stop_flag for segment in run.segments[-1:]):
            return "the sampler has no more trials to give (grid exhausted)" \
                if isinstance(run.study.sampler, optuna.samplers.GridSampler) else "study.stop() was called"
        return None

    def _run_one_trial(self, runner: Any, plan: Any = None) -> None:
        run = self.run
        try:
            with self.study_lock:
                run._take_steering()
                study, segment = run.study, run.segments[-1]
                # Like study.optimize: lets samplers (GridSampler) and objectives call study.stop().
                study._thread_local.in_optimize_loop = True
                start = time.perf_counter()
                trial = study.ask()
                number = segment.base + trial.number - segment.seeded  # run-wide
                if plan is not None:
                    plan.number = number
                    trial.set_user_attr(PBT_KEY, plan.attrs())
                    if plan.params is not None:
                        fix_params(study, trial, plan.params)
                run._next_number = max(run._next_number, number + 1)
                reseed = None
                if self.trial_seed is not None:
                    # With N slots, trials reach the sampler in whatever order they run. The joint
                    # (relative) sample is drawn now, from the history as of this ask, and every
                    # draw from the trial's own seed: the same finish order gives the same trials.
                    reseed = functools.partial(reseed_for_trial, study.sampler, self.trial_seed, number)
                    reseed("<relative>")
                # The joint sample (a GP's fit, a second on a big history) is drawn here, before the
                # trial is sent: neither --trial-timeout nor the trial's time counts the sampler's.
                trial.relative_params  # noqa: B018 - evaluated here, under the lock
                ask_seconds = time.perf_counter() - start
        except BaseException:
            with run._condition:
                self.reserved -= 1
            if plan is not None:
                run.scheduler.ended(plan, None)
            raise
        context = TrialContext(trial, run, self.study_lock, reseed, plan, run.scheduler)
        with run._condition:  # one step, so that no other slot sees this trial missing
            self.reserved -= 1
            self.running[number] = time.monotonic()
            self.contexts[number] = context
        run._emit("trial_started", number=number)
        objective_start = time.perf_counter()
        marked = enter(TrialSink(run._warning_log, number))  # this thread's warnings are the trial's
        try:
            outcome = runner.run(TrialRequest(number, context, run.trial_timeout))
        finally:
            leave(marked)
            objective_seconds = time.perf_counter() - objective_start - context.sampler_seconds
        try:
            self._tell(study, trial, number, outcome, ask_seconds, objective_seconds, context)
        except BaseException:
            if plan is not None:
                run.scheduler.ended(plan, None)
            raise
        finally:
            with run._condition:
                self.running.pop(number, None)
                self.contexts.pop(number, None)
                run._condition.notify_all()
        if outcome.space_error is not None:
            raise TuneError(outcome.space_error)
        if run.auto_stop is not None and outcome.values is not None and not outcome.pruned \
                and outcome.failure is None:
            self._ask_auto_stop(study)

    def _ask_auto_stop(self, study: optuna.Study) -> None:
        """``--stop auto``: the Terminator's verdict after a complete trial. Its Gaussian process
        is fitted outside the study lock, so other slots go on asking and telling meanwhile."""
        run = self.run
        with self.study_lock:
            trials = study.get_trials(deepcopy=False)
        reason = run.auto_stop.verdict(trials, run.directions[0] == "maximize")
        if reason is not None:
            with run._condition:
                run._auto_stop_reason = reason
                run._condition.notify_all()

    def _tell(self, study: optuna.Study, trial: optuna.Trial, number: int, outcome: Any,
              ask_seconds: float, objective_seconds: float, context: TrialContext) -> None:
        run = self.run
        with self.study_lock:
            start = time.perf_counter()
            if outcome.pruned:
                state, values = TrialState.PRUNED, None
            elif outcome.failure is not None:
                state, values = TrialState.FAIL, None
                trial.set_user_attr(TRACEBACK_KEY, outcome.failure)
            else:
                state, values = TrialState.COMPLETE, outcome.values
                run._keep_assignments(trial, number, outcome.assigned)
            # What study.optimize calls: study.tell is this plus a deep copy of the trial that
            # costs more than the rest of our loop (benchmarks/overhead.py).
            final_state, final_values, _ = _tell_with_warning(
                study, trial, values, None if state == TrialState.COMPLETE else state, suppress_warning=True)
            study._thread_local.in_optimize_loop = False
            frozen = finished_copy(trial, final_state, final_values, number)
            if context.segment is not None:  # the member's checkpoint and score, the lineage
                run.scheduler.ended(context.segment, frozen)
            with run._condition:
                run.sampler_seconds += ask_seconds + context.sampler_seconds + time.perf_counter() - start
                run.objective_seconds += objective_seconds
                run.n_run += 1
                run.counts[frozen.state] += 1
                if frozen.state == TrialState.COMPLETE:
                    run._consecutive_failures = 0
                    run._since_improvement = 0 if run._consider_best(frozen) else run._since_improvement + 1
                elif frozen.state == TrialState.FAIL:
                    run._consecutive_failures += 1
                    run.failures.append((frozen.number, short_failure(outcome.failure or "")))
            # Under the study lock: views get trial events one at a time, in order.
            run._emit("trial_finished", trial=frozen, number=frozen.number,
                      message=run.failures[-1][1] if frozen.state == TrialState.FAIL else None)


def fix_params(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any]) -> None:
    """Give an asked trial fixed values, as ``study.enqueue_trial`` gives a queued one: a PBT
    member's next segment. (Through the queue, a trial the user had enqueued could be taken
    instead.)"""
    study._storage.set_trial_system_attr(trial._trial_id, "fixed_params", params)
    trial._cached_frozen_trial.system_attrs["fixed_params"] = params
    trial._fixed_params = params


def finished_copy(trial: optuna.Trial, state: TrialState, values: list[float] | None,
                  number: int) -> FrozenTrial:
    """The told trial, built from the trial's own record (reading it back from a database
    costs a query per trial, about 7 ms on SQLite, for what we already know), numbered
    run-wide."""
    known = trial._cached_frozen_trial
    return FrozenTrial(
        number=number, state=state, value=None, values=values,
        datetime_start=known.datetime_start, datetime_complete=datetime.datetime.now(),
        params=dict(known.params), distributions=dict(known.distributions),
        user_attrs=dict(known.user_attrs), system_attrs=dict(known.system_attrs),
        intermediate_values=dict(known.intermediate_values), trial_id=trial._trial_id,
    )
