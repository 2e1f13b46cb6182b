"""GPUs and CPU threads per trial, through a real kernel.

This machine has no GPU. The kernels here start with a made-up ``CUDA_VISIBLE_DEVICES`` (what a
GPU server's scheduler sets), or with a stand-in ``nvidia-smi`` on the PATH that lists devices
as the driver's tool does: what is tested is how the devices are shared out (each trial writes
down what it saw, and trials that ran at the same time must have seen different devices), not
CUDA itself. The out-of-memory test raises PyTorch's own ``torch.cuda.OutOfMemoryError`` from the
cell, as a GPU would.
"""

from __future__ import annotations

import json
import os
import stat
from itertools import combinations
from pathlib import Path

import pytest

from conftest import wait_until
from hpt_jupyter import TuneError, start, tune
from hpt_jupyter.core.resources import THREAD_VARIABLES
from kernel import Kernel

FOUR_GPUS = "0,1,2,3"

# Each trial writes down when it ran and what it saw; the kernel's `RECORDS` folder travels to
# worker processes with the cell.
CELL = """%%tune -n {n} {options} --storage memory --name {name} {quiet}
x = tune.float(0, 1)
import json, os, time
started = time.time()
time.sleep({sleep})
seen = {{"number": tune.trial.number, "start": started, "end": time.time(), "pid": os.getpid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": tune.device(), "devices": tune.devices()}}
with open(os.path.join(RECORDS, f"{{seen['number']}}.json"), "w") as out:
    json.dump(seen, out)
x
"""


@pytest.fixture
def gpu_kernel(tmp_path):
    """A kernel started where four GPUs are visible."""
    # The libraries' own thread defaults, whatever this process's environment says.
    environment = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    k = Kernel(str(tmp_path), env={**environment, "CUDA_VISIBLE_DEVICES": FOUR_GPUS})
    assert k.run("%load_ext hpt_jupyter").error is None
    records = tmp_path / "records"
    records.mkdir()
    assert k.run(f"RECORDS = {str(records)!r}").error is None
    yield k
    k.shutdown()


def _records(kernel: Kernel) -> list[dict]:
    folder = Path(kernel.value("RECORDS"))
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["number"])


