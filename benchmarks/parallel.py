"""Parallel trials: how throughput scales with workers, what each backend adds per trial, and
whether the kernel stays responsive while a CPU-bound study runs.

1. Throughput efficiency, per backend: steady-state trials/s with N workers divided by N times
   that with one worker of the same backend, measured back to back, for ``time.sleep(0.1)``
   trials and for a pure-Python CPU-bound objective (~0.2 s of integer arithmetic). Steady state
   excludes starting workers: the window runs from the moment every slot has finished its first
   trial (which includes starting its worker process) to the moment the first slot finishes its
   last one, so every slot is busy throughout; each slot's trials in the window are counted
   fractionally, interpolating between its finish times. Dask runs on one ``LocalCluster`` made
   up front (one single-threaded worker process per slot of the largest N) and passed as
   ``cluster=client``. A Dask trial that runs 20 s is stuck (its task never reached the kernel):
   while the slots start, its worker is restarted and its task cancelled (the engine submits it
   again) and the run goes on; later, the run is measured again. Both are counted in the table.
2. Per-trial engine overhead, N=1, a trivial objective (one knob, returns it), random sampler so
   the sampler's own cost does not hide ours: the mean time from one trial's end to the next one's
   (first trial excluded) on each backend, against the thread backend, and the thread backend
   against bare ``study.optimize`` with the same sampler.
3. The round trip of ``1+1`` in a real kernel (jupyter_client: send, reply and idle received)
   while a ``%%tune`` cell burning ~0.05 s of pure-Python CPU per trial runs with the thread
   backend, with the process backend, and with nothing running.

Every number is a ratio or a difference within one run, medians over ``--repeats``. Other work
on the machine disturbs all of it: each table says how much CPU the rest of the machine used
while it was measured (system busy time minus that of this script's process tree).

    python benchmarks/parallel.py [--repeats 3] [--parts throughput overhead kernel] [--window 2]
        [--backends thread process dask] [--objectives sleep cpu] [--max-others CORES]

``--max-others 0.5`` waits before each group of measurements until the rest of the machine uses
at most half a core, and measures a group again (at most twice) if it used more meanwhile.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from typing import Any, Callable

import optuna
import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kernel import Kernel  # noqa: E402  (the tests' jupyter_client driver)

import hpt_jupyter  # noqa: E402
from hpt_jupyter import start, tune  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

SLEEP_SECONDS = 0.1
CPU_SECONDS = 0.2
KERNEL_BURN_SECONDS = 0.05
STALL_SECONDS = 20.0  # a Dask trial running this long has hung (they take at most 0.2 s here)
BACKENDS = ("thread", "process", "dask")
# (workload, backend) -> the N measured against N=1
JOBS = {("sleep", "thread"): (2, 8), ("sleep", "process"): (2, 8), ("sleep", "dask"): (2, 8),
        ("cpu", "thread"): (2,), ("cpu", "process"): (2,), ("cpu", "dask"): (2,)}
TARGETS = {("sleep", 2): 0.95, ("sleep", 8): 0.9, ("cpu", 2): 0.8}


# --- objectives: closures, so that cloudpickle sends them by value to workers -----------------

# Each returns the id of the process it ran in as its score (the random sampler ignores scores):
# which worker ran each trial.

def sleeper(seconds: float) -> Callable[[], float]:
    def objective() -> float:
        x = tune.float(0, 1)
        time.sleep(seconds)
        return float(os.getpid()) + 0 * x

    return objective


def burner(iterations: int) -> Callable[[], float]:
    def objective() -> float:
        x = tune.float(0, 1)
        total = 0
        for i in range(iterations):
            total += i * i % 7
        return float(os.getpid()) + 0 * (x + total)

    return objective


def trivial() -> float:  # the overhead measurement's objective
    x = tune.float(0, 1)
    return x


def burn_iterations(seconds: float) -> int:
    """Loop iterations of ``burner`` that take ``seconds`` on one core (best of five)."""
    probe, best = 200_000, math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(probe):
            total += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return int(seconds * probe / best)


# --- what else the machine is doing ---------------------------------------------------------

class Disturbance:
    """CPU the rest of the machine used during a measurement, in cores: system-wide busy time
    minus that of this process and all its descendants (reaped ones included)."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + t.steal

    def _ours(self) -> float:
        total = 0.0
        for process in [self.me, *self.me.children(recursive=True)]:
            try:
                t = process.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def __enter__(self) -> Disturbance:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()
        self.load = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: Any) -> None:
        elapsed = time.monotonic() - self.t0
        self.others = max(0.0, (self._busy() - self.busy0) - (self._ours() - self.ours0)) / elapsed
        self.ours = (self._ours() - self.ours0) / elapsed


