"""Several trials at once, through a real kernel: thread, process and Dask backends."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpt_jupyter import TuneError, start, tune

BACKENDS = ["thread", "process", "dask"]

SETUP = """
import numpy as np
weights = np.linspace(0.0, 1.0, 5)
def penalty(v):
    return (v - 0.3) ** 2
"""

# Reads a NumPy array and a function of the notebook, reports a curve, prints a line.
CELL = """%%tune -n {n} --jobs 2 --backend {backend} --storage memory --name {name} --seed 1 {extra}
x = tune.float(0, 1)
import os, time
for step in range(3):
    tune.report(penalty(x) + float(weights[step]) / 10, step)
    time.sleep({sleep})
print("pid", os.getpid())
penalty(x)
"""


def _wait_for(predicate, timeout=60.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cell_reading_notebook_values_completes_with_two_workers(kernel, backend):
    assert kernel.run(SETUP).error is None
    reply = kernel.run(CELL.format(n=6, backend=backend, name="par", extra="--quiet", sleep=0.05))
    assert reply.error is None, reply.error_text
    waited = kernel.run("%tune wait par\nprint('X', x)")
    assert waited.error is None, waited.error_text
    assert kernel.value("tune.last.n_complete") == 6, kernel.value("tune.last.status()")
    assert kernel.value("[len(t.intermediate_values) for t in tune.last.trials()]") == [3] * 6
    assert float(waited.stdout.split("X ")[-1]) == kernel.value("tune.last.best_params['x']")
    printed = kernel.later_output(reply.msg_id).stdout + waited.stdout
    # (two threads printing at once may interleave their words: count words, not lines)
    words = [w for line in printed.splitlines() if set(line.split()) - {"pid"} and
             all(w == "pid" or w.isdigit() for w in line.split()) for w in line.split()]
    pids = {w for w in words if w.isdigit()}
    kernel_pid = str(kernel.value("__import__('os').getpid()"))
    assert printed.count("pid") == 6, printed
    if backend == "thread":
        assert pids == {kernel_pid}
    else:  # printed by worker processes, shown under the cell
        assert kernel_pid not in pids and len(pids) >= 1, pids


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_pause_more_and_narrowing_act_while_two_trials_run(kernel, backend):
    assert kernel.run(SETUP).error is None
    kernel.run(CELL.format(n=200, backend=backend, name="ctl", extra="--quiet", sleep=0.1))
    assert _wait_for(lambda: kernel.value("len(tune.last.running_trials())") == 2), "never 2 trials running"

    status = kernel.run("%tune status ctl").stdout
    assert "running: #" in status and f"2 {backend} slots" in status, status
    kernel.run("%tune pause ctl")
    assert _wait_for(lambda: kernel.value("len(tune.last.running_trials())") == 0, timeout=30)
    paused_at = kernel.value("tune.last.n_finished")
    time.sleep(1.0)
    assert kernel.value("tune.last.n_finished") == paused_at and kernel.value("tune.last.state") == "paused"
    kernel.run("%tune resume ctl")
    assert _wait_for(lambda: kernel.value("len(tune.last.running_trials())") == 2)

    assert kernel.run("%tune narrow ctl x=0.2:0.4").error is None
    assert _wait_for(lambda: kernel.value("len(tune.last.narrowings)") == 1, timeout=30)
    first_narrowed = kernel.value("tune.last.narrowings[-1].first_trial")
    assert _wait_for(lambda: kernel.value("tune.last.n_finished") >= first_narrowed + 4, timeout=60)
    # (through the module: a cell that reads `tune.last.trials()` would wait for the study's end)
    later = kernel.value(f"[t.params['x'] for t in __import__('hpt_jupyter').tune.last.trials() "
                         f"if t.number >= {first_narrowed}]")
    assert later and all(0.2 <= v <= 0.4 for v in later), later

    kernel.run("%tune stop ctl")
    kernel.run("%tune wait ctl")
    stopped_at = kernel.value("tune.last.n_finished")
    assert kernel.value("tune.last.state") == "stopped" and stopped_at < 200
    assert kernel.value("len(tune.last.running_trials())") == 0

    kernel.run("%tune more 3 ctl")  # +N on a stopped run: 3 more trials, on 2 slots again
    kernel.run("%tune wait ctl")
    assert kernel.value("tune.last.n_finished") == stopped_at + 3
    assert kernel.value("tune.last.state") == "finished"


KILL_CELL = """%%tune -n 6 --jobs 2 --backend {backend} --storage memory --name kill --max-failures 0 --quiet
x = tune.float(0, 1)
import os, time, pathlib
if tune.trial.number == 2:
    pathlib.Path({mark!r}).write_text(str(os.getpid()))
    time.sleep(60)
