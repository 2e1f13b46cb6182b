"""``%%tune`` and ``%tune``: a thin IPython front over :mod:`hpt_jupyter.api`.

Also the coordinator that keeps the namespace consistent: best values are injected only
between cells, and a cell that uses a tuned name waits for its study first, so "Run All"
and ``jupyter nbconvert --execute`` give the same results as running cells by hand.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import os
import re
import shlex
import threading
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .api import DEFAULT_TRIALS, start
from .core.cell import compile_cell
from .core.executors import BACKENDS
from .core.heartbeat import DEFAULT_GRACE
from .core.pruners import PRUNERS
from .core.resilient import DEFAULT_LIMIT
from .core.run import Run
from .core.samplers import SAMPLERS
from .core.space import tune
from .core.steering import parse_assignments, percent
from .core.storage import describe_default, resolve_storage, study_names
from .errors import TuneError
from .views.lab import bridge_of
from .views.lab import register as register_lab_target
from .views.text import best_trials_table
from .waiting import message_pump, wait_for

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What a plain cell may use on a run object (``tune.last``, ``tune.runs[...]``) while its study
# runs: control, steering, and live facts (state, counts, configuration, what runs now). A cell
# that uses any other attribute of it waits for the study first (see names_used). Every public
# member of Run (properties, methods, attributes set in __init__) is in exactly one of this set
# and _RESULT_ATTRIBUTES: tests/test_no_wait.py fails on a member in neither, so a member added
# to Run is classified here before it ships (an unclassified one waits, the safe side).
_CONTROL_ATTRIBUTES = frozenset({
    # control
    "stop", "pause", "resume", "extend", "wait", "start", "subscribe",
    # live state and counts
    "state", "reason", "progress", "status", "eta", "elapsed", "is_alive", "started_at", "ended_at",
    "n_finished", "n_complete", "n_failed", "n_pruned", "n_run", "n_stored", "counts", "n_infeasible",
    "sampler_seconds", "objective_seconds", "failure", "failures", "warnings", "warnings_summary",
    # steering a running study is the point: these never wait for its end
    "narrow", "reset", "focus", "propose_focus", "preview", "enqueue", "enqueue_near", "narrowings",
    # what the study is now, written out (Katib's Experiment of the current space)
    "to_katib", "import_katib",
    "overrides", "effective_space", "declared_space", "space",
    # what runs where, now, and how the study was set up
    "running_trials", "executor", "trial_timeout", "slots_text", "scheduler_text", "pruner_name",
    "patience", "sampler_text", "sampler_name", "auto_stop", "name", "budget", "cell", "opened",
    "timeout", "target", "max_failures", "directions", "is_multi_objective", "seed",
    # the engine's door: what the trial loop calls and reads (its flags, its hooks), no result
    "condition", "stop_requested", "pause_requested", "loop_started", "end_reason", "final_state",
    "before_ask", "number_asked", "trial_started", "warning_sink", "note_auto_stop", "note_assignments",
    "record", "loop_ended", "keep_unwritten", "paused_for_store", "trial_failed_elsewhere", "watched_studies",
    # the store: how long the run waits for it, what is wrong with it now
    "storage_wait", "grace_period", "storage_problem", "waiting_for_store",
    # where the study is stored and logged
    "store", "tracker", "warm_start",
})
# What needs the study's result: a plain cell that uses one of these waits for the study to end,
# so Run All gives what running the cells by hand after the study gives.
_RESULT_ATTRIBUTES = frozenset({
    "best_params", "best_value", "best_trial", "best_assignments", "best_schedule", "pareto_front",
    "lineage", "trials", "trial", "trials_dataframe", "samplers_used",
    # a report of the study written to a file: of its result, so Run All writes the finished study
    "report",
    # Optuna's own objects, read for their trials and best values
    "study", "base_study", "stages", "scheduler",
})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit the kernel
        raise TuneError(f"%%tune: {message}. See %%tune? for the options.")


def _parser() -> _Parser:
    p = _Parser(prog="%%tune", add_help=False, allow_abbrev=False,
                description="Tune the cell: it becomes the objective, its last expression the score.")
    p.add_argument("-n", "--n-trials", type=int, metavar="N",
                   help=f"the study's total number of trials (default {DEFAULT_TRIALS}; a resumed "
                        "study counts its stored trials)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long")
    p.add_argument("--direction", nargs="+", default=["minimize"], metavar="{minimize,maximize}",
                   help="one per score; several make the study multi-objective (default minimize)")
    p.add_argument("--sampler", default="auto", choices=SAMPLERS,
                   help="Optuna's sampler of that name with Optuna's defaults; auto (default) chooses "
                        "by the space, the budget and the objectives as the study goes, and says why")
    p.add_argument("--pruner", metavar="NAME",
                   help="early stopping of trials that tune.report badly: " + ", ".join(PRUNERS)
                        + "; settings as \"hyperband(min_resource=1, reduction_factor=3)\" (default none)")
    p.add_argument("--scheduler", metavar="pbt",
                   help="pbt: population-based training (tune.checkpoint/tune.restore); settings as "
                        "\"pbt(quantile=0.25, resample_probability=0.25, factors=(0.8, 1.2))\"")
    p.add_argument("--population", type=int, metavar="P", help="with --scheduler pbt: members (default 4)")
    p.add_argument("--interval", type=int, metavar="K",
                   help="with --scheduler pbt: tune.report steps per segment, between exploits (default 5)")
    p.add_argument("--patience", type=int, metavar="N", help="stop after N complete trials without improvement")
    p.add_argument("--storage-wait", type=float, default=DEFAULT_LIMIT, metavar="SECONDS",
                   help="how long to wait out a store that stopped answering before pausing "
                        f"(default {DEFAULT_LIMIT:g})")
    p.add_argument("--grace-period", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                   help="a shared study's trials whose kernel sent no heartbeat for this long are failed "
                        f"(default {DEFAULT_GRACE:g})")
    p.add_argument("--stop", metavar="auto",
                   help="auto: end the study when Optuna's Terminator judges more trials unlikely to pay "
                        "(tune.cv_scores(scores) gives it the folds' spread)")
    p.add_argument("--seed", type=int, help="seed of the sampler: same seed, same trials")
    p.add_argument("--name", help="study name (default: the knobs' names and a hash of the space)")
    p.add_argument("--storage", metavar="URL",
                   help="memory, a database URL (sqlite:///x.db, postgresql://...), or a .journal/.db "
                        "file (default: hpt_studies.journal next to the notebook)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_const", dest="mode", const="resume",
                      help="continue the stored study of this name (the default when it exists)")
    mode.add_argument("--fresh", action="store_const", dest="mode", const="fresh",
                      help="delete the stored study of this name and start over")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="trials at once (default 1; with --gpus-per-trial, as many as the GPUs allow)")
    p.add_argument("--backend", default="thread", choices=BACKENDS,
                   help="where trials run: thread (in the kernel; sees live variables; default), "
                        "process (local worker processes), dask (a Dask cluster)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="with --backend dask: a running scheduler (tcp://host:8786); default a new LocalCluster")
    p.add_argument("--gpus-per-trial", type=float, metavar="G",
                   help="GPUs of its own for each trial (0.5: two trials share one); tune.device() names "
                        "the trial's device")
    p.add_argument("--cpus-per-trial", type=int, metavar="C",
                   help="limit each trial's BLAS/OpenMP/PyTorch threads to C (process workers are also "
                        "pinned to C cores of their own)")
    p.add_argument("--trial-timeout", type=float, metavar="SECONDS",
                   help="process and dask: a trial that runs longer fails and its worker is replaced")
    p.add_argument("--target", type=float, metavar="VALUE", help="stop once the best score reaches VALUE")
    p.add_argument("--max-failures", type=int, default=5, metavar="N",
                   help="stop after N failed trials in a row (default 5; 0: never)")
    p.add_argument("--log", metavar="mlflow[:URI]",
                   help="log the study and each trial (a nested run) to MLflow; the URI defaults to "
                        "MLFLOW_TRACKING_URI")
    p.add_argument("--warm-start", nargs="+", metavar="STUDY",
                   help="seed a new study with the complete trials of stored studies (NAME, or NAME@STORE); "
                        "their best configurations run first")
    p.add_argument("--refit", action="store_true",
                   help="run the cell once more with the best values, so `model` etc. are the best ones")
    p.add_argument("--no-inject", action="store_true", help="leave the namespace alone when the study ends")
    p.add_argument("--quiet", action="store_true", help="print nothing while the study runs")
    return p


PARSER = _parser()

LINE_COMMANDS = """\
Line magic (NAME defaults to the latest study):
  %tune list              studies of this kernel and of the default store
  %tune status [NAME]     state, progress, best trials
  %tune stop [NAME]       stop after the running trial; the best so far is injected
  %tune pause [NAME]      start no new trial until resume
  %tune resume [NAME]
  %tune more N [NAME]     add N trials to the budget (restarts a finished study)
  %tune wait [NAME]       block until the study ends (interrupt: stop it gracefully);
                          the dashboard's buttons keep working meanwhile
