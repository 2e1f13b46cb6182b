"""Heartbeats: a kernel shows its trials alive, and fails the trials of kernels that stopped.

While a run's loop runs, every ``interval`` seconds it records a heartbeat for each trial it
runs, and fails the RUNNING trials of the study whose heartbeat is older than ``grace`` seconds:
their kernel died or lost its machine. On a database this is Optuna's own mechanism
(``record_heartbeat``, the ``trial_heartbeats`` table, the server's clock), so Optuna's
``fail_stale_trials`` and optuna-dashboard see the same; a journal file has none, so the beat is
a trial system attribute holding the time (hosts sharing one need roughly synchronised clocks,
as anything sharing a file system does), and a trial not yet beaten for counts from its start.

A trial's first beat comes half a second into it, from the beating thread: a trial that ends
sooner never costs a write. On a database, where Optuna's check skips a trial that never beat, a
kernel that dies within that half second leaves the trial RUNNING for a resumption on its own
machine to fail (the lease check of :mod:`hpt_jupyter.core.storage`).

A kernel judges others only after its store has answered for a whole grace period: after an
outage every kernel's beats are late, and the owners get that long to beat again first.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from .resilient import ResilientStorage
from .storage import TRACEBACK_KEY

logger = logging.getLogger("hpt_jupyter")

HEARTBEAT_KEY = "hpt:heartbeat"  # a journal trial's system attribute: the time of its last beat
DEFAULT_GRACE = 60.0  # seconds without a heartbeat after which another kernel's trial is failed
FIRST_BEAT = 0.5  # seconds into a trial of its first beat (and how often the beating thread wakes)


def interval_for(grace: float) -> float:
    """Six beats per grace period: a late beat or two does not fail a live kernel's trial."""
    return max(1.0, grace / 6)


class Heartbeat:
    """Beats for ``own()``'s trials (trial ids) of ``studies()`` and fails the stale ones of
    others, telling ``failed(study, trial, reason)``."""

    def __init__(self, storage: BaseStorage, studies: Callable[[], list[optuna.Study]],
                 own: Callable[[], list[int]], failed: Callable[[optuna.Study, FrozenTrial], None],
                 grace: float = DEFAULT_GRACE) -> None:
        self.storage = storage
        self.studies = studies
        self.own = own
        self.failed = failed
        self.grace = grace
        self.interval = interval_for(grace)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy_since = time.monotonic()
        self._unsubscribe: Callable[[], None] | None = None
        self._new: dict[int, float] = {}  # trial id -> when it started, until its first beat
        self._new_lock = threading.Lock()
        inner = storage.inner if isinstance(storage, ResilientStorage) else storage
        backend = getattr(inner, "_backend", inner)  # an RDB behind Optuna's cache
        self.native = hasattr(backend, "record_heartbeat") and hasattr(backend, "heartbeat_interval")
        if self.native:  # Optuna's stale check reads these from the storage
            backend.heartbeat_interval = max(1, int(self.interval))
            backend.grace_period = max(1, int(round(grace)))

    @property
    def enabled(self) -> bool:
        """A store other processes can share (not memory)."""
        return isinstance(self.storage, ResilientStorage)

    def start(self) -> None:
        if not self.enabled:
            return
        self._unsubscribe = self.storage.subscribe(self._store_changed)
        self._thread = threading.Thread(target=self._loop, name="hpt-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _store_changed(self, problem: str | None) -> None:
        self._healthy_since = time.monotonic()  # an outage, or its end: judge nobody for a grace period

    def beat(self, trial_id: int) -> None:
        if self.native:
            self.storage.record_heartbeat(trial_id)
        else:
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def started(self, trial_id: int) -> None:
        """A trial began: it gets its first beat from this thread once it has run for
        :data:`FIRST_BEAT` seconds. A database's stale check skips a trial that never beat, so
        a long trial must beat early; a short one ends before its beat is due and costs no write
        (a beat per trial, on the trial's path, cost 3-5 ms on SQLite and PostgreSQL here)."""
        with self._new_lock:
            self._new[trial_id] = time.monotonic()

    def _loop(self) -> None:
        last_round = time.monotonic()
        while not self._stop.wait(FIRST_BEAT):
            try:
                now = time.monotonic()
                own = self.own()
                with self._new_lock:
                    due = [t for t, since in self._new.items() if now - since >= FIRST_BEAT]
                    for trial_id in due:
                        del self._new[trial_id]
                if now - last_round >= self.interval:
                    last_round, due = now, own
                for trial_id in set(due) & set(own):  # a trial that has ended needs no beat
                    self.beat(trial_id)
                if now - last_round < FIRST_BEAT and now - self._healthy_since >= self.grace \
                        and self.storage.problem() is None:
                    self.judge()
            except Exception:  # noqa: BLE001 - the store's trouble is the run's to report; beat again later
                logger.debug("hpt_jupyter: heartbeat failed", exc_info=True)

    def judge(self) -> list[int]:
        """Fail the stale RUNNING trials of other kernels; their trial ids."""
        own = set(self.own())
        done = []
        seen: set[int] = set()
        for study in self.studies():
            if study._study_id in seen:
                continue
            seen.add(study._study_id)
            for trial_id in self.stale(study):
                if trial_id in own:
                    continue
                trial = self._fail(study, trial_id)
                if trial is not None:
                    done.append(trial_id)
                    self.failed(study, trial)
        return done

    def stale(self, study: optuna.Study) -> list[int]:
        if self.native:
            return list(self.storage._get_stale_trial_ids(study._study_id))
        now = time.time()
        stale = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_KEY)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()
            if last is not None and now - float(last) > self.grace:
                stale.append(trial._trial_id)
        return stale

    def _fail(self, study: optuna.Study, trial_id: int) -> FrozenTrial | None:
        storage = self.storage
        reason = (f"Interrupted: the kernel running this trial stopped sending heartbeats (none for over "
                  f"{self.grace:g}s: it died, or lost its machine or the network); another kernel failed it.")
        try:
            storage.set_trial_user_attr(trial_id, TRACEBACK_KEY, reason)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                return None
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return None  # it ended meanwhile, or another kernel failed it first
        logger.info("hpt_jupyter: failed trial %s of %r: no heartbeat for %gs", trial_id,
                       study.study_name, self.grace)
        return storage.get_trial(trial_id)
