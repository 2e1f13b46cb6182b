"""Large notebook values shared with local worker processes instead of copied into each: the
same results, a clear error for a write, and nothing left behind however the run ends."""

from __future__ import annotations

import glob
import os
import signal

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from conftest import wait_until
from hpt_jupyter import start
from hpt_jupyter.core.executors import sharing
from kernel import Kernel

SEGMENT = "memfd:hpt_jupyter-data"


def holders() -> set[int]:
    """Processes that hold or map a run's shared file (the kernel's descriptor, workers' maps)."""
    found = set()
    for proc in glob.glob("/proc/[0-9]*"):
        pid = int(proc.rsplit("/", 1)[1])
        try:
            if any(SEGMENT in os.readlink(fd) for fd in glob.glob(f"{proc}/fd/*")):
                found.add(pid)
                continue
            with open(f"{proc}/maps") as maps:
                if SEGMENT in maps.read():
                    found.add(pid)
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def nothing_left() -> bool:
    return not holders() and not glob.glob("/dev/shm/*hpt*")


data = np.random.default_rng(0).normal(size=(1_000, 1_000))  # 8 MB
frame = pd.DataFrame({"a": np.arange(500_000, dtype=float), "b": np.arange(500_000) % 7})  # 8 MB
sparse = scipy.sparse.random(2_000, 2_000, density=0.05, format="csr", random_state=0)  # 2.4 MB


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_shared_values_give_the_same_results_as_copied_ones(monkeypatch, backend):
    def objective(trial):  # defined here: a worker cannot import this file, so it travels by value
        x = trial.suggest_float("x", 0, 1)
        rows = int(x * 999)
        return float(data[rows].sum() + frame["a"].iloc[rows * 100] + frame["b"].sum() + sparse[rows].sum())

    shared = start(objective, n_trials=6, backend=backend, jobs=1, seed=3, storage="memory", report=False).wait()
    assert shared.n_complete == 6, shared.failures
    assert "shared 18 MB with" in shared.slots_text() and "(no copies)" in shared.slots_text()

    monkeypatch.setattr(sharing, "SHARE_MIN_BYTES", float("inf"))  # today's path: inside the pickle
    copied = start(objective, n_trials=6, backend=backend, jobs=1, seed=3, storage="memory", report=False).wait()
    assert "shared" not in copied.slots_text()
    assert [t.values for t in copied.trials()] == [t.values for t in shared.trials()]
    assert [t.params for t in copied.trials()] == [t.params for t in shared.trials()]
    wait_until(nothing_left, "the shared file to be gone once the runs ended", timeout=30)


def test_small_values_keep_travelling_inside_the_pickle():
    small = np.arange(1000.0)

    def reads_small(trial):
        return float(small.sum()) * trial.suggest_float("x", 0, 1)

    run = start(reads_small, n_trials=2, backend="process", storage="memory", report=False, launch=False)
    assert run.executor.shared is None and "shared" not in run.slots_text()


@pytest.fixture
def kernel_with_data(tmp_path):
    k = Kernel(str(tmp_path))
    assert k.run("%load_ext hpt_jupyter").error is None
    assert k.run("import numpy as np\nfeatures = np.ones((2_000, 1_000))  # 16 MB").error is None
    yield k
    k.shutdown()


CELL = """%%tune -n {n} --backend process --jobs 2 --storage memory --name {name} --quiet --max-failures 0
x = tune.float(0, 1)
import time
if tune.trial.number == {writer}:
    features[0, 0] = x
time.sleep({sleep})
float(features.sum()) * x
"""


def test_a_write_into_a_shared_array_fails_that_trial_with_a_clear_message(kernel_with_data):
    k = kernel_with_data
    assert k.run(CELL.format(n=4, name="writes", writer=1, sleep=0)).error is None
    assert k.run("%tune wait writes", timeout=120).error is None
    failures = dict(k.value("tune.runs['writes'].failures"))
    assert list(failures) == [1]
    assert failures[1].startswith("ValueError: assignment destination is read-only: `features` is shared read-only "
                                  "between the workers, not copied into each; copy it in the trial to change it "
                                  "(features = features.copy())"), failures
    assert k.value("float(features[0, 0])") == 1.0  # the notebook's own array is untouched
    assert "shared 16 MB with 2 workers (no copies)" in k.run("%tune status writes").stdout
    wait_until(nothing_left, "the shared file to be gone after a normal end", timeout=30)


def test_nothing_is_left_after_a_stop_a_failed_run_or_a_killed_kernel(kernel_with_data):
    k = kernel_with_data
    assert k.run(CELL.format(n=40, name="stopped", writer=-1, sleep=0.3)).error is None
    wait_until(lambda: k.value("tune.runs['stopped'].n_finished") >= 2, "two trials", timeout=60)
    assert holders(), "while the run runs, its workers map the shared file"
    assert k.run("%tune stop stopped\n%tune wait stopped", timeout=60).error is None
    assert k.value("tune.runs['stopped'].state") == "stopped"
    wait_until(nothing_left, "the shared file to be gone after a Stop", timeout=30)

    # Every trial fails: the run ends as failed after five in a row.
    failing = CELL.format(n=20, name="failing", writer=-1, sleep=0).replace("--max-failures 0", "--max-failures 5")
    assert k.run(failing.replace("float(features.sum()) * x", "1 / 0")).error is None
    assert k.run("%tune wait failing", timeout=60).error is None
    assert k.value("tune.runs['failing'].state") == "failed"
    wait_until(nothing_left, "the shared file to be gone after a failed run", timeout=30)

    # The kernel is killed mid-run; its workers go with it, and so does the data.
    assert k.run(CELL.format(n=40, name="killed", writer=-1, sleep=0.3)).error is None
    wait_until(lambda: k.value("tune.runs['killed'].n_finished") >= 1, "a trial", timeout=60)
    workers = holders() - {k.pid}
    assert workers, "the workers map the shared file"
    os.kill(k.pid, signal.SIGKILL)
    wait_until(nothing_left, "the killed kernel's workers to exit and the shared file to be freed", timeout=60)
    k.kill_and_restart()
    assert k.run("%load_ext hpt_jupyter\nimport numpy as np\nfeatures = np.ones((2_000, 1_000))").error is None
    assert k.run(CELL.format(n=4, name="after", writer=-1, sleep=0)).error is None
    assert k.run("%tune wait after", timeout=120).error is None
    assert k.value("tune.runs['after'].n_complete") == 4
    wait_until(nothing_left, "the new run's shared file to be gone", timeout=30)
