"""Trials in threads of the kernel: they see the live namespace. Right for objectives that
release the GIL (NumPy, scikit-learn, PyTorch); ``jobs=1`` is one trial at a time."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import optuna

from ...errors import TuneError
from ..score import check_score, format_failure
from ..space import SegmentEnd, set_context
from .base import Executor, Outcome, SlotRunner, TrialRequest


def takes_trial(objective: Callable[..., Any]) -> bool:
    """``def objective(trial)`` gets the trial; a zero-argument callable uses ``tune.*``."""
    try:
        parameters = inspect.signature(objective).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
               for p in parameters)


def evaluate(objective: Callable[..., Any], wants_trial: bool, trial: Any, n_directions: int) -> Outcome:
    """Call the objective in this thread, with the trial context already set."""
    try:
        result = objective(trial) if wants_trial else objective()
    except SegmentEnd as end:  # a PBT segment had its reports: scored by the last one
        values, failure = check_score(end.value, n_directions)
        return Outcome(values=None if failure else values, failure=failure)
    except optuna.TrialPruned:
        return Outcome(pruned=True)
    except TuneError as error:
        return Outcome(failure=str(error), space_error=str(error))
    except BaseException as error:  # noqa: BLE001 - SystemExit from user code fails the trial too
        return Outcome(failure=format_failure(error))
    values, failure = check_score(result, n_directions)
    return Outcome(values=None if failure else values, failure=failure)


class ThreadExecutor(Executor):
    name = "thread"

    def __init__(self, objective: Callable[..., Any], n_directions: int, jobs: int = 1) -> None:
        self.objective = objective
        self.wants_trial = takes_trial(objective)
        self.n_directions = n_directions
        self.jobs = jobs

    def runner(self, slot: int) -> SlotRunner:
        return _ThreadRunner(self)


class _ThreadRunner(SlotRunner):
    def __init__(self, executor: ThreadExecutor) -> None:
        self.executor = executor

    def run(self, request: TrialRequest) -> Outcome:
        context = request.context
        set_context(context)
        try:
            outcome = evaluate(self.executor.objective, self.executor.wants_trial, context.trial,
                               self.executor.n_directions)
        finally:
            set_context(None)
        outcome.assigned = context.assigned
        return outcome
