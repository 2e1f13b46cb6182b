"""``--sampler auto``: one of Optuna's samplers at a time, chosen by the problem as it unfolds.

The rule (measured in ``benchmarks/quality/``; OptunaHub's AutoSampler is the reference it
refines):

* **warm-up**: quasi-random (scrambled Sobol) points, as many as the space has dimensions plus
  one, at least 4 and at most 10, and at most a fifth of the budget. Sobol covers the box more
  evenly than the random points Optuna's model samplers start from.
* **one objective, numeric or categorical knobs, fewer than 200 complete trials**: a Gaussian
  process (``GPSampler``, fitted to warped scores, see ``warped``) and TPE share the trials, both
  fitted to the whole history. The ``Hedge`` learns the shares from the study itself: each
  model's trials that improved the best, whether the GP reads much of the scores as noise (a
  rugged function it cannot follow), and what each model's own time costs a trial. A smooth
  problem ends up almost all GP, a rugged one mostly TPE; each keeps at least a tenth. The GP
  already models trials still running, so it works with ``--jobs N``.
* **knobs only some trials declare** (a conditional space): TPE with ``multivariate`` and
  ``group``, which models each group of knobs apart; a GP or CMA-ES would sample them at random.
* **200 complete trials or more**: CMA-ES, warm-started from the trials so far, for numeric
  spaces (the GP's cost grows with the cube of the trials); TPE for spaces with categorical knobs.
* **several objectives**: a GP while trials are few and knobs numeric (three objectives at most),
  otherwise TPE; NSGA-II past 200 trials.
* **time**: what a user waits for is the best score after so many seconds. When the GP's own
  time makes a trial several times slower than TPE's, the hedge moves trials to TPE: fully under
  a time budget (``--timeout`` without ``-n``), a quarter as strongly under a trial budget, and
  only once the GP takes 50 ms or more a trial. The header says so. With ``--seed`` and a trial
  budget, time is not weighed: the same seed gives the same trials, whatever the timings.
* **no PyTorch** (the ``gp`` extra): TPE where the GP would be, said once.

The choice is made in ``before_trial`` (so one trial is sampled by one sampler throughout),
recorded on the trial (system attribute ``hpt:sampler``), and explained by ``describe()`` for the
dashboard's header and ``%tune status``.
"""

from __future__ import annotations

import datetime
import importlib.util
import math
import statistics
import threading
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
TIME_SHARE = 0.1  # under a time budget, the most of a trial's time a multi-objective GP may take
# The hedge between the GP and TPE (see ``Hedge``):
GP_PRIOR = 0.7  # log-odds for the GP before any evidence: the more sample-efficient while trials are few
PRIOR_TRIALS = 3.0  # pseudo-trials at the pooled rate of improvement each model's record starts with
SENSITIVITY = 2.0  # log-odds per unit of log of the ratio of the models' rates of improvement
FLOOR = 0.1  # the least share either model keeps, so one that started unlucky can come back
TIME_WEIGHT = {"time": 1.0, "trials": 0.25}  # log-odds lost per unit of log cost ratio, by budget kind
NOTICEABLE = 0.05  # seconds: a GP faster than this per trial costs a trial budget nothing one would notice
NOISE_OK = 0.02  # share of the scores' variance a GP may read as noise before the function counts as rugged
NOISE_WEIGHT = 1.0  # log-odds lost per unit of log of that share above NOISE_OK
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


_warp = threading.local()  # set while a WarpedGPSampler standardises its objective values


def _warp_scores_then_standardise() -> None:
    """Let ``WarpedGPSampler`` warp the scores before Optuna's GP standardises them (Optuna
    standardises within ``_sample_relative_impl``; there is no hook). Any other GP, and the
    constraints' values (standardised later, against the threshold 0), are left as Optuna has
    them."""
    from optuna.samplers._gp import sampler as gp_sampler

    standardise = getattr(gp_sampler, "_standardize_values", None)
    if standardise is None or getattr(standardise, "warps", False):
        return

    def standardise_warped(values: np.ndarray) -> tuple:
        if getattr(_warp, "pending", False):
            _warp.pending = False  # the scores come first; the constraints, if any, after
            values = warped(values)
        return standardise(values)

    standardise_warped.warps = True  # type: ignore[attr-defined]
    gp_sampler._standardize_values = standardise_warped


