"""The one small interface every execution backend implements.

A run's engine keeps ``jobs`` slots busy; each slot owns a :class:`SlotRunner` from its
executor and hands it one trial at a time. The trial itself (``optuna.Trial``), the sampler
and the study never leave the kernel: a runner only evaluates the objective, and whatever the
objective asks on the way (a knob's value, ``tune.report``) it asks the trial's
:class:`~hpt_jupyter.core.space.TrialContext` in the kernel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..resources import Resources

if TYPE_CHECKING:
    from ..space import TrialContext


@dataclass
class TrialRequest:
    """One trial for a slot: its run-wide number and the kernel-side context of its trial."""

    number: int
    context: TrialContext
    timeout: float | None = None  # --trial-timeout


@dataclass
class Outcome:
    """What a trial gave: a checked score, a failure (traceback or reason), or pruned."""

    values: Any = None
    failure: str | None = None
    pruned: bool = False
    space_error: str | None = None  # a mistake in the space (a TuneError): it ends the run
    assigned: dict[str, Any] = field(default_factory=dict)  # what the cell assigned to its knobs' names
    gpu_out_of_memory: bool = False  # its process's GPU context is not to be trusted: replace the worker


class SlotRunner(ABC):
    """Evaluates one slot's trials, one after another."""

    @abstractmethod
    def run(self, request: TrialRequest) -> Outcome:
        """Evaluate the trial; never raises for what the objective does."""

    def close(self) -> None:
        """The slot is done (the run ended or stopped)."""


class Executor(ABC):
    """Where trials run. ``open`` before the first trial of a run's start, ``close`` after the
    last; ``runner(k)`` gives slot k its runner."""

    name: str = ""
    jobs: int = 1
    resources: Resources = Resources()  # --gpus-per-trial, --cpus-per-trial, shared out by slot

    def open(self) -> None:
        """Start what the trials need (worker processes, a cluster); raise TuneError if it cannot."""

    @abstractmethod
    def runner(self, slot: int) -> SlotRunner: ...

    def close(self) -> None:
        """Release workers; called when a run's loop ends."""

    def describe(self) -> str:
        """``4 process slots · 1 GPU each``."""
        return f"{self.jobs} {self.name} slot{'s' if self.jobs != 1 else ''}{self.resources.describe()}"
