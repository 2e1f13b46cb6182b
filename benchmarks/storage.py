"""Which embedded store: ms/trial of Optuna's journal file and SQLite, bare and through hpt-jupyter.

Bare ``study.optimize`` and ``hpt_jupyter.start`` run the same seeded random-sampler study
(a trivial objective, so storage is the cost) on in-memory, journal-file and SQLite storage,
interleaved, in one process; both clocks include creating the study (ours also writes a lease
at the start and end of the run). Prints a markdown table.

    python benchmarks/storage.py [--trials 200] [--repeats 3] [--postgres]

``--postgres`` adds a PostgreSQL server of its own on 127.0.0.1 (Debian's binaries, as the
tests start one: ``scripts/setup --for-tests`` installs them), where hpt-jupyter also records
each trial's heartbeat and waits out outages.
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
    elif "://" in storage_spec:
        storage = RDBStorage(storage_spec.replace("/ours", "/bare"))
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

    storage = storage_spec if storage_spec == "memory" or "://" in storage_spec \
        else os.path.join(folder, "ours-" + storage_spec)
    resolve_storage(storage)  # opened (and cached) before the clock starts, as the bare run's is
    t0 = time.perf_counter()
    start(objective, n_trials=n, sampler="random", seed=seed, storage=storage, report=False,
          name=f"ours-{storage_spec}-{seed}").wait()
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="also a PostgreSQL server of its own")
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    results: dict[tuple[str, str], list[float]] = {}
    specs = ["memory", "studies.journal", "studies.db"]
    labels = {"memory": "in-memory", "studies.journal": "journal file", "studies.db": "SQLite file"}
    server = None
    if args.postgres:
        import sys

        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from postgres import start_server

        server = start_server()
        server.new_database("bare")
        specs.append(server.new_database("ours"))
        labels[specs[-1]] = "PostgreSQL (local server)"
    try:
        run_all(args, specs, folder, results)
    finally:
        if server is not None:
            from postgres import stop_server

            stop_server(server)
    print(f"\nRandom sampler, trivial objective, {args.trials} trials, median of {args.repeats} interleaved repeats.\n")
    print("| storage | bare Optuna ms/trial | hpt-jupyter ms/trial | added ms/trial | ratio |")
    print("|---|---:|---:|---:|---:|")
    for spec in specs:
        b = statistics.median(results[(spec, "bare")])
        o = statistics.median(results[(spec, "ours")])
        print(f"| {labels[spec]} | {b:.3f} | {o:.3f} | {o - b:+.3f} | {o / b:.3f} |")


def run_all(args: argparse.Namespace, specs: list[str], folder: str,
            results: dict[tuple[str, str], list[float]]) -> None:
    for r in range(args.repeats):
        for spec in specs:
            for name, fn in (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare)):
                results.setdefault((spec, name), []).append(fn(spec, folder, args.trials, seed=r))


if __name__ == "__main__":
    main()
