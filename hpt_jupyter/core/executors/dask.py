"""Trials as tasks on a Dask cluster: a new ``LocalCluster`` (one single-threaded worker process
per slot), a running scheduler (``--cluster tcp://host:8786``), or a ``distributed.Client``.

Dask places the tasks, ships the shipment (scattered once, kept on the workers) and restarts
lost workers. Each task opens a connection back to the kernel, whose trial answers its knobs
and reports, as for the process backend: the sampler never leaves the kernel. Workers must be
able to reach the kernel's machine (true of a LocalCluster and of a cluster on the same network).
"""

from __future__ import annotations

import logging
import queue
import secrets
import socket
import threading
import time
from multiprocessing.connection import Listener
from typing import Any

from ...errors import TuneError
from .base import Executor, Outcome, SlotRunner, TrialRequest
from .remote import TrialTimedOut, WorkerLost, no_delay, serve_trial
from .shipping import Shipment

logger = logging.getLogger("hpt_jupyter")
CONNECT_SECONDS = 300  # a task may wait for a free worker, or a worker for its imports


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise TuneError("--backend dask needs dask.distributed: pip install 'hpt-jupyter[dask]'.") from None
    return distributed


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

    def __init__(self, shipment: Shipment, jobs: int, cluster: Any = None) -> None:
        self.shipment = shipment
        self.jobs = jobs
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
        _distributed()  # the message about installing it comes before anything starts

    def describe(self) -> str:
        where = "a new LocalCluster" if self.cluster_spec is None else (
            self.cluster_spec if isinstance(self.cluster_spec, str) else "the given Dask client")
        return f"{self.jobs} dask slot{'s' if self.jobs != 1 else ''} on {where}"

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
            self._own_cluster = distributed.LocalCluster(
                # dashboard on any free port: 8787 may be taken
                n_workers=self.jobs, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.CRITICAL)
            self.client = distributed.Client(self._own_cluster)
            self._own_client = True
        scheduler_host = self.client.scheduler.address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        # A backlog as deep as the slots that may connect at once (the default of 1 drops some).
        self._listener = Listener((_address_towards(scheduler_host), 0), authkey=self._authkey,
                                  backlog=max(64, 2 * self.jobs))
        threading.Thread(target=self._accept_loop, name="hpt-dask-accept", daemon=True).start()
        self._blob_lock = threading.Lock()
        self.blob()

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
            with self._waiting_lock:
                waiter = self._waiting.get(token)
            if waiter is None:
                conn.close()  # a rerun of a trial already settled: it ends at once
            else:
                waiter.put(conn)

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
        future = executor.client.submit(
            dask_trial, executor._listener.address, executor._authkey, token, executor.shipment.token,
            executor.blob(), request.timeout, key=f"hpt-trial-{token}", pure=False, retries=0)
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
            deadline = None if request.timeout is None else time.monotonic() + request.timeout
            return serve_trial(conn, request.context, deadline, executor.known)
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
            if conn is not None:
                conn.close()
            future.release()

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