def warped(values: np.ndarray) -> np.ndarray:
    """Each objective's values through a Yeo-Johnson transform fitted to them (HEBO's output
    warping, Cowen-Rivers et al. 2022): a GP assumes values spread like a Gaussian, and a few
    scores far above the rest (Goldstein-Price's run to 10^6, a diverged model's loss) otherwise
    flatten everything it learns about the good region into one level. The transform keeps the
    order of the values, so the best trial stays the best."""
    from scipy.stats import yeojohnson

    values = np.array(values, dtype=float)
    if values.shape[0] < 4 or not np.isfinite(values).all():
        return values
    for column in range(values.shape[1]):
        scores = values[:, column]
        spread = scores.std()
        if spread > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                transformed, _ = yeojohnson((scores - scores.mean()) / spread)
            if np.isfinite(transformed).all() and np.ptp(transformed) > 0:
                values[:, column] = transformed
    return values


def _warped_gp_class() -> type:
    from optuna.samplers import GPSampler

    class WarpedGPSampler(GPSampler):
        """Optuna's GP, fitted to warped scores (see ``warped``)."""

        def _sample_relative_impl(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            _warp.pending = True
            try:
                return super()._sample_relative_impl(*args, **kwargs)
            finally:
                _warp.pending = False

    return WarpedGPSampler


_WARPED_GP: type | None = None


def warped_gp(**options: Any) -> BaseSampler:
    """A GP sampler fitted to warped scores (what ``auto`` runs)."""
    global _WARPED_GP
    if _WARPED_GP is None:
        _warp_scores_then_standardise()
        _WARPED_GP = _warped_gp_class()
    return _WARPED_GP(**options)


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
        self._model_seconds: dict[str, list[float]] = {"gp": [], "tpe": []}  # the same, per hedged model
        self._objective_seconds: list[float] = []  # each trial's time less its sampling, this session
        self.hedge: Hedge | None = None  # the latest evidence the GP/TPE shares came from
        self._sampling_seconds: dict[int, float] = {}  # trial number -> the sampler's time so far
        self._gp_too_slow = False
        self._kept: dict[str, BaseSampler] = {}  # the GP and its TPE hedge, taking turns
        if self._gp:
            # Loaded now, before any trial: a library loaded while trials run in threads would
            # bring thread pools that --cpus-per-trial has not limited.
            import scipy.stats  # noqa: F401  (the warping's Yeo-Johnson)
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
            if self._time_budget and self.choice == "gp" and self._gp_slow(complete):
                self._gp_too_slow = True
            if many:
                self._use("nsga2", f"{len(complete)} trials, {self._n_objectives} objectives: "
                                   "a genetic search scales past a model",
                          lambda seed: optuna.samplers.NSGAIISampler(seed=seed))
            elif self._gp and not categorical and self._n_objectives <= 3 and not self._gp_too_slow:
                self._use("gp", f"{_knobs(dimension, 'numeric')}, {self._n_objectives} objectives, "
                                f"{len(complete)} trials: few trials, a GP is the most sample-efficient",
                          lambda seed: warped_gp(seed=seed, n_startup_trials=warmup))
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
        self.hedge = hedge = self._weigh(study, finished, complete)
        reason = f"{_knobs(dimension, kinds)}, {len(complete)} trials: {hedge.describe()}"
        if hedge.next_model() == "tpe":
            self._use("tpe", reason, lambda seed: optuna.samplers.TPESampler(
                seed=seed, multivariate=True, constant_liar=True, n_startup_trials=warmup), keep="hedge")
        else:
            self._use("gp", reason, lambda seed: warped_gp(seed=seed, n_startup_trials=warmup),
                      keep="gp")

    def _weigh(self, study: Study, finished: list[FrozenTrial], complete: list[FrozenTrial]) -> "Hedge":
        """The evidence for the hedge, recomputed from the stored trials (so a resumed study
        weighs what it had), and the models' cost from this session's timings."""
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        records = hedge_records(finished, maximize)
        # Trials still running count toward the shares already (with --jobs, several are out).
        assigned = {model: 0 for model in records}
        for trial in study._get_trials(deepcopy=False, use_cache=True):
            model = trial.system_attrs.get(SAMPLER_ATTR)
            if model in assigned and not carried_over(trial):
                assigned[model] += 1
        trial_seconds = statistics.median(self._objective_seconds[-20:]) if self._objective_seconds else None
        costs = {model: statistics.median(seconds[-5:]) if seconds else None
                 for model, seconds in self._model_seconds.items()}
        if self._seed is not None and not self._time_budget:
            # A seed asks for the same trials on every run, and timings differ from run to run:
            # under a trial budget, the seed wins. (A time budget is never reproducible anyway.)
            costs = {model: None for model in costs}
        return Hedge(records, costs, trial_seconds, "time" if self._time_budget else "trials", assigned,
                     self._gp_noise_share())

    def _gp_noise_share(self) -> float | None:
        """The share of the scores' variance the GP's last fit put down to noise: near 0 for a
        smooth function, large for a rugged one it cannot follow (Rastrigin's ripples)."""
        gp = self._kept.get("gp")
        fitted = getattr(gp, "_gprs_cache_list", None)
        if not fitted:
            return None
        try:
            noise, scale = float(fitted[0].noise_var), float(fitted[0].kernel_scale)
        except (AttributeError, TypeError, ValueError):  # another Optuna's GP: no reading
            return None
        return noise / (noise + scale) if noise + scale > 0 else None

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
        model = trial.system_attrs.get(SAMPLER_ATTR)
        if seconds is not None and model == "gp":
            self._gp_seconds.append(seconds)
        if seconds is not None and model in self._model_seconds:
            self._model_seconds[model].append(seconds)
        if seconds is not None and trial.datetime_start is not None and state == TrialState.COMPLETE:
            spent = (datetime.datetime.now() - trial.datetime_start).total_seconds()
            self._objective_seconds.append(max(0.0, spent - seconds))
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def hedge_records(trials: Sequence[FrozenTrial], maximize: bool) -> dict[str, list[float]]:
    """Each hedged model's record: 1 for every trial it proposed that improved the study's best
    so far, 0 for the others (a pruned trial, or one that tied the best, improved nothing).
    "So far" is by trial number; warm-up and carried-over trials set the best but belong to no
    model. Whether, not how much: a scale-free count, the same for a loss near 0 and near 10^6."""
    records: dict[str, list[float]] = {"gp": [], "tpe": []}
    best = math.inf  # as a loss: lower is better
    for trial in sorted(trials, key=lambda t: t.number):
        pruned = trial.state == TrialState.PRUNED or trial.value is None
        loss = math.inf if pruned else (-trial.value if maximize else trial.value)
        model = trial.system_attrs.get(SAMPLER_ATTR)
        if model in records and not carried_over(trial) and math.isfinite(best):
            records[model].append(1.0 if loss < best else 0.0)
        best = min(best, loss)
    return records


class Hedge:
    """How the model trials are shared between the GP and TPE, learnt from the study itself.

    Each model is scored by its rate of improvement: the share of its trials that improved the
    best so far, shrunk toward the pooled rate by ``PRIOR_TRIALS`` while its record is short. The
    GP's log-odds start at ``GP_PRIOR`` and move by ``SENSITIVITY`` times the log of the ratio of
    the two rates: a smooth problem, where the GP's trials keep improving the best, moves the
    trials to the GP; a rugged or stepped one, where TPE's do, to TPE. Two more readings move
    them toward TPE:

    * a rugged function: when the GP's last fit reads more than ``NOISE_OK`` of the scores'
      variance as noise (Rastrigin's ripples, which it cannot follow), the log-odds drop by
      ``NOISE_WEIGHT`` times the log of how far above;
    * the cost of waiting: when the GP's own time makes a trial slower than TPE's, the log-odds
      drop by ``TIME_WEIGHT`` times the log of that ratio (fully under a time budget; a quarter
      under a trial budget, and only when the GP takes ``NOTICEABLE`` seconds or more: the score
      after so many seconds is what a user waits for, but a trial budget asked for so many
      trials). Improvements per second, in effect.

    Each model keeps at least ``FLOOR``.

    The next trial goes to the model furthest below its share (largest remainder), so the
    allocation is deterministic: with a seed, the same outcomes give the same trials. This is
    the bandit of the GP-Hedge and portfolio methods (Hoffman, Brochu and de Freitas, 2011) with
    realised improvements as rewards and a deterministic draw.
    """

    def __init__(self, records: dict[str, list[float]], costs: dict[str, float | None],
                 trial_seconds: float | None, budget_kind: str = "trials",
                 assigned: dict[str, int] | None = None, noise_share: float | None = None) -> None:
        self.records = records
        self.noise_share = noise_share
        self.assigned = assigned or {model: len(r) for model, r in records.items()}
        everything = [r for rs in records.values() for r in rs]
        pooled = (sum(everything) + 0.5 * PRIOR_TRIALS) / (len(everything) + PRIOR_TRIALS)
        # each model's rate of improvement, shrunk toward the pooled rate while its record is short
        self.scores = {model: (sum(r) + pooled * PRIOR_TRIALS) / (len(r) + PRIOR_TRIALS) for model, r in records.items()}
        self.cost_ratio = _cost_ratio(costs, trial_seconds)
        self.costs, self.trial_seconds = costs, trial_seconds
        log_odds = GP_PRIOR + SENSITIVITY * math.log((self.scores["gp"] + 1e-3) / (self.scores["tpe"] + 1e-3))
        if self.rugged():
            log_odds -= NOISE_WEIGHT * math.log(self.noise_share / NOISE_OK)
        if self.time_favours_tpe() and (budget_kind == "time" or (costs["gp"] or 0) >= NOTICEABLE):
            log_odds -= TIME_WEIGHT[budget_kind] * math.log(self.cost_ratio)
        else:
            self.cost_ratio = None  # not weighed, so not said
        self.gp_share = min(1 - FLOOR, max(FLOOR, 1 / (1 + math.exp(-log_odds))))

    def next_model(self) -> str:
        gp, tpe = self.assigned["gp"], self.assigned["tpe"]
        return "gp" if gp + 0.5 <= self.gp_share * (gp + tpe + 1) else "tpe"

    def rugged(self) -> bool:
        return self.noise_share is not None and self.noise_share > NOISE_OK

    def time_favours_tpe(self) -> bool:
        return self.cost_ratio is not None and self.cost_ratio >= 1.5

    def describe(self) -> str:
        """``gp 78% / tpe 22%: gp's trials moved the best further (gp 4 of 12 improved it, tpe 1 of 5)``."""
        gp, tpe = self.records["gp"], self.records["tpe"]
        shares = f"gp {self.gp_share:.0%} / tpe {1 - self.gp_share:.0%}"
        if not gp and not tpe:
            text = f"{shares}: a GP is the most sample-efficient while trials are few, TPE hedges"
        else:
            lead = "gp" if self.scores["gp"] >= self.scores["tpe"] else "tpe"
            text = (f"{shares}: {lead}'s trials moved the best further (gp {_improved(gp)}, "
                    f"tpe {_improved(tpe)} improved it)")
        if self.rugged():
            text += (f"; the GP reads {self.noise_share:.0%} of the scores' variance as noise: "
                     "a rugged function, TPE favoured")
        if self.time_favours_tpe():
            text += (f"; the GP's {_ms(self.costs['gp'])} per trial against TPE's {_ms(self.costs['tpe'])} "
                     f"and a {_ms(self.trial_seconds)} trial: the cheaper TPE favoured")
        return text


def _cost_ratio(costs: dict[str, float | None], trial_seconds: float | None) -> float | None:
    """How many times longer a GP trial takes than a TPE one, sampling included."""
    if costs["gp"] is None or costs["tpe"] is None or trial_seconds is None:
        return None
    return (costs["gp"] + trial_seconds) / max(costs["tpe"] + trial_seconds, 1e-6)


def _improved(record: list[float]) -> str:
    return f"{sum(1 for gain in record if gain > 0)} of {len(record)}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def _knobs(n: int, kind: str) -> str:
    return f"{n} {kind} knob{'' if n == 1 else 's'}"
