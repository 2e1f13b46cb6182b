"""Devices and CPU threads per trial (``--gpus-per-trial``, ``--cpus-per-trial``).

The kernel hands out what it may use itself: the GPUs in its own ``CUDA_VISIBLE_DEVICES``
(else those the driver lists) and the cores of its CPU affinity. Slot k of a run always gets the
same share, so two trials running at once never share a device (unless a fraction of a GPU per
trial asks for exactly that). A worker process is given its share through its environment,
before CUDA or a BLAS library starts in it; threads of the kernel share one process, so a
thread slot's trial is told its device by ``tune.device()`` and its thread pools are limited
from inside the thread.
"""

from __future__ import annotations

import functools
import importlib
import math
import numbers
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import TuneError

# The thread-count variables BLAS, OpenMP and the libraries built on them read when they load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
DEVICES_VARIABLE = "HPT_JUPYTER_DEVICES"  # a worker's devices as tune.device() names them
CPUS_VARIABLE = "HPT_JUPYTER_CPUS"  # a worker's --cpus-per-trial
CORES_VARIABLE = "HPT_JUPYTER_CORES"  # the cores a worker is pinned to
PLACEMENT_KEY = "hpt:placement"  # trial system attribute: the devices (or cores) the trial ran on


def visible_gpus() -> tuple[list[str], str]:
    """The GPUs this process may use, as CUDA names them to child processes, and where that
    came from: its own ``CUDA_VISIBLE_DEVICES`` when set (``""`` or ``-1``: none), else the
    devices ``nvidia-smi`` lists."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        ids = []
        for item in spec.split(","):
            item = item.strip()
            if not item or item.startswith("-"):
                break  # CUDA stops at the first invalid entry
            ids.append(item)
        return ids, f"CUDA_VISIBLE_DEVICES={spec}"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return [], "CUDA_VISIBLE_DEVICES is not set and nvidia-smi is not installed"
    ids, problem = _listed_by(smi)
    return list(ids), problem or f"nvidia-smi lists {len(ids)}"


@functools.lru_cache(maxsize=4)
def _listed_by(smi: str) -> tuple[tuple[str, ...], str | None]:
    """The driver's GPUs, asked once per process (tune.device() may ask in every trial)."""
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return (), f"nvidia-smi failed ({type(error).__name__})"
    return tuple(re.findall(r"^GPU (\d+):", listed, flags=re.MULTILINE)), None


def usable_cores() -> list[int]:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def loaded_torch() -> Any:
    """PyTorch if this process has imported it (None otherwise), whole: another thread may be
    importing it this moment (a trial's cell, the GP sampler), and a half-initialised module has
    no ``get_num_threads`` yet. Importing it again waits for that import to finish."""
    if "torch" not in sys.modules:
        return None
    return importlib.import_module("torch")


def default_devices() -> list[str]:
    """Where a trial that was given no GPU of its own computes: the default GPU when this
    process has one, else the CPU. PyTorch is asked only if the cell already imported it."""
    torch = loaded_torch()
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return ["cuda"]
            mps = getattr(torch.backends, "mps", None)
            if mps is not None and mps.is_available():
                return ["mps"]
        except Exception:  # noqa: BLE001 - a broken driver: the CPU still works
            pass
        return ["cpu"]
    return ["cuda"] if visible_gpus()[0] else ["cpu"]