x
"""


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_a_worker_killed_mid_trial_fails_that_trial_and_the_study_goes_on(kernel, tmp_path, backend):
    mark = tmp_path / "victim.pid"
    reply = kernel.run(KILL_CELL.format(backend=backend, mark=str(mark)))
    assert reply.error is None, reply.error_text
    assert _wait_for(mark.exists, timeout=120), "trial 2 never started"
    pid = int(mark.read_text())
    assert pid != kernel.value("__import__('os').getpid()")
    os.kill(pid, signal.SIGKILL)
    kernel.run("%tune wait kill", timeout=180)
    states = kernel.value("{t.number: t.state.name for t in tune.last.trials(states=None)}")
    assert len(states) == 6 and states[2] == "FAIL", states
    assert [n for n, s in states.items() if s != "COMPLETE"] == [2], states
    failure = kernel.value("tune.last.failures[0][1]")
    assert ("died" in failure and "SIGKILL" in failure) if backend == "process" else "lost" in failure, failure
    assert kernel.value("tune.last.state") == "finished"


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_trial_timeout_ends_a_sleeping_trial(kernel, backend):
    cell = (f"%%tune -n 4 --jobs 2 --backend {backend} --storage memory --name slow --trial-timeout 2 "
            "--max-failures 0 --quiet\nx = tune.float(0, 1)\nimport time\n"
            "if tune.trial.number == 1:\n    time.sleep(120)\nx\n")
    started = time.monotonic()
    assert kernel.run(cell).error is None
    kernel.run("%tune wait slow", timeout=180)
    assert time.monotonic() - started < 60
    states = kernel.value("{t.number: t.state.name for t in tune.last.trials(states=None)}")
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}, (states, kernel.value("tune.last.failures"))
    assert "--trial-timeout 2s" in kernel.value("tune.last.failures[0][1]")


def test_options_that_cannot_work_get_one_line_before_anything_starts(kernel):
    for options, message in [
        ("--trial-timeout 5", "--trial-timeout needs --backend process or dask"),
        ("--jobs 0", "--jobs must be a positive whole number"),
        ("--cluster tcp://127.0.0.1:1", "--cluster goes with --backend dask"),
    ]:
        reply = kernel.run(f"%%tune -n 2 --storage memory {options}\nx = tune.float(0, 1)\nx")
        assert reply.error and reply.error["ename"] == "UsageError" and message in reply.error["evalue"], reply.error
    kernel.run("import threading\nlock = threading.Lock()")
    reply = kernel.run("%%tune -n 2 --storage memory --backend process --name locked\n"
                       "x = tune.float(0, 1)\nwith lock:\n    y = x\ny")
    assert reply.error and "`lock`" in reply.error["evalue"] and "--backend thread" in reply.error["evalue"]
    assert kernel.value("'locked' in tune.runs") is False


def test_killing_the_kernel_with_two_trials_running_loses_no_completed_trial(kernel, tmp_path):
    store = str(tmp_path / "hpt_studies.journal")
    cell = ("%%tune -n 40 --jobs 2 --backend process --name crash2 --quiet\n"
            "x = tune.float(0, 1)\nimport time\ntime.sleep(0.3)\nx\n")
    assert kernel.run(cell).error is None

    def two_running_after_four():
        try:
            trials = optuna.load_study(study_name="crash2", storage=_journal(store)).trials
        except KeyError:
            return False
        return (sum(t.state == TrialState.COMPLETE for t in trials) >= 4
                and sum(t.state == TrialState.RUNNING for t in trials) == 2)

    assert _wait_for(two_running_after_four, timeout=120)
    kernel.kill_and_restart()
    before = optuna.load_study(study_name="crash2", storage=_journal(store)).trials
    completed = {t.number: (t.params, t.value) for t in before if t.state == TrialState.COMPLETE}
    assert kernel.run("%load_ext hpt_jupyter").error is None
    assert kernel.run(cell.replace("--quiet", "--quiet --resume")).error is None
    kernel.run("%tune wait crash2", timeout=180)
    after = optuna.load_study(study_name="crash2", storage=_journal(store)).trials
    assert {t.number: (t.params, t.value) for t in after if t.number in completed} == completed
    assert not [t for t in after if t.state == TrialState.RUNNING]
    assert sum(t.state == TrialState.COMPLETE for t in after) >= 40 - 2


def _journal(path: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


# --- in process: what --seed guarantees with N > 1 ------------------------------------------

def _seeded_run(name: str, jobs: int, sampler: str = "tpe") -> tuple[list[int], list[tuple]]:
    jitter = random.Random()  # unseeded: trials in flight together reach the sampler in any order

    def objective():
        time.sleep(jitter.random() * 0.03)
        x = tune.float(0, 1)
        time.sleep(jitter.random() * 0.03)
        kind = tune.choice(["a", "b", "c"])
        if kind == "c":
            tune.int(1, 9, name="extra")  # a conditional knob: sampled outside the joint model
        time.sleep(0.08 * tune.trial.number)  # but they end in turn, well apart
        return x + (kind == "b")

    run = start(objective, n_trials=12, jobs=jobs, sampler=sampler, seed=7, storage="memory", report=False,
                name=name).wait()
    assert run.n_complete == 12, (run.status(), [run.failure(n) for n, _ in run.failures])
    finish_order = [t.number for t in sorted(run.trials(), key=lambda t: t.datetime_complete)]
    return finish_order, [tuple(sorted(t.params.items())) for t in sorted(run.trials(), key=lambda t: t.number)]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_same_seed_same_jobs_and_finish_order_give_the_same_trials(sampler):
    """What README promises for --jobs N > 1 (TPE and random): the same trials whenever the
    trials finish in the same order; --jobs 1 repeats exactly, as Optuna's own loop does."""
    runs: dict[tuple, list] = {}
    for attempt in range(4):  # a loaded machine can reorder two endings: compare runs that agree
        order, trials = _seeded_run(f"{sampler}-{attempt}", 4, sampler)
        runs.setdefault(tuple(order), []).append(trials)
        if len(runs[tuple(order)]) == 2:
            break
    same_order = [t for t in runs.values() if len(t) >= 2]
    assert same_order, f"no two runs finished their trials in the same order: {list(runs)}"
    assert same_order[0][0] == same_order[0][1]
    assert _seeded_run(f"{sampler}-c", 1, sampler)[1] == _seeded_run(f"{sampler}-d", 1, sampler)[1]