Steering (from the next trial on; the sampler keeps what it learnt inside the new space):
  %tune narrow [NAME] lr=1e-4:1e-2 kernel=rbf,poly
                          search only these ranges / options (inside the declared ones)
  %tune focus [NAME] [top=0.25]
                          narrow every knob to what the best 25% of trials span
  %tune reset [NAME]      search the whole declared space again
  %tune enqueue [NAME] lr=1e-3 kernel=rbf
                          try these values next (the sampler picks the knobs not given)
Sharing and comparing:
  %tune report [NAME] FILE.html
                          one HTML file with the summary, the trial table and the charts
                          (opens in any browser, offline)
  %tune compare A B ... [--storage URL]
                          best-so-far of several studies on one chart, their best values and
                          parameters side by side, and where their spaces differ
To a Kubeflow cluster:
  %tune export [NAME] --katib DIR [--image IMAGE] [--namespace NS]
                          write a Katib Experiment running this cell (experiment.yaml, trial.py...)
  %tune import [NAME] --katib FILE
                          bring a Katib experiment's trials (kubectl get trials -o json) into the study
"""

EXAMPLE = """\
Example:
  %%tune -n 40 --direction maximize --seed 0
  C = tune.float(1e-3, 1e3, log=True)
  kernel = tune.choice(["rbf", "poly", "linear"])
  gamma = tune.float(1e-4, 1.0, log=True) if kernel != "linear" else "scale"
  model = SVC(C=C, kernel=kernel, gamma=gamma)
  cross_val_score(model, X, y, cv=3).mean()      # the last expression is the score