def listen_overflows() -> int:
    """The machine's count of TCP connections dropped because a listen queue was full."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:])).get("ListenOverflows", 0))
    return 0


def describe_disturbance(samples: list[Disturbance], redone: list[str]) -> str:
    others = sorted(d.others for d in samples)
    loads = sorted(d.load for d in samples)
    text = (f"the rest of the machine used {statistics.median(others):.2f} cores (median; "
            f"{others[0]:.2f}-{others[-1]:.2f}) of 2 while these were measured; 1-min load average "
            f"{loads[0]:.2f}-{loads[-1]:.2f}, ours included")
    if redone:
        text += f"; {len(redone)} group(s) measured again because the machine was busy"
    return text


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {text}", file=sys.stderr, flush=True)


def wait_for_quiet(max_others: float | None, patience: float) -> None:
    """Before a repeat: wait (up to ``patience`` s) until the rest of the machine uses at most
    ``max_others`` cores, sampled over 3 s while this script is idle."""
    if max_others is None:
        return
    deadline = time.monotonic() + patience
    while True:
        with Disturbance() as sample:
            time.sleep(3)
        if sample.others <= max_others or time.monotonic() > deadline:
            return
        log(f"waiting: the rest of the machine uses {sample.others:.2f} cores > {max_others}")
        time.sleep(10)


def undisturbed(group: Callable[[list[Disturbance]], Any], args: argparse.Namespace, what: str,
                redone: list[str]) -> tuple[Any, list[Disturbance]]:
    """``group(samples)``: measurements that go together (it appends a Disturbance per
    measurement). With --max-others, a group during which the rest of the machine used more
    than that is measured again after waiting for quiet (at most twice), whatever its result."""
    for attempt in range(3):
        wait_for_quiet(args.max_others, args.patience)
        samples: list[Disturbance] = []
        result = group(samples)
        worst = max((d.others for d in samples), default=0.0)
        if args.max_others is None or worst <= args.max_others or attempt == 2:
            return result, samples
        redone.append(what)
        log(f"disturbed ({worst:.2f} cores used by others): measuring {what} again")
    raise AssertionError("unreachable")


# --- one measured run -----------------------------------------------------------------------

class Measured:
    def __init__(self, throughput: float, window: float, warm_up: float, trials: int) -> None:
        self.throughput = throughput  # steady-state trials per second
        self.window = window  # seconds of steady state measured
        self.warm_up = warm_up  # from starting the run until every slot had finished a trial
        self.trials = trials
        self.busiest = math.nan  # share of the trials that the busiest worker process ran
        self.hangs = 0  # trials stuck while the slots started, freed (see drive)


def position(times: list[float], at: float) -> float:
    """Trials a slot had finished by ``at``, interpolated between its finish times."""
    i = bisect.bisect_right(times, at) - 1
    if i >= len(times) - 1:
        return float(len(times) - 1)
    return i + (at - times[i]) / (times[i + 1] - times[i])


def steady_state(finishes: dict[int, list[float]], jobs: int, started: float) -> Measured:
    slots = [sorted(times) for times in finishes.values()]
    assert len(slots) == jobs, f"{len(slots)} slots finished trials, expected {jobs}"
    assert all(len(times) >= 2 for times in slots), "a slot finished fewer than two trials"
    begin = max(times[0] for times in slots)  # every slot has finished its first trial
    end = min(times[-1] for times in slots)  # no slot has left yet
    assert end > begin, "no steady state: lengthen --window"
    count = sum(position(times, end) - position(times, begin) for times in slots)
    return Measured(count / (end - begin), end - begin, begin - started, sum(map(len, slots)))


class Hung(Exception):
    """A Dask trial whose task never reached the kernel; its worker was restarted."""


def unstick(run: Any, local: Any, stuck: set[int]) -> list[str]:
    """Free the trials ``stuck`` of ``run``: restart the Dask workers their tasks sit on (their
    one thread is blocked) and cancel the tasks, which the engine takes as lost data and submits
    again."""
    import distributed

    cluster, client = local
    prefix = f"hpt-trial-{run.executor.shipment.token}-"
    tasks: list = []
    for _ in range(5):
        try:
            tasks = list(cluster.scheduler.tasks.items())  # the LocalCluster's scheduler is in this process
            break
        except RuntimeError:  # changed size during iteration
            continue
    keys, addresses = [], set()
    for key, task in tasks:
        if str(key).startswith(prefix) and int(str(key)[len(prefix):].split("-")[0]) in stuck:
            keys.append(key)
            if task.processing_on is not None:
                addresses.add(task.processing_on.address)
    if addresses:
        client.restart_workers(sorted(addresses))
    if keys:
        client.cancel([distributed.Future(key, client) for key in keys])
    return sorted(addresses)


def drive(run: Any, enough: threading.Event | None, local: Any, warmed: Callable[[], bool] | None = None) -> int:
    """Start ``run`` and stop it once ``enough`` is set (None: let it end); returns how many
    stuck trials were freed. On Dask (``local``: the LocalCluster and its client), a trial that
    runs for STALL_SECONDS (trials here take at most 0.2 s) is stuck: while the slots start
    (``warmed()`` false) it is freed and the run goes on, as the steady-state window has not
    begun; otherwise the run is stopped and Hung raised (a run that does not end within 20 s
    is left behind)."""
    run.start()
    freed: dict[int, float] = {}  # trial number -> when it was freed
    while True:
        if enough is not None:
            if enough.wait(0.1):
                break
        elif not run.wait(0.1).is_alive:
            break
        now = time.monotonic()
        stuck = {trial[0] for trial in run.running_trials()
                 if trial[1] > STALL_SECONDS and now - freed.get(trial[0], -math.inf) > STALL_SECONDS}
        starting = warmed is not None and not warmed()
        if local is not None and stuck:
            restarted = unstick(run, local, stuck)
            freed.update(dict.fromkeys(stuck, now))
            log(f"HUNG: {run.name}: trial(s) {sorted(stuck)} ran over {STALL_SECONDS:g}s; restarted worker(s) "
                f"{restarted} and cancelled their tasks{'; going on (slots still starting)' if starting else ''}")
            if not starting:
                run.stop()
                run.wait(20)
                if run.is_alive:
                    log(f"left behind: {run.status()}")
                raise Hung(run.name)
        if not run.is_alive or run.n_failed:
            if freed:
                raise Hung(f"{run.name} did not recover: {run.status()}")
            raise AssertionError(run.status())
    run.stop()
    run.wait()
    return len(freed)


def measure(objective: Callable[..., Any], backend: str, jobs: int, window: float, seed: int,
            local: Any = None) -> Measured:
    """Run until every slot has finished a trial and then ``window`` seconds more (and one more
    trial each); stop."""
    finishes: dict[int, list[float]] = defaultdict(list)
    warm: list[float] = []
    enough = threading.Event()

    def on_event(event: Any) -> None:
        if event.kind != "trial_finished":
            return
        now = time.perf_counter()
        finishes[threading.get_ident()].append(now)  # emitted by the slot's own thread
        if not warm and len(finishes) == jobs:
            warm.append(now)
        # Enough: `window` seconds since every slot had finished a trial, and each has finished
        # one more since then (so that the steady-state window is not empty).
        if warm and now - warm[0] >= window and all(times[-1] > warm[0] for times in finishes.values()):
            enough.set()

    run = start(objective, n_trials=1_000_000, jobs=jobs, backend=backend, sampler="random", seed=seed,
                cluster=local[1] if local else None, storage="memory", report=False, max_failures=1,
                name=f"{backend}-{jobs}-{seed}-{time.monotonic_ns()}", launch=False)
    run.subscribe(on_event)
    started = time.perf_counter()
    hangs = drive(run, enough, local, warmed=lambda: bool(warm))
    assert run.n_failed == 0, run.status()
    measured = steady_state(finishes, jobs, started)
    measured.hangs = hangs
    pids = Counter(trial.value for trial in run.trials())  # the objectives return their process id
    measured.busiest = max(pids.values()) / sum(pids.values())
    return measured


def measure_bare(n: int, seed: int) -> float:
    """Bare ``study.optimize``: mean seconds from one trial's end to the next, first excluded."""
    finishes: list[float] = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n,
                   callbacks=[lambda study, trial: finishes.append(time.perf_counter())])
    return (finishes[-1] - finishes[0]) / (len(finishes) - 1)


