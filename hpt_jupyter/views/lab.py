"""The JupyterLab extension's view of this kernel's studies, over a comm.

The Tuning sidebar (``js/``) opens a comm to the target ``hpt_jupyter`` on every kernel it talks
to; ``%load_ext hpt_jupyter`` registers that target. The kernel answers with its studies (the
runs of this kernel and the studies stored in the default store that no run here has opened) and
keeps them up to date, at most twice a second, from one sender thread. The sidebar's commands go
through the runs' control API. Every message is checked on arrival: anything unknown or
malformed is logged and ignored, never executed.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any, Callable

from .digest import StrideSample
from ..core.run import FINAL_STATES, Event, Run
from ..core.space import tune

TARGET = "hpt_jupyter"
PROTOCOL = 1
ACTIONS = ("stop", "pause", "resume", "more")
logger = logging.getLogger("hpt_jupyter")


def check_command(data: Any) -> tuple[str, str, int] | str:
    """``(action, study, n)`` from a sidebar message, or the reason it is refused."""
    if not isinstance(data, dict):
        return f"not an object: {type(data).__name__}"
    if data.get("protocol") != PROTOCOL:
        return f"protocol {data.get('protocol')!r}, expected {PROTOCOL}"
    kind = data.get("type")
    if kind == "refresh":
        return ("refresh", "", 0)
    if kind != "command":
        return f"unknown type {kind!r}"
    action, study, n = data.get("action"), data.get("study"), data.get("n", 0)
    if action not in ACTIONS:
        return f"unknown action {action!r}"
    if not isinstance(study, str) or not study:
        return "no study name"
    if action == "more" and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000):
        return f"'more' needs n, a whole number from 1 to 1000000, got {n!r}"
    return (action, study, n if action == "more" else 0)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class LabBridge:
    """This kernel's side of the sidebar: one per kernel, any number of open comms."""

    def __init__(self, store_studies: Callable[[], list[dict]] | None = None, interval: float = 0.5) -> None:
        self.interval = interval
        self.comms: list[Any] = []
        self._store_studies = store_studies or (lambda: [])
        self._stored: list[dict] = []
        self._watched: dict[int, Run] = {}
        self._sparks: dict[int, StrideSample] = {}
        self._cells: dict[str, dict] = {}  # study -> {"cell_id": ..., "notebook": ...}
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._sender: threading.Thread | None = None
        self.sent = 0

    # --- the comm ------------------------------------------------------------------------

    def open(self, comm: Any, msg: dict) -> None:
        """The comm target's handler: a sidebar connected."""
        data = msg.get("content", {}).get("data") or {}
        if not isinstance(data, dict) or data.get("type") != "hello" or data.get("protocol") != PROTOCOL:
            logger.warning("hpt_jupyter: a comm to %s opened with %r: not a sidebar of protocol %s; closed",
                           TARGET, data, PROTOCOL)
            comm.close()
            return
        self.comms.append(comm)
        comm.on_msg(self._on_msg)
        comm.on_close(lambda _msg, comm=comm: self.comms.remove(comm) if comm in self.comms else None)
        self._stored = self._store_studies()
        self.watch_all()
        comm.send(self.snapshot())
        self.sent += 1
        self._start_sender()

    def _on_msg(self, msg: dict) -> None:
        checked = check_command(msg.get("content", {}).get("data"))
        if isinstance(checked, str):
            logger.warning("hpt_jupyter: ignored a sidebar message (%s)", checked)
            return
        action, name, n = checked
        if action == "refresh":
            self._stored = self._store_studies()
            self._dirty.set()
            return
        run = tune.runs.get(name)
        if run is None:
            logger.warning("hpt_jupyter: ignored a sidebar %s for unknown study %r", action, name)
            return
        if action == "stop":
            run.stop()
        elif action == "pause":
            run.pause()
        elif action == "resume":
            run.resume()
        else:
            run.extend(n)
        self._dirty.set()

    # --- what the sidebar shows --------------------------------------------------------

    def note_cell(self, name: str, cell_id: str | None, notebook: str | None) -> None:
        """Where a study's %%tune cell is, for "go to cell"."""
        self._cells[name] = {"cell_id": cell_id, "notebook": notebook}

    def watch_all(self) -> None:
        for run in list(tune.runs.values()):
            self.watch(run)

    def watch(self, run: Run) -> None:
        with self._lock:
            if id(run) in self._watched:
                return
            self._watched[id(run)] = run
            spark = self._sparks[id(run)] = StrideSample(60)
            best = None
            sign = -1 if run.directions[0] == "maximize" else 1
            for trial in run.trials() if not run.is_multi_objective else []:
                if best is None or sign * trial.value < sign * best:
                    best = trial.value
                spark.add(best)
        run.subscribe(self._on_event)
        self._dirty.set()

    def _on_event(self, event: Event) -> None:
        run = event.run
        if event.kind == "trial_finished" and not run.is_multi_objective and run.best_value is not None:
            with self._lock:
                spark = self._sparks.get(id(run))
                if spark is not None:
                    spark.add(run.best_value)
        if not self._dirty.is_set():
            self._dirty.set()

    def study_info(self, run: Run) -> dict:
        best = run.best_value
        with self._lock:
            spark = self._sparks.get(id(run))
            history = [v for v in (spark.items() if spark else []) if _number(v) is not None]
        eta = run.eta() if run.is_alive else None
        info = {
            "name": run.name, "state": run.state, "live": True, "finished": run.n_finished, "budget": run.budget,
            "best": _number(best) if not isinstance(best, list) else None,
            "best_trial": run.best_trial.number if run.best_trial is not None else None,
            "directions": run.directions, "sampler": run.sampler_text(), "elapsed": round(run.elapsed, 1),
            "eta": round(eta, 1) if eta is not None else None, "history": history,
            "narrowings": len(run.narrowings), "cell_id": None, "notebook": None,
            "reason": run.reason if run.state in FINAL_STATES else "",
            "storage": run.storage_problem or "",  # "storage unreachable since 14:03:07, retrying"
        }
        info.update(self._cells.get(run.name, {}))
        return info

    def snapshot(self) -> dict:
        """Every run of this kernel, whatever its state (``live``: a run here, going or ended, with
        its own state, counts and best), then the stored studies that no run here has opened."""
        live = [self.study_info(run) for run in list(tune.runs.values())]
        names = {study["name"] for study in live}
        stored = [dict(study, live=False) for study in self._stored if study["name"] not in names]
        return {"type": "studies", "protocol": PROTOCOL, "studies": live + stored}

    # --- the sender --------------------------------------------------------------------

    def _start_sender(self) -> None:
        if self._sender is not None:
            return
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="hpt-lab-bridge")
        self._sender.start()

    def _send_loop(self) -> None:
        failing = False
        while True:
            self._dirty.wait()
            self._dirty.clear()
            try:
                self.watch_all()  # a run started since
                self._dirty.clear()
                message = self.snapshot()
                failing = False
            except Exception:  # noqa: BLE001 - one bad snapshot must not silence the sidebar for good
                if not failing:  # once, not twice a second
                    logger.exception("hpt_jupyter: could not describe the studies for the sidebar")
                failing = True
                time.sleep(self.interval)
                self._dirty.set()  # try again
                continue
            for comm in list(self.comms):
                try:
                    comm.send(message)
                    self.sent += 1
                except Exception:  # noqa: BLE001 - a closed frontend must not stop the others
                    logger.exception("hpt_jupyter: could not update a sidebar")
            time.sleep(self.interval)  # at most two updates a second, latest state wins