The cell returns at once; the study runs in the background and its progress prints under
the cell. When it ends, C, kernel and gamma hold the best trial's values. A later cell that
uses them waits for the study first; the dashboard's buttons and pages keep working while it
waits, and Stop ends the wait with the best so far.
Knobs: tune.float(low, high, *, log=False, step=None),
tune.int(low, high, *, log=False, step=1), tune.choice(options); a knob is named by its
assignment target, by the keyword it is passed to, or by name=. tune.runs[NAME] and
tune.last are the run objects (.best_params, .best_value, .study, .trials_dataframe()).
In a training loop, tune.report(score, epoch) records the curve: with --pruner hyperband a
bad trial ends there; with --scheduler pbt tune.checkpoint(state) saves a member's training and
tune.restore() gives it back (or a better member's) in its next segment.
%load_ext hpt_jupyter puts `tune` in the namespace (unless you have a `tune` of your own:
then %%tune cells still see hpt_jupyter's, and `from hpt_jupyter import tune as hpt` names it).
"""


class Coordinator:
    """Injects best values between cells and makes cells that need them wait."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._lock = threading.Lock()
        self._executing = False
        self._pending: list[Run] = []
        self.watched: dict[str, tuple[Run, bool, bool]] = {}  # name -> (run, inject, refit)
        self.views: dict[str, Any] = {}  # name -> its live dashboard, refreshed on injection
        self.put_tune = False  # %load_ext put `tune` in the namespace: %unload_ext takes it away
        # A cell is waiting and handling widget messages: a comm handler fires pre/post_execute
        # (comm's handle_msg does), which must not mark the waiting cell as ended.
        self._pumping = False

    # -- IPython events --
    def pre_execute(self) -> None:
        if self._pumping:
            return
        with self._lock:
            self._executing = True

    def post_execute(self) -> None:
        if self._pumping:
            return
        with self._lock:
            self._executing = False
            self._inject_pending()

    def pre_run_cell(self, info: Any) -> None:
        try:
            self._wait_for_needed_runs(info.raw_cell)
        except KeyboardInterrupt:
            print("Stopped waiting; the study stops after its running trial.", flush=True)
        with self._lock:
            self._inject_pending()

    # -- runs --
    def watch(self, run: Run, inject: bool, refit: bool) -> None:
        self.watched[run.name] = (run, inject, refit)
        run.subscribe(lambda event: self._on_finished(run) if event.kind == "finished" else None)

    def _on_finished(self, run: Run) -> None:  # the run's thread
        with self._lock:
            if self._executing:
                self._pending.append(run)
            else:
                self._inject(run)

    def wait(self, run: Run) -> None:
        """Block until ``run`` ends; in a kernel, the dashboard's buttons, sliders and pages and
        the sidebar keep working meanwhile (see :mod:`hpt_jupyter.waiting`)."""
        pump = message_pump(self.shell)
        if pump is None:
            wait_for(run, None)
            return
        with pump:
            self._pumping = True
            try:
                wait_for(run, pump)
            finally:
                self._pumping = False

    def inject_now(self, run: Run) -> None:
        """After ``%tune wait``: the waiting cell may use the values on its next line."""
        with self._lock:
            if run in self._pending:
                self._pending.remove(run)
                self._inject(run)
        self._publish_final_state(run)

    def _publish_final_state(self, run: Run) -> None:
        """The dashboard's final state, sent again from this cell (batch runners keep only the
        messages under the cell being executed; the writer's last ones went under the study's)."""
        view = self.views.get(run.name)
        if view is not None and not run.is_alive:
            view.publish_final_state()

    def imported(self, run: Run) -> None:
        """Trials brought in from a cluster: the best values go where the run's own would."""
        with self._lock:
            if run in self._pending:
                self._pending.remove(run)
        self._inject(run)

    def _inject_pending(self) -> None:  # main thread, between cells
        pending, self._pending = self._pending, []
        for run in pending:
            self._inject(run)
            self._publish_final_state(run)

    def _inject(self, run: Run) -> None:
        if summary := run.warnings_summary():  # a warning the trials raised again and again
            print(summary, flush=True)
        _, inject, refit = self.watched.get(run.name, (run, False, False))
        if not inject and not refit:
            return
        trial = run.best_trial
        if trial is None:
            if run.n_complete and run.n_infeasible >= run.n_complete:
                print(f"'{run.name}': none of its {run.n_complete} complete trials kept its constraints "
                      "(tune.constraint(value) with value <= 0), so nothing was injected.", flush=True)
            else:
                print(f"'{run.name}': no trial completed, so nothing was injected.", flush=True)
            return
        values = {k: v for k, v in run.best_assignments().items() if k.isidentifier() and not keyword.iskeyword(k)}
        if inject:
            self.shell.user_ns.update(values)
        score = f"values {trial.values}" if run.is_multi_objective else f"value {trial.value:.6g}"
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        message = f"'{run.name}' best: trial {trial.number}, {score}. "
        message += f"Injected {shown}." if inject else "Not injected (--no-inject)."
        if refit and run.cell is not None:
            try:
                run.cell.refit(run.best_params)
                message += " Refit: the cell ran once more with these values."
                if run.tracker is not None:  # --log: the refit model goes to the study's parent run
                    run.tracker.log_refit({name: self.shell.user_ns[name] for name in sorted(run.cell.assigned_names)
                                           if name in self.shell.user_ns})
            except Exception as error:  # noqa: BLE001 - report, keep the injected values
                message += f" Refit failed: {type(error).__name__}: {error}"
        print(message, flush=True)

    def _names_to_wait_for(self, run: Run, inject: bool, refit: bool) -> set[str]:
        names: set[str] = set()
        if inject:
            names.update(run.cell.param_names if run.cell is not None else ())
            names.update(run.space)
        if refit and run.cell is not None:
            names.update(run.cell.assigned_names)
        return names

    def _wait_for_needed_runs(self, raw_cell: str) -> None:
        active = [entry for entry in self.watched.values() if entry[0].is_alive]
        if not active or raw_cell.lstrip().startswith("%%tune"):
            return
        used, uses_result = names_used(self.shell, raw_cell)
        for run, inject, refit in active:
            needed = sorted(self._names_to_wait_for(run, inject, refit) & used)
            if not needed and not uses_result:
                continue
            reason = ", ".join(needed) if needed else "the run's result"
            self.wait_saying(run, f"because this cell uses {reason}")

    def wait_saying(self, run: Run, why: str) -> None:
        """Wait for ``run`` under a line that says so, replaced by how the wait ended."""
        # no counts here: the line stays as written while the dashboard above counts on
        line = _Line(self.shell, f"Waiting for '{run.name}' {why}; the dashboard's buttons keep working; "
                                 "interrupt to stop it early and use the best so far.")
        started = time.monotonic()
        try:
            self.wait(run)
        finally:  # the line says how the wait ended rather than stay "Waiting for ..."
            waited = time.monotonic() - started
            if run.is_alive:  # a second interrupt: the cell goes on without the result
                line.update(f"Stopped waiting for '{run.name}' after {waited:.1f}s ({run.progress()}); "
                            "it stops after its running trial.")
            else:
                line.update(f"Waited {waited:.1f}s for '{run.name}' ({run.state}: {run.progress()}) {why}.")


class _Line:
    """A line of text under the cell that can be replaced: in a kernel a display with an id
    (also updated in notebooks run by nbclient or papermill); elsewhere printed once."""

    def __init__(self, shell: Any, text: str) -> None:
        self.handle = None
        if getattr(shell, "kernel", None) is not None:
            from IPython.display import display

            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            print(text, flush=True)

    def update(self, text: str) -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": text}, raw=True)


def _is_run_object(node: ast.AST) -> bool:
    """``tune.last`` or ``tune.runs[...]``."""
    if isinstance(node, ast.Subscript):
        node = node.value
        attr = "runs"
    else:
        attr = "last"
    return (isinstance(node, ast.Attribute) and node.attr == attr
            and isinstance(node.value, ast.Name) and node.value.id == "tune")


def names_used(shell: Any, raw_cell: str) -> tuple[set[str], bool]:
    """Names a cell reads or writes (also inside line magics such as ``%timeit f(C)``), and
    whether it reads a run object's result (``tune.last.best_params``)."""
    try:
        tree = ast.parse(shell.transform_cell(raw_cell))
    except Exception:  # noqa: BLE001 - a cell that does not parse waits for nothing
        return set(), False
    names: set[str] = set()
    uses_result = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            if _is_run_object(node.value) and node.attr not in _CONTROL_ATTRIBUTES:
                uses_result = True
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("run_line_magic", "run_cell_magic") and node.args
              and isinstance(node.args[0], ast.Constant) and node.args[0].value != "tune"):
            for arg in node.args[1:]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.update(_IDENTIFIER.findall(arg.value))
    return names, uses_result


def _blank_prefix(text: str) -> int:
    count = 0
    for line in text.splitlines():
        if line.strip():
            break
        count += 1
    return count


@magics_class
class TuneMagics(Magics):
    def __init__(self, shell: Any, coordinator: Coordinator) -> None:
        super().__init__(shell)
        self.coordinator = coordinator
        self.dashboards: dict[str, Any] = {}  # study name -> its live Dashboard

    @line_cell_magic
    def tune(self, line: str, cell: str | None = None) -> None:
        try:
            if cell is None:
                self._line(line)
            else:
                self._cell(line, cell)
        except TuneError as error:
            raise UsageError(str(error)) from None

    def _cell(self, line: str, cell: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as error:  # unbalanced quotes
            raise TuneError(f"%%tune: cannot read the options ({error}).") from None
        args = PARSER.parse_args(words)
        if args.max_failures is not None and args.max_failures < 0:
            raise TuneError(f"--max-failures must be >= 0 (0: never stop), got {args.max_failures}.")
        shell = self.shell
        transformed = shell.transform_cell(cell)
        # IPython drops leading blank lines; keep line numbers those the user sees.
        first_line = 2 + _blank_prefix(cell) - _blank_prefix(transformed)
        compiled = compile_cell(
            cell, shell.user_ns, filename=f"<tune cell In[{shell.execution_count}]>",
            source=f"%%tune {line}\n{cell}", first_line=first_line, transform=lambda _: transformed,
        )
        # In a kernel the view is the widget dashboard; elsewhere (terminal IPython) the text one.
        dashboard = not args.quiet and getattr(shell, "kernel", None) is not None
        run = start(
            compiled, n_trials=args.n_trials, timeout=args.timeout, direction=args.direction,
            sampler=args.sampler, seed=args.seed, name=args.name, storage=args.storage,
            mode=args.mode or "auto", target=args.target, max_failures=args.max_failures or None,
            report=not args.quiet and not dashboard, launch=False, jobs=args.jobs, backend=args.backend,
            cluster=args.cluster, trial_timeout=args.trial_timeout, pruner=args.pruner,
            patience=args.patience, storage_wait=args.storage_wait, grace_period=args.grace_period,
            scheduler=args.scheduler, population=args.population,
            interval=args.interval, stop=args.stop, gpus_per_trial=args.gpus_per_trial,
            cpus_per_trial=args.cpus_per_trial, log=args.log, warm_start=args.warm_start,
        )
        if run.warm_start is not None and not args.quiet:  # each mismatch of the earlier studies, once
            for note in run.warm_start.notes:
                print(f"'{run.name}' warm start: {note}.", flush=True)
        self.coordinator.watch(run, inject=not args.no_inject, refit=args.refit)
        bridge = bridge_of(shell)
        if bridge is not None:  # the sidebar's "go to cell": the cell JupyterLab said it ran
            parent = shell.kernel.get_parent() if hasattr(shell.kernel, "get_parent") else {}
            bridge.note_cell(run.name, (parent or {}).get("metadata", {}).get("cellId"),
                             os.environ.get("JPY_SESSION_NAME"))
            bridge.watch(run)
        if dashboard:
            self._show_dashboard(run)
        run.start()

    def _show_dashboard(self, run: Run) -> None:
        from IPython.display import display

        from .views.dashboard import Dashboard  # ipywidgets and bqplot load only where they are shown

        previous = self.dashboards.pop(run.name, None)
        if previous is not None:
            previous.close()
        board = self.dashboards[run.name] = self.coordinator.views[run.name] = Dashboard(run)
        display(board.widget)

    def _run_named(self, name: str | None) -> Run:
        if name is None:
            if tune.last is None:
                raise TuneError("No study has run in this kernel yet; run a %%tune cell first.")
            return tune.last
        if name not in tune.runs:
            known = ", ".join(tune.runs) or "none"
            raise TuneError(f"No study named '{name}' in this kernel (known: {known}); see %tune list.")
        return tune.runs[name]

    def _line(self, line: str) -> None:
        words = shlex.split(line)
        if not words:
            raise TuneError("%tune needs a command: list, status, stop, pause, resume, more N, wait. See %tune?.")
        command, rest = words[0], words[1:]
        if command == "list":
            print(self._list())
            return
        if command == "more":
            if not rest or not rest[0].isdigit() or int(rest[0]) < 1:
                raise TuneError("%tune more N [NAME]: N must be a positive whole number, e.g. %tune more 20.")
            run = self._run_named(rest[1] if len(rest) > 1 else None)
            run.extend(int(rest[0]))
            return
        if command in ("narrow", "focus", "enqueue"):
            self._steer(command, rest)
            return
        if command == "export":
            self._export(rest)
            return
        if command == "report":
            self._report(rest)
            return
        if command == "compare":
            self._compare(rest)
            return
        if command == "import":
            parser = _Parser(prog="%tune import", add_help=False)
            parser.add_argument("name", nargs="?")
            parser.add_argument("--katib", required=True, metavar="FILE")
            args = parser.parse_args(rest)
            run = self._run_named(args.name)
            print(run.import_katib(args.katib), flush=True)
            self.coordinator.imported(run)
            return
        if command not in ("status", "stop", "pause", "resume", "wait", "reset"):
            raise TuneError(f"%tune {command}: unknown command; use list, status, stop, pause, resume, more N, "
                            "wait, narrow, focus, reset, enqueue, report, compare, export, import.")
        if len(rest) > 1:
            raise TuneError(f"%tune {command} takes at most one study name, got {' '.join(rest)}.")
        run = self._run_named(rest[0] if rest else None)
        if command == "status":
            print(run.status() + run.slots_text())
            if run.tracker is not None:
                print(f"  logging to {run.tracker.describe()}"
                      + (f" ({run.tracker.problem})" if run.tracker.problem else ""))
            running = run.running_trials()
            if running:
                print("  running: " + ", ".join(f"#{t.number} ({t.seconds:.0f}s"
                                                + (f", {t.placement}" if t.placement else "") + ")" for t in running))
            if run.n_complete and not run.storage_problem and not run.waiting_for_store:
                print(best_trials_table(run))  # read from the store: not while it is away
            for number, message in run.failures[-3:]:
                print(f"  trial {number} failed: {message}")
        elif command == "stop":
            run.stop()
            print(f"Stopping '{run.name}' after its running trial.")
        elif command == "pause":
            run.pause()
        elif command == "resume":
            run.resume()
        elif command == "reset":
            inside = len(run.trials())
            print(f"'{run.name}': {_applied(run, run.reset(source='magic'), 1.0, inside)}")
        else:
            if run.is_alive:  # widgets stay alive; interrupt: stop gracefully
                self.coordinator.wait_saying(run, "(%tune wait)")
            self.coordinator.inject_now(run)

    def _report(self, rest: list[str]) -> None:
        """``%tune report [NAME] FILE.html``."""
        if not rest or len(rest) > 2 or not rest[-1].lower().endswith((".html", ".htm")):
            raise TuneError("%tune report [NAME] FILE.html: name the file to write, e.g. %tune report study.html.")
        run = self._run_named(rest[0] if len(rest) == 2 else None)
        if run.is_alive:  # a report of the finished study, as Run All would write it
            self.coordinator.wait_saying(run, "(%tune report)")
        path = run.report(rest[-1])
        print(f"'{run.name}': report written to {path} ({os.path.getsize(path) / 1e6:.1f} MB; "
              "opens in any browser, offline).", flush=True)

    def _compare(self, rest: list[str]) -> None:
        """``%tune compare A B ... [--storage URL]``."""
        from IPython.display import display

        from .views.compare import compare

        parser = _Parser(prog="%tune compare", add_help=False)
        parser.add_argument("names", nargs="+")
        parser.add_argument("--storage", metavar="URL")
        args = parser.parse_args(rest)
        for name in args.names:  # a study of this kernel still running is compared when it ends
            run = tune.runs.get(name)
            if run is not None and run.is_alive:
                self.coordinator.wait_saying(run, "(%tune compare)")
        display(compare(*args.names, storage=args.storage))

    def _export(self, rest: list[str]) -> None:
        """``%tune export [NAME] --katib DIR [--image IMAGE] [--namespace NS]``."""
        parser = _Parser(prog="%tune export", add_help=False)
        parser.add_argument("name", nargs="?")
        parser.add_argument("--katib", required=True, metavar="DIR")
        parser.add_argument("--image")
        parser.add_argument("--namespace", default="kubeflow")
        args = parser.parse_args(rest)
        run = self._run_named(args.name)
        paths = run.to_katib(args.katib, image=args.image, namespace=args.namespace)
        print(f"'{run.name}' exported for Katib to {args.katib}: " + ", ".join(os.path.basename(p) for p in paths.values()))
        print(f"  build the image from the Dockerfile, push it, then: kubectl apply -f {paths['experiment']}")

    def _steer(self, command: str, words: list[str]) -> None:
        name = words[0] if words and "=" not in words[0] else None
        assignments = parse_assignments(words[1:] if name else words)
        run = self._run_named(name)
        if command == "narrow":
            if not assignments:
                raise TuneError("%tune narrow [NAME] KNOB=LOW:HIGH ...: say what to narrow, e.g. "
                                "%tune narrow lr=1e-4:1e-2 kernel=rbf,poly.")
            share, inside = run.preview(**assignments)
            print(f"'{run.name}': {_applied(run, run.narrow(source='magic', **assignments), share, inside)}")
        elif command == "focus":
            unknown = set(assignments) - {"top"}
            if unknown:
                raise TuneError(f"%tune focus [NAME] [top=0.25]: unknown setting {sorted(unknown)[0]!r}.")
            ranges = run.propose_focus(assignments.get("top", 0.25))
            share, inside = run.preview(**ranges)
            print(f"'{run.name}': {_applied(run, run.narrow(source='magic', **ranges), share, inside)}")
        else:
            if not assignments:
                raise TuneError("%tune enqueue [NAME] KNOB=VALUE ...: give the values to try, e.g. "
                                "%tune enqueue lr=1e-3 kernel=rbf.")
            stored = run.enqueue(assignments, source="magic")
            print(f"'{run.name}': queued as the next trial: " + ", ".join(f"{k}={v!r}" for k, v in stored.items()))

    def _list(self) -> str:
        rows = [("name", "state", "trials", "best", "store")]
        for run in tune.runs.values():
            best = run.best_value
            rows.append((run.name, run.state, f"{run.n_finished}/{run.budget or '-'}",
                         "-" if best is None else (f"{best:.6g}" if isinstance(best, float) else str(best)),
                         "this kernel"))
        if os.path.exists(describe_default()):  # looking must not create a store
            storage, where, _ = resolve_storage(None)
            for name in study_names(storage):
                if name not in tune.runs:
                    rows.append((name, "stored", "", "", where))
        if len(rows) == 1:
            return f"No studies in this kernel or in {describe_default()}."
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _applied(run: Run, record: Any, share: float, inside: int) -> str:
    what = ", ".join(f"{k} {v}" for k, v in record.ranges.items()) or "the whole declared space"
    when = "from the next trial on" if run.is_alive else "for the next trials (%tune more N)"
    return f"searching {what} {when} ({percent(share)} of the declared space, {inside} complete trials inside)."


TuneMagics.tune.__doc__ = PARSER.format_help() + "\n" + LINE_COMMANDS + "\n" + EXAMPLE

_coordinators: dict[int, Coordinator] = {}


def load(shell: Any) -> None:
    if id(shell) in _coordinators:
        return
    coordinator = Coordinator(shell)
    _coordinators[id(shell)] = coordinator
    _put_tune(shell, coordinator)
    shell.register_magics(TuneMagics(shell, coordinator))
    shell.events.register("pre_execute", coordinator.pre_execute)
    shell.events.register("pre_run_cell", coordinator.pre_run_cell)
    shell.events.register("post_execute", coordinator.post_execute)
    register_lab_target(shell)  # the JupyterLab sidebar's comm target


def _put_tune(shell: Any, coordinator: Coordinator) -> None:
    """``tune.last`` works in a plain cell after ``%load_ext``; a user's own ``tune`` stays."""
    existing = shell.user_ns.get("tune", tune)
    if existing is tune:
        coordinator.put_tune = "tune" not in shell.user_ns
        shell.user_ns["tune"] = tune
    else:
        print("hpt_jupyter: `tune` is already defined here, so it is left as it is; %%tune cells "
              "still see hpt_jupyter's tune, and `from hpt_jupyter import tune as hpt` names it.",
              flush=True)


def unload(shell: Any) -> None:
    coordinator = _coordinators.pop(id(shell), None)
    if coordinator is None:
        return
    shell.events.unregister("pre_execute", coordinator.pre_execute)
    shell.events.unregister("pre_run_cell", coordinator.pre_run_cell)
    shell.events.unregister("post_execute", coordinator.post_execute)
    if coordinator.put_tune and shell.user_ns.get("tune") is tune:
        del shell.user_ns["tune"]
