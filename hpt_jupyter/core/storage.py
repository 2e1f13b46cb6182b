"""Where studies live: an embedded journal file next to the notebook by default.

The journal file was chosen by measurement (``benchmarks/storage.py``): it costs a few
milliseconds per trial where SQLite costs several times more, needs no server, and
optuna-dashboard opens it as it is (``optuna-dashboard hpt_studies.journal``).
"""

from __future__ import annotations

import os
import socket
import threading
import warnings

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..errors import TuneError

DEFAULT_STORE = "hpt_studies.journal"
TRACEBACK_KEY = "traceback"  # a failed trial's user attribute: why it failed
_storages: dict[str, BaseStorage] = {}
_lock = threading.Lock()


def describe_default(directory: str | None = None) -> str:
    return os.path.join(directory or os.getcwd(), DEFAULT_STORE)


def resolve_storage(spec: str | None, directory: str | None = None) -> tuple[BaseStorage, str, bool]:
    """``(storage, description, persistent)`` for a ``--storage`` value.

    None is the embedded default; ``memory`` lives in this process; a URL with ``://`` is a
    database (``sqlite:///studies.db``, ``postgresql://...``); a path ending in ``.journal``
    or ``.log`` is a journal file, one ending in ``.db``/``.sqlite``/``.sqlite3`` an SQLite file.
    """
    if spec is None or spec == "default":
        key = os.path.abspath(describe_default(directory))
        kind = "journal"
    elif spec == "memory":
        key, kind = "memory", "memory"
    elif "://" in spec:
        key, kind = spec, "rdb"
    elif spec.endswith((".journal", ".log")):
        key, kind = os.path.abspath(os.path.join(directory or os.getcwd(), spec)), "journal"
    elif spec.endswith((".db", ".sqlite", ".sqlite3")):
        key = "sqlite:///" + os.path.abspath(os.path.join(directory or os.getcwd(), spec))
        kind = "rdb"
    else:
        raise TuneError(
            f"--storage {spec!r} is not a store I know: use memory, a database URL "
            "(sqlite:///studies.db, postgresql://user@host/db), or a file ending in .journal or .db."
        )
    with _lock:
        if key not in _storages:
            _storages[key] = _open(kind, key, spec)
    return _storages[key], ("memory (this kernel only)" if kind == "memory" else key), kind != "memory"


def _open(kind: str, key: str, spec: str | None) -> BaseStorage:
    if kind == "memory":
        return InMemoryStorage()
    if kind == "journal":
        folder = os.path.dirname(key)
        if not os.path.isdir(folder):
            raise TuneError(f"--storage: the folder {folder!r} does not exist; create it or pick another path.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return JournalStorage(JournalFileBackend(key))
    try:
        return RDBStorage(key)
    except ImportError as error:
        raise TuneError(f"--storage {spec}: the database driver is missing ({error}); install it with pip.") from None
    except Exception as error:  # noqa: BLE001 - bad URL, server down: one clear line
        raise TuneError(f"--storage {spec}: cannot open the database: {type(error).__name__}: {error}") from None


# --- owners of RUNNING trials --------------------------------------------------------

def _process_start(pid: int) -> str:
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:  # noqa: BLE001 - no such process, or no psutil
        return "?"


def this_owner() -> str:
    """``host:pid:start``: names this process, and stays unique when pids are reused."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _owner_alive(owner: str) -> bool | None:
    """True or False when we can tell (same host), None when the owner is elsewhere."""
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_start(pid) == start


LEASE_PREFIX = "hpt:lease:"


def set_lease(study: optuna.Study, owner: str, state: str) -> None:
    """Record on the study that ``owner`` runs it ("active") or no longer does ("ended").

    One write per run start and end, instead of one per trial: a resumed study fails the
    RUNNING trials of a study whose only active owners are dead processes.
    """
    study._storage.set_study_system_attr(study._study_id, LEASE_PREFIX + owner, state)


def fail_orphaned_trials(study: optuna.Study, narrowed: list[tuple[optuna.Study, int, int]] = ()) -> list[int]:
    """Mark failed the RUNNING trials left by kernels that died (on this host), in ``study``
    and in the studies of its narrowings (``(study, seeded, base)``: numbered run-wide).

    Only when every other kernel that holds an active lease on the study is known dead: a
    live (or unknown, other-host) owner may still be running them.
    """
    me = this_owner()
    attrs = study._storage.get_study_system_attrs(study._study_id)
    active = [key[len(LEASE_PREFIX):] for key, state in attrs.items()
              if key.startswith(LEASE_PREFIX) and state == "active" and key[len(LEASE_PREFIX):] != me]
    dead = [owner for owner in active if _owner_alive(owner) is False]
    if not dead or len(dead) < len(active):
        return []
    orphans = []
    storage = study._storage
    for each, seeded, base in [(study, 0, 0), *narrowed]:
        for trial in each.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_user_attr(
                trial._trial_id, TRACEBACK_KEY,
                "Interrupted: the kernel running this trial stopped before it finished (restart or crash).",
            )
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            orphans.append(base + trial.number - seeded)
    for owner in dead:
        set_lease(study, owner, "ended")
    return orphans


SEGMENT_MARK = " ~narrowed-"  # a study searching a narrowed space is named "<name> ~narrowed-<k>"


def study_names(storage: BaseStorage) -> list[str]:
    """The studies users named (the studies that searched a narrowed space are part of theirs)."""
    return [s.study_name for s in storage.get_all_studies() if SEGMENT_MARK not in s.study_name]