def stored_studies(directory: str | None = None) -> list[dict]:
    """The studies of the default store (``hpt_studies.journal`` here), without opening a store
    that does not exist."""
    from ..core.storage import describe_default, resolve_storage, study_names

    if not os.path.exists(describe_default(directory)):
        return []
    import optuna

    storage, where, _ = resolve_storage(None, directory)
    found = []
    for name in study_names(storage):
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state.name == "COMPLETE"]
            best = study.best_value if complete and len(study.directions) == 1 else None
        except Exception:  # noqa: BLE001 - an unreadable study is listed without numbers
            trials, best = [], None
        found.append({"name": name, "state": "stored", "finished": len(trials), "budget": None, "best": _number(best),
                      "best_trial": None, "directions": [], "sampler": "", "elapsed": 0, "eta": None,
                      "history": [], "narrowings": 0, "cell_id": None, "notebook": None,
                      "resume_hint": f"Re-run its %%tune cell (or %%tune --name {name}) to resume it from {where}."})
    return found


_bridges: dict[int, LabBridge] = {}


def register(shell: Any) -> LabBridge | None:
    """Register the comm target in a kernel (nothing to do in terminal IPython)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None
    if id(shell) in _bridges:
        return _bridges[id(shell)]
    try:
        from comm import get_comm_manager

        manager = get_comm_manager()
    except Exception:  # noqa: BLE001 - an old kernel without the comm package
        manager = getattr(kernel, "comm_manager", None)
    if manager is None:
        return None
    bridge = _bridges[id(shell)] = LabBridge(stored_studies)
    manager.register_target(TARGET, bridge.open)
    return bridge


def bridge_of(shell: Any) -> LabBridge | None:
    return _bridges.get(id(shell))