def measure_fixed(objective: Callable[..., Any], backend: str, n: int, seed: int, local: Any = None) -> float:
    """One slot, ``n`` trials: mean seconds from one trial's end to the next, first excluded."""
    finishes: list[float] = []
    run = start(objective, n_trials=n, jobs=1, backend=backend, cluster=local[1] if local else None,
                sampler="random", seed=seed, storage="memory", report=False, max_failures=1,
                name=f"overhead-{backend}-{seed}-{time.monotonic_ns()}", launch=False)
    run.subscribe(lambda event: finishes.append(time.perf_counter()) if event.kind == "trial_finished" else None)
    drive(run, None, local)
    assert run.n_complete == n, run.status()
    return (finishes[-1] - finishes[0]) / (len(finishes) - 1)


def attempts(what: Callable[[], Any], hangs: list[str], label: str, tries: int = 3) -> Any:
    """``what()``, measured again when a Dask trial hung (each hang noted in ``hangs``)."""
    for _ in range(tries):
        try:
            return what()
        except Hung:
            hangs.append(label)
    return None


def make_cluster(workers: int, hangs: list[str]) -> tuple[Any, Any]:
    import distributed

    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
    client = distributed.Client(cluster)
    # Every worker imports hpt_jupyter and Optuna once, before anything is measured.
    warm_up = start(trivial, n_trials=4 * workers, jobs=workers, backend="dask", cluster=client, sampler="random",
                    storage="memory", report=False, name=f"dask-warm-up-{time.monotonic_ns()}", launch=False)
    try:
        drive(warm_up, None, (cluster, client))
    except Hung:
        hangs.append("warm-up")  # the workers are warm either way
    return cluster, client


