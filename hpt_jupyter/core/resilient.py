"""A store that waits out its outages: every storage call retried while the fault is transient.

A shared database restarts (an upgrade, a failover), a network blips, another process holds the
journal's lock for a while: these are ordinary, and a run must not end for them. Every call the
run and Optuna make goes through :class:`ResilientStorage`, which retries a transient fault with
backoff until the store answers again, so the trials that finish meanwhile are written when it
does and the run goes on to its budget. Subscribers (the run, hence the views) hear when the
store stops answering and when it is back. After ``limit`` seconds of outage a call raises
:class:`StoreUnavailable`, and the run pauses with its unwritten results kept in the kernel.

A fault that waiting cannot mend (bad credentials, a missing database, a full disk) raises
:class:`StoreError` at once with the database's own message instead of Optuna's
``StorageInternalError`` text, which blames invalid data.

One ambiguity is left: a write whose commit reached the server while the connection died before
the answer came back is retried. Writes that would fail the second time (a trial's final state)
are recognised; a trial created twice this way is a RUNNING trial no kernel beats for, which
the heartbeat check of :mod:`hpt_jupyter.core.heartbeat` fails later.
"""

from __future__ import annotations

import datetime
import errno
import itertools
import logging
import re
import threading
import time
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from ..errors import TuneError

logger = logging.getLogger("hpt_jupyter")

DEFAULT_LIMIT = 600.0  # seconds of outage before a run pauses (--storage-wait)
SLOW_CALL = 3.0  # a call that has not answered for this long shows as "not answering"

# SQLSTATE classes of PostgreSQL (and most databases) that waiting mends: connection exceptions,
# an administrator's or a crash's shutdown, "cannot connect now", serialisation and lock waits.
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40001", "40P01", "55P03", "53300", "58030")
# Messages of drivers that give no SQLSTATE (a refused connection, SQLite's lock).
_TRANSIENT_TEXT = re.compile(
    r"connection refused|could not connect|connection (?:is )?closed|server closed the connection|"
    r"terminating connection|connection reset|connection timed out|broken pipe|"
    r"the database system is (?:starting up|shutting down|in recovery mode)|no route to host|"
    r"database is locked|database table is locked|timeout expired|connection already closed|"
    r"consuming input failed|could not receive data|lost synchronization|ssl syscall error",
    re.I)
_PERMANENT_TEXT = re.compile(
    r"password authentication failed|authentication failed|no password supplied|role .* does not exist|"
    r"database .* does not exist|permission denied|no space left|disk full|could not extend file|"
    r"read-only|no such table|unable to open database file|disk i/o error|database disk image is malformed",
    re.I)
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE,
                     errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}


class StoreError(TuneError):
    """The store failed in a way waiting will not mend; the message is the database's own."""


class StoreUnavailable(TuneError):
    """The store has not answered for longer than the run may wait."""


def _root(error: BaseException) -> BaseException:
    """The error that says what happened: Optuna wraps the database's in StorageInternalError."""
    if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
        return error.__cause__
    return error


def classify(error: BaseException) -> str | None:
    """"transient", "permanent", or None for an error that is not the store's (a missing study,
    a duplicate name: the caller's business)."""
    error = _root(error)
    try:
        import sqlalchemy.exc as sa
    except ImportError:  # pragma: no cover - Optuna depends on SQLAlchemy
        sa = None
    if sa is not None and isinstance(error, sa.SQLAlchemyError):
        if isinstance(error, sa.IntegrityError):
            return None  # a constraint: Optuna's business (a duplicate name, a race it handles)
        orig = getattr(error, "orig", None)
        text = f"{error} {orig}"
        if _PERMANENT_TEXT.search(text):
            return "permanent"
        state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if getattr(error, "connection_invalidated", False) or state.startswith(_TRANSIENT_SQLSTATES) \
                or _TRANSIENT_TEXT.search(text):
            return "transient"
        if isinstance(error, (sa.DisconnectionError, sa.InterfaceError, sa.TimeoutError)):
            return "transient"
        return "permanent" if isinstance(error, (sa.OperationalError, sa.DatabaseError)) else None
    if isinstance(error, OSError):
        return "transient" if error.errno in _TRANSIENT_ERRNOS else "permanent"
    if isinstance(error, optuna.exceptions.StorageInternalError):
        return "permanent"
    return None


def describe(error: BaseException) -> str:
    """One line of what the database said (not the SQL statement, not SQLAlchemy's links)."""
    error = _root(error)
    orig = getattr(error, "orig", None)
    shown = orig if orig is not None else error
    text = " ".join(str(shown).split())
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return f"{type(shown).__name__}: {text}" if text else type(shown).__name__


