"""Early stopping: what the median, successive-halving and Hyperband pruners save against no
pruning, on an epoch-wise scikit-learn model, and whether they lose accuracy doing it.

The model: ``SGDClassifier`` on scikit-learn's bundled digits (fixed stratified split, half to
fit, half to validate: 898 and 899 images; standardised on the fitted half), trained with
``partial_fit`` for at most 30 epochs; after each epoch ``tune.report(validation accuracy,
epoch)`` with epochs counted from 0 (as Optuna's examples do). Knobs: ``loss`` (hinge, log_loss,
modified_huber), ``learning_rate`` (constant, optimal, invscaling), ``eta0`` (1e-4 to 1, log),
``alpha`` (1e-6 to 1e-1, log). The model's own seed is fixed, so a configuration always gives
the same curve.

For each seed and each of ``jobs=1`` and ``jobs=2`` (thread backend unless ``--backend``), the
same seeded study (default sampler: TPE; 60 trials; in-memory storage) runs once per pruner:
``none``, ``median``, ``sha``, ``hyperband``, in two designs that differ only in the pruners'
settings (see ``DESIGNS``): ``defaults`` (Optuna's) and ``budget`` (no decision before the 4th
epoch, reduction factor 3). The unpruned run is shared by both designs. The order of the pruners
rotates with the seed. Measured per run:

- **epochs**: the number of ``tune.report`` calls over all trials (pruned ones included);
- **best accuracy**: the highest final validation accuracy of the trials that ran to their end
  (state COMPLETE; its value is the accuracy after its last epoch, 30); a pruned trial's
  intermediate values do not count;
- **time to best**: wall time from just before ``start()`` to the completion of the first trial
  (by completion time) whose final value equals that run's best accuracy.

Each is compared with the unpruned run of the same seed and the same number of jobs: epochs and
time as a ratio (pruned / none), accuracy as a difference (pruned - none, percentage points).
The table gives the median of the per-seed ratios with their range, and the mean of the
per-seed differences with its range. Targets, for sha and hyperband, with 1 and 2 jobs: median
epochs ratio at most 0.5; mean best-accuracy difference at least -0.2 pp (pruning may cost at most
0.2 pp on average; finding a better model is no miss). One validation image is 0.11 pp.

Sanity line: with ``jobs=1`` each pruned study is run again in bare Optuna
(``optuna.create_study(sampler=TPESampler(seed=S), pruner=<the same Optuna pruner>,
study_name=<the same name>)``, ``study.optimize`` with ``trial.suggest_*``, ``trial.report``,
``trial.should_prune``); every trial's state, parameters, number of reports and value must be
the same. (Hyperband puts a trial into a bracket by a hash of the study's name, hence the name.)

Times are ratios within one run, printed for the record; nothing here asserts on them.

    python benchmarks/pruning.py [--seeds 5] [--jobs 1 2] [--design defaults budget] [--backend thread]
                                 [--no-check] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import TrialState

import hpt_jupyter
from hpt_jupyter import start, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)

PRUNERS = ("none", "median", "sha", "hyperband")
LOSSES = ["hinge", "log_loss", "modified_huber"]
RATES = ["constant", "optimal", "invscaling"]

# Pruner settings per design: (our spec, the bare Optuna pruner it must equal).
# "defaults": Optuna's defaults (SHA: min_resource auto = 1, reduction factor 4; Hyperband:
# min_resource 1, max_resource auto = 30, reduction factor 3, 4 brackets; median: 5 start-up
# trials, no warm-up).
# "budget": settings one would choose for a 30-epoch budget knowing that epoch 1 says little:
# no decision before 3 epochs (median n_warmup_steps=2; SHA and Hyperband min_resource=3, so the
# first rung is after 4 epochs), reduction factor 3, Hyperband's max_resource fixed at 30.
DESIGNS: dict[str, dict[str, tuple[str, Callable[[], optuna.pruners.BasePruner]]]] = {
    "defaults": {
        "none": ("none", optuna.pruners.NopPruner),
        "median": ("median", optuna.pruners.MedianPruner),
        "sha": ("sha", optuna.pruners.SuccessiveHalvingPruner),
        "hyperband": ("hyperband", optuna.pruners.HyperbandPruner),
    },
    "budget": {
        "none": ("none", optuna.pruners.NopPruner),
        "median": ("median(n_warmup_steps=2)", lambda: optuna.pruners.MedianPruner(n_warmup_steps=2)),
        "sha": ("sha(min_resource=3, reduction_factor=3)",
                lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)),
        "hyperband": ("hyperband(min_resource=3, max_resource=30, reduction_factor=3)",
                      lambda: optuna.pruners.HyperbandPruner(min_resource=3, max_resource=30,
                                                             reduction_factor=3)),
    },
}


def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_fit)
    return {"X_fit": scaler.transform(X_fit), "y_fit": y_fit, "X_val": scaler.transform(X_val), "y_val": y_val,
            "classes": np.unique(y)}


def train(data: dict[str, np.ndarray], epochs: int, report: Callable[[float, int], None], *, loss: str,
          learning_rate: str, eta0: float, alpha: float) -> float:
    """The shared training loop: ``report`` is ``tune.report`` or bare Optuna's report-and-prune."""
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss=loss, learning_rate=learning_rate, eta0=eta0, alpha=alpha, random_state=0)
    accuracy = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(epochs):
            model.partial_fit(data["X_fit"], data["y_fit"], classes=data["classes"])
            accuracy = model.score(data["X_val"], data["y_val"])
            report(accuracy, epoch)
    return accuracy


