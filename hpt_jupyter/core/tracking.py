"""``--log mlflow``: a study as one MLflow run, each of its trials as a run nested under it.

The parent run (named after the study, in the experiment ``MLFLOW_EXPERIMENT_NAME`` or
``hpt-jupyter``) carries the study's settings as tags and the best value as a metric by trial
number; each trial's run carries its parameters as the cell saw them, its final value(s), every
``tune.report`` as a step of ``intermediate_value``, its state (a pruned trial's run is KILLED, a
failed one's FAILED with the reason), its constraints and, under PBT, its member and steps.

Logging stays off the trials' path: the run's thread only queues what happened, and one
background thread per tracker sends it with :class:`mlflow.MlflowClient` and explicit run ids.
A server that goes away is waited out (the queue is kept, retries back off) and said once, as
``tracker.problem`` and a ``tracking`` event of the run. The parent's id is kept in the study
(a study system attribute per tracking URI), so a resumed study logs under the same parent, and
only the trials that run has not logged yet.

MLflow is an optional extra: it is imported by :func:`make_tracker`, never when this module is.
"""

from __future__ import annotations

import atexit
import collections
import weakref
import datetime
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlparse

from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .engine import FAILED, FINISHED
from .pbt import PBT_KEY
from .run import ASSIGNED_KEY
from .score import short_failure
from .storage import TRACEBACK_KEY, masked, shown_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .run import Event, Run

__all__ = ["make_tracker", "MLflowTracker", "TRACKING_EVENT", "DEFAULT_EXPERIMENT"]

logger = logging.getLogger("hpt_jupyter")

TRACKING_EVENT = "tracking"  # run event: message is the tracker's problem, None once it clears
DEFAULT_EXPERIMENT = "hpt-jupyter"  # one experiment for all studies: each study is one parent run
PARENT_KEY = "hpt:mlflow:"  # study system attribute: + the shown tracking URI -> the parent run id
TRIAL_TAG = "hpt.trial"
RECORD_TAG = "hpt.record"  # a run's own id, to find a run whose creation MLflow may have retried
INTERMEDIATE = "intermediate_value"

SPEC_HELP = ("use --log mlflow (MLFLOW_TRACKING_URI, else MLflow's default) or --log mlflow:URI "
             "(mlflow:http://127.0.0.1:5000)")
INSTALL = "--log mlflow needs MLflow: pip install 'hpt-jupyter[mlflow]'"
# What MLflow reads as a tracking URI (a path without a scheme is a local file store).
URI_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")

FINISH_WAIT = 10.0  # seconds an exiting process waits for its studies' records to be logged
SLOW_CALL = 8.0  # a request pending this long means the server is not answering: say so
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between attempts while the server is away
IDLE_EXIT = 30.0  # an idle logging thread ends; the next event starts another

_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
_LOGGED_STATES = tuple(_STATUS)
# MLflow refuses these for good: retrying cannot help, the record is dropped (and said).
_REFUSALS = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
             "INVALID_STATE", "MALFORMED_REQUEST"}
# MLflow's limits (mlflow.utils.validation; 5000 for tags, what older servers take): values are cut,
# batches split.
MAX_PARAM, MAX_TAG, MAX_KEY = 6000, 5000, 250
BATCH_METRICS, BATCH_PARAMS_TAGS = 1000, 100


def make_tracker(spec: str) -> MLflowTracker:
    """The tracker of ``--log SPEC``: ``"mlflow"`` (the URI from ``MLFLOW_TRACKING_URI``, else
    MLflow's default) or ``"mlflow:URI"``. A bad spec or a missing MLflow is one
    :class:`TuneError` line, said before any study is touched.

    >>> tracker = make_tracker("mlflow:http://127.0.0.1:5000")  # doctest: +SKIP
    """
    if not isinstance(spec, str):
        raise TuneError(f"--log takes text, got {type(spec).__name__}: {SPEC_HELP}.")
    kind, colon, uri = spec.strip().partition(":")
    if kind.lower() != "mlflow":
        raise TuneError(f"--log {spec!r} is not a tracker I know: {SPEC_HELP}.")
    uri = uri.strip()
    if colon and not uri:
        raise TuneError(f"--log mlflow: has no URI after the colon: {SPEC_HELP}.")
    if uri:
        _check_uri(uri, f"--log mlflow:{shown_url(uri)}")
    try:
        import mlflow
    except ImportError as error:
        if not _installed("mlflow"):
            raise TuneError(f"{INSTALL}.") from None
        raise TuneError(f"--log mlflow: MLflow is installed but does not import ({error}); "
                        "reinstall it: pip install --force-reinstall mlflow.") from None
    if not uri:
        uri = mlflow.get_tracking_uri()  # what mlflow.set_tracking_uri or MLFLOW_TRACKING_URI say, else the default
        _check_uri(uri, f"--log mlflow: the tracking URI {shown_url(uri)} (from MLFLOW_TRACKING_URI or "
                        "mlflow.set_tracking_uri)")
    return MLflowTracker(uri)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        return False


