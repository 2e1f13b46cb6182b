"""Population-based training (``scheduler="pbt"``): the toy problem of the PBT paper, and an
epoch-wise scikit-learn model against random search with the same number of epochs.

1. The toy problem of Jaderberg et al. 2017 (figure 2): maximise Q(θ) = 1.2 − (θ0² + θ1²)
   while training only sees the surrogate Q̂(θ|h) = 1.2 − (h0·θ0² + h1·θ1²). Each step is one
   step of gradient ascent on Q̂ (θi ← θi − lr·2·hi·θi) from θ = (0.9, 0.9); the score reported
   each step is the true Q. A population of two starts at h = (1, 0) and h = (0, 1) (enqueued
   trials, which new members take first); h0, h1 are knobs in [0, 1]. Four arms, per seed:

   - fixed hyperparameters, plain training: the two members as two ordinary trials (no
     scheduler), each training every step with its own h;
   - PBT with exploitation impossible: ``scheduler="pbt"`` with an interval longer than the
     training, so each member trains in one segment and never meets a ready point;
   - PBT: ``scheduler="pbt", population=2, interval=4`` with the product's default settings
     (quantile 0.25, resample probability 0.25, factors 0.8 and 1.2), one trial at a time;
   - the same with ``jobs=2``: the two members train side by side, as the paper's workers do
     (which segment ends first depends on the threads, so this arm does not repeat by seed).

   Final Q is the best member's Q after the last step (``run.best_value``). The lineage gives how
   many segments exploited, and how many of those cloned a member that had trained further than
   the member that cloned it (see README: the claimed member is the one behind).

2. ``SGDClassifier(loss="log_loss", learning_rate="constant")`` on scikit-learn's bundled digits
   (fixed split: 75% train, of which 25% validation, and a 25% test set; standardised),
   trained with ``partial_fit``, one epoch per ``tune.report`` of validation accuracy; knobs
   ``eta0`` (1e-4 to 1, log) and ``alpha`` (1e-6 to 1e-1, log). The same objective runs as
   random search (``sampler="random"``, no pruner, P trials of E epochs) and as PBT (the same
   sampler for new members, population P, interval K, E epochs per member): the same number of
   epochs, counted as ``tune.report`` calls. Per seed: the best validation accuracy each finds
   (PBT: the best member's latest; random search: the best trial's last epoch), and the test
   accuracy of that model, which neither saw.

Every number is a value found, not a time; runtime is printed for the record only.

    python benchmarks/pbt.py [--seeds 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import optuna

import hpt_jupyter
from hpt_jupyter import start, tune

optuna.logging.set_verbosity(optuna.logging.WARNING)

# --- 1. the toy problem ----------------------------------------------------------------------

TOY_LR = 0.01  # gradient-ascent step size
TOY_STEPS = 200  # steps per member
TOY_INTERVAL = 4  # a member is ready (exploit/explore) every 4 steps
TOY_START = (0.9, 0.9)
TOY_MEMBERS = ({"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0})


def true_q(theta: tuple[float, float]) -> float:
    return 1.2 - (theta[0] ** 2 + theta[1] ** 2)


def toy_objective(steps: int) -> Callable[[], float]:
    def objective() -> float:
        h0 = tune.float(0.0, 1.0)
        h1 = tune.float(0.0, 1.0)
        state = tune.restore()  # None: a new member (and always without PBT)
        theta, step = (TOY_START, 0) if state is None else state
        while step < steps:
            # one step of gradient ascent on the surrogate 1.2 - (h0 θ0² + h1 θ1²)
            theta = (theta[0] - TOY_LR * 2 * h0 * theta[0], theta[1] - TOY_LR * 2 * h1 * theta[1])
            step += 1
            tune.checkpoint((theta, step))
            tune.report(true_q(theta), step - 1)  # the true Q, which training never sees
        return true_q(theta)
    return objective


def toy_run(seed: int, arm: str, steps: int) -> hpt_jupyter.core.run.Run:
    options: dict[str, Any] = {"n_trials": len(TOY_MEMBERS)}
    if arm == "pbt":
        options = {"n_trials": 10 * steps, "scheduler": "pbt", "population": 2, "interval": TOY_INTERVAL}
    elif arm == "pbt-jobs2":
        options = {"n_trials": 10 * steps, "scheduler": "pbt", "population": 2, "interval": TOY_INTERVAL,
                   "jobs": 2}
    elif arm == "pbt-no-exploit":
        options = {"n_trials": 10 * steps, "scheduler": "pbt", "population": 2, "interval": steps + 1}
    run = start(toy_objective(steps), direction="maximize", seed=seed, storage="memory", report=False, sampler="tpe",
                name=f"toy-{arm}-{seed}-{time.monotonic_ns()}", launch=False, **options)
    for member in TOY_MEMBERS:
        run.study.enqueue_trial(member)
    run.start()
    run.wait()
    assert run.state == "finished", run.state
    return run


def exploit_counts(run) -> tuple[int, int, int]:
    """(continued segments, those that exploited, exploits whose donor had trained further than
    the member that cloned it)."""
    progress: dict[int, int] = {}  # member -> the first step its next segment would report
    continued = exploited = ahead = 0
    for segment in run.lineage():
        if segment.parent is not None:
            continued += 1
            if segment.exploited:
                exploited += 1
                ahead += segment.start > progress.get(segment.member, 0)
        progress[segment.member] = segment.end + 1
    return continued, exploited, ahead


def part_toy(args: argparse.Namespace) -> str:
    labels = {"fixed": "fixed h, plain training (no scheduler)",
              "pbt-no-exploit": f"PBT, exploitation impossible (interval {args.toy_steps + 1})",
              "pbt": f"PBT (population 2, interval {TOY_INTERVAL})",
              "pbt-jobs2": f"PBT (population 2, interval {TOY_INTERVAL}), jobs=2: members side by side"}
    finals: dict[str, list[float]] = {arm: [] for arm in labels}
    trials: dict[str, list[int]] = {arm: [] for arm in labels}
    counts: dict[str, list[tuple[int, int, int]]] = {"pbt": [], "pbt-jobs2": []}
    schedules = []
    for seed in range(args.seeds):
        for arm in labels:
            run = toy_run(seed, arm, args.toy_steps)
            finals[arm].append(run.best_value)
            trials[arm].append(run.n_finished)
            if arm in counts:
                counts[arm].append(exploit_counts(run))
            if arm == "pbt":
                schedules.append(run.best_schedule)
        log(f"toy seed {seed}: " + ", ".join(f"{arm} {finals[arm][-1]:.4f}" for arm in labels))
    lines = [f"Toy problem (PBT paper, figure 2): gradient ascent on Q̂(θ|h) with step size {TOY_LR}, "
             f"{args.toy_steps} steps per member from θ = (0.9, 0.9), members starting at h = (1, 0) and "
             f"(0, 1); final Q of the best member, {args.seeds} seeds (0-{args.seeds - 1}).", "",
             "| arm | median final Q | min | max | trials (segments) per run | target | met |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for arm, label in labels.items():
        values = finals[arm]
        target = met = ""
        if arm == "pbt":
            target, met = ">= 1.15 (median)", "yes" if statistics.median(values) >= 1.15 else "no"
        elif arm == "fixed":
            target, met = "≈ 0.39", "yes" if all(abs(v - 0.39) < 0.01 for v in values) else "no"
        spread = f"{min(trials[arm])}" if min(trials[arm]) == max(trials[arm]) \
            else f"{min(trials[arm])}-{max(trials[arm])}"
        lines.append(f"| {label} | {statistics.median(values):.4f} | {min(values):.4f} | {max(values):.4f} | "
                     f"{spread} | {target} | {met} |")
    lines.append("")
    for arm, found in counts.items():
        continued, exploited, ahead = (sum(c[i] for c in found) for i in range(3))
        lines.append(f"{labels[arm]}, all seeds: {continued} continued segments, {exploited} of them exploited "
                     f"({exploited / max(continued, 1):.0%}); in {ahead} of the {exploited} exploits the donor had "
                     f"trained further than the member that cloned it.")
    best = max(range(len(schedules)), key=lambda s: finals["pbt"][s])
    steps = ", ".join(f"{e['start']}-{e['end']}: ({e['h0']:.2f}, {e['h1']:.2f})" for e in schedules[best][:8])
    lines.append(f"Best seed's schedule (seed {best}), first segments, steps: (h0, h1): {steps}, ...")
    return "\n".join(lines)


# --- 2. scikit-learn: PBT against random search -------------------------------------------------

def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    X_fit, X_val, y_fit, y_val = train_test_split(X_train, y_train, test_size=0.25, random_state=0,
                                                  stratify=y_train)
    scaler = StandardScaler().fit(X_fit)
    return {"X_fit": scaler.transform(X_fit), "y_fit": y_fit, "X_val": scaler.transform(X_val), "y_val": y_val,
            "X_test": scaler.transform(X_test), "y_test": y_test, "classes": np.unique(y)}


def sgd_objective(data: dict[str, np.ndarray], epochs: int) -> Callable[[], float]:
    from sklearn.linear_model import SGDClassifier

    def objective() -> float:
        eta0 = tune.float(1e-4, 1.0, log=True)
        alpha = tune.float(1e-6, 1e-1, log=True)
        state = tune.restore()  # PBT: this member's model, or the one it cloned; else None
        if state is None:
            model, epoch = SGDClassifier(loss="log_loss", learning_rate="constant", random_state=0), 0
        else:
            model, epoch = state
        model.set_params(eta0=eta0, alpha=alpha)  # this segment's values (PBT may have changed them)
        accuracy = 0.0
        if epoch:  # a member whose training is over still ends with a scored segment
            accuracy = model.score(data["X_val"], data["y_val"])
            tune.trial.set_user_attr("test_accuracy", model.score(data["X_test"], data["y_test"]))
        while epoch < epochs:
            model.partial_fit(data["X_fit"], data["y_fit"], classes=data["classes"])
            epoch += 1
            accuracy = model.score(data["X_val"], data["y_val"])
            tune.trial.set_user_attr("test_accuracy", model.score(data["X_test"], data["y_test"]))
            tune.checkpoint((model, epoch))
            tune.report(accuracy, epoch - 1)
        return accuracy
    return objective


def sgd_run(seed: int, arm: str, data: dict[str, np.ndarray], args: argparse.Namespace):
    options: dict[str, Any] = {"n_trials": args.population}
    if arm == "pbt":
        options = {"n_trials": 100 * args.population * args.epochs, "scheduler": "pbt",
                   "population": args.population, "interval": args.interval}
    run = start(sgd_objective(data, args.epochs), direction="maximize", seed=seed, sampler="random",
                storage="memory", report=False, name=f"sgd-{arm}-{seed}-{time.monotonic_ns()}", **options)
    run.wait()
    assert run.state == "finished", run.state
    epochs = sum(len(t.intermediate_values) for t in run.trials(states=None))
    best = run.best_trial
    return best.value, best.user_attrs["test_accuracy"], epochs, run


def part_sklearn(args: argparse.Namespace) -> str:
    data = digits()
    rows = []
    counts = []
    for seed in range(args.seeds):
        random_val, random_test, random_epochs, _ = sgd_run(seed, "random", data, args)
        pbt_val, pbt_test, pbt_epochs, run = sgd_run(seed, "pbt", data, args)
        counts.append(exploit_counts(run))
        rows.append((seed, random_val, pbt_val, random_test, pbt_test, random_epochs, pbt_epochs))
        log(f"sgd seed {seed}: validation random {random_val:.4f} pbt {pbt_val:.4f}; "
            f"test random {random_test:.4f} pbt {pbt_test:.4f}; epochs {random_epochs} / {pbt_epochs}")
    lines = [f"`SGDClassifier(loss='log_loss', learning_rate='constant')` on digits, knobs eta0 and alpha; random "
             f"search: {args.population} trials x {args.epochs} epochs; PBT: population {args.population}, "
             f"interval {args.interval}, {args.epochs} epochs per member, new members from the same seeded random "
             f"sampler; seeds 0-{args.seeds - 1}. Validation: {len(data['y_val'])} images, test: "
             f"{len(data['y_test'])}.", "",
             "| seed | epochs (random / PBT) | best validation acc., random | best validation acc., PBT | "
             "its test acc., random | its test acc., PBT |",
             "|---:|---:|---:|---:|---:|---:|"]
    for seed, random_val, pbt_val, random_test, pbt_test, random_epochs, pbt_epochs in rows:
        lines.append(f"| {seed} | {random_epochs} / {pbt_epochs} | {random_val:.4f} | {pbt_val:.4f} | "
                     f"{random_test:.4f} | {pbt_test:.4f} |")
    columns = list(zip(*rows))
    median = [statistics.median(c) for c in columns[1:5]]
    lines.append(f"| median | | {median[0]:.4f} | {median[1]:.4f} | {median[2]:.4f} | {median[3]:.4f} |")
    wins = sum(p > r for _, r, p, *_ in rows)
    ties = sum(p == r for _, r, p, *_ in rows)
    test_wins = sum(pt > rt for _, _, _, rt, pt, *_ in rows)
    test_ties = sum(pt == rt for _, _, _, rt, pt, *_ in rows)
    met = "yes" if median[1] >= median[0] else "no"
    continued = sum(c[0] for c in counts)
    exploited = sum(c[1] for c in counts)
    ahead = sum(c[2] for c in counts)
    lines += ["", f"Target, PBT's best validation accuracy at least random search's (median over seeds): "
                  f"{median[1]:.4f} against {median[0]:.4f}, met: {met}. PBT higher on {wins} seeds, equal on "
                  f"{ties}, of {len(rows)}; on the test set higher on {test_wins}, equal on {test_ties}.",
              f"PBT, all seeds: {continued} continued segments, {exploited} exploited; in {ahead} of those the "
              f"donor had trained further than the member that cloned it."]
    return "\n".join(lines)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--parts", nargs="+", default=["toy", "sklearn"], choices=["toy", "sklearn"])
    parser.add_argument("--toy-steps", type=int, default=TOY_STEPS)
    parser.add_argument("--population", type=int, default=8, help="sklearn: PBT's population, random search's trials")
    parser.add_argument("--epochs", type=int, default=30, help="sklearn: epochs per member / per trial")
    parser.add_argument("--interval", type=int, default=5, help="sklearn: epochs per PBT segment")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 seeds, fewer epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.population, args.epochs = 2, 4, 10

    log(f"start; {os.cpu_count()} cores; hpt_jupyter from {os.path.dirname(hpt_jupyter.__file__)}")
    began = time.perf_counter()
    tables = []
    if "toy" in args.parts:
        tables.append(part_toy(args))
    if "sklearn" in args.parts:
        tables.append(part_sklearn(args))
    log(f"done in {time.perf_counter() - began:.0f} s")
    print()
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