def ours(data: dict[str, np.ndarray], epochs: int) -> Callable[[], float]:
    def objective() -> float:
        loss = tune.choice(LOSSES)
        learning_rate = tune.choice(RATES)
        eta0 = tune.float(1e-4, 1.0, log=True)
        alpha = tune.float(1e-6, 1e-1, log=True)
        return train(data, epochs, tune.report, loss=loss, learning_rate=learning_rate, eta0=eta0, alpha=alpha)
    return objective


def bare(data: dict[str, np.ndarray], epochs: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        def report(value: float, step: int) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return train(data, epochs, report, loss=trial.suggest_categorical("loss", LOSSES),
                     learning_rate=trial.suggest_categorical("learning_rate", RATES),
                     eta0=trial.suggest_float("eta0", 1e-4, 1.0, log=True),
                     alpha=trial.suggest_float("alpha", 1e-6, 1e-1, log=True))
    return objective


def measure(trials: list[optuna.trial.FrozenTrial], began: datetime.datetime) -> dict[str, Any]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(t.value for t in complete)
    reached = min(t.datetime_complete for t in complete if t.value == best)
    ended = max(t.datetime_complete for t in trials)
    return {"epochs": sum(len(t.intermediate_values) for t in trials), "best": best,
            "to_best": (reached - began).total_seconds(), "wall": (ended - began).total_seconds(),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials), "complete": len(complete),
            "failed": sum(t.state == TrialState.FAIL for t in trials)}


def run_ours(data, args, design: str, pruner: str, seed: int, jobs: int) -> tuple[dict[str, Any], list, str]:
    spec = DESIGNS[design][pruner][0]
    name = f"pruning-{pruner}-seed{seed}-jobs{jobs}"  # the same in both designs (Hyperband hashes it)
    began = datetime.datetime.now()
    run = start(ours(data, args.epochs), n_trials=args.trials, direction="maximize", seed=seed, storage="memory",
                report=False, name=name, pruner=spec, jobs=jobs, sampler="tpe", backend=args.backend, mode="fresh").wait()
    assert run.state == "finished", (run.state, run.status())
    trials = run.trials(states=None)
    assert len(trials) == args.trials, len(trials)
    return measure(trials, began), trials, name


def run_bare(data, args, design: str, pruner: str, seed: int, name: str) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed),
                                    pruner=DESIGNS[design][pruner][1]())
    study.optimize(bare(data, args.epochs), n_trials=args.trials)
    return study.trials


def decisions(trials: list) -> list[tuple]:
    return [(t.state, t.params, len(t.intermediate_values), t.value) for t in trials]


