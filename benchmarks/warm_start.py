"""Warm starts: does a study warm-started from a neighbouring problem's study find better values
than a cold one, with the same budget?

For each problem and seed, a target problem and two neighbours of it (a *near* one and a *far*
one), all drawn from the seed:

- a 30-trial **source** study on each neighbour;
- a 30-trial **warm** study on the target, ``start(cell, warm_start=<the source's name>)``: the
  source's complete trials that fit are copied in (the sampler learns from them) and its best 3
  configurations run first (they are the warm study's trials 1-3);
- a 30-trial **cold** study on the target (shared by the near and the far neighbour: same
  target, same sampler seed).

Warm and cold studies of a seed use the same sampler seed; the sources use seeds of their own.
Every study is a compiled cell with literal ``tune.float``/``tune.int`` declarations
(``hpt_jupyter.compile_cell``, what ``%%tune`` runs), so the warm start sees the cell's space
and takes the path a notebook takes. In-memory storage, one trial at a time, ``report=False``.

Problems:

- **rosenbrock**: Rosenbrock in 4-D on [-2, 2]^4, minimum 0 moved to a point ``c`` drawn
  uniformly from [-0.5, 0.5]^4 (the target). A neighbour has its minimum at ``c + r u`` (``u`` a
  random unit vector; ``r`` 0.2 for *near*, 1.0 for *far*: 5% and 25% of the range's width) and
  its values multiplied by a factor drawn from [0.5, 2] (log-uniform): a related problem has its
  own level. Loss: regret, the best value found minus 0.
- **hgb**: scikit-learn's ``HistGradientBoostingClassifier`` (learning_rate log 1e-3..1,
  max_iter 10..40, max_depth 2..8, min_samples_leaf 2..40, l2_regularization log 1e-6..10; no
  early stopping, ``random_state=0``) on the bundled breast-cancer data (569 rows), 3-fold
  stratified CV accuracy with folds shuffled by the seed (the target). *Near*: the same model
  tuned on a random half of the rows (drawn from the seed: tuning on a sample first, then on
  everything). *Far*: the same model tuned on another bundled dataset of the same kind, wine
  (178 rows, 3 classes). Loss: error, 1 - accuracy. The model runs one thread (threadpoolctl):
  on 2 busy cores OpenMP's threads made one fit up to 25x slower.

Reported per problem and neighbour, at trials 3, 5, 10 and 30 of the target studies: the median
over seeds of each arm's best loss so far, the median of the per-seed ratios warm / cold with a
90% bootstrap interval over seeds, and on how many seeds warm was better / equal / worse. At
trial 3 the warm study has run only its 3 "tried first" configurations: that row is what they
are worth alone; a second list sets them against the cold study's full 30 trials. Also printed:
the loss per seed, and each kind of study's wall time with its objective's share (the rest is
the sampler's and the loop's). Nothing is tuned to the results: the neighbours' distances, the problems and the
budgets were fixed before the first full run.

    python benchmarks/warm_start.py [--seeds 10] [--first-seed 0] [--trials 30] [--sampler auto]
                                    [--problems rosenbrock hgb] [--near 0.2] [--far 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import optuna

from hpt_jupyter import compile_cell, start

optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIED_FIRST = 3  # hpt_jupyter.core.warm.TRIED_FIRST: the source's best configurations that run first

ROSENBROCK_CELL = """x0 = tune.float(-2, 2)
x1 = tune.float(-2, 2)
x2 = tune.float(-2, 2)
x3 = tune.float(-2, 2)
f([x0, x1, x2, x3])
"""

HGB_CELL = """learning_rate = tune.float(1e-3, 1.0, log=True)
max_iter = tune.int(10, 40)
max_depth = tune.int(2, 8)
min_samples_leaf = tune.int(2, 40)
l2_regularization = tune.float(1e-6, 10.0, log=True)
model = HistGradientBoostingClassifier(learning_rate=learning_rate, max_iter=max_iter, max_depth=max_depth,
                                       min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
                                       early_stopping=False, random_state=0)
