"""The quality benchmark (benchmarks/quality/): its known optima, its mixed space, its score, and
its ``--quick`` run, the one CI runs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quality import run as quality_run  # noqa: E402
from benchmarks.quality import tasks  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SYNTHETIC = [name for name, task in tasks.TASKS.items() if task.kind == "synthetic"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_a_synthetic_task_meets_its_known_optimum_and_no_random_point_beats_it(name):
    task = tasks.TASKS[name]
    value, declared = tasks.value_at(task, task.argmin)
    assert set(declared) == set(task.argmin)
    assert abs(value - task.optimum) < 1e-4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda trial: task.evaluate(task.declare(trial)), n_trials=1000)
    assert task.optimum - 1e-9 <= study.best_value
    assert study.best_value - task.optimum > 1e-3  # the optimum is not an accident of a flat function


def test_a_wrong_optimum_is_reported():
    wrong = dataclasses.replace(tasks.TASKS["branin"], optimum=0.3)
    assert any("f(argmin)" in p for p in tasks.optimum_problems(wrong, n_random=10))
    too_high = dataclasses.replace(tasks.TASKS["hartmann6"], optimum=-1.0, argmin={f"x{i}": 0.0 for i in range(6)})
    assert any("random point" in p for p in tasks.optimum_problems(too_high, n_random=200))


def test_the_mixed_task_declares_each_conditional_knob_in_its_own_branch_only():
    task = tasks.TASKS["mixed"]
    every_knob = {"x": 0.3, "n": 4, "shift": 0.1, "scale": 2.0}
    for kind, extra in tasks.MIXED_BRANCH_KNOB.items():
        _, declared = tasks.value_at(task, {"kind": kind, **every_knob})
        assert set(declared) == {"kind", "x", "n"} | ({extra} if extra else set())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: task.evaluate(task.declare(trial)), n_trials=60)
    seen = {t.params["kind"]: set(t.params) for t in study.trials}
    assert seen == {"quad": {"kind", "x", "n", "shift"}, "abs": {"kind", "x", "n", "scale"}, "flat": {"kind", "x", "n"}}


def test_the_normalised_score_is_0_at_random_search_and_100_at_the_optimum():
    score = quality_run.normalised_score
    assert score(best=5.0, optimum=1.0, random_mean=5.0) == pytest.approx(0.0)
    assert score(best=1.0, optimum=1.0, random_mean=5.0) == pytest.approx(100.0)
    assert score(best=3.0, optimum=1.0, random_mean=5.0) == pytest.approx(50.0)
    assert score(best=7.0, optimum=1.0, random_mean=5.0) == pytest.approx(-50.0)
    assert score(best=0.95, optimum=0.95, random_mean=0.90, direction="maximize") == pytest.approx(100.0)
    assert score(best=0.90, optimum=0.95, random_mean=0.90, direction="maximize") == pytest.approx(0.0)
    assert score(best=0.925, optimum=0.95, random_mean=0.90, direction="maximize") == pytest.approx(50.0)
    # random search always at the optimum: the optimum still scores 100, anything else 0
    assert score(best=0.95, optimum=0.95, random_mean=0.95, direction="maximize") == 100.0
    assert score(best=0.90, optimum=0.95, random_mean=0.95, direction="maximize") == 0.0


def test_ranks_share_ties_and_scores_are_normalised_per_budget():
    def result(sampler, seed, best):
        return {"task": "branin", "sampler": sampler, "seed": seed,
                "at": {"30": {"best": best, "sampler_ms": 1.0, "objective_ms": 2.0}}}

    results = [result("random", 0, 4.0), result("tpe", 0, 1.0), result("auto", 0, 1.0),
               result("random", 1, 2.0), result("tpe", 1, 3.0), result("auto", 1, 0.5)]
    info = {"branin": {"kind": "synthetic", "direction": "minimize", "optimum": 0.0}}
    summary = quality_run.summarise(results, info)
    cells = summary["tables"][0]["samplers"]
    assert summary["tables"][0]["random_mean_best"] == 3.0
    assert cells["auto"]["mean_rank"] == pytest.approx((1.5 + 1) / 2)
    assert cells["tpe"]["mean_rank"] == pytest.approx((1.5 + 3) / 2)
    assert cells["random"]["median_score"] == pytest.approx(0.0)
    assert cells["auto"]["median_score"] == pytest.approx(100 * (1 - (1.0 / 3 + 0.5 / 3) / 2))
    assert summary["targets"][0]["met"]
    # auto against tpe, paired by seed: ranks 1.5 vs 1.5, then 1 vs 3
    assert summary["auto_against"]["tpe"]["difference"] == pytest.approx(-1.0)
    assert summary["auto_against"]["tpe"]["low"] == pytest.approx(-2.0)
    assert summary["auto_against"]["tpe"]["high"] == pytest.approx(0.0)


def test_the_quick_suite_passes_and_names_every_task():
    done = subprocess.run([sys.executable, "benchmarks/quality/run.py", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for name in quality_run.QUICK["tasks"]:
        assert any(row.startswith(f"| {name} | 30 |") for row in rows), done.stdout
    assert "known optima of the synthetic tasks: **met**" in done.stdout
