"""What a free slot runs next: the interface the engine and a trial's context talk to.

:class:`TrialScheduler` is the default and does nothing of its own: every trial is the
sampler's, and ``tune.report`` asks the pruner. Population-based training
(:class:`~hpt_jupyter.core.pbt.PopulationScheduler`) overrides it: a trial is one *segment*
of a member's training, with values the scheduler chose. The engine has one code path for both.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

# What a trial context's report answers when the scheduler ends the trial's segment (not a prune).
SEGMENT_END = "segment_end"


class Plan:
    """What a slot was given to run: for the default scheduler, a trial the sampler fills in."""

    number: int | None = None  # its trial, once asked


class TrialScheduler:
    """Lets the sampler decide every trial; the pruner decides when a reporting trial stops."""

    population_based = False
    # Why the space cannot be narrowed or trials enqueued under this scheduler (None: they can).
    steering_refusal: str | None = None

    def load(self, trials: list[FrozenTrial]) -> None:
        """Pick up a resumed study's trials (numbered run-wide)."""

    def claim(self, space: dict[str, Any]) -> Plan | None:
        """What a free slot runs next; None while nothing can start (others run)."""
        return Plan()

    def exhausted(self) -> str | None:
        """Why no trial will ever start again, or None."""
        return None

    def asked(self, study: optuna.Study, trial: optuna.Trial, number: int, plan: Plan) -> None:
        """``plan``'s trial was asked (run-wide ``number``): give it what it needs."""
        plan.number = number

    def ended(self, plan: Plan, trial: FrozenTrial | None) -> None:
        """``plan``'s trial was told (``trial`` None: it never got a trial)."""

    def reported(self, plan: Plan, trial: optuna.Trial, value: float) -> bool | str:
        """After ``trial.report``: True to prune, :data:`SEGMENT_END` to end the segment, False
        to go on."""
        return trial.should_prune()

    def should_stop(self, plan: Plan, trial: optuna.Trial) -> bool:
        return trial.should_prune()

    def restore(self, plan: Plan) -> bytes | None:
        """The pickled state the trial continues from (None: it starts afresh)."""
        return None

    def checkpoint(self, plan: Plan, blob: bytes) -> None:
        """Keep the trial's latest state, where a later trial can continue from it."""

    def best_trial(self) -> FrozenTrial | None:
        """The scheduler's own idea of the best trial (None: the run's)."""
        return None

    def describe(self) -> str:
        """For the header: ``PBT · population 4 · every 5 steps``; "" for the default."""
        return ""