accuracy(model)
"""


@dataclass
class Setting:
    """One problem for one seed: the target's cell and each neighbour's, and how a value reads
    as a loss (lower is better, 0 at the known optimum where there is one)."""

    target: Any  # CompiledCell
    neighbours: dict[str, Any]  # "near"/"far" -> CompiledCell
    direction: str
    loss: Callable[[float], float]
    about: dict[str, str] = field(default_factory=dict)  # neighbour -> a few words on how far it is
    transfer: dict[str, float] = field(default_factory=dict)  # neighbour -> its optimum's loss on the target


_objective_seconds = [0.0]  # time spent in the problems' own functions (one study runs at a time)


def timed(function: Callable[..., float]) -> Callable[..., float]:
    """``function``, its time added to ``_objective_seconds``: a study's wall time minus it is
    the sampler's and the loop's."""
    def call(*args: Any) -> float:
        began = time.perf_counter()
        try:
            return function(*args)
        finally:
            _objective_seconds[0] += time.perf_counter() - began
    return call


def _rng(seed: int, what: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(what.encode())])


# --- the synthetic problem -------------------------------------------------------------------

def rosenbrock(y: np.ndarray) -> float:
    return float(np.sum(100 * (y[1:] - y[:-1] ** 2) ** 2 + (1 - y[:-1]) ** 2))


def shifted_rosenbrock(minimum: np.ndarray, scale: float = 1.0) -> Callable[[list[float]], float]:
    """Rosenbrock with its minimum (0) at ``minimum``, values times ``scale``."""
    def f(x: list[float]) -> float:
        return scale * rosenbrock(np.asarray(x, dtype=float) - minimum + 1.0)
    return f


def rosenbrock_setting(seed: int, radii: dict[str, float]) -> Setting:
    rng = _rng(seed, "rosenbrock")
    centre = rng.uniform(-0.5, 0.5, 4)
    direction = rng.normal(size=4)
    direction /= np.linalg.norm(direction)
    scale = float(2.0 ** rng.uniform(-1, 1))
    neighbours, about, transfer = {}, {}, {}
    for which, radius in radii.items():
        moved = np.clip(centre + radius * direction, -2, 2)
        neighbours[which] = compile_cell(ROSENBROCK_CELL, {"f": timed(shifted_rosenbrock(moved, scale))})
        transfer[which] = shifted_rosenbrock(centre)(list(moved))
        about[which] = (f"minimum moved by {np.linalg.norm(moved - centre):.2f}, values x{scale:.2f}; "
                        f"the neighbour's minimum scores {transfer[which]:.3g} here")
    target = compile_cell(ROSENBROCK_CELL, {"f": timed(shifted_rosenbrock(centre))})
    return Setting(target, neighbours, "minimize", lambda value: value, about, transfer)


# --- the scikit-learn problem ----------------------------------------------------------------

def _accuracy_on(X: np.ndarray, y: np.ndarray, seed: int) -> Callable[[Any], float]:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    folds = StratifiedKFold(3, shuffle=True, random_state=seed)

    def accuracy(model: Any) -> float:
        with threadpool_limits(limits=1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(cross_val_score(model, X, y, cv=folds, scoring="accuracy").mean())
    return accuracy


def hgb_setting(seed: int, radii: dict[str, float]) -> Setting:
    from sklearn.datasets import load_breast_cancer, load_wine
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    half = np.sort(_rng(seed, "hgb").permutation(len(y))[: len(y) // 2])
    sources = {"near": (X[half], y[half]), "far": load_wine(return_X_y=True)}
    about = {"near": f"a random half of the rows ({len(half)} of {len(y)})",
             "far": "another dataset: wine (178 rows, 13 features, 3 classes)"}

    def cell(data: tuple[np.ndarray, np.ndarray]) -> Any:
        return compile_cell(HGB_CELL, {"HistGradientBoostingClassifier": HistGradientBoostingClassifier,
                                       "accuracy": timed(_accuracy_on(*data, seed))})

    return Setting(cell((X, y)), {which: cell(sources[which]) for which in radii}, "maximize",
                   lambda value: 1.0 - value, {which: about[which] for which in radii})


PROBLEMS = {
    "rosenbrock": ("Rosenbrock 4-D, minimum moved", "regret", rosenbrock_setting),
    "hgb": ("HistGradientBoosting on breast cancer, 3-fold CV", "error (1 - accuracy)", hgb_setting),
}


# --- one study -------------------------------------------------------------------------------

@dataclass
class Study:
    curve: np.ndarray  # best loss so far after each of the study's own trials
    seconds: float
    first: list[dict]  # the first TRIED_FIRST trials' parameters
    best: list[dict]  # its own best TRIED_FIRST configurations (for a source)
    note: str = ""
    carried: int = 0  # trials a warm start copied in
    objective_seconds: float = 0.0  # of ``seconds``, the time in the problem's own function


def run_study(cell: Any, setting: Setting, name: str, seed: int, trials: int, sampler: str,
              warm_start: str | None = None) -> Study:
    began, in_objective = time.perf_counter(), _objective_seconds[0]
    run = start(cell, n_trials=trials, direction=setting.direction, sampler=sampler, seed=seed,
                storage="memory", report=False, name=name, warm_start=warm_start)
    run.wait()
    seconds = time.perf_counter() - began
    objective_seconds = _objective_seconds[0] - in_objective
    finished = sorted(run.trials(states=None), key=lambda t: t.number)
    assert len(finished) == trials, (name, run.reason)
    losses = [setting.loss(t.value) if t.value is not None and math.isfinite(t.value) else math.inf
              for t in finished]
    ranked = sorted((t for t in finished if t.value is not None), key=lambda t: setting.loss(t.value))
    best = []
    for t in ranked:
        if t.params not in best:
            best.append(dict(t.params))
        if len(best) == TRIED_FIRST:
            break
    note = ""
    if run.failures:
        note = f"{name}: {run.failures} failed trials"
    if warm_start is not None and run.warm_start is not None and run.warm_start.notes:
        note += f"{name}: " + "; ".join(run.warm_start.notes)
    carried = run.warm_start.carried if run.warm_start is not None else 0
    return Study(np.minimum.accumulate(losses), seconds, [dict(t.params) for t in finished[:TRIED_FIRST]], best, note,
                 carried, objective_seconds)


def seed_for(seed: int, role: str) -> int:
    """Each source draws from a seed of its own; warm and cold studies share the seed."""
    return seed if role == "target" else zlib.crc32(f"{seed}:{role}".encode()) % 2 ** 31


# --- the report ------------------------------------------------------------------------------

def _interval_of_median(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(draws, len(ratios))), axis=1)
    return float(np.quantile(medians, 0.05)), float(np.quantile(medians, 0.95))


def _ratio(warm: float, cold: float) -> float:
    if warm == cold:
        return 1.0
    return warm / cold if cold > 0 else math.inf


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=30, help="each study's own trials (source, warm, cold)")
    parser.add_argument("--sampler", default="auto", help="the sampler of every study (auto, tpe, gp, ...)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--near", type=float, default=0.2, help="rosenbrock: the near neighbour's minimum moved by this")
    parser.add_argument("--far", type=float, default=1.0, help="rosenbrock: the far neighbour's minimum moved by this")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, 10 trials")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials = 2, 10
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    checkpoints = sorted({b for b in (TRIED_FIRST, 5, 10, args.trials) if b <= args.trials})
    radii = {"near": args.near, "far": args.far}
    load_before = os.getloadavg()
    began = time.perf_counter()

    results: dict[str, dict[str, Any]] = {}
    for key in args.problems:
        label, loss_name, make = PROBLEMS[key]
        started = time.perf_counter()
        cold: list[Study] = []
        warm: dict[str, list[Study]] = {which: [] for which in radii}
        sources: dict[str, list[Study]] = {which: [] for which in radii}
        abouts: dict[str, list[str]] = {which: [] for which in radii}
        transfers: dict[str, list[float]] = {which: [] for which in radii}
        mismatched = 0
        notes = []
        for seed in seeds:
            setting = make(seed, radii)
            tag = f"{key}-{args.sampler}-{seed}"
            cold.append(run_study(setting.target, setting, f"{tag}-cold", seed_for(seed, "target"), args.trials,
                                  args.sampler))
            for which, cell in setting.neighbours.items():
                source = run_study(cell, setting, f"{tag}-{which}-source", seed_for(seed, which), args.trials,
                                   args.sampler)
                warmed = run_study(setting.target, setting, f"{tag}-{which}-warm", seed_for(seed, "target"),
                                   args.trials, args.sampler, warm_start=f"{tag}-{which}-source")
                if warmed.first != source.best:  # the tried-first trials are the source's best 3
                    mismatched += 1
                sources[which].append(source)
                warm[which].append(warmed)
                abouts[which].append(setting.about[which])
                if which in setting.transfer:
                    transfers[which].append(setting.transfer[which])
                notes += [n for n in (source.note, warmed.note) if n]
            print(f"{key} seed {seed}: cold {_fmt(cold[-1].curve[-1])}, "
                  + ", ".join(f"warm from {w} {_fmt(warm[w][-1].curve[-1])} ({abouts[w][-1]})" for w in radii),
                  file=sys.stderr, flush=True)
        results[key] = dict(label=label, loss=loss_name, cold=cold, warm=warm, sources=sources, abouts=abouts,
                            transfers=transfers, mismatched=mismatched, notes=notes, seconds=time.perf_counter() - started)

    total = time.perf_counter() - began
    import sklearn
    import torch

    print(f"\nMachine: {os.cpu_count()} cores, Python {platform.python_version()}, Optuna {optuna.__version__}, "
          f"scikit-learn {sklearn.__version__}, PyTorch {torch.__version__}; load average "
          f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (other work on the machine).")
    print(f"Sampler `{args.sampler}`, seeds {seeds.start}-{seeds.stop - 1}, {args.trials} trials per study "
          f"(source, warm, cold); {total / 60:.1f} min in all.\n")
    print("Each cell: loss after that many of the target study's own trials (median over seeds). "
          "Ratio: median of the per-seed ratios warm / cold (90% bootstrap interval). "
          f"At trial {TRIED_FIRST} the warm study has run only the source's best {TRIED_FIRST} configurations.\n")
    print("| problem | warm start from | trials | cold (median) | warm (median) | ratio warm / cold | "
          "warm better / equal / worse |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        for which in radii:
            for b in checkpoints:
                cold_at = [s.curve[b - 1] for s in r["cold"]]
                warm_at = [s.curve[b - 1] for s in r["warm"][which]]
                ratios = [_ratio(w, c) for w, c in zip(warm_at, cold_at)]
                finite = [x for x in ratios if math.isfinite(x)]
                low, high = _interval_of_median(finite) if finite else (math.nan, math.nan)
                better = sum(w < c for w, c in zip(warm_at, cold_at))
                equal = sum(w == c for w, c in zip(warm_at, cold_at))
                first = " (tried first)" if b == TRIED_FIRST else ""
                print(f"| {r['label']}, {r['loss']} | {which} | {b}{first} | {_fmt(statistics.median(cold_at))} | "
                      f"{_fmt(statistics.median(warm_at))} | {statistics.median(ratios):.3f} ({low:.2f}-{high:.2f}) | "
                      f"{better} / {equal} / {len(ratios) - better - equal} |")
    print("\nPer seed, the loss after all trials (cold; warm from near; warm from far) and the sources' own best loss "
          "on their own problem (near; far):\n")
    for key, r in results.items():
        print(f"- {r['label']}: " + "; ".join(
            f"seed {seed}: {_fmt(c.curve[-1])}; " + "; ".join(_fmt(r['warm'][w][i].curve[-1]) for w in radii)
            + " (" + "; ".join(_fmt(r['sources'][w][i].curve[-1]) for w in radii) + ")"
            for i, (seed, c) in enumerate(zip(seeds, r["cold"]))))
    print("\nTime per study, median over seeds: wall seconds (of which the problem's own function), and the rest "
          "(sampler and loop) in ms per trial:\n")
    print("| problem | cold | source near | warm near | source far | warm far | minutes for the problem |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def timing(studies: list[Study]) -> str:
        rest = statistics.median((s.seconds - s.objective_seconds) / args.trials * 1000 for s in studies)
        return (f"{statistics.median(s.seconds for s in studies):.1f} "
                f"({statistics.median(s.objective_seconds for s in studies):.1f}); {rest:.0f}")

    for r in results.values():
        print(f"| {r['label']} | {timing(r['cold'])} | "
              + " | ".join(f"{timing(r['sources'][w])} | {timing(r['warm'][w])}" for w in radii)
              + f" | {r['seconds'] / 60:.1f} |")
    print(f"\nThe {TRIED_FIRST} tried-first configurations alone against the cold study's {args.trials} trials "
          "(median of per-seed ratios; tried first better / equal / worse):\n")
    for r in results.values():
        parts = []
        for which in radii:
            ratios = [_ratio(w.curve[TRIED_FIRST - 1], c.curve[-1]) for w, c in zip(r["warm"][which], r["cold"])]
            better = sum(x < 1 for x in ratios)
            equal = sum(x == 1 for x in ratios)
            parts.append(f"from {which} {statistics.median(ratios):.3f} ({better} / {equal} / "
                         f"{len(ratios) - better - equal})")
        print(f"- {r['label']}: " + ", ".join(parts))
    for key, r in results.items():
        for which in radii:
            scored = r["transfers"][which]
            if scored:
                print(f"\n{r['label']}, {which}: the neighbour's minimum scores {_fmt(statistics.median(scored))} on the "
                      f"target (median; range {_fmt(min(scored))}-{_fmt(max(scored))}).")
    carried = [s.carried for r in results.values() for w in radii for s in r["warm"][w]]
    print(f"\nTrials carried over into a warm study: {min(carried)}-{max(carried)} of {args.trials} "
          f"({len(carried)} warm studies).")
    mismatched = sum(r["mismatched"] for r in results.values())
    print(f"Tried first = the source's best {TRIED_FIRST} configurations: "
          + ("yes, in every warm study." if not mismatched else f"NO in {mismatched} warm studies."))
    notes = [n for r in results.values() for n in r["notes"]]
    if notes:
        print("Notes: " + " | ".join(notes))


if __name__ == "__main__":
    main()
