"""The live widget view of a run: header, controls, trial table and optimisation history.

A view, not a driver: it subscribes to the run's events and calls only the run's control
API. Widgets are created on the main thread (create the Dashboard there); afterwards one
writer thread owns every widget it refreshes, so updates from a fast study are coalesced
(latest state wins) and sent at most every ``interval`` seconds, and x/y of a plot change
together in one ``hold_sync``.
"""

from __future__ import annotations

import bisect
import contextvars
import heapq
import html
import logging
from collections import deque
import threading
import time
from dataclasses import dataclass
from typing import Any

import bqplot
import ipywidgets as widgets
from optuna.trial import FrozenTrial, TrialState

from .run import FINAL_STATES, PAUSED, Event, Run

logger = logging.getLogger("hpt_jupyter")
_STATE_COLOURS = {"running": "#1a7f37", "paused": "#9a6700", "stopping": "#9a6700", "stopped": "#57606a",
                  "finished": "#0969da", "failed": "#cf222e", "ready": "#57606a"}


@dataclass(frozen=True)
class Row:
    """One finished trial, as the table and plots need it."""

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    seconds: float | None
    intermediate: tuple[tuple[int, float], ...] = ()


def _row(trial: FrozenTrial, run: Run) -> Row:
    seconds = None
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    values = tuple(trial.values) if trial.values is not None else None
    return Row(trial.number, trial.state.name.lower(), values, run._decoded(trial.params), seconds,
               tuple(sorted(trial.intermediate_values.items())))


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _scale_column(values: list) -> list[float]:
    """A parallel-coordinates axis: numbers scaled to [0, 1], categories spread evenly, NaN for
    a knob a trial did not have (a conditional one)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        low, high = min(present), max(present)
        span = (high - low) or 1.0
        return [float("nan") if v is None else (v - low) / span for v in values]
    labels = sorted({str(v) for v in present})
    spread = max(len(labels) - 1, 1)
    return [float("nan") if v is None else labels.index(str(v)) / spread for v in values]


class StrideSample:
    """Every ``stride``-th point of a growing series, plus every improvement, in O(1) per point.

    When more than ``limit`` points are kept the stride doubles and every other point goes, so
    a refresh copies at most about ``limit`` points however long the study runs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stride = 1
        self.count = 0
        self.points: list[tuple[Any, float]] = []
        self.improvements: list[tuple[Any, float]] = []

    def add(self, x: Any, y: float, improved: bool) -> None:
        if improved:
            self.improvements.append((x, y))
        elif self.count % self.stride == 0:
            self.points.append((x, y))
            if len(self.points) > self.limit:
                self.stride *= 2
                self.points = self.points[::2]
        self.count += 1

    def xy(self) -> tuple[list, list]:
        merged = self.points + self.improvements
        return [p[0] for p in merged], [p[1] for p in merged]


