"""Where studies live: an embedded journal file next to the notebook by default.

The journal file was chosen by measurement (``benchmarks/storage.py``): it costs a few
milliseconds per trial where SQLite costs several times more, needs no server, and
optuna-dashboard opens it as it is (``optuna-dashboard hpt_studies.journal``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import socket
import threading
import time
import warnings

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ..errors import TuneError
from .resilient import ResilientStorage

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
    where = "memory (this kernel only)" if kind == "memory" else (shown_url(key) if kind == "rdb" else key)
    return _storages[key], where, kind != "memory"


def store_file(spec: str | None, directory: str | None = None) -> str | None:
    """The file a ``--storage`` value keeps its studies in (None: memory or a database server)."""
    if spec is None or spec == "default":
        return os.path.abspath(describe_default(directory))
    if spec == "memory" or ("://" in spec and not spec.startswith("sqlite:///")):
        return None
    path = spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else spec
    return os.path.abspath(os.path.join(directory or os.getcwd(), path))


# --- showing a URL -------------------------------------------------------------------

_SECRET_KEYS = {"password", "passwd", "pwd"}
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^\s/@:]*:)[^\s/@]*@")


def shown_url(url: str) -> str:
    """``url`` as it may be shown: its password (also one given as ``?password=``) is ``***``.

    The unmasked URL is only for connecting; headers, listings and errors show this one.
    """
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if any(key.lower() in _SECRET_KEYS for key in parsed.query):
            parsed = parsed.set(query={key: ("***" if key.lower() in _SECRET_KEYS else value)
                                       for key, value in parsed.query.items()})
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: mask what looks like one
        return masked(url, url)


def masked(text: str, url: str | None = None) -> str:
    """``text`` (an error message, say) with the password of ``url``, and of any URL in it,
    replaced by ``***``."""
    secrets = []
    if url:
        try:
            from sqlalchemy.engine import make_url

            parsed = make_url(url)
            secrets = [parsed.password, *(value for key, value in parsed.query.items()
                                          if key.lower() in _SECRET_KEYS)]
        except Exception:  # noqa: BLE001
            match = _URL_PASSWORD.search(url)
            secrets = [match.group(0)[len(match.group(1)):-1]] if match else []
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + "***@", text)
    from urllib.parse import quote, quote_plus

    for secret in secrets:
        for form in {str(secret), quote(str(secret), safe=""), quote_plus(str(secret))} if secret else ():
            text = text.replace(form, "***")
    return text


def _open(kind: str, key: str, spec: str | None) -> BaseStorage:
    if kind == "memory":
        return InMemoryStorage()
    if kind == "journal":
        folder = os.path.dirname(key)
        if not os.path.isdir(folder):
            raise TuneError(f"--storage: the folder {folder!r} does not exist; create it or pick another path.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ResilientStorage(JournalStorage(JournalFileBackend(key)), key)
    shown = shown_url(key)
    try:
        # Optuna caches an RDB's trials in a _CachedStorage per study; one for every study of
        # this store, inside the wrapper that waits out outages.
        return ResilientStorage(_CachedStorage(_open_rdb(_with_installed_driver(key))), shown)
    except ImportError as error:
        hint = "pip install 'hpt-jupyter[postgres]'" if key.startswith("postgres") else "pip"
        raise TuneError(f"--storage {shown}: the database driver is missing "
                        f"({masked(str(error.__cause__ or error), key)}); install it with {hint}.") from None
    except Exception as error:  # noqa: BLE001 - bad URL, server down: one clear line
        raise TuneError(f"--storage {shown}: cannot open the database: "
                        f"{type(error).__name__}: {masked(str(error), key)}") from None


def _with_installed_driver(url: str) -> str:
    """A plain ``postgresql://`` URL names SQLAlchemy's default driver (psycopg 3 from
    SQLAlchemy 2.1 on, psycopg2 before): when that one is missing, use the other if installed."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.drivername != "postgresql":
            return url
        dialect = parsed.get_dialect()
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()
        return url
    except ImportError:
        for driver in ("psycopg", "psycopg2"):
            if importlib.util.find_spec(driver) is not None:
                return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
        return url
    except Exception:  # noqa: BLE001 - RDBStorage says what is wrong with the URL
        return url


_CONCURRENT = re.compile(r"already exists|duplicate|unique constraint|database is locked|deadlock", re.I)


def _open_rdb(url: str, attempts: int = 12) -> RDBStorage:
    """``RDBStorage(url)``, even while other processes create the same fresh schema.

    Optuna creates the tables and stamps the schema version when a storage is opened; two
    processes doing that at once on a new SQLite file or PostgreSQL database make one of them
    fail (a table or type that "already exists", a duplicate version row). The tables are then
    there, or about to be: open again after a short, random pause.
    """
    import sqlalchemy.exc

    # No pool_pre_ping (a round trip before every session, 2-3 ms a trial on PostgreSQL here): a
    # pooled connection the server closed fails its first call, SQLAlchemy drops the pool's
    # connections, and ResilientStorage's retry connects anew.
    for attempt in range(attempts):
        try:
            return RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.ProgrammingError) as error:
            if attempt == attempts - 1 or not (isinstance(error, sqlalchemy.exc.IntegrityError)
                                               or _CONCURRENT.search(str(error))):
                raise
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
    raise AssertionError("unreachable")


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


STAGE_MARK = " ~narrowed-"  # a study searching a narrowed space is named "<name> ~narrowed-<k>"


def study_names(storage: BaseStorage) -> list[str]:
    """The studies users named (the studies that searched a narrowed space are part of theirs)."""
    return [s.study_name for s in storage.get_all_studies() if STAGE_MARK not in s.study_name]
