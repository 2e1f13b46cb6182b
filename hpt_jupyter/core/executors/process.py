"""Trials in local worker processes: one per slot, started once per run and reused for its
trials. Each is a fresh interpreter (never a fork of the kernel, which runs many threads)
talking to the kernel over a socket pair it inherits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

from ...errors import TuneError
from .base import Executor, Outcome, SlotRunner, TrialRequest
from .remote import TrialTimedOut, WorkerLost, describe_exit, serve_trial
from .sharing import SharedData, readable_bytes
from .shipping import Shipment

SETUP_SECONDS = 300  # importing the user's libraries and unpacking their data can take a while


class ProcessExecutor(Executor):
    name = "process"

    def __init__(self, shipment: Shipment, jobs: int) -> None:
        self.shipment = shipment
        self.jobs = jobs
        self.known: dict = {}  # the cell's declarations, set by the run (choices' real options)
        self.started_workers = 0  # workers started, replacements included
        self.shared = SharedData(shipment.buffers) if shipment.buffers else None

    def open(self) -> None:
        if self.shared is not None:  # once per start, for all of its workers
            self.shared.open()

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    def describe(self) -> str:
        """``2 process slots · shared 400 MB with 2 workers (no copies)``."""
        text = super().describe()
        if self.shared is not None:
            text += f" · shared {readable_bytes(self.shared.size)} with {self.jobs} worker" \
                    f"{'s' if self.jobs != 1 else ''} (no copies)"
        return text

    def runner(self, slot: int) -> SlotRunner:
        return _ProcessRunner(self, slot)


class _ProcessRunner(SlotRunner):
    def __init__(self, executor: ProcessExecutor, slot: int) -> None:
        self.executor = executor
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        resources = executor.resources
        share = resources.share(slot)
        # The slot's GPUs and thread counts: in the environment it starts with, before CUDA or
        # a BLAS library loads in it (neither reads them again).
        self.environment = resources.worker_environment(slot)
        self.cores = share.cores
        self.placement = share.placement()

    def _start_worker(self) -> None:
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "hpt_jupyter.core.executors.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            env={**os.environ, **self.environment} if self.environment else None)
        if self.cores:  # at once, before its libraries start their threads (it pins those too)
            try:
                os.sched_setaffinity(process.pid, self.cores)
            except OSError:
                pass
        theirs.close()
        conn = Connection(ours.detach())
        self.executor.started_workers += 1
        try:
            shared = self.executor.shared
            conn.send(("setup", self.executor.shipment.blob, shared.path if shared is not None else None))
            if not conn.poll(SETUP_SECONDS):
                raise TuneError(f"A worker process did not start within {SETUP_SECONDS}s.")
            kind, detail = conn.recv()
        except (EOFError, OSError):
            code = process.wait()
            raise TuneError(f"A worker process died while starting ({describe_exit(code)}).") from None
        except BaseException:
            process.kill()
            raise
        if kind != "ready":
            process.kill()
            raise TuneError(f"A worker process could not load the cell: {detail}")
        self.process, self.conn = process, conn

    def run(self, request: TrialRequest) -> Outcome:
        if self.process is not None and self.process.poll() is not None:
            self._forget()  # died while idle (killed between trials): the trial goes to a new one
        if self.process is None:
            self._start_worker()
        assert self.conn is not None and self.process is not None
        deadline = None if request.timeout is None else time.monotonic() + request.timeout
        request.context.placement = self.placement
        try:
            try:
                self.conn.send(("trial", request.number, request.context.scheduler.population_based))
            except OSError as error:
                raise WorkerLost(str(error)) from None
            outcome = serve_trial(self.conn, request.context, deadline, self.executor.known)
            if outcome.gpu_out_of_memory:  # a CUDA context after an OOM is not to be trusted
                self.close()
            return outcome
        except WorkerLost:
            code = self.process.wait()
            self._forget()
            return Outcome(failure=f"The worker process running this trial died ({describe_exit(code)}); "
                                   "a new worker takes the next trial.")
        except TrialTimedOut:
            self.process.kill()
            self.process.wait()
            self._forget()
            return Outcome(failure=f"Timed out: the trial ran longer than --trial-timeout {request.timeout:g}s, "
                                   "so its worker process was stopped.")

    def _forget(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None

    def close(self) -> None:
        if self.process is not None:
            try:
                self.conn.send(("exit",))
                self.process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - a worker that will not go is stopped
                self.process.kill()
                self.process.wait()
            self._forget()
