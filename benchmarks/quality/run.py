"""Which sampler finds the best score: an offline suite in the spirit of bayesmark.

Every (task, sampler, budget, seed) is one study through hpt-jupyter's own API
(``hpt_jupyter.optimize``, the code path of ``%%tune``), in-memory storage, one trial at a time.
Tasks are in ``tasks.py``: synthetic functions with known optima and scikit-learn models
cross-validated on bundled datasets. Samplers are hpt-jupyter's names (``random``, ``tpe``,
``gp``, ``cmaes``, ``qmc``: Optuna's samplers with Optuna's defaults; ``auto``: ours) and
``autosampler-rule``, OptunaHub's AutoSampler rule (``samplers.py``).

Scores, per run: the best value within the budget, as bayesmark normalises it,
``100 * (1 - (best - optimum) / (random - optimum))`` for a minimised loss (values of maximised
tasks are negated first), where ``random`` is random search's mean best at that budget over the
seeds: 100 is the optimum, 0 random search's level. The optimum is known for synthetic tasks; for
scikit-learn tasks it is the best value any sampler found in any seed. Ranks: per seed, the
samplers ranked by best value (1 best, ties share their mean rank), averaged over the seeds.

``auto`` weighs the budget, so it runs once per budget; the other samplers run once at the
largest budget, and a smaller budget's result is the best of their first trials. The sampler's
own time per trial is the study's time minus the objective's evaluations (timed inside the
objective, since Optuna samples a trial's values at its first ``suggest_*``), over the trials.

Tasks come in two groups (``tasks.py``): ``design``, the tasks the design of ``auto`` was tuned on
(in-sample), and ``held-out``, fixed before that design and never used for it (out-of-sample).
The report has a section for each, with its own tables and targets. ``--tasks`` takes task names
or group names. The oracle of a task and budget is the better of ``gp`` and ``tpe`` by median
score; each sampler's gap to it (its median score minus the oracle's) is in the tables.

    python benchmarks/quality/run.py [--quick] [--seeds N] [--budgets 30 100] [--tasks ...]
        [--samplers ...] [--workers 2] [--json PATH] [--write-readme] [--from-json PATH ...]
        [--update PATH --samplers ...] [--wall SECONDS]

``--quick`` (CI): four tasks, budget 30, 3 seeds, random/tpe/auto; exits 1 if ``auto``'s mean rank
is worse than ``tpe``'s or a known optimum is wrong. The full run writes ``results.json`` here,
and with ``--write-readme`` its tables into benchmarks/README.md between the quality markers.
``--update PATH --samplers auto`` runs those samplers again into saved results, keeping the other
samplers' runs; ``--from-json A B ...`` renders saved results, several files together (each task
in one file only).

``--wall SECONDS``: the wall-time view, for the synthetic tasks among ``--tasks`` (trials of
microseconds, where the sampler's own time is the cost): one study per task, sampler and seed,
with ``timeout=SECONDS`` and no trial budget. A run scores its best value after SECONDS,
normalised against random search's mean best in the same time; the report gives each sampler's
median score and median number of trials. These results live under their own key (``wall``) of
the JSON, which ``--update`` and ``--from-json`` keep; ``--wall`` with ``--json PATH`` of an
existing file replaces that key only, and ``--update PATH --samplers auto --wall SECONDS`` runs
those samplers' wall-time studies again. The machine must be quiet for these runs: anything else
heavy running at the same time takes seconds from the studies, unevenly, and the scores with them.
Each worker process takes one core (``--workers``, at most the number of idle cores).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality import samplers as quality_samplers  # noqa: E402
from benchmarks.quality import tasks as quality_tasks  # noqa: E402

HERE = Path(__file__).resolve().parent
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
QUICK = {"tasks": ["branin", "hartmann6", "mixed", "svc_digits"], "budgets": [30], "seeds": 3,
         "samplers": ["random", "tpe", "auto"]}
FULL = {"tasks": list(quality_tasks.TASKS), "budgets": [30, 100], "seeds": 10,
        "samplers": list(quality_samplers.SAMPLERS)}
MODEL_SAMPLERS = ("gp", "auto", "autosampler-rule")  # the costly ones: scheduled first
SCORE_SLACK = 5.0  # target: auto's median score at most this many points below TPE's
ORACLE = ("gp", "tpe")  # the oracle of a task and budget: the better of these by median score
ORACLE_SLACK = 10.0  # target: auto within this many points of the oracle ...
ORACLE_SHARE = 0.8  # ... on at least this share of the task-budgets
WALL_SLACK = 1.0  # wall-time target: auto's median score at least TPE's less this many points
WALL_SAMPLERS = ["random", "tpe", "gp", "auto"]
WALL_SEEDS = 5
GROUP_TITLES = {"design": "Tasks the design was tuned on (in-sample)",
                "held-out": "Tasks the design never saw (out-of-sample)"}
TIME_SHARE = 0.10  # target: auto's own time per trial under this share of a scikit-learn trial's


# --- one study --------------------------------------------------------------------------

def _one_thread() -> None:
    """Each worker process computes on one core: two workers fill the machine, no more."""
    os.environ.update(ONE_THREAD)
    import warnings

    import optuna
    import torch

    torch.set_num_threads(1)
    # Samplers warn on every trial they sample a knob at random (CMA-ES and a categorical knob):
    # expected here, and the measure is the score.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")


def _study(task: quality_tasks.Task, sampler_name: str, seed: int, name: str,
           **budget: Any) -> tuple[list, float, quality_tasks.TimedObjective]:
    """One seeded study of ``task`` through ``hpt_jupyter.optimize``, in memory, then dropped:
    its trials, its wall seconds and its timed objective."""
    import hpt_jupyter
    import optuna

    objective = quality_tasks.TimedObjective(task)
    sampler = quality_samplers.make(sampler_name, seed)
    objective.begin()
    started = time.perf_counter()
    run = hpt_jupyter.optimize(objective, sampler=sampler, seed=seed, direction=task.direction,
                               storage="memory", report=False, name=name, **budget)
    wall = time.perf_counter() - started
    trials = run.trials()
    hpt_jupyter.tune.runs.pop(name, None)
    optuna.delete_study(study_name=run.study.study_name, storage=run.study._storage)
    return trials, wall, objective


def run_job(task_name: str, sampler_name: str, n_trials: int, seed: int, budgets: list[int]) -> dict[str, Any]:
    """One seeded study; its best value, sampler time and objective time at each budget."""
    task = quality_tasks.TASKS[task_name]
    trials, wall, objective = _study(task, sampler_name, seed, f"quality-{task_name}-{sampler_name}-{n_trials}-{seed}",
                                     n_trials=n_trials)
    pick = max if task.direction == "maximize" else min
    result: dict[str, Any] = {"task": task_name, "sampler": sampler_name, "n_trials": n_trials, "seed": seed,
                              "complete": len(trials), "wall_s": wall, "at": {}}
    for budget in budgets:
        within = [t.value for t in trials if t.number < budget]
        marks = objective.marks[:budget]
        if not within or not marks:
            continue
        elapsed, evaluating = marks[-1]
        result["at"][str(budget)] = {"best": pick(within), "sampler_ms": 1000 * (elapsed - evaluating) / len(marks),
                                     "objective_ms": 1000 * evaluating / len(marks)}
    return result


def run_wall_job(task_name: str, sampler_name: str, seconds: float, seed: int) -> dict[str, Any]:
    """One seeded study with a time limit and no trial budget: its best value and its trials."""
    task = quality_tasks.TASKS[task_name]
    trials, wall, _ = _study(task, sampler_name, seed, f"quality-wall-{task_name}-{sampler_name}-{seed}",
                             n_trials=None, timeout=seconds)
    pick = max if task.direction == "maximize" else min
    return {"task": task_name, "sampler": sampler_name, "seconds": seconds, "seed": seed,
            "best": pick(t.value for t in trials), "trials": len(trials), "wall_s": wall}


def plan(task_names: list[str], sampler_names: list[str], budgets: list[int], seeds: int) -> list[tuple]:
    """The studies to run, costliest first so that two workers finish together."""
    jobs = []
    for task in task_names:
        for sampler in sampler_names:
            for seed in range(seeds):
                if sampler in quality_samplers.BUDGET_AWARE:
                    jobs += [(task, sampler, budget, seed, [budget]) for budget in budgets]
                else:
                    jobs.append((task, sampler, max(budgets), seed, sorted(budgets)))
    sklearn = {name for name, task in quality_tasks.TASKS.items() if task.kind == "sklearn"}
    return sorted(jobs, key=lambda j: (j[1] in MODEL_SAMPLERS, j[2], j[0] in sklearn), reverse=True)


def wall_plan(task_names: list[str], sampler_names: list[str], seconds: float, seeds: int) -> list[tuple]:
    """The wall-time studies: one per synthetic task, sampler and seed."""
    return [(task, sampler, seconds, seed) for task in task_names if quality_tasks.TASKS[task].kind == "synthetic"
            for sampler in sampler_names for seed in range(seeds)]


def execute(jobs: list[tuple], workers: int, job: Any = run_job) -> list[dict[str, Any]]:
    """Run the studies on ``workers`` spawned processes (PyTorch and fork do not mix)."""
    os.environ.update(ONE_THREAD)
    results, started, step = [], time.perf_counter(), max(1, len(jobs) // 10)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        futures = [pool.submit(job, *args) for args in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            results.append(future.result())
            if done % step == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} studies, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return results


# --- scores -----------------------------------------------------------------------------

def normalised_score(best: float, optimum: float, random_mean: float, direction: str = "minimize") -> float:
    """Bayesmark's normalised score: 100 at the optimum, 0 at random search's mean best. If random
    search always reached the optimum, a run scores 100 at the optimum and 0 elsewhere."""
    sign = -1.0 if direction == "maximize" else 1.0
    gap, random_gap = sign * (best - optimum), sign * (random_mean - optimum)
    if random_gap <= 0:
        return 100.0 if gap <= 0 else 0.0
    return 100.0 * (1.0 - gap / random_gap)


def rows_of(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, sampler, budget, seed)."""
    return [{"task": r["task"], "sampler": r["sampler"], "budget": int(budget), "seed": r["seed"], **at}
            for r in results for budget, at in r["at"].items()]


