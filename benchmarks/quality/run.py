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

    python benchmarks/quality/run.py [--quick] [--seeds N] [--budgets 30 100] [--tasks ...]
        [--samplers ...] [--workers 2] [--json PATH] [--write-readme] [--from-json PATH]

``--quick`` (CI): four tasks, budget 30, 3 seeds, random/tpe/auto; exits 1 if ``auto``'s mean rank
is worse than ``tpe``'s or a known optimum is wrong. The full run writes ``results.json`` here,
and with ``--write-readme`` its tables into benchmarks/README.md between the quality markers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
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


def run_job(task_name: str, sampler_name: str, n_trials: int, seed: int, budgets: list[int]) -> dict[str, Any]:
    """One seeded study; its best value, sampler time and objective time at each budget."""
    import hpt_jupyter
    import optuna

    task = quality_tasks.TASKS[task_name]
    objective = quality_tasks.TimedObjective(task)
    name = f"quality-{task_name}-{sampler_name}-{n_trials}-{seed}"
    sampler = quality_samplers.make(sampler_name, seed)
    objective.begin()
    started = time.perf_counter()
    run = hpt_jupyter.optimize(objective, n_trials=n_trials, sampler=sampler, seed=seed, direction=task.direction,
                               storage="memory", report=False, name=name)
    wall = time.perf_counter() - started
    trials = run.trials()
    hpt_jupyter.tune.runs.pop(name, None)
    optuna.delete_study(study_name=run.study.study_name, storage=run.study._storage)
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


