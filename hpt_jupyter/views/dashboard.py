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
import numpy as np

from .digest import Digest, Row, TableOrder
from .readable import (ColumnFormat, duration, linear_ticks, log_ticks, number, ranks, robust_range,
                       tick_labels)
from ..core.auto import AutoSampler
from ..core.run import FINAL_STATES, PAUSED, Event, Run
from ..core.space import ChoiceParam
from .steer_panel import SteerPanel

_PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#57606a"]
_PRUNED_COLOUR = "#8c959f"
_INFEASIBLE_COLOUR = "#d1242f"  # broke a tune.constraint

# The trial table's look: a header that stays in view, numbers right-aligned in even columns.
_TABLE_STYLE = (
    "<style>.hpt-grid{border-collapse:separate;border-spacing:0;font-variant-numeric:tabular-nums;"
    "line-height:1.35}.hpt-grid th{position:sticky;top:0;z-index:1;background:var(--jp-layout-color1,#fff);"
    "border-bottom:1px solid var(--jp-border-color2,#d0d7de);padding:3px 8px;white-space:nowrap;text-align:left}"
    ".hpt-grid td{padding:2px 8px;white-space:nowrap}.hpt-grid .n{text-align:right}</style>")

_STATE_COLOURS = {"running": "#1a7f37", "paused": "#9a6700", "stopping": "#9a6700", "stopped": "#57606a",
                  "finished": "#0969da", "failed": "#cf222e", "ready": "#57606a"}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return number(value)
    return str(value)


def _legend(entries: list[tuple[str, str, str]]) -> str:
    """A legend above a chart, never over its marks: (colour, "solid" or "dashed", label) each."""
    items = []
    for colour, style, label in entries:
        dash = " stroke-dasharray='5 3'" if style == "dashed" else ""
        items.append(f"<span style='margin-right:16px;white-space:nowrap'><svg width='28' height='10'>"
                     f"<line x1='1' y1='5' x2='27' y2='5' stroke='{colour}' stroke-width='2.5'{dash}/></svg> "
                     f"{html.escape(label)}</span>")
    return f"<div class='hpt-legend' style='font-size:12px;line-height:20px'>{''.join(items)}</div>"


_VIRIDIS = "#440154,#3b528b,#21918c,#5ec962,#fde725"


def _colour_bar(what: str, worst: str, median: str, best: str) -> str:
    """A colour legend above a chart: viridis from the worst rank to the best, with the scores
    at both ends and the median."""
    bar = (f"<span style='display:inline-block;width:180px;height:10px;vertical-align:middle;margin:0 6px;"
           f"background:linear-gradient(to right,{_VIRIDIS})'></span>")
    return (f"<div class='hpt-legend' style='font-size:12px;line-height:20px'>{html.escape(what)}: "
            f"worst {html.escape(worst)}{bar}best {html.escape(best)} (median {html.escape(median)})</div>")


def _figure(marks: list, axes: list, title: str, *, height: int = 300, left: int = 72, right: int = 24,
            top: int = 36, bottom: int = 46, **options: Any) -> bqplot.Figure:
    """A figure that fills the width it is given and keeps its marks clear of the edges: no
    point cut in half, room on the left for the tick labels and, beside them, the axis label."""
    return bqplot.Figure(marks=marks, axes=axes, title=title, padding_x=0.03, padding_y=0.06,
                         min_aspect_ratio=0.0, max_aspect_ratio=1000.0,
                         fig_margin={"top": top, "bottom": bottom, "left": left, "right": right},
                         title_style={"font-size": "13px"},
                         layout=widgets.Layout(width="100%", height=f"{height}px", min_width="0"), **options)


def _value_axis(scale: Any, label: str = "value") -> bqplot.Axis:
    """A vertical axis of scores: compact labels, its label clear of them."""
    return bqplot.Axis(scale=scale, label=label, orientation="vertical", tick_format="~g", label_offset="54px")


def _set_ticks(axis: bqplot.Axis, low: float, high: float, kind: str, max_ticks: int = 6,
               figure: bqplot.Figure | None = None) -> None:
    """Ticks chosen here, not by bqplot: ``kind`` "log" (decades or 1-2-5 steps), "int" (whole
    numbers) or "float". With the ``figure`` of a vertical axis, its left margin and the axis
    label move out as far as the longest tick label needs (``0.999995`` is wider than ``0.5``)."""
    if kind == "log":
        ticks = log_ticks(low, high, max_ticks)
        labels = tick_labels(ticks)
        fmt = None
    else:
        ticks = linear_ticks(low, high, max_ticks, integer=kind == "int")
        labels, fmt = None, "d" if kind == "int" else "~g"
    chosen = (tuple(ticks), kind)
    if getattr(axis, "_hpt_ticks", None) == chosen:
        return  # bqplot's array trait would send the same ticks again
    axis._hpt_ticks = chosen
    with axis.hold_sync():
        axis.tick_values = ticks
        axis.tick_labels = labels
        axis.tick_format = fmt
    if figure is not None:
        longest = max((len(labels[k]) for k in labels) if labels else (len(number(t, 6)) for t in ticks), default=3)
        offset = 18 + 7 * longest  # px: about 6.5 px a character of the 10 px tick font, and a gap
        if axis.label_offset != f"{offset}px":
            axis.label_offset = f"{offset}px"
            figure.fig_margin = {**figure.fig_margin, "left": offset + 16}


def _padded(low: float, high: float, log: bool, share: float = 0.04) -> tuple[float, float]:
    """A scale's fixed range around [low, high] with a margin, so edge points are whole."""
    if log and low > 0:
        ratio = (high / low) ** share
        return low / ratio, high * ratio
    pad = (high - low) * share or 0.5
    return low - pad, high + pad


