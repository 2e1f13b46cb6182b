"""Which embedded store: ms/trial of Optuna's journal file and SQLite, bare and through hpt-jupyter.

Bare ``study.optimize`` and ``hpt_jupyter.start`` run the same seeded random-sampler study
(a trivial objective, so storage is the cost) on in-memory, journal-file and SQLite storage,
interleaved, in one process; both clocks include creating the study (ours also writes a lease
at the start and end of the run). Prints a markdown table.

    python benchmarks/storage.py [--trials 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from hpt_jupyter import start, tune
from hpt_jupyter.core.storage import resolve_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def bare(storage_spec: str, folder: str, n: int, seed: int) -> float:
    if storage_spec == "memory":
        storage = None
    elif storage_spec.endswith(".journal"):
        storage = JournalStorage(JournalFileBackend(os.path.join(folder, "bare-" + storage_spec)))
    else:
        storage = RDBStorage("sqlite:///" + os.path.join(folder, "bare-" + storage_spec))

    def objective(t):
        return t.suggest_float("x", -5, 5) ** 2 + t.suggest_int("y", 0, 10)

    t0 = time.perf_counter()  # both sides' clocks include creating the study
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), storage=storage,
                                study_name=f"bare-{seed}")
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - t0) / n * 1000


def ours(storage_spec: str, folder: str, n: int, seed: int) -> float:
    def objective():
        x = tune.float(-5, 5)
        y = tune.int(0, 10)
        return x ** 2 + y

    storage = storage_spec if storage_spec == "memory" else os.path.join(folder, "ours-" + storage_spec)
    resolve_storage(storage)  # opened (and cached) before the clock starts, as the bare run's is
    t0 = time.perf_counter()
    start(objective, n_trials=n, sampler="random", seed=seed, storage=storage, report=False,
          name=f"ours-{storage_spec}-{seed}").wait()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for spec in ("memory", "studies.journal", "studies.db"):
            for name, fn in (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare)):
                results.setdefault((spec, name), []).append(fn(spec, folder, args.trials, seed=r))
    print(f"\nRandom sampler, trivial objective, {args.trials} trials, median of {args.repeats} interleaved repeats.\n")
    print("| storage | bare Optuna ms/trial | hpt-jupyter ms/trial | added ms/trial | ratio |")
    print("|---|---:|---:|---:|---:|")
    labels = {"memory": "in-memory", "studies.journal": "journal file", "studies.db": "SQLite file"}
    for spec in ("memory", "studies.journal", "studies.db"):
        b = statistics.median(results[(spec, "bare")])
        o = statistics.median(results[(spec, "ours")])
        print(f"| {labels[spec]} | {b:.3f} | {o:.3f} | {o - b:+.3f} | {o / b:.3f} |")


if __name__ == "__main__":
    main()