def _no_device_shared_at_once(records: list[dict], devices_of) -> None:
    at_once = 0
    for a, b in combinations(records, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:
            at_once += 1
            assert not set(devices_of(a)) & set(devices_of(b)), (a, b)
    assert at_once, "no two trials ran at the same time: the test proves nothing"


def _run(kernel: Kernel, name: str, options: str, n: int = 8, sleep: float = 0.4, quiet: bool = True):
    reply = kernel.run(CELL.format(n=n, options=options, name=name, sleep=sleep, quiet="--quiet" if quiet else ""))
    assert reply.error is None, reply.error_text
    waited = kernel.run(f"%tune wait {name}", timeout=300)
    assert waited.error is None, waited.error_text
    assert kernel.value(f"tune.runs[{name!r}].n_complete") == n, kernel.value(f"tune.runs[{name!r}].status()")
    return reply


@pytest.mark.parametrize("jobs, gpus", [(2, 2), (4, 1)])
def test_each_process_slot_owns_its_gpus_and_no_two_running_trials_share_one(gpu_kernel, jobs, gpus):
    _run(gpu_kernel, "proc", f"--backend process --jobs {jobs} --gpus-per-trial {gpus}")
    records = _records(gpu_kernel)
    assert len(records) == 8
    ids = FOUR_GPUS.split(",")
    expected = {",".join(ids[k * gpus:(k + 1) * gpus]) for k in range(jobs)}
    assert {r["cuda"] for r in records} <= expected and len({r["cuda"] for r in records}) > 1
    # A worker numbers its own devices from 0, as CUDA does under CUDA_VISIBLE_DEVICES.
    assert {r["device"] for r in records} == {"cuda:0"}
    assert {tuple(r["devices"]) for r in records} == {tuple(f"cuda:{i}" for i in range(gpus))}
    _no_device_shared_at_once(records, lambda r: r["cuda"].split(","))
    status = gpu_kernel.run("%tune status proc").stdout
    assert f"{jobs} process slots · {gpus} GPU{'s' if gpus > 1 else ''} each" in status
    placements = gpu_kernel.value("[t.system_attrs.get('hpt:placement') for t in tune.runs['proc'].trials()]")
    assert placements == [("GPUs " if gpus > 1 else "GPU ") + r["cuda"] for r in records]


def test_thread_slots_are_told_their_device_and_the_dashboard_shows_where_each_trial_ran(gpu_kernel):
    # No --jobs: four GPUs, one each, make four slots.
    reply = _run(gpu_kernel, "threads", "--backend thread --gpus-per-trial 1", quiet=False)
    records = _records(gpu_kernel)
    assert {r["cuda"] for r in records} == {FOUR_GPUS}  # threads share the kernel's environment
    assert {r["device"] for r in records} <= {f"cuda:{k}" for k in range(4)}
    assert len({r["device"] for r in records}) > 1
    _no_device_shared_at_once(records, lambda r: r["devices"])
    html = "\n".join(gpu_kernel.html_widgets(reply.msg_id))
    assert "4 thread slots · 1 GPU each" in html
    assert "<th>device</th>" in html
    for r in records:
        assert f"<td>GPU {r['device'].split(':')[1]}</td>" in html


def test_dask_trials_ask_for_the_gpu_resource_of_the_clusters_workers(gpu_kernel):
    # A cluster as a GPU server runs it: one worker per GPU, each with its own device and GPU=1.
    setup = gpu_kernel.run("""
import logging
from distributed import Nanny, Scheduler, SpecCluster
gpu_cluster = SpecCluster(
    scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}},
    workers={k: {"cls": Nanny, "options": {"host": "127.0.0.1", "nthreads": 1, "resources": {"GPU": 1},
                                           "env": {"CUDA_VISIBLE_DEVICES": str(k + 5)}}} for k in range(2)},
    silence_logs=logging.CRITICAL)
""", timeout=120)
    assert setup.error is None, setup.error_text
    address = gpu_kernel.value("gpu_cluster.scheduler_address")
    # No --jobs: the cluster's GPUs decide the slots.
    _run(gpu_kernel, "gpus", f"--backend dask --cluster {address} --gpus-per-trial 1", n=6)
    records = _records(gpu_kernel)
    assert {r["cuda"] for r in records} == {"5", "6"}
    assert {r["device"] for r in records} == {"cuda:0"}
    _no_device_shared_at_once(records, lambda r: [r["cuda"]])
    assert "2 dask slots" in gpu_kernel.run("%tune status gpus").stdout

    # A cluster none of whose workers offers a GPU: one line, at once, not a wait for ever.
    assert gpu_kernel.run("""
from distributed import LocalCluster
cpu_cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.CRITICAL)
""").error is None
    address = gpu_kernel.value("cpu_cluster.scheduler_address")
    reply = gpu_kernel.run(CELL.format(n=2, options=f"--backend dask --cluster {address} --gpus-per-trial 1",
                                       name="nogpu", sleep=0, quiet="--quiet"))
    assert reply.error is None, reply.error_text
    waited = gpu_kernel.run("%tune wait nogpu\nprint(tune.runs['nogpu'].state, tune.runs['nogpu'].reason)",
                            timeout=60)
    assert waited.stdout.strip().splitlines()[-1].startswith(
        "failed --gpus-per-trial 1: no worker of the Dask cluster offers a GPU resource of 1")
    assert gpu_kernel.value("tune.runs['nogpu'].n_finished") == 0
    gpu_kernel.run("gpu_cluster.close(); cpu_cluster.close()")


def test_a_dask_local_cluster_gives_each_worker_its_own_gpus(gpu_kernel):
    watched = f"{list(THREAD_VARIABLES) + ['PYTHONHASHSEED', 'MALLOC_TRIM_THRESHOLD_']}"
    environment = f"{{k: v for k, v in __import__('os').environ.items() if k in {watched}}}"
    before = gpu_kernel.value(environment)
    assert "OMP_NUM_THREADS" not in before  # the fixture's kernel starts with the libraries' defaults
    _run(gpu_kernel, "local", "--backend dask --jobs 2 --gpus-per-trial 2", n=6)
    records = _records(gpu_kernel)
    assert {r["cuda"] for r in records} == {"0,1", "2,3"}
    assert {tuple(r["devices"]) for r in records} == {("cuda:0", "cuda:1")}
    _no_device_shared_at_once(records, lambda r: r["cuda"].split(","))
    # Dask's nannies set OMP_NUM_THREADS=1 and more in the environment of the process starting
    # them; the kernel's own is put back, or later process workers would get one BLAS thread.
    assert gpu_kernel.value(environment) == before


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_a_trial_out_of_gpu_memory_fails_with_that_reason_and_its_worker_is_replaced(gpu_kernel, backend):
    cell = """%%tune -n 5 --backend BACKEND --gpus-per-trial 1 --jobs 1 --storage memory --name oom --quiet --max-failures 0
x = tune.float(0, 1)
import json, os, torch
number = tune.trial.number
with open(os.path.join(RECORDS, f"{number}.json"), "w") as out:
    json.dump({"number": number, "pid": os.getpid()}, out)
if number == 1:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
if number == 3:
    raise ValueError("an ordinary bug")
x
""".replace("BACKEND", backend)
    assert gpu_kernel.run(cell).error is None
    assert gpu_kernel.run("%tune wait oom", timeout=300).error is None
    pids = {r["number"]: r["pid"] for r in _records(gpu_kernel)}
    assert pids[0] == pids[1] != pids[2]  # a new worker after the out-of-memory error
    assert pids[2] == pids[3] == pids[4]  # an ordinary failure keeps the worker
    failures = dict(gpu_kernel.value("tune.runs['oom'].failures"))
    assert failures[1] == "out of GPU memory on cuda:0 (line 8)"  # the line of the %%tune cell
    assert failures[3].startswith("ValueError: an ordinary bug")
    assert gpu_kernel.value("tune.runs['oom'].n_complete") == 3


THREADS_CELL = """%%tune -n 4 {options} --storage memory --name {name} --quiet
x = tune.float(0, 1)
import json, os, time
import numpy, threadpoolctl, torch
torch.ones(64, 64) @ torch.ones(64, 64)
seen = {{"number": tune.trial.number, "start": time.time(), "pid": os.getpid(),
        "pools": sorted({{info["num_threads"] for info in threadpoolctl.threadpool_info()}}),
        "torch": torch.get_num_threads(), "cores": sorted(os.sched_getaffinity(0))}}
time.sleep(0.3)
seen["end"] = time.time()
with open(os.path.join(RECORDS, f"{{seen['number']}}.json"), "w") as out:
    json.dump(seen, out)
x
"""


def _thread_run(kernel: Kernel, name: str, options: str) -> list[dict]:
    folder = kernel.value("RECORDS")
    kernel.run(f"import glob, os\nfor f in glob.glob(os.path.join({folder!r}, '*.json')): os.remove(f)")
    assert kernel.run(THREADS_CELL.format(options=options, name=name)).error is None
    assert kernel.run(f"%tune wait {name}", timeout=300).error is None
    assert kernel.value(f"tune.runs[{name!r}].n_complete") == 4, kernel.value(f"(tune.runs[{name!r}].failures, tune.runs[{name!r}].reason, tune.runs[{name!r}].state)")
    return _records(kernel)


def test_cpus_per_trial_limits_blas_openmp_and_torch_threads_and_pins_process_workers(gpu_kernel):
    cores = len(os.sched_getaffinity(0))
    assert cores >= 2, "one thread per trial cannot be told from the default on a single core"
    unlimited = _thread_run(gpu_kernel, "free", "--backend process --jobs 2")
    assert max(max(r["pools"]) for r in unlimited) == cores  # without it: a thread per core
    assert {len(r["cores"]) for r in unlimited} == {cores}

    limited = _thread_run(gpu_kernel, "pinned", "--backend process --jobs 2 --cpus-per-trial 1")
    assert {tuple(r["pools"]) for r in limited} == {(1,)}
    assert {r["torch"] for r in limited} == {1}
    assert {len(r["cores"]) for r in limited} == {1}
    cores_of = {r["pid"]: tuple(r["cores"]) for r in limited}  # each worker on a core of its own
    assert len(cores_of) == 2 and len(set(cores_of.values())) == 2, cores_of
    assert "2 process slots · 1 CPU thread each (pinned)" in gpu_kernel.run("%tune status pinned").stdout

    # The notebook imported PyTorch in an earlier cell, as notebooks do: a library a trial's cell
    # loads for the first time brings pools that are limited from the next trial on only.
    gpu_kernel.run("import torch")
    before = gpu_kernel.value("sorted({i['num_threads'] for i in __import__('threadpoolctl').threadpool_info()})")
    in_threads = _thread_run(gpu_kernel, "threads", "--backend thread --jobs 2 --cpus-per-trial 1")
    assert {tuple(r["pools"]) for r in in_threads} == {(1,)}
    assert {r["torch"] for r in in_threads} == {1}
    # The kernel's own pools are given back when the run ends.
    after = gpu_kernel.value("sorted({i['num_threads'] for i in __import__('threadpoolctl').threadpool_info()})")
    assert after == before and max(after) == cores


# --- refusals: one line each, before any trial ------------------------------------------------

def _objective():
    return tune.float(0, 1, name="x")


@pytest.mark.parametrize("visible, options, message", [
    ("0,1", dict(jobs=3, gpus_per_trial=1), "--jobs 3 --gpus-per-trial 1 needs 3 GPUs; this kernel sees 2 "
                                            "(CUDA_VISIBLE_DEVICES=0,1): use --jobs 2, or fewer GPUs per trial."),
    ("0", dict(gpus_per_trial=2), "--jobs 1 --gpus-per-trial 2 needs 2 GPUs; this kernel sees 1"),
    ("", dict(gpus_per_trial=1), "--gpus-per-trial 1: this kernel sees no GPU (CUDA_VISIBLE_DEVICES=). Drop "
                                 "--gpus-per-trial to train on the CPU (tune.device() then gives 'cpu')."),
    ("0,1", dict(gpus_per_trial=0.3), "--gpus-per-trial 0.3 does not share a GPU out evenly"),
    ("0,1", dict(gpus_per_trial=1.5), "--gpus-per-trial 1.5: a trial gets whole GPUs, or a fraction of one"),
    ("0,1", dict(gpus_per_trial=0), "--gpus-per-trial must be a positive number of GPUs"),
    ("0,1", dict(gpus_per_trial=True), "--gpus-per-trial must be a positive number of GPUs"),
    ("0,1", dict(cpus_per_trial=0), "--cpus-per-trial must be a positive whole number of threads, got 0."),
    ("0,1", dict(cpus_per_trial=1.5), "--cpus-per-trial must be a positive whole number of threads"),
    ("0,1", dict(cpus_per_trial=10_000), "--cpus-per-trial 10000: this kernel may use"),
])
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_resources_that_cannot_be_given_are_refused_before_any_trial(tmp_path, monkeypatch, visible, options,
                                                                      message, backend):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(TuneError) as raised:
        start(_objective, n_trials=2, backend=backend, name="refused", directory=str(tmp_path), report=False,
              **options)
    assert message in str(raised.value)
    assert "refused" not in tune.runs
    assert not (tmp_path / "hpt_studies.journal").exists()  # nothing was stored


def _fake_nvidia_smi(folder: Path, gpus: int) -> None:
    tool = folder / "nvidia-smi"
    lines = "".join(f"GPU {k}: Stand-in GPU (UUID: GPU-{k:08d})\\n" for k in range(gpus))
    tool.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def test_without_cuda_visible_devices_the_drivers_list_decides(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TuneError, match="this kernel sees no GPU .CUDA_VISIBLE_DEVICES is not set and nvidia-smi "
                                        "is not installed."):
        start(_objective, n_trials=2, gpus_per_trial=1, storage="memory", report=False)
    assert tune.device() == "cpu"  # outside a trial too: no GPU here

    _fake_nvidia_smi(tmp_path, 2)
    run = start(_objective, n_trials=4, gpus_per_trial=0.5, storage="memory", report=False, launch=False)
    assert run.executor.jobs == 4  # two trials share each of the two GPUs
    assert run.slots_text() == " · 4 thread slots · 0.5 GPU each"
    shares = [run.executor.resources.share(k) for k in range(4)]
    assert [s.gpus for s in shares] == [("0",), ("0",), ("1",), ("1",)]
    environment = run.executor.resources.worker_environment(3)
    assert environment["CUDA_VISIBLE_DEVICES"] == "1" and environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    run.start().wait()
    assert run.n_complete == 4


def test_a_trial_given_no_gpu_computes_on_the_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    seen = []

    def objective():
        seen.append((tune.device(), tune.devices()))
        return tune.float(0, 1, name="x")

    run = start(objective, n_trials=2, storage="memory", report=False).wait()
    assert run.n_complete == 2 and seen == [("cpu", ["cpu"])] * 2
    assert run.slots_text() == ""  # nothing handed out: one trial at a time in the kernel, as before
