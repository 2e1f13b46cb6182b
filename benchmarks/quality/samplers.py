"""The samplers the quality benchmark compares: hpt-jupyter's sampler names (Optuna's samplers
with Optuna's defaults, and ``auto``), and OptunaHub's AutoSampler rule, the reference to beat.
"""

from __future__ import annotations

from typing import Any, Sequence

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import (BaseSampler, CmaEsSampler, GPSampler, NSGAIIISampler, NSGAIISampler,
                             RandomSampler, TPESampler)
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

SAMPLERS = ("random", "tpe", "gp", "cmaes", "qmc", "auto", "autosampler-rule")
BUDGET_AWARE = ("auto",)  # its rule weighs n_trials: it runs once per budget
_MAXINT32 = (1 << 31) - 1
_RULE_ATTR = "auto:sampler"


def make(name: str, seed: int) -> str | BaseSampler:
    """What ``hpt_jupyter.optimize(sampler=...)`` takes for the sampler called ``name``."""
    if name == "autosampler-rule":
        return AutoSamplerRule(seed=seed)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return name


class AutoSamplerRule(BaseSampler):
    """OptunaHub's ``AutoSampler`` (package ``samplers/auto_sampler``, ``_sampler.py`` of
    github.com/optuna/optunahub-registry, as of its CMA-ES warm-start fix of January 2026),
    re-implemented because ``optunahub.load_module`` fetches code from GitHub at run time.

    Its rule, chosen in ``before_trial`` once a trial is complete (the first trial is random):

    * one objective: TPE (``multivariate=True``, ``constant_liar=True``) as soon as the
      intersection search space holds a categorical knob or trials declared different knobs, and
      TPE for good once chosen; else ``GPSampler`` (its defaults: 10 random start-up trials) while
      fewer than 250 trials are complete, then ``CmaEsSampler`` warm-started from the first 250
      complete trials that fit the search space;
    * several objectives: TPE for conditional spaces; below 250 complete trials TPE for
      categorical knobs or 4+ objectives, else the GP; then NSGA-II (NSGA-III for 4+ objectives).

    Each new sampler is seeded from the rule's own generator, as in the original. Left out: the
    ``constraints_func`` option (unused here) and the per-thread sampler (trials here run one at a time).
    """

    _MAX_COMPLETE_FOR_GP = 250

    def __init__(self, seed: int | None = None) -> None:
        self._rng = LazyRandomState(seed)
        self._sampler: BaseSampler | None = None

    @property
    def current(self) -> BaseSampler:
        if self._sampler is None:
            self._sampler = RandomSampler(seed=self._rng.rng.randint(_MAXINT32))
        return self._sampler

    def _tpe(self, seed: int) -> TPESampler:
        # The original also passes warn_independent_sampling=False: Optuna's default since 4.9,
        # which deprecates the argument.
        return TPESampler(seed=seed, multivariate=True, constant_liar=True)

    @staticmethod
    def _conditional(study: Study) -> bool:
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
        return bool(trials) and any(set(t.params) != set(trials[0].params) for t in trials)

    def _single_objective(self, study: Study, space: dict[str, BaseDistribution]) -> BaseSampler:
        if isinstance(self.current, TPESampler):
            return self.current
        seed = self._rng.rng.randint(_MAXINT32)
        if any(isinstance(d, CategoricalDistribution) for d in space.values()) or self._conditional(study):
            return self._tpe(seed)
        complete = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if len(complete) < self._MAX_COMPLETE_FOR_GP:
            return self.current if isinstance(self.current, GPSampler) else GPSampler(seed=seed)
        if isinstance(self.current, CmaEsSampler):
            return self.current
        fitting = sorted((t for t in complete if _fits(t, space)), key=lambda t: t.datetime_complete)
        return CmaEsSampler(seed=seed, source_trials=fitting[:self._MAX_COMPLETE_FOR_GP] or None,
                            warn_independent_sampling=True)

    def _multi_objective(self, study: Study, space: dict[str, BaseDistribution]) -> BaseSampler:
        seed = self._rng.rng.randint(_MAXINT32)
        if self._conditional(study):
            return self.current if isinstance(self.current, TPESampler) else self._tpe(seed)
        n_objectives = len(study.directions)
        complete = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
        if len(complete) >= self._MAX_COMPLETE_FOR_GP:
            return NSGAIISampler(seed=seed) if n_objectives < 4 else NSGAIIISampler(seed=seed)
        if n_objectives >= 4 or any(isinstance(d, CategoricalDistribution) for d in space.values()):
            return self.current if isinstance(self.current, TPESampler) else self._tpe(seed)
        return self.current if isinstance(self.current, GPSampler) else GPSampler(seed=seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True):
            space = IntersectionSearchSpace().calculate(study)
            choose = self._single_objective if len(study.directions) == 1 else self._multi_objective
            self._sampler = choose(study, space)
        study._storage.set_trial_system_attr(trial._trial_id, _RULE_ATTR, type(self.current).__name__)
        self.current.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if len(study.directions) > 1 and not isinstance(self.current, (NSGAIISampler, NSGAIIISampler)):
            # trials of other samplers count as the genetic sampler's first generation
            key = (NSGAIISampler if len(study.directions) < 4 else NSGAIIISampler)._get_generation_key()
            study._storage.set_trial_system_attr(trial._trial_id, key, 0)
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.current.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._rng.rng.seed()
        self.current.reseed_rng()


def _fits(trial: FrozenTrial, space: dict[str, BaseDistribution]) -> bool:
    """Whether CMA-ES can start from ``trial``: the same knobs as ``space``, each inside it."""
    return set(trial.params) == set(space) and all(
        d._contains(d.to_internal_repr(trial.params[name])) for name, d in space.items())