def _check_uri(uri: str, what: str) -> None:
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower().split("+")[0]  # postgresql+psycopg2://
    if len(parsed.scheme) <= 1:  # no scheme (or a Windows drive letter): a local file store
        return
    if scheme not in URI_SCHEMES:
        raise TuneError(f"{what}: MLflow takes no '{parsed.scheme}:' tracking URI; give http(s)://HOST:PORT, "
                        "a database URL (sqlite:///mlflow.db, postgresql://...), a folder or databricks.")
    if scheme in ("http", "https") and not parsed.hostname:
        raise TuneError(f"{what} names no server: give it as {scheme}://HOST:PORT.")


class _Refused(Exception):
    """MLflow refused a record for good (a bad value, a deleted run): retrying cannot help."""


class _StoreAway(OSError):
    """The study's own store did not answer (its outage is the run's to say; logging waits)."""


@dataclass
class _Open:
    """The study (re)starts: make or find its parent run, set its settings, log what is missing."""

    tags: dict[str, str]


@dataclass
class _Trial:
    trial: FrozenTrial
    params: dict[str, Any]
    failure: str | None
    run_id: str | None = None  # progress kept across retries: each step is sent once
    record: str = field(default_factory=lambda: uuid.uuid4().hex)
    batches_sent: int = 0


@dataclass
class _Best:
    number: int
    value: float
    params: dict[str, Any]


@dataclass
class _Tags:
    tags: dict[str, str]


@dataclass
class _Finish:
    status: str
    tags: dict[str, str]


@dataclass
class _Model:
    name: str
    path: str  # the saved MLflow model, uploaded as the parent's artifact ``name``
    flavour: str