def _count(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class SlotShare:
    """What one slot owns: GPU ids (as the kernel names them), their positions in the kernel's
    list (a thread slot's ``cuda:N``), and the cores a worker process is pinned to."""

    gpus: tuple[str, ...] = ()
    positions: tuple[int, ...] = ()
    cores: tuple[int, ...] = ()

    def placement(self) -> str:
        """``GPU 2`` / ``GPUs 2,3`` / ``CPU 1`` for the trial table."""
        if self.gpus:
            return f"GPU{'s' if len(self.gpus) > 1 else ''} {','.join(self.gpus)}"
        if self.cores:
            return f"CPU{'s' if len(self.cores) > 1 else ''} {_ranges(self.cores)}"
        return ""


def _ranges(numbers_: tuple[int, ...]) -> str:
    spans, start = [], None
    for i, n in enumerate(numbers_):
        if start is None:
            start = n
        if i + 1 == len(numbers_) or numbers_[i + 1] != n + 1:
            spans.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(spans)


@dataclass(frozen=True)
class Resources:
    """A run's per-trial resources, checked, and each slot's share of them."""

    gpus_per_trial: float | None = None
    cpus_per_trial: int | None = None
    gpus: tuple[str, ...] = ()  # the kernel's GPUs, handed out by slot (empty for a given Dask cluster)
    cores: tuple[int, ...] = ()  # the cores handed out by slot (empty: no pinning)
    shares: tuple[SlotShare, ...] = field(default=())

    @property
    def assigns(self) -> bool:
        return self.gpus_per_trial is not None or self.cpus_per_trial is not None

    def share(self, slot: int) -> SlotShare:
        return self.shares[slot] if slot < len(self.shares) else SlotShare()

    def describe(self) -> str:
        """`` · 1 GPU each · 2 CPU threads each``."""
        text = ""
        if self.gpus_per_trial is not None:
            g = self.gpus_per_trial
            text += f" · {_count(g)} GPU{'s' if g > 1 else ''} each"
        if self.cpus_per_trial is not None:
            c = self.cpus_per_trial
            text += f" · {c} CPU thread{'s' if c > 1 else ''} each" + (" (pinned)" if self.cores else "")
        return text

    def worker_environment(self, slot: int) -> dict[str, str]:
        """What a worker process of this slot starts with (set before CUDA or BLAS loads)."""
        env: dict[str, str] = {}
        share = self.share(slot)
        if self.gpus_per_trial is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(share.gpus)
            if "CUDA_VISIBLE_DEVICES" not in os.environ:  # ids from nvidia-smi count in PCI bus order
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            env[DEVICES_VARIABLE] = ",".join(f"cuda:{i}" for i in range(len(share.gpus)))
        if self.cpus_per_trial is not None:
            env.update({name: str(self.cpus_per_trial) for name in THREAD_VARIABLES})
            env[CPUS_VARIABLE] = str(self.cpus_per_trial)
        if share.cores:
            env[CORES_VARIABLE] = ",".join(map(str, share.cores))
        return env

    def thread_devices(self, slot: int) -> list[str] | None:
        """A thread slot's devices: the kernel's own CUDA numbering of its GPUs."""
        if self.gpus_per_trial is None:
            return None
        return [f"cuda:{p}" for p in self.share(slot).positions]


def plan(backend: str, jobs: Any, gpus_per_trial: Any, cpus_per_trial: Any,
         cluster: Any = None) -> tuple[Resources, int]:
    """Check ``--gpus-per-trial``/``--cpus-per-trial`` against what this kernel may use and
    share it out by slot: ``(resources, jobs)``. ``jobs`` None means as many slots as the
    devices allow (one without GPUs). One message per mistake, before any trial."""
    gpus = _check_gpus(gpus_per_trial)
    cpus = _check_cpus(cpus_per_trial)
    if gpus is None and cpus is None:
        return Resources(), 1 if jobs is None else jobs
    remote = backend == "dask" and cluster is not None  # the cluster's GPUs, not the kernel's
    ids: list[str] = []
    if gpus is not None and not remote:
        ids, source = visible_gpus()
        if not ids:
            raise TuneError(f"--gpus-per-trial {_count(gpus)}: this kernel sees no GPU ({source}). Drop "
                            "--gpus-per-trial to train on the CPU (tune.device() then gives 'cpu').")
        if jobs is None:
            jobs = max(1, math.floor(len(ids) / gpus + 1e-9))
        needed = math.ceil(jobs * gpus - 1e-9)
        if needed > len(ids):
            fits = math.floor(len(ids) / gpus + 1e-9)
            advice = f"use --jobs {fits}, or" if fits >= 1 else "use"
            raise TuneError(f"--jobs {jobs} --gpus-per-trial {_count(gpus)} needs {needed} GPUs; this kernel "
                            f"sees {len(ids)} ({source}): {advice} fewer GPUs per trial.")
    if jobs is None:
        jobs = 1
    cores = usable_cores()
    if cpus is not None and cpus > len(cores):
        raise TuneError(f"--cpus-per-trial {cpus}: this kernel may use {len(cores)} core"
                        f"{'s' if len(cores) != 1 else ''}; ask for at most {len(cores)}.")
    # Worker processes are pinned to cores of their own where they fit side by side.
    pin = cpus is not None and backend == "process" and sys.platform.startswith("linux") and jobs * cpus <= len(cores)
    shares = []
    for slot in range(jobs if (ids or pin) else 0):
        share_ids: tuple[str, ...] = ()
        positions: tuple[int, ...] = ()
        if ids and gpus is not None:
            if gpus >= 1:
                positions = tuple(range(slot * int(gpus), (slot + 1) * int(gpus)))
            else:  # a fraction: 1/gpus slots share each device
                positions = (int(slot * gpus + 1e-9),)
            share_ids = tuple(ids[p] for p in positions)
        slot_cores = tuple(cores[slot * cpus:(slot + 1) * cpus]) if pin and cpus is not None else ()
        shares.append(SlotShare(share_ids, positions, slot_cores))
    return Resources(gpus, cpus, tuple(ids), tuple(cores) if pin else (), tuple(shares)), jobs


def _check_gpus(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise TuneError(f"--gpus-per-trial must be a positive number of GPUs (1, 2, or a fraction such as 0.5 "
                        f"for trials that share one), got {value!r}.")
    value = float(value)
    if value > 1 and not value.is_integer():
        raise TuneError(f"--gpus-per-trial {value:g}: a trial gets whole GPUs, or a fraction of one (0.5, 0.25); "
                        f"use {math.floor(value)} or {math.ceil(value)}.")
    if value < 1 and abs(1 / value - round(1 / value)) > 1e-6:
        raise TuneError(f"--gpus-per-trial {value:g} does not share a GPU out evenly: use a fraction 1/k "
                        "(0.5, 0.25, 0.2...), so that k trials share each GPU.")
    return value


def _check_cpus(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise TuneError(f"--cpus-per-trial must be a positive whole number of threads, got {value!r}.")
    return int(value)


def limit_threads(cpus: int | None) -> None:
    """Limit the thread pools of the libraries loaded in this process (and, for OpenMP, this
    thread) to ``cpus``: BLAS and OpenMP through threadpoolctl, PyTorch's own pools."""
    if cpus is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=cpus)
    torch = loaded_torch()
    if torch is not None and torch.get_num_threads() != cpus:
        torch.set_num_threads(cpus)


class KernelThreadLimits:
    """``--cpus-per-trial`` for thread slots: the kernel's own pools are limited while the run
    runs (BLAS pools are per process; OpenMP's limit is per thread, so each trial's thread sets
    its own) and given back when it ends."""

    def __init__(self, cpus: int | None) -> None:
        self.cpus = cpus
        self._limiter: Any = None
        self._torch_threads: int | None = None

    def open(self) -> None:
        if self.cpus is None:
            return
        from threadpoolctl import threadpool_limits

        self._limiter = threadpool_limits(limits=self.cpus)  # remembers the originals
        self._note_torch()

    def _note_torch(self) -> None:
        torch = loaded_torch()
        if torch is not None and self._torch_threads is None:
            self._torch_threads = torch.get_num_threads()

    def in_trial(self) -> None:
        """In the trial's thread, before it runs: the cell may have loaded a library since.
        (One loaded after the run started keeps the limit when it ends.)"""
        if self.cpus is None:
            return
        self._note_torch()
        limit_threads(self.cpus)

    def close(self) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None
        torch = loaded_torch()
        if torch is not None and self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
        self._torch_threads = None


def pin_this_process() -> None:
    """In a worker started with cores of its own: pin every thread it has (the kernel pinned its
    first thread at once; a library may have started more before this runs)."""
    spec = os.environ.get(CORES_VARIABLE)
    if not spec or not hasattr(os, "sched_setaffinity"):
        return
    cores = {int(c) for c in spec.split(",")}
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cores)
        except OSError:
            pass


def worker_settings() -> tuple[list[str] | None, int | None]:
    """A worker process's devices (as ``tune.device()`` names them) and thread limit, from the
    environment its slot started it with."""
    devices = os.environ.get(DEVICES_VARIABLE)
    cpus = os.environ.get(CPUS_VARIABLE)
    return (devices.split(",") if devices else None), (int(cpus) if cpus else None)


def is_gpu_out_of_memory(error: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error: its context is not to be trusted after."""
    name = type(error).__name__
    text = str(error)
    return name == "OutOfMemoryError" or "CUDA out of memory" in text or "CUDA error: out of memory" in text \
        or "CUBLAS_STATUS_ALLOC_FAILED" in text