def test_two_slots_with_tpe_do_not_sample_the_same_point():
    def objective():
        x = tune.float(0, 1)
        y = tune.float(0, 1)
        time.sleep(0.05)
        return (x - 0.5) ** 2 + (y - 0.5) ** 2

    run = start(objective, n_trials=30, jobs=2, sampler="tpe", seed=3, storage="memory", report=False,
                name="liar").wait()
    points = [(t.params["x"], t.params["y"]) for t in run.trials()]
    assert len(set(points)) == len(points)


def test_the_thread_backend_refuses_a_trial_timeout_with_one_line():
    with pytest.raises(TuneError, match="--trial-timeout needs --backend process or dask"):
        start(lambda: tune.float(0, 1), trial_timeout=1, storage="memory", report=False)


def test_running_trials_show_in_the_dashboards_table_and_header(kernel):
    reply = kernel.run("%%tune -n 40 --jobs 2 --storage memory --name shown\nx = tune.float(0, 1)\n"
                       "import time\ntime.sleep(0.5)\nx\n")
    assert reply.error is None, reply.error_text
    pages = kernel.find_widget(reply.msg_id, "ToggleButtonsModel", _dom_classes=["hpt-pages"])
    kernel.update_widget(pages, {"index": 1})  # Trials

    def shows_two_running():
        html = kernel.html_widgets(reply.msg_id, settle=0.3)
        table = next((h for h in html if "hpt-trials" in h), "")
        header = next((h for h in html if "sampler" in h or "tpe" in h), "")
        return table.count("<td>running</td>") == 2 and "(2 running)" in header

    try:
        assert _wait_for(shows_two_running, timeout=30), kernel.html_widgets(reply.msg_id)
    finally:
        kernel.run("%tune stop shown\n%tune wait shown")
    table = next(h for h in kernel.html_widgets(reply.msg_id, settle=1.0) if "hpt-trials" in h)
    assert "<td>running</td>" not in table


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_a_workers_failure_shows_the_cells_own_lines_and_the_data_travels_once(kernel, backend):
    kernel.run("import numpy as np\nbig = np.arange(2_000_000, dtype=np.float64)")  # 16 MB
    reply = kernel.run(f"%%tune -n 4 --jobs 2 --backend {backend} --storage memory --name tb --quiet "
                       "--max-failures 0\n"
                       "x = tune.float(0, 1)\n"
                       "total = big[:10].sum()\n"
                       "if x > 2:\n"
                       "    pass\n"
                       "raise ValueError(f'boom {total}')\n"
                       "x\n")
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait tb", timeout=180)
    assert kernel.value("tune.last.n_failed") == 4
    text = kernel.value("tune.last.failure(tune.last.failures[0][0])")
    assert "ValueError: boom 45.0" in text and "line 6" in text and "raise ValueError" in text, text
    assert "hpt_jupyter" not in text, text
    if backend == "process":
        assert kernel.value("tune.last.executor.started_workers") == 2  # reused for every trial
    else:
        assert kernel.value("tune.last.executor.scatters") == 1


