"""Trials in threads of the kernel: they see the live namespace. Right for objectives that
release the GIL (NumPy, scikit-learn, PyTorch); ``jobs=1`` is one trial at a time."""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

import optuna

from ...errors import TuneError
from ..resources import KernelThreadLimits, is_gpu_out_of_memory
from ..score import check_score, format_failure
from ..space import SegmentEnd, current_context, set_context
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
        if is_gpu_out_of_memory(error):
            return _out_of_memory(error)
        return Outcome(failure=format_failure(error))
    values, failure = check_score(result, n_directions)
    return Outcome(values=None if failure else values, failure=failure)


def _out_of_memory(error: BaseException) -> Outcome:
    """A trial that ran out of GPU memory: said so on the failure's last line (the table's
    reason), and its process marked for replacement."""
    context = current_context()
    devices = getattr(context, "devices", None) or ["the GPU"]
    where = devices[0] if len(devices) == 1 else ", ".join(devices)
    import gc

    gc.collect()  # the trial's tensors: the next trial in this process (a thread slot) gets the memory
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - no CUDA, or a broken context
            pass
    return Outcome(failure=f"{format_failure(error)}out of GPU memory on {where}", gpu_out_of_memory=True)


class ThreadExecutor(Executor):
    name = "thread"

    def __init__(self, objective: Callable[..., Any], n_directions: int, jobs: int = 1) -> None:
        self.objective = objective
        self.wants_trial = takes_trial(objective)
        self.n_directions = n_directions
        self.jobs = jobs
        self.limits = KernelThreadLimits(None)

    def open(self) -> None:
        self.limits = KernelThreadLimits(self.resources.cpus_per_trial)
        self.limits.open()

    def close(self) -> None:
        self.limits.close()

    def runner(self, slot: int) -> SlotRunner:
        return _ThreadRunner(self, slot)


class _ThreadRunner(SlotRunner):
    def __init__(self, executor: ThreadExecutor, slot: int) -> None:
        self.executor = executor
        resources = executor.resources
        self.devices = resources.thread_devices(slot)  # threads share the process: told, not set
        self.placement = resources.share(slot).placement()

    def run(self, request: TrialRequest) -> Outcome:
        context = request.context
        context.devices, context.placement = self.devices, self.placement
        self.executor.limits.in_trial()
        set_context(context)
        try:
            outcome = evaluate(self.executor.objective, self.executor.wants_trial, context.trial,
                               self.executor.n_directions)
        finally:
            set_context(None)
        outcome.assigned = context.assigned
        return outcome
