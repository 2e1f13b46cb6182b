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
from .heartbeat import Heartbeat
from .resilient import StoreUnavailable, created_here, put_back
from .resources import PLACEMENT_KEY
from .samplers import reseed_for_trial
from .scheduling import Plan
from .space import TrialContext
from .storage import TRACEBACK_KEY, masked
from .trial_warnings import activate, deactivate, enter, leave

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
        self.heartbeat: Heartbeat | None = None

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
        final_state, reason = FINISHED, ""
        activate()  # warnings from trials: each kind shown once, all counted (trial_warnings.py)
        try:
            run.loop_started()
            self.heartbeat = Heartbeat(run.base_study._storage, run.watched_studies, self._own_trial_ids,
                                       run.trial_failed_elsewhere, run.grace_period)
            self.heartbeat.start()
            self.executor.open()
            self.trial_seed = run.seed if self.executor.jobs > 1 else None  # a cluster's GPUs may set jobs
            slots = []
            for k in range(self.executor.jobs):
                context = contextvars.copy_context()
                slot = threading.Thread(target=context.run, args=(self._slot_loop, k),
                                        name=f"hpt-{run.name}-slot{k}", daemon=True)
                slot.start()
                slots.append(slot)
            for slot in slots:
                slot.join()
            final_state, reason = self._fatal or run.final_state(self._ending or "")
        except StoreUnavailable as error:  # results kept before the loop began could not be written
            final_state, reason = run.paused_for_store(error)
        except TuneError as error:  # the executor could not start
            final_state, reason = FAILED, str(error)
        except Exception as error:  # noqa: BLE001 - workers or storage broke: say so, end
            final_state, reason = FAILED, f"{type(error).__name__}: {error}"
            logger.exception("hpt_jupyter: run %r failed", run.name)
        finally:
            deactivate()
            if self.heartbeat is not None:
                self.heartbeat.stop()
            try:
                self.executor.close()
            except Exception:  # noqa: BLE001 - a worker that will not close must not hide the result
                logger.exception("hpt_jupyter: could not close the workers of run %r", run.name)
            run.loop_ended(final_state, masked(reason))  # a database's error may quote its URL

    # --- a slot ------------------------------------------------------------------------

    def _slot_loop(self, slot: int) -> None:
        run = self.run
        runner = None
        try:
            runner = self.executor.runner(slot)
            while (plan := self._next_trial_may_start()) is not None:
                try:
                    self._run_one_trial(runner, plan)
                finally:
                    with run.condition:
                        run.condition.notify_all()
        except Exception as error:  # noqa: BLE001 - the sampler, storage or a worker broke
            if not isinstance(error, TuneError):
                logger.exception("hpt_jupyter: a slot of run %r failed", run.name)
            if isinstance(error, StoreUnavailable):  # waited long enough: pause, keep the results
                fatal = run.paused_for_store(error)
            else:
                fatal = (FAILED, str(error) if isinstance(error, TuneError) else f"{type(error).__name__}: {error}")
            with run.condition:
                if self._fatal is None:
                    self._fatal = fatal
                run.condition.notify_all()
        finally:
            if runner is not None:
                runner.close()

    def _next_trial_may_start(self) -> Plan | None:
        """Wait until this slot may ask a trial (the scheduler's plan for it), or until the run
        ends (None). A slot that has nothing to do waits while others run: their results, +N
        or a stop decide."""
        run = self.run
        with run.condition:
            while True:
                if self._fatal is not None or self._ending is not None or run.stop_requested:
                    return None
                if run.pause_requested:
                    run.condition.wait()
                    continue
                reason = run.end_reason(self.in_flight, self.started)
                if reason is None:
                    plan = run.scheduler.claim(run.space)
                    if plan is not None:
                        self.reserved += 1
                        return plan
                    reason = run.scheduler.exhausted()
                    if reason is None:  # nothing to start until a running trial ends
                        run.condition.wait(0.5)
                        continue
                if not self.in_flight:
                    self._ending = reason
                    run.condition.notify_all()
                    return None
                run.condition.wait(0.5)

    @property
    def in_flight(self) -> int:
        return self.reserved + len(self.running)

    def _run_one_trial(self, runner: Any, plan: Plan) -> None:
        run = self.run
        try:
            with self.study_lock:
                study, stage = run.before_ask()
                created_here(study._storage, forget=True)
                # Like study.optimize: lets samplers (GridSampler) and objectives call study.stop().
                study._thread_local.in_optimize_loop = True
                start = time.perf_counter()
                trial = study.ask()
                number = run.number_asked(trial, stage)
                run.scheduler.asked(study, trial, number, plan)
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
        except BaseException as error:
            with run.condition:
                self.reserved -= 1
            run.scheduler.ended(plan, None)
            storage = run.study._storage
            if isinstance(error, StoreUnavailable) and (created := created_here(storage)) is not None:
                run.keep_unwritten(functools.partial(put_back, storage, created))  # asked again on resume
            raise
        context = TrialContext(trial, run, self.study_lock, reseed, plan, run.scheduler)
        with run.condition:  # one step, so that no other slot sees this trial missing
            self.reserved -= 1
            self.running[number] = time.monotonic()
            self.contexts[number] = context
        run.trial_started(number)
        if self.heartbeat is not None:
            self.heartbeat.started(trial._trial_id)
        objective_start = time.perf_counter()
        marked = enter(run.warning_sink(number))  # this thread's warnings are the trial's
        try:
            outcome = runner.run(TrialRequest(number, context, run.trial_timeout))
        finally:
            leave(marked)
            objective_seconds = time.perf_counter() - objective_start - context.sampler_seconds
        try:
            if context.store_lost is not None:  # it could not get its values or report: run it again later
                run.keep_unwritten(functools.partial(put_back, study._storage, trial._trial_id))
                raise context.store_lost
            self._tell(study, trial, number, outcome, ask_seconds, objective_seconds, context)
        except BaseException:
            run.scheduler.ended(plan, None)
            raise
        finally:
            with run.condition:
                self.running.pop(number, None)
                self.contexts.pop(number, None)
                run.condition.notify_all()
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
            run.note_auto_stop(reason)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, number: int, outcome: Any,
              ask_seconds: float, objective_seconds: float, context: TrialContext) -> None:
        """What ``study.optimize`` does after a trial (``_tell_with_warning``: ``study.tell``
        is that plus a deep copy of the trial that costs more than the rest of our loop,
        benchmarks/overhead.py); the run keeps its books from the told trial."""
        run = self.run
        if outcome.pruned:
            state, values = TrialState.PRUNED, None
        elif outcome.failure is not None:
            state, values = TrialState.FAIL, None
        else:
            state, values = TrialState.COMPLETE, outcome.values

        placement = context.placement  # the trial's own GPUs or cores, where the run hands them out

        def write() -> tuple[TrialState, list[float] | None]:
            if placement:
                study._storage.set_trial_system_attr(trial._trial_id, PLACEMENT_KEY, placement)
            if state == TrialState.FAIL:
                trial.set_user_attr(TRACEBACK_KEY, outcome.failure)
            elif state == TrialState.COMPLETE:
                run.note_assignments(trial, number, outcome.assigned)
            told_state, told_values, _ = _tell_with_warning(
                study, trial, values, None if state == TrialState.COMPLETE else state, suppress_warning=True)
            return told_state, told_values

        unavailable = None
        with self.study_lock:
            start = time.perf_counter()
            try:
                final_state, final_values = write()
            except StoreUnavailable as error:  # kept in the kernel, written when the run resumes
                run.keep_unwritten(write)
                final_state, unavailable = state, error
                final_values = None if values is None else list(values) if isinstance(values, (list, tuple)) \
                    else [values]
            study._thread_local.in_optimize_loop = False
            frozen = finished_copy(trial, final_state, final_values, number)
            if placement:
                frozen.system_attrs[PLACEMENT_KEY] = placement
            run.scheduler.ended(context.plan, frozen)  # PBT: the member's checkpoint and score, the lineage
            sampler_seconds = ask_seconds + context.sampler_seconds + time.perf_counter() - start
            # Under the study lock: views get trial events one at a time, in order.
            run.record(frozen, outcome.failure, sampler_seconds, objective_seconds)
        if unavailable is not None:
            raise unavailable

    def _own_trial_ids(self) -> list[int]:
        with self.run.condition:
            return [context.trial._trial_id for context in self.contexts.values()]


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
