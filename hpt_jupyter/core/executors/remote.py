"""The conversation between the kernel and a worker about one trial, over a
``multiprocessing.connection.Connection`` (a socket pair for local processes, a TCP
connection back to the kernel for Dask tasks). Both sides live here.

Kernel -> worker: ``("trial", number, is_pbt_segment)``. Worker -> kernel, while the trial runs:
``("sample", param)`` (a knob's value: the kernel's trial samples it; answer ``("ok", value)``
or ``("tune_error", message)``), ``("report", value, step)`` and ``("should_prune",)`` (answer
``("ok", bool)``), for a PBT segment ``("checkpoint", blob)`` and ``("restore",)`` (answer
``("ok", blob or None)``), ``("out", stream, text)`` (what the trial printed),
``("warning", category, message, filename, lineno, text)`` (a warning it raised: the kernel
counts it and shows the first of its kind); then
``("done", values, failure, pruned, space_error, assigned, gpu_out_of_memory)``.
"""

from __future__ import annotations

import io
import linecache
import os
import pickle
import sys
import threading
import time
from typing import Any

from ...errors import TuneError
from ..space import ChoiceParam, Param, TrialContext, constraint_key, set_context
from ..trial_warnings import activate, deactivate, enter, leave, note_remote
from .base import Outcome
from .sharing import MappedData
from .shipping import FUNCTION


class WorkerLost(Exception):
    """The connection to the worker broke mid-trial: it died or was lost."""


class TrialTimedOut(Exception):
    pass


# --- the kernel's side -------------------------------------------------------------------

def serve_trial(conn: Any, context: TrialContext, deadline: float | None, known: dict[str, Param]) -> Outcome:
    """Answer a worker's requests for one trial until it is done. ``known``: the cell's own
    declarations, whose choice options are the kernel's objects (a worker sends labels)."""
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            if not conn.poll(wait):
                raise TrialTimedOut
            message = conn.recv()
        except (EOFError, OSError) as error:
            raise WorkerLost(str(error)) from None
        kind = message[0]
        try:
            if kind == "sample":
                param = message[1]
                if isinstance(param, ChoiceParam) and isinstance(known.get(param.name), ChoiceParam) \
                        and known[param.name].labels == param.labels:
                    param = known[param.name]  # the kernel's options, so that injection gets the objects
                reply: tuple = ("ok", context.sample(param))
            elif kind == "report":
                reply = ("ok", context.report(message[1], message[2]))
            elif kind == "should_prune":
                reply = ("ok", context.should_prune())
            elif kind == "checkpoint":
                context.checkpoint(message[1])
                continue  # no answer: the worker goes on training
            elif kind == "cv_scores":
                context.cv_scores(message[1])
                continue
            elif kind == "constraint":  # named by the worker, which said a repeated name at its line
                context.constraint(message[1], message[2])
                continue
            elif kind == "restore":
                reply = ("ok", context.restore())
            elif kind == "warning":
                note_remote(*message[1:])
                continue
            elif kind == "out":
                stream = sys.stdout if message[1] == "stdout" else sys.stderr
                stream.write(message[2])
                stream.flush()
                continue
            elif kind == "done":
                _, values, failure, pruned, space_error, assigned, out_of_memory = message
                return Outcome(values=values, failure=failure, pruned=pruned, space_error=space_error,
                               assigned=_loads_each(assigned), gpu_out_of_memory=out_of_memory)
            else:
                reply = ("error", f"unknown request {kind!r}")
        except TuneError as error:
            reply = ("tune_error", str(error))
        except Exception as error:  # noqa: BLE001 - e.g. Optuna refusing a changed distribution
            reply = ("error", f"{type(error).__name__}: {error}")
        try:
            conn.send(reply)
        except (EOFError, OSError) as error:
            raise WorkerLost(str(error)) from None


def _loads_each(blobs: dict[str, bytes]) -> dict[str, Any]:
    values = {}
    for name, blob in blobs.items():
        try:
            values[name] = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - a class only the worker has: keep the knob's own value
            continue
    return values


