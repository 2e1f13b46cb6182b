"""Does narrowing pay? Regret at the same budget, with and without one narrowing.

For each problem and seed, two TPE runs: one left alone, one narrowed once after the first
trials to the box the best quarter of them span (``run.focus(0.25)``, what the dashboard's
"Focus on top 25%" applies). Each runs to the largest budget once; seeded TPE asks the same
trials whatever the budget, so the best value after B trials is that budget's result. Regret is
the best value found minus the optimum (Branin's and Hartmann6's known minima; for the
scikit-learn model, the best value any run or a 12x12 grid found). The median over seeds of the
per-seed ratio comes with a 90% bootstrap interval: with 10 seeds it is wide. Prints a markdown
table.

    python benchmarks/steering.py [--seeds 10] [--first-seed 0] [--budgets 40 60 100]
                                  [--narrow-after 20] [--top 0.25] [--margin 0] [--problems branin hartmann6 svr]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import optuna

from hpt_jupyter import start, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)
BRANIN_MINIMUM = 0.397887357729738


def branin() -> float:
    x1 = tune.float(-5, 10)
    x2 = tune.float(0, 15)
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


HARTMANN6_MINIMUM = -3.32237
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                  [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6() -> float:
    x = np.array([tune.float(0, 1, name=f"x{i}") for i in range(6)])
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def svr_problem():
    """Cross-validated MSE of an RBF support vector regressor on scikit-learn's bundled
    diabetes data (standardised), over C, gamma and epsilon on log scales."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()

    def mse(C: float, gamma: float, epsilon: float) -> float:
        scores = cross_val_score(SVR(C=C, gamma=gamma, epsilon=epsilon), X, y, cv=5, scoring="neg_mean_squared_error")
        return float(-scores.mean())

    def objective() -> float:
        C = tune.float(1e-2, 1e3, log=True)
        gamma = tune.float(1e-4, 1e1, log=True)
        epsilon = tune.float(1e-2, 1.0, log=True)
        return mse(C, gamma, epsilon)

    grid_best = min(mse(C, g, 0.1) for C in np.logspace(-2, 3, 12) for g in np.logspace(-4, 1, 12))
    return objective, grid_best


def padded(declared: dict, ranges: dict, margin: float) -> dict:
    """``ranges`` widened by ``margin`` of their span on each side (on the log scale for log
    knobs), inside the declared ranges. The range of n uniform samples covers (n-1)/(n+1) of
    the region they come from; a margin of 1/(n-1) on each side is the usual estimate of it."""
    widened = {}
    for name, wanted in ranges.items():
        param = declared[name]
        if isinstance(wanted, list) or not margin:
            widened[name] = wanted
            continue
        scale, unscale = (math.log, math.exp) if param.log else (float, float)
        low, high = scale(wanted[0]), scale(wanted[1])
        pad = (high - low) * margin
        widened[name] = (max(param.low, unscale(low - pad)), min(param.high, unscale(high + pad)))
        if isinstance(wanted[0], int):
            widened[name] = (math.floor(widened[name][0]), math.ceil(widened[name][1]))
    return widened


def best_so_far(objective, seed: int, budget: int, narrow_after: int | None, top: float, margin: float,
                name: str) -> np.ndarray:
    """The best value after each trial of one TPE run. Seeded TPE asks the same trials whatever
    the budget, so one run to the largest budget gives every smaller budget's result too."""
    run = start(objective, n_trials=narrow_after or budget, sampler="tpe", seed=seed, storage="memory",
                report=False, name=name)
    run.wait()
    if narrow_after:
        if margin:
            run.narrow(source="top", **padded(run.declared_space(), run.propose_focus(top), margin))
        else:
            run.focus(top)
        run.extend(budget - narrow_after)
        run.wait()
    assert run.n_finished == budget, run.reason
    if run.failures:
        print(f"{name}: failed trials {run.failures}")
    finished = sorted(run.trials(states=None), key=lambda t: t.number)
    return np.minimum.accumulate([t.value if t.value is not None else math.inf for t in finished])


def _interval_of_median(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    """A 90% bootstrap interval of the median over seeds: how far another set of seeds could
    move it (with 10 seeds, far)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(draws, len(ratios))), axis=1)
    return float(np.quantile(medians, 0.05)), float(np.quantile(medians, 0.95))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budgets", type=int, nargs="+", default=[40, 60, 100])
    parser.add_argument("--narrow-after", type=int, default=20)
    parser.add_argument("--top", type=float, default=0.25)
    parser.add_argument("--margin", type=float, default=0.0, help="widen the box by this much of its span per side")
    parser.add_argument("--problems", nargs="+", default=["branin", "hartmann6", "svr"])
    args = parser.parse_args()
    problems = {"branin": ("Branin (2 knobs)", lambda: (branin, BRANIN_MINIMUM)),
                "hartmann6": ("Hartmann6 (6 knobs)", lambda: (hartmann6, HARTMANN6_MINIMUM)),
                "svr": ("SVR on diabetes, CV MSE (3 knobs)", svr_problem)}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    budget = max(args.budgets)
    rows = []
    for key in args.problems:
        label, make = problems[key]
        objective, optimum = make()
        started = time.perf_counter()
        plain = [best_so_far(objective, seed, budget, None, args.top, 0, f"{key}-plain-{seed}") for seed in seeds]
        narrowed = [best_so_far(objective, seed, budget, args.narrow_after, args.top, args.margin, f"{key}-narrowed-{seed}")
                    for seed in seeds]
        if key == "svr":  # no known optimum: the best value any run or the grid found stands in for it
            optimum = min([optimum] + [curve[-1] for curve in plain + narrowed])
        rows.append((label, plain, narrowed, optimum, time.perf_counter() - started))
    print(f"\nTPE, seeds {seeds.start}-{seeds.stop - 1}; narrowed once after {args.narrow_after} trials to the box "
          f"the best {args.top:.0%} span" + (f", widened by {args.margin:g} of its span per side" if args.margin else "")
          + "; regret = best found - optimum, at the same budget.\n")
    print("| problem | budget | median regret, not narrowed | median regret, narrowed | ratio of medians | "
          "median of per-seed ratios (90% interval) | seeds where narrowing won |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, plain, narrowed, optimum, seconds in rows:
        for b in args.budgets:
            regret_plain = [curve[b - 1] - optimum for curve in plain]
            regret_narrowed = [curve[b - 1] - optimum for curve in narrowed]
            ratio = statistics.median(regret_narrowed) / statistics.median(regret_plain)
            ratios = [n / p for n, p in zip(regret_narrowed, regret_plain) if p > 0]
            per_seed = statistics.median(ratios)
            low, high = _interval_of_median(ratios)
            wins = sum(n < p for n, p in zip(regret_narrowed, regret_plain))
            print(f"| {label} | {b} | {statistics.median(regret_plain):.4g} | {statistics.median(regret_narrowed):.4g} "
                  f"| {ratio:.3f} | {per_seed:.3f} ({low:.2f}-{high:.2f}) | {wins}/{len(seeds)} |")
    print("\nseconds per problem: " + ", ".join(f"{label} {seconds:.0f}" for label, *_, seconds in rows))


if __name__ == "__main__":
    main()