def _column_scaling(values: list, log: bool = False) -> tuple:
    """How a parallel-coordinates axis maps to 0-1: ("number", low, high, log) or ("labels", [...])."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        low, high = min(present), max(present)
        log = log and low > 0
        return ("number", low, high if high > low else (low * 10 if log else low + 1.0), log)
    return ("labels", sorted({str(v) for v in present}))


def _to_unit(scaling: tuple, value: Any) -> float:
    """A value's height on its parallel-coordinates axis (NaN for a knob the trial did not have)."""
    if value is None:
        return float("nan")
    if scaling[0] == "number":
        _, low, high, log = scaling
        if log:
            return (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
        return (value - low) / (high - low)
    labels = scaling[1]
    return labels.index(str(value)) / max(len(labels) - 1, 1)


def _from_unit(scaling: tuple, share: float) -> float:
    """The value at a height of a numeric parallel-coordinates axis."""
    _, low, high, log = scaling
    if log:
        return 10 ** (math.log10(low) + share * (math.log10(high) - math.log10(low)))
    return low + share * (high - low)


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
        self.refresh_cpu_by_page: dict[str, float] = {}  # the slowest pass of each page, CPU time
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
        # The first entry counts failed trials (-1: a Dropdown shows no label for a None value).
        self.failed = widgets.Dropdown(options=[("failed trials: none", -1)], value=-1,
                                       layout=widgets.Layout(width="220px"))
        self.traceback = widgets.HTML()
        self.failed.observe(self._show_traceback, "value")
        self.expand_table = widgets.ToggleButton(value=False, description="expand", icon="expand",
                                                 tooltip="Show every listed row without scrolling the table")
        self.expand_table.observe(lambda _: self._dirty.set(), "value")
        table_tab = widgets.VBox([widgets.HBox([self.sort_by, self.descending, self.failed, self.expand_table]),
                                  self.table, self.traceback], layout=widgets.Layout(width="100%"))

        multi = run.is_multi_objective
        x_scale, y_scale = bqplot.LinearScale(), bqplot.LinearScale()
        self._history_scales = {"linear": y_scale, "log": bqplot.LogScale()}
        # Hover: the trial and its score (x and y: nothing more to send per point); a click
        # pins the trial's row at the top of the table and names its knobs under the chart.
        self.points = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=20,
                                     colors=["#8c959f"],
                                     tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["objective 0", "objective 1"],
                                                            formats=["~g", "~g"]) if multi
                                     else bqplot.Tooltip(fields=["x", "y"], labels=["trial", "value"],
                                                         formats=["d", "~g"]),
                                     interactions={"hover": "tooltip", "click": "select"},
                                     selected_style={"stroke": "#cf222e", "stroke-width": 2},
                                     unselected_style={})
        self.best_line = bqplot.Lines(x=[], y=[], scales={"x": x_scale, "y": y_scale}, colors=["#0969da"],
                                      interpolation="step-after", stroke_width=2)
        self.front = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=32,
                                    colors=["#0969da"])
        self.history_x_axis = bqplot.Axis(scale=x_scale, label="objective 0" if multi else "trial",
                                          tick_format="~g" if multi else "d", num_ticks=8)
        self.history_y_axis = _value_axis(y_scale, "objective 1" if multi else "value")
        # Trials that broke a tune.constraint: a red cross over their grey point (never the best).
        self.infeasible = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, marker="cross",
                                         default_size=28, colors=[_INFEASIBLE_COLOUR])
        self.history = _figure([self.points, self.best_line, self.front, self.infeasible],
                               [self.history_x_axis, self.history_y_axis],
                               "Pareto front" if multi else "optimisation history (grey: trials, blue: best so far)")
        # One outlier must not squash the band that matters: a robust range by default.
        self.value_range = widgets.ToggleButtons(
            options=[("robust range", "robust"), ("all points", "all"), ("log scale", "log")], value="robust",
            tooltips=["The range where most scores lie", "Every score", "Scores on a log scale (positive scores)"],
            style={"button_width": "110px"})
        self.value_range.observe(lambda _: self._redraw_values(), "value")
        self.range_note = widgets.HTML()
        self.selected_note = widgets.HTML()
        self.points.observe(self._on_point_selected, "selected")
        self._selected_trial: int | None = None
        self._labels: dict[int, str] = {}  # trial number -> its hover label
        self._history_numbers: Any = ()  # the x of each history point, as drawn: its trial number
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
        self._brushes: list[tuple[Any, Any]] = []  # (figure, its brush), attached in brush mode
        self.slices = {name: self._slice_figure(name) for name in known}
        self.other_param = widgets.Dropdown(options=[], description="parameter",
                                            layout=widgets.Layout(width="260px"))
        self.other_param.observe(lambda _: self._dirty.set(), "value")
        self.other_slice = self._slice_figure(None)
        # Attached only once there is such a knob: a figure drawn hidden has no width and logs
        # negative-size rectangles.
        self.other_box = widgets.VBox([], layout=widgets.Layout(width="100%"))
        self.slice_grid = widgets.GridBox(
            [s["figure"] for s in self.slices.values()],
            layout=widgets.Layout(width="100%", grid_template_columns="repeat(auto-fill, minmax(360px, 1fr))",
                                  grid_gap="4px 12px"))
        # A brush's overlay takes the pointer from the marks under it: brushing is a mode the
        # user turns on (to narrow from a plot), and off again to hover over trials.
        self.brush_mode = widgets.ToggleButton(
            value=False, description="brush to narrow", icon="crop", layout=widgets.Layout(width="160px"),
            tooltip="On: drag across a plot to propose that range to the Steer panel. Off: hover shows each trial")
        self.brush_mode.observe(self._use_brushes, "value")
        self.slices_note = widgets.HTML()
        slices_tab = widgets.VBox([widgets.HBox([self.value_range, self.brush_mode, self.slices_note]),
                                   self.slice_grid, self.other_box], layout=widgets.Layout(width="100%"))

        self.parallel_scale_x = bqplot.OrdinalScale()
        # Colour by rank (0 worst, 1 best): one outlier does not paint every other line alike.
        self.parallel_colour = bqplot.ColorScale(scheme="viridis", min=0.0, max=1.0)
        self.parallel_legend = widgets.HTML()
        parallel_y = bqplot.LinearScale(min=-0.12, max=1.1)  # room for each axis's end labels
        self.parallel_lines = bqplot.Lines(x=[], y=[], scales={"x": self.parallel_scale_x, "y": parallel_y,
                                                               "color": self.parallel_colour},
                                           opacities=[0.5], stroke_width=1.2, labels=[],
                                           tooltip=bqplot.Tooltip(fields=["name"]))
        # Trials that broke a constraint: grey and dashed under the coloured lines, outside the
        # colour ranking (their scores are not achievable, so they must not set its "best" end).
        self.parallel_broken = bqplot.Lines(x=[], y=[], scales={"x": self.parallel_scale_x, "y": parallel_y},
                                            colors=[_PRUNED_COLOUR], line_style="dashed", opacities=[0.45],
                                            stroke_width=1.0, labels=[], tooltip=bqplot.Tooltip(fields=["name"]))
        # Each axis's own range, written at its ends (categories: at each category's height).
        self.parallel_ends = bqplot.Label(x=[], y=[], text=[], scales={"x": self.parallel_scale_x, "y": parallel_y},
                                          default_size=11, align="middle", colors=["#24292f"],
                                          font_weight="normal")
        self._parallel_scaling: dict[str, tuple] = {}  # axis -> how its values map to 0-1 (writer sets)
        self.parallel_axis = widgets.Dropdown(options=[], description="brush axis",
                                              layout=widgets.Layout(width="260px"))
        self.parallel_brush = bqplot.interacts.BrushIntervalSelector(scale=parallel_y, orientation="vertical",
                                                                     marks=[self.parallel_lines], color="#0969da")
        self.parallel_brush.observe(self._on_parallel_brush, "brushing")
        self.parallel = _figure(
            [self.parallel_broken, self.parallel_lines, self.parallel_ends],
            [bqplot.Axis(scale=self.parallel_scale_x, label="", grid_lines="none")],
            "parallel coordinates (each axis spans its own range)",
            height=340, left=48, right=48, top=44)
        self._brushes.append((self.parallel, self.parallel_brush))

        step_x, step_y = bqplot.LinearScale(), bqplot.LinearScale()
        intermediate_scales = {"x": step_x, "y": step_y}
        self.intermediate_lines = bqplot.Lines(x=[], y=[], scales=intermediate_scales, opacities=[0.55],
                                               stroke_width=1.2, colors=["#0969da"], labels=[],
                                               tooltip=bqplot.Tooltip(fields=["name"]))
        self.pruned_lines = bqplot.Lines(x=[], y=[], scales=intermediate_scales, opacities=[0.7], stroke_width=1,
                                         colors=[_PRUNED_COLOUR], line_style="dashed", labels=[],
                                         tooltip=bqplot.Tooltip(fields=["name"]))
        self.best_curve = bqplot.Lines(x=[], y=[], scales=intermediate_scales, stroke_width=3, colors=["#cf222e"],
                                       labels=[], tooltip=bqplot.Tooltip(fields=["name"]))
        self.intermediate_x_axis = bqplot.Axis(scale=step_x, label="step", tick_format="d")
        self.intermediate_y_axis = _value_axis(step_y, "reported value")
        self.intermediate = _figure(
            [self.pruned_lines, self.intermediate_lines, self.best_curve],
            [self.intermediate_x_axis, self.intermediate_y_axis],
            "intermediate values reported with tune.report (the latest 50 trials)")
        self.intermediate_legend = widgets.HTML()
        # The figure joins the page with the first reported value: a study whose cell never calls
        # tune.report gets a sentence saying how to, not an empty frame.
        self.intermediate_page = widgets.VBox([self.intermediate_legend], layout=widgets.Layout(width="100%"))

        bar_names, bar_values = bqplot.OrdinalScale(reverse=True), bqplot.LinearScale(min=0)
        self.importance_axis = bqplot.Axis(scale=bar_values, tick_format="~g", label="importance")
        self.importance_bars = bqplot.Bars(x=[], y=[], scales={"x": bar_names, "y": bar_values}, colors=["#0969da"],
                                           orientation="horizontal", padding=0.25,
                                           tooltip=bqplot.Tooltip(fields=["x", "y"], labels=["knob", "importance"],
                                                                  formats=["", ".3f"]))
        self.importance = _figure(
            [self.importance_bars],
            [bqplot.Axis(scale=bar_names, orientation="vertical", grid_lines="none"),
             self.importance_axis],
            "parameter importance (Optuna's evaluator; computed when the study ends)", height=200, left=110)
        self.importance_note = widgets.HTML()
        self.importance_page = widgets.VBox([self.importance_note], layout=widgets.Layout(width="100%"))
        self._importance_for: int | None = None  # number of complete trials it was computed for

        full = widgets.Layout(width="100%")
        history_tab = widgets.VBox([widgets.HBox([self.value_range, self.range_note]), self.history,
                                    self.selected_note], layout=full)
        tabs = [("History" if not run.is_multi_objective else "Pareto front", history_tab),
                ("Trials", table_tab), ("Slices", slices_tab),
                ("Parallel", widgets.VBox([widgets.HBox([self.brush_mode, self.parallel_axis, self.parallel_legend]),
                                           self.parallel],
                                          layout=full)),
                ("Intermediate", self.intermediate_page),
                ("Importance", self.importance_page)]
        if run.scheduler.population_based:  # population-based training: who cloned whom, and the schedule
            tabs[5:5] = self._population_pages(run.scheduler.settings.population)
        # Only the chosen page is attached: a bqplot figure hidden in a Tab has no width and
        # draws negative-size rectangles (console errors in Chromium).
        self.pages = dict(tabs)
        for title, box in tabs:  # which page is attached, for the frontend's styles and tests
            box.add_class("hpt-page-" + title.lower().replace(" ", "-"))
        self.page_picker = widgets.ToggleButtons(options=list(self.pages), value=tabs[0][0],
                                                 style={"button_width": "auto"})
        self.page = widgets.VBox([tabs[0][1]], layout=widgets.Layout(width="100%"))
        self.page.add_class("hpt-page")
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
        self._steerable = True
        if run.scheduler.population_based:  # PBT explores by itself: nothing to steer
            self.steer_toggle.layout.display = "none"
        body = widgets.HBox([widgets.VBox([self.page_picker, self.page], layout=widgets.Layout(flex="1 1 0%",
                                                                                                 min_width="0")),
                             self.steer.widget], layout=widgets.Layout(width="100%"))
        self.widget = widgets.VBox([self.header, controls, body, self.errors])
        self.widget.add_class("hpt-dashboard")
        self.page_picker.add_class("hpt-pages")
        self._running: list = []  # the run's running trials, as of the latest refresh
        self._samplers_used: dict[str, int] = {}  # under auto, once the study has ended
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
        # Colour by rank among the segments shown (0 worst, 1 best), so that one outlier does
        # not paint every other segment the same; the bar names the scores at its ticks.
        self.lineage_colour = bqplot.ColorScale(scheme="viridis", min=0.0, max=1.0)
        scales = {"x": step_x, "y": member_y}
        # One line per segment, at its member's height from its first to its last step; one
        # dashed link per exploit, from the donor's line to the member that cloned its checkpoint.
        self.lineage_links = bqplot.Lines(x=[], y=[], scales=scales, colors=["#cf222e"], line_style="dashed",
                                          stroke_width=1.5, opacities=[0.9], labels=[],
                                          tooltip=bqplot.Tooltip(fields=["name"]))
        self.lineage_lines = bqplot.Lines(x=[], y=[], scales={**scales, "color": self.lineage_colour},
                                          stroke_width=7, labels=[], tooltip=bqplot.Tooltip(fields=["name"]))
        height = min(max(90 + 40 * population, 240), 520)
        self.lineage_x_axis = bqplot.Axis(scale=step_x, label="step", tick_format="d")
        member_ticks = linear_ticks(0, population - 1, 12, integer=True)
        self.lineage = _figure(
            [self.lineage_links, self.lineage_lines],
            [self.lineage_x_axis,
             bqplot.Axis(scale=member_y, label="member", orientation="vertical", tick_format="d",
                         tick_values=member_ticks, label_offset="36px", grid_lines="none")],
            "lineage: each member's segments", height=height, left=56, right=24)
        self.lineage_legend = widgets.HTML()
        self.lineage_note = widgets.HTML()

        schedule_x, schedule_y = bqplot.LinearScale(), bqplot.LinearScale(min=0, max=1)
        self.schedule_lines = bqplot.Lines(x=[], y=[], scales={"x": schedule_x, "y": schedule_y},
                                           interpolation="step-after", stroke_width=2, colors=_PALETTE, labels=[],
                                           tooltip=bqplot.Tooltip(fields=["name"]))
        self.schedule_x_axis = bqplot.Axis(scale=schedule_x, label="step", tick_format="d")
        self.schedule = _figure(
            [self.schedule_lines],
            [self.schedule_x_axis,
             bqplot.Axis(scale=schedule_y, label="within its range", orientation="vertical", tick_format="~g",
                         tick_values=[0.0, 0.25, 0.5, 0.75, 1.0], label_offset="46px")],
            "the best member's hyperparameters over steps (each scaled to its range)", left=64)
        self.schedule_legend = widgets.HTML()
        self.schedule_table = widgets.HTML()
        full = widgets.Layout(width="100%")
        return [("Lineage", widgets.VBox([self.lineage_legend, self.lineage, self.lineage_note], layout=full)),
                ("Schedule", widgets.VBox([self.schedule_legend, self.schedule, self.schedule_table], layout=full))]

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
            elif not ended:  # it ended during this pass (after its last event): one more, full
                self._dirty.set()

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
                        running_key, self._selected_trial, self.expand_table.value),
                       self._take_table, self._draw_table),
            "Slices": ((digest.version, self.other_param.value), self._take_slices, self._draw_slices),
            "Parallel": (digest.version, digest.parallel_rows, self._draw_parallel),
            "Intermediate": (digest.version, lambda: list(digest.reporters), self._draw_intermediate),
        }
        scheduler = self.run.scheduler
        if scheduler.population_based:  # these copy from the run (under its scheduler's lock), not the digest
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
        self.stop_button.button_style = "" if final else "danger"  # red only while it can act
        self.pause_button.disabled = final
        # Narrowing acts on trials still to come: not on an ended study, nor under PBT.
        steerable = not self.run.scheduler.population_based and not final
        if steerable != self._steerable:
            self._steerable = steerable
            self.steer_toggle.disabled = not steerable
            self.steer_toggle.tooltip = ("Show or hide the steering panel" if steerable else
                                         "Steering narrows the trials still to come: add trials to steer again"
                                         if not self.run.scheduler.population_based else "PBT explores by itself: no steering")
            self.steer.widget.layout.display = "flex" if steerable and self.steer_toggle.value else "none"
            self.brush_mode.disabled = not steerable
            if not steerable:
                self.brush_mode.value = False
        self._label_sort_order()
        self._note_importance(complete)
        if len(failed) + 1 != len(self.failed.options):
            self.failed.options = [(f"failed trials: {len(failed) or 'none'}", -1)] + [
                (f"traceback of #{n}", n) for n in failed]
        if due:
            draw(taken)
            self._drawn[page] = depends_on
        self.steer.sync()
        self.refresh_seconds_max = max(self.refresh_seconds_max, time.perf_counter() - start)
        cpu = time.thread_time() - cpu_start
        self.refresh_cpu_seconds_max = max(self.refresh_cpu_seconds_max, cpu)
        self.refresh_cpu_by_page[page] = max(self.refresh_cpu_by_page.get(page, 0.0), cpu)

    def publish_final_state(self) -> None:
        """Refresh, then send every drawn widget's whole state once more (main thread, between
        cells): batch runners record only the messages under the cell being executed, and the
        writer's last updates may have gone out under a cell that had already finished."""
        self.refresh(full=True)
        with self._refreshing:
            figures = [self.history, self.parallel, self.intermediate, self.importance, self.other_slice["figure"],
                       *(s["figure"] for s in self.slices.values())]
            shown = [self.header, self.table, self.importance_note, self.pause_button, self.stop_button,
                     self.steer_toggle, self.steer.widget.layout, self.range_note, self.importance.layout]
            if self.run.scheduler.population_based:
                figures += [self.lineage, self.schedule]
                shown += [self.lineage_note, self.schedule_table, self.schedule_legend]
            for figure in figures:
                scales = {scale for mark in figure.marks for scale in mark.scales.values()}
                shown += [figure, *figure.marks, *figure.axes, *scales]
            for widget in shown:
                widget.send_state()

    # --- small multiples and friends ----------------------------------------------------

    def _slice_figure(self, name: str | None) -> dict:
        """One slice plot (score against a knob's value); made on the main thread."""
        param = self.run.space.get(name) if name else None
        if param is None and name and self.run.cell is not None:
            declared = {d.name: d.param for d in self.run.cell.declarations}
            param = declared.get(name)
        kind = type(param).__name__ if param is not None else None
        log = bool(getattr(param, "log", False))
        y_scale = bqplot.LinearScale()
        x_axis = bqplot.Axis(label=name or "", scale=bqplot.LinearScale())
        if kind == "ChoiceParam":
            x_scale = bqplot.OrdinalScale()
        elif param is not None and kind in ("FloatParam", "IntParam"):
            # The declared range, fixed: a narrowing shows as empty space at the sides.
            low, high = _padded(param.low, param.high, log)
            x_scale = bqplot.LogScale(min=low, max=high) if log else bqplot.LinearScale(min=low, max=high)
            x_axis.scale = x_scale
            _set_ticks(x_axis, param.low, param.high, "log" if log else "int" if kind == "IntParam" else "float", 5)
        else:
            x_scale = bqplot.LinearScale()
            x_axis.tick_format, x_axis.num_ticks = "~g", 5
        x_axis.scale = x_scale
        points = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, default_size=18, colors=["#0969da"],
                                default_opacities=[0.6], names=[], display_names=False,
                                tooltip=bqplot.Tooltip(fields=["name", "x", "y"], labels=["trial", name or "value", "score"],
                                                       formats=["d", "" if kind == "ChoiceParam" else "~g", "~g"]))
        # a red cross over each trial that broke a tune.constraint, as on the history
        crosses = bqplot.Scatter(x=[], y=[], scales={"x": x_scale, "y": y_scale}, marker="cross", default_size=22,
                                 colors=[_INFEASIBLE_COLOUR])
        y_axis = _value_axis(y_scale)
        figure = _figure([points, crosses], [x_axis, y_axis], name or "", height=240, top=30, left=72, right=16)
        if name and kind in ("FloatParam", "IntParam"):
            # Brushing a range of this knob proposes it to the steering panel.
            brush = bqplot.interacts.BrushIntervalSelector(scale=x_scale, marks=[points], color="#0969da")
            brush.observe(lambda change, name=name: self._on_slice_brush(name, change), "brushing")
            self._brushes.append((figure, brush))
        return {"figure": figure, "points": points, "crosses": crosses, "categorical": kind == "ChoiceParam",
                "y_scale": y_scale, "y_axis": y_axis}

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
            self.steer.propose("brush", {axis: self._clip_to_declared(axis, _from_unit(scaling, low),
                                                                      _from_unit(scaling, high))})
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

    def _take_slices(self) -> tuple[dict, list[str], set[int] | None]:
        digest = self.digest
        numbers = digest.slice_numbers
        infeasible = {row.number for row in digest.kept.items() if not row.feasible} if digest.constrained else None
        return ({name: (list(xs), list(ys), list(numbers.get(name, ()))) for name, (xs, ys)
                 in digest.slices.items()}, list(digest.param_names), infeasible)

    def _draw_slices(self, taken: tuple[dict, list[str], set[int] | None]) -> None:
        if self.run.is_multi_objective:
            return
        slices, names, infeasible = taken
        scores = np.asarray(next(iter(slices.values()))[1] if slices else [], dtype=float)  # every knob: same rows
        y_range = self._value_range(scores)
        hidden = 0 if y_range is None else int(np.count_nonzero((scores < y_range[0]) | (scores > y_range[1])))
        self.slices_note.value = (f"<small style='color:#57606a;line-height:32px'>{hidden} trial"
                                  f"{'s' if hidden != 1 else ''} outside this range</small>" if hidden else "")
        for name, plot in self.slices.items():
            xs, ys, numbers = slices.get(name, ([], [], []))
            with plot["points"].hold_sync():
                plot["points"].x, plot["points"].y = xs, ys
                plot["points"].names = np.asarray(numbers, dtype=np.int32)  # binary: cheap to send
            if infeasible is not None:
                broke = [i for i, n in enumerate(numbers) if n in infeasible]
                with plot["crosses"].hold_sync():
                    plot["crosses"].x, plot["crosses"].y = [xs[i] for i in broke], [ys[i] for i in broke]
            self._apply_range(plot["y_scale"], y_range)
            if ys:
                _set_ticks(plot["y_axis"], *(y_range or (min(ys), max(ys))), "float", 5, plot["figure"])
        others = sorted(set(names) - set(self.slices))
        if others:
            if list(self.other_param.options) != others:
                self.other_param.options = others
            if not self.other_box.children:
                self.other_box.children = [self.other_param, self.other_slice["figure"]]
            name = self.other_param.value or others[0]
            xs, ys, numbers = slices.get(name, ([], [], []))
            title = name
            if any(isinstance(x, str) for x in xs):  # categories on this linear axis: codes
                labels = sorted({str(x) for x in xs})
                xs = [float(labels.index(str(x))) for x in xs]
                title = f"{name}: " + ", ".join(f"{i}={label}" for i, label in enumerate(labels))
            with self.other_slice["points"].hold_sync():
                self.other_slice["points"].x, self.other_slice["points"].y = xs, ys
                self.other_slice["points"].names = np.asarray(numbers, dtype=np.int32)
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
        declared = self.run.declared_space()
        scalings = {name: _column_scaling(columns[name], getattr(declared.get(name), "log", False))
                    for name in axes}
        self._parallel_scaling = {name: scalings[name] for name in names}
        if list(self.parallel_axis.options) != names:
            self.parallel_axis.options = names
        lines = [[_to_unit(scalings[name], row.params.get(name) if name != "value" else row.values[0])
                  for name in axes] for row in chosen]
        ends_x, ends_y, ends_text = [], [], []
        for name in axes:
            scaling = scalings[name]
            if scaling[0] == "number":
                points = [(-0.07, scaling[1]), (1.05, scaling[2])]
                points = [(y, number(v, 3) if isinstance(v, float) else str(v)) for y, v in points]
            else:
                labels = scaling[1]
                points = [(i / max(len(labels) - 1, 1), label[:14]) for i, label in enumerate(labels)]
            for y, text in points:
                ends_x.append(name)
                ends_y.append(y)
                ends_text.append(text)
        kept = [i for i, row in enumerate(chosen) if row.feasible]
        broken = [i for i, row in enumerate(chosen) if not row.feasible]
        kept_values = [columns["value"][i] for i in kept]
        with self.parallel_lines.hold_sync():
            self.parallel_lines.x = axes if kept else []
            self.parallel_lines.y = [lines[i] for i in kept]
            self.parallel_lines.color = ranks(kept_values, self.run.directions[0] == "maximize")
            self.parallel_lines.labels = [self._label(chosen[i].number) for i in kept]
        with self.parallel_broken.hold_sync():
            self.parallel_broken.x = axes if broken else []
            self.parallel_broken.y = [lines[i] for i in broken]
            self.parallel_broken.labels = [self._label(chosen[i].number) + " · broke a constraint" for i in broken]
        legend = ""
        if kept_values:
            ordered = sorted(kept_values, reverse=self.run.directions[0] != "maximize")  # worst first
            legend = _colour_bar("colour: value", _fmt(ordered[0]), _fmt(ordered[len(ordered) // 2]), _fmt(ordered[-1]))
        if broken:
            legend += _legend([(_PRUNED_COLOUR, "dashed", f"broke a constraint ({len(broken)} shown)"
                                if kept_values else "broke a constraint: no feasible trial yet")])
        self.parallel_legend.value = legend
        with self.parallel_ends.hold_sync():
            self.parallel_ends.x, self.parallel_ends.y, self.parallel_ends.text = ends_x, ends_y, ends_text

    def _draw_intermediate(self, reported: list[Row]) -> None:
        """Curves of the latest trials that reported: complete ones solid, pruned ones dashed
        grey, the best trial's thick red."""
        if not reported:
            self.intermediate_legend.value = (
                "No trial has reported an intermediate value. Call <code>tune.report(value, step)</code> "
                "in the cell, say once an epoch, to draw learning curves here (and to let a pruner stop "
                "poor trials early).")
            return
        if len(self.intermediate_page.children) == 1:
            self.intermediate_page.children = [self.intermediate_legend, self.intermediate]
        # Each curve its own steps, padded to a common length by repeating its last point: a
        # curve that ends early (pruned, a PBT segment) must not end in NaN, which bqplot turns
        # into a console error.
        length = max(len(r.intermediate) for r in reported)
        best = self.run.best_trial
        best_number = best.number if best is not None else None
        groups: dict[str, tuple[list, list, list]] = {"complete": ([], [], []), "pruned": ([], [], []),
                                                      "best": ([], [], [])}
        for row in reported:
            points = list(row.intermediate) + [row.intermediate[-1]] * (length - len(row.intermediate))
            kind = "best" if row.number == best_number else "pruned" if row.state == "pruned" else "complete"
            last = row.intermediate[-1]
            what = f"pruned at step {last[0]}" if row.state == "pruned" else row.state
            xs, ys, labels = groups[kind]
            xs.append([float(step) for step, _ in points])
            ys.append([float(value) for _, value in points])
            labels.append(f"#{row.number} ({what}) last {_fmt(last[1])} · " + self._params_text(row))
        for mark, kind in ((self.intermediate_lines, "complete"), (self.pruned_lines, "pruned"),
                           (self.best_curve, "best")):
            xs, ys, labels = groups[kind]
            with mark.hold_sync():
                mark.x, mark.y, mark.labels = xs, ys, labels
        entries = {"complete": ("#0969da", "solid", "complete"), "pruned": (_PRUNED_COLOUR, "dashed", "pruned"),
                   "best": ("#cf222e", "solid", "the best trial")}
        self.intermediate_legend.value = _legend([entry for kind, entry in entries.items() if groups[kind][0]])
        steps = [step for r in reported for step, _ in r.intermediate]
        values = [value for r in reported for _, value in r.intermediate if math.isfinite(value)]
        _set_ticks(self.intermediate_x_axis, min(steps), max(steps), "int", 10)
        if values:
            _set_ticks(self.intermediate_y_axis, min(values), max(values), "float", 6, self.intermediate)

    def _draw_lineage(self, segments: list) -> None:
        """The latest ``max_segments`` segments as lines, the exploits among them as dashed links."""
        if not segments:
            return
        ends = {s.number: s.end for s in segments}  # a donor's segment, to start its link where it ended
        shown = segments[-self.max_segments:]
        maximize = self.run.directions[0] == "maximize"
        scored = [s.value for s in shown if s.value is not None]
        rank_of = iter(ranks(scored, higher_is_better=maximize))
        xs, ys, colours, labels = [], [], [], []
        link_x, link_y, link_labels = [], [], []
        for s in shown:
            widen = 0.3 if s.end == s.start else 0.0  # a one-step segment is drawn, not a point
            xs.append([float(s.start) - widen, float(s.end) + widen])
            ys.append([float(s.member), float(s.member)])
            colours.append(next(rank_of) if s.value is not None else 0.0)  # failed, pruned: worst
            labels.append(f"#{s.number} member {s.member} steps {s.start}-{s.end} "
                          + (f"score {_fmt(s.value)}" if s.value is not None else s.state)
                          + (f" cloned member {s.parent}" if s.exploited else ""))
            if s.exploited and s.parent is not None:
                link_x.append([float(ends.get(s.from_trial, s.start)), float(s.start)])
                link_y.append([float(s.parent), float(s.member)])
                link_labels.append(f"#{s.number}: member {s.member} cloned member {s.parent} at step {s.start}")
        ordered = sorted(scored, reverse=not maximize)  # worst first
        bar = _colour_bar("a segment's colour: its score", _fmt(ordered[0]), _fmt(ordered[len(ordered) // 2]),
                          _fmt(ordered[-1])) if ordered else ""
        self.lineage_legend.value = bar + _legend([("#cf222e", "dashed", "a member clones another's checkpoint")])
        _set_ticks(self.lineage_x_axis, min(x[0] for x in xs), max(x[1] for x in xs), "int", 10)
        with self.lineage_lines.hold_sync():
            self.lineage_lines.x, self.lineage_lines.y = xs, ys
            self.lineage_lines.color = colours
            self.lineage_lines.labels = labels
        with self.lineage_links.hold_sync():
            self.lineage_links.x, self.lineage_links.y = link_x, link_y
            self.lineage_links.labels = link_labels
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
        _set_ticks(self.schedule_x_axis, xs[0], xs[-1], "int", 10)
        self.schedule_legend.value = _legend([(_PALETTE[i % len(_PALETTE)], "solid", label)
                                              for i, label in enumerate(labels)])
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
        self.schedule_table.value = (f"{_TABLE_STYLE}<div style='max-height:240px;overflow:auto'>"
                                     f"<table class='hpt-schedule hpt-grid'>"
                                     f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
                                     f"<small>{html.escape(note)}</small>")

    def _note_importance(self, complete: int) -> None:
        if self.run.is_multi_objective:
            self.importance_note.value = "Importance is shown for single-objective studies."
        elif complete < 10:
            ended = self.run.state in FINAL_STATES and not self.run.is_alive
            self.importance_note.value = (f"Importance needs at least 10 complete trials; this study has {complete}."
                                          if ended else f"Needs at least 10 complete trials ({complete} so far).")
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
        names = list(importances)
        with self._refreshing:
            with self.importance_bars.hold_sync():
                self.importance_bars.x = names
                self.importance_bars.y = [float(v) for v in importances.values()]
            # room for the longest knob name on the left, a bar's height for each knob
            self.importance.fig_margin = {**self.importance.fig_margin,
                                          "left": min(24 + 7 * max((len(n) for n in names), default=4), 260)}
            self.importance.layout.height = f"{max(90 + 30 * len(names), 180)}px"
            _set_ticks(self.importance_axis, 0.0, max(importances.values(), default=1.0), "float", 6)
            self.importance_note.value = f"From {complete} complete trials."
            if len(self.importance_page.children) == 1:  # shown once it has bars: an empty frame says nothing
                self.importance_page.children = [self.importance_note, self.importance]

    def _use_brushes(self, change: dict) -> None:
        for figure, brush in self._brushes:
            figure.interaction = brush if change["new"] else None

    def _show_steer(self, change: dict) -> None:  # main thread
        self.steer.widget.layout.display = "flex" if change["new"] and self._steerable else "none"

    def _show_page(self, change: dict) -> None:  # main thread: the page box's only writer
        self.page.children = [self.pages[change["new"]]]
        self._dirty.set()  # the writer brings the page just opened up to date

    def _label_sort_order(self) -> None:
        descending = self.descending.value
        self.descending.description = "descending" if descending else "ascending"
        self.descending.icon = "sort-amount-desc" if descending else "sort-amount-asc"

    def _header_html(self, front_size: int = 0) -> str:
        """Two lines: what a glance needs (state, progress, best, time), then the details."""
        run = self.run
        colour = _STATE_COLOURS.get(run.state, "#57606a")
        ended = run.state in FINAL_STATES and not run.is_alive
        best = run.best_trial
        if best is None and run.n_complete and run.n_infeasible >= run.n_complete:
            best_text = f"<span style='color:{_INFEASIBLE_COLOUR}'>no feasible trial yet</span>"
        elif best is None:
            best_text = "no complete trial yet"
        elif run.is_multi_objective:
            best_text = f"{front_size} trials on the Pareto front"
        else:
            best_text = f"best <b>{html.escape(number(best.value, 6))}</b> (trial #{best.number})"
        budget = f"/{run.budget}" if run.budget is not None else ""
        counts = [f"{len(self._running)} running"] if self._running else []
        if run.n_pruned:
            counts.append(f"<span style='color:{_PRUNED_COLOUR}'>{run.n_pruned} pruned</span>")
        if run.n_failed:
            counts.append(f"<span style='color:#cf222e'>{run.n_failed} failed</span>")
        if run.n_infeasible:
            counts.append(f"<span style='color:{_INFEASIBLE_COLOUR}'>{run.n_infeasible} infeasible</span>")
        eta = run.eta()
        if ended:
            timing = duration(run.elapsed)
        else:  # whole seconds while running: the header then changes (and is sent) once a second
            timing = duration(float(int(run.elapsed))) + (f" · ETA {duration(float(int(eta)))}" if eta else "")
        shown_reason = ended and run.reason and run.reason != run.state  # not "stopped: stopped"
        state = html.escape(run.state) + (f": {html.escape(run.reason)}" if shown_reason else "")
        first = [f"<b>{html.escape(run.name)}</b>", f"<span style='color:{colour}'>&#9679; {state}</span>",
                 f"{run.n_finished}{budget} trials" + (f" ({', '.join(counts)})" if counts else ""),
                 best_text, timing]
        problem = run.storage_problem
        if problem and not ended:  # the run waits for its store: say so where the eye is
            first.insert(2, f"<span class='hpt-storage-problem' style='color:#9a6700'>&#9888; "
                            f"{html.escape(problem)}</span>")
        tracking = run.tracker.problem if run.tracker is not None else None
        if tracking:  # logging waits for its server; the study goes on regardless
            first.append(f"<span class='hpt-tracking-problem' style='color:#9a6700'>&#9888; "
                         f"{html.escape(tracking)}</span>")
        if not ended:
            self._samplers_used = {}
        if ended and isinstance(run.study.sampler, AutoSampler) and not run.waiting_for_store:
            used = self._samplers_used or run.samplers_used()  # reads every trial: once, at the end
            self._samplers_used = used
            sampler = "auto chose " + ", ".join(f"{name} for {n}" for name, n in used.items())
        else:  # while running, what samples the next trial and why
            sampler = run.sampler_text()
        per_trial = run.sampler_seconds / run.n_run * 1000 if run.n_run else 0.0
        where = run.slots_text().lstrip(" ·") or "one trial at a time in the kernel"
        details = [sampler, "/".join(run.directions), run.scheduler_text().lstrip(" ·"), where,
                   run.opened, f"logging to {run.tracker.describe()}" if run.tracker is not None else "",
                   f"sampler {per_trial:.1f} ms/trial"]
        return ("<div class='hpt-header' style='font-family:var(--jp-ui-font-family, sans-serif);line-height:1.5'>"
                "<div class='hpt-header-main' style='font-size:14px'>" + " · ".join(first) + "</div>"
                "<div class='hpt-header-details' style='color:#57606a;font-size:12px'>"
                + html.escape(" · ".join(d for d in details if d)) + "</div></div>")

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
        infeasible = digest.infeasible.xy() if digest.constrained else None
        return digest.history_xy(), marked, infeasible

    def _draw_history(self, taken: tuple) -> None:
        (xs, ys), (marked_x, marked_y), infeasible = taken
        multi = self.run.is_multi_objective
        with self.points.hold_sync():
            self.points.x, self.points.y = xs, ys
        if infeasible is not None:
            with self.infeasible.hold_sync():
                self.infeasible.x, self.infeasible.y = infeasible
            title = "Pareto front of the feasible trials" if multi else \
                "optimisation history (grey: trials, blue: best feasible so far, red ×: broke a constraint)"
            if self.history.title != title:
                self.history.title = title
        self._history_numbers = () if multi else xs  # read on a click, not converted every refresh
        line = self.front if multi else self.best_line
        with line.hold_sync():
            line.x, line.y = marked_x, marked_y
        if not multi and len(xs):
            # Trial numbers on a domain of our own: bqplot's from one point (the first trial) is
            # empty, and ticks at 0 and 1 then land on the same spot.
            low, high = float(np.min(xs)), max(float(np.max(xs)), max(marked_x, default=0.0))
            scale = self.history_x_axis.scale
            if high - low < 1:
                self._apply_range(scale, (low - 1, low + 1))
            elif scale.min is not None:  # two trials on: bqplot's own domain, and no message a refresh
                self._apply_range(scale, None)
            _set_ticks(self.history_x_axis, low, max(high, low + 1), "int", 10)
            self._apply_history_range(np.asarray(ys, dtype=float), [float(y) for y in marked_y])

    def _redraw_values(self) -> None:  # main thread: the range toggle changed
        self._drawn.pop("History", None)
        self._drawn.pop("Slices", None)
        self._dirty.set()

    def _value_range(self, values: list[float], keep: Any = ()) -> tuple[float, float] | None:
        """The y range the robust mode shows (None: every point)."""
        return robust_range(values, keep) if self.value_range.value == "robust" else None

    @staticmethod
    def _apply_range(scale: Any, y_range: tuple[float, float] | None) -> None:
        if y_range is not None and scale.min is not None and scale.max is not None:
            span = y_range[1] - y_range[0]
            if abs(scale.min - y_range[0]) < 0.02 * span and abs(scale.max - y_range[1]) < 0.02 * span:
                return  # a move no reader would see is not worth a message every refresh
        with scale.hold_sync():
            scale.min, scale.max = (y_range if y_range is not None else (None, None))

    def _apply_history_range(self, ys: np.ndarray, best: list[float]) -> None:
        mode = self.value_range.value
        ys = ys[np.isfinite(ys)]
        positive = bool(ys.size) and float(ys.min()) > 0
        log = mode == "log" and positive
        scale = self._history_scales["log" if log else "linear"]
        if self.history_y_axis.scale is not scale:  # swap the scale under the axis and the marks
            for mark in (self.points, self.best_line, self.front):
                mark.scales = {**mark.scales, "y": scale}
            self.history_y_axis.scale = scale
        if log:
            _set_ticks(self.history_y_axis, float(ys.min()), float(ys.max()), "log", 6, self.history)
            self.range_note.value = ""
            return
        y_range = self._value_range(ys, best)
        self._apply_range(scale, y_range)
        if ys.size:
            _set_ticks(self.history_y_axis, *(y_range or (float(ys.min()), float(ys.max()))), "float", 6,
                       self.history)
        hidden = 0 if y_range is None else int(np.count_nonzero((ys < y_range[0]) | (ys > y_range[1])))
        note = f"{hidden} trial{'s' if hidden != 1 else ''} outside this range" if hidden else ""
        if mode == "log" and not positive:
            note = "a log scale needs positive scores"
        self.range_note.value = f"<small style='color:#57606a;line-height:32px'>{html.escape(note)}</small>"

    def _params_text(self, row: Row) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())

    def _label(self, trial_number: int) -> str:
        """A trial's hover label: number, score, knobs (cached: a trial never changes)."""
        text = self._labels.get(trial_number)
        if text is None:
            row = self.digest.by_number.get(trial_number)
            if row is None:
                return f"#{trial_number}"
            score = "/".join(_fmt(v) for v in row.values) if row.values else row.state
            member = f" · member {row.member}" if row.member is not None else ""
            text = f"#{trial_number} · {score}{member} · {self._params_text(row)}"
            if len(self._labels) > 20_000:
                self._labels.clear()
            self._labels[trial_number] = text
        return text

    def _on_point_selected(self, change: dict) -> None:  # main thread: a click on a history point
        selected = change["new"]
        if selected is None or len(selected) == 0:
            self._selected_trial = None
            self.selected_note.value = ""
        else:
            index = int(selected[0])
            if index >= len(self._history_numbers):
                return
            self._selected_trial = int(self._history_numbers[index])
            self.selected_note.value = (f"<small>Trial #{self._selected_trial} selected: its row is first in the "
                                        f"Trials table. {html.escape(self._label(self._selected_trial))}</small>")
        self._drawn.pop("Trials", None)
        self._dirty.set()

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
        selected = self.digest.by_number.get(self._selected_trial) if self._selected_trial is not None else None
        if selected is not None:  # a clicked point's trial comes first
            shown = [selected, *(r for r in shown if r.number != selected.number)]
        score_names = ["value"] if not run.is_multi_objective else [f"value {i}" for i in range(len(run.directions))]
        member = run.scheduler.population_based
        best = run.best_trial
        best_number = best.number if best is not None else None
        # One format per column, so that a column's numbers line up and read alike.
        formats = [ColumnFormat([(r.values or (None,) * len(score_names))[i] for r in shown])
                   for i in range(len(score_names))]
        formats += [ColumnFormat([r.params.get(n) for r in shown] + [t.params.get(n) for t in self._running])
                    for n in names]
        # Where each trial ran, when the run hands out GPUs or cores (or its stored trials did).
        device = run.executor.resources.assigns or any(r.placement for r in shown)
        headers = ["#", "state", *(["member"] if member else []), *(["device"] if device else []), *score_names,
                   *names, "duration"]
        numeric = [True, False, *([True] if member else []), *([False] if device else []),
                   *[True] * len(score_names),
                   *[any(isinstance(r.params.get(n), (int, float)) and not isinstance(r.params.get(n), bool)
                         for r in shown) for n in names], True]
        head = "".join(f"<th{' class=n' if num else ''}>{html.escape(h)}</th>" for h, num in zip(headers, numeric))
        aligns = ["right" if num else "left" for num in numeric]
        layout = (tuple(names), member, device, tuple(f.key for f in formats))
        if len(self._row_html) > 4 * self.max_rows:
            self._row_html.clear()

        def cells(texts: list[str]) -> str:
            return "".join(f"<td{' class=n' if align == 'right' else ''}>{html.escape(text)}</td>"
                           for text, align in zip(texts, aligns))

        body = []
        for trial in self._running:  # running trials first, as Optuna's dashboard does
            texts = [str(trial.number), "running", *([""] if member else []), *([trial.placement] if device else []),
                     *[""] * len(score_names),
                     *[f(trial.params.get(n)) for f, n in zip(formats[len(score_names):], names)],
                     f"{int(trial.seconds)} s" if trial.seconds < 60 else duration(trial.seconds)]
            body.append(f"<tr style='color:#1a7f37;font-style:italic'>{cells(texts)}</tr>")
        for row in shown:
            row_cells = self._row_html.get((row.number, layout))
            if row_cells is None:
                texts = [str(row.number), row.state if row.feasible else "infeasible", *([str(row.member) if row.member is not None else ""]
                                                       if member else []), *([row.placement] if device else [])]
                texts += [f(v) for f, v in zip(formats, row.values or (None,) * len(score_names))]
                texts += [f(row.params.get(n)) for f, n in zip(formats[len(score_names):], names)]
                texts.append(duration(row.seconds))
                row_cells = self._row_html[(row.number, layout)] = cells(texts)
            style = " style='background:#ddf4ff;font-weight:600'" if row.number == best_number else ""
            if not row.feasible:
                style = (f" class='hpt-infeasible' style='color:{_INFEASIBLE_COLOUR}'"
                         f" title='broke a constraint (tune.constraint) by {html.escape(_fmt(row.violation))}'")
            if row.state == "fail":
                style = " style='color:#cf222e'"
            elif row.state == "pruned":
                last = f" at step {row.intermediate[-1][0]} (last reported {_fmt(row.intermediate[-1][1])})" \
                    if row.intermediate else ""
                style = (f" class='hpt-pruned' style='color:{_PRUNED_COLOUR};font-style:italic'"
                         f" title='{html.escape('pruned' + last)}'")
            if selected is not None and row.number == selected.number:
                style = " class='hpt-selected' style='outline:2px solid #cf222e;outline-offset:-2px'"
            body.append(f"<tr{style}>{row_cells}</tr>")
        note = f"showing {len(shown)} of {total} trials" if total > len(shown) else f"{total} trials"
        height = "none" if self.expand_table.value else "480px"
        self.table.value = (f"{_TABLE_STYLE}<div class='hpt-table-scroll' style='max-height:{height};overflow:auto'>"
                            f"<table class='hpt-trials hpt-grid'>"
                            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
                            f"<small>{html.escape(note)}</small>")

    def _show_traceback(self, change: dict) -> None:  # main thread: this widget's only writer
        number = change["new"]
        if number is None or number < 0:  # the count, or the writer refreshed the options
            return
        text = self.run.failure(number)
        self.traceback.value = f"<pre style='color:#cf222e;white-space:pre-wrap'>{html.escape(text)}</pre>"
