"""Large notebook data on local workers: shared (mapped from one shared-memory file) against
copied (inside each worker's pickle, the path every value took before), in the same run.

For each dataset (a 400 MB NumPy array; a pandas DataFrame of 400 MB in five float columns) and
N = 1, 2 and 8 process workers, a run of N trials on N slots whose every trial reads the data in
full and then holds still for a moment, so that all N workers are alive with their data at once:

- the workers' peak PSS summed (proportional set size: a page shared by k processes counts 1/k
  in each, so the sum is what the workers really cost the machine), sampled every 50 ms;
- the same with 1 kB of the same kind: the workers' own interpreters (Python, Optuna, and NumPy or
  pandas);
- start-up: from ``run.start()`` until the last worker has its data (each trial notes the time it
  starts, which is after its worker unpacked the data), and the part of it the data costs (the
  same minus the 1 kB run's).

Targets: workers' total PSS at most 1.1 x (data + interpreters) whatever N; start-up for the data
under a second.

    python benchmarks/shipping.py [--megabytes 400] [--workers 1 2 8] [--datasets array frame]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
import optuna
import pandas as pd
import psutil

import hpt_jupyter
from hpt_jupyter import start
from hpt_jupyter.core.executors import sharing

optuna.logging.set_verbosity(optuna.logging.WARNING)

HOLD_SECONDS = 1.5  # each trial keeps its worker busy this long after reading, for the PSS sample
RUNS = 0
DATA = None  # the dataset the objective reads (a module global: it travels with the function)


def objective(trial):
    started = time.time()  # the worker has unpacked (or mapped) the data by now
    trial.suggest_float("x", 0, 1)
    data = DATA
    # Reads every byte, as training on it would (column by column: a frame's to_numpy() would copy).
    total = sum(float(data[c].to_numpy().sum()) for c in data.columns) if hasattr(data, "columns") \
        else float(data.sum())
    time.sleep(HOLD_SECONDS)
    return started + 0 * total


def make(kind: str, megabytes: float):
    values = int(megabytes * 1e6 / 8)
    if kind == "array":
        return np.random.default_rng(0).random(values)
    columns = 5
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(values // columns) for i in range(columns)})


def nbytes(data) -> int:
    return int(data.memory_usage(index=True).sum()) if hasattr(data, "memory_usage") else data.nbytes


def workers_pss(pids: set[int]) -> int:
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_full_info().pss
            pids.add(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(data, workers: int, shared: bool) -> dict:
    global DATA
    DATA = data
    sharing.SHARE_MIN_BYTES = 1 << 20 if shared else float("inf")
    global RUNS
    RUNS += 1
    run = start(objective, n_trials=workers, jobs=workers, backend="process", sampler="random", seed=0,
                storage="memory", name=f"shipping-{RUNS}", report=False, launch=False)
    peak, pids, done = 0, set(), threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, workers_pss(pids))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.time()
    run.start().wait()
    done.set()
    sampler.join()
    assert run.n_complete == workers, (run.reason, run.failures)
    assert ("shared " in run.slots_text()) == (shared and nbytes(data) >= 1 << 20), run.slots_text()
    ready = max(t.value for t in run.trials()) - began
    return {"pss": peak, "ready": ready, "workers": len(pids)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--datasets", nargs="+", default=["array", "frame"], choices=["array", "frame"])
    args = parser.parse_args()
    print(f"hpt_jupyter {hpt_jupyter.__version__ if hasattr(hpt_jupyter, '__version__') else ''} · "
          f"{os.cpu_count()} cores · Python {sys.version.split()[0]}")
    print(f"{'data':>6} {'N':>3} {'path':>7} {'workers PSS':>12} {'interpreters':>13} "
          f"{'PSS / (data+interp.)':>21} {'start-up':>9} {'of it, data':>12}")
    for kind in args.datasets:
        data = make(kind, args.megabytes)
        tiny = make(kind, 0.001)  # 1 kB of the same kind: the interpreters, with the data's libraries
        size = nbytes(data)
        for workers in args.workers:
            base = measure(tiny, workers, True)
            for shared in (False, True):
                got = measure(data, workers, shared)
                ratio = got["pss"] / (size + base["pss"])
                print(f"{kind:>6} {workers:>3} {'shared' if shared else 'copied':>7} "
                      f"{got['pss'] / 1e6:>9.0f} MB {base['pss'] / 1e6:>10.0f} MB {ratio:>21.2f} "
                      f"{got['ready']:>8.2f}s {got['ready'] - base['ready']:>11.2f}s", flush=True)
        del data


if __name__ == "__main__":
    main()
