"""The plain Python API: everything ``%%tune`` does is a call here."""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable, Iterator, Sequence, TextIO

import optuna
from optuna.samplers import BaseSampler

from .core.cell import CompiledCell
from .core.executors import make_executor
from .core.heartbeat import DEFAULT_GRACE
from .core.pbt import (FileCheckpoints, MemoryCheckpoints, PBTSettings, PopulationScheduler, checkpoint_directory,
                       make_scheduler)
from .core.pruners import make_pruner
from .core.resilient import DEFAULT_LIMIT
from .core.run import NARROWINGS_KEY, Run
from .core.steered import COPY_KEY
from .core.samplers import make_sampler
from .core.space import tune
from .core.stopping import AutoStop, check_stop
from .core.warm import read_sources, seed_study, stored_warm_start
from .core.storage import fail_orphaned_trials, resolve_storage, store_file, this_owner
from .errors import TuneError
from .views.text import TextReporter

DEFAULT_TRIALS = 20
DIRECTIONS = ("minimize", "maximize")
MODES = ("auto", "resume", "fresh")
_memory_checkpoints: dict[str, MemoryCheckpoints] = {}  # study name -> checkpoints of a memory study


def check_options(n_trials: Any, timeout: Any, directions: Sequence[str], max_failures: Any,
                  target: Any, seed: Any, mode: str, patience: Any = None) -> None:
    """One message per mistake, before any study is touched."""
    if n_trials is not None and (not isinstance(n_trials, numbers.Integral) or n_trials < 1):
        raise TuneError(f"-n/--n-trials must be a positive whole number, got {n_trials!r}.")
    if timeout is not None and (not isinstance(timeout, numbers.Real) or timeout <= 0):
        raise TuneError(f"--timeout must be a positive number of seconds, got {timeout!r}.")
    if not directions:
        raise TuneError("--direction needs at least one of: minimize, maximize.")
    for direction in directions:
        if direction not in DIRECTIONS:
            raise TuneError(f"--direction {direction!r} is not one of: minimize, maximize.")
    if max_failures is not None and (not isinstance(max_failures, numbers.Integral) or max_failures < 0):
        raise TuneError(f"--max-failures must be a whole number >= 0 (0: never stop), got {max_failures!r}.")
    if target is not None and not isinstance(target, numbers.Real):
        raise TuneError(f"--target must be a number, got {target!r}.")
    if target is not None and len(directions) > 1:
        raise TuneError("--target works with one objective only; drop it or use one --direction.")
    if seed is not None and not isinstance(seed, numbers.Integral):
        raise TuneError(f"--seed must be a whole number, got {seed!r}.")
    if mode not in MODES:
        raise TuneError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if patience is not None and (not isinstance(patience, numbers.Integral) or patience < 1):
        raise TuneError(f"--patience must be a positive whole number of complete trials, got {patience!r}.")


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def open_study(name: str, storage_spec: str | None, directions: list[str], sampler: BaseSampler,
               mode: str, directory: str | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> tuple[optuna.Study, str, bool]:
    """``(study, what happened, persistent)``: created, resumed or started over."""
    storage, where, persistent = resolve_storage(storage_spec, directory)
    # No early stopping unless asked for: tune.report records a curve (Optuna's default would be
    # a median pruner that nobody chose).
    pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
    try:
        storage.get_study_id_from_name(name)
        exists = True
    except KeyError:
        exists = False
    opened = f"new study in {where}"
    if exists and mode == "fresh":
        study_id = storage.get_study_id_from_name(name)
        stored = len(storage.get_all_trials(study_id, deepcopy=False))
        narrowings = storage.get_study_system_attrs(study_id).get(NARROWINGS_KEY) or {"log": []}
        for entry in narrowings["log"]:  # the studies of its narrowed spaces go with it
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=entry["study"], storage=storage)
        optuna.delete_study(study_name=name, storage=storage)
        exists = False
        opened = f"started over in {where} (--fresh deleted {stored} stored trials)"
    elif not exists and mode == "resume":
        opened = f"nothing stored as '{name}' to resume: new study in {where}"
    with _quiet_optuna():  # our own start line says what happened
        if not exists:
            try:
                study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions,
                                            pruner=pruner)
                return study, opened, persistent
            except optuna.exceptions.DuplicatedStudyError:
                pass  # another kernel sharing the store created it a moment ago: join that one
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != directions:
        raise TuneError(
            f"The stored study '{name}' was created with --direction {' '.join(stored_directions)}, but this "
            f"asks for {' '.join(directions)}. Use --fresh to start it over, or --name for a new study."
        )
    orphans = []
    if persistent:  # the leases are on the named study; its narrowings' studies go with it
        log = (study._storage.get_study_system_attrs(study._study_id).get(NARROWINGS_KEY) or {"log": []})["log"]
        narrowed = [(optuna.load_study(study_name=entry["study"], storage=study._storage), entry["seeded"],
                     entry["base"]) for entry in log]
        orphans = fail_orphaned_trials(study, narrowed)
    stored = sum(COPY_KEY not in t.system_attrs for t in study.get_trials(deepcopy=False))  # a warm start's copies are not its own
    opened = f"resumed from {where} ({stored} stored trials"
    if orphans:
        opened += f"; trial {', '.join(map(str, orphans))} was cut off by a kernel restart: marked failed"
    opened += ")"
    return study, opened, persistent


