"""``--stop auto``: end a study once more trials are unlikely to pay, by Optuna's Terminator.

The Terminator (Makarova et al., 2022) compares two numbers after every complete trial: a bound
on how much better the best score could still get (the *regret bound*, from a Gaussian process
fitted to the better half of the trials) and how precisely a score is known at all (its
*error*). Once the possible gain is below the error, further trials chase noise. The error is the
spread of the best trial's cross-validation folds when the cell records them
(``tune.cv_scores(scores)``); without them, the regret bound itself is the yardstick: a hundredth
of its median over trials 10 to 30 (Optuna's ``MedianErrorEvaluator``), so a study without fold
scores cannot end this way before 30 complete trials.

Optuna deprecated ``optuna.terminator`` in 4.9 (removal planned for 6.0; this package requires
Optuna below 6). It needs PyTorch, as the GP sampler does.
"""

from __future__ import annotations

import threading
import warnings
from typing import Sequence

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .auto import gp_installed
from .space import CV_SCORES_KEY

STOP_RULES = ("auto",)
MIN_TRIALS = 20  # the Terminator's own default: no verdict on fewer complete trials


def check_stop(stop: str | None, n_objectives: int) -> None:
    """One message for a stop rule that cannot run, before any trial."""
    if stop is None:
        return
    if stop not in STOP_RULES:
        raise TuneError(f"--stop {stop!r} is not a rule I know; the one there is: --stop auto.")
    if n_objectives > 1:
        raise TuneError("--stop auto weighs one score: use one --direction (or --patience N).")
    if not gp_installed():
        raise TuneError("--stop auto needs PyTorch for its Gaussian process: pip install 'hpt-jupyter[gp]' "
                        "(or use --patience N).")


class AutoStop:
    """Optuna's Terminator, asked after each complete trial."""

    def __init__(self, seed: int | None = None) -> None:
        with _quiet():
            from optuna.terminator import (CrossValidationErrorEvaluator, MedianErrorEvaluator,
                                           RegretBoundEvaluator)

            self._bound = RegretBoundEvaluator(seed=seed)
            self._cv_error = CrossValidationErrorEvaluator()
            self._median_error = MedianErrorEvaluator(RegretBoundEvaluator(seed=seed))
        self.last: tuple[float, float] | None = None  # (regret bound, error) of the last verdict
        self._lock = threading.Lock()  # slots finish trials at once; the evaluators keep state

    def verdict(self, trials: Sequence[FrozenTrial], maximize: bool) -> str | None:
        """Why the study should end now, or None to go on."""
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(complete) < MIN_TRIALS:
            return None
        direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
        best = (max if maximize else min)(complete, key=lambda t: t.value)
        trials = list(trials)
        with self._lock, _quiet():
            bound = self._bound.evaluate(trials, direction)
            if CV_SCORES_KEY in best.system_attrs:
                error, what = self._cv_error.evaluate(trials, direction), "the spread of its cross-validation folds"
            else:
                error, what = self._median_error.evaluate(trials, direction), "a hundredth of its early median"
        self.last = (bound, error)
        if bound < error:
            return (f"more trials are unlikely to pay: the best could still improve by {bound:.3g} at most, "
                    f"less than {what} ({error:.3g}) (--stop auto)")
        return None


class _quiet(warnings.catch_warnings):
    """Optuna's deprecation and experimental warnings, said once in the docs instead of per trial."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("ignore", FutureWarning)
        import optuna

        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
