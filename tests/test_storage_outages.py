"""Shared stores that go away and come back: a real PostgreSQL server stopped and started under a
running study, a journal file whose lock another process holds, kernels that die while others
share their study (heartbeats), and faults that waiting cannot mend.

These tests stop their server, so each has one of its own (tests/postgres.py), not the session's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import wait_until
from hpt_jupyter import start, tune
from hpt_jupyter.core.heartbeat import HEARTBEAT_KEY
from hpt_jupyter.core.storage import TRACEBACK_KEY, resolve_storage
from kernel import Kernel
from postgres import own_postgres  # noqa: F401 (a fixture)
from test_shared_storage import open_sidebar

optuna.logging.set_verbosity(optuna.logging.WARNING)

CELL = """%%tune -n {n} --storage {url} --name {name} --sampler random {options}
x = tune.float(-1, 1)
import time; time.sleep({seconds})
x * x
"""


@pytest.fixture
def server(own_postgres):
    return own_postgres


_readers: dict[str, optuna.storages.RDBStorage] = {}


def stored(url: str, name: str) -> list:
    """The study's trials as stored, read the way optuna-dashboard does: one storage for the
    test's polling (an RDBStorage per read would hold its own connections until collected)."""
    if url not in _readers:
        _readers[url] = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=name, storage=_readers[url]).get_trials(deepcopy=False)


def check_whole(trials: list, n: int) -> None:
    """``n`` trials, numbered 0..n-1 once each, every one complete (none lost, none RUNNING)."""
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(n)), f"{len(numbers)} trials: {numbers}"
    odd = [(t.number, t.state.name, t.user_attrs.get(TRACEBACK_KEY)) for t in trials if t.state != TrialState.COMPLETE]
    assert not odd, odd


def header(kernel: Kernel, msg_id: str) -> str:
    found = [h for h in kernel.html_widgets(msg_id, 0.2) if "hpt-header" in h]
    return found[-1] if found else ""


@pytest.mark.parametrize("outage", [3, 30])
def test_a_database_restart_in_the_middle_of_a_study_costs_it_nothing(server, tmp_path, outage):
    url = server.new_database("outage")
    kernel = Kernel(str(tmp_path))
    try:
        assert kernel.run("%load_ext hpt_jupyter").error is None
        sidebar = open_sidebar(kernel)  # JupyterLab's Tuning sidebar, as the extension opens it
        cell = kernel.run(CELL.format(n=40, url=url, name="outage", seconds=0.25,
                                      options="--jobs 2 --backend process"))
        assert cell.error is None, cell.error_text
        wait_until(lambda: kernel.value("tune.last.n_finished") >= 8, "8 trials before the outage")
        stopped = time.monotonic()
        server.stop()
        # Where the user looks: the dashboard's header and %tune status say the store is away.
        waiting = wait_until(lambda: "storage unreachable since" in header(kernel, cell.msg_id)
                             and header(kernel, cell.msg_id), "the header to say the store is unreachable")
        assert "retrying" in waiting, waiting
        status = kernel.run("%tune status")
        assert "storage unreachable since" in status.stdout, status.stdout
        def sidebar_says() -> bool:
            kernel._drain(None, 0.2)  # what the kernel sent since
            listed = [study.get("storage", "") for m in kernel.arrived if m["msg_type"] == "comm_msg"
                      and m["content"]["comm_id"] == sidebar for study in m["content"]["data"].get("studies", [])]
            return any(text.startswith("storage unreachable since") for text in listed)

        wait_until(sidebar_says, "the sidebar's message to say the store is unreachable", timeout=30)
        assert kernel.value("tune.last.is_alive") is True
        time.sleep(max(0.0, outage - (time.monotonic() - stopped)))
        server.start()
        assert kernel.run("%tune wait", timeout=300).error is None
        state, finished, failed = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.n_failed)")
        assert (state, finished, failed) == ("finished", 40, 0), kernel.run("%tune status").stdout
        check_whole(stored(url, "outage"), 40)
        final = header(kernel, cell.msg_id)
        assert "storage unreachable" not in final and "finished" in final, final
        assert kernel.value("'x' in dir()") is True  # the best values were injected
    finally:
        kernel.shutdown()


def objective():
    x = tune.float(-1, 1)
    time.sleep(0.2)
    return x * x


def test_a_store_away_longer_than_the_run_waits_pauses_it_and_resume_goes_on(server):
    url = server.new_database("paused")
    run = start(objective, n_trials=30, storage=url, name="paused", jobs=2, backend="thread",
                sampler="random", report=False, storage_wait=3)
    heard = []
    run.subscribe(lambda event: heard.append(event.message) if event.kind == "storage" else None)
    wait_until(lambda: run.n_finished >= 6, "6 trials before the outage")
    server.stop()
    run.wait()
    assert run.state == "stopped" and run.waiting_for_store, run.status()
    assert run.reason.startswith("paused: storage unreachable since"), run.reason
    assert f"%tune resume {run.name}" in run.reason and "Connection refused" in run.reason, run.reason
    assert run.best_value is not None  # the best so far is known (and injected by the magic)
    assert any(text and text.startswith("storage unreachable since") for text in heard), heard
    finished_before = run.n_finished
    server.start()
    run.resume()
    run.wait()
    assert run.state == "finished" and run.n_finished == 30 and not run.waiting_for_store, run.status()
    assert run.n_finished >= finished_before
    check_whole(stored(url, "paused"), 30)