class Dashboard:
    """A live view of ``run`` for a notebook cell: ``display(Dashboard(run).widget)``."""

    def __init__(self, run: Run, *, interval: float = 0.25, max_rows: int = 50, max_points: int = 2000) -> None:
        self.run = run
        self.interval = interval
        self.max_rows = max_rows
        self.max_points = max_points
        self.refreshes = 0
        self.refresh_seconds_max = 0.0  # wall time: includes waiting for the GIL
        self.refresh_cpu_seconds_max = 0.0  # the refreshing thread's own CPU time
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time, whichever thread asks
        self._dirty = threading.Event()
        self._closed = False

        self.header = widgets.HTML()
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger",
                                          tooltip="Stop after the running trial; the best so far is injected")
        self.pause_button = widgets.Button(description="Pause", icon="pause",
                                           tooltip="Start no new trial until resumed")
        self.more_count = widgets.BoundedIntText(value=10, min=1, max=100_000, layout=widgets.Layout(width="80px"))
        self.more_button = widgets.Button(description="trials", icon="plus", tooltip="Add trials to the budget")
        self.stop_button.on_click(lambda _: self._control(self.run.stop))
        self.pause_button.on_click(lambda _: self._control(
            self.run.resume if self.run.state == PAUSED else self.run.pause))
        self.more_button.on_click(lambda _: self._control(lambda: self.run.extend(self.more_count.value)))
        controls = widgets.HBox([self.stop_button, self.pause_button, self.more_count, self.more_button])

        self.sort_by = widgets.Dropdown(options=["value", "#", "seconds", "state"], value="value", description="sort by",
                                        layout=widgets.Layout(width="220px"))
        self.descending = widgets.ToggleButton(value=run.directions[0] == "maximize")
        self.sort_by.observe(lambda _: self._dirty.set(), "value")
        self.descending.observe(lambda _: self._dirty.set(), "value")
        self._label_sort_order()
        self.table = widgets.HTML()
        self.failed = widgets.Dropdown(options=[("failed trials: none", None)], layout=widgets.Layout(width="220px"))
        self.traceback = widgets.HTML()
        self.failed.observe(self._show_traceback, "value")
        table_tab = widgets.VBox([widgets.HBox([self.sort_by, self.descending, self.failed]), self.table,
                                  self.traceback])

        x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        self.points = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=16,
                                     colors=["#8c959f"], tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["#", "value"]))
        self.best_line = bqplot.Lines(x=[], y=[], scales={"x": x_scale, "y": y_scale}, colors=["#0969da"],
                                      interpolation="step-after", stroke_width=2)
        self.front = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=32,
                                    colors=["#0969da"])
        self.history = bqplot.Figure(
            marks=[self.points, self.best_line, self.front],
            axes=[bqplot.Axis(scale=x_scale, label="trial"),
                  bqplot.Axis(scale=y_scale, label="value", orientation="vertical", tick_format=".3g")],
            title="optimisation history", fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"),
        )
        # Running aggregates, updated as trials arrive, so that a refresh costs the same at
        # 10,000 trials as at 10: it copies these out and assigns what changed.
        self._maximize = run.directions[0] == "maximize"
        self._sign = -1.0 if self._maximize else 1.0  # sign * value: smaller is better
        self._best: float | None = None
        self._history = StrideSample(max_points)
        self._best_steps: list[tuple[float, float]] = []
        self._last_number = 0.0
        self._slices: dict[str, StrideSample] = {}
        self._slice_best: dict[str, float] = {}
        self._ranked: list[tuple[float, int, Row]] = []  # complete trials, best first
        self._others: list[Row] = []  # failed and pruned trials, for the table
        self._sample_for_parallel = StrideSample(100)
        self._param_names: list[str] = []
        self._failed: list[int] = []
        self._reporters: deque[Row] = deque(maxlen=50)
        self._count = 0
        for trial in run.study.get_trials(deepcopy=False):  # the stored history, read once
            if trial.state.is_finished():
                self._add(_row(trial, run))
        known = list(run.cell.param_names) if run.cell is not None else []
        known.extend(n for n in self._param_names if n not in known)
        self.slices = {name: self._slice_figure(name) for name in known}
        self.other_param = widgets.Dropdown(options=[], description="parameter",
                                            layout=widgets.Layout(width="260px"))
        self.other_param.observe(lambda _: self._dirty.set(), "value")
        self.other_slice = self._slice_figure(None)
        self.other_box = widgets.VBox([self.other_param, self.other_slice["figure"]],
                                      layout=widgets.Layout(display="none"))
        slices_tab = widgets.VBox([
            widgets.GridBox([s["figure"] for s in self.slices.values()],
                            layout=widgets.Layout(grid_template_columns="repeat(auto-fill, minmax(320px, 1fr))")),
            self.other_box,
        ])

        self.parallel_scale_x = bqplot.OrdinalScale()
        self.parallel_colour = bqplot.ColorScale(scheme="viridis" if run.directions[0] == "maximize" else "viridis_r")
        self.parallel_lines = bqplot.Lines(x=[], y=[], scales={"x": self.parallel_scale_x, "y": bqplot.LinearScale(
            min=0, max=1), "color": self.parallel_colour}, opacities=[0.5], stroke_width=1)
        self.parallel = bqplot.Figure(
            marks=[self.parallel_lines], axes=[bqplot.Axis(scale=self.parallel_scale_x, label="")],
            title="parallel coordinates (each range scaled to 0-1; colour: value)",
            fig_margin={"top": 40, "bottom": 40, "left": 20, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"))

        step_x, step_y = bqplot.LinearScale(), bqplot.LinearScale()
        self.intermediate_lines = bqplot.Lines(x=[], y=[], scales={"x": step_x, "y": step_y}, opacities=[0.6],
                                               stroke_width=1)
        self.intermediate = bqplot.Figure(
            marks=[self.intermediate_lines],
            axes=[bqplot.Axis(scale=step_x, label="step"),
                  bqplot.Axis(scale=step_y, label="reported value", orientation="vertical", tick_format=".3g")],
            title="intermediate values (tune.trial.report), latest 50 trials",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"))

        bar_x, bar_y = bqplot.OrdinalScale(), bqplot.LinearScale(min=0)
        self.importance_bars = bqplot.Bars(x=[], y=[], scales={"x": bar_x, "y": bar_y}, colors=["#0969da"])
        self.importance = bqplot.Figure(
            marks=[self.importance_bars],
            axes=[bqplot.Axis(scale=bar_x), bqplot.Axis(scale=bar_y, orientation="vertical", tick_format=".2f")],
            title="parameter importance (Optuna's evaluator; computed when the study ends)",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"))
        self.importance_note = widgets.HTML()
        self._importance_for: int | None = None  # number of complete trials it was computed for

        tabs = [("History" if not run.is_multi_objective else "Pareto front", self.history),
                ("Trials", table_tab), ("Slices", slices_tab), ("Parallel", self.parallel),
                ("Intermediate", self.intermediate),
                ("Importance", widgets.VBox([self.importance_note, self.importance]))]
        # Only the chosen page is attached: a bqplot figure hidden in a Tab has no width and
        # draws negative-size rectangles (console errors in Chromium).
        self.pages = dict(tabs)
        self.page_picker = widgets.ToggleButtons(options=list(self.pages), value=tabs[0][0],
                                                 style={"button_width": "110px"})
        self.page = widgets.Box([tabs[0][1]], layout=widgets.Layout(width="100%"))
        self.page_picker.observe(self._show_page, "value")
        self.widget = widgets.VBox([self.header, controls, self.page_picker, self.page])
        self.refresh()
        self._unsubscribe = run.subscribe(self._on_event)
        context = contextvars.copy_context()  # Output appends land under the cell that made us
        self._writer = threading.Thread(target=context.run, args=(self._write_loop,), daemon=True,
                                        name=f"hpt-dashboard-{run.name}")
        self._writer.start()

    # --- events (any thread): record, mark dirty; never touch widgets here ---------------

    def _on_event(self, event: Event) -> None:
        if event.kind == "trial_finished" and event.trial is not None:
            row = _row(event.trial, self.run)
            with self._lock:
                self._add(row)
        self._dirty.set()

    def _add(self, row: Row) -> None:
        """Fold one finished trial into the aggregates (run thread; a few microseconds)."""
        self._count += 1
        self._param_names.extend(n for n in row.params if n not in self._param_names)
        if row.intermediate:
            self._reporters.append(row)
        if row.state != "complete":
            self._others.append(row)
            if row.state == "fail":
                self._failed.append(row.number)
            return
        score = self._sign * row.values[0]
        bisect.insort(self._ranked, (score, row.number, row), key=lambda item: item[:2])
        if self.run.is_multi_objective:
            self._history.add(float(row.values[0]), float(row.values[1]), False)
            return
        value = row.values[0]
        improved = self._best is None or self._sign * value < self._sign * self._best
        if improved:
            self._best = value
            self._best_steps.append((float(row.number), value))
        self._last_number = max(self._last_number, float(row.number))
        self._history.add(float(row.number), value, improved)
        self._sample_for_parallel.add(row, value, False)
        for name, param_value in row.params.items():
            sample = self._slices.setdefault(name, StrideSample(self.max_points // 2))  # small plots
            best = self._slice_best.get(name)
            better = best is None or self._sign * value < self._sign * best
            if better:
                self._slice_best[name] = value
            sample.add(param_value, value, better)

    def _control(self, action: Any) -> None:
        try:
            action()
        finally:
            self._dirty.set()

    # --- the one writer ----------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self._closed:
            self._dirty.wait()
            self._dirty.clear()
            ended = self.run.state in FINAL_STATES and not self.run.is_alive
            try:
                self.refresh(full=ended)  # while running, only what is on show
                if ended:
                    self._compute_importance()
            except Exception:  # a view bug must not freeze the view: say so, keep serving
                logger.exception("hpt_jupyter: refreshing the dashboard of %r failed", self.run.name)
            if not (self.run.state in FINAL_STATES and not self.run.is_alive):
                time.sleep(self.interval)  # the throttle; an ended run waits for a sort or "+N" instead

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        self._dirty.set()

    def refresh(self, full: bool = True) -> None:
        """Bring the widgets up to date with the run: all of them, or (``full=False``, what the
        writer does while the study runs) the header, controls and the page on show. The
        kernel's main thread calls it once more when the study's values are injected, so that
        the final state also goes out under the cell then running (batch runners record only
        that)."""
        with self._refreshing:
            self._refresh(full)

    def _refresh(self, full: bool = True) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        shown = self.page_picker.value
        wanted = {page for page in self.pages if full or page == shown}
        with self._lock:  # copy out the little a refresh needs; the run thread goes on adding
            view: dict[str, Any] = {"failed": list(self._failed), "names": list(self._param_names),
                                    "complete": len(self._ranked)}
            if wanted & {"History", "Pareto front"}:
                view["history"] = self._history.xy()
                view["best"] = list(self._best_steps) + (
                    [(self._last_number, self._best)] if self._best_steps else [])
            if "Slices" in wanted:
                view["slices"] = {name: sample.xy() for name, sample in self._slices.items()}
            if "Parallel" in wanted:
                view["parallel"] = ([item[2] for item in self._ranked[:100]]
                                    + [p[0] for p in self._sample_for_parallel.points])
            if "Intermediate" in wanted:
                view["reporters"] = list(self._reporters)
            if "Trials" in wanted:
                view["table"] = self._table_rows()
        self.header.value = self._header_html()
        paused = self.run.state == PAUSED
        self.pause_button.description = "Resume" if paused else "Pause"
        self.pause_button.icon = "play" if paused else "pause"
        final = self.run.state in FINAL_STATES and not self.run.is_alive
        self.stop_button.disabled = final
        self.pause_button.disabled = final
        if "history" in view:
            self._refresh_plot(view)
        if "slices" in view:
            self._refresh_slices(view)
        if "parallel" in view:
            self._refresh_parallel(view["parallel"])
        if "reporters" in view:
            self._refresh_intermediate(view["reporters"])
        self._note_importance(view["complete"])
        self._label_sort_order()
        if "table" in view:
            self.table.value = self._table_html(view)
        failed = view["failed"]
        if len(failed) + 1 != len(self.failed.options):
            self.failed.options = [(f"failed trials: {len(failed)}", None)] + [(f"traceback of #{n}", n) for n in failed]
        self.refreshes += 1
        self.refresh_seconds_max = max(self.refresh_seconds_max, time.perf_counter() - start)
        self.refresh_cpu_seconds_max = max(self.refresh_cpu_seconds_max, time.thread_time() - cpu_start)

    # --- small multiples and friends ----------------------------------------------------

    def _slice_figure(self, name: str | None) -> dict:
        """One slice plot (score against a knob's value); made on the main thread."""
        param = self.run.space.get(name) if name else None
        if param is None and name and self.run.cell is not None:
            declared = {d.name: d.param for d in self.run.cell.declarations}
            param = declared.get(name)
        kind = type(param).__name__ if param is not None else None
        if kind == "ChoiceParam":
            x_scale = bqplot.OrdinalScale()
        elif getattr(param, "log", False):
            x_scale = bqplot.LogScale()
        else:
            x_scale = bqplot.LinearScale()
        y_scale = bqplot.LinearScale()
        points = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=12, colors=["#0969da"],
                                default_opacities=[0.6])
        figure = bqplot.Figure(
            marks=[points], title=name or "",
            axes=[bqplot.Axis(scale=x_scale, label=name or "", tick_format=None if kind == "ChoiceParam" else ".3g"),
                  bqplot.Axis(scale=y_scale, orientation="vertical", tick_format=".3g")],
            fig_margin={"top": 30, "bottom": 40, "left": 50, "right": 10},
            layout=widgets.Layout(width="100%", height="220px"))
        return {"figure": figure, "points": points, "categorical": kind == "ChoiceParam"}

    @staticmethod
    def _slice_xy(data: tuple[list, list], categorical: bool) -> tuple[list, list]:
        xs, ys = data
        if categorical:
            return [str(x) for x in xs], ys
        return [x if isinstance(x, str) else float(x) for x in xs], ys

    def _refresh_slices(self, view: dict) -> None:
        if self.run.is_multi_objective:
            return
        slices = view["slices"]
        for name, plot in self.slices.items():
            xs, ys = self._slice_xy(slices.get(name, ([], [])), plot["categorical"])
            with plot["points"].hold_sync():
                plot["points"].x, plot["points"].y = xs, ys
        others = sorted(set(view["names"]) - set(self.slices))
        if others:
            if list(self.other_param.options) != others:
                self.other_param.options = others
            self.other_box.layout.display = "flex"
            name = self.other_param.value or others[0]
            xs, ys = self._slice_xy(slices.get(name, ([], [])), categorical=False)
            title = name
            if any(not isinstance(x, float) for x in xs):  # categories on this linear axis: codes
                labels = sorted({str(x) for x in xs})
                xs = [float(labels.index(str(x))) for x in xs]
                title = f"{name}: " + ", ".join(f"{i}={label}" for i, label in enumerate(labels))
            with self.other_slice["points"].hold_sync():
                self.other_slice["points"].x, self.other_slice["points"].y = xs, ys
            self.other_slice["figure"].title = title

    def _refresh_parallel(self, chosen: list[Row]) -> None:
        """The best 100 trials and a stride of all of them: at most 200 lines."""
        if self.run.is_multi_objective or not chosen:
            return
        chosen = list({row.number: row for row in chosen}.values())
        names = []
        for row in chosen:
            names.extend(n for n in row.params if n not in names)
        axes = names + ["value"]
        columns: dict[str, list] = {}
        for name in names:
            columns[name] = [row.params.get(name) for row in chosen]
        columns["value"] = [row.values[0] for row in chosen]
        scaled = {name: _scale_column(values) for name, values in columns.items()}
        lines = [[scaled[name][i] for name in axes] for i in range(len(chosen))]
        with self.parallel_lines.hold_sync():
            self.parallel_lines.x = axes
            self.parallel_lines.y = lines
            self.parallel_lines.color = columns["value"]

    def _refresh_intermediate(self, reported: list[Row]) -> None:
        if not reported:
            return
        steps = sorted({step for r in reported for step, _ in r.intermediate})
        index = {step: i for i, step in enumerate(steps)}
        lines = []
        for row in reported:
            line = [float("nan")] * len(steps)
            for step, value in row.intermediate:
                line[index[step]] = value
            lines.append(line)
        with self.intermediate_lines.hold_sync():
            self.intermediate_lines.x = [float(s) for s in steps]
            self.intermediate_lines.y = lines

    def _note_importance(self, complete: int) -> None:
        if self.run.is_multi_objective:
            self.importance_note.value = "Importance is shown for single-objective studies."
        elif complete < 10:
            self.importance_note.value = f"Needs at least 10 complete trials ({complete} so far)."
        elif self._importance_for is None:
            self.importance_note.value = "Computed when the study ends."

    def _compute_importance(self) -> None:
        """Optuna's evaluator (fANOVA) takes a second or more, so it runs once, when the study
        ends, in the writer thread and outside any refresh."""
        run = self.run
        complete = run.n_complete
        if run.is_multi_objective or complete < 10 or complete == self._importance_for:
            return
        self._importance_for = complete
        try:
            import optuna

            importances = optuna.importance.get_param_importances(run.study)
        except Exception as error:  # noqa: BLE001 - e.g. a space the evaluator cannot handle
            self.importance_note.value = f"Importance unavailable: {html.escape(str(error))}"
            return
        with self._refreshing:
            with self.importance_bars.hold_sync():
                self.importance_bars.x = list(importances)
                self.importance_bars.y = [float(v) for v in importances.values()]
            self.importance_note.value = f"From {complete} complete trials."

    def _show_page(self, change: dict) -> None:  # main thread: the page box's only writer
        self.page.children = [self.pages[change["new"]]]
        self._dirty.set()  # the writer brings the page just opened up to date

    def _label_sort_order(self) -> None:
        descending = self.descending.value
        self.descending.description = "descending" if descending else "ascending"
        self.descending.icon = "sort-amount-desc" if descending else "sort-amount-asc"

    def _header_html(self) -> str:
        run = self.run
        colour = _STATE_COLOURS.get(run.state, "#57606a")
        best = run.best_trial
        if best is None:
            best_text = "no complete trial yet"
        elif run.is_multi_objective:
            best_text = f"{len(run.study.best_trials)} trials on the Pareto front"
        else:
            best_text = f"best <b>{_fmt(best.value)}</b> at trial #{best.number}"
        budget = f"/{run.budget}" if run.budget is not None else ""
        eta = run.eta()
        per_trial = run.sampler_seconds / run.n_run * 1000 if run.n_run else 0.0
        parts = [
            f"<b>{html.escape(run.name)}</b>",
            f"<span style='color:{colour}'>&#9679; {html.escape(run.state)}</span>",
            f"{html.escape(run.sampler_name)} · {html.escape('/'.join(run.directions))}",
            f"{run.n_finished}{budget} trials",
            best_text,
            f"{run.elapsed:.1f}s" + (f" · ETA {eta:.0f}s" if eta is not None and run.is_alive else ""),
            f"sampler {per_trial:.1f} ms/trial",
        ]
        if run.n_failed:
            parts.insert(4, f"<span style='color:#cf222e'>{run.n_failed} failed</span>")
        if run.reason and run.state in FINAL_STATES:
            parts.append(html.escape(run.reason))
        return ("<div style='font-family:var(--jp-ui-font-family, sans-serif)'>" + " · ".join(parts)
                + f"<div style='color:#57606a;font-size:smaller'>{html.escape(run.opened)}</div></div>")

    def _refresh_plot(self, view: dict) -> None:
        xs, ys = view["history"]
        if self.run.is_multi_objective:
            front = self.run.study.best_trials if view["complete"] else []
            with self.points.hold_sync():
                self.points.x, self.points.y = xs, ys
            with self.front.hold_sync():
                self.front.x = [float(t.values[0]) for t in front]
                self.front.y = [float(t.values[1]) for t in front]
            return
        best = view["best"]
        with self.points.hold_sync():
            self.points.x, self.points.y = xs, ys
        with self.best_line.hold_sync():
            self.best_line.x, self.best_line.y = [p[0] for p in best], [p[1] for p in best]

    def _table_rows(self) -> tuple[list[Row], int]:
        """The rows the table shows under the current sort (called with the lock held)."""
        key, descending, limit = self.sort_by.value, self.descending.value, self.max_rows
        total = len(self._ranked) + len(self._others)
        if key == "value":  # the ranked list is already in order: no sorting at all
            if descending == self._maximize:
                shown = [item[2] for item in self._ranked[:limit]]
            else:
                shown = [item[2] for item in reversed(self._ranked[-limit:])]
            return shown + self._others[-(limit - len(shown)):] if len(shown) < limit else shown, total

        def sort_key(row: Row) -> tuple:
            if key == "#":
                value: Any = row.number
            elif key == "seconds":
                value = row.seconds
            elif key == "state":
                value = row.state
            else:
                value = row.params.get(key)
            if value is None:
                return (2, 0.0, "")  # missing (conditional knob) last
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return (0, -value if descending else value, "")
            return (1, 0.0, str(value))

        everything = [item[2] for item in self._ranked] + self._others
        return heapq.nsmallest(limit, everything, key=sort_key), total

    def _table_html(self, view: dict) -> str:
        run = self.run
        shown, total = view["table"]
        names = view["names"]
        options = ["value", "#", "seconds", "state", *names]
        if list(self.sort_by.options) != options:
            self.sort_by.options = options
        score_names = ["value"] if not run.is_multi_objective else [f"value {i}" for i in range(len(run.directions))]
        best = run.best_trial
        best_number = best.number if best is not None else None
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "state", *score_names, *names, "seconds"])
        body = []
        for row in shown:
            cells = [str(row.number), row.state]
            cells += [_fmt(v) for v in (row.values or (None,) * len(score_names))]
            cells += [_fmt(row.params.get(n)) for n in names]
            cells.append(_fmt(row.seconds))
            style = " style='background:#ddf4ff;font-weight:600'" if row.number == best_number else ""
            if row.state == "fail":
                style = " style='color:#cf222e'"
            body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        note = f"showing {len(shown)} of {total} trials" if total > len(shown) else f"{total} trials"
        return (f"<div style='max-height:320px;overflow:auto'><table class='hpt-trials'>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
                f"<small>{html.escape(note)}</small>")

    def _show_traceback(self, change: dict) -> None:  # main thread: this widget's only writer
        number = change["new"]
        if number is None:  # the writer refreshed the options: not a choice of the user's
            return
        text = self.run.failure(number)
        self.traceback.value = f"<pre style='color:#cf222e;white-space:pre-wrap'>{html.escape(text)}</pre>"
