"""``--sampler auto``: one of Optuna's samplers at a time, chosen by the problem as it unfolds.

The rule (measured in ``benchmarks/quality/``; OptunaHub's AutoSampler is the reference it
refines):

* **warm-up**: quasi-random (scrambled Sobol) points, as many as the space has dimensions plus
  one, at least 4 and at most 10, and at most a fifth of the budget. Sobol covers the box more
  evenly than the random points Optuna's model samplers start from.
* **one objective, numeric or categorical knobs, fewer than 200 complete trials**: a Gaussian
  process (``GPSampler``), the most sample-efficient while trials are few. It already models
  trials still running, so it works with ``--jobs N``. Every third of these trials goes to TPE
  instead, fitted to the same history: a hedge for objectives a GP misfits (rugged or
  integer-heavy ones, where TPE alone beat every GP-based sampler in the quality benchmark).
* **knobs only some trials declare** (a conditional space): TPE with ``multivariate`` and
  ``group``, which models each group of knobs apart; a GP or CMA-ES would sample them at random.
* **200 complete trials or more**: CMA-ES, warm-started from the trials so far, for numeric
  spaces (the GP's cost grows with the cube of the trials); TPE for spaces with categorical knobs.
* **several objectives**: a GP while trials are few and knobs numeric (three objectives at most),
  otherwise TPE; NSGA-II past 200 trials.
* **a time budget** (``--timeout`` without ``-n``): every second the sampler spends is a second
  of trials lost, so once the GP's own time exceeds a tenth of a trial's, TPE takes over.
* **no PyTorch** (the ``gp`` extra): TPE where the GP would be, said once.

The choice is made in ``before_trial`` (so one trial is sampled by one sampler throughout),
recorded on the trial (system attribute ``hpt:sampler``), and explained by ``describe()`` for the
dashboard's header and ``%tune status``.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import warnings
import zlib
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from .steered import carried_over

SAMPLER_ATTR = "hpt:sampler"
MODEL_TRIAL_LIMIT = 200  # complete trials after which the GP gives way (its cost grows as n^3)
HEDGE_EVERY = 3  # under the GP, every third trial is TPE's (0: none)
TIME_SHARE = 0.1  # under a time budget, the most of a trial's time the sampler may take
_NSGA_GENERATION = optuna.samplers.NSGAIISampler._get_generation_key()
_told_no_gp = False


GP_MODULES = ("torch", "scipy")  # what GPSampler imports: the ``gp`` extra


def _gp_counts_unset_constraints_as_kept() -> None:
    """Optuna's GP refuses a study whose complete trials did not all set the same constraints
    (``ValueError: The constraint names must be the same for all trials``, raised from the
    sampler, which ends the study). That happens with a constraint only some trials reach, and
    with trials a warm start carried over from a study without it. Optuna's TPE and NSGA-II count
    a constraint a trial did not set as kept; the GP is made to do the same for this study's own
    trials, to count a carried-over trial as not known to be feasible, and to fit each
    constraint's model on the trials that measured it only (a value filled in teaches it a
    constraint those trials never measured: warm-started from an unconstrained study with 0
    filled in, 22 to 24 of 30 trials broke the constraint, against 13 to 16 started cold, and 13
    to 19 this way)."""
    from optuna.samplers import GPSampler
    from optuna.samplers._gp import sampler as gp_sampler

    values_of = getattr(gp_sampler, "_get_constraint_vals_and_feasibility", None)
    fit_constraints = getattr(GPSampler, "_get_constraints_acqf_args", None)
    if values_of is None or fit_constraints is None or getattr(values_of, "counts_unset_as_kept", False):
        return  # another Optuna, whose GP may not need it: its own behaviour stands

    def constraint_values_and_feasibility(trials: list) -> tuple:
        constraints = [trial.constraints for trial in trials]
        keys = sorted(set().union(*constraints))
        values = np.array([[c.get(key, np.nan) for key in keys] for c in constraints], dtype=float)
        # Unset in a trial of this study: a constraint it did not reach, kept. Unset in a trial a
        # warm start carried over: never measured, so not known to be feasible (the best-so-far
        # the GP must beat is then one this study can reach).
        unknown = np.array([carried_over(trial) for trial in trials])[:, None] & np.isnan(values)
        return values, np.all((values <= 0) | (np.isnan(values) & ~unknown), axis=1)

    def constraint_models(self: Any, values: np.ndarray, space: Any, params: np.ndarray) -> tuple:
        if not np.isnan(values).any():
            return fit_constraints(self, values, space, params)
        models, thresholds = [], []
        for column in range(values.shape[1]):  # each on the trials that measured it
            known = ~np.isnan(values[:, column])
            self._constraints_gprs_cache_list = None  # a cached fit belongs to another column
            model, threshold = fit_constraints(self, values[known][:, [column]], space, params[known])
            models += model
            thresholds += threshold
        self._constraints_gprs_cache_list = None
        return models, thresholds

    constraint_values_and_feasibility.counts_unset_as_kept = True  # type: ignore[attr-defined]
    gp_sampler._get_constraint_vals_and_feasibility = constraint_values_and_feasibility
    GPSampler._get_constraints_acqf_args = constraint_models


_gp_counts_unset_constraints_as_kept()


def gp_installed() -> bool:
    """Whether ``GPSampler`` can run (it needs PyTorch and SciPy: the ``gp`` extra)."""
    return all(importlib.util.find_spec(module) is not None for module in GP_MODULES)


def warmup_length(dimension: int, budget: int | None) -> int:
    """Quasi-random points before a model: one more than the dimension, 4 to 10, and at most
    a fifth of the budget (but 2 at least, so a model has two points to start from)."""
    n = min(10, max(4, dimension + 1))
    if budget is not None:
        n = min(n, max(2, budget // 5))
    return n


class AutoSampler(BaseSampler):
    """Chooses, before every trial, the Optuna sampler that suits the study as it stands."""

    def __init__(self, seed: int | None = None, n_objectives: int = 1, budget: int | None = None,
                 time_budget: bool = False) -> None:
        self._seed = seed
        self._n_objectives = n_objectives
        self.budget = budget
        self._time_budget = time_budget
        self._gp = gp_installed()
        self._sampler: BaseSampler = optuna.samplers.RandomSampler(seed=seed)
        self.choice = "random"
        self.reason = "the first trial: nothing to model yet"
        self._switches = 0
        self._gp_seconds: list[float] = []  # the GP's own time for each trial it sampled
        self._sampling_seconds: dict[int, float] = {}  # trial number -> the sampler's time so far
        self._gp_too_slow = False
        self._kept: dict[str, BaseSampler] = {}  # the GP and its TPE hedge, taking turns
        if not self._gp:
            global _told_no_gp
            if not _told_no_gp:
                _told_no_gp = True
                warnings.warn("--sampler auto: PyTorch is not installed, so TPE stands in for the Gaussian "
                              "process (pip install 'hpt-jupyter[gp]' to use it).", stacklevel=2)

    def describe(self) -> str:
        """What runs now and why, for the header: ``gp (6 numeric knobs, 23 trials: few trials, ...)``."""
        return f"{self.choice} ({self.reason})"

    # --- the choice ----------------------------------------------------------------------

    def _seed_for(self, what: str) -> int | None:
        """Each sampler auto switches to draws from its own seed, derived from the study's."""
        if self._seed is None:
            return None
        self._switches += 1
        return zlib.crc32(f"{self._seed}:{what}:{self._switches}".encode())

    def _use(self, choice: str, reason: str, make: Any, keep: str | None = None) -> None:
        """Run ``choice`` from now on; ``keep`` names a sampler to reuse when it comes back."""
        self.reason = reason
        if keep is not None and keep in self._kept:
            self.choice, self._sampler = choice, self._kept[keep]
            return
        if choice != self.choice or keep is not None:
            self.choice = choice
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._sampler = make(self._seed_for(choice))
            if keep is not None:
                self._kept[keep] = self._sampler

    def _tpe(self, group: bool) -> Any:
        return lambda seed: optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=group, constant_liar=True)

    def _choose(self, study: Study, number: int) -> None:
        finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                     use_cache=True)
        if not finished:
            return  # the first trials: random, nothing to model yet
        complete = [t for t in finished if t.state == TrialState.COMPLETE]
        names = set().union(*(t.params for t in finished))
        dimension = len(names)
        conditional = any(set(t.params) != set(finished[0].params) for t in finished)
        categorical = any(isinstance(d, CategoricalDistribution)
                          for t in finished for d in t.distributions.values())
        kinds = "mixed" if categorical else "numeric"
        n_started = number + 1
        warmup = warmup_length(dimension, self.budget)
        multi = self._n_objectives > 1

        if n_started <= warmup and self.choice in ("random", "qmc"):
            self._use("qmc", f"quasi-random warm-up, {min(n_started, warmup)} of {warmup} points",
                      lambda seed: optuna.samplers.QMCSampler(
                          seed=seed, scramble=True, warn_independent_sampling=False,
                          warn_asynchronous_seeding=False))
            return
        if conditional:
            self._use("tpe", "knobs that only some trials declare: TPE models each group apart",
                      self._tpe(group=True))
            return
        many = len(complete) >= MODEL_TRIAL_LIMIT
        if multi:
            if many:
                self._use("nsga2", f"{len(complete)} trials, {self._n_objectives} objectives: "
                                   "a genetic search scales past a model",
                          lambda seed: optuna.samplers.NSGAIISampler(seed=seed))
            elif self._gp and not categorical and self._n_objectives <= 3 and not self._gp_too_slow:
                self._use("gp", f"{_knobs(dimension, 'numeric')}, {self._n_objectives} objectives, "
                                f"{len(complete)} trials: few trials, a GP is the most sample-efficient",
                          lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=warmup))
            else:
                self._use("tpe", f"{_knobs(dimension, kinds)}, {self._n_objectives} objectives"
                                 + ("" if self._gp else ": no PyTorch for a GP"), self._tpe(group=False))
            return
        if many:
            if categorical:
                self._use("tpe", f"{len(complete)} trials with categorical knobs: TPE scales past a GP",
                          self._tpe(group=False))
            else:
                source = sorted((t for t in complete if set(t.params) == names),
                                key=lambda t: t.datetime_complete or t.datetime_start)
                self._use("cmaes", f"{len(complete)} trials of {_knobs(dimension, 'numeric')}: "
                                   "CMA-ES scales past a GP",
                          lambda seed: optuna.samplers.CmaEsSampler(
                              seed=seed, source_trials=source or None, warn_independent_sampling=False))
            return
        if not self._gp:
            self._use("tpe", "a GP needs PyTorch (pip install 'hpt-jupyter[gp]')", self._tpe(group=False))
            return
        if self._time_budget and self.choice == "gp" and self._gp_slow(complete):
            self._gp_too_slow = True
        if self._gp_too_slow:
            self._use("tpe", "a time budget, and the GP took more than a tenth of a trial's time",
                      self._tpe(group=False))
            return
        if HEDGE_EVERY and (n_started - warmup) % HEDGE_EVERY == 0:
            self._use("tpe", f"{_knobs(dimension, kinds)}, {len(complete)} trials: every "
                             f"{_ordinal(HEDGE_EVERY)} model trial goes to TPE, a hedge against a GP that misfits",
                      lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                                              n_startup_trials=warmup), keep="hedge")
            return
        self._use("gp", f"{_knobs(dimension, kinds)}, {len(complete)} trials: "
                        "few trials, a GP is the most sample-efficient",
                  lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=warmup), keep="gp")

    def _gp_slow(self, complete: list[FrozenTrial]) -> bool:
        if len(self._gp_seconds) < 3:
            return False
        durations = [t.duration.total_seconds() for t in complete if t.duration is not None]
        if not durations:
            return False
        return statistics.mean(self._gp_seconds[-3:]) > TIME_SHARE * statistics.median(durations)

    # --- BaseSampler: everything goes to the sampler chosen for this trial ---------------

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        started = time.perf_counter()
        self._choose(study, trial.number)
        study._storage.set_trial_system_attr(trial._trial_id, SAMPLER_ATTR, self.choice)
        if self._n_objectives > 1 and self.choice != "nsga2":
            # Trials sampled by other samplers count as NSGA-II's first generation when it takes over.
            study._storage.set_trial_system_attr(trial._trial_id, _NSGA_GENERATION, 0)
        self._sampler.before_trial(study, trial)
        self._sampling_seconds[trial.number] = time.perf_counter() - started

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self._sampler.sample_relative(study, trial, search_space)
        finally:
            self._sampling_seconds[trial.number] += time.perf_counter() - started

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        seconds = self._sampling_seconds.pop(trial.number, None)
        if seconds is not None and trial.system_attrs.get(SAMPLER_ATTR) == "gp":
            self._gp_seconds.append(seconds)
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def _ordinal(n: int) -> str:
    return {2: "second", 3: "third", 4: "fourth", 5: "fifth"}.get(n, f"{n}th")


def _knobs(n: int, kind: str) -> str:
    return f"{n} {kind} knob{'' if n == 1 else 's'}"
