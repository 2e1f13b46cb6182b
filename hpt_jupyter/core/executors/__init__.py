"""Execution backends behind one small interface (:mod:`.base`): ``thread`` (trials in threads
of the kernel), ``process`` (local worker processes) and ``dask`` (a Dask cluster)."""

from __future__ import annotations

import numbers
from typing import Any, Callable

from ...errors import TuneError
from ..resources import plan
from .base import Executor, Outcome, SlotRunner, TrialRequest
from .thread import ThreadExecutor

BACKENDS = ("thread", "process", "dask")

__all__ = ["BACKENDS", "Executor", "Outcome", "SlotRunner", "TrialRequest", "ThreadExecutor", "make_executor"]


def make_executor(backend: str, jobs: Any, objective: Callable[..., Any], n_directions: int, *,
                  cell: Any = None, cluster: Any = None, trial_timeout: Any = None,
                  gpus_per_trial: Any = None, cpus_per_trial: Any = None) -> Executor:
    """The executor for ``--backend``/``--jobs`` (None: one slot, or one per GPU share with
    ``gpus_per_trial``); one clear message for a bad combination, and (process, dask) the cell
    or function checked to be sendable before anything starts."""
    if backend not in BACKENDS:
        raise TuneError(f"--backend {backend!r} is not one of: {', '.join(BACKENDS)}.")
    if jobs is not None and (not isinstance(jobs, numbers.Integral) or isinstance(jobs, bool) or jobs < 1):
        raise TuneError(f"--jobs must be a positive whole number (trials at once), got {jobs!r}.")
    if trial_timeout is not None:
        if not isinstance(trial_timeout, numbers.Real) or trial_timeout <= 0:
            raise TuneError(f"--trial-timeout must be a positive number of seconds, got {trial_timeout!r}.")
        if backend == "thread":
            raise TuneError("--trial-timeout needs --backend process or dask: a thread cannot be stopped "
                            "from outside, a worker process can.")
    if cluster is not None and backend != "dask":
        raise TuneError("--cluster goes with --backend dask (add --backend dask, or drop --cluster).")
    jobs_from_cluster = jobs is None and gpus_per_trial is not None and cluster is not None
    resources, jobs = plan(backend, jobs, gpus_per_trial, cpus_per_trial, cluster)
    executor: Executor
    if backend == "thread":
        executor = ThreadExecutor(objective, n_directions, int(jobs))
        executor.resources = resources
        return executor
    from .shipping import ship

    # Workers on this machine (ours, or a LocalCluster the run starts) map large values from
    # shared memory; a cluster elsewhere gets them inside the shipment it scatters.
    shipment = ship(objective, n_directions, cell=cell, share=backend == "process" or cluster is None)
    if backend == "process":
        from .process import ProcessExecutor

        executor = ProcessExecutor(shipment, int(jobs))
    else:
        from .dask import DaskExecutor

        executor = DaskExecutor(shipment, int(jobs), cluster, jobs_from_cluster)
    executor.resources = resources
    if cell is not None:  # a worker names choices by label; the kernel keeps the real options
        executor.known = {d.name: d.param for d in cell.declarations if d.name and d.param is not None}
    return executor