def start(
    objective: Callable[..., Any] | CompiledCell,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    direction: str | Sequence[str] = "minimize",
    sampler: str | BaseSampler = "auto",
    seed: int | None = None,
    name: str | None = None,
    storage: str | None = None,
    mode: str = "auto",
    target: float | None = None,
    max_failures: int | None = 5,
    search_space: dict[str, list] | None = None,
    report: bool = True,
    stream: TextIO | None = None,
    directory: str | None = None,
    launch: bool = True,
    jobs: int | None = None,
    backend: str = "thread",
    cluster: Any = None,
    trial_timeout: float | None = None,
    pruner: str | optuna.pruners.BasePruner | None = None,
    patience: int | None = None,
    scheduler: str | PBTSettings | None = None,
    population: int | None = None,
    interval: int | None = None,
    stop: str | None = None,
    storage_wait: float = DEFAULT_LIMIT,
    grace_period: float = DEFAULT_GRACE,
    gpus_per_trial: float | None = None,
    cpus_per_trial: int | None = None,
    log: str | None = None,
    warm_start: str | Sequence[str] | None = None,
) -> Run:
    """Start tuning ``objective`` in a background thread and return its :class:`Run`.

    ``objective`` is ``def objective(trial)`` (Optuna style), a zero-argument callable that
    declares knobs with ``tune.float/int/choice``, or a compiled cell. ``n_trials`` is the
    study's total: a resumed study with 12 stored trials and ``n_trials=40`` runs 28 more.
    ``mode`` is "auto" (resume a stored study of that name, else create it), "resume" or
    "fresh" (delete the stored study first). ``storage`` is None (the embedded journal file
    ``hpt_studies.journal`` in ``directory``, default the working directory), "memory", a
    database URL, or a file path. ``launch=False`` returns the run unstarted, so that
    more views can subscribe before the first event; call ``run.start()``.

    ``jobs`` trials run at once on ``backend``: "thread" (threads of this process: they see
    live variables), "process" (local worker processes; the objective and the values it reads
    are sent once per run) or "dask" (a Dask cluster: a new ``LocalCluster``, the scheduler at
    ``cluster="tcp://host:8786"``, or a ``distributed.Client`` passed as ``cluster``).
    ``trial_timeout`` (seconds; process and dask) ends a trial that runs longer as failed.
    ``jobs`` defaults to 1, or with ``gpus_per_trial`` to as many slots as this kernel's GPUs
    allow.

    ``gpus_per_trial`` gives each slot GPUs of its own (a fraction such as 0.5 lets that many
    trials share one): a worker process starts with its own ``CUDA_VISIBLE_DEVICES``, a thread
    slot is told its device, a Dask trial asks for the ``GPU`` resource. ``tune.device()`` in
    the trial is the device to train on (``"cpu"`` where there is no GPU). ``cpus_per_trial``
    limits each trial's BLAS, OpenMP and PyTorch thread pools to that many threads (and pins a
    worker process to as many cores of its own where they fit), so that slots do not
    oversubscribe the machine.
    ``log="mlflow"`` (or ``"mlflow:URI"``; the URI defaults to ``MLFLOW_TRACKING_URI``) logs the
    study as an MLflow run and each trial as a run nested under it, off the trials' path.
    ``warm_start`` names stored studies (``"NAME"`` or ``"NAME@STORE"``) whose complete trials
    seed this new study: the sampler learns from them and their best configurations run first.
    ``pruner`` decides when ``tune.report`` ends a trial: a name ("median", "percentile", "sha",
    "hyperband", "threshold", "patient", "wilcoxon", or "none", the default) with optional
    settings (``"hyperband(min_resource=1, reduction_factor=3)"``), or an Optuna pruner.
    ``patience`` ends the study after that many complete trials without improvement;
    ``stop="auto"`` ends it when Optuna's Terminator judges that more trials are unlikely to
    pay (record fold scores with ``tune.cv_scores(scores)`` for its best yardstick).
    ``sampler="auto"`` chooses Optuna's sampler by the space, the budget and the objectives as
    the study goes (``hpt_jupyter/core/auto.py``); ``run.sampler_text()`` says what and why.

    A shared store that stops answering (a database restarting, a journal file's lock held by
    another process) is waited out: the run retries, says so, and goes on; after
    ``storage_wait`` seconds (default 600) it pauses, keeping its results, until ``run.resume()``.
    Trials of a kernel that sent no heartbeat for ``grace_period`` seconds (default 60) are
    failed by any kernel running the same study.

    ``scheduler="pbt"`` trains a population of ``population`` members (default 4) by
    population-based training: each trial is a segment of ``interval`` ``tune.report`` steps
    (default 5) of one member, continuing from ``tune.restore()``; settings as
    ``"pbt(quantile=0.25, resample_probability=0.25, factors=(0.8, 1.2))"``.
    """
    directions = [direction] if isinstance(direction, str) else list(direction)
    check_options(n_trials, timeout, directions, max_failures, target, seed, mode, patience)
    check_stop(stop, len(directions))
    for option, value in (("--storage-wait", storage_wait), ("--grace-period", grace_period)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
            raise TuneError(f"{option} must be a positive number of seconds, got {value!r}.")
    pruner_object, pruner_name = make_pruner(pruner)
    tracker = None
    if log is not None:  # a missing MLflow or a bad URI is said before any work
        from .core.tracking import make_tracker

        tracker = make_tracker(log)
    pbt = make_scheduler(scheduler, population, interval)
    if pbt is not None:
        if pruner_name != "none":
            raise TuneError("--scheduler pbt decides itself when a member's training pauses: drop --pruner.")
        if len(directions) > 1:
            raise TuneError("--scheduler pbt ranks members by one score: use one --direction.")
        if isinstance(sampler, optuna.samplers.GridSampler) or sampler == "grid":
            raise TuneError("--scheduler pbt explores around its members; a grid cannot: pick another --sampler.")
    cell = objective if isinstance(objective, CompiledCell) else None
    function = cell.objective if cell is not None else objective
    if not callable(function):
        raise TuneError(f"objective must be a function, got {type(objective).__name__}.")
    if name is None:
        extra = "|".join(directions)
        name = cell.default_name(extra) if cell is not None else getattr(objective, "__name__", "objective")
    running = tune.runs.get(name)
    if running is not None and running.is_alive:
        raise TuneError(
            f"The study '{name}' is still running ({running.progress()}): stop it first with "
            f"%tune stop {name} (or run.stop()), or wait for it with %tune wait {name}."
        )
    sampler_factory: Callable[[int], BaseSampler] | None
    if isinstance(sampler, BaseSampler):
        sampler_object, sampler_name = sampler, type(sampler).__name__
        sampler_factory = None  # each narrowing's study gets a pristine copy of the object
    else:
        def grid() -> dict[str, list]:
            if search_space is not None:
                return search_space
            if cell is None:
                raise TuneError("--sampler grid needs the search space up front: pass search_space={...}.")
            return cell.grid_space()

        time_budget = n_trials is None and timeout is not None
        budget = n_trials if n_trials is not None or time_budget else DEFAULT_TRIALS
        sampler_object, sampler_name = make_sampler(sampler, seed, len(directions), grid, budget, time_budget)

        def narrowed_sampler(k: int) -> BaseSampler:  # the k-th narrowing's study: same kind, own seed
            return make_sampler(sampler, None if seed is None else seed + k, len(directions), grid,
                                budget, time_budget)[0]

        sampler_factory = narrowed_sampler
    sources = None
    if warm_start is not None:  # the earlier studies are read and checked before this one is touched
        if pbt is not None:
            raise TuneError("--warm-start seeds a sampler; --scheduler pbt trains its members from scratch "
                            "(no checkpoints carry over): drop one of them.")
        sources = read_sources(warm_start, directions, storage, directory, name)
    if n_trials is None and timeout is None and not isinstance(sampler_object, optuna.samplers.GridSampler):
        n_trials = DEFAULT_TRIALS
    # Before the study is touched: a name the workers cannot receive is one message, nothing starts.
    executor = make_executor(backend, jobs, function, len(directions), cell=cell, cluster=cluster,
                             trial_timeout=trial_timeout, gpus_per_trial=gpus_per_trial,
                             cpus_per_trial=cpus_per_trial)
    study, opened, persistent = open_study(name, storage, directions, sampler_object, mode, directory,
                                           pruner_object)
    store_text = resolve_storage(storage, directory)[1]
    if sources is not None:
        opened = _warm_started(study, sources, cell, opened)
    population_scheduler = None
    if pbt is not None:
        population_scheduler = PopulationScheduler(pbt, directions[0] == "maximize",
                                                   _checkpoints_of(study, storage, directory), seed)
    run = Run(executor, study, name=name, n_trials=n_trials, timeout=timeout, target=target,
              trial_timeout=trial_timeout, seed=seed, max_failures=max_failures, cell=cell,
              owner=this_owner() if persistent else None, opened=opened, sampler_name=sampler_name,
              sampler_factory=sampler_factory, patience=patience, pruner_name=pruner_name,
              scheduler=population_scheduler, auto_stop=AutoStop(seed) if stop else None,
              storage_wait=float(storage_wait), grace_period=float(grace_period))
    run.store = store_text
    tune._register(run)
    if tracker is not None:
        tracker.attach(run)
    if report:
        TextReporter(run, stream=stream)
    return run.start() if launch else run


def _warm_started(study: optuna.Study, sources: list, cell: CompiledCell | None, opened: str) -> str:
    """Seed a new study from ``sources``; a resumed one keeps what it carried over before."""
    warm = stored_warm_start(study)
    if warm is None:
        own = len(study.get_trials(deepcopy=False))
        if own:
            return (f"{opened}; --warm-start not applied: the study resumes with its own {own} trials "
                    "(--fresh starts it over, warm)")
        declared, computed = ({}, None) if cell is None else (
            {d.name: d.param for d in cell.declarations if d.name and d.param is not None},
            {d.name for d in cell.declarations if d.name and d.param is None})
        warm = seed_study(study, sources, declared, computed)
    return f"{opened}; {warm.describe()}"


def _checkpoints_of(study: optuna.Study, storage: str | None,
                    directory: str | None) -> MemoryCheckpoints | FileCheckpoints:
    """Where a PBT study's checkpoints live: in this kernel for a memory study, else files
    next to the store. A study with no trials yet starts with none (a deleted study of the same
    name may have left some)."""
    fresh = not study.get_trials(deepcopy=False)
    if storage == "memory":
        if fresh or study.study_name not in _memory_checkpoints:
            _memory_checkpoints[study.study_name] = MemoryCheckpoints()
        return _memory_checkpoints[study.study_name]
    checkpoints = FileCheckpoints(checkpoint_directory(store_file(storage, directory), directory, study.study_name))
    if fresh:
        for number in checkpoints.numbers():
            checkpoints.delete(number)
    return checkpoints


def optimize(objective: Callable[..., Any] | CompiledCell, **options: Any) -> Run:
    """:func:`start`, then wait for the end (an interrupt stops the search gracefully)."""
    return start(objective, **options).wait()