def test_a_fault_that_waiting_cannot_mend_ends_the_run_at_once_with_the_databases_own_words(server):
    url = server.new_database("locked_out")
    run = start(objective, n_trials=200, storage=url, name="locked_out", sampler="random", report=False)
    wait_until(lambda: run.n_finished >= 3, "3 trials")
    # The password changes and every connection is cut: reconnecting is refused for good.
    server.admin(f"ALTER ROLE {server.user} PASSWORD 'changed'")
    server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{server.user}'")
    started = time.monotonic()
    run.wait(timeout=60)
    assert not run.is_alive and time.monotonic() - started < 30  # at once, not after --storage-wait
    assert run.state == "failed", run.status()
    assert "password authentication failed" in run.reason, run.reason
    assert "invalid data in the commit" not in run.reason and server.password not in run.reason


def _hold_lock(path: str, seconds: float) -> subprocess.Popen:
    """Another process takes the journal's lock (as Optuna's writers do: a symlink) and keeps it."""
    code = ("import os, sys, time; path = sys.argv[1]; os.symlink(path, path + '.lock'); "
            "print('held', flush=True); time.sleep(float(sys.argv[2])); os.unlink(path + '.lock')")
    holder = subprocess.Popen([sys.executable, "-c", code, path, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_journal_whose_lock_another_process_holds_makes_the_run_wait_and_go_on(tmp_path):
    path = str(tmp_path / "held.journal")
    run = start(objective, n_trials=24, storage=path, name="held", jobs=2, sampler="random", report=False)
    heard = []
    run.subscribe(lambda event: heard.append(event.message) if event.kind == "storage" else None)
    wait_until(lambda: run.n_finished >= 4, "4 trials before the lock is taken")
    holder = _hold_lock(path, 6)
    try:
        wait_until(lambda: run.storage_problem, "the run to say the store does not answer", timeout=30)
        assert run.storage_problem.startswith("storage not answering since"), run.storage_problem
        during = run.n_finished
        assert run.is_alive
    finally:
        holder.wait(timeout=60)
    run.wait()
    assert run.state == "finished" and run.n_finished == 24 and run.n_failed == 0, run.status()
    assert during < 24 and heard[-1] is None, heard  # it waited, then said the store was back
    check_whole(optuna.load_study(study_name="held", storage=resolve_storage(path)[0]).trials, 24)


def test_an_sqlite_file_another_process_locks_for_longer_than_its_timeout_makes_the_run_wait(tmp_path):
    path = tmp_path / "locked.db"
    spec = f"sqlite:///{path}"
    run = start(objective, n_trials=20, storage=spec, name="locked", sampler="random", report=False)
    wait_until(lambda: run.n_finished >= 3, "3 trials before the lock is taken")
    # Another process holds a write lock for longer than SQLite's 5 s busy timeout: each write
    # then fails with "database is locked", which is retried.
    code = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(8); c.execute('COMMIT')")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    try:
        reason = wait_until(lambda: run.storage_problem, "the run to say the store is locked", timeout=30)
        assert "database is locked" in reason or "not answering" in reason, reason
    finally:
        holder.wait(timeout=60)
    run.wait()
    assert run.state == "finished" and run.n_finished == 20 and run.n_failed == 0, run.status()
    check_whole(stored(spec, "locked"), 20)


def _dead_kernels_trial(storage_spec: str, name: str, beat) -> int:
    """A RUNNING trial left in the study by a kernel that died elsewhere; its id."""
    storage = resolve_storage(storage_spec)[0]
    study = optuna.create_study(study_name=name, storage=storage)
    trial = study.ask()
    trial.suggest_float("x", -1, 1)
    beat(storage, trial._trial_id)
    return trial._trial_id


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_whose_kernel_stopped_beating_is_failed_by_a_live_kernel(tmp_path, kind):
    if kind == "journal":
        spec = str(tmp_path / "beats.journal")
        beat = lambda storage, trial_id: storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())  # noqa: E731
    else:
        spec = f"sqlite:///{tmp_path / 'beats.db'}"
        beat = lambda storage, trial_id: storage.record_heartbeat(trial_id)  # noqa: E731 - Optuna's own table
    orphan = _dead_kernels_trial(spec, "beats", beat)
    seen = []
    run = start(objective, n_trials=30, storage=spec, name="beats", sampler="random", report=False,
                grace_period=2, launch=False)
    run.subscribe(lambda event: seen.append(event.trial) if event.kind == "trial_finished" else None)
    run.start()
    run.wait()
    failed = [t for t in seen if t.state == TrialState.FAIL]
    assert [t._trial_id for t in failed] == [orphan], seen
    assert "stopped sending heartbeats" in failed[0].user_attrs[TRACEBACK_KEY]
    assert "stopped sending heartbeats" in run.failure(failed[0].number)
    assert run.state == "finished" and run.n_failed == 1 and run.n_finished == 30, run.status()
    stored_trials = optuna.load_study(study_name="beats", storage=resolve_storage(spec)[0]).trials
    assert not [t for t in stored_trials if t.state == TrialState.RUNNING]


def test_a_trial_that_still_beats_is_left_to_its_kernel(tmp_path):
    spec = str(tmp_path / "alive.journal")
    storage = resolve_storage(spec)[0]
    orphan = _dead_kernels_trial(spec, "alive", lambda s, i: s.set_trial_system_attr(i, HEARTBEAT_KEY, time.time()))
    stop = False

    def keep_beating() -> None:  # the other kernel, alive: it beats every half second
        while not stop:
            storage.set_trial_system_attr(orphan, HEARTBEAT_KEY, time.time())
            time.sleep(0.5)

    beater = threading.Thread(target=keep_beating, daemon=True)
    beater.start()
    try:
        run = start(objective, n_trials=25, storage=spec, name="alive", sampler="random", report=False,
                    grace_period=2).wait()
    finally:
        stop = True
        beater.join()
    assert run.n_failed == 0 and run.state == "finished"
    assert storage.get_trial(orphan).state == TrialState.RUNNING


def beaten(url: str) -> set[int]:
    """The trials with a heartbeat in Optuna's table."""
    import psycopg

    with psycopg.connect(url) as connection:
        return {row[0] for row in connection.execute("SELECT trial_id FROM trial_heartbeats")}


SLOW_CELL = """%%tune -n 60 --storage {url} --name shared --sampler random --grace-period 6 {options}
x = tune.float(-1, 1)
import time; time.sleep({seconds})
x * x
"""


def test_a_kernel_killed_mid_trial_has_its_trials_failed_by_the_kernel_that_shares_its_study(server, tmp_path):
    url = server.new_database("shared_beats")
    live, doomed = Kernel(str(tmp_path)), Kernel(str(tmp_path))
    try:
        for kernel in (live, doomed):
            assert kernel.run("%load_ext hpt_jupyter").error is None
        cell = live.run(SLOW_CELL.format(url=url, options="", seconds=0.4))
        assert cell.error is None, cell.error_text
        wait_until(lambda: live.value("tune.last.n_finished") >= 2, "the live kernel's first trials")
        # The other kernel joins with two slow trials at once, and dies while it runs them.
        joined = doomed.run(SLOW_CELL.format(url=url, options="--jobs 2", seconds=120))
        assert joined.error is None, joined.error_text
        wait_until(lambda: len([t for t in stored(url, "shared") if t.state == TrialState.RUNNING]) == 3,
                   "both of the joining kernel's trials running beside the live one's")
        numbers = wait_until(lambda: (found := doomed.value("[t.number for t in tune.last.running_trials()]"))
                             and len(found) == 2 and found, "the joining kernel's two running trials")
        theirs = {t._trial_id for t in stored(url, "shared") if t.number in numbers}
        assert len(theirs) == 2 and all(t.state == TrialState.RUNNING for t in stored(url, "shared")
                                        if t._trial_id in theirs), theirs
        wait_until(lambda: beaten(url) >= theirs, "the joining kernel's trials to have beaten (half a second in)")
        os.kill(doomed.pid, signal.SIGKILL)  # as a machine that loses power: no goodbye
        killed = time.monotonic()
        wait_until(lambda: all(t.state == TrialState.FAIL for t in stored(url, "shared") if t._trial_id in theirs),
                   "the live kernel to fail the dead kernel's trials", timeout=60)
        assert time.monotonic() - killed < 6 + 2 * 1.0 + 5  # the grace period, a beat or two, and some slack
        for trial in stored(url, "shared"):
            if trial._trial_id in theirs:
                assert "stopped sending heartbeats" in trial.user_attrs[TRACEBACK_KEY]
        # The live kernel's own views show them failed, and it goes on to its budget.
        wait_until(lambda: "2 failed" in header(live, cell.msg_id), "the live dashboard to count 2 failed")
        assert live.run("%tune wait", timeout=300).error is None
        state, finished, failed = live.value("(tune.last.state, tune.last.n_finished, tune.last.n_failed)")
        assert (state, finished, failed) == ("finished", 60, 2)
        trials = stored(url, "shared")
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        assert sorted(t.number for t in trials) == list(range(len(trials)))
    finally:
        live.shutdown()
        try:
            doomed.shutdown()
        except Exception:  # noqa: BLE001 - it was killed
            pass