def part(data, args, design: str, unpruned: dict[tuple[int, int], dict[str, Any]]) -> tuple[str, list[tuple[str, bool]]]:
    """One design's table; ``unpruned`` keeps the runs without a pruner (the same for every design)."""
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    checks: list[tuple[str, int, bool, str]] = []  # pruner, seed, matched, first difference
    for seed in args.seed_list:
        for jobs in args.jobs:
            order = PRUNERS[seed % len(PRUNERS):] + PRUNERS[:seed % len(PRUNERS)]  # rotate who goes first
            for pruner in order:
                if pruner == "none" and (seed, jobs) in unpruned:
                    results[(pruner, seed, jobs)] = unpruned[(seed, jobs)]
                    continue
                got, trials, name = run_ours(data, args, design, pruner, seed, jobs)
                if pruner == "none":
                    unpruned[(seed, jobs)] = got
                results[(pruner, seed, jobs)] = got
                line = (f"{design} seed {seed} jobs {jobs} {pruner}: {got['epochs']} epochs, best {got['best']:.4f}, "
                        f"to best {got['to_best']:.1f} s, wall {got['wall']:.1f} s, {got['pruned']} pruned")
                if jobs == 1 and args.check:
                    expected = decisions(run_bare(data, args, design, pruner, seed, name))
                    mine = decisions(trials)
                    first = next((i for i, (a, b) in enumerate(zip(mine, expected)) if a != b), None)
                    same = first is None and len(mine) == len(expected)
                    checks.append((pruner, seed, same, "" if same else f"trial {first}: {mine[first]} vs {expected[first]}"))
                    line += f"; same as bare Optuna: {'yes' if same else 'NO'}"
                log(line)

    spec = {p: DESIGNS[design][p][0] for p in PRUNERS}
    seeds = args.seed_list
    lines = [f"Design '{design}': `SGDClassifier` on digits (898 images to fit, 899 to validate), {args.epochs} "
             f"epochs at most, {args.trials} trials, TPE, seeds {seeds[0]}-{seeds[-1]}, backend {args.backend}; "
             f"pruners: " + ", ".join(f"`{spec[p]}`" for p in PRUNERS[1:]) + ". Ratios: median of the per-seed "
             "ratios (range); accuracy: mean of the per-seed differences (range).", "",
             "| jobs | pruner | epochs (none: median) | epochs ratio | time-to-best ratio | wall-time ratio | "
             "best acc. (median) | acc. diff., pp | pruned trials (median) | target | met |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    verdicts: list[tuple[str, bool]] = []
    for jobs in args.jobs:
        for pruner in PRUNERS:
            rows = [results[(pruner, s, jobs)] for s in seeds]
            base = [results[("none", s, jobs)] for s in seeds]
            best = statistics.median(r["best"] for r in rows)
            pruned = statistics.median(r["pruned"] for r in rows)
            if pruner == "none":
                lines.append(f"| {jobs} | none | {statistics.median(r['epochs'] for r in rows):.0f} | 1 | 1 | 1 | "
                             f"{best:.4f} | 0 | {pruned:.0f} | | |")
                continue
            cells = []
            for key in ("epochs", "to_best", "wall"):
                ratios = [r[key] / b[key] for r, b in zip(rows, base)]
                cells.append(f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
            epochs_ratio = statistics.median(r["epochs"] / b["epochs"] for r, b in zip(rows, base))
            diffs = [100 * (r["best"] - b["best"]) for r, b in zip(rows, base)]
            diff = statistics.mean(diffs)
            target = met = ""
            if pruner in ("sha", "hyperband"):
                ok = epochs_ratio <= 0.5 and diff >= -0.2
                target, met = "epochs <= 0.5, acc. >= -0.2 pp", "yes" if ok else \
                    "no (" + ", ".join(w for w, bad in (("epochs", epochs_ratio > 0.5), ("accuracy", diff < -0.2))
                                       if bad) + ")"
                verdicts.append((f"{pruner} jobs={jobs}", ok))
            lines.append(f"| {jobs} | {pruner} | | {cells[0]} | {cells[1]} | {cells[2]} | {best:.4f} | "
                         f"{diff:+.2f} ({min(diffs):+.2f} to {max(diffs):+.2f}) | {pruned:.0f} | {target} | {met} |")
    if len(args.jobs) > 1:  # the same unpruned study twice, trials in another order: the noise floor
        noise = [100 * abs(results[("none", s, args.jobs[1])]["best"] - results[("none", s, args.jobs[0])]["best"])
                 for s in seeds]
        lines += ["", f"Noise floor: the unpruned study with jobs={args.jobs[0]} and jobs={args.jobs[1]} (same seed, "
                      f"other trials) differs in best accuracy by {statistics.mean(noise):.2f} pp on average "
                      f"(per seed {min(noise):.2f}-{max(noise):.2f} pp)."]
    if args.check:
        matched = sum(c[2] for c in checks)
        lines += ["", f"Same pruning decisions as bare Optuna (jobs=1; state, parameters, reports and value of every "
                      f"trial): {'yes' if matched == len(checks) else 'NO'}, {matched} of {len(checks)} studies "
                      f"({len(checks) * args.trials} trials)."]
        for pruner, seed, same, first in checks:
            if not same:
                lines.append(f"- differs: {pruner}, seed {seed}, first at {first}")
    per_seed = ["", "Per seed (epochs / best accuracy), jobs " + " and ".join(map(str, args.jobs)) + ":", "",
                "| jobs | seed | " + " | ".join(PRUNERS) + " |", "|---:|---:|" + "---:|" * len(PRUNERS)]
    for jobs in args.jobs:
        for s in seeds:
            per_seed.append(f"| {jobs} | {s} | " + " | ".join(
                f"{results[(p, s, jobs)]['epochs']} / {results[(p, s, jobs)]['best']:.4f}" for p in PRUNERS) + " |")
    return "\n".join(lines + per_seed), verdicts


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (at least 5 for the targets)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="thread", choices=["thread", "process"])
    parser.add_argument("--design", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip re-running the jobs=1 studies in bare Optuna")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 12 trials, 8 epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.trials, args.epochs = 1, 12, 8
    args.seed_list = list(range(args.first_seed, args.first_seed + args.seeds))

    import sklearn
    log(f"start; {os.cpu_count()} cores; hpt_jupyter from {os.path.dirname(hpt_jupyter.__file__)}; "
        f"Optuna {optuna.__version__}, scikit-learn {sklearn.__version__}")
    began = time.perf_counter()
    data = digits()
    tables, verdicts = [], []
    unpruned: dict[tuple[int, int], dict[str, Any]] = {}
    for design in args.design:
        table, got = part(data, args, design, unpruned)
        tables.append(table)
        verdicts += [(f"{design}: {what}", ok) for what, ok in got]
    log(f"done in {time.perf_counter() - began:.0f} s")
    print()
    print("\n\n".join(tables))
    if verdicts:
        print()
        print("Targets (sha and hyperband): " + "; ".join(f"{what} {'met' if ok else 'MISSED'}" for what, ok in verdicts))


if __name__ == "__main__":
    main()