def _clock(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).strftime("%H:%M:%S")


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """``inner`` with its transient faults waited out (see the module's docstring).

    ``shown`` names the store in messages (its URL without a password). ``limit`` is how long
    calls wait, counted from the start of an outage, before raising :class:`StoreUnavailable`.
    """

    def __init__(self, inner: BaseStorage, shown: str, limit: float = DEFAULT_LIMIT) -> None:
        self.inner = inner
        self.shown = shown
        self.limit = limit
        self._lock = threading.Lock()
        self._failing_since: float | None = None  # wall time of the first failure of this outage
        self._last_error = ""
        self._calls = itertools.count()
        self._in_flight: dict[int, float] = {}  # call -> its wall-clock start
        self._slow_since: float | None = None
        self._listeners: list[Callable[[str | None], None]] = []
        self._watchdog: threading.Thread | None = None
        self._local = threading.local()  # .created: the last trial this thread created

    # -- what the views show --
    def problem(self) -> str | None:
        """``storage unreachable since 14:03:07, retrying (OperationalError: …)``, or None."""
        with self._lock:
            if self._failing_since is not None:
                return (f"storage unreachable since {_clock(self._failing_since)}, retrying "
                        f"({self._last_error})")
            if self._slow_since is not None:
                return f"storage not answering since {_clock(self._slow_since)}, waiting"
        return None

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(problem)`` when the store stops answering and ``callback(None)`` when
        it is back. Returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(callback)
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="hpt-store-watchdog", daemon=True)
                self._watchdog.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
        return unsubscribe

    def _tell(self) -> None:
        problem = self.problem()
        for callback in list(self._listeners):
            try:
                callback(problem)
            except Exception:  # noqa: BLE001 - a view must not break the store
                logger.exception("hpt_jupyter: a storage listener failed")

    def _watch(self) -> None:
        """Notices a call that hangs (a journal lock another process holds, a server that takes
        connections and does not answer): no error is raised, the run just stops moving."""
        while True:
            time.sleep(0.5)
            with self._lock:
                if not self._listeners:
                    self._watchdog = None
                    return
                oldest = min(self._in_flight.values(), default=None)
                now = time.time()
                slow = oldest is not None and now - oldest >= SLOW_CALL and self._failing_since is None
                changed = slow != (self._slow_since is not None)
                self._slow_since = oldest if slow else None
            if changed:
                self._tell()

    # -- every call --
    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        method = getattr(self.inner, name)
        delay, retried = 0.1, False
        while True:
            call = next(self._calls)
            with self._lock:
                self._in_flight[call] = time.time()
            try:
                result = method(*args, **kwargs)
            except Exception as error:
                with self._lock:
                    self._in_flight.pop(call, None)
                if retried and self._already_done(name, args, kwargs, error):
                    self._recovered()
                    return True
                kind = classify(error)
                if kind is None:
                    logger.debug("hpt_jupyter: %s: not a store fault: %r (cause %r)", self.shown, error,
                                 error.__cause__)
                    raise
                if kind == "permanent":
                    raise StoreError(f"the store {self.shown} failed: {describe(error)}") from error
                since = self._failed(error)
                if time.time() - since >= self.limit:
                    raise StoreUnavailable(
                        f"storage unreachable since {_clock(since)} ({describe(error)}); waited "
                        f"{time.time() - since:.0f}s, the limit (--storage-wait {self.limit:g})") from error
                retried = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            with self._lock:
                self._in_flight.pop(call, None)
            if self._failing_since is not None:
                self._recovered()
            if name == "create_new_trial":
                self._local.created = result
            return result

    def created_here(self, forget: bool = False) -> int | None:
        """The id of the last trial this thread created (and forget it): after an ask that the
        store's outage cut short, the trial it left RUNNING."""
        created = getattr(self._local, "created", None)
        if forget:
            self._local.created = None
        return created

    def _already_done(self, name: str, args: tuple, kwargs: dict, error: Exception) -> bool:
        """A retried final state that the store now refuses because the first attempt's commit
        did land (its answer was lost with the connection)."""
        if name != "set_trial_state_values" or not isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
            return False
        trial_id = args[0] if args else kwargs.get("trial_id")
        state = args[1] if len(args) > 1 else kwargs.get("state")
        try:
            return self.inner.get_trial(trial_id).state == state and state != TrialState.RUNNING
        except Exception:  # noqa: BLE001
            return False

    def _failed(self, error: Exception) -> float:
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.time()
                self._slow_since = None
            self._last_error = describe(error)
            since = self._failing_since
        if first:
            logger.info("hpt_jupyter: %s: storage unreachable (%s); retrying", self.shown, self._last_error)
            self._tell()
        return since

    def _recovered(self) -> None:
        with self._lock:
            since, self._failing_since = self._failing_since, None
        if since is not None:
            logger.info("hpt_jupyter: %s: storage back after %.1fs", self.shown, time.time() - since)
            self._tell()

    # -- heartbeats: the inner store's, where it has them --
    @property
    def beats_natively(self) -> bool:
        return isinstance(self.inner, BaseHeartbeat)

    def get_heartbeat_interval(self) -> int | None:
        return self.inner.get_heartbeat_interval() if self.beats_natively else None

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.inner.get_heartbeat_stale_trial_callback() if self.beats_natively else None

    def __getattr__(self, name: str) -> Any:  # the inner store's own extras (an RDB's engine, ...)
        if name in ("inner", "_local", "_lock"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "shown": self.shown, "limit": self.limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["shown"], state["limit"])


def _retrying(name: str) -> Callable[..., Any]:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = name
    method.__doc__ = f"The inner store's ``{name}``, its transient faults waited out."
    return method


# Every storage operation, the abstract ones and those BaseStorage builds on them (an inner store
# may answer those faster itself), and the heartbeat's.
_OPERATIONS = sorted({name for name in dir(BaseStorage) if not name.startswith("__")
                      and callable(getattr(BaseStorage, name))}
                     | {"record_heartbeat", "_get_stale_trial_ids"})
for _name in _OPERATIONS:
    setattr(ResilientStorage, _name, _retrying(_name))
ResilientStorage.__abstractmethods__ = frozenset()


def put_back(storage: BaseStorage, trial_id: int) -> None:
    """A trial the outage interrupted (before it was asked in full, or while it ran) waits again:
    the next ask takes it, with its number and any values it already had, so no number is lost
    and no trial is left RUNNING."""
    storage.set_trial_state_values(trial_id, TrialState.WAITING)


def created_here(storage: BaseStorage, forget: bool = False) -> int | None:
    """:meth:`ResilientStorage.created_here` of ``storage``; None for a store in memory."""
    return storage.created_here(forget) if isinstance(storage, ResilientStorage) else None
