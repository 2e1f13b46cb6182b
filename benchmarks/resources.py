"""Resources per trial: what ``cpus_per_trial`` buys when process slots share the cores, and
(``--gpu``) how throughput scales with one GPU per slot.

1. CPU (the default). The same seeded study of a CPU-heavy trial on ``--jobs`` process slots
   (default 2, memory storage, random sampler), once with the libraries' default thread pools
   (every worker's OpenMP, BLAS and PyTorch pools as wide as the machine: on 2 cores, 2 slots
   run 4 busy threads) and once with ``cpus_per_trial=C`` (default: the cores divided by the
   slots, 1 here; each worker's pools limited to C threads and the worker pinned to C cores of
   its own). Three workloads, each trial ~0.5-1 s on one core, all from multithreaded
   libraries and nothing downloaded:

   - ``hgb``: scikit-learn's ``HistGradientBoostingClassifier`` (OpenMP) fitted on
     ``make_classification`` data (20,000 x 30), scored on a held-out quarter;
   - ``torch``: a PyTorch CPU training loop, an MLP 64-256-256-10 trained by Adam for a few
     epochs on 8,192 synthetic samples (intra-op pool: OpenMP, GEMMs);
   - ``matmul``: NumPy 1000 x 1000 matrix products (OpenBLAS's pthreads pool).

   Each round measures every workload in both configurations, the order of the two
   alternating from round to round (and rotating across workloads) to cancel drift.
   Throughput is the steady state: trials finished per second from the moment every slot has
   finished its first trial (which includes starting the worker process and importing the
   libraries) to the moment the first slot finishes its last, each slot's trials counted
   fractionally between its finish times (as ``benchmarks/parallel.py`` does). Worker start-up
   is reported apart. The ratio with / without is taken within each round; the table gives the
   medians over rounds and the ratios' range.

   Before measuring, one probe run per configuration reports what a trial actually saw: its
   OpenMP, BLAS and PyTorch thread counts and the cores it may run on.

2. ``--gpu``: a small convolutional network trained on ``tune.device()`` with
   ``gpus_per_trial=1`` on N process slots, N = 1..the GPUs this process sees (``--max-gpus``),
   interleaved by round; throughput against one slot (ideal: N times). Every trial records the
   device it trained on and its ``CUDA_VISIBLE_DEVICES``; a trial that did not train on a GPU
   stops the benchmark. Without a GPU it prints one line saying so and exits with status 2.

Every number is a ratio within one run or a median over rounds; other work on the machine
disturbs all of it, so each table says how much CPU the rest of the machine used meanwhile.

    python benchmarks/resources.py [--rounds 3] [--trials 12] [--workloads hgb torch matmul]
        [--jobs 2] [--cpus-per-trial C] [--max-others CORES]
    python benchmarks/resources.py --gpu [--rounds 3] [--trials 24] [--max-gpus N] [--gpu-steps 150]

``--max-others 0.5`` waits before each measurement (up to ``--patience`` s) until the rest of
the machine uses at most half a core, and measures a round's pair again (at most twice) if it
used more meanwhile.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any, Callable

import optuna
import psutil

from hpt_jupyter import start, tune
# What else the machine is doing, and a slot's trials counted at a moment: as parallel.py measures them.
from parallel import Disturbance, log, position, wait_for_quiet  # noqa: E402
from hpt_jupyter.core.resources import THREAD_VARIABLES, usable_cores, visible_gpus

optuna.logging.set_verbosity(optuna.logging.WARNING)

WORKLOADS = ("hgb", "torch", "matmul")
DESCRIPTIONS = {
    "hgb": "scikit-learn HistGradientBoosting (OpenMP)",
    "torch": "PyTorch MLP training loop (CPU)",
    "matmul": "NumPy matmul (OpenBLAS)",
}


# --- workloads: closures, so that cloudpickle ships them (and their data) by value -------------

def hgb_objective() -> Callable[[], float]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=20_000, n_features=30, n_informative=15, random_state=0)
    split = 15_000

    def objective() -> float:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            max_iter=40, early_stopping=False, random_state=0,
            learning_rate=tune.float(0.02, 0.3, log=True),
            l2_regularization=tune.float(1e-3, 10.0, log=True))
        model.fit(X[:split], y[:split])
        return float(model.score(X[split:], y[split:]))

    return objective


def torch_objective() -> Callable[[], float]:
    def objective() -> float:
        import torch

        lr = tune.float(1e-4, 1e-2, log=True)
        width = 256
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(8192, 64, generator=generator)
        y = (x @ torch.randn(64, 10, generator=generator)).argmax(1)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                  torch.nn.ReLU(), torch.nn.Linear(width, 10))
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(8):
            for i in range(0, 8192, 256):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(x[i:i + 256]), y[i:i + 256])
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return float((net(x).argmax(1) == y).float().mean())

    return objective


def matmul_objective() -> Callable[[], float]:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1000, 1000))

    def objective() -> float:
        scale = tune.float(0.5, 2.0)
        b = a * scale
        for _ in range(10):
            b = a @ b
            b /= np.abs(b).max()
        return float(b[0, 0])

    return objective


OBJECTIVES: dict[str, Callable[[], Callable[[], float]]] = {
    "hgb": hgb_objective, "torch": torch_objective, "matmul": matmul_objective}


def probe_objective(folder: str) -> Callable[[], float]:
    """What a trial's process sees: its thread pools (with the workloads' libraries loaded) and
    cores, written to ``folder`` (one file per trial)."""

    def objective() -> float:
        import numpy  # noqa: F401  (loads OpenBLAS)
        import sklearn.ensemble  # noqa: F401  (loads scikit-learn's OpenMP)
        import torch
        from threadpoolctl import threadpool_info

        x = tune.float(0, 1)
        pools: dict[str, set] = defaultdict(set)
        for pool in threadpool_info():
            pools[pool["user_api"]].add(pool["num_threads"])
        seen = {"pid": os.getpid(), "openmp": sorted(pools["openmp"]), "blas": sorted(pools["blas"]),
                "torch": torch.get_num_threads(), "cores": sorted(os.sched_getaffinity(0)),
                "env": {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
        with open(os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}.json"), "w") as f:
            json.dump(seen, f)
        return x

    return objective


def gpu_objective(folder: str, steps: int) -> Callable[[], float]:
    """A small CNN on synthetic 32 x 32 images held on the trial's device; records where it
    trained."""

    def objective() -> float:
        import torch

        lr = tune.float(1e-3, 1e-1, log=True)
        device = tune.device()
        torch.manual_seed(0)
        x = torch.randn(2048, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (2048,), device=device)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(128, 256, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(256, 10)).to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        for step in range(steps):
            i = (step * 256) % 2048
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[i:i + 256]), y[i:i + 256])
            loss.backward()
            optimizer.step()
        value = loss.item()  # waits for the device
        name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "-"
        seen = {"pid": os.getpid(), "device": device, "name": name,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        with open(os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}.json"), "w") as f:
            json.dump(seen, f)
        return value

    return objective


class Measured:
    def __init__(self, throughput: float, window: float, start_up: float, trial_seconds: float,
                 slowest: float, others: float) -> None:
        self.throughput = throughput  # steady-state trials per second
        self.window = window  # seconds of steady state
        self.start_up = start_up  # from starting the run until every slot had finished a trial
        self.trial_seconds = trial_seconds  # mean duration of a trial after each slot's first
        self.slowest = slowest  # the longest of those
        self.others = others  # cores the rest of the machine used meanwhile


def measure(objective: Callable[[], float], jobs: int, trials: int, seed: int, direction: str,
            cpus: int | None = None, gpus: float | None = None) -> Measured:
    finishes: dict[int, list[float]] = defaultdict(list)  # slot thread -> its trials' finish times

    def on_event(event: Any) -> None:
        if event.kind == "trial_finished":
            finishes[threading.get_ident()].append(time.perf_counter())  # emitted by the slot's thread

    run = start(objective, n_trials=trials, jobs=jobs, backend="process", sampler="random", seed=seed,
                direction=direction, storage="memory", report=False, max_failures=1, launch=False,
                cpus_per_trial=cpus, gpus_per_trial=gpus, name=f"resources-{time.monotonic_ns()}")
    run.subscribe(on_event)
    with Disturbance() as disturbance:
        started = time.perf_counter()
        run.start()
        run.wait()
    if run.n_complete != trials:
        raise SystemExit(f"a measured run did not complete its {trials} trials: {run.status()}")
    slots = [sorted(times) for times in finishes.values()]
    if len(slots) != jobs or any(len(times) < 2 for times in slots):
        raise SystemExit(f"{len(slots)} slots finished {[len(t) for t in slots]} trials: raise --trials")
    begin = max(times[0] for times in slots)  # every slot has finished its first trial
    end = min(times[-1] for times in slots)  # no slot has finished its last one yet
    if end <= begin:
        raise SystemExit("no steady state: raise --trials")
    count = sum(position(times, end) - position(times, begin) for times in slots)
    # Each slot's first trial (numbers 0..jobs-1 were asked first) includes starting its worker.
    durations = [(t.datetime_complete - t.datetime_start).total_seconds()
                 for t in run.trials() if t.number >= jobs]
    return Measured(count / (end - begin), end - begin, begin - started, statistics.mean(durations),
                    max(durations), disturbance.others)


# --- part 1: CPU ------------------------------------------------------------------------------

def probe(jobs: int, cpus: int | None) -> list[dict]:
    folder = tempfile.mkdtemp(prefix="hpt-resources-probe-")
    run = start(probe_objective(folder), n_trials=2 * jobs, jobs=jobs, backend="process", sampler="random",
                seed=0, storage="memory", report=False, max_failures=1, cpus_per_trial=cpus,
                name=f"resources-probe-{time.monotonic_ns()}")
    run.wait()
    if run.n_complete != 2 * jobs:
        raise SystemExit(f"the probe run failed: {run.status()}")
    seen: dict[int, dict] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        seen[record["pid"]] = record
    return list(seen.values())


def describe_probe(records: list[dict]) -> str:
    parts = []
    for r in records:
        cores = r["cores"]
        where = f"core {cores[0]}" if len(cores) == 1 else f"cores {cores[0]}-{cores[-1]}" \
            if cores == list(range(cores[0], cores[-1] + 1)) else f"cores {cores}"
        pools = f"OpenMP {'/'.join(map(str, r['openmp']))}, BLAS {'/'.join(map(str, r['blas']))}, torch {r['torch']}"
        parts.append(f"{pools} threads on {where}")
    return "; ".join(f"worker {i + 1}: {part}" for i, part in enumerate(parts))


def cpu_part(args: argparse.Namespace) -> int:
    cores = usable_cores()
    jobs = args.jobs
    cpus = args.cpus_per_trial or max(1, len(cores) // jobs)
    configs = {"without": None, "with": cpus}
    labels = {"without": "library defaults", "with": f"cpus_per_trial={cpus}"}
    print(f"Machine: {len(cores)} usable cores ({psutil.cpu_count()} logical), {cpu_model()}; "
          f"Python {sys.version.split()[0]}, {library_versions()}.")
    print(f"{jobs} process slots, memory storage, random sampler; 'with' = cpus_per_trial={cpus} "
          f"({'each worker pinned to cores of its own' if jobs * cpus <= len(cores) else 'no pinning: does not fit'}).")
    print()
    for config, value in configs.items():
        records = probe(jobs, value)
        print(f"What a trial saw, {labels[config]}: {describe_probe(records)}.")
    print()
    objectives = {name: OBJECTIVES[name]() for name in args.workloads}
    results: dict[tuple[str, str], list[Measured]] = defaultdict(list)
    ratios: dict[str, list[float]] = defaultdict(list)
    redone = 0
    t0 = time.monotonic()
    for r in range(args.rounds):
        for w, workload in enumerate(args.workloads):
            order = ["without", "with"] if (r + w) % 2 == 0 else ["with", "without"]
            for attempt in range(3):
                wait_for_quiet(args.max_others, args.patience)
                got = {config: measure(objectives[workload], jobs, args.trials, seed=r, direction="maximize",
                                       cpus=configs[config]) for config in order}
                worst = max(m.others for m in got.values())
                for config in order:
                    m = got[config]
                    log(f"round {r + 1} {workload} {labels[config]}: {m.throughput:.3f} trials/s over "
                        f"{m.window:.1f}s, trial {m.trial_seconds:.2f}s (mean; slowest {m.slowest:.2f}s), "
                        f"start-up {m.start_up:.1f}s "
                        f"(others {m.others:.2f} cores)")
                if args.max_others is None or worst <= args.max_others or attempt == 2:
                    break
                redone += 1
                log(f"disturbed ({worst:.2f} cores used by others): measuring round {r + 1} {workload} again")
            for config in order:
                results[(workload, config)].append(got[config])
            ratios[workload].append(got["with"].throughput / got["without"].throughput)
    elapsed = time.monotonic() - t0
    all_others = sorted(m.others for runs in results.values() for m in runs)
    print(f"{args.trials} trials per run on {jobs} slots, steady state (each slot's first trial, which starts "
          f"its worker, excluded); median of {args.rounds} rounds, the two configurations alternated; "
          f"the rest of the machine used {statistics.median(all_others):.2f} cores (median; "
          f"{all_others[0]:.2f}-{all_others[-1]:.2f}) of {len(cores)}"
          + (f"; {redone} pair(s) measured again because the machine was busy" if redone else "")
          + f"; {elapsed:.0f} s of measuring. s/trial: a trial's mean duration after each slot's first "
          "(median over rounds), the slowest of any round in brackets; start-up: from starting the run until "
          "every slot had finished its first trial.")
    print()
    print(f"| workload | trials/s without | trials/s with cpus_per_trial={cpus} | ratio with / without | "
          f"ratio range | s/trial without (slowest) | s/trial with (slowest) | start-up s without | start-up s with |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workload in args.workloads:
        without, with_ = results[(workload, "without")], results[(workload, "with")]

        def med(runs: list[Measured], attr: str) -> float:
            return statistics.median(getattr(m, attr) for m in runs)

        values = ratios[workload]
        print(f"| {DESCRIPTIONS[workload]} | {med(without, 'throughput'):.3f} | {med(with_, 'throughput'):.3f} | "
              f"{statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} | "
              f"{med(without, 'trial_seconds'):.2f} ({max(m.slowest for m in without):.2f}) | "
              f"{med(with_, 'trial_seconds'):.2f} ({max(m.slowest for m in with_):.2f}) | "
              f"{med(without, 'start_up'):.1f} | {med(with_, 'start_up'):.1f} |")
    print()
    print("Ratio per round (with / without): " + "; ".join(
        f"{w} {', '.join(f'{v:.3f}' for v in ratios[w])}" for w in args.workloads) + ".")
    return 0


# --- part 2: GPU ------------------------------------------------------------------------------

def gpu_part(args: argparse.Namespace) -> int:
    ids, source = visible_gpus()
    try:
        import torch

        cuda, count, version = torch.cuda.is_available(), torch.cuda.device_count(), torch.__version__
    except ImportError:
        cuda, count, version = False, 0, "not installed"
    if not ids or not cuda:
        print(f"--gpu: no GPU here ({source}; PyTorch {version} sees {count} CUDA device(s)): "
              f"nothing to measure.")
        return 2
    top = min(len(ids), count, args.max_gpus or len(ids))
    counts = list(range(1, top + 1))
    folder = tempfile.mkdtemp(prefix="hpt-resources-gpu-")
    print(f"Machine: {len(usable_cores())} usable cores, {cpu_model()}; GPUs {', '.join(ids[:top])} "
          f"({torch.cuda.get_device_name(0)}; {source}); PyTorch {version}.")
    print(f"A CNN (3 conv layers, 64-256 channels) on synthetic 32x32 images, batch 256, {args.gpu_steps} steps "
          f"per trial on tune.device(); gpus_per_trial=1, N process slots; {args.trials} trials per run per slot.")
    print()
    results: dict[int, list[Measured]] = defaultdict(list)
    speedups: dict[int, list[float]] = defaultdict(list)
    devices: dict[int, set] = defaultdict(set)
    objective = gpu_objective(folder, args.gpu_steps)
    for r in range(args.rounds):
        order = counts[r % len(counts):] + counts[:r % len(counts)]  # no N always first
        got: dict[int, Measured] = {}
        for n in order:
            wait_for_quiet(args.max_others, args.patience)
            for path in glob.glob(os.path.join(folder, "*.json")):
                os.remove(path)
            got[n] = measure(objective, n, args.trials * n, seed=r, direction="minimize", gpus=1)
            for path in glob.glob(os.path.join(folder, "*.json")):
                with open(path) as f:
                    seen = json.load(f)
                if not seen["device"].startswith("cuda"):
                    raise SystemExit(f"a trial trained on {seen['device']!r}, not a GPU: nothing measured ({seen})")
                devices[n].add((seen["cuda_visible_devices"], seen["device"], seen["name"]))
            log(f"round {r + 1} N={n}: {got[n].throughput:.3f} trials/s, trial {got[n].trial_seconds:.2f}s, "
                f"start-up {got[n].start_up:.1f}s (others {got[n].others:.2f} cores)")
        for n in counts:
            results[n].append(got[n])
            speedups[n].append(got[n].throughput / got[1].throughput)
    print(f"Steady state (each slot's first trial excluded), median of {args.rounds} rounds, N interleaved.")
    print()
    print("| slots (1 GPU each) | trials/s | speed-up vs 1 | ideal | efficiency | speed-up range | s/trial | "
          "start-up s | CUDA_VISIBLE_DEVICES seen -> device |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in counts:
        runs, values = results[n], speedups[n]
        seen = ", ".join(f"{v} -> {d}" for v, d, _ in sorted(devices[n]))
        print(f"| {n} | {statistics.median(m.throughput for m in runs):.3f} | {statistics.median(values):.2f} | {n} | "
              f"{statistics.median(values) / n:.2f} | {min(values):.2f}-{max(values):.2f} | "
              f"{statistics.median(m.trial_seconds for m in runs):.2f} | "
              f"{statistics.median(m.start_up for m in runs):.1f} | {seen} |")
    return 0


# --- the machine ------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU model unknown"


def library_versions() -> str:
    import numpy
    import sklearn
    import threadpoolctl

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return (f"Optuna {optuna.__version__}, scikit-learn {sklearn.__version__}, NumPy {numpy.__version__}, "
            f"PyTorch {torch_version}, threadpoolctl {threadpoolctl.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="measure GPU slots instead (needs a CUDA GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per run (CPU, default 12) or per slot (--gpu, default 12)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--jobs", type=int, default=2, help="process slots (CPU part)")
    parser.add_argument("--cpus-per-trial", type=int, default=None,
                        help="the 'with' configuration (default: usable cores // jobs)")
    parser.add_argument("--max-gpus", type=int, default=None, help="--gpu: measure N = 1..this")
    parser.add_argument("--gpu-steps", type=int, default=150, help="--gpu: training steps per trial")
    parser.add_argument("--max-others", type=float, default=None,
                        help="wait until the rest of the machine uses at most this many cores")
    parser.add_argument("--patience", type=float, default=300, help="seconds to wait for quiet, at most")
    args = parser.parse_args()
    # 'Without' means the libraries' own defaults: a thread variable set in this shell would
    # limit both configurations' workers.
    inherited = {name: os.environ.pop(name) for name in THREAD_VARIABLES if name in os.environ}
    if inherited:
        log(f"ignoring {', '.join(f'{k}={v}' for k, v in inherited.items())} from the environment")
    if args.gpu:
        args.trials = args.trials or 12
        return gpu_part(args)
    args.trials = args.trials or 12
    return cpu_part(args)


if __name__ == "__main__":
    sys.exit(main())