def test_a_dask_client_passed_from_python_runs_the_trials():
    import distributed  # the test extra installs it
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster) as client:
        def objective():
            import os

            x = tune.float(0, 1)
            return (x - 0.25) ** 2 + 0 * os.getpid()

        run = start(objective, n_trials=8, jobs=2, backend="dask", cluster=client, storage="memory",
                    report=False, name="client").wait()
        assert run.n_complete == 8, run.status()
        assert client.status == "running"  # a client the user passed stays theirs, open
        assert "dask slots on the given Dask client" in run.slots_text()
        run.extend(2)
        assert run.wait().n_complete == 10
        time.sleep(0.5)
        import threading

        assert not [t for t in threading.enumerate() if t.name == "hpt-dask-accept"]  # none left behind


def test_tune_report_prunes_only_when_a_pruner_is_given():
    def objective():
        x = tune.float(0, 1)
        for step in range(4):
            if tune.should_stop():
                return None  # never reached: report raises first
            tune.report(x + step, step)
        return x

    plain = start(objective, n_trials=8, storage="memory", report=False, name="no-pruner").wait()
    assert plain.n_complete == 8
    pruned = start(objective, n_trials=8, storage="memory", report=False, name="threshold",
                   pruner=optuna.pruners.ThresholdPruner(upper=2.5)).wait()
    states = [t.state for t in pruned.trials(states=None)]
    assert states == [TrialState.PRUNED] * 8  # x + 3 > 2.5 whatever x is
    for trial in pruned.trials(states=None):  # each ended at the first report above 2.5
        assert max(trial.intermediate_values) == (2 if trial.params["x"] > 0.5 else 3)


def test_a_function_that_uses_tune_travels_to_workers_while_other_runs_exist():
    def objective():
        return (tune.float(0, 1, name="x") - 0.5) ** 2

    first = start(objective, n_trials=2, storage="memory", report=False, name="first").wait()
    assert first.n_complete == 2  # tune.runs now holds a run, with its locks and threads
    run = start(objective, n_trials=4, jobs=2, backend="process", storage="memory", report=False,
                name="second").wait()
    assert run.n_complete == 4, run.status()
    run.extend(2)  # a second start of the same run opens its workers again
    assert run.wait().n_complete == 6, run.status()


def test_a_process_worker_killed_between_trials_is_replaced_and_no_trial_fails(tmp_path):
    mark = tmp_path / "pid"

    def objective():
        x = tune.float(0, 1)
        mark.write_text(str(os.getpid()))
        time.sleep(0.2)
        return x

    run = start(objective, n_trials=6, backend="process", storage="memory", report=False, name="idle-kill")
    assert _wait_for(lambda: run.n_finished >= 1, timeout=60)
    run.pause()
    assert _wait_for(lambda: not run.running_trials(), timeout=30)
    os.kill(int(mark.read_text()), signal.SIGKILL)
    time.sleep(0.3)
    run.resume()
    run.wait()
    assert run.n_complete == 6 and run.n_failed == 0, (run.status(), run.failures)
    assert run.executor.started_workers == 2
