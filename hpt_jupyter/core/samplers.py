"""Sampler names to Optuna samplers. A named sampler is Optuna's, with Optuna's defaults."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Callable

import optuna
from optuna.samplers import BaseSampler

from ..errors import TuneError
from .auto import GP_MODULES, AutoSampler

SAMPLERS = ("auto", "tpe", "random", "grid", "gp", "cmaes", "qmc", "nsga2")

# sampler -> (modules it needs, the extra that installs them)
_NEEDS = {"gp": (GP_MODULES, "gp"), "cmaes": (("cmaes",), "cmaes")}
_SINGLE_OBJECTIVE_ONLY = ("cmaes",)


def make_sampler(name: str, seed: int | None, n_objectives: int,
                 grid: Callable[[], dict[str, list]] | None = None, budget: int | None = None,
                 time_budget: bool = False) -> tuple[BaseSampler, str]:
    """``(sampler, name)`` for ``--sampler name``; ``grid`` gives the grid when it is needed.
    ``auto`` also weighs the budget (``budget`` trials, or only a time limit: ``time_budget``)."""
    if name not in SAMPLERS:
        raise TuneError(f"--sampler {name!r} is not one I know; choose one of: {', '.join(SAMPLERS)}.")
    if name == "auto":
        return AutoSampler(seed=seed, n_objectives=n_objectives, budget=budget, time_budget=time_budget), name
    if name in _NEEDS:
        modules, extra = _NEEDS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise TuneError(
                f"--sampler {name} needs {', '.join(missing)}, which is not installed: "
                f"pip install 'hpt-jupyter[{extra}]' (or pick another --sampler)."
            )
    if name in _SINGLE_OBJECTIVE_ONLY and n_objectives > 1:
        raise TuneError(f"--sampler {name} handles one objective only; use nsga2, tpe or random for several.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        samplers = optuna.samplers
        if name == "tpe":
            return samplers.TPESampler(seed=seed), name
        if name == "random":
            return samplers.RandomSampler(seed=seed), name
        if name == "grid":
            if grid is None:
                raise TuneError("--sampler grid needs the search space up front; pass search_space={...}.")
            return samplers.GridSampler(grid(), seed=seed), name
        if name == "gp":
            return samplers.GPSampler(seed=seed), name
        if name == "cmaes":
            return samplers.CmaEsSampler(seed=seed), name
        if name == "qmc":
            return samplers.QMCSampler(seed=seed), name
        return samplers.NSGAIISampler(seed=seed), name


def _random_states(sampler: BaseSampler, depth: int = 3) -> list:
    """The random states a sampler draws from (its own, and those of samplers it holds, such
    as TPE's random sampler for its start-up trials, and those of the sampler ``auto`` runs now)."""
    from optuna.samplers._lazy_random_state import LazyRandomState

    found = []
    for value in vars(sampler).values():
        if isinstance(value, LazyRandomState):
            found.append(value)
        elif depth > 1 and isinstance(value, BaseSampler):
            found.extend(_random_states(value, depth - 1))
    return found


def reseed_for_trial(sampler: BaseSampler, seed: int, number: int, what: str) -> bool:
    """Seed the sampler's draws for ``what`` of trial ``number`` from ``seed`` alone.

    With several trials in flight, trials sample in whatever order their slots reach the
    sampler; drawing each trial's values from its own seed makes them independent of that order
    (False: this sampler keeps its random state where this cannot reach it)."""
    import zlib

    states = _random_states(sampler)
    derived = zlib.crc32(f"{seed}:{number}:{what}".encode())
    for k, state in enumerate(states):
        state.rng.seed((derived + k) % 2**32)
    return bool(states)
