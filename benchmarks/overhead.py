"""Per-trial overhead of hpt-jupyter against bare ``optuna.Study.optimize``.

One real kernel runs, interleaved, the same seeded TPE study three ways: bare
``study.optimize``, ``hpt_jupyter.start`` (the Python API) and a ``%%tune`` cell, with
200 and 1,000 trials of a trivial objective and of a 10 ms one, all on in-memory storage
so that only our own cost differs. Prints a markdown table: ms/trial, ms/trial added,
ratio to bare, and whether the trials' parameters are identical to the bare run's.

    python benchmarks/overhead.py [--repeats 3] [--sizes 200 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kernel import Kernel  # noqa: E402  (the tests' jupyter_client driver)

SETUP = '''
%load_ext hpt_jupyter
import time, optuna
from hpt_jupyter import start, tune
optuna.logging.set_verbosity(optuna.logging.WARNING)

def make_sampler(kind, seed):
    return optuna.samplers.TPESampler(seed=seed) if kind == "tpe" else optuna.samplers.RandomSampler(seed=seed)

def bench_bare(n, sleep, seed, kind="tpe"):
    def objective(t):
        x = t.suggest_float("x", -5, 5)
        y = t.suggest_int("y", 0, 10)
        c = t.suggest_categorical("c", ["a", "b", "c"])
        if sleep:
            time.sleep(sleep)
        return (x - 1) ** 2 + y + (c == "b")
    study = optuna.create_study(sampler=make_sampler(kind, seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return time.perf_counter() - t0, [t.params for t in study.trials]

def bench_api(n, sleep, seed, name, kind="tpe"):
    def objective():
        x = tune.float(-5, 5)
        y = tune.int(0, 10)
        c = tune.choice(["a", "b", "c"])
        if sleep:
            time.sleep(sleep)
        return (x - 1) ** 2 + y + (c == "b")
    t0 = time.perf_counter()
    run = start(objective, n_trials=n, sampler=kind, seed=seed, storage="memory", report=False, name=name)
    run.wait()
    return time.perf_counter() - t0, [t.params for t in run.study.trials]
'''

CELL = '''%%tune -n {n} --sampler {kind} --seed {seed} --storage memory --quiet --name {name}
x = tune.float(-5, 5)
y = tune.int(0, 10)
c = tune.choice(["a", "b", "c"])
if SLEEP:
    time.sleep(SLEEP)
(x - 1) ** 2 + y + (c == "b")
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    args = parser.parse_args()
    kernel = Kernel(tempfile.mkdtemp())
    try:
        reply = kernel.run(SETUP)
        assert reply.error is None, reply.error_text
        # Warm-up, discarded: the first run of each variant pays one-off imports and caches.
        kernel.value("bench_bare(20, 0, 1)")
        kernel.value("bench_api(20, 0, 1, 'warm-up')")
        kernel.run("SLEEP = 0")
        kernel.run(CELL.format(n=20, seed=1, name="warm-up-cell", kind="tpe"))
        kernel.run("%tune wait warm-up-cell")
        rows = []
        cases = [("tpe", sleep, n) for sleep in (0.0, 0.01) for n in args.sizes]
        cases.append(("random", 0.0, max(args.sizes)))  # a cheap sampler: our own cost stands out
        for kind, sleep, n in cases:
            times: dict[str, list[float]] = {"bare": [], "api": [], "magic": []}
            same = True
            for r in range(args.repeats):
                seed = 100 + r
                order = ["bare", "api", "magic"]
                order = order[r % 3:] + order[:r % 3]  # rotate so no variant always runs first
                params = {}
                for variant in order:
                    name = f"{variant}-{kind}-{n}-{sleep}-{r}"
                    if variant == "bare":
                        seconds, params[variant] = kernel.value(
                            f"bench_bare({n}, {sleep}, {seed}, {kind!r})", 900)
                    elif variant == "api":
                        seconds, params[variant] = kernel.value(
                            f"bench_api({n}, {sleep}, {seed}, {name!r}, {kind!r})", 900)
                    else:
                        kernel.run(f"SLEEP = {sleep}")
                        reply = kernel.run(CELL.format(n=n, seed=seed, name=name, kind=kind))
                        assert reply.error is None, reply.error_text
                        kernel.run(f"%tune wait {name}", 900)
                        seconds, params[variant] = kernel.value(
                            f"(tune.runs[{name!r}].elapsed, [t.params for t in tune.runs[{name!r}].study.trials])")
                    times[variant].append(seconds / n * 1000)
                same = same and params["bare"] == params["api"] == params["magic"]
            bare = statistics.median(times["bare"])
            spread = max(times["bare"]) - min(times["bare"])
            for variant in ("api", "magic"):
                ours = statistics.median(times[variant])
                rows.append((kind, f"{'10 ms' if sleep else 'trivial'}", n, variant, bare, spread, ours,
                             ours - bare, ours / bare, same))
            print(f"done: {kind} sleep={sleep} n={n}", file=sys.stderr, flush=True)
    finally:
        kernel.shutdown()
    print(f"\nSeeded samplers, in-memory storage, median of {args.repeats} interleaved repeats, one kernel. "
          "'bare spread' is max - min of the bare runs: the noise floor.\n")
    print("| sampler | objective | trials | via | bare ms/trial | bare spread | ours ms/trial | added ms/trial "
          "| ratio | same params |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---|")
    for kind, objective, n, variant, bare, spread, ours, added, ratio, same in rows:
        via = "Python API" if variant == "api" else "%%tune in a kernel"
        print(f"| {kind} | {objective} | {n} | {via} | {bare:.3f} | {spread:.3f} | {ours:.3f} | {added:+.3f} "
              f"| {ratio:.3f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