class MLflowTracker:
    """Logs a run's study to MLflow off the trials' path. Made by :func:`make_tracker`;
    :func:`hpt_jupyter.start` attaches it (``log="mlflow"``) and keeps it as ``run.tracker``.

    ``problem`` is what keeps trials from MLflow now (None: nothing); ``describe()`` says where
    the study is logged; ``flush(timeout)`` waits until everything queued is logged.
    """

    def __init__(self, uri: str, experiment: str | None = None) -> None:
        self.uri = uri  # what the client connects to (it may carry a password)
        self.where = shown_url(uri)
        self.experiment_name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.models: dict[str, str] = {}  # name -> artifact URI of a model logged by log_refit
        self.dropped: list[str] = []  # records MLflow refused for good, one line each
        self._run: Run | None = None
        self._client: MlflowClient | None = None
        self._condition = threading.Condition()
        self._jobs: collections.deque[Any] = collections.deque()
        self._current: Any = None  # the job the logging thread is sending
        self._worker: threading.Thread | None = None
        self._problem: str | None = None
        self._broken = False  # the parent run cannot be made: nothing can be logged
        self._logged: set[int] = set()  # trial numbers logged under the parent (the logging thread's)
        self._looked_for_logged = False
        self._unfinished: dict[int, str] = {}  # trial number -> its run, created but not completed
        self._attempted: set[str] = set()  # records whose run creation was sent, its outcome unknown
        self._parent_record = uuid.uuid4().hex
        self._best_number: int | None = None
        self._slow = False  # the pending request outlived SLOW_CALL (MLflow retried it inside)
        self._pending: object | None = None  # the request under way, as its watchdog knows it
        self._probe = uri.lower().startswith(("http://", "https://"))

    # --- what the user and the views read ------------------------------------------------

    @property
    def problem(self) -> str | None:
        """``MLflow at http://…:5000 unreachable since 14:03:07 (…); retrying, nothing is lost``,
        or None while logging goes well."""
        return self._problem

    def describe(self) -> str:
        """``MLflow at http://127.0.0.1:5000 · run 5f0c…``: where the study is logged."""
        run = self.parent_run_id or "not created yet"
        return f"MLflow at {self.where} · experiment {self.experiment_name} · run {run}"

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued record is logged, at most ``timeout`` seconds (None: no
        limit). True when nothing is left to log."""
        return self._settle(timeout, give_up_on_problem=False)

    # --- wiring ----------------------------------------------------------------------------

    def attach(self, run: Run) -> None:
        """Follow ``run``'s events (before it starts, so that its first trials are logged)."""
        self._run = run
        run.tracker = self
        run.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        """The run's thread: note what happened and return (the logging thread sends it)."""
        run = event.run
        if event.kind == "started":
            self._enqueue(_Open(self._settings(run)))
        elif event.kind == "trial_finished" and event.trial is not None and event.trial.state in _LOGGED_STATES:
            trial = event.trial
            self._enqueue(_Trial(trial, self._params(run, trial), event.message))
            if trial.state == TrialState.COMPLETE and not run.is_multi_objective:
                best = run.best_trial
                if best is not None and best.number != self._best_number:
                    self._best_number = best.number
                    self._enqueue(_Best(best.number, best.value, self._params(run, best)))
        elif event.kind == "budget":
            self._enqueue(_Tags({"hpt.budget": _text(run.budget)}))
        elif event.kind == "finished":
            status = {FINISHED: "FINISHED", FAILED: "FAILED"}.get(run.state, "KILLED")  # stopped
            # the space as known by now (a plain function's knobs are learnt from its trials)
            self._enqueue(_Finish(status, {"hpt.end_reason": run.reason, "hpt.sampler": run.sampler_text(),
                                           "hpt.budget": _text(run.budget), "hpt.space": _space(run)}))
            # Not waited for here: the study ends (and its values are injected) at once, while the
            # logging thread catches up; run.tracker.flush() waits for it, and a script or batch
            # kernel that exits waits a bounded time (see _flush_at_exit).
            _EXITING.add(self)

    def _settings(self, run: Run) -> dict[str, str]:
        tags = {"hpt.study": run.name, "hpt.space": _space(run), "hpt.sampler": run.sampler_text(),
                "hpt.pruner": run.pruner_name, "hpt.scheduler": run.scheduler.describe() or "none",
                "hpt.budget": _text(run.budget), "hpt.timeout": "none" if run.timeout is None else f"{run.timeout:g}s",
                "hpt.store": run.store, "hpt.directions": " ".join(run.directions)}
        if run.seed is not None:
            tags["hpt.seed"] = str(run.seed)
        if run.auto_stop is not None:
            tags["hpt.stop"] = "auto"
        if run.cell is not None:
            tags["hpt.cell"] = run.cell.source
        return tags

    @staticmethod
    def _params(run: Run, trial: FrozenTrial) -> dict[str, Any]:
        """The knobs' values as the cell saw them (a choice's object, not its stored label),
        and what the cell assigned instead where it chose otherwise."""
        params = run._decoded(trial.params)
        assigned = trial.user_attrs.get(ASSIGNED_KEY)
        if isinstance(assigned, dict):
            params.update(assigned)
        return params

    # --- refit ------------------------------------------------------------------------------

    def log_refit(self, values: Mapping[str, Any]) -> list[str]:
        """Log the refit cell's models under the study's parent run, each as an MLflow model
        with its own flavour (``mlflow.sklearn`` for scikit-learn estimators, ``mlflow.pytorch``
        for ``torch.nn.Module``) at the artifact path of its variable's name; other values are
        left out. Saved now (what the variable holds now), uploaded by the logging thread.
        Never raises: a model that cannot be saved is said (a warning and ``problem``).
        Returns the names queued."""
        queued = []
        for name, value in values.items():
            try:
                flavour = _flavour(value)
                if flavour is None:
                    continue
                if flavour == "sklearn" and not _fitted(value):
                    logger.warning("hpt_jupyter: %r is not fitted after the refit, so it was not logged to MLflow "
                                   "(fit it in the cell to log it)", name)
                    continue
                path = os.path.join(tempfile.mkdtemp(prefix="hpt-mlflow-"), _key(name))
                _save_model(flavour, value, path)
                self._enqueue(_Model(_key(name), path, flavour))
                if self._broken:  # nothing will upload it
                    _remove_tree(os.path.dirname(path))
                    continue
                queued.append(name)
            except Exception as error:  # noqa: BLE001 - the user's cell must not fail for the log
                why = f"could not save {name!r} for MLflow ({type(error).__name__}: {_short(str(error))})"
                self.dropped.append(why)
                self._report(why)
        return queued

    # --- the queue --------------------------------------------------------------------------

    def _enqueue(self, job: Any) -> None:
        with self._condition:
            if self._broken:
                return
            self._jobs.append(job)
            self._condition.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hpt-mlflow", daemon=True)
                self._worker.start()

    def _settle(self, timeout: float | None, give_up_on_problem: bool) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._jobs or self._current is not None:
                if give_up_on_problem and self._problem is not None:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(0.5 if remaining is None else min(remaining, 0.5))
            return True

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._jobs:
                    if not self._condition.wait(IDLE_EXIT) and not self._jobs:
                        self._worker = None
                        return
                self._current = self._jobs.popleft()
            try:
                self._send_until_done(self._current)
            except Exception:  # noqa: BLE001 - a bug here must not end logging for the study
                logger.exception("hpt_jupyter: MLflow logging failed on %s", type(self._current).__name__)
            with self._condition:
                self._current = None
                self._condition.notify_all()

    def _send_until_done(self, job: Any) -> None:
        """Send ``job``; while the server is away, retry with backoff (keeping the queue)."""
        delay = RETRY_FIRST
        while not self._broken:
            try:
                self._reachable()
                self._send(job)
            except _Refused as refusal:
                self._refused(job, str(refusal))
                return
            except Exception as error:  # noqa: BLE001 - sorted below: refused for good, away, or a bug
                if _refused_for_good(error):
                    self._refused(job, str(error))
                    return
                if not _transient(error):
                    logger.exception("hpt_jupyter: MLflow logging failed on %s", _describe_job(job))
                    self.dropped.append(f"{_describe_job(job)}: {type(error).__name__}: {_short(str(error))}")
                    return
                since = time.strftime("%H:%M:%S")
                if isinstance(error, _StoreAway):
                    self._report(f"MLflow logging waits for the study's store since {since}; nothing is lost")
                else:
                    self._report(f"MLflow at {self.where} unreachable since {since} "
                                 f"({_short(masked(str(error), self.uri))}); retrying, nothing is lost")
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._report(None)
            return

    def _refused(self, job: Any, why: str) -> None:
        if isinstance(job, _Open):  # without its parent run no trial can be logged
            with self._condition:
                self._broken = True
                self._jobs.clear()
            self._report(f"MLflow at {self.where} refused the study's run: {_short(why)}; nothing is logged")
            return
        line = f"{_describe_job(job)}: {_short(why)}"
        self.dropped.append(line)
        logger.warning("hpt_jupyter: MLflow refused %s", line)

    def _report(self, problem: str | None) -> None:
        """A problem starts (said once, until it clears) or clears."""
        with self._condition:
            if problem is not None and self._problem is not None:
                return  # the same outage goes on
            if problem is None and (self._problem is None or self._broken):
                return
            self._problem = problem
            self._condition.notify_all()
        if problem is not None:
            logger.warning("hpt_jupyter: %s", problem)
        if self._run is not None:
            self._run._emit(TRACKING_EVENT, message=problem)

    # --- talking to MLflow (the logging thread only) ----------------------------------------

    def _reachable(self) -> None:
        """Fail fast while an HTTP server is away: MLflow's own client would retry a refused
        connection for minutes, inside one call, with nothing to say meanwhile."""
        if not self._probe:
            return
        import requests

        try:
            requests.get(self.uri.rstrip("/") + "/health", timeout=(3, 10))
        except requests.exceptions.SSLError:
            return  # it answers; the client's own TLS settings decide
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise ConnectionError(f"no answer: {type(error).__name__}") from None

    def _call(self, function: Any, *args: Any, watch: bool = True, **kwargs: Any) -> Any:
        """``function(...)`` of MLflow's client; one pending longer than SLOW_CALL is said as a
        problem (MLflow's client retries a lost connection inside the call, for minutes)."""
        self._slow = False
        pending = self._pending = object()
        timer = None
        if watch:
            timer = threading.Timer(SLOW_CALL, self._pending_too_long, (pending,))
            timer.daemon = True
            timer.start()
        try:
            return function(*args, **kwargs)
        finally:
            with self._condition:
                self._pending = None
            if timer is not None:
                timer.cancel()

    def _pending_too_long(self, pending: object) -> None:
        with self._condition:
            if self._pending is not pending:  # it ended as the timer fired
                return
            self._slow = True
        self._report(f"MLflow at {self.where} not answering since {time.strftime('%H:%M:%S')}; "
                     "retrying, nothing is lost")

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _send(self, job: Any) -> None:
        if isinstance(job, _Open):
            self._open(job)
            return
        if self.parent_run_id is None:
            self._open(_Open({}))
        if isinstance(job, _Trial):
            self._log_trial(job)
        elif isinstance(job, _Best):
            stamp = _now_ms()
            tags = {"hpt.best_trial": str(job.number)}
            tags.update({f"hpt.best.{_key(k)}": _cut(_text(v), MAX_TAG) for k, v in job.params.items()})
            self._log_batch(self.parent_run_id, [_metric("best_value", job.value, stamp, job.number)], {}, tags)
        elif isinstance(job, _Tags):
            self._log_batch(self.parent_run_id, [], {}, job.tags)
        elif isinstance(job, _Finish):
            self._finish(job)
        elif isinstance(job, _Model):
            self._call(self.client.log_artifacts, self.parent_run_id, job.path, job.name, watch=False)
            self.models[job.name] = f"runs:/{self.parent_run_id}/{job.name}"
            self._log_batch(self.parent_run_id, [], {}, {f"hpt.model.{job.name}": f"mlflow.{job.flavour}"})
            _remove_tree(os.path.dirname(job.path))

    def _open(self, job: _Open) -> None:
        run = self._run
        if self.parent_run_id is None:
            self.parent_run_id, reused = self._parent(run)
            self._unfinished = self._logged_trials() if reused else {}
        else:  # a study started again (+N, resume): its parent runs again
            self._set_status(self.parent_run_id, "RUNNING", None)
        if job.tags:
            self._log_batch(self.parent_run_id, [], {}, job.tags)
        if not self._looked_for_logged and run is not None:
            # Trials finished before this tracker (a resumed study, a study first run without
            # --log, a kernel that died with records queued) go first; a trial also queued from
            # an event is sent once, and a run left unfinished is completed, not made again.
            try:
                stored = run.trials(states=_LOGGED_STATES)
            except Exception as error:  # noqa: BLE001 - the store's outage: the run says it
                raise _StoreAway(f"the study's store: {error}") from error
            backlog = [_Trial(t, self._params(run, t), None, run_id=self._unfinished.get(t.number))
                       for t in stored if t.number not in self._logged]
            with self._condition:
                self._jobs.extendleft(reversed(backlog))
            self._looked_for_logged = True

    def _parent(self, run: Run | None) -> tuple[str, bool]:
        """The study's parent run, and whether it was there before: the one the study's store
        names for this URI, else a new one."""
        key = PARENT_KEY + self.where
        stored = None
        if run is not None:
            storage, study_id = run.base_study._storage, run.base_study._study_id
            try:
                stored = storage.get_study_system_attrs(study_id).get(key)
            except Exception as error:  # noqa: BLE001 - the store's outage: the run says it
                raise _StoreAway(f"the study's store: {error}") from error
        if stored:
            try:
                found = self._call(self.client.get_run, stored)
            except Exception as error:  # noqa: BLE001
                if not _refused_for_good(error):
                    raise  # the server is away: try again later
                found = None  # deleted for good (or another server at this URI): a new parent
            if found is not None and found.info.lifecycle_stage == "active":
                self.experiment_id = found.info.experiment_id
                self._set_status(stored, "RUNNING", None)
                return stored, True
        self.experiment_id = self._experiment()
        name = run.name if run is not None else "study"
        parent = self._create_run(name, {"hpt.study": name}, _now_ms(), self._parent_record)
        if run is not None:
            try:
                storage.set_study_system_attr(study_id, key, parent)
            except Exception:  # noqa: BLE001 - the store's own outage: this session logs on
                logger.warning("hpt_jupyter: could not keep the MLflow run id in study %r; a resumed "
                               "study will log under a new parent run", run.name, exc_info=True)
        return parent, False

    def _experiment(self) -> str:
        found = self._call(self.client.get_experiment_by_name, self.experiment_name)
        if found is None:
            try:
                return self._call(self.client.create_experiment, self.experiment_name)
            except Exception as error:  # noqa: BLE001
                if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
                # another kernel made it meanwhile
                found = self._call(self.client.get_experiment_by_name, self.experiment_name)
        if found.lifecycle_stage != "active":
            raise _Refused(f"the experiment '{self.experiment_name}' is deleted: restore it in MLflow, or set "
                           "MLFLOW_EXPERIMENT_NAME to another")
        return found.experiment_id

    def _logged_trials(self) -> dict[int, str]:
        """Under a parent run that was there before: note the trials logged in full; returns
        the runs of those left unfinished (trial number -> run id)."""
        unfinished: dict[int, str] = {}
        token = None
        while True:
            page = self._call(self.client.search_runs, [self.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                              max_results=1000, page_token=token)
            for found in page:
                number = found.data.tags.get(TRIAL_TAG, "")
                if not number.isdigit():
                    continue
                if found.info.status in ("FINISHED", "FAILED", "KILLED"):
                    self._logged.add(int(number))
                else:
                    unfinished[int(number)] = found.info.run_id
            token = page.token
            if not token:
                return unfinished

    def _create_run(self, name: str, tags: dict[str, str], start_ms: int, record: str,
                    parent: str | None = None) -> str:
        """A new run, created once even where MLflow's client retried the request inside (its
        first attempt may have landed too) or an earlier attempt failed after landing."""
        tags = {**tags, RECORD_TAG: record}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        if record in self._attempted:
            existing = self._runs_with_record(record)
            if existing:
                self._attempted.discard(record)
                return existing
        self._attempted.add(record)
        created = self._call(self.client.create_run, self.experiment_id, start_time=start_ms, tags=tags,
                             run_name=name)
        run_id = created.info.run_id
        if self._slow:
            self._runs_with_record(record, keep=run_id)
        self._attempted.discard(record)
        return run_id

    def _runs_with_record(self, record: str, keep: str | None = None) -> str | None:
        """The run made for ``record`` (others made for it are deleted), or None."""
        found = self._call(self.client.search_runs, [self.experiment_id],
                           filter_string=f"tags.`{RECORD_TAG}` = '{record}'", max_results=50)
        ids = sorted(r.info.run_id for r in found)
        if not ids:
            return None
        keep = keep if keep in ids else ids[0]
        for other in ids:
            if other != keep:
                self._call(self.client.delete_run, other)
        return keep

    def _log_trial(self, job: _Trial) -> None:
        trial = job.trial
        if trial.number in self._logged:
            return
        if job.run_id is None:
            tags = {TRIAL_TAG: str(trial.number), "hpt.study": self._run.name if self._run else ""}
            job.run_id = self._create_run(f"trial {trial.number}", tags, _ms(trial.datetime_start) or _now_ms(),
                                          job.record, parent=self.parent_run_id)
        batches = _batches(*_trial_record(trial, job.params, job.failure))
        for metrics, params, tags in batches[job.batches_sent:]:
            self._log_batch(job.run_id, metrics, params, tags)
            job.batches_sent += 1
        self._set_status(job.run_id, _STATUS[trial.state], _ms(trial.datetime_complete) or _now_ms())
        self._logged.add(trial.number)

    def _finish(self, job: _Finish) -> None:
        run = self._run
        tags = dict(job.tags)
        if run is not None and run.is_multi_objective:
            front = sorted(t.number for t in run.pareto_front())
            tags["hpt.pareto_front"] = _cut(", ".join(map(str, front)), MAX_TAG)
        self._log_batch(self.parent_run_id, [], {}, tags)
        self._set_status(self.parent_run_id, job.status, _now_ms())

    def _log_batch(self, run_id: str, metrics: list, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        for chunk_metrics, chunk_params, chunk_tags in _batches(metrics, params, tags):
            self._call(self.client.log_batch, run_id, metrics=chunk_metrics,
                       params=[Param(k, _cut(v, MAX_PARAM)) for k, v in chunk_params.items()],
                       tags=[RunTag(k, _cut(v, MAX_TAG)) for k, v in chunk_tags.items()])

    def _set_status(self, run_id: str, status: str, end_ms: int | None) -> None:
        # The store's own call: MlflowClient.set_terminated would also print a link to stdout
        # (MLflow 3), which in a kernel lands in whichever cell runs then.
        from mlflow.entities import RunStatus

        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if store is None or not hasattr(store, "update_run_info"):
            self._call(self.client.set_terminated, run_id, status, end_ms)
            return
        self._call(store.update_run_info, run_id, RunStatus.from_string(status), end_ms, None)


# --- records ----------------------------------------------------------------------------------


def _space(run: Run) -> str:
    """``C = tune.float(0.001, 1000.0, log=True)``, one knob a line; "none known yet" for a plain
    function before its first trial."""
    lines = [f"{name} = {param.describe()}" for name, param in run.declared_space().items()]
    return "\n".join(lines) or "none known yet"


def _trial_record(trial: FrozenTrial, params: dict[str, Any], failure: str | None
                  ) -> tuple[list, dict[str, str], dict[str, str]]:
    """A finished trial as MLflow metrics, params and tags."""
    stamp = _ms(trial.datetime_complete) or _now_ms()
    metrics = []
    values = trial.values or []
    if len(values) == 1:
        metrics.append(_metric("value", values[0], stamp, 0))
    else:
        metrics += [_metric(f"value_{k}", v, stamp, 0) for k, v in enumerate(values)]
    metrics += [_metric(INTERMEDIATE, v, stamp, int(step)) for step, v in sorted(trial.intermediate_values.items())]
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        metrics.append(_metric("duration_seconds", seconds, stamp, 0))
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[trial.state]
    tags = {"hpt.state": state}
    if trial.state == TrialState.FAIL:
        traceback = trial.user_attrs.get(TRACEBACK_KEY, "")
        tags["hpt.failure"] = _cut(failure or short_failure(traceback), MAX_TAG)
        if traceback:
            tags["hpt.traceback"] = traceback[-MAX_TAG:]  # its end says where and why
    constraints = trial.constraints
    if constraints:
        metrics += [_metric(f"constraint.{_key(k)}", v, stamp, 0) for k, v in constraints.items() if v is not None]
        tags["hpt.feasible"] = "true" if all(v is not None and v <= 0 for v in constraints.values()) else "false"
    segment = trial.user_attrs.get(PBT_KEY)
    if isinstance(segment, dict):
        # the steps as run.lineage() counts them: those reported; a segment that reported none
        # sits at the last step of the state it continued
        steps = sorted(trial.intermediate_values)
        start, end = (steps[0], steps[-1]) if steps else (max(int(segment.get("start", 0)) - 1, 0),) * 2
        tags.update({"hpt.pbt.member": _text(segment.get("member")), "hpt.pbt.parent": _text(segment.get("parent")),
                     "hpt.pbt.from_trial": _text(segment.get("from_trial")),
                     "hpt.pbt.exploited": "true" if segment.get("exploited") else "false",
                     "hpt.pbt.start_step": str(start), "hpt.pbt.end_step": str(end)})
    logged_params: dict[str, str] = {}
    for name, value in params.items():
        key = _key(name)
        while key in logged_params:  # two names that read the same once cleaned
            key += "_"
        logged_params[key] = _cut(_text(value), MAX_PARAM)
    return metrics, logged_params, tags


def _batches(metrics: list, params: dict[str, str], tags: dict[str, str]) -> list[tuple[list, dict, dict]]:
    """Within MLflow's log_batch limits: 100 params, 100 tags, 1000 entities a request."""
    params_items, tags_items = list(params.items()), list(tags.items())
    batches = []
    while True:
        chunk_params = dict(params_items[:BATCH_PARAMS_TAGS])
        chunk_tags = dict(tags_items[:BATCH_PARAMS_TAGS])
        params_items, tags_items = params_items[BATCH_PARAMS_TAGS:], tags_items[BATCH_PARAMS_TAGS:]
        room = BATCH_METRICS - len(chunk_params) - len(chunk_tags)
        chunk_metrics, metrics = metrics[:room], metrics[room:]
        batches.append((chunk_metrics, chunk_params, chunk_tags))
        if not (metrics or params_items or tags_items):
            return batches


def _metric(key: str, value: float, stamp: int, step: int) -> Any:
    from mlflow.entities import Metric

    return Metric(key, float(value), stamp, step)


def _key(name: Any) -> str:
    """A name MLflow takes as a key: letters, digits, ``_ - . space``; no path tricks."""
    key = re.sub(r"[^\w.\- ]", "_", str(name)).strip() or "_"
    if key.startswith("."):
        key = "_" + key
    return key[:MAX_KEY]


def _text(value: Any) -> str:
    return "none" if value is None else str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return _cut(line, 200)


def _ms(moment: datetime.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)  # Optuna's times are local


def _now_ms() -> int:
    return int(time.time() * 1000)


def _refused_for_good(error: BaseException) -> bool:
    return isinstance(error, _Refused) or getattr(error, "error_code", None) in _REFUSALS


def _transient(error: BaseException) -> bool:
    """An outage worth waiting out: the network, the server, its database (MLflow wraps the
    last two in MlflowException); anything else is a bug, not retried."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, (MlflowException, OSError, TimeoutError))


def _describe_job(job: Any) -> str:
    if isinstance(job, _Trial):
        return f"trial {job.trial.number}"
    if isinstance(job, _Model):
        return f"model {job.name!r}"
    return f"the study's {type(job).__name__.strip('_').lower()} record"


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --- models -------------------------------------------------------------------------------------


def _flavour(value: Any) -> str | None:
    """MLflow's flavour for ``value``, looking only at libraries the notebook already imported."""
    sklearn_base = sys.modules.get("sklearn.base")
    if sklearn_base is not None and isinstance(value, sklearn_base.BaseEstimator):
        return "sklearn"
    torch_nn = sys.modules.get("torch.nn")
    if torch_nn is not None and isinstance(value, torch_nn.Module):
        return "pytorch"
    return None


def _fitted(estimator: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    except Exception:  # noqa: BLE001 - an estimator that cannot say: log it
        return True
    return True


def _save_model(flavour: str, value: Any, path: str) -> None:
    """``mlflow.<flavour>.save_model`` with the requirements named here: MLflow's own inference
    loads the model in a fresh Python (measured: 28 s for a LogisticRegression)."""
    import inspect

    if flavour == "sklearn":
        import mlflow.sklearn as module
    else:
        import mlflow.pytorch as module
    options = {}
    if flavour == "pytorch" and "serialization_format" in inspect.signature(module.save_model).parameters:
        options["serialization_format"] = "pickle"  # MLflow 3's default, pt2, needs an input example
    module.save_model(value, path, pip_requirements=_requirements(module, value, flavour), **options)


def _requirements(module: Any, value: Any, flavour: str) -> list[str]:
    """The flavour's pinned requirements, its serialisers, and the packages the model's own
    classes come from (``xgboost`` for an ``XGBClassifier`` in a pipeline)."""
    wanted = set(module.get_default_pip_requirements())
    parts = [value]
    if flavour == "sklearn":
        wanted |= {_pinned(name) for name in ("cloudpickle", "skops")} - {None}
        try:
            parts += list(value.get_params(deep=True).values())
        except Exception:  # noqa: BLE001
            pass
    others = {type(part).__module__.split(".")[0] for part in parts} - {"builtins", "__main__", "sklearn", "torch"}
    if others:  # reading every installed distribution's files takes a moment: only when needed
        known = importlib.metadata.packages_distributions()
        for module_name in others:
            wanted.update(_pinned(distribution) for distribution in known.get(module_name, []))
    return sorted(w for w in wanted if w)


def _pinned(distribution: str) -> str | None:
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"{distribution}=={version.split('+')[0]}"  # no local label (+cpu): pip could not find it


_EXITING: weakref.WeakSet = weakref.WeakSet()  # trackers whose study ended, maybe still logging


@atexit.register
def _flush_at_exit() -> None:
    """A script or a batch kernel (nbconvert, papermill) that ends right after its study: log what
    is queued before the process goes, within FINISH_WAIT seconds in all, unless the server is away."""
    deadline = time.monotonic() + FINISH_WAIT
    for tracker in list(_EXITING):
        tracker._settle(max(0.0, deadline - time.monotonic()), give_up_on_problem=True)