def group_of(task: str, info: dict[str, Any]) -> str:
    """A task's group as saved, else as ``tasks.py`` has it (results saved before the groups)."""
    if info.get("group"):
        return info["group"]
    known = quality_tasks.TASKS.get(task)
    return known.group if known is not None else "design"


def log10_regret(best: float, optimum: float, direction: str = "minimize") -> float:
    """log10 of how far ``best`` is from the optimum; minus infinity at the optimum."""
    gap = (optimum - best) if direction == "maximize" else (best - optimum)
    return math.log10(gap) if gap > 0 else -math.inf


def summarise(results: list[dict[str, Any]], task_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scores, ranks and times per (task, budget); the overall figures, the oracle's and the
    targets, for all the tasks (``overall``, ``targets``...) and for each group (``groups``)."""
    rows = rows_of(results)
    tables, optima = score_tables(rows, task_info)
    summary = {"optima": optima, "tables": tables, **sum_up(tables, rows, task_info), "groups": {}}
    for group in quality_tasks.GROUPS:
        mine = [t for t in tables if t["group"] == group]
        if mine:
            names = {t["task"] for t in mine}
            summary["groups"][group] = sum_up(mine, [r for r in rows if r["task"] in names], task_info)
    return summary


def score_tables(rows: list[dict[str, Any]],
                 task_info: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One table per (task, budget): each sampler's scores, ranks, times and gap to the oracle;
    and the optimum each task was scored against."""
    from scipy.stats import rankdata

    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    sampler_order = [s for s in quality_samplers.SAMPLERS if any(r["sampler"] == s for r in rows)]
    tables, optima = [], {}
    for task in [t for t in task_info if t in by_task]:
        info, task_rows = task_info[task], by_task[task]
        maximise = info["direction"] == "maximize"
        found = [r["best"] for r in task_rows]
        optimum = info["optimum"] if info["optimum"] is not None else (max(found) if maximise else min(found))
        optima[task] = optimum
        for budget in sorted({r["budget"] for r in task_rows}):
            here = [r for r in task_rows if r["budget"] == budget]
            randoms = [r["best"] for r in here if r["sampler"] == "random"]
            if not randoms:
                raise SystemExit("random search is the yardstick of the scores: include --samplers random")
            random_mean = statistics.fmean(randoms)
            ranks: dict[str, list[float]] = defaultdict(list)
            for seed in sorted({r["seed"] for r in here}):
                group = [r for r in here if r["seed"] == seed]
                losses = [-r["best"] if maximise else r["best"] for r in group]
                for r, rank in zip(group, rankdata(losses)):
                    ranks[r["sampler"]].append(float(rank))
            cells = {}
            for sampler in sampler_order:
                mine = [r for r in here if r["sampler"] == sampler]
                if not mine:
                    continue
                scores = [normalised_score(r["best"], optimum, random_mean, info["direction"]) for r in mine]
                cells[sampler] = {"median_score": statistics.median(scores), "mean_score": statistics.fmean(scores),
                                  "mean_rank": statistics.fmean(ranks[sampler]), "seeds": len(mine),
                                  "sampler_ms": statistics.median(r["sampler_ms"] for r in mine),
                                  "objective_ms": statistics.median(r["objective_ms"] for r in mine),
                                  "scores": scores}
                if info["optimum"] is not None:
                    regret = statistics.median(log10_regret(r["best"], optimum, info["direction"]) for r in mine)
                    cells[sampler]["median_log10_regret"] = regret if math.isfinite(regret) else None
            table = {"task": task, "kind": info["kind"], "group": group_of(task, info), "budget": budget,
                     "random_mean_best": random_mean,
                     "objective_ms": statistics.median(r["objective_ms"] for r in here), "samplers": cells}
            rivals = {s: cells[s]["median_score"] for s in ORACLE if s in cells}
            if rivals:
                best = max(rivals, key=rivals.get)
                table["oracle"] = {"sampler": best, "median_score": rivals[best]}
                for cell in cells.values():
                    cell["oracle_gap"] = cell["median_score"] - rivals[best]
            tables.append(table)
    return tables, optima


def sum_up(tables: list[dict[str, Any]], rows: list[dict[str, Any]],
           task_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overall figures per sampler over ``tables``, the oracle's count, the targets, and the
    paired rank differences of ``auto`` over ``rows``."""
    overall = {}
    for sampler in [s for s in quality_samplers.SAMPLERS if any(s in t["samplers"] for t in tables)]:
        mine = [t["samplers"][sampler] for t in tables if sampler in t["samplers"]]
        scores = [score for cell in mine for score in cell["scores"]]
        gaps = [cell["oracle_gap"] for cell in mine if "oracle_gap" in cell]
        per_kind: dict[str, list[float]] = {"synthetic": [], "sklearn": []}
        for table in tables:
            if sampler in table["samplers"]:
                per_kind[table["kind"]].append(table["samplers"][sampler]["sampler_ms"])
        overall[sampler] = {"mean_rank": statistics.fmean(c["mean_rank"] for c in mine),
                            "median_score": statistics.median(scores), "mean_score": statistics.fmean(scores),
                            "median_oracle_gap": statistics.median(gaps) if gaps else None,
                            **{f"sampler_ms_{kind}": statistics.median(v) if v else None for kind, v in per_kind.items()}}
    oracle = oracle_summary(tables)
    return {"overall": overall, "oracle": oracle, "targets": targets(tables, overall, oracle),
            "auto_against": rank_differences(rows, task_info)}


def oracle_summary(tables: list[dict[str, Any]]) -> dict[str, Any]:
    """On how many task-budgets ``auto``'s median score is within ``ORACLE_SLACK`` points of the
    oracle's (the others listed), and where it is more than ``SCORE_SLACK`` points below TPE's."""
    judged = [t for t in tables if "auto" in t["samplers"] and "oracle" in t]
    off = [{"task": t["task"], "budget": t["budget"], "auto": t["samplers"]["auto"]["median_score"],
            "oracle": t["oracle"]["median_score"], "oracle_sampler": t["oracle"]["sampler"],
            "gap": t["samplers"]["auto"]["oracle_gap"]}
           for t in judged if t["samplers"]["auto"]["oracle_gap"] < -ORACLE_SLACK]
    paired = [t for t in tables if "auto" in t["samplers"] and "tpe" in t["samplers"]]
    against_tpe = [{"task": t["task"], "budget": t["budget"], "auto": t["samplers"]["auto"]["median_score"],
                    "tpe": t["samplers"]["tpe"]["median_score"],
                    "gap": t["samplers"]["auto"]["median_score"] - t["samplers"]["tpe"]["median_score"]}
                   for t in paired]
    return {"task_budgets": len(judged), "within": len(judged) - len(off), "off": off,
            "against_tpe": against_tpe, "below_tpe": [p for p in against_tpe if p["gap"] < -SCORE_SLACK]}


def rank_differences(rows: list[dict[str, Any]], task_info: dict[str, dict[str, Any]],
                     resamples: int = 2000) -> dict[str, dict[str, float]]:
    """How far ``auto``'s mean rank is from each other sampler's, paired by seed, with a 95%
    bootstrap interval (seeds resampled within each task and budget): whether a gap in the
    overall mean rank is more than the seeds' luck."""
    import random

    from scipy.stats import rankdata

    groups: dict[tuple, dict[str, float]] = defaultdict(dict)
    for row in rows:
        groups[(row["task"], row["budget"], row["seed"])][row["sampler"]] = row["best"]
    per_cell: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (task, budget, _), bests in groups.items():
        if "auto" not in bests:
            continue
        names = list(bests)
        maximise = task_info[task]["direction"] == "maximize"
        ranks = dict(zip(names, rankdata([-bests[n] if maximise else bests[n] for n in names])))
        for other in names:
            if other != "auto":
                per_cell[other][(task, budget)].append(float(ranks["auto"] - ranks[other]))
    found, rng = {}, random.Random(0)
    for other, cells in per_cell.items():
        lists = list(cells.values())
        boots = sorted(statistics.fmean(statistics.fmean(rng.choices(c, k=len(c))) for c in lists)
                       for _ in range(resamples))
        found[other] = {"difference": statistics.fmean(statistics.fmean(c) for c in lists),
                        "low": boots[int(0.025 * resamples)], "high": boots[int(0.975 * resamples) - 1]}
    return found


def targets(tables: list[dict[str, Any]], overall: dict[str, Any],
            oracle: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The issue's targets for ``auto``, each met or missed with its numbers."""
    if "auto" not in overall:
        return []
    oracle = oracle if oracle is not None else oracle_summary(tables)
    found = []
    others = {s: o["mean_rank"] for s, o in overall.items() if s != "auto"}
    if others:
        rival = min(others, key=others.get)
        found.append({"target": "auto has the best mean rank overall", "met": overall["auto"]["mean_rank"] <= others[rival],
                      "numbers": f"auto {overall['auto']['mean_rank']:.2f}, best other: {rival} {others[rival]:.2f}"})
    if oracle["against_tpe"]:
        worst = min(oracle["against_tpe"], key=lambda p: p["gap"])
        misses = [f"{p['task']}@{p['budget']} {p['gap']:+.1f}" for p in oracle["below_tpe"]]
        found.append({"target": f"auto's median score never more than {SCORE_SLACK:g} points below TPE's, on any task and budget",
                      "met": not misses,
                      "numbers": ("below by more: " + ", ".join(misses)) if misses else
                                 f"worst: {worst['task']}@{worst['budget']} {worst['gap']:+.1f}"})
    if oracle["task_budgets"]:
        n, within = oracle["task_budgets"], oracle["within"]
        off = ", ".join(f"{o['task']}@{o['budget']} {o['gap']:+.1f} ({o['oracle_sampler']} {_score(o['oracle'])})"
                        for o in oracle["off"])
        found.append({"target": f"auto within {ORACLE_SLACK:g} points of the better of GP and TPE on at least "
                                f"{ORACLE_SHARE:.0%} of task-budgets",
                      "met": within >= ORACLE_SHARE * n - 1e-9,
                      "numbers": f"{within} of {n} ({within / n:.0%})" + (f"; further: {off}" if off else "")})
    shares = [(t, t["samplers"]["auto"]["sampler_ms"] / t["samplers"]["auto"]["objective_ms"])
              for t in tables if t["kind"] == "sklearn" and "auto" in t["samplers"]]
    if shares:
        table, share = max(shares, key=lambda p: p[1])
        found.append({"target": f"auto's own time per trial under {TIME_SHARE:.0%} of a scikit-learn trial's",
                      "met": share < TIME_SHARE,
                      "numbers": "; ".join(f"{t['task']}@{t['budget']} {s:.1%}" for t, s in shares)
                                 + f" (highest {table['task']}@{table['budget']})"})
    return found


def wall_summary(wall: dict[str, Any]) -> dict[str, Any]:
    """The wall-time view: per task, each sampler's median score after the same seconds (against
    random search's mean best in that time) and median trials; overall; and the target per group."""
    by_task = defaultdict(list)
    for run in wall["runs"]:
        by_task[run["task"]].append(run)
    sampler_order = [s for s in quality_samplers.SAMPLERS if any(r["sampler"] == s for r in wall["runs"])]
    tables = []
    for task in [t for t in wall["tasks"] if t in by_task]:
        info, here = wall["tasks"][task], by_task[task]
        randoms = [r["best"] for r in here if r["sampler"] == "random"]
        if not randoms:
            raise SystemExit("random search is the yardstick of the scores: include --samplers random")
        random_mean = statistics.fmean(randoms)
        cells = {}
        for sampler in sampler_order:
            mine = [r for r in here if r["sampler"] == sampler]
            if mine:
                scores = [normalised_score(r["best"], info["optimum"], random_mean, info["direction"]) for r in mine]
                cells[sampler] = {"median_score": statistics.median(scores), "scores": scores,
                                  "median_trials": statistics.median(r["trials"] for r in mine)}
        tables.append({"task": task, "group": group_of(task, info), "random_mean_best": random_mean, "samplers": cells})
    overall = {s: {"median_score": statistics.median(x for t in tables if s in t["samplers"]
                                                     for x in t["samplers"][s]["scores"]),
                   "median_trials": statistics.median(r["trials"] for r in wall["runs"] if r["sampler"] == s)}
               for s in sampler_order}
    found = {}
    for group in quality_tasks.GROUPS:
        mine = [t for t in tables if t["group"] == group]
        if mine:
            found[group] = wall_target(mine, wall["seconds"])
    return {"seconds": wall["seconds"], "tables": tables, "overall": overall, "targets": found}


def wall_target(tables: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The wall-time target over ``tables``: auto's median score at least TPE's (less
    ``WALL_SLACK``) on every task; with the count of such tasks and the medians over all runs."""
    paired = [t for t in tables if "auto" in t["samplers"] and "tpe" in t["samplers"]]
    if not paired:
        return {}
    gaps = [(t["task"], t["samplers"]["auto"]["median_score"], t["samplers"]["tpe"]["median_score"]) for t in paired]
    below = [f"{task} auto {_score(a)}, tpe {_score(b)}" for task, a, b in gaps if a < b - WALL_SLACK]
    medians = {s: statistics.median(x for t in paired for x in t["samplers"][s]["scores"]) for s in ("auto", "tpe")}
    return {"target": f"auto's best score after {seconds:g} s is at least TPE's (within {WALL_SLACK:g} point)",
            "met": not below, "tasks": len(paired), "at_least": len(paired) - len(below),
            "median_auto": medians["auto"], "median_tpe": medians["tpe"],
            "numbers": f"{len(paired) - len(below)} of {len(paired)} tasks; overall median auto "
                       f"{_score(medians['auto'])}, tpe {_score(medians['tpe'])}"
                       + (f"; below: {', '.join(below)}" if below else "")}


# --- the report -------------------------------------------------------------------------

def machine_line(workers: int) -> str:
    versions = []
    for package, shown in (("optuna", "Optuna"), ("scikit-learn", "scikit-learn"), ("torch", "PyTorch")):
        try:
            versions.append(f"{shown} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, {', '.join(versions)}; "
            f"{workers} worker processes, one thread each")


def run_line(meta: dict[str, Any]) -> str:
    """What one file's runs were: seeds, budgets, studies, time, and the samplers run again."""
    reruns = "".join(f" {', '.join(r['samplers'])}: run again ({r['studies']} studies, {r['wall_s'] / 60:.1f} min)."
                     for r in meta.get("reruns", []))
    return (f"{meta['seeds']} seeds, budgets {', '.join(map(str, meta['budgets']))}; "
            f"{meta['studies']} studies in {meta['wall_s'] / 60:.1f} min.{reruns}")


def header_lines(meta: dict[str, Any]) -> list[str]:
    if "sources" not in meta:
        return [f"Machine: {meta['machine']}. {run_line(meta)}"]
    return [f"Results of {len(meta['sources'])} runs:", ""] + [
        f"- {len(source['tasks'])} tasks ({', '.join(source['tasks'])}). Machine: {source['machine']}. {run_line(source)}"
        for source in meta["sources"]]


def markdown(summary: dict[str, Any] | None, meta: dict[str, Any] | None, wall: dict[str, Any] | None = None) -> str:
    """The summary as Markdown: a section per group of tasks (per-task table, the oracle's count,
    log-regrets, overall table, targets), then the wall-time view if there is one."""
    lines: list[str] = []
    if summary is not None and meta is not None and summary["tables"]:
        lines += header_lines(meta) + [
            "", "Each cell: median normalised score (100 = optimum, 0 = random search's mean best), in brackets "
            "its gap to the oracle (the better of `gp` and `tpe` by median score on that task and budget) / "
            "mean rank (1 = best of the samplers) / the sampler's own ms per trial."]
        for group, sums in summary["groups"].items():
            lines += ["", f"### {GROUP_TITLES[group]}", ""]
            lines += group_markdown([t for t in summary["tables"] if t["group"] == group], sums, meta)
        lines += ["", "Every task:", "",
                  f"- known optima of the synthetic tasks: **{'met' if not meta['optima_problems'] else 'MISSED'}**"
                  + "".join(f"; {p}" for p in meta["optima_problems"])]
        sklearn = [f"{task} {value:.4f}" for task, value in summary["optima"].items()
                   if meta["tasks"][task]["optimum"] is None]
        lines += ["", "Notes:", "",
                  "- Samplers other than `auto` ran once with the largest budget; their result at a smaller budget is "
                  "the best of their first trials. `auto` weighs the budget, so it ran once per budget.",
                  "- The optimum of a scikit-learn task is the best value any sampler found in any seed"
                  + (f" ({', '.join(sklearn)})." if sklearn else "."),
                  "- Where random search comes close to the best value (accuracies in steps of one sample, flat "
                  "optima), the normalising gap is small and a near miss scores far below 0: the ranks do not swing so.",
                  "- Sampler time: the study's time minus the objective's evaluations, per trial (it includes "
                  "hpt-jupyter's loop, well under a millisecond). Times are medians over the seeds."]
    if wall is not None and wall.get("runs"):
        lines += ([""] if lines else []) + wall_markdown(wall)
    return "\n".join(lines) + "\n"


def group_markdown(tables: list[dict[str, Any]], sums: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """One group's tables and targets."""
    samplers = list(sums["overall"])
    lines = ["| task | budget | objective ms/trial | oracle | " + " | ".join(samplers) + " |",
             "|---|---:|---:|---|" + "---:|" * len(samplers)]
    for table in tables:
        cells = []
        for sampler in samplers:
            c = table["samplers"].get(sampler)
            gap = "" if c is None or "oracle_gap" not in c else f" ({_score(c['oracle_gap'], signed=True)})"
            cells.append("-" if c is None else f"{_score(c['median_score'])}{gap} / {c['mean_rank']:.2f} / {_ms(c['sampler_ms'])}")
        oracle = table.get("oracle")
        lines.append(f"| {table['task']} | {table['budget']} | {_ms(table['objective_ms'])} | "
                     + (f"{oracle['sampler']} {_score(oracle['median_score'])}" if oracle else "-") + " | "
                     + " | ".join(cells) + " |")
    o = sums["oracle"]
    if o["task_budgets"]:
        below = ", ".join(f"{p['task']}@{p['budget']} auto {_score(p['auto'])}, tpe {_score(p['tpe'])} "
                          f"({_score(p['gap'], signed=True)})" for p in o["below_tpe"])
        lines += ["", f"`auto` is within {ORACLE_SLACK:g} points of the oracle on {o['within']} of {o['task_budgets']} "
                      f"task-budgets, and more than {SCORE_SLACK:g} points below `tpe` on {len(o['below_tpe'])} of "
                      f"{len(o['against_tpe'])}" + (f": {below}." if below else ".")]
    synthetic = [t for t in tables if any("median_log10_regret" in c for c in t["samplers"].values())]
    if synthetic:
        lines += ["", "Synthetic tasks: median over the seeds of log10(best - optimum) (lower is better; "
                      "`opt`: at the optimum in most seeds):", "",
                  "| task | budget | " + " | ".join(samplers) + " |", "|---|---:|" + "---:|" * len(samplers)]
        for table in synthetic:
            cells = []
            for sampler in samplers:
                c = table["samplers"].get(sampler)
                cells.append("-" if c is None else "opt" if c["median_log10_regret"] is None
                             else f"{c['median_log10_regret']:.2f}")
            lines.append(f"| {table['task']} | {table['budget']} | " + " | ".join(cells) + " |")
    lines += ["", "Overall (mean rank: averaged over tasks and budgets; median score: over every task, budget and seed; "
                  "gap to the oracle: median over tasks and budgets):", "",
              "| sampler | mean rank | median score | mean score | gap to oracle | ms/trial, synthetic | ms/trial, scikit-learn |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for sampler in sorted(samplers, key=lambda s: sums["overall"][s]["mean_rank"]):
        o = sums["overall"][sampler]
        gap = "-" if o.get("median_oracle_gap") is None else _score(o["median_oracle_gap"], signed=True)
        lines.append(f"| {sampler} | {o['mean_rank']:.2f} | {_score(o['median_score'])} | {_score(o['mean_score'])} | "
                     f"{gap} | {_ms(o['sampler_ms_synthetic'])} | {_ms(o['sampler_ms_sklearn'])} |")
    against = sums.get("auto_against", {})
    if against:
        lines += ["", "`auto`'s mean rank minus each other sampler's, paired by seed (negative: `auto` ranks "
                  "better), with a 95% bootstrap interval over the seeds:", "",
                  "| against | difference | 95% interval |", "|---|---:|---|"]
        for other, d in sorted(against.items(), key=lambda item: item[1]["difference"], reverse=True):
            lines.append(f"| {other} | {d['difference']:+.2f} | {d['low']:+.2f} to {d['high']:+.2f} |")
    lines += ["", "Targets" + (" (decided by the full run; --quick fails only on auto's rank against tpe's "
                               "and on the optima):" if meta.get("mode") == "quick" else ":"), ""]
    lines += [f"- {t['target']}: **{'met' if t['met'] else 'MISSED'}** ({t['numbers']})" for t in sums["targets"]]
    return lines


def wall_markdown(wall: dict[str, Any]) -> list[str]:
    """The wall-time view: scores after the same seconds, trials, and the target per group."""
    found = wall_summary(wall)
    samplers = list(found["overall"])
    sources = wall.get("sources", [wall])
    lines = [f"### Wall time: {wall['seconds']:g} s a study, synthetic tasks", ""]
    for source in sources:
        reruns = "".join(f" {', '.join(r['samplers'])}: run again ({r['studies']} studies, {r['wall_s'] / 60:.1f} min)."
                         for r in source.get("reruns", []))
        lines.append(f"Machine: {source['machine']}. {source['seeds']} seeds, {len(source['tasks'])} tasks; "
                     f"{source['studies']} studies in {source['wall_s'] / 60:.1f} min.{reruns}")
    lines += ["", f"Each cell: median normalised score after {wall['seconds']:g} s (100 = optimum, 0 = random search's "
                  "mean best in the same time) / median number of trials.", "",
              "| task | group | " + " | ".join(samplers) + " |", "|---|---|" + "---:|" * len(samplers)]
    for table in found["tables"]:
        cells = [f"{_score(c['median_score'])} / {c['median_trials']:.0f}" if (c := table["samplers"].get(s)) else "-"
                 for s in samplers]
        lines.append(f"| {table['task']} | {table['group']} | " + " | ".join(cells) + " |")
    lines += ["", "| sampler | median score | median trials |", "|---|---:|---:|"]
    lines += [f"| {s} | {_score(o['median_score'])} | {o['median_trials']:.0f} |" for s, o in found["overall"].items()]
    lines += ["", "Targets:", ""]
    lines += [f"- {GROUP_TITLES[group]}: {t['target']}: **{'met' if t['met'] else 'MISSED'}** ({t['numbers']})"
              for group, t in found["targets"].items() if t]
    return lines


def _score(value: float, signed: bool = False) -> str:
    return f"{round(value, 1) + 0.0:{'+' if signed else ''}.1f}"  # no "-0.0"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def write_readme(text: str, path: Path = README) -> None:
    """Replace what stands between the quality markers in benchmarks/README.md."""
    content = path.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{path.name} has no {BEGIN} ... {END} markers")
    head, rest = content.split(BEGIN, 1)
    path.write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])


# --- the command ------------------------------------------------------------------------

def task_names_of(chosen: list[str]) -> list[str]:
    """Task names for ``--tasks``: a group's name stands for its tasks; each task once, in order."""
    names: list[str] = []
    for name in chosen:
        group = [n for n, t in quality_tasks.TASKS.items() if t.group == name] if name in quality_tasks.GROUPS else [name]
        names += [n for n in group if n not in names]
    return names


def task_meta(task_names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What the report needs to know of each task, saved with the results."""
    chosen = set(task_names)
    return {name: {"kind": t.kind, "direction": t.direction, "optimum": t.optimum, "about": t.about, "group": t.group}
            for name, t in quality_tasks.TASKS.items() if name in chosen}


def merge_saved(saved: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
    """The meta, runs and wall-time results of several saved files as one (a task in one file only)."""
    if len(saved) == 1:
        return saved[0].get("meta"), saved[0].get("runs", []), saved[0].get("wall")
    sources = [one["meta"] for one in saved if one.get("meta")]
    walls = [one["wall"] for one in saved if one.get("wall")]
    meta = sources[0] if len(sources) == 1 else None
    if len(sources) > 1:
        meta = {"sources": sources, "mode": "full", "tasks": _union(source["tasks"] for source in sources),
                "optima_problems": sorted({p for source in sources for p in source["optima_problems"]})}
    wall = None
    if walls:
        if len({w["seconds"] for w in walls}) > 1:
            raise SystemExit("the wall-time results of these files ran for different seconds: render them apart")
        wall = {"seconds": walls[0]["seconds"], "sources": walls, "tasks": _union(w["tasks"] for w in walls),
                "runs": [r for w in walls for r in w["runs"]]}
    return meta, [r for one in saved for r in one.get("runs", [])], wall


def _union(task_dicts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    union: dict[str, Any] = {}
    for tasks in task_dicts:
        twice = sorted(set(union) & set(tasks))
        if twice:
            raise SystemExit(f"{', '.join(twice)}: in more than one file; render those files apart")
        union.update(tasks)
    return union


def run_wall(task_names: list[str], sampler_names: list[str], seconds: float, seeds: int,
             workers: int) -> tuple[list[dict[str, Any]], int, float]:
    """The wall-time studies: their results, how many there were, and the seconds they took."""
    jobs = wall_plan(task_names, sampler_names, seconds, seeds)
    if not jobs:
        raise SystemExit("--wall takes synthetic tasks only, and --tasks names none")
    print(f"{len(jobs)} wall-time studies of {seconds:g} s, {workers} workers: about "
          f"{len(jobs) * seconds / workers / 60:.0f} min; keep the machine quiet", file=sys.stderr, flush=True)
    started = time.perf_counter()
    return execute(jobs, workers, run_wall_job), len(jobs), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI subset; exit 1 if auto ranks below tpe")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--budgets", type=int, nargs="+")
    parser.add_argument("--tasks", nargs="+", choices=[*quality_tasks.TASKS, *quality_tasks.GROUPS],
                        metavar="TASK", help="task names, or group names (design, held-out) for their tasks")
    parser.add_argument("--samplers", nargs="+", choices=list(quality_samplers.SAMPLERS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="where to write the results (full mode: results.json here)")
    parser.add_argument("--write-readme", action="store_true", help="put the tables into benchmarks/README.md")
    parser.add_argument("--from-json", type=Path, nargs="+", help="render the Markdown of saved results (several "
                        "files together), run nothing")
    parser.add_argument("--update", type=Path, help="saved results in which to run --samplers again (after a "
                        "change to them), keeping the other samplers' runs")
    parser.add_argument("--wall", type=float, metavar="SECONDS", help="the wall-time view: synthetic tasks, "
                        "SECONDS a study and no trial budget (on a quiet machine)")
    args = parser.parse_args(argv)
    if args.quick and args.write_readme:
        parser.error("--write-readme takes the full run's tables, not --quick's")
    if args.wall is not None and (args.quick or args.budgets or args.from_json):
        parser.error("--wall runs for a time, not a budget: not with --quick, --budgets or --from-json")
    if args.wall is not None and args.wall <= 0:
        parser.error("--wall takes a positive number of seconds")

    wall: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    if args.from_json:
        meta, results, wall = merge_saved([json.loads(path.read_text()) for path in args.from_json])
    elif args.update:
        if not args.samplers:
            parser.error("--update needs --samplers: the ones to run again")
        saved = json.loads(args.update.read_text())
        meta, results, wall = saved.get("meta"), saved.get("runs", []), saved.get("wall")
        if args.wall is not None:
            if wall is None or wall["seconds"] != args.wall:
                parser.error(f"{args.update} holds no wall-time results of {args.wall:g} s to update")
            fresh, studies, wall_s = run_wall(list(wall["tasks"]), args.samplers, args.wall, wall["seeds"], args.workers)
            wall["runs"] = [r for r in wall["runs"] if r["sampler"] not in args.samplers] + fresh
            wall.setdefault("reruns", []).append({"samplers": args.samplers, "studies": studies, "wall_s": wall_s})
        else:
            if meta is None:
                parser.error(f"{args.update} holds wall-time results only: add --wall SECONDS")
            jobs = plan(list(meta["tasks"]), args.samplers, meta["budgets"], meta["seeds"])
            print(f"{len(jobs)} studies again: {', '.join(args.samplers)}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            fresh = execute(jobs, args.workers)
            results = [r for r in results if r["sampler"] not in args.samplers] + fresh
            meta.setdefault("reruns", []).append({"samplers": args.samplers, "studies": len(jobs),
                                                  "wall_s": time.perf_counter() - started})
        args.json = args.json or args.update
    elif args.wall is not None:
        task_names = task_names_of(args.tasks or FULL["tasks"])
        sampler_names = args.samplers or WALL_SAMPLERS
        if "random" not in sampler_names:
            sampler_names = ["random", *sampler_names]  # the yardstick of the scores
        seeds = args.seeds or WALL_SEEDS
        fresh, studies, wall_s = run_wall(task_names, sampler_names, args.wall, seeds, args.workers)
        wall = {"seconds": args.wall, "machine": machine_line(args.workers), "seeds": seeds, "studies": studies,
                "wall_s": wall_s, "tasks": task_meta(t for t in task_names if quality_tasks.TASKS[t].kind == "synthetic"),
                "runs": fresh}
        if args.json is not None and args.json.exists():  # the score runs of that file stay
            saved = json.loads(args.json.read_text())
            meta, results = saved.get("meta"), saved.get("runs", [])
    else:
        mode = QUICK if args.quick else FULL
        task_names = task_names_of(args.tasks or mode["tasks"])
        sampler_names = args.samplers or mode["samplers"]
        if "random" not in sampler_names:
            sampler_names = ["random", *sampler_names]  # the yardstick of the scores
        budgets, seeds = sorted(args.budgets or mode["budgets"]), args.seeds or mode["seeds"]
        problems = quality_tasks.check_optima()
        jobs = plan(task_names, sampler_names, budgets, seeds)
        print(f"{len(jobs)} studies: {len(task_names)} tasks x {len(sampler_names)} samplers x {seeds} seeds, "
              f"budgets {budgets}, {args.workers} workers", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results = execute(jobs, args.workers)
        meta = {"machine": machine_line(args.workers), "mode": "quick" if args.quick else "full", "seeds": seeds,
                "budgets": budgets, "studies": len(jobs), "wall_s": time.perf_counter() - started,
                "optima_problems": problems, "tasks": task_meta(task_names)}
    summary = summarise(results, meta["tasks"]) if meta is not None and results else None
    text = markdown(summary, meta, wall)
    print(text)
    default = None if args.quick or args.from_json or args.wall is not None else HERE / "results.json"
    json_path = args.json or default
    if json_path is not None:
        content: dict[str, Any] = {}
        if meta is not None:
            content |= {"meta": meta, "summary": summary, "runs": results}
        if wall is not None:
            content |= {"wall": wall, "wall_summary": wall_summary(wall)}
        json_path.write_text(json.dumps(content, indent=1) + "\n")
    if args.write_readme:
        write_readme(text)

    failures = [f"known optimum: {p}" for p in (meta or {}).get("optima_problems", [])]
    overall = summary["overall"] if summary is not None else {}
    if args.quick and "auto" in overall and "tpe" in overall \
            and overall["auto"]["mean_rank"] > overall["tpe"]["mean_rank"] + 1e-9:
        failures.append(f"auto's mean rank {overall['auto']['mean_rank']:.2f} is worse than tpe's "
                        f"{overall['tpe']['mean_rank']:.2f}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    from benchmarks.quality.run import main as quality_main  # workers unpickle run_job from this module

    sys.exit(quality_main())