# --- part 1 ---------------------------------------------------------------------------------

def part_throughput(args: argparse.Namespace) -> str:
    iterations = burn_iterations(CPU_SECONDS)
    objectives = {"sleep": sleeper(SLEEP_SECONDS), "cpu": burner(iterations)}
    results: dict[tuple[str, str, int], list[Measured]] = defaultdict(list)  # (workload, backend, N)
    ratios: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    hangs: list[str] = []
    redone: list[str] = []  # groups measured again because the machine was busy
    disturbances: list[Disturbance] = []
    overflows = 0

    def repeats(backend: str, workloads: tuple[str, ...], local: Any) -> None:
        for r in range(args.repeats):
            for workload in workloads:
                order = [1, *JOBS[(workload, backend)]]
                order = order[r % len(order):] + order[:r % len(order)]  # no N always first

                def group(samples: list[Disturbance]) -> dict[int, Measured | None]:
                    got: dict[int, Measured | None] = {}
                    for jobs in order:
                        with Disturbance() as disturbance:
                            got[jobs] = attempts(
                                lambda: measure(objectives[workload], backend, jobs, args.window, seed=r,
                                                local=local),
                                hangs, f"{workload} {backend} N={jobs}")
                        samples.append(disturbance)
                        if got[jobs] is not None:
                            log(f"{workload} {backend} N={jobs}: {got[jobs].throughput:.2f} trials/s over "
                                f"{got[jobs].window:.1f}s (others {disturbance.others:.2f} cores)")
                    return got

                got, samples = undisturbed(group, args, f"{workload} {backend}", redone)
                disturbances.extend(samples)
                for jobs, measured in got.items():
                    if measured is not None:
                        results[(workload, backend, jobs)].append(measured)
                for jobs in JOBS[(workload, backend)]:
                    if got[jobs] is not None and got[1] is not None:
                        ratios[(workload, backend, jobs)].append(got[jobs].throughput / (jobs * got[1].throughput))

    for backend in args.backends:
        local = None
        if backend == "dask":
            overflows -= listen_overflows()
            local = make_cluster(max(n for (_, b), ns in JOBS.items() if b == "dask" for n in ns), hangs)
        try:
            repeats(backend, tuple(args.objectives), local)
        finally:
            if local is not None:
                overflows += listen_overflows()
                local[1].close()
                local[0].close()
    dask_note = ""
    if "dask" in args.backends:
        dask_note = (f"; Dask: a trial is stuck when it runs {STALL_SECONDS:g} s (its task never reached the "
                     f"kernel); {hangs.count('warm-up')} stuck warm-up run; the machine counted {overflows} TCP "
                     f"listen-queue overflows while the Dask runs ran")
    lines = [f"Steady state (worker start-up excluded), random sampler, one knob; sleep trials "
             f"{SLEEP_SECONDS} s, CPU trials ~{CPU_SECONDS} s of pure Python ({iterations:,} loop iterations); "
             f"median of {args.repeats} repeats, N=1 measured back to back with each N; "
             f"{describe_disturbance(disturbances, redone)}{dask_note}.", "",
             "| objective | backend | workers | trials/s | efficiency | efficiency range | target | met | "
             "start-up s | busiest worker's share | stuck at start-up, freed | runs redone (stuck later) |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for workload in args.objectives:
        for backend in args.backends:
            if not results[(workload, backend, 1)]:
                continue
            for jobs in (1, *JOBS[(workload, backend)]):
                what = f"sleep {SLEEP_SECONDS} s" if workload == "sleep" else f"CPU ~{CPU_SECONDS} s"
                runs = results[(workload, backend, jobs)]
                hung = hangs.count(f"{workload} {backend} N={jobs}")
                if not runs:
                    lines.append(f"| {what} | {backend} | {jobs} | - | - | | | | | | | {hung} |")
                    continue
                freed = sum(m.hangs for m in runs)
                busiest = "" if backend == "thread" else f"{statistics.median(m.busiest for m in runs):.0%}"
                rate = statistics.median(m.throughput for m in runs)
                warm_up = statistics.median(m.warm_up for m in runs)
                values = ratios[(workload, backend, jobs)]
                if jobs == 1:
                    cells = ["1 (baseline)", "", "", ""]
                elif not values:
                    cells = ["-", "", "", ""]
                else:
                    target = TARGETS[(workload, jobs)]
                    efficiency = statistics.median(values)
                    met = "yes" if efficiency >= target else "no"
                    if workload == "cpu" and backend == "thread":
                        met += " (GIL: not expected)"
                    cells = [f"{efficiency:.3f}", f"{min(values):.3f}-{max(values):.3f}", f">= {target}", met]
                lines.append(f"| {what} | {backend} | {jobs} | {rate:.2f} | {' | '.join(cells)} | {warm_up:.2f} "
                             f"| {busiest} | {freed} | {hung} |")
    return "\n".join(lines)


# --- part 2 ---------------------------------------------------------------------------------

def part_overhead(args: argparse.Namespace) -> str:
    n = args.overhead_trials
    variants = ["bare", *args.backends]
    times: dict[str, list[float]] = defaultdict(list)
    hangs: list[str] = []
    redone: list[str] = []
    disturbances: list[Disturbance] = []
    local = make_cluster(1, hangs) if "dask" in args.backends else None
    try:
        for r in range(args.repeats):
            order = variants[r % len(variants):] + variants[:r % len(variants)]

            def group(samples: list[Disturbance]) -> dict[str, float | None]:
                got: dict[str, float | None] = {}
                for variant in order:
                    with Disturbance() as disturbance:
                        if variant == "bare":
                            got[variant] = measure_bare(n, seed=r)
                        else:
                            got[variant] = attempts(
                                lambda: measure_fixed(trivial, variant, n, seed=r,
                                                      local=local if variant == "dask" else None), hangs, variant)
                    samples.append(disturbance)
                    if got[variant] is not None:
                        log(f"overhead {variant}: {got[variant] * 1000:.3f} ms/trial "
                            f"(others {disturbance.others:.2f} cores)")
                return got

            got, samples = undisturbed(group, args, f"overhead repeat {r}", redone)
            disturbances.extend(samples)
            for variant, seconds in got.items():
                if seconds is not None:
                    times[variant].append(seconds * 1000)
    finally:
        if local is not None:
            local[1].close()
            local[0].close()
    thread = statistics.median(times["thread"])
    bare = statistics.median(times["bare"])
    targets = {"process": 5.0, "dask": 30.0}
    lines = [f"One slot, {n} trials of a trivial objective (one knob, returns it), random sampler (so the sampler's "
             f"own cost does not hide ours), in-memory storage; ms from one trial's end to the next, first trial "
             f"(worker start-up) excluded; median of {args.repeats} interleaved repeats; Dask on a one-worker "
             f"LocalCluster made up front; {describe_disturbance(disturbances, redone)}"
             f"{f'; runs hung and measured again: {len(hangs)}' if hangs else ''}.", "",
             "| how trials run | ms/trial | spread | added ms/trial | against | target | met |",
             "|---|---:|---:|---:|---|---:|---|"]
    spread = max(times["bare"]) - min(times["bare"])
    lines.append(f"| bare `study.optimize` | {bare:.3f} | {spread:.3f} | | | | |")
    for backend in args.backends:
        if not times[backend]:
            lines.append(f"| {backend}, N=1 | - | | | | | |")
            continue
        ours = statistics.median(times[backend])
        spread = max(times[backend]) - min(times[backend])
        if backend == "thread":
            lines.append(f"| thread, N=1 | {ours:.3f} | {spread:.3f} | {ours - bare:+.3f} | bare Optuna | | |")
        else:
            target = targets[backend]
            lines.append(f"| {backend}, N=1 | {ours:.3f} | {spread:.3f} | {ours - thread:+.3f} | thread N=1 | "
                         f"<= {target:g} | {'yes' if ours - thread <= target else 'no'} |")
    return "\n".join(lines)


# --- part 3 ---------------------------------------------------------------------------------

KERNEL_SETUP = f"""
%load_ext hpt_jupyter
import time

def _burn_iterations(seconds):
    probe, best = 200_000, float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        total = 0
        for i in range(probe):
            total += i * i % 7
        best = min(best, time.perf_counter() - t0)
    return int(seconds * probe / best)

BURN = _burn_iterations({KERNEL_BURN_SECONDS})
"""

KERNEL_CELL = """%%tune -n 1000 --sampler tpe --backend {backend} --jobs 1 --storage memory --quiet --name {name}
x = tune.float(0, 1)
total = 0
for i in range(BURN):
    total += i * i % 7
x
"""


def round_trips(kernel: Kernel, count: int, gap: float) -> list[float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        reply = kernel.run("1+1")
        samples.append((time.perf_counter() - t0) * 1000)
        assert reply.error is None, reply.error_text
        time.sleep(gap)
    return samples


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def part_kernel(args: argparse.Namespace) -> str:
    kernel = Kernel(tempfile.mkdtemp())
    stats: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    redone: list[str] = []
    disturbances: list[Disturbance] = []
    try:
        reply = kernel.run(KERNEL_SETUP)
        assert reply.error is None, reply.error_text
        burn = kernel.value("BURN")
        round_trips(kernel, 10, args.gap)  # warm-up, discarded
        variants = ["idle", "thread", "process"]
        for r in range(args.repeats):
            def group(samples: list[Disturbance]) -> dict[str, tuple[float, float, float, float]]:
                got = {}
                for variant in variants[r % 3:] + variants[:r % 3]:
                    name = f"rt-{variant}-{r}-{time.monotonic_ns()}"
                    if variant != "idle":
                        reply = kernel.run(KERNEL_CELL.format(backend=variant, name=name))
                        assert reply.error is None, reply.error_text
                        while kernel.value(f"tune.runs[{name!r}].n_finished") < 3:  # its worker is up
                            time.sleep(0.2)
                        before = kernel.value(f"(tune.runs[{name!r}].n_finished, time.monotonic())")
                    with Disturbance() as disturbance:
                        trips = round_trips(kernel, args.round_trips, args.gap)
                    samples.append(disturbance)
                    rate = math.nan
                    if variant != "idle":
                        after = kernel.value(f"(tune.runs[{name!r}].n_finished, time.monotonic())")
                        rate = (after[0] - before[0]) / (after[1] - before[1])
                        state = kernel.value(f"tune.runs[{name!r}].state")
                        assert state == "running", f"the study ended during the measurement: {state}"
                        kernel.run(f"%tune stop {name}")
                        kernel.run(f"%tune wait {name}", 120)
                    got[variant] = (statistics.median(trips), p95(trips), max(trips), rate)
                    log(f"kernel {variant}: median {got[variant][0]:.1f} ms, p95 {got[variant][1]:.1f} ms, "
                        f"max {got[variant][2]:.1f} ms, study {rate:.1f} trials/s "
                        f"(others {disturbance.others:.2f} cores)")
                return got

            got, samples = undisturbed(group, args, f"kernel repeat {r}", redone)
            disturbances.extend(samples)
            for variant, row in got.items():
                stats[variant].append(row)
    finally:
        kernel.shutdown()
    lines = [f"One kernel; {args.round_trips} `1+1` round trips {args.gap * 1000:.0f} ms apart per variant (send to "
             f"reply and idle received, jupyter_client); the study: `%%tune -n 1000 --sampler tpe --backend B --jobs 1 "
             f"--storage memory --quiet`, a cell burning ~{KERNEL_BURN_SECONDS} s of pure-Python CPU "
             f"per trial ({burn:,} loop iterations); median over {args.repeats} interleaved repeats of each repeat's "
             f"median, p95 and max; {describe_disturbance(disturbances, redone)}.", "",
             "| while | median ms | p95 ms | max ms | study trials/s meanwhile | target (p95) | met |",
             "|---|---:|---:|---:|---:|---:|---|"]
    labels = {"idle": "nothing runs (baseline)", "thread": "study on the thread backend",
              "process": "study on the process backend"}
    for variant in ("idle", "thread", "process"):
        median_ms, p95_ms, max_ms, rate = (statistics.median(column) for column in zip(*stats[variant]))
        target = met = ""
        if variant == "process":
            target, met = "<= 50", "yes" if p95_ms <= 50 else "no"
        rate_text = "" if variant == "idle" else f"{rate:.1f}"
        lines.append(f"| {labels[variant]} | {median_ms:.1f} | {p95_ms:.1f} | {max_ms:.1f} | {rate_text} | "
                     f"{target} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", nargs="+", default=["throughput", "overhead", "kernel"],
                        choices=["throughput", "overhead", "kernel"])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                        help="for throughput and overhead (thread is the overhead's reference)")
    parser.add_argument("--objectives", nargs="+", default=["sleep", "cpu"], choices=["sleep", "cpu"],
                        help="throughput: which objectives")
    parser.add_argument("--window", type=float, default=2.0, help="seconds of steady state per throughput run")
    parser.add_argument("--overhead-trials", type=int, default=400)
    parser.add_argument("--round-trips", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between round trips")
    parser.add_argument("--max-others", type=float, default=None, metavar="CORES",
                        help="before each repeat, wait until the rest of the machine uses at most this many cores")
    parser.add_argument("--patience", type=float, default=300, help="seconds to wait for that, at most")
    args = parser.parse_args()
    if "overhead" in args.parts and "thread" not in args.backends:
        parser.error("the overhead part needs the thread backend (its reference)")

    log(f"start; {os.cpu_count()} cores; hpt_jupyter from {os.path.dirname(hpt_jupyter.__file__)}")
    tables = []
    parts = {"throughput": part_throughput, "overhead": part_overhead, "kernel": part_kernel}
    for part in ("throughput", "overhead", "kernel"):
        if part in args.parts:
            tables.append(parts[part](args))
    print()
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
