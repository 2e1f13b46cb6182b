"""Does narrowing pay? Regret at the same budget, with and without one narrowing.

For each problem and seed, two TPE runs of the same budget: one left alone, one narrowed once
after the first trials to the box the best quarter of them span (``run.focus(0.25)``, what
the dashboard's "Focus on top 25%" applies). Regret is the best value found minus the
optimum (Branin's and Hartmann6's known minima; for the scikit-learn model, the best value any
run or a 12x12 grid found). Prints a markdown table.

    python benchmarks/steering.py [--seeds 10] [--budgets 40 60 100] [--narrow-after 20]
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


def best_of(objective, seed: int, budget: int, narrow_after: int | None, name: str) -> float:
    run = start(objective, n_trials=narrow_after or budget, sampler="tpe", seed=seed, storage="memory",
                report=False, name=name)
    run.wait()
    if narrow_after:
        run.focus(0.25)
        run.extend(budget - narrow_after)
        run.wait()
    assert run.n_finished == budget, run.reason
    return run.best_value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[40, 60, 100])
    parser.add_argument("--narrow-after", type=int, default=20)
    args = parser.parse_args()
    svr, svr_grid_best = svr_problem()
    problems = [("Branin (2 knobs)", branin, BRANIN_MINIMUM), ("Hartmann6 (6 knobs)", hartmann6, HARTMANN6_MINIMUM),
                ("SVR on diabetes, CV MSE (3 knobs)", svr, None)]
    rows = []
    for label, objective, optimum in problems:
        for budget in args.budgets:
            started = time.perf_counter()
            plain, narrowed = [], []
            for seed in range(args.seeds):
                plain.append(best_of(objective, seed, budget, None, f"{label}-{budget}-plain-{seed}"))
                narrowed.append(best_of(objective, seed, budget, args.narrow_after, f"{label}-{budget}-narrowed-{seed}"))
            rows.append([label, budget, plain, narrowed, optimum, time.perf_counter() - started])
    for row in rows:  # an unknown optimum: the best value anything found stands in for it
        if row[4] is None:
            row[4] = min([svr_grid_best] + [v for r in rows if r[0] == row[0] for v in r[2] + r[3]])
    print(f"\nTPE, {args.seeds} seeds; narrowed once after {args.narrow_after} trials to the box the best 25% "
          "span; regret = best found - optimum, at the same budget.\n")
    print("| problem | budget | median regret, not narrowed | median regret, narrowed | ratio of medians | "
          "median of per-seed ratios | seeds where narrowing won | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, budget, plain, narrowed, optimum, seconds in rows:
        regret_plain = [v - optimum for v in plain]
        regret_narrowed = [v - optimum for v in narrowed]
        ratio = statistics.median(regret_narrowed) / statistics.median(regret_plain)
        per_seed = statistics.median(n / p for n, p in zip(regret_narrowed, regret_plain) if p > 0)
        wins = sum(n < p for n, p in zip(regret_narrowed, regret_plain))
        print(f"| {label} | {budget} | {statistics.median(regret_plain):.4g} | {statistics.median(regret_narrowed):.4g} "
              f"| {ratio:.3f} | {per_seed:.3f} | {wins}/{args.seeds} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
