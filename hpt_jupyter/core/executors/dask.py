"""Trials as tasks on a Dask cluster: a new ``LocalCluster`` (one single-threaded worker process
per slot), a running scheduler (``--cluster tcp://host:8786``), or a ``distributed.Client``.

Dask places the tasks, ships the shipment (scattered once, kept on the workers) and restarts
lost workers. Each task opens a connection back to the kernel, whose trial answers its knobs
and reports, as for the process backend: the sampler never leaves the kernel. Workers must be
able to reach the kernel's machine (true of a LocalCluster and of a cluster on the same network).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from multiprocessing.connection import Listener
from typing import Any, Iterator

from ...errors import TuneError
from .base import Executor, Outcome, SlotRunner, TrialRequest
from .remote import TrialTimedOut, WorkerLost, no_delay, serve_trial
from .sharing import SharedData, readable_bytes
from .shipping import Shipment

logger = logging.getLogger("hpt_jupyter")
CONNECT_SECONDS = 300  # a task may wait for a free worker, or a worker for its imports


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise TuneError("--backend dask needs dask.distributed: pip install 'hpt-jupyter[dask]'.") from None
    return distributed


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Dask's nannies set their workers' variables (OMP_NUM_THREADS=1, PYTHONHASHSEED...) in
    the environment of the process that starts them, and leave them there: in a kernel, every
    later process-backend worker would inherit one BLAS thread. Put the kernel's back."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in [n for n in os.environ if n not in saved]:
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _address_towards(host: str) -> str:
    """This machine's address on the route to ``host`` (what a worker there can connect to)."""
    if host in ("127.0.0.1", "localhost", "::1", ""):
        return "127.0.0.1"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]
    except OSError:
        return "0.0.0.0"
    finally:
        probe.close()