def no_delay(conn: Any) -> None:
    """Turn off Nagle's algorithm on a TCP connection: a trial's messages are small and often
    come two in a row (output, then a question), which Nagle would hold up to 40 ms each."""
    import socket

    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))  # a duplicate: the options are the socket's
    except OSError:
        return
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        sock.close()


def describe_exit(code: int | None) -> str:
    """``killed by SIGKILL`` / ``exit code 3``."""
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


# --- the worker's side -------------------------------------------------------------------

def _wrote_read_only(failure: str) -> bool:
    """NumPy's words for a write into a read-only array (``a[0] = 1``, ``a += 1``, ``out=a``)."""
    last = failure.strip().splitlines()[-1] if failure.strip() else ""
    return "read-only" in last and ("ValueError" in last or "destination" in last)


class Session:
    """A shipment unpacked in a worker: the objective, ready for trials. ``devices`` and
    ``cpus``: what this worker's trials were given (``tune.device()``, thread limits)."""

    def __init__(self, blob: bytes, devices: list[str] | None = None, cpus: int | None = None,
                 shared_path: str | None = None) -> None:
        import cloudpickle  # noqa: F401 - values pickled by value need it to load

        from ..resources import limit_threads
        from .thread import takes_trial

        self.devices, self.cpus = devices, cpus
        limit_threads(cpus)  # before the shipment's values load their libraries' pools

        payload = pickle.loads(blob)
        self.n_directions = payload["n_directions"]
        shared = payload.get("shared") or {}
        self.mapped = None
        self.shared_names = sorted(n for n in shared if n != FUNCTION)
        if shared:  # large values: rebuilt around the run's shared file, mapped read-only
            if shared_path is None:
                raise RuntimeError("the shipment's large values are in shared memory, but no file was given")
            self.mapped = MappedData(shared_path, payload["shared_size"])

        def load(name: str, value: bytes) -> Any:
            if name in shared:
                return pickle.loads(value, buffers=self.mapped.buffers(shared[name]))
            return pickle.loads(value)

        if payload["kind"] == "cell":
            from ..cell import compile_cell

            namespace: dict[str, Any] = {"__builtins__": __builtins__, "__name__": "__main__"}
            for name, value in payload["namespace"].items():
                namespace[name] = load(name, value)
            cell = compile_cell(payload["code"], namespace, filename=payload["filename"],
                                source=payload["source"], first_line=payload["first_line"])
            self.objective = cell.objective
        else:
            for filename, lines in payload["lines"].items():  # names and tracebacks read the source
                linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
            self.objective = load(FUNCTION, payload["function"])
            code = getattr(self.objective, "__code__", None)
            if code is not None and payload["lines"]:  # cloudpickle renames the file of code it rebuilds
                self.objective.__code__ = _renamed(code, next(iter(payload["lines"])))
        self.wants_trial = takes_trial(self.objective)


