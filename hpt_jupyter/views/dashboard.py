"""The live widget view of a run: header, controls, trial table and optimisation history.

A view, not a driver: it subscribes to the run's events and calls only the run's control
API. Widgets are created on the main thread (create the Dashboard there); afterwards one
writer thread owns every widget it refreshes, so updates from a fast study are coalesced
(latest state wins) and sent at most every ``interval`` seconds, and x/y of a plot change
together in one ``hold_sync``.
"""

from __future__ import annotations

import contextvars
import html
import math
import threading
import time
import traceback
from typing import Any

import bqplot
import ipywidgets as widgets

from .digest import Digest, Row, TableOrder
from ..core.run import FINAL_STATES, PAUSED, Event, Run
from ..core.space import ChoiceParam
from .steer_panel import SteerPanel

_PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#57606a"]
_PRUNED_COLOUR = "#8c959f"

_STATE_COLOURS = {"running": "#1a7f37", "paused": "#9a6700", "stopping": "#9a6700", "stopped": "#57606a",
                  "finished": "#0969da", "failed": "#cf222e", "ready": "#57606a"}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _column_scaling(values: list) -> tuple:
    """How a parallel-coordinates axis maps to 0-1: ("number", low, high) or ("labels", [...])."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        low, high = min(present), max(present)
        return ("number", low, high if high > low else low + 1.0)
    return ("labels", sorted({str(v) for v in present}))


def _scale_column(values: list) -> list[float]:
    """A parallel-coordinates axis: numbers scaled to [0, 1], categories spread evenly, NaN for
    a knob a trial did not have (a conditional one)."""
    scaling = _column_scaling(values)
    if scaling[0] == "number":
        low, span = scaling[1], scaling[2] - scaling[1]
        return [float("nan") if v is None else (v - low) / span for v in values]
    labels = scaling[1]
    spread = max(len(labels) - 1, 1)
    return [float("nan") if v is None else labels.index(str(v)) / spread for v in values]


class Dashboard:
    """A live view of ``run`` for a notebook cell: ``display(Dashboard(run).widget)``."""

    def __init__(self, run: Run, *, interval: float = 0.25, max_rows: int = 50, max_points: int = 2000,
                 max_segments: int = 400) -> None:
        self.run = run
        self.interval = interval
        self.max_rows = max_rows
        self.max_points = max_points
        self.max_segments = max_segments  # the lineage page draws at most the latest this many
        self.refreshes = 0
        self.refresh_seconds_max = 0.0  # the slowest pass (one page), wall time: includes waiting for the GIL
        self.refresh_cpu_seconds_max = 0.0  # the slowest pass, the refreshing thread's own CPU time
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
        # Trials are folded into a digest as they arrive, so a refresh costs the same at 10,000
        # trials as at 10; a refresh copies out, under the lock, only what its pages draw.
        self._lock = threading.Lock()
        self.digest = Digest(run.directions, decoders=self._decoders(), categorical=self._categorical(),
                             max_points=max_points)
        self.digest.fold(t for t in run.trials(states=None) if t.state.is_finished())  # across narrowings
        self._table = TableOrder(self.digest, max_rows, self.sort_by.value, self.descending.value)
        self._row_html: dict[tuple, str] = {}
        self._drawn: dict[str, Any] = {}  # page -> what it last drew, to skip redrawing the same
        self._line_end, self._line_moved, self._line_steps = 0.0, 0.0, 0  # the best line's end
        known = list(run.cell.param_names) if run.cell is not None else []
        known.extend(n for n in self.digest.param_names if n not in known)
        self.sort_by.options = ["value", "#", "seconds", "state", *known]
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
        parallel_y = bqplot.LinearScale(min=0, max=1)
        self.parallel_lines = bqplot.Lines(x=[], y=[], scales={"x": self.parallel_scale_x, "y": parallel_y,
                                                               "color": self.parallel_colour},
                                           opacities=[0.5], stroke_width=1)
        self._parallel_scaling: dict[str, tuple] = {}  # axis -> how its values map to 0-1 (writer sets)
        self.parallel_axis = widgets.Dropdown(options=[], description="brush axis",
                                              layout=widgets.Layout(width="260px"))
        self.parallel_brush = bqplot.interacts.BrushIntervalSelector(scale=parallel_y, orientation="vertical",
                                                                     marks=[self.parallel_lines], color="#0969da")
        self.parallel_brush.observe(self._on_parallel_brush, "brushing")
        self.parallel = bqplot.Figure(
            marks=[self.parallel_lines], axes=[bqplot.Axis(scale=self.parallel_scale_x, label="")],
            title="parallel coordinates (each range scaled to 0-1; colour: value)",
            fig_margin={"top": 40, "bottom": 40, "left": 20, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"), interaction=self.parallel_brush)

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
                ("Trials", table_tab), ("Slices", slices_tab), ("Parallel", widgets.VBox([self.parallel_axis, self.parallel])),
                ("Intermediate", self.intermediate),
                ("Importance", widgets.VBox([self.importance_note, self.importance]))]
        if run.scheduler is not None:  # population-based training: who cloned whom, and the schedule
            tabs[5:5] = self._population_pages(run.scheduler.settings.population)
        # Only the chosen page is attached: a bqplot figure hidden in a Tab has no width and
        # draws negative-size rectangles (console errors in Chromium).
        self.pages = dict(tabs)
        self.page_picker = widgets.ToggleButtons(options=list(self.pages), value=tabs[0][0],
                                                 style={"button_width": "96px"})
        self.page = widgets.Box([tabs[0][1]], layout=widgets.Layout(width="100%"))
        self.page_picker.observe(self._show_page, "value")
        # The view's own errors show here: appended from the writer thread, never `with out:`
        # (which would capture whatever the main thread prints meanwhile).
        self.errors = widgets.Output()
        self._errors_shown: set[str] = set()
        self.steer = SteerPanel(run, self._dirty.set)
        self.steer_toggle = widgets.ToggleButton(value=True, description="Steer", icon="sliders",
                                                 tooltip="Show or hide the steering panel")
        self.steer_toggle.observe(self._show_steer, "value")
        controls.children = [*controls.children, self.steer_toggle]
        body = widgets.HBox([widgets.VBox([self.page_picker, self.page], layout=widgets.Layout(flex="1 1 0%",
                                                                                                 min_width="0")),
                             self.steer.widget], layout=widgets.Layout(width="100%"))
        self.widget = widgets.VBox([self.header, controls, body, self.errors])
        self._running: list = []  # the run's running trials, as of the latest refresh
        self.refresh()
        self._unsubscribe = run.subscribe(self._on_event)
        context = contextvars.copy_context()  # Output appends land under the cell that made us
        self._writer = threading.Thread(target=context.run, args=(self._write_loop,), daemon=True,
                                        name=f"hpt-dashboard-{run.name}")
        self._writer.start()

    def _population_pages(self, population: int) -> list[tuple[str, Any]]:
        """The Lineage and Schedule pages of a PBT run (made on the main thread)."""
        maximize = self.run.directions[0] == "maximize"
        step_x = bqplot.LinearScale()
        member_y = bqplot.LinearScale(min=-0.5, max=population - 0.5)
        self.lineage_colour = bqplot.ColorScale(scheme="viridis" if maximize else "viridis_r")
        scales = {"x": step_x, "y": member_y}
        # One line per segment, at its member's height from its first to its last step
        # (colour: its score); one dashed link per exploit, from the donor's line to the member
        # that cloned its checkpoint, at the step it did.
        self.lineage_links = bqplot.Lines(x=[], y=[], scales=scales, colors=["#57606a"], line_style="dashed",
                                          stroke_width=1, opacities=[0.8])
        self.lineage_lines = bqplot.Lines(x=[], y=[], scales={**scales, "color": self.lineage_colour},
                                          stroke_width=6, tooltip=bqplot.Tooltip(fields=["name"], labels=["segment"]))
        height = min(max(60 + 36 * population, 220), 480)
        self.lineage = bqplot.Figure(
            marks=[self.lineage_links, self.lineage_lines],
            axes=[bqplot.Axis(scale=step_x, label="step"),
                  bqplot.Axis(scale=member_y, label="member", orientation="vertical", tick_format="d",
                              tick_values=list(range(population))),
                  bqplot.ColorAxis(scale=self.lineage_colour, label="score", side="right",
                                   tick_format=".3g")],
            title="lineage: each member's segments (colour: score); dashed: a member clones another",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 70},
            layout=widgets.Layout(width="100%", height=f"{height}px"))
        self.lineage_note = widgets.HTML()

        schedule_x, schedule_y = bqplot.LinearScale(), bqplot.LinearScale(min=0, max=1)
        self.schedule_lines = bqplot.Lines(x=[], y=[], scales={"x": schedule_x, "y": schedule_y},
                                           interpolation="step-after", stroke_width=2, colors=_PALETTE,
                                           display_legend=True, labels=[])
        self.schedule = bqplot.Figure(
            marks=[self.schedule_lines],
            axes=[bqplot.Axis(scale=schedule_x, label="step"),
                  bqplot.Axis(scale=schedule_y, label="within its range", orientation="vertical",
                              tick_format=".1f")],
            title="the best member's hyperparameters over steps (each scaled to its range: see legend)",
            legend_location="top-right", fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=widgets.Layout(width="100%", height="300px"))
        self.schedule_table = widgets.HTML()
        return [("Lineage", widgets.VBox([self.lineage, self.lineage_note])),
                ("Schedule", widgets.VBox([self.schedule, self.schedule_table]))]

    # --- events (any thread): record, mark dirty; never touch widgets here ---------------

    def _on_event(self, event: Event) -> None:
        if event.kind == "trial_finished" and event.trial is not None:
            # Folded here, in the run's thread, a few microseconds per trial: handing trials to
            # the writer in batches was measured slower (long GIL holds stall the run's thread).
            with self._lock:
                if not event.trial.params.keys() <= self.digest.known_names:
                    self._learn_knobs()
                for row in self.digest.fold((event.trial,)):
                    self._table.add(row)
        if not self._dirty.is_set():
            self._dirty.set()

    def _decoders(self) -> dict[str, Any]:
        return {name: p.decode for name, p in self.run.space.items() if isinstance(p, ChoiceParam)}

    def _categorical(self) -> set[str]:
        params = dict(self.run.space)
        if self.run.cell is not None:
            params.update({d.name: d.param for d in self.run.cell.declarations})
        return {name for name, p in params.items() if isinstance(p, ChoiceParam)}

    def _learn_knobs(self) -> None:
        """A knob declared at run time (in a branch): decode and plot it like the others."""
        self.digest.decoders = self._decoders()
        self.digest.categorical |= self._categorical()

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
                text = traceback.format_exc()
                if text not in self._errors_shown:  # once each, not four times a second
                    self._errors_shown.add(text)
                    self.errors.append_stderr(f"The dashboard of {self.run.name!r} could not refresh (the "
                                              f"study goes on):\n{text}")
            if not (self.run.state in FINAL_STATES and not self.run.is_alive):
                time.sleep(self.interval)  # the throttle; an ended run waits for a sort or "+N" instead

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        self._dirty.set()

    def refresh(self, full: bool = True) -> None:
        """Bring the widgets up to date with the run: the header, controls and the page on
        show, then (``full``, when the run has ended) every other page, one page per pass so
        that no single pass holds the GIL long. The kernel's main thread calls it once more
        when the study's values are injected (see :meth:`publish_final_state`)."""
        shown = self.page_picker.value
        for page in [shown] + ([p for p in self.pages if p != shown] if full else []):
            with self._refreshing:
                self._refresh(page)
        self.refreshes += 1

    def _refresh(self, page: str) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        digest = self.digest
        best = self.run.best_trial
        running = self.run.running_trials()
        self._running = running
        # running rows show their seconds: while any run, the table changes once a second
        running_key = tuple(r.number for r in running), int(time.monotonic()) if running else 0
        drawers = {  # page -> (what its drawing depends on, copy out its data, draw it)
            "History": (digest.version, self._take_history, self._draw_history),
            "Pareto front": (digest.version, self._take_history, self._draw_history),
            "Trials": ((digest.version, self.sort_by.value, self.descending.value, best and best.number,
                        running_key),
                       self._take_table, self._draw_table),
            "Slices": ((digest.version, self.other_param.value), self._take_slices, self._draw_slices),
            "Parallel": (digest.version, digest.parallel_rows, self._draw_parallel),
            "Intermediate": (digest.version, lambda: list(digest.reporters), self._draw_intermediate),
        }
        scheduler = self.run.scheduler
        if scheduler is not None:  # these copy from the run (under its scheduler's lock), not the digest
            segments = len(scheduler.lineage)
            drawers["Lineage"] = (segments, self.run.lineage, self._draw_lineage)
            drawers["Schedule"] = ((segments, best and best.number), lambda: self.run.best_schedule,
                                   self._draw_schedule)
        depends_on, take, draw = drawers.get(page, (None, None, None))
        due = take is not None and self._drawn.get(page) != depends_on
        from_run = page in ("Lineage", "Schedule")
        with self._lock:  # the run's thread waits only for these copies
            failed, complete, front = list(digest.failed), digest.n_complete, len(digest.front)
            taken = take() if due and not from_run else None
        if due and from_run:
            taken = take()
        self.header.value = self._header_html(front)
        paused = self.run.state == PAUSED
        self.pause_button.description = "Resume" if paused else "Pause"
        self.pause_button.icon = "play" if paused else "pause"
        final = self.run.state in FINAL_STATES and not self.run.is_alive
        self.stop_button.disabled = final
        self.pause_button.disabled = final
        self._label_sort_order()
        self._note_importance(complete)
        if len(failed) + 1 != len(self.failed.options):
            self.failed.options = [(f"failed trials: {len(failed)}", None)] + [(f"traceback of #{n}", n) for n in failed]
        if due:
            draw(taken)
            self._drawn[page] = depends_on
        self.steer.sync()
        self.refresh_seconds_max = max(self.refresh_seconds_max, time.perf_counter() - start)
        self.refresh_cpu_seconds_max = max(self.refresh_cpu_seconds_max, time.thread_time() - cpu_start)

    def publish_final_state(self) -> None:
        """Refresh, then send every drawn widget's whole state once more (main thread, between
        cells): batch runners record only the messages under the cell being executed, and the
        writer's last updates may have gone out under a cell that had already finished."""
        self.refresh(full=True)
        with self._refreshing:
            marks = [self.points, self.best_line, self.front, self.parallel_lines, self.intermediate_lines,
                     self.importance_bars, self.other_slice["points"], *(s["points"] for s in self.slices.values())]
            if self.run.scheduler is not None:
                marks += [self.lineage_lines, self.lineage_links, self.lineage_note, self.schedule_lines,
                          self.schedule_table]
            for widget in [self.header, self.table, self.importance_note, self.pause_button, self.stop_button,
                           *marks]:
                widget.send_state()

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
        if name and kind in ("FloatParam", "IntParam"):
            # Brushing a range of this knob proposes it to the steering panel.
            brush = bqplot.interacts.BrushIntervalSelector(scale=x_scale, marks=[points], color="#0969da")
            brush.observe(lambda change, name=name: self._on_slice_brush(name, change), "brushing")
            figure.interaction = brush
        return {"figure": figure, "points": points, "categorical": kind == "ChoiceParam"}

    def _on_slice_brush(self, name: str, change: dict) -> None:  # main thread
        selected = change["owner"].selected
        if change["new"] or selected is None or len(selected) != 2:
            return  # still dragging, or cleared
        low, high = sorted(float(v) for v in selected)
        self.steer.propose("brush", {name: self._clip_to_declared(name, low, high)})

    def _on_parallel_brush(self, change: dict) -> None:  # main thread
        selected = change["owner"].selected
        axis = self.parallel_axis.value
        scaling = self._parallel_scaling.get(axis)
        if change["new"] or selected is None or len(selected) != 2 or scaling is None:
            return
        low, high = sorted(float(v) for v in selected)
        if scaling[0] == "number":
            start, span = scaling[1], scaling[2] - scaling[1]
            self.steer.propose("brush", {axis: self._clip_to_declared(axis, start + low * span, start + high * span)})
        else:
            labels = scaling[1]
            spread = max(len(labels) - 1, 1)
            picked = [label for i, label in enumerate(labels) if low - 1e-9 <= i / spread <= high + 1e-9]
            param = self.run.declared_space().get(axis)
            if param is not None and hasattr(param, "labels"):
                picked = [o for o, label in zip(param.options, param.labels) if str(label) in picked]
            self.steer.propose("brush", {axis: picked})

    def _clip_to_declared(self, name: str, low: float, high: float) -> tuple[float, float]:
        param = self.run.declared_space().get(name)
        if param is None or not hasattr(param, "low"):
            return (low, high)
        return (min(max(low, param.low), param.high), min(max(high, param.low), param.high))

    def _take_slices(self) -> tuple[dict, list[str]]:
        return ({name: (list(xs), list(ys)) for name, (xs, ys) in self.digest.slices.items()},
                list(self.digest.param_names))

    def _draw_slices(self, taken: tuple[dict, list[str]]) -> None:
        if self.run.is_multi_objective:
            return
        slices, names = taken
        for name, plot in self.slices.items():
            xs, ys = slices.get(name, ([], []))
            with plot["points"].hold_sync():
                plot["points"].x, plot["points"].y = xs, ys
        others = sorted(set(names) - set(self.slices))
        if others:
            if list(self.other_param.options) != others:
                self.other_param.options = others
            self.other_box.layout.display = "flex"
            name = self.other_param.value or others[0]
            xs, ys = slices.get(name, ([], []))
            title = name
            if any(isinstance(x, str) for x in xs):  # categories on this linear axis: codes
                labels = sorted({str(x) for x in xs})
                xs = [float(labels.index(str(x))) for x in xs]
                title = f"{name}: " + ", ".join(f"{i}={label}" for i, label in enumerate(labels))
            with self.other_slice["points"].hold_sync():
                self.other_slice["points"].x, self.other_slice["points"].y = xs, ys
            self.other_slice["figure"].title = title

    def _draw_parallel(self, chosen: list[Row]) -> None:
        """The best 100 trials and about 100 spread over the study: at most 200 lines."""
        if self.run.is_multi_objective or not chosen:
            return
        names = []
        for row in chosen:
            names.extend(n for n in row.params if n not in names)
        axes = names + ["value"]
        columns: dict[str, list] = {name: [row.params.get(name) for row in chosen] for name in names}
        columns["value"] = [row.values[0] for row in chosen]
        scaled = [_scale_column(columns[name]) for name in axes]
        self._parallel_scaling = {name: _column_scaling(columns[name]) for name in names}
        if list(self.parallel_axis.options) != names:
            self.parallel_axis.options = names
        lines = [list(point) for point in zip(*scaled)]
        with self.parallel_lines.hold_sync():
            self.parallel_lines.x = axes
            self.parallel_lines.y = lines
            self.parallel_lines.color = columns["value"]

    def _draw_intermediate(self, reported: list[Row]) -> None:
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

    def _draw_lineage(self, segments: list) -> None:
        """The latest ``max_segments`` segments as lines, the exploits among them as dashed links."""
        if not segments:
            return
        ends = {s.number: s.end for s in segments}  # a donor's segment, to start its link where it ended
        shown = segments[-self.max_segments:]
        scores = [s.value for s in shown if s.value is not None]
        worst = (min(scores) if self.run.directions[0] == "maximize" else max(scores)) if scores else 0.0
        xs, ys, colours, labels = [], [], [], []
        link_x, link_y = [], []
        for s in shown:
            xs.append([float(s.start), float(s.end)])
            ys.append([float(s.member), float(s.member)])
            colours.append(float(s.value) if s.value is not None else float(worst))  # failed, pruned: worst
            labels.append(f"#{s.number} member {s.member} steps {s.start}-{s.end} "
                          + (f"score {_fmt(s.value)}" if s.value is not None else s.state)
                          + (f" cloned member {s.parent}" if s.exploited else ""))
            if s.exploited and s.parent is not None:
                link_x.append([float(ends.get(s.from_trial, s.start)), float(s.start)])
                link_y.append([float(s.parent), float(s.member)])
        with self.lineage_lines.hold_sync():
            self.lineage_lines.x, self.lineage_lines.y = xs, ys
            self.lineage_lines.color = colours
            self.lineage_lines.labels = labels
        with self.lineage_links.hold_sync():
            self.lineage_links.x, self.lineage_links.y = link_x, link_y
        exploits = sum(1 for s in segments if s.exploited)
        shown_text = f"the latest {len(shown)} of {len(segments)} segments" if len(shown) < len(segments) \
            else f"{len(segments)} segments"
        self.lineage_note.value = f"<small>{html.escape(shown_text)}, {exploits} exploits in all</small>"

    def _schedule_scaling(self, name: str, values: list) -> tuple[Any, str] | None:
        """How a hyperparameter of the schedule maps to 0-1 (its declared range, else the range
        it took), and its legend label; None for one that is not a number."""
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return None
        param = self.run.declared_space().get(name)
        low, high, log = getattr(param, "low", None), getattr(param, "high", None), getattr(param, "log", False)
        if low is None or high is None:
            low, high, log = min(values), max(values), False
        if log and low > 0:
            span = math.log(high) - math.log(low) or 1.0
            return (lambda v: (math.log(v) - math.log(low)) / span), f"{name} ({low:g}-{high:g}, log)"
        span = (high - low) or 1.0
        return (lambda v: (v - low) / span), f"{name} ({low:g}-{high:g})"

    def _draw_schedule(self, schedule: list[dict]) -> None:
        """The best member's hyperparameters as step lines over its steps, and as a table."""
        if not schedule:
            return
        names: list[str] = []
        for entry in schedule:
            names.extend(k for k in entry if k not in ("trial", "member", "start", "end", "value") and k not in names)
        xs = [float(e["start"]) for e in schedule] + [float(schedule[-1]["end"])]
        ys, labels = [], []
        for name in names:
            values = [e.get(name) for e in schedule]
            scaling = self._schedule_scaling(name, [v for v in values if v is not None])
            if scaling is None or any(v is None for v in values):
                continue  # a choice or a conditional knob: in the table only
            scale, label = scaling
            line = [float(scale(v)) for v in values]
            ys.append(line + line[-1:])
            labels.append(label)
        with self.schedule_lines.hold_sync():
            self.schedule_lines.x = xs
            self.schedule_lines.y = ys
            self.schedule_lines.labels = labels
        shown = schedule[-100:]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["steps", "#", "member", *names, "score"])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in
                             [f"{e['start']}-{e['end']}", str(e["trial"]), str(e["member"]),
                              *[_fmt(e.get(n)) for n in names], _fmt(e["value"])]) + "</tr>"
            for e in shown)
        best = schedule[-1]
        note = (f"member {best['member']}'s training: {len(schedule)} segments back through the members it cloned"
                + (f", the latest {len(shown)} shown" if len(shown) < len(schedule) else ""))
        self.schedule_table.value = (f"<div style='max-height:240px;overflow:auto'><table class='hpt-schedule'>"
                                     f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                                     f"<small>{html.escape(note)}</small>")

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

    def _show_steer(self, change: dict) -> None:  # main thread: the panel's layout's only writer
        self.steer.widget.layout.display = "flex" if change["new"] else "none"

    def _show_page(self, change: dict) -> None:  # main thread: the page box's only writer
        self.page.children = [self.pages[change["new"]]]
        self._dirty.set()  # the writer brings the page just opened up to date

    def _label_sort_order(self) -> None:
        descending = self.descending.value
        self.descending.description = "descending" if descending else "ascending"
        self.descending.icon = "sort-amount-desc" if descending else "sort-amount-asc"

    def _header_html(self, front_size: int = 0) -> str:
        run = self.run
        colour = _STATE_COLOURS.get(run.state, "#57606a")
        best = run.best_trial
        if best is None:
            best_text = "no complete trial yet"
        elif run.is_multi_objective:
            best_text = f"{front_size} trials on the Pareto front"
        else:
            best_text = f"best <b>{_fmt(best.value)}</b> at trial #{best.number}"
        budget = f"/{run.budget}" if run.budget is not None else ""
        eta = run.eta()
        running = self._running
        per_trial = run.sampler_seconds / run.n_run * 1000 if run.n_run else 0.0
        parts = [
            f"<b>{html.escape(run.name)}</b>",
            f"<span style='color:{colour}'>&#9679; {html.escape(run.state)}</span>",
            f"{html.escape(run.sampler_text())} · {html.escape('/'.join(run.directions))}"
            + html.escape(run.slots_text()) + html.escape(run.scheduler_text()),
            f"{run.n_finished}{budget} trials" + (f" ({len(running)} running)" if running else ""),
            best_text,
            # whole seconds while running: the header then changes (and is sent) once a second
            (f"{run.elapsed:.0f}s" + (f" · ETA {eta:.0f}s" if eta is not None else "")) if run.is_alive
            else f"{run.elapsed:.1f}s",
            f"sampler {per_trial:.1f} ms/trial",
        ]
        if run.n_failed:
            parts.insert(4, f"<span style='color:#cf222e'>{run.n_failed} failed</span>")
        if run.n_pruned:
            parts.insert(4, f"<span style='color:{_PRUNED_COLOUR}'>{run.n_pruned} pruned</span>")
        if run.reason and run.state in FINAL_STATES:
            parts.append(html.escape(run.reason))
        return ("<div class='hpt-header' style='font-family:var(--jp-ui-font-family, sans-serif)'>"
                + " · ".join(parts)
                + f"<div style='color:#57606a;font-size:smaller'>{html.escape(run.opened)}</div></div>")

    def _take_history(self) -> tuple:
        digest = self.digest
        if self.run.is_multi_objective:
            marked = ([float(row.values[0]) for row in digest.front], [float(row.values[1]) for row in digest.front])
        else:
            # The line's last step runs on to the latest trial; moving only its end is not worth
            # a message every refresh, so the end moves with an improvement or once a second.
            now, steps = time.monotonic(), len(digest.best_steps)
            if steps != self._line_steps or now - self._line_moved >= 1.0 or not self.run.is_alive:
                self._line_end, self._line_moved, self._line_steps = digest.last_number, now, steps
            marked = digest.best_line(until=self._line_end)
        return digest.history_xy(), marked

    def _draw_history(self, taken: tuple) -> None:
        (xs, ys), (marked_x, marked_y) = taken
        with self.points.hold_sync():
            self.points.x, self.points.y = xs, ys
        line = self.front if self.run.is_multi_objective else self.best_line
        with line.hold_sync():
            line.x, line.y = marked_x, marked_y

    def _take_table(self) -> tuple[list[Row], int, list[str]]:
        self._table.reorder(self.digest, self.sort_by.value, self.descending.value)
        return list(self._table.shown), self.digest.count, list(self.digest.param_names)

    def _draw_table(self, taken: tuple[list[Row], int, list[str]]) -> None:
        run = self.run
        shown, total, names = taken
        # Only knobs not listed yet are added: resetting the options under a user who is
        # choosing one would undo the choice.
        missing = [n for n in names if n not in self.sort_by.options]
        if missing:
            self.sort_by.options = [*self.sort_by.options, *missing]
        score_names = ["value"] if not run.is_multi_objective else [f"value {i}" for i in range(len(run.directions))]
        best = run.best_trial
        best_number = best.number if best is not None else None
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "state", *score_names, *names, "seconds"])
        layout = tuple(names)
        if len(self._row_html) > 4 * self.max_rows:
            self._row_html.clear()
        body = []
        for trial in self._running:  # running trials first, as Optuna's dashboard does
            texts = [str(trial.number), "running", *[""] * len(score_names),
                     *[_fmt(trial.params.get(n)) for n in names], f"{trial.seconds:.0f}"]
            body.append("<tr style='color:#1a7f37;font-style:italic'>"
                        + "".join(f"<td>{html.escape(c)}</td>" for c in texts) + "</tr>")
        for row in shown:
            cells = self._row_html.get((row.number, layout))
            if cells is None:
                texts = [str(row.number), row.state]
                texts += [_fmt(v) for v in (row.values or (None,) * len(score_names))]
                texts += [_fmt(row.params.get(n)) for n in names]
                texts.append(_fmt(row.seconds))
                cells = self._row_html[(row.number, layout)] = "".join(f"<td>{html.escape(c)}</td>" for c in texts)
            style = " style='background:#ddf4ff;font-weight:600'" if row.number == best_number else ""
            if row.state == "fail":
                style = " style='color:#cf222e'"
            elif row.state == "pruned":
                last = f" at step {row.intermediate[-1][0]} (last reported {_fmt(row.intermediate[-1][1])})" \
                    if row.intermediate else ""
                style = (f" class='hpt-pruned' style='color:{_PRUNED_COLOUR};font-style:italic'"
                         f" title='{html.escape('pruned' + last)}'")
            body.append(f"<tr{style}>{cells}</tr>")
        note = f"showing {len(shown)} of {total} trials" if total > len(shown) else f"{total} trials"
        self.table.value = (f"<div style='max-height:320px;overflow:auto'><table class='hpt-trials'>"
                            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
                            f"<small>{html.escape(note)}</small>")

    def _show_traceback(self, change: dict) -> None:  # main thread: this widget's only writer
        number = change["new"]
        if number is None:  # the writer refreshed the options: not a choice of the user's
            return
        text = self.run.failure(number)
        self.traceback.value = f"<pre style='color:#cf222e;white-space:pre-wrap'>{html.escape(text)}</pre>"