def execute(jobs: list[tuple], workers: int) -> list[dict[str, Any]]:
    """Run the studies on ``workers`` spawned processes (PyTorch and fork do not mix)."""
    os.environ.update(ONE_THREAD)
    results, started, step = [], time.perf_counter(), max(1, len(jobs) // 10)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        futures = [pool.submit(run_job, *job) for job in jobs]
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


def summarise(results: list[dict[str, Any]], task_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scores, ranks and times per (task, budget) and overall, and the targets."""
    from scipy.stats import rankdata

    rows = rows_of(results)
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    sampler_order = [s for s in quality_samplers.SAMPLERS if any(r["sampler"] == s for r in rows)]
    tables, optima = [], {}
    all_scores: dict[str, list[float]] = defaultdict(list)
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
                all_scores[sampler] += scores
                cells[sampler] = {"median_score": statistics.median(scores), "mean_score": statistics.fmean(scores),
                                  "mean_rank": statistics.fmean(ranks[sampler]), "seeds": len(mine),
                                  "sampler_ms": statistics.median(r["sampler_ms"] for r in mine),
                                  "objective_ms": statistics.median(r["objective_ms"] for r in mine)}
            tables.append({"task": task, "kind": info["kind"], "budget": budget, "random_mean_best": random_mean,
                           "objective_ms": statistics.median(r["objective_ms"] for r in here), "samplers": cells})
    overall = {}
    for sampler in sampler_order:
        mine = [t["samplers"][sampler] for t in tables if sampler in t["samplers"]]
        per_kind: dict[str, list[float]] = {"synthetic": [], "sklearn": []}
        for table in tables:
            if sampler in table["samplers"]:
                per_kind[table["kind"]].append(table["samplers"][sampler]["sampler_ms"])
        overall[sampler] = {"mean_rank": statistics.fmean(c["mean_rank"] for c in mine),
                            "median_score": statistics.median(all_scores[sampler]),
                            "mean_score": statistics.fmean(all_scores[sampler]),
                            **{f"sampler_ms_{kind}": statistics.median(v) if v else None for kind, v in per_kind.items()}}
    return {"optima": optima, "tables": tables, "overall": overall, "targets": targets(tables, overall),
            "auto_against": rank_differences(rows, task_info)}


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


def targets(tables: list[dict[str, Any]], overall: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for ``auto``, each met or missed with its numbers."""
    if "auto" not in overall:
        return []
    found = []
    others = {s: o["mean_rank"] for s, o in overall.items() if s != "auto"}
    if others:
        rival = min(others, key=others.get)
        found.append({"target": "auto has the best mean rank overall", "met": overall["auto"]["mean_rank"] <= others[rival],
                      "numbers": f"auto {overall['auto']['mean_rank']:.2f}, best other: {rival} {others[rival]:.2f}"})
    pairs = [(t, t["samplers"]["auto"]["median_score"] - t["samplers"]["tpe"]["median_score"])
             for t in tables if "auto" in t["samplers"] and "tpe" in t["samplers"]]
    if pairs:
        worst_table, worst = min(pairs, key=lambda p: p[1])
        misses = [f"{t['task']}@{t['budget']} {gap:+.1f}" for t, gap in pairs if gap < -SCORE_SLACK]
        found.append({"target": f"auto's median score never more than {SCORE_SLACK:g} points below TPE's, on any task and budget",
                      "met": not misses,
                      "numbers": ("below by more: " + ", ".join(misses)) if misses else
                                 f"worst: {worst_table['task']}@{worst_table['budget']} {worst:+.1f}"})
    shares = [(t, t["samplers"]["auto"]["sampler_ms"] / t["samplers"]["auto"]["objective_ms"])
              for t in tables if t["kind"] == "sklearn" and "auto" in t["samplers"]]
    if shares:
        table, share = max(shares, key=lambda p: p[1])
        found.append({"target": f"auto's own time per trial under {TIME_SHARE:.0%} of a scikit-learn trial's",
                      "met": share < TIME_SHARE,
                      "numbers": "; ".join(f"{t['task']}@{t['budget']} {s:.1%}" for t, s in shares)
                                 + f" (highest {table['task']}@{table['budget']})"})
    return found


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


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The summary as Markdown: per-task table, overall table, targets."""
    samplers = list(summary["overall"])
    reruns = "".join(f" {', '.join(r['samplers'])}: run again ({r['studies']} studies, {r['wall_s'] / 60:.1f} min)."
                     for r in meta.get("reruns", []))
    lines = [f"Machine: {meta['machine']}. {meta['seeds']} seeds, budgets {', '.join(map(str, meta['budgets']))}; "
             f"{meta['studies']} studies in {meta['wall_s'] / 60:.1f} min.{reruns}", "",
             "Each cell: median normalised score (100 = optimum, 0 = random search's mean best) / mean rank "
             "(1 = best of the samplers) / the sampler's own ms per trial.", "",
             "| task | budget | objective ms/trial | " + " | ".join(samplers) + " |",
             "|---|---:|---:|" + "---:|" * len(samplers)]
    for table in summary["tables"]:
        cells = []
        for sampler in samplers:
            c = table["samplers"].get(sampler)
            cells.append("-" if c is None else f"{_score(c['median_score'])} / {c['mean_rank']:.2f} / {_ms(c['sampler_ms'])}")
        lines.append(f"| {table['task']} | {table['budget']} | {_ms(table['objective_ms'])} | " + " | ".join(cells) + " |")
    lines += ["", "Overall (mean rank: averaged over tasks and budgets; median score: over every task, budget and seed):", "",
              "| sampler | mean rank | median score | mean score | ms/trial, synthetic | ms/trial, scikit-learn |",
              "|---|---:|---:|---:|---:|---:|"]
    for sampler in sorted(samplers, key=lambda s: summary["overall"][s]["mean_rank"]):
        o = summary["overall"][sampler]
        lines.append(f"| {sampler} | {o['mean_rank']:.2f} | {_score(o['median_score'])} | {_score(o['mean_score'])} | "
                     f"{_ms(o['sampler_ms_synthetic'])} | {_ms(o['sampler_ms_sklearn'])} |")
    against = summary.get("auto_against", {})
    if against:
        lines += ["", "`auto`'s mean rank minus each other sampler's, paired by seed (negative: `auto` ranks "
                  "better), with a 95% bootstrap interval over the seeds:", "",
                  "| against | difference | 95% interval |", "|---|---:|---|"]
        for other, d in sorted(against.items(), key=lambda item: item[1]["difference"], reverse=True):
            lines.append(f"| {other} | {d['difference']:+.2f} | {d['low']:+.2f} to {d['high']:+.2f} |")
    lines += ["", "Targets" + (" (decided by the full run; --quick fails only on auto's rank against tpe's "
                               "and on the optima):" if meta["mode"] == "quick" else ":"), ""]
    lines += [f"- {t['target']}: **{'met' if t['met'] else 'MISSED'}** ({t['numbers']})" for t in summary["targets"]]
    lines.append(f"- known optima of the synthetic tasks: **{'met' if not meta['optima_problems'] else 'MISSED'}**"
                 + "".join(f"; {p}" for p in meta["optima_problems"]))
    sklearn = [f"{task} {value:.4f}" for task, value in summary["optima"].items() if meta["tasks"][task]["optimum"] is None]
    lines += ["", "Notes:", "",
              "- Samplers other than `auto` ran once with the largest budget; their result at a smaller budget is "
              "the best of their first trials. `auto` weighs the budget, so it ran once per budget.",
              "- The optimum of a scikit-learn task is the best value any sampler found in any seed"
              + (f" ({', '.join(sklearn)})." if sklearn else "."),
              "- Where random search comes close to the best value (accuracies in steps of one sample, flat "
              "optima), the normalising gap is small and a near miss scores far below 0: the ranks do not swing so.",
              "- Sampler time: the study's time minus the objective's evaluations, per trial (it includes "
              "hpt-jupyter's loop, well under a millisecond). Times are medians over the seeds."]
    return "\n".join(lines) + "\n"


def _score(value: float) -> str:
    return f"{round(value, 1) + 0.0:.1f}"  # no "-0.0"


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

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI subset; exit 1 if auto ranks below tpe")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--budgets", type=int, nargs="+")
    parser.add_argument("--tasks", nargs="+", choices=list(quality_tasks.TASKS))
    parser.add_argument("--samplers", nargs="+", choices=list(quality_samplers.SAMPLERS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="where to write the results (full mode: results.json here)")
    parser.add_argument("--write-readme", action="store_true", help="put the tables into benchmarks/README.md")
    parser.add_argument("--from-json", type=Path, help="render the Markdown of saved results, run nothing")
    parser.add_argument("--update", type=Path, help="saved results in which to run --samplers again (after a "
                        "change to them), keeping the other samplers' runs")
    args = parser.parse_args(argv)
    if args.quick and args.write_readme:
        parser.error("--write-readme takes the full run's tables, not --quick's")

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        meta, results = saved["meta"], saved["runs"]
    elif args.update:
        if not args.samplers:
            parser.error("--update needs --samplers: the ones to run again")
        saved = json.loads(args.update.read_text())
        meta = saved["meta"]
        seeds, budgets = meta["seeds"], meta["budgets"]
        jobs = plan(list(meta["tasks"]), args.samplers, budgets, seeds)
        print(f"{len(jobs)} studies again: {', '.join(args.samplers)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        fresh = execute(jobs, args.workers)
        results = [r for r in saved["runs"] if r["sampler"] not in args.samplers] + fresh
        meta.setdefault("reruns", []).append({"samplers": args.samplers, "studies": len(jobs),
                                              "wall_s": time.perf_counter() - started})
        args.json = args.json or args.update
    else:
        mode = QUICK if args.quick else FULL
        task_names = args.tasks or mode["tasks"]
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
                "optima_problems": problems,
                "tasks": {name: {"kind": t.kind, "direction": t.direction, "optimum": t.optimum, "about": t.about}
                          for name, t in quality_tasks.TASKS.items() if name in task_names}}
    summary = summarise(results, meta["tasks"])
    text = markdown(summary, meta)
    print(text)
    json_path = args.json or (None if args.quick or args.from_json else HERE / "results.json")
    if json_path is not None:
        json_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": results}, indent=1) + "\n")
    if args.write_readme:
        write_readme(text)

    failures = [f"known optimum: {p}" for p in meta["optima_problems"]]
    overall = summary["overall"]
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