def _renamed(code: Any, filename: str) -> Any:
    consts = tuple(_renamed(c, filename) if hasattr(c, "co_filename") else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


class RemoteContext:
    """In a worker, what ``tune.*`` talks to: every question goes to the kernel's trial."""

    def __init__(self, conn: Any, number: int, segment: bool = False, devices: list[str] | None = None) -> None:
        self.conn = conn
        self.devices = devices  # tune.device()
        self.remote = segment  # a PBT segment: tune.checkpoint sends its state to the kernel
        self.lock = threading.RLock()  # reentrant: a warning raised mid-request is sent from inside it
        self.assigned: dict[str, Any] = {}
        self.constraints: set[str] = set()  # tune.constraint names this trial set
        self.trial = RemoteTrial(self, number)

    def ask(self, *request: Any) -> Any:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with self.lock:
            self.conn.send(request)
            kind, value = self.conn.recv()
        if kind == "ok":
            return value
        if kind == "tune_error":
            raise TuneError(value)
        raise RuntimeError(value)

    def send(self, *message: Any) -> None:
        with self.lock:
            self.conn.send(message)

    def suggest(self, param: Param) -> Any:
        wire = ChoiceParam(param.name, param.labels, param.labels) if isinstance(param, ChoiceParam) else param
        value = self.ask("sample", wire)
        return param.decode(value) if isinstance(param, ChoiceParam) else value

    def report(self, value: float, step: int) -> bool:
        return self.ask("report", float(value), int(step))

    def should_prune(self) -> bool:
        return self.ask("should_prune")

    def cv_scores(self, scores: list[float]) -> None:
        self.send("cv_scores", scores)

    def constraint(self, name: str | None, value: float) -> None:
        self.send("constraint", constraint_key(name, self.constraints), value)

    def checkpoint(self, blob: bytes) -> None:
        if self.remote:
            self.send("checkpoint", blob)

    def restore(self) -> bytes | None:
        return self.ask("restore") if self.remote else None


class RemoteTrial:
    """``tune.trial`` (and an Optuna-style objective's argument) in a worker."""

    def __init__(self, context: RemoteContext, number: int) -> None:
        self._context = context
        self.number = number
        self.params: dict[str, Any] = {}

    def _suggest(self, param: Param) -> Any:
        value = self._context.suggest(param)
        self.params[param.name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        from ..space import make_float

        return self._suggest(make_float(name, low, high, log, step))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        from ..space import make_int

        return self._suggest(make_int(name, low, high, log, step))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        from ..space import make_choice

        return self._suggest(make_choice(name, choices))

    def report(self, value: float, step: int) -> None:
        self._context.report(value, step)

    def should_prune(self) -> bool:
        return self._context.should_prune()


class _Forward(io.TextIOBase):
    """A worker's stdout/stderr during a trial: lines go to the kernel, shown under the cell."""

    def __init__(self, context: RemoteContext, name: str) -> None:
        self.context, self.name, self.buffer_text = context, name, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_text += text
        if "\n" in text or len(self.buffer_text) > 8192:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.buffer_text:
            text, self.buffer_text = self.buffer_text, ""
            try:
                self.context.send("out", self.name, text)
            except (OSError, EOFError):
                pass


class _WarningSink:
    """A worker's trial's warnings go to the kernel, which counts them and shows the first of
    each kind (one worker cannot tell what the others showed)."""

    def __init__(self, context: RemoteContext) -> None:
        self.context = context

    def note(self, message: Any, category: type, filename: str, lineno: int, line: str | None) -> bool:
        import warnings

        for stream in (sys.stdout, sys.stderr):  # what the trial printed before it, first
            stream.flush()
        text = warnings.formatwarning(message, category, filename, lineno, line)
        try:
            self.context.send("warning", category.__name__, str(message), filename, int(lineno), text)
        except (OSError, EOFError):
            pass
        return False


def run_trial(conn: Any, session: Session, number: int, segment: bool = False) -> None:
    """Run one trial in this worker, asking the kernel for everything the trial needs."""
    from ..resources import limit_threads
    from .thread import evaluate

    context = RemoteContext(conn, number, segment, session.devices)
    limit_threads(session.cpus)  # the cell may have loaded a library since the last trial
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Forward(context, "stdout"), _Forward(context, "stderr")
    set_context(context)  # type: ignore[arg-type] - quacks like a TrialContext
    activate()
    marked = enter(_WarningSink(context))
    try:
        outcome = evaluate(session.objective, session.wants_trial, context.trial, session.n_directions)
    finally:
        leave(marked)
        deactivate()
        set_context(None)
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
    if outcome.failure is not None and session.mapped is not None and _wrote_read_only(outcome.failure):
        # On the failure's last line: the reason the table shows.
        names = session.shared_names
        what = (f"`{names[0]}` is" if len(names) == 1 else f"{', '.join(f'`{n}`' for n in names)} are") if names \
            else "the objective's large arrays are"
        copy = f"{names[0]} = {names[0]}.copy()" if names else "x = x.copy()"
        outcome.failure = (outcome.failure.rstrip("\n") + f": {what} shared read-only between the workers, not "
                           f"copied into each; copy it in the trial to change it ({copy})\n")
    assigned = {}
    if outcome.failure is None and not outcome.pruned:
        import cloudpickle

        for name, value in context.assigned.items():
            try:
                assigned[name] = cloudpickle.dumps(value)
            except Exception:  # noqa: BLE001 - what cannot travel is not injected
                continue
    context.send("done", outcome.values, outcome.failure, outcome.pruned, outcome.space_error, assigned,
                 outcome.gpu_out_of_memory)
