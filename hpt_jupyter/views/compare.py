"""Studies side by side: best so far on one chart, best values and parameters, and where their
search spaces differ (``%tune compare A B`` / ``hpt_jupyter.compare("A", "B")``).

Plain functions compute what to show from each study's history (testable, no widgets);
:class:`Comparison` draws it once, in the dashboard's look, or writes it as text where no widget
frontend is (terminal IPython, a script, a batch run's text output).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bqplot
import ipywidgets as widgets
import numpy as np
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import FrozenTrial, TrialState

from ..core.history import StudyHistory, load_history
from ..errors import TuneError
from .dashboard import _PALETTE, _TABLE_STYLE, _figure, _legend, _padded, _set_ticks, _value_axis
from .digest import constraint_violation
from .readable import duration, number

if TYPE_CHECKING:
    import pandas

MISSING = "—"  # a knob the study does not have
_LOG_SPAN = 100.0  # best values spanning this ratio or more (two decades) are drawn on a log axis

History = list[tuple[int, float | None, float]]  # (trial number, seconds, best so far)


@dataclass
class StudySummary:
    """What the table says of one study."""

    label: str  # its column's name: the study's name (with its store when two share a name)
    where: str
    direction: str
    counts: dict[str, int]  # trials, complete, pruned, failed, infeasible (and running, if any)
    seconds: float | None  # from its first trial's start to its last trial's end
    best_value: float | None = None
    best_number: int | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    knobs: dict[str, BaseDistribution] = field(default_factory=dict)


# --- what to show: plain functions ---------------------------------------------------------

def _started(trials: list[FrozenTrial]) -> Any:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    return min(starts) if starts else None


def _feasible_complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and constraint_violation(t) <= 0.0]


def best_so_far(trials: list[FrozenTrial], direction: str) -> History:
    """One point per feasible complete trial, in trial-number order: (number, seconds since the
    study's first trial started when it completed (None if unknown), the best value so far).
    An infeasible trial (a ``tune.constraint`` above 0) is never the best."""
    sign = -1.0 if direction == "maximize" else 1.0
    start = _started(trials)
    points: History = []
    best = math.inf
    for trial in sorted(_feasible_complete(trials), key=lambda t: t.number):
        best = min(best, sign * trial.value)
        end = trial.datetime_complete
        seconds = (end - start).total_seconds() if end is not None and start is not None else None
        points.append((trial.number, seconds, sign * best))
    return points


def best_so_far_by_time(trials: list[FrozenTrial], direction: str) -> list[tuple[float, float]]:
    """(seconds since the study's first trial started, best so far) of the feasible complete
    trials in the order they completed: with parallel trials a later number can finish first."""
    sign = -1.0 if direction == "maximize" else 1.0
    start = _started(trials)
    if start is None:
        return []
    timed = sorted(((t.datetime_complete - start).total_seconds(), t.number, t.value)
                   for t in _feasible_complete(trials) if t.datetime_complete is not None)
    return _running_best([(s, v) for s, _, v in timed], sign)


def _running_best(points: list[tuple[float, float]], sign: float) -> list[tuple[float, float]]:
    best, out = math.inf, []
    for x, value in points:
        best = min(best, sign * value)
        out.append((x, sign * best))
    return out


def summarize(history: StudyHistory, label: str) -> StudySummary:
    trials = history.trials
    counts = {"trials": len(trials),
              "complete": sum(t.state == TrialState.COMPLETE for t in trials),
              "pruned": sum(t.state == TrialState.PRUNED for t in trials),
              "failed": sum(t.state == TrialState.FAIL for t in trials),
              "infeasible": sum(t.state == TrialState.COMPLETE and constraint_violation(t) > 0 for t in trials)}
    running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    if running:
        counts["running"] = running
    start = _started(trials)
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    seconds = (max(ends) - start).total_seconds() if ends and start is not None else None
    summary = StudySummary(label, history.where, history.directions[0], counts, seconds,
                           knobs=dict(history.distributions))
    sign = -1.0 if summary.direction == "maximize" else 1.0
    feasible = _feasible_complete(trials)
    if feasible:
        best = min(feasible, key=lambda t: (sign * t.value, t.number))
        summary.best_value, summary.best_number, summary.best_params = best.value, best.number, dict(best.params)
    return summary


def _kind(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return "choice"
    return "int" if isinstance(dist, IntDistribution) else "float"


def _plain(value: Any) -> str:
    return number(value, 6) if isinstance(value, float) else str(value)


def _aspects(dist: BaseDistribution) -> dict[str, str]:
    """What of a knob's declaration two studies may differ in, as the difference line says it."""
    if isinstance(dist, CategoricalDistribution):
        return {"options": repr(list(dist.choices))}
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return {"range": f"[{_plain(dist.low)}, {_plain(dist.high)}]",
            "scale": "log" if dist.log else "linear",
            "step": "none" if dist.step is None else _plain(dist.step)}


def _grouped(by_study: dict[str, str]) -> str:
    """``{"A": "x", "B": "y", "C": "x"}`` -> ``"x in A, C; y in B"``."""
    groups: dict[str, list[str]] = {}
    for label, value in by_study.items():
        groups.setdefault(value, []).append(label)
    return "; ".join(f"{value} in {', '.join(labels)}" for value, labels in groups.items())


def space_differences(spaces: dict[str, dict[str, BaseDistribution]]) -> list[str]:
    """One line per way the studies' spaces differ (empty: the same space). ``spaces``: each
    study's knobs (its widest declaration of each); a study without any is said to be unknown."""
    lines = [f"{label}: no trial recorded a knob, so its space is unknown"
             for label, knobs in spaces.items() if not knobs]
    known = {label: knobs for label, knobs in spaces.items() if knobs}
    names: list[str] = []
    for knobs in known.values():
        names.extend(n for n in knobs if n not in names)
    for name in names:
        having = {label: knobs[name] for label, knobs in known.items() if name in knobs}
        if len(having) < len(known):
            lines.append(f"{name}: only in {', '.join(having)}")
        if len(having) < 2:
            continue
        kinds = {label: _kind(dist) for label, dist in having.items()}
        if len(set(kinds.values())) > 1:
            lines.append(f"{name}: kind {_grouped(kinds)}")
        # ranges, scales, steps and options are compared among the studies of one kind only
        # (an int's range beside a float's says nothing the kind line has not)
        for kind in dict.fromkeys(kinds.values()):
            aspects = {label: _aspects(having[label]) for label, k in kinds.items() if k == kind}
            for aspect in next(iter(aspects.values())):
                values = {label: found[aspect] for label, found in aspects.items()}
                if len(set(values.values())) > 1:
                    lines.append(f"{name}: {aspect} {_grouped(values)}")
    return lines


def _labels(histories: list[StudyHistory]) -> list[str]:
    """Each study's column name: its name, or NAME@STORE where two studies share a name."""
    names = [h.name for h in histories]
    labels = [h.name if names.count(h.name) == 1 else f"{h.name}@{h.where}" for h in histories]
    for label in labels:
        if labels.count(label) > 1:
            raise TuneError(f"'{label}' is named twice: compare different studies, e.g. %tune compare A B.")
    return labels


# --- the comparison -----------------------------------------------------------------------

def compare(*studies: Any, storage: str | None = None) -> Comparison:
    """Compare two or more single-objective studies: Run objects, names of this kernel's runs or
    of studies in ``storage`` (default: the embedded store), or ``"NAME@STORE"``.

    >>> compare("baseline", "wider@sqlite:///studies.db")   # doctest: +SKIP
    """
    if len(studies) < 2:
        raise TuneError(f"Comparing needs two studies or more (got {len(studies)}): "
                        "%tune compare A B, or hpt_jupyter.compare('A', 'B').")
    histories = [s if isinstance(s, StudyHistory) else load_history(s, storage) for s in studies]
    for history in histories:
        if len(history.directions) > 1:
            raise TuneError(f"'{history.name}' has {len(history.directions)} objectives "
                            f"({'/'.join(history.directions)}); compare single-objective studies, or open each "
                            "study's Pareto front (its dashboard, or optuna.visualization.plot_pareto_front).")
    return Comparison(histories)


class Comparison:
    """Studies side by side. In a notebook it shows a chart of best so far (by trial or by
    time), a table of each study's counts, time, best value and best parameters, and where the
    spaces differ; as text it says the same. Plain data for programs:

    - ``histories``: {study: [(trial number, seconds, best so far), ...]} (feasible complete trials)
    - ``by_time``: {study: [(seconds, best so far), ...]} in the order trials completed
    - ``best``: {study: (best value, its parameters)} (``(None, {})`` without a feasible trial)
    - ``differences``: one line per way the spaces differ ([] for the same space)
    - ``direction_note``: one line when the studies' directions differ, else ""
    - ``to_frame()``: the table as a pandas DataFrame
    """

    def __init__(self, studies: list[StudyHistory]) -> None:
        self.studies = studies
        self.labels = _labels(studies)
        self.summaries = {label: summarize(h, label) for label, h in zip(self.labels, studies)}
        self.histories: dict[str, History] = {
            label: best_so_far(h.trials, h.directions[0]) for label, h in zip(self.labels, studies)}
        self.by_time = {label: best_so_far_by_time(h.trials, h.directions[0])
                        for label, h in zip(self.labels, studies)}
        self.best = {label: (s.best_value, s.best_params) for label, s in self.summaries.items()}
        self.differences = space_differences({label: s.knobs for label, s in self.summaries.items()})
        directions = {label: s.direction for label, s in self.summaries.items()}
        self.direction_note = "" if len(set(directions.values())) == 1 else (
            f"Directions differ ({', '.join(f'{k}: {v}' for k, v in directions.items())}): "
            "each line is the best so far in its study's own direction.")
        self.knob_names: list[str] = []
        for s in self.summaries.values():
            self.knob_names.extend(n for n in s.knobs if n not in self.knob_names)
        self.colours = {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(self.labels)}
        self._widget: widgets.VBox | None = None

    # --- the table ---------------------------------------------------------------------

    def _knob_value(self, summary: StudySummary, name: str) -> Any:
        if name not in summary.knobs:
            return MISSING
        return summary.best_params.get(name)  # None: no best trial, or it did not set this knob

    def to_frame(self) -> pandas.DataFrame:
        """The side-by-side table: a row per fact (store, direction, counts, time in seconds,
        best value and trial) and per knob (the best trial's value; "—" where the study has no
        such knob, None where its best trial has none), a column per study."""
        import pandas

        rows = ["store", "direction", *self._count_names(), "seconds", "best value", "best trial",
                *self.knob_names]
        columns = {}
        for label, s in self.summaries.items():
            columns[label] = [s.where, s.direction, *(s.counts.get(k, 0) for k in self._count_names()),
                              s.seconds, s.best_value, s.best_number,
                              *(self._knob_value(s, n) for n in self.knob_names)]
        return pandas.DataFrame(columns, index=rows)

    def _count_names(self) -> list[str]:
        names = ["trials", "complete", "pruned", "failed", "infeasible"]
        return names + (["running"] if any("running" in s.counts for s in self.summaries.values()) else [])

    def _rows(self) -> list[tuple[str, list[str]]]:
        """The table as text: (row label, a cell per study)."""
        summaries = list(self.summaries.values())
        rows = [("store", [s.where for s in summaries]), ("direction", [s.direction for s in summaries])]
        rows += [(k, [str(s.counts.get(k, 0)) for s in summaries]) for k in self._count_names()]
        rows.append(("time", [duration(s.seconds) for s in summaries]))
        rows.append(("best value", [
            f"{_plain(s.best_value)} (#{s.best_number})" if s.best_value is not None
            else self._no_best(s.label) for s in summaries]))
        for name in self.knob_names:
            values = [self._knob_value(s, name) for s in summaries]
            # each cell its own shortest form: the studies' columns need not line up decimals
            texts = [MISSING if v is MISSING else ("" if v is None else _plain(v)) for v in values]
            rows.append((name, texts))
        return rows

    def _winner(self) -> str | None:
        """The study with the best value, when all share a direction (else there is no 'best')."""
        if self.direction_note:
            return None
        found = [(s.best_value, label) for label, s in self.summaries.items() if s.best_value is not None]
        if len(found) < 2:
            return None
        sign = -1.0 if next(iter(self.summaries.values())).direction == "maximize" else 1.0
        return min(found, key=lambda f: sign * f[0])[1]

    def table_html(self) -> str:
        winner = self._winner()
        head = "<th></th>" + "".join(
            f"<th class=n><span style='color:{self.colours[label]}'>&#9632;</span> {html.escape(label)}</th>"
            for label in self.labels)
        body = []
        rows = self._rows()
        knobs_from = len(rows) - len(self.knob_names)
        for index, (name, texts) in enumerate(rows):
            if index == knobs_from and self.knob_names:
                body.append(f"<tr><td colspan={len(self.labels) + 1} style='padding-top:6px;color:#57606a'>"
                            "the best trial's parameters</td></tr>")
            cells = []
            for label, text in zip(self.labels, texts):
                style = " style='background:#ddf4ff;font-weight:600'" if name == "best value" and label == winner \
                    else (" style='color:#8c959f'" if text == MISSING else "")
                # right-aligned, text too: each column is one study, read down like a card
                cells.append(f"<td class=n{style}>{html.escape(text)}</td>")
            body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
        return (f"{_TABLE_STYLE}<table class='hpt-compare hpt-grid'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")

    def differences_html(self) -> str:
        if not self.differences:
            return ("<div class='hpt-differences' style='font-size:13px'><b>Same space</b>: the same knobs, "
                    "ranges, scales and options in every study.</div>")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.differences)
        return (f"<div class='hpt-differences' style='font-size:13px'><b>Where the spaces differ</b>"
                f"<ul style='margin:2px 0'>{items}</ul></div>")

    # --- the chart ---------------------------------------------------------------------

    def _log_values(self) -> bool:
        values = [v for h in self.histories.values() for _, _, v in h if math.isfinite(v)]
        return bool(values) and min(values) > 0 and max(values) / min(values) >= _LOG_SPAN

    @property
    def widget(self) -> widgets.VBox:
        """The chart, the table and the differences (made once, on first use)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self) -> widgets.VBox:
        log = self._log_values()
        x_scale = bqplot.LinearScale()
        y_scale = bqplot.LogScale() if log else bqplot.LinearScale()
        scales = {"x": x_scale, "y": y_scale}
        self.lines: dict[str, bqplot.Lines] = {}
        self.points: dict[str, bqplot.Scatter] = {}  # each improvement: hover names the trial
        for label, history in self.histories.items():
            if not history:
                continue  # no feasible complete trial: no line (the table says why)
            colour = self.colours[label]
            self.lines[label] = bqplot.Lines(x=[], y=[], scales=scales, colors=[colour], interpolation="step-after",
                                             stroke_width=2, labels=[label], tooltip=bqplot.Tooltip(fields=["name"]))
            self.points[label] = bqplot.Scatter(x=[], y=[], scales=scales, colors=[colour], default_size=24,
                                                tooltip=bqplot.Tooltip(fields=["x", "y"]),
                                                interactions={"hover": "tooltip"})
        direction = next(iter(self.summaries.values())).direction
        self.x_axis = bqplot.Axis(scale=x_scale, label="trial", tick_format="d", num_ticks=8)
        self.y_axis = _value_axis(y_scale, "best value (each study's own direction)" if self.direction_note
                                  else f"best value ({direction})")
        marks = [*self.lines.values(), *self.points.values()]
        self.figure = _figure(marks, [self.x_axis, self.y_axis], "best so far (feasible complete trials)",
                              height=320)
        self.x_choice = widgets.ToggleButtons(
            options=[("by trial", "trial"), ("by time", "time")], value="trial",
            tooltips=["x: the trial's number", "x: seconds since the study's first trial started"],
            style={"button_width": "90px"})
        self.x_choice.observe(lambda change: self._draw(change["new"]), "value")
        self._draw("trial")
        legend = _legend([(self.colours[label], "solid", label) for label in self.lines])
        missing = [label for label in self.labels if label not in self.lines]
        if missing:
            legend += ("<div class='hpt-legend' style='font-size:12px;color:#57606a'>no line: "
                       + html.escape(", ".join(f"{m} ({self._no_best(m)})" for m in missing)) + "</div>")
        title = f"<div style='font-size:14px'><b>Comparing {html.escape(', '.join(self.labels))}</b></div>"
        if self.direction_note:
            title += f"<div class='hpt-directions' style='color:#9a6700;font-size:13px'>&#9888; " \
                     f"{html.escape(self.direction_note)}</div>"
        full = widgets.Layout(width="100%")
        legend_box = widgets.HTML(legend, layout=widgets.Layout(margin="4px 0 0 16px"))
        box = widgets.VBox([widgets.HTML(title), widgets.HBox([self.x_choice, legend_box]), self.figure,
                            widgets.HTML(self.table_html()), widgets.HTML(self.differences_html())], layout=full)
        box.add_class("hpt-compare")
        return box

    def _no_best(self, label: str) -> str:
        s = self.summaries[label]
        return "no feasible trial" if s.counts["complete"] else "no complete trial"

    def _draw(self, by: str) -> None:
        """Draw every study's line by trial number or by seconds since its first trial."""
        xs_all, ys_all = [], []
        for label, line in self.lines.items():
            if by == "trial":
                points = [(float(n), v) for n, _, v in self.histories[label]]
            else:
                points = self.by_time[label]
            x = np.array([p[0] for p in points], dtype=float)
            y = np.array([p[1] for p in points], dtype=float)
            improved = np.r_[True, y[1:] != y[:-1]] if len(y) else np.array([], dtype=bool)
            with line.hold_sync():
                line.x, line.y = x, y
            scatter = self.points[label]
            with scatter.hold_sync():
                scatter.x, scatter.y = x[improved], y[improved]
                scatter.tooltip.labels = [f"{label}: trial" if by == "trial" else f"{label}: seconds", "best"]
                scatter.tooltip.formats = ["d" if by == "trial" else ".1f", "~g"]
            xs_all.extend(x.tolist())
            ys_all.extend(y.tolist())
        self.x_axis.label = "trial" if by == "trial" else "seconds since the study's first trial started"
        if not xs_all:
            return
        low, high = min(xs_all), max(xs_all)
        if high - low < 1:  # one point: bqplot's own domain of it is empty
            low, high = low - 1, low + 1
        with self.x_axis.scale.hold_sync():
            self.x_axis.scale.min, self.x_axis.scale.max = low, high
        _set_ticks(self.x_axis, low, high, "int" if by == "trial" else "float", 10)
        log = isinstance(self.y_axis.scale, bqplot.LogScale)
        y_low, y_high = min(ys_all), max(ys_all)
        if y_high <= y_low:
            y_low, y_high = (y_low / 2, y_low * 2) if log else (y_low - (abs(y_low) or 1) * 0.1,
                                                               y_low + (abs(y_low) or 1) * 0.1)
        shown = _padded(y_low, y_high, log)
        with self.y_axis.scale.hold_sync():
            self.y_axis.scale.min, self.y_axis.scale.max = shown
        # ticks over the range shown, margins included: a line along its edge still gets a label near it
        _set_ticks(self.y_axis, *shown, "log" if log else "float", 6, self.figure)

    # --- display -----------------------------------------------------------------------

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget in a kernel (with this text beside it, for nbconvert and viewers without
        widgets); only the text elsewhere, where a widget would print as its repr."""
        text = self.text()
        try:
            from IPython import get_ipython

            kernel = getattr(get_ipython(), "kernel", None)
        except ImportError:
            kernel = None
        if kernel is None:
            return {"text/plain": text}
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        return {**bundle, "text/plain": text}

    def __repr__(self) -> str:
        return self.text()

    def text(self) -> str:
        """The same facts as the widget, as plain text."""
        lines = [f"Comparing {', '.join(self.labels)}"]
        if self.direction_note:
            lines.append(self.direction_note)
        rows = self._rows()
        first = max(len(name) for name, _ in rows)
        widths = [max(len(label), *(len(texts[i]) for _, texts in rows)) for i, label in enumerate(self.labels)]
        lines.append("")
        lines.append(" " * first + "  " + "  ".join(label.rjust(w) for label, w in zip(self.labels, widths)))
        knobs_from = len(rows) - len(self.knob_names)
        for index, (name, texts) in enumerate(rows):
            if index == knobs_from:
                lines.append("the best trial's parameters:")
            lines.append(name.ljust(first) + "  " + "  ".join(t.rjust(w) for t, w in zip(texts, widths)))
        lines.append("")
        lines.append("best so far (trial: value, at each improvement):")
        for label, history in self.histories.items():
            steps = [(n, v) for i, (n, _, v) in enumerate(history) if i == 0 or v != history[i - 1][2]]
            shown = ", ".join(f"#{n}: {number(v, 6)}" for n, v in steps[-8:])
            more = f"{len(steps) - 8} earlier, " if len(steps) > 8 else ""
            lines.append(f"  {label}: {more}{shown}" if steps else f"  {label}: {self._no_best(label)}")
        lines.append("")
        if self.differences:
            lines.append("where the spaces differ:")
            lines.extend(f"  {line}" for line in self.differences)
        else:
            lines.append("same space")
        return "\n".join(lines)