class DaskExecutor(Executor):
    name = "dask"

    def __init__(self, shipment: Shipment, jobs: int, cluster: Any = None, jobs_from_cluster: bool = False) -> None:
        self.shipment = shipment
        self.jobs = jobs
        self.jobs_from_cluster = jobs_from_cluster  # --gpus-per-trial without --jobs: the cluster's GPUs decide
        self.cluster_spec = cluster
        self.known: dict = {}
        self.client: Any = None
        self._own_client = False
        self._own_cluster: Any = None
        self._listener: Listener | None = None
        self._authkey = secrets.token_bytes(32)
        self._waiting: dict[str, queue.Queue] = {}
        self._waiting_lock = threading.Lock()
        self._blob: Any = None
        self.started_tasks = 0
        self.scatters = 0  # times the shipment was sent to the cluster (once, unless workers were lost)
        # Large values in shared memory: only for the LocalCluster the run starts (its workers
        # are on this machine; the shipment of a cluster elsewhere holds them).
        self.shared = SharedData(shipment.buffers) if shipment.buffers else None
        _distributed()  # the message about installing it comes before anything starts

    def describe(self) -> str:
        where = "a new LocalCluster" if self.cluster_spec is None else (
            self.cluster_spec if isinstance(self.cluster_spec, str) else "the given Dask client")
        text = f"{self.jobs} dask slot{'s' if self.jobs != 1 else ''} on {where}{self.resources.describe()}"
        if self.shared is not None:
            text += f" · shared {readable_bytes(self.shared.size)} with its workers (no copies)"
        return text

    def open(self) -> None:
        distributed = _distributed()
        spec = self.cluster_spec
        if isinstance(spec, distributed.Client):
            self.client = spec
        elif isinstance(spec, str):
            try:
                self.client = distributed.Client(spec, timeout=30)
            except Exception as error:  # noqa: BLE001 - wrong address, scheduler down
                raise TuneError(f"--cluster {spec}: cannot reach the Dask scheduler ({type(error).__name__}: "
                                f"{error}). Check the address, or drop --cluster for a LocalCluster.") from None
            self._own_client = True
        else:
            with environment_kept():
                if self.resources.assigns:
                    self._own_cluster = self._cluster_with_shares(distributed)
                else:
                    self._own_cluster = distributed.LocalCluster(
                        # dashboard on any free port: 8787 may be taken
                        n_workers=self.jobs, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.CRITICAL)
            self.client = distributed.Client(self._own_cluster)
            self._own_client = True
        self._check_gpus()
        scheduler_host = self.client.scheduler.address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        # A backlog as deep as the slots that may connect at once (the default of 1 drops some).
        self._listener = Listener((_address_towards(scheduler_host), 0), authkey=self._authkey,
                                  backlog=max(64, 2 * self.jobs))
        threading.Thread(target=self._accept_loop, name="hpt-dask-accept", daemon=True).start()
        self._blob_lock = threading.Lock()
        if self.shared is not None:
            self.shared.open()
        self.blob()

    def _cluster_with_shares(self, distributed: Any) -> Any:
        """A local cluster whose worker k starts with slot k's GPUs and thread limits in its
        environment (as dask-cuda's LocalCUDACluster does), and offers them as Dask resources."""
        resources = self.resources
        worker_resources = {"GPU": resources.gpus_per_trial} if resources.gpus_per_trial is not None else None
        scheduler = {"cls": distributed.Scheduler,
                     "options": {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"}}
        workers = {k: {"cls": distributed.Nanny,
                       "options": {"host": "127.0.0.1", "nthreads": 1, "resources": worker_resources,
                                   "env": resources.worker_environment(k), "silence_logs": logging.CRITICAL}}
                   for k in range(self.jobs)}
        return distributed.SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.CRITICAL)

    def _check_gpus(self) -> None:
        """A trial that asks for a GPU no worker offers would wait for ever: say so instead."""
        gpus = self.resources.gpus_per_trial
        if gpus is None:
            return
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return  # none yet: trials wait for workers, and say so after a while
        fits = sum(int(w.get("resources", {}).get("GPU", 0) / gpus + 1e-9) for w in workers.values())
        if fits == 0:
            self.close()
            raise TuneError(f"--gpus-per-trial {gpus:g}: no worker of the Dask cluster offers a GPU resource of "
                            f"{gpus:g}. Start its workers with one GPU each: CUDA_VISIBLE_DEVICES=N dask worker "
                            f"SCHEDULER --nthreads 1 --resources GPU=1 (or drop --gpus-per-trial).")
        if self.jobs_from_cluster:
            self.jobs = fits

    def blob(self) -> Any:
        """The scattered shipment; scattered again when the workers that held it are gone."""
        with self._blob_lock:
            if self._blob is None or self._blob.status != "finished":
                # On every worker: a task runs where its input is, so data on one worker would
                # draw every trial there. Workers that join later fetch it once from a peer.
                self._blob = self.client.scatter(self.shipment.blob, hash=False, broadcast=True)
                self.scatters += 1
            return self._blob

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None:
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 - closed (the run ended) or a bad handshake
                if self._listener is None:
                    return
                continue
            if self._listener is None:
                conn.close()
                return
            no_delay(conn)
            try:
                if not conn.poll(30):
                    conn.close()
                    continue
                kind, token = conn.recv()
            except Exception:  # noqa: BLE001
                conn.close()
                continue
            with self._waiting_lock:  # handed over under the lock: a settled trial's finally drains it
                waiter = self._waiting.get(token)
                if waiter is not None:
                    waiter.put(conn)
            if waiter is None:
                conn.close()  # a rerun of a trial already settled: it ends at once

    def runner(self, slot: int) -> SlotRunner:
        return _DaskRunner(self)

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # closing a socket does not wake a thread blocked in accept(): a connection does
                socket.create_connection(listener.address, timeout=1).close()
            except OSError:
                pass
            listener.close()
        if self._own_client and self.client is not None:
            self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()
        if self.shared is not None:
            self.shared.close()
        self.client = self._own_cluster = self._blob = None  # a later start (+N) opens afresh


class _DataLost(Exception):
    pass


class _DaskRunner(SlotRunner):
    def __init__(self, executor: DaskExecutor) -> None:
        self.executor = executor

    def run(self, request: TrialRequest) -> Outcome:
        for _ in range(3):
            try:
                return self._run(request)
            except _DataLost:
                continue  # the workers holding the shipment died before the task started: again
        return Outcome(failure="The Dask cluster kept losing the workers that held the cell's data.")

    def _run(self, request: TrialRequest) -> Outcome:
        from .worker import dask_trial

        executor = self.executor
        token = f"{executor.shipment.token}-{request.number}-{secrets.token_hex(4)}"
        waiter: queue.Queue = queue.Queue()
        with executor._waiting_lock:
            executor._waiting[token] = waiter
        resources = executor.resources
        future = executor.client.submit(
            dask_trial, executor._listener.address, executor._authkey, token, executor.shipment.token,
            executor.blob(), request.timeout, resources.gpus_per_trial, resources.cpus_per_trial,
            executor.shared.path if executor.shared is not None else None,
            key=f"hpt-trial-{token}", pure=False, retries=0,
            resources=None if resources.gpus_per_trial is None else {"GPU": resources.gpus_per_trial})
        executor.started_tasks += 1
        conn = None
        try:
            conn = self._connection(future, waiter)
            try:
                kind, detail = conn.recv()
                if kind == "ready":
                    conn.send(("trial", request.number, request.context.scheduler.population_based))
            except (EOFError, OSError) as error:
                raise WorkerLost(str(error)) from None
            if kind != "ready":
                raise TuneError(f"A Dask worker could not load the cell: {detail}")
            request.context.placement = self._placement(detail)
            deadline = None if request.timeout is None else time.monotonic() + request.timeout
            outcome = serve_trial(conn, request.context, deadline, executor.known)
            if outcome.gpu_out_of_memory:  # a CUDA context after an OOM is not to be trusted
                self._restart(detail.get("worker"))
            return outcome
        except WorkerLost:
            future.cancel()  # no rerun elsewhere: this trial is settled as failed
            return Outcome(failure="The Dask worker running this trial was lost (it died, or was killed); "
                                   "Dask starts a new one and the study goes on.")
        except TrialTimedOut:
            future.cancel()
            return Outcome(failure=f"Timed out: the trial ran longer than --trial-timeout {request.timeout:g}s, "
                                   "so its Dask worker process was stopped (its nanny starts a new one).")
        finally:
            with executor._waiting_lock:
                executor._waiting.pop(token, None)
                # Dask may have rerun a lost worker's task elsewhere before the cancel landed: a
                # connection of that rerun, left waiting here, would hold its worker for minutes.
                others = []
                while not waiter.empty():
                    others.append(waiter.get_nowait())
            for other in others:
                other.close()
            if conn is not None:
                conn.close()
            future.release()

    def _placement(self, facts: dict) -> str:
        """``GPU 1`` (and ``on HOST`` for another machine) from what the worker said of itself."""
        if self.executor.resources.gpus_per_trial is None:
            return ""
        gpus = facts.get("gpus")
        text = f"GPU{'s' if gpus and ',' in gpus else ''} {gpus}" if gpus else "GPU"
        host = facts.get("host")
        return text if not host or host == socket.gethostname() else f"{text} on {host}"

    def _restart(self, worker: str | None) -> None:
        if worker is None:
            return
        try:
            with environment_kept():
                self.executor.client.restart_workers([worker], timeout=60)
        except Exception:  # noqa: BLE001 - no nanny to restart it: it takes the next trial as it is
            logger.warning("hpt_jupyter: could not restart the Dask worker %s after it ran out of GPU memory",
                           worker, exc_info=True)

    def _connection(self, future: Any, waiter: queue.Queue) -> Any:
        deadline = time.monotonic() + CONNECT_SECONDS
        while time.monotonic() < deadline:
            try:
                return waiter.get(timeout=0.05)
            except queue.Empty:
                pass
            if future.status == "cancelled":
                raise _DataLost
            if future.status in ("error", "lost"):
                error = future.exception() if future.status == "error" else future.status
                raise TuneError(f"The Dask task of a trial failed before it started: {error}")
        raise TuneError(f"No Dask worker took a trial within {CONNECT_SECONDS}s: is the cluster up?")
