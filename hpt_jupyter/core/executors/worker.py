"""A worker process of the process backend: ``python -m hpt_jupyter.core.executors.worker FD``.

It unpacks the run's shipment once, then runs the trials the kernel sends, one at a time, until
the kernel says exit or goes away. Also the function a Dask worker runs for one trial."""

from __future__ import annotations

import os
import sys
import threading
import traceback
from multiprocessing.connection import Client, Connection
from typing import Any

from .remote import Session, no_delay, run_trial

CONNECT_SECONDS = 300
_sessions: dict[str, Session] = {}  # a Dask worker's unpacked shipments, by token
_sessions_lock = threading.Lock()


def serve(conn: Connection) -> None:
    from ..resources import pin_this_process, worker_settings

    pin_this_process()
    kind, blob, shared_path = conn.recv()
    try:
        session = Session(blob, *worker_settings(), shared_path=shared_path)
    except BaseException as error:  # noqa: BLE001 - said to the kernel, which ends the run
        conn.send(("setup_failed", "".join(traceback.format_exception_only(type(error), error)).strip()))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the kernel went away
        if message[0] == "exit":
            return
        run_trial(conn, session, *message[1:])


def dask_trial(address: Any, authkey: bytes, token: str, shipment_token: str, blob: bytes,
               timeout: float | None, gpus: float | None = None, cpus: int | None = None,
               shared_path: str | None = None) -> str:
    """One trial on a Dask worker: connect back to the kernel, run what it sends. ``gpus``: the
    trial holds that much of the worker's ``GPU`` resource, the worker's own first devices."""
    conn = Client(address, authkey=authkey)
    no_delay(conn)
    try:
        conn.send(("hello", token))
        # Unpacked once per worker process; under the lock, so that threads of one worker
        # neither unpack it twice nor compile the cell at the same time.
        with _sessions_lock:
            session = _sessions.get(shipment_token)
            if session is None:
                devices = None if gpus is None else [f"cuda:{i}" for i in range(max(1, int(gpus)))]
                try:
                    session = _sessions[shipment_token] = Session(blob, devices, cpus, shared_path)
                except BaseException as error:  # noqa: BLE001 - said to the kernel, which ends the run
                    conn.send(("setup_failed",
                               "".join(traceback.format_exception_only(type(error), error)).strip()))
                    return "setup failed"
        conn.send(("ready", _facts()))
        try:
            if not conn.poll(CONNECT_SECONDS):
                return "not wanted"  # the kernel never answered: it has settled this trial, or is gone
            message = conn.recv()
        except (EOFError, OSError):
            return "not wanted"  # a rerun of a trial the kernel has already settled
        if message[0] != "trial":
            return "not wanted"
        watchdog = None
        if timeout is not None:
            # A thread cannot be stopped: past the timeout the worker process goes (its nanny
            # starts a new one), as the process backend kills its worker.
            watchdog = threading.Timer(timeout + 1.0, os._exit, (70,))
            watchdog.daemon = True
            watchdog.start()
        try:
            run_trial(conn, session, *message[1:])
        finally:
            if watchdog is not None:
                watchdog.cancel()
        return "done"
    finally:
        conn.close()


def _facts() -> dict[str, Any]:
    """What the kernel shows of where a Dask trial ran, and needs to replace its worker."""
    import socket

    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # noqa: BLE001 - not on a Dask worker
        worker = None
    return {"worker": worker, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "host": socket.gethostname()}


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
