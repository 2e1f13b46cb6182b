"""A study as one self-contained HTML file: ``run.report("study.html")``, ``%tune report``.

The file opens in any browser with no kernel, no server and no network: plotly.js is inlined
once, every chart is a ``<div>`` drawn by ``Plotly.newPlot`` from a JSON block next to it, the
trial table sorts with a few lines of inline script. What it shows comes from the same
:class:`~hpt_jupyter.views.digest.Digest` the dashboard draws from, so the two agree.

Plain functions compute each chart's plotly figure (a dict: no plotly import needed for it);
plotly itself is imported only for its JavaScript bundle, lazily, so the package works
without the ``report`` extra.

Every text that comes from the study (a knob's name, a choice, a failure) is HTML-escaped
before it reaches plotly or the page: plotly renders a subset of HTML in labels, and a choice
such as ``"<img src=x onerror=alert(1)>"`` must show as text.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
import uuid
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

from ..core.auto import AutoSampler
from ..core.score import short_failure
from ..core.space import ChoiceParam
from ..core.storage import TRACEBACK_KEY
from ..errors import TuneError
from .digest import Digest, Row
from .readable import ColumnFormat, duration, linear_ticks, log_ticks, number, ranks, robust_range, tick_labels

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from ..core.run import Run

__all__ = ["write_report", "MISSING_PLOTLY"]

MISSING_PLOTLY = "%tune report needs plotly: pip install 'hpt-jupyter[report]'"

# How much a report draws: charts stay quick to open at 10,000 trials (the table lists all).
MAX_POINTS = 5000  # history points (improvements always kept); slices get half
MAX_CURVES = 200  # intermediate-value curves: the latest trials that reported
MAX_PARALLEL = 250  # parallel-coordinate lines: the best this many and as many spread over the study
MAX_SEGMENTS = 600  # PBT lineage: the latest segments
MAX_HOVER_KNOBS = 12  # knobs named in a hover label

FONT = ('-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, '
        '"Noto Sans", "Liberation Sans", sans-serif')  # the reader's own fonts: nothing to fetch
TEXT, MUTED, BORDER, GRID = "#1f2328", "#59636e", "#d1d9e0", "#eef1f4"
BLUE, RED, GREY, GREEN = "#0969da", "#cf222e", "#8c959f", "#1a7f37"
TRIAL_COLOUR = "#57606a"
# plotly's Viridis at ten stops: lineage segments binned by rank, drawn in the colour bar's colours
VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
           "#fde725"]
PALETTE = [BLUE, RED, GREEN, "#9a6700", "#8250df", "#bf3989", "#1b7c83", TRIAL_COLOUR]


def write_report(run: Run, path: str) -> str:
    """Write ``run`` as one self-contained HTML file at ``path`` (``.html``); returns its
    absolute path.

    >>> run.report("study.html")          # doctest: +SKIP
    '/home/me/project/study.html'
    """
    target = _target(path)
    plotly_js = _plotly_js()
    page = render(run, plotly_js)
    # Written beside the target, then moved over it: a reader never opens half a report. (Not
    # tempfile.mkstemp: its file is private to the owner, and a report is meant to be shared.)
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, target)
    except OSError as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise TuneError(f"report: could not write {target}: {error.strerror or error}.") from None
    return target


def _target(path: Any) -> str:
    """The absolute path to write, or one TuneError line naming what is wrong with ``path``."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TuneError(f"report: give the file to write as a path ending in .html, e.g. run.report('study.html'); "
                        f"got {path!r}.")
    text = os.path.expanduser(os.fspath(path))
    if not isinstance(text, str) or not text.lower().endswith((".html", ".htm")):
        raise TuneError(f"report: {text!r} is not an .html file; name the file to write, e.g. 'study.html'.")
    target = os.path.abspath(text)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise TuneError(f"report: the folder {folder!r} does not exist; create it first or choose another path.")
    if os.path.isdir(target):
        raise TuneError(f"report: {target!r} is a folder; name a file inside it, e.g. "
                        f"{os.path.join(text, 'study.html')!r}.")
    return target


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise TuneError(MISSING_PLOTLY) from None
    # The bundle goes inside a <script>: a "</script" in it would end the element early.
    return get_plotlyjs().replace("</script", "<\\/script")


# --- what the report shows: plain data, no plotly needed ----------------------------------


class Chart(NamedTuple):
    """One plotly figure: ``key`` names its div (``hpt-chart-<key>``) and the JSON block beside it."""

    key: str
    data: list[dict]
    layout: dict
    note: str = ""  # a line under the chart (escaped text)
    title: str = ""  # a small multiple's own title (escaped text)


class Section(NamedTuple):
    """A titled part of the page: a short caption, its charts, any HTML of its own."""

    key: str
    title: str
    caption: str
    charts: list[Chart]
    extra: str = ""
    small_multiples: bool = False  # charts in a grid of cells rather than one per row


def digest_of(run: Run) -> tuple[Digest, list[FrozenTrial]]:
    """Every finished trial of the run (across narrowings) folded into a Digest as the dashboard
    folds them, with a report's larger bounds; also the trials themselves."""
    space = run.declared_space()
    decoders = {name: p.decode for name, p in run.space.items() if isinstance(p, ChoiceParam)}
    categorical = {name for name, p in space.items() if isinstance(p, ChoiceParam)}
    digest = Digest(run.directions, decoders=decoders, categorical=categorical, max_points=MAX_POINTS,
                    top=MAX_PARALLEL, reporters=MAX_CURVES)
    trials = [t for t in run.trials(states=None) if t.state.is_finished()]
    digest.fold(trials)
    return digest, trials


def sections(run: Run, digest: Digest) -> list[Section]:
    """The report's charts, in reading order; a chart that does not apply is left out."""
    found: list[Section] = []
    multi = run.is_multi_objective
    population = run.scheduler.population_based
    best = run.best_trial
    best_number = best.number if best is not None else None
    if multi:
        chart = pareto_chart(run, digest)
        extra = len(run.directions) > 2
        found.append(Section("pareto", "Pareto front",
                             "Every complete trial by its first two objectives"
                             + (f" (of {len(run.directions)})" if extra else "")
                             + "; the trials no other feasible trial beats in every objective are in blue"
                             + (" (the front is over all objectives)" if extra else "") + ", and listed below.",
                             [chart] if chart is not None else [], extra=best_html(run, digest)))
    else:
        chart = history_chart(run, digest)
        if chart is not None:
            caption = ("Each complete trial's value by trial number, with the best so far as a line. "
                       "Pruned and failed trials have no value and are not plotted")
            if digest.constrained:
                caption += "; trials that broke a tune.constraint are red crosses (never the best)"
            found.append(Section("history", "Optimisation history", caption + ".", [chart]))
    if not multi:
        slices = slice_charts(run, digest)
        if slices:
            found.append(Section("slices", "Slices",
                                 "The value against each knob, one chart per knob (log axes for log knobs); "
                                 "darker points are later trials. Double-click a chart to see every point.",
                                 slices, small_multiples=True))
        chart = parallel_chart(run, digest)
        if chart is not None:
            found.append(Section("parallel", "Parallel coordinates",
                                 "One line per trial across its knobs and its value, coloured by value "
                                 "(yellow: best" + ("; grey: broke a constraint" if digest.n_infeasible else "")
                                 + "). Drag along an axis to keep only the lines that cross it there.",
                                 [chart]))
        importance = importance_chart(run)
        if isinstance(importance, Chart):
            found.append(Section("importance", "Hyperparameter importance",
                                 f"How much of the value's variance each knob explains: Optuna's evaluator "
                                 f"(fANOVA), from {run.n_complete} complete trials, as the dashboard computes it.",
                                 [importance]))
        elif importance:
            found.append(Section("importance", "Hyperparameter importance", importance, []))
    chart = intermediate_chart(run, digest, best_number)
    if chart is not None:
        shown = len(digest.reporters)
        reported = sum(1 for row in digest.rows if row.intermediate)
        what = f"the latest {shown} of {reported} trials" if shown < reported else f"{shown} trials"
        found.append(Section("intermediate", "Intermediate values",
                             f"The values reported with tune.report at each step ({what}): pruned trials "
                             "dashed grey, the best trial thick red.", [chart]))
    if population:
        lineage = run.lineage()
        chart = lineage_chart(run, lineage)
        if chart is not None:
            exploits = sum(1 for s in lineage if s.exploited)
            shown = min(len(lineage), MAX_SEGMENTS)
            found.append(Section("lineage", "PBT lineage",
                                 f"Each member's segments of training over steps, coloured by score; a dashed "
                                 f"red link is a member cloning a better member's checkpoint ({exploits} exploits"
                                 f" in {len(lineage)} segments" + (f", the latest {shown} drawn" if shown < len(lineage)
                                                                   else "") + ").", [chart]))
        schedule = run.best_schedule
        chart = schedule_chart(run, schedule)
        if chart is not None:
            found.append(Section("schedule", "The best member's schedule",
                                 f"Member {schedule[-1]['member']}'s hyperparameters over its steps, followed back "
                                 f"through the members it cloned ({len(schedule)} segments), and its score.",
                                 [chart], extra=schedule_table(schedule)))
    return found


class _Format(ColumnFormat):
    """The dashboard's column format, with a zero in a scientific column written ``0``, not ``0.000e0``."""

    def __call__(self, value: object) -> str:
        if self.scientific and isinstance(value, float) and value == 0:
            return "0"
        return super().__call__(value)


# --- charts -------------------------------------------------------------------------------


def _axis(title: str = "", **options: Any) -> dict:
    axis = {"title": {"text": html.escape(title), "standoff": 8, "font": {"size": 12, "color": MUTED}},
            "gridcolor": GRID, "zeroline": False, "showline": True, "linecolor": BORDER, "ticks": "outside",
            "tickcolor": BORDER, "ticklen": 4, "automargin": True, "tickfont": {"size": 11, "color": TEXT}}
    axis.update(options)
    return axis


def _layout(height: int, **options: Any) -> dict:
    layout = {"height": height, "autosize": True, "margin": {"l": 16, "r": 16, "t": 36, "b": 16},
              "font": {"family": FONT, "size": 12, "color": TEXT}, "paper_bgcolor": "#ffffff",
              "plot_bgcolor": "#ffffff", "hovermode": "closest",
              "hoverlabel": {"bgcolor": "#ffffff", "bordercolor": BORDER, "align": "left",
                             "font": {"family": FONT, "size": 12, "color": TEXT}},
              # above the plot, never over its marks
              "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
                         "font": {"size": 12}, "bgcolor": "rgba(0,0,0,0)"},
              "showlegend": True}
    layout.update(options)
    return layout


def _text(value: Any) -> str:
    """A knob's or a score's value as a label shows it (escaped)."""
    if isinstance(value, float):
        return html.escape(number(value, 6))
    return html.escape(str(value))


def _params_text(params: dict[str, Any]) -> str:
    items = list(params.items())
    lines = [f"{html.escape(str(k))} = {_text(v)}" for k, v in items[:MAX_HOVER_KNOBS]]
    if len(items) > MAX_HOVER_KNOBS:
        lines.append(f"… and {len(items) - MAX_HOVER_KNOBS} more")
    return "<br>".join(lines)


def hover(row: Row, what: str = "") -> str:
    """A mark's hover label: the trial, its score, its knobs."""
    score = " / ".join(_text(v) for v in row.values) if row.values else row.state
    head = f"<b>trial #{row.number}</b> · {score}"
    if row.member is not None:
        head += f" · member {row.member}"
    if not row.feasible:
        head += f" · <span style='color:{RED}'>infeasible</span> (violation {_text(row.violation)})"
    if what:
        head += f" · {what}"
    return head + ("<br>" + _params_text(row.params) if row.params else "")


def _value_title(run: Run, index: int = 0) -> str:
    direction = run.directions[index]
    name = "value" if not run.is_multi_objective else f"objective {index}"
    return f"{name} ({direction})"


def _value_range(values: list[float], keep: Iterable[float] = ()) -> tuple[list[float] | None, int]:
    """The y range where most values lie (one outlier must not squash the rest), as the
    dashboard's default, and how many values it leaves out; None: every value."""
    band = robust_range(values, keep)
    if band is None:
        return None, 0
    return [band[0], band[1]], sum(1 for v in values if not band[0] <= v <= band[1])


def history_chart(run: Run, digest: Digest) -> Chart | None:
    xs, ys = digest.history_xy()
    if not len(xs):
        return None
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    feasible: tuple[list, list, list] = ([], [], [])
    infeasible: tuple[list, list, list] = ([], [], [])
    for i in order:
        row = digest.by_number.get(int(xs[i]))
        if row is None:
            continue
        into = feasible if row.feasible else infeasible
        into[0].append(int(xs[i]))
        into[1].append(float(ys[i]))
        into[2].append(hover(row))
    line_x, line_y = digest.best_line()
    data = [{"type": "scatter", "mode": "markers", "name": "trial", "x": feasible[0], "y": feasible[1],
             "hovertext": feasible[2], "hovertemplate": "%{hovertext}<extra></extra>",
             "marker": {"color": TRIAL_COLOUR, "opacity": 0.6, "size": 7,
                        "line": {"width": 0.5, "color": "#ffffff"}}}]
    if infeasible[0]:
        data.append({"type": "scatter", "mode": "markers", "name": "infeasible (broke a constraint)",
                     "x": infeasible[0], "y": infeasible[1], "hovertext": infeasible[2],
                     "hovertemplate": "%{hovertext}<extra></extra>",
                     "marker": {"color": RED, "symbol": "x-thin-open", "size": 9, "line": {"width": 2, "color": RED}}})
    if line_x:
        data.append({"type": "scatter", "mode": "lines", "name": "best so far", "x": line_x, "y": line_y,
                     "line": {"color": BLUE, "width": 2.5, "shape": "hv"}, "hoverinfo": "skip"})
        if digest.best is not None:
            data.append({"type": "scatter", "mode": "markers", "name": f"best: trial #{digest.best.number}",
                         "x": [digest.best.number], "y": [digest.best.values[0]], "hovertext": [hover(digest.best)],
                         "hovertemplate": "%{hovertext}<extra></extra>",
                         "marker": {"color": BLUE, "size": 12, "symbol": "circle-open", "line": {"width": 2.5}}})
    values = [float(y) for y in ys]
    y_range, hidden = _value_range(values, line_y)
    y_axis = _axis(_value_title(run), **({"range": y_range} if y_range else {}))
    layout = _layout(400, xaxis=_axis("trial"), yaxis=y_axis)
    note = (f"{hidden} trial{'s' if hidden != 1 else ''} outside the range shown (double-click the chart to "
            f"show every trial)") if hidden else ""
    return Chart("history", data, layout, note)


def pareto_chart(run: Run, digest: Digest) -> Chart | None:
    complete = [row for row in digest.rows if row.state == "complete" and row.values and len(row.values) >= 2]
    if not complete:
        return None
    on_front = {row.number for row in digest.front}
    groups = {"trial": [], "infeasible (broke a constraint)": [], "Pareto front": []}
    for row in complete:
        kind = "Pareto front" if row.number in on_front else "trial" if row.feasible \
            else "infeasible (broke a constraint)"
        groups[kind].append(row)
    styles = {"trial": {"color": TRIAL_COLOUR, "opacity": 0.5, "size": 7, "line": {"width": 0.5, "color": "#fff"}},
              "infeasible (broke a constraint)": {"color": RED, "symbol": "x-thin-open", "size": 9,
                                                  "line": {"width": 2, "color": RED}},
              "Pareto front": {"color": BLUE, "size": 11, "line": {"width": 1.5, "color": "#ffffff"}}}
    data = []
    for kind, rows in groups.items():
        if not rows:
            continue
        if kind == "Pareto front":
            rows = sorted(rows, key=lambda r: r.values[0])
        data.append({"type": "scatter", "mode": "markers+lines" if kind == "Pareto front" else "markers",
                     "name": f"{kind} ({len(rows)})", "x": [r.values[0] for r in rows], "y": [r.values[1] for r in rows],
                     "hovertext": [hover(r, "on the front" if kind == "Pareto front" else "") for r in rows],
                     "hovertemplate": "%{hovertext}<extra></extra>", "marker": styles[kind],
                     **({"line": {"color": BLUE, "width": 1, "dash": "dot"}} if kind == "Pareto front" else {})})
    layout = _layout(460, xaxis=_axis(_value_title(run, 0)), yaxis=_axis(_value_title(run, 1)))
    return Chart("pareto", data, layout)


def _log_ticks(low: float, high: float) -> dict:
    """A log axis ticked as the dashboard ticks one: decades, or 1-2-5 steps over about a
    decade, all labelled alike (``1e-5``, or ``20``, ``50``, ``100``)."""
    ticks = log_ticks(low, high, 6)
    return {"type": "log", "tickmode": "array", "tickvals": ticks, "ticktext": list(tick_labels(ticks).values())}


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _slice_axis(name: str, param: Any, xs: list) -> dict:
    """A knob's axis: log for a log knob, categories (in declared order, long names cut short:
    the hover has them whole) for a choice, whole numbers for a narrow integer range."""
    if isinstance(param, ChoiceParam) or any(isinstance(x, str) for x in xs):
        declared = [str(o) for o in param.options] if isinstance(param, ChoiceParam) else []
        names = declared + sorted({str(x) for x in xs} - set(declared))
        return _axis(name, type="category", categoryorder="array", categoryarray=[html.escape(n) for n in names],
                     tickmode="array", tickvals=[html.escape(n) for n in names],
                     ticktext=[html.escape(_short(n)) for n in names])
    low, high = getattr(param, "low", None), getattr(param, "high", None)
    if low is None or high is None:  # a knob this run does not declare (a stored study's): its data's range
        return _axis(name)
    # The declared range, as the dashboard shows it: a narrowed or unexplored end is empty space.
    present = [float(x) for x in xs]
    low, high = min(float(low), *present), max(float(high), *present)
    if getattr(param, "log", False) and low > 0:
        pad = 0.04 * (math.log10(high) - math.log10(low) or 1.0)
        return _axis(f"{name} (log)", range=[math.log10(low) - pad, math.log10(high) + pad], **_log_ticks(low, high))
    pad = 0.04 * ((high - low) or 1.0)
    options: dict[str, Any] = {"range": [low - pad, high + pad]}
    if type(param).__name__ == "IntParam" and high - low <= 10:
        options["dtick"] = 1
    return _axis(name, **options)


def slice_charts(run: Run, digest: Digest) -> list[Chart]:
    space = run.declared_space()
    complete = [row.values[0] for row in digest.rows if row.state == "complete" and row.values]
    y_range, _ = _value_range(complete, [digest.best.values[0]] if digest.best is not None else [])
    last = max(digest.last_number, 1.0)
    charts = []
    for name in digest.param_names:
        xs, ys = digest.slices.get(name, ([], []))
        numbers = digest.slice_numbers.get(name, [])
        if not xs:
            continue
        param = space.get(name)
        categorical = isinstance(param, ChoiceParam) or any(isinstance(x, str) for x in xs)
        plain: tuple[list, list, list, list] = ([], [], [], [])
        broken: tuple[list, list, list] = ([], [], [])
        for x, y, n in zip(xs, ys, numbers):
            row = digest.by_number[n]
            x = html.escape(str(x)) if categorical else x
            if row.feasible:
                plain[0].append(x)
                plain[1].append(y)
                plain[2].append(hover(row))
                plain[3].append(n)
            else:
                broken[0].append(x)
                broken[1].append(y)
                broken[2].append(hover(row))
        # Later trials darker: where the sampler went as the study went on.
        data = [{"type": "scatter", "mode": "markers", "name": "trial", "x": plain[0], "y": plain[1],
                 "hovertext": plain[2], "hovertemplate": "%{hovertext}<extra></extra>",
                 "marker": {"color": plain[3], "cmin": 0, "cmax": last, "size": 7, "opacity": 0.75,
                            "colorscale": [[0, "#a5c8f5"], [1, "#0a3069"]], "showscale": False,
                            "line": {"width": 0.5, "color": "#ffffff"}}}]
        if broken[0]:
            data.append({"type": "scatter", "mode": "markers", "name": "infeasible", "x": broken[0], "y": broken[1],
                         "hovertext": broken[2], "hovertemplate": "%{hovertext}<extra></extra>",
                         "marker": {"color": RED, "symbol": "x-thin-open", "size": 8,
                                    "line": {"width": 1.5, "color": RED}}})
        layout = _layout(280, showlegend=False, margin={"l": 12, "r": 12, "t": 12, "b": 12},
                         xaxis=_slice_axis(name, param, xs),
                         yaxis=_axis(_value_title(run), **({"range": y_range} if y_range else {})))
        charts.append(Chart(f"slice-{len(charts)}", data, layout, title=html.escape(name)))
    return charts


def _dimension(name: str, param: Any, values: list) -> dict:
    """One parallel-coordinates axis: categories as labelled positions, a log knob on a log10
    axis labelled in its own units; a trial without the knob (a conditional one) at "none"
    below the range."""
    label = html.escape(name)
    present = [v for v in values if v is not None]
    missing = len(present) < len(values)
    numeric = bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if not numeric:
        declared = [str(o) for o in param.options] if isinstance(param, ChoiceParam) else []
        labels = declared + sorted({str(v) for v in present} - set(declared)) + (["none"] if missing else [])
        index = {text: i for i, text in enumerate(labels)}
        return {"label": label, "values": [index[str(v) if v is not None else "none"] for v in values],
                "tickvals": list(range(len(labels))), "ticktext": [_short(t, 16) for t in labels],
                "range": [-0.2, len(labels) - 0.8] if len(labels) > 1 else [-1, 1]}
    low, high = float(min(present)), float(max(present))
    if isinstance(getattr(param, "low", None), (int, float)):  # the declared range: narrowed space shows
        low, high = min(low, float(param.low)), max(high, float(param.high))
    log = bool(getattr(param, "log", False)) and low > 0
    dim: dict[str, Any] = {"label": f"{label} (log)" if log else label}
    if log:
        ticks = log_ticks(low, high, 6)
        lo, hi = math.log10(low), math.log10(high)
        dim.update(tickvals=[math.log10(t) for t in ticks], ticktext=list(tick_labels(ticks).values()))
    else:
        lo, hi = low, high if high > low else low + 1.0
        dim["tickformat"] = ".3~g"
    floor = lo - 0.12 * (hi - lo)
    if missing:
        if "tickvals" not in dim:
            ticks = linear_ticks(low, high, 5)
            dim.update(tickvals=ticks, ticktext=[number(t, 3) for t in ticks])
        dim["tickvals"] = dim["tickvals"] + [floor]
        dim["ticktext"] = dim["ticktext"] + ["none"]
    dim["range"] = [floor if missing else lo, hi]
    dim["values"] = [floor if v is None else math.log10(v) if log else float(v) for v in values]
    return dim


def parallel_chart(run: Run, digest: Digest) -> Chart | None:
    rows = sorted(digest.parallel_rows(MAX_PARALLEL), key=lambda r: r.number)
    if len(rows) < 2 or not digest.param_names:
        return None
    space = run.declared_space()
    names = [n for n in digest.param_names if any(n in row.params for row in rows)]
    dimensions = [_dimension(name, space.get(name), [row.params.get(name) for row in rows]) for name in names]
    values = [row.values[0] for row in rows]
    maximize = run.directions[0] == "maximize"
    dimensions.append({"label": html.escape(_value_title(run)), "values": values, "tickformat": ".4~g"})
    colorbar = {"title": {"text": "value", "side": "right"}, "thickness": 12, "len": 0.9, "tickformat": ".3~g"}
    feasible = [row.values[0] for row in rows if row.feasible]
    # Colours over the range where most feasible values lie: one outlier must not paint every
    # other line alike, and a score that broke a constraint must not set the "best" end.
    band = robust_range(feasible)
    if len(feasible) == len(rows):
        line = {"color": values, "colorscale": "Viridis", "reversescale": not maximize,
                **({"cmin": band[0], "cmax": band[1]} if band is not None else {})}
    else:
        band = band or ((min(feasible), max(feasible)) if feasible else None)
        line = _colours_with_broken_grey(rows, band, maximize, colorbar)
    data = [{"type": "parcoords", "dimensions": dimensions,
             "line": {**line, "showscale": True, "colorbar": colorbar},
             "labelangle": -12 if len(dimensions) > 6 else 0, "labelside": "top",
             "labelfont": {"size": 12, "color": TEXT}, "tickfont": {"size": 11, "color": TEXT},
             "rangefont": {"size": 10, "color": MUTED}}]
    shown = (f"{len(rows)} of {digest.n_complete} complete trials: the best {min(len(digest.top), MAX_PARALLEL)} "
             f"and others spread over the study") if len(rows) < digest.n_complete else ""
    layout = _layout(440, margin={"l": 56, "r": 40, "t": 72, "b": 28}, showlegend=False)
    return Chart("parallel", data, layout, shown)


def _colours_with_broken_grey(rows: list[Row], band: tuple[float, float] | None, maximize: bool,
                              colorbar: dict) -> dict:
    """Line colours when some trials broke a constraint: feasible ones on viridis over ``band``
    (clipped to it), the others grey, at a level below the band that only they use. A
    parcoords trace has one colour scale, so grey is its bottom stop; the colour bar labels it."""
    low, high = band if band is not None else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    grey_share = 0.06
    broken_level = low - (high - low) * grey_share / (1 - grey_share)
    colours = [min(max(row.values[0], low), high) if row.feasible else broken_level for row in rows]
    stops = VIRIDIS if maximize else VIRIDIS[::-1]  # yellow at the best end
    scale = [[0.0, GREY], [grey_share, GREY]] + [
        [grey_share + (1 - grey_share) * i / (len(stops) - 1), colour] for i, colour in enumerate(stops)]
    ticks = linear_ticks(low, high, 5) if band is not None else []
    colorbar.update(tickvals=[broken_level] + ticks,
                    ticktext=["infeasible"] + [number(t, 3) for t in ticks])
    return {"color": colours, "colorscale": scale, "cmin": broken_level, "cmax": high}


def importance_chart(run: Run) -> Chart | str:
    """Optuna's evaluator (fANOVA) over the study, as the dashboard's ``_compute_importance``:
    a chart, or a line saying why there is none."""
    complete = run.n_complete
    if complete < 10:
        return f"Importance needs at least 10 complete trials; this study has {complete}."
    try:
        import optuna

        importances = optuna.importance.get_param_importances(run.study)
    except Exception as error:  # noqa: BLE001 - e.g. a space the evaluator cannot handle
        return f"Importance is unavailable: {error}"
    if not importances:
        return "Importance is unavailable: no knob varied."
    names = list(importances)[::-1]  # the most important on top
    shares = [float(importances[n]) for n in names]
    labels = [html.escape(n) for n in names]
    data = [{"type": "bar", "orientation": "h", "x": shares, "y": labels, "marker": {"color": BLUE},
             "text": [f"{v:.2f}" for v in shares], "textposition": "outside", "cliponaxis": False,
             "hovertemplate": "%{y}: %{x:.3f}<extra></extra>", "name": "importance"}]
    layout = _layout(max(140, 56 + 34 * len(names)), showlegend=False, bargap=0.35,
                     margin={"l": 16, "r": 40, "t": 12, "b": 16},
                     xaxis=_axis("importance (share of the variance)", range=[0, max(shares) * 1.15 or 1]),
                     yaxis=_axis("", type="category", ticks="", showline=False, gridcolor="rgba(0,0,0,0)"))
    return Chart("importance", data, layout)


def intermediate_chart(run: Run, digest: Digest, best_number: int | None) -> Chart | None:
    reported = list(digest.reporters)
    if not reported:
        return None
    styles = {
        "complete": {"color": BLUE, "width": 1.2},
        "pruned": {"color": GREY, "width": 1, "dash": "dash"},
        "failed": {"color": RED, "width": 1, "dash": "dot"},
        "best": {"color": RED, "width": 3.5},
    }
    opacity = {"complete": 0.55, "pruned": 0.45, "failed": 0.5, "best": 1.0}
    names = {"complete": "complete", "pruned": "pruned", "failed": "failed", "best": "the best trial"}
    data = []
    shown: set[str] = set()
    # The best drawn last, over the others.
    for row in sorted(reported, key=lambda r: r.number == best_number):
        kind = "best" if row.number == best_number else {"pruned": "pruned", "fail": "failed"}.get(row.state,
                                                                                                 "complete")
        last = row.intermediate[-1]
        what = f"pruned at step {last[0]}" if row.state == "pruned" else row.state
        # A dot where a pruned or failed curve ended (a curve of one point would draw nothing).
        ended = kind in ("pruned", "failed") or len(row.intermediate) == 1
        mode = "lines+markers" if ended else "lines"
        sizes = [0] * (len(row.intermediate) - 1) + [6]
        data.append({"type": "scatter", "mode": mode, "name": names[kind], "legendgroup": kind,
                     "showlegend": kind not in shown, "opacity": opacity[kind], "line": styles[kind],
                     "marker": {"color": styles[kind]["color"], "size": sizes},
                     "x": [step for step, _ in row.intermediate], "y": [value for _, value in row.intermediate],
                     "hovertext": hover(row, html.escape(what)),
                     "hovertemplate": "step %{x}: %{y:.4~g}<br>%{hovertext}<extra></extra>"})
        shown.add(kind)
    layout = _layout(400, xaxis=_axis("step"), yaxis=_axis("reported value"))
    return Chart("intermediate", data, layout)


def lineage_chart(run: Run, segments: list) -> Chart | None:
    if not segments:
        return None
    segments = segments[-MAX_SEGMENTS:]
    population = run.scheduler.settings.population
    maximize = run.directions[0] == "maximize"
    scored = [s for s in segments if s.value is not None]
    share = dict(zip((s.number for s in scored), ranks([s.value for s in scored], maximize)))
    ends = {s.number: s.end for s in run.lineage()}
    bins: list[tuple[list, list]] = [([], []) for _ in VIRIDIS]
    unscored: tuple[list, list] = ([], [])
    mid_x, mid_y, mid_colour, mid_text = [], [], [], []
    link_x, link_y, link_text = [], [], []
    for s in segments:
        widen = 0.3 if s.end == s.start else 0.0  # a one-step segment is a short bar, not a dot
        rank = share.get(s.number)
        into = unscored if rank is None else bins[min(int(rank * len(VIRIDIS)), len(VIRIDIS) - 1)]
        into[0].extend([s.start - widen, s.end + widen, None])
        into[1].extend([s.member, s.member, None])
        mid_x.append((s.start + s.end) / 2)
        mid_y.append(s.member)
        mid_colour.append(rank if rank is not None else 0.0)
        score = _text(s.value) if s.value is not None else s.state
        text = (f"<b>trial #{s.number}</b> · member {s.member} · steps {s.start}–{s.end} · score {score}"
                + (f"<br>cloned member {s.parent}'s checkpoint (trial #{s.from_trial})" if s.exploited else "")
                + ("<br>" + _params_text(s.params) if s.params else ""))
        mid_text.append(text)
        if s.exploited and s.parent is not None:
            link = f"member {s.member} cloned member {s.parent} at step {s.start} (trial #{s.number})"
            link_x.extend([ends.get(s.from_trial, s.start), s.start, None])
            link_y.extend([s.parent, s.member, None])
            link_text.extend([link, link, None])
    data: list[dict] = []
    if link_x:
        data.append({"type": "scatter", "mode": "lines", "name": "clones a better member's checkpoint",
                     "x": link_x, "y": link_y, "hovertext": link_text, "hovertemplate": "%{hovertext}<extra></extra>",
                     "line": {"color": RED, "width": 1.5, "dash": "dash"}, "opacity": 0.9})
    for colour, (xs, ys) in zip(VIRIDIS, bins):
        if xs:
            data.append({"type": "scatter", "mode": "lines", "x": xs, "y": ys, "showlegend": False,
                         "hoverinfo": "skip", "line": {"color": colour, "width": 9}})
    if unscored[0]:
        data.append({"type": "scatter", "mode": "lines", "x": unscored[0], "y": unscored[1], "name": "no score",
                     "hoverinfo": "skip", "line": {"color": GREY, "width": 9}})
    values = sorted((s.value for s in scored), reverse=not maximize)  # worst first
    colorbar: dict[str, Any] = {"title": {"text": "score", "side": "right"}, "thickness": 12, "len": 0.9}
    if values:
        colorbar.update(tickvals=[0, 0.5, 1], ticktext=[f"worst {_text(values[0])}",
                                                        f"median {_text(values[len(values) // 2])}",
                                                        f"best {_text(values[-1])}"])
    # One marker mid-segment carries its hover and the colour bar.
    data.append({"type": "scatter", "mode": "markers", "name": "segment", "showlegend": False,
                 "x": mid_x, "y": mid_y, "hovertext": mid_text, "hovertemplate": "%{hovertext}<extra></extra>",
                 "marker": {"color": mid_colour, "colorscale": "Viridis", "cmin": 0, "cmax": 1, "size": 9,
                            "opacity": 0, "showscale": True,
                            "colorbar": colorbar}})
    height = min(max(120 + 44 * population, 260), 640)
    tick_step = max(1, math.ceil(population / 16))
    layout = _layout(height, xaxis=_axis("step"),
                     yaxis=_axis("member", tickmode="array", tickvals=list(range(0, population, tick_step)),
                                 range=[-0.6, population - 0.4], showgrid=False, zeroline=False))
    return Chart("lineage", data, layout)


def _schedule_names(schedule: list[dict]) -> list[str]:
    names: list[str] = []
    for entry in schedule:
        names.extend(k for k in entry if k not in ("trial", "member", "start", "end", "value") and k not in names)
    return names


def schedule_chart(run: Run, schedule: list[dict]) -> Chart | None:
    """The best member's hyperparameters as step lines, one small row per knob on its own axis
    (log for a log knob, categories for a choice), under its score at the end of each segment,
    all over the same steps."""
    if not schedule:
        return None
    space = run.declared_space()
    names = _schedule_names(schedule)
    rows = [("score", [e["value"] for e in schedule])] + [(n, [e.get(n) for e in schedule]) for n in names]
    starts = [e["start"] for e in schedule] + [schedule[-1]["end"]]
    count = len(rows)
    gap = 0.07 if count > 1 else 0.0
    height_each = (1 - gap * (count - 1)) / count
    data, layout_axes = [], {}
    for i, (name, values) in enumerate(rows):
        axis_id = "" if i == 0 else str(i + 1)
        top = 1 - i * (height_each + gap)
        param = space.get(name) if i else None
        categorical = isinstance(param, ChoiceParam) or any(isinstance(v, str) for v in values if v is not None)
        shown = [html.escape(str(v)) if categorical and v is not None else v for v in values]
        texts = [f"<b>trial #{e['trial']}</b> · member {e['member']} · steps {e['start']}–{e['end']}<br>"
                 f"{html.escape(name)} = {_text(v) if v is not None else '—'}" for e, v in zip(schedule, values)]
        trace = {"type": "scatter", "mode": "lines+markers", "xaxis": "x", "yaxis": f"y{axis_id}",
                 "name": html.escape(name), "showlegend": False, "hovertemplate": "%{hovertext}<extra></extra>",
                 "line": {"color": PALETTE[i % len(PALETTE)], "width": 2}, "marker": {"size": 5}}
        if i == 0:  # a segment's score is where it ended
            trace.update(x=[e["end"] for e in schedule], y=shown, hovertext=texts)
        else:  # a hyperparameter holds from its segment's first step to the next segment's
            trace.update(x=starts, y=shown + shown[-1:], hovertext=texts + texts[-1:])
            trace["line"]["shape"] = "hv"
        data.append(trace)
        options: dict[str, Any] = {"domain": [max(top - height_each, 0), top], "anchor": "x"}
        present = [v for v in values if v is not None]
        label = name
        if categorical:
            options["type"] = "category"
        elif getattr(param, "log", False) and present and min(present) > 0:
            options.update(_log_ticks(min(present), max(present)))
            label += " (log)"
        else:
            options["nticks"] = 4
        layout_axes[f"yaxis{axis_id}"] = _axis(label, **options)
    layout = _layout(60 + 110 * count, showlegend=False, margin={"l": 16, "r": 16, "t": 12, "b": 16},
                     xaxis=_axis("step", anchor=f"y{count if count > 1 else ''}"), **layout_axes)
    return Chart("schedule", data, layout)


def schedule_table(schedule: list[dict]) -> str:
    names = _schedule_names(schedule)
    formats = [_Format([e.get(n) for e in schedule]) for n in names]
    score = _Format([e["value"] for e in schedule])
    head = "".join(f"<th{' class=n' if i != 0 else ''}>{html.escape(h)}</th>"
                   for i, h in enumerate(["steps", "trial", "member", *names, "score"]))
    body = []
    for e in schedule:
        cells = [f"{e['start']}–{e['end']}", f"#{e['trial']}", str(e["member"]),
                 *[f(e.get(n)) for f, n in zip(formats, names)], score(e["value"])]
        body.append("<tr>" + "".join(f"<td{' class=n' if i != 0 else ''}>{html.escape(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return (f"<div class='table-wrap short'><table class='grid schedule'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


# --- the page -----------------------------------------------------------------------------


def _sampler_text(run: Run) -> str:
    ended = not run.is_alive
    if ended and isinstance(run.study.sampler, AutoSampler):
        used = run.samplers_used()
        if used:
            return "auto chose " + ", ".join(f"{name} for {n} trial{'s' if n != 1 else ''}" for name, n in used.items())
    return run.sampler_text()


def _fact(label: str, value: str, note: str = "") -> str:
    """A summary card (``value`` is HTML, already escaped)."""
    extra = f"<div class='note'>{note}</div>" if note else ""
    return f"<div class='fact'><div class='label'>{html.escape(label)}</div><div class='value'>{value}</div>{extra}</div>"


def summary_html(run: Run, digest: Digest) -> str:
    e = html.escape
    state = e(run.state) + (f": {e(run.reason)}" if run.reason else "")
    counts = [f"{run.n_complete} complete", f"{run.n_pruned} pruned", f"{run.n_failed} failed"]
    if run.n_infeasible or digest.constrained:
        counts.append(f"{run.n_infeasible} infeasible")
    best = run.best_trial
    if best is None:
        best_text = ("no feasible trial" if run.n_complete and run.n_infeasible >= run.n_complete
                     else "no complete trial")
    elif run.is_multi_objective:
        best_text = f"{len(digest.front)} trials on the Pareto front"
    else:
        best_text = f"{e(number(best.value, 6))} <span class='muted'>(trial #{best.number})</span>"
    scheduler = run.scheduler_text().lstrip(" ·") or "none"
    elapsed = duration(run.elapsed) if run.started_at is not None else "—"
    budget = f" of {run.budget}" if run.budget is not None else ""
    facts = [
        _fact("state", f"<span class='state state-{e(run.state)}'>{state}</span>"),
        _fact("trials", f"{run.n_finished}{budget}", e(" · ".join(counts))),
        _fact("best", best_text),
        _fact("elapsed", e(elapsed), e(f"{run.n_run} trials run in this session") if run.n_run != run.n_finished
              else ""),
        _fact("directions", e(" / ".join(run.directions))),
        _fact("sampler", e(_sampler_text(run)), e(f"seed {run.seed}") if run.seed is not None else ""),
        _fact("pruner / scheduler", e(scheduler)),
        _fact("store", e(run.store or "this kernel"), e(run.opened)),
    ]
    if run.is_alive:
        running = len(run.running_trials())
        facts.append(_fact("note", "written while the study ran",
                           e(f"{running} running trial{'s are' if running != 1 else ' is'} not listed")))
    return f"<div class='facts'>{''.join(facts)}</div>"


def _params_table(params: dict[str, Any], extra: list[tuple[str, str]] = ()) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_text(v)}</td></tr>" for k, v in params.items())
    rows += "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in extra)
    return f"<table class='kv'>{rows}</table>"


def best_html(run: Run, digest: Digest) -> str:
    e = html.escape
    best = run.best_trial
    if best is None:
        if run.n_complete and run.n_infeasible >= run.n_complete:
            return (f"<p>No feasible trial: all {run.n_complete} complete trials broke a tune.constraint "
                    f"(feasible when its value is &lt;= 0).</p>")
        return "<p>No trial has completed.</p>"
    if run.is_multi_objective:
        front = sorted(digest.front, key=lambda r: tuple(s * v for s, v in zip(digest.signs, r.values)))
        names = digest.param_names
        value_formats = [_Format([r.values[i] for r in front]) for i in range(len(run.directions))]
        knob_formats = [_Format([r.params.get(n) for r in front]) for n in names]
        head = "".join(f"<th class=n>{e(_value_title(run, i))}</th>" for i in range(len(run.directions)))
        numeric = [" class=n" if any(isinstance(r.params.get(n), (int, float)) and not isinstance(r.params.get(n), bool)
                                     for r in front) else "" for n in names]
        head = f"<th class=n>#</th>{head}" + "".join(f"<th{c}>{e(n)}</th>" for c, n in zip(numeric, names))
        body = "".join(
            f"<tr><td class=n>{r.number}</td>"
            + "".join(f"<td class=n>{e(f(v))}</td>" for f, v in zip(value_formats, r.values))
            + "".join(f"<td{c}>{e(f(r.params.get(n)))}</td>" for c, f, n in zip(numeric, knob_formats, names))
            + "</tr>" for r in front)
        return (f"<p>{len(front)} trials on the Pareto front (no other feasible trial beats them in every "
                f"objective), best first in {e(_value_title(run, 0))}:</p>"
                f"<div class='table-wrap short'><table class='grid'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table></div>")
    row = digest.by_number.get(best.number)
    extra = []
    constraints = best.constraints if best.system_attrs else {}
    for key, value in constraints.items():
        extra.append((f"constraint {key}", f"{_text(value)} <span class='ok'>kept (&lt;= 0)</span>"))
    if row is not None and row.seconds is not None:
        extra.append(("duration", e(duration(row.seconds))))
    if row is not None and row.member is not None:
        extra.append(("member", str(row.member)))
    head = (f"<div class='best-value'><span class='label'>{e(_value_title(run))}</span> "
            f"<b>{e(number(best.value, 8))}</b> <span class='muted'>trial #{best.number}</span></div>")
    if run.scheduler.population_based:
        head += ("<p class='muted'>The latest segment of the member whose latest score is best; its schedule "
                 "(the hyperparameters over its training) is drawn below.</p>")
    return head + _params_table(run.best_params, extra)


def trial_table(run: Run, digest: Digest, trials: list[FrozenTrial]) -> str:
    """Every finished trial, one row each; sorting is the page's script."""
    e = html.escape
    multi = run.is_multi_objective
    count = len(run.directions)
    rows = sorted(digest.rows, key=lambda r: r.number)
    names = digest.param_names
    population = run.scheduler.population_based
    constraints = {t.number: t.constraints for t in trials if t.system_attrs and t.constraints}
    keys: list[str] = []
    for values in constraints.values():
        keys.extend(k for k in values if k not in keys)
    failures = {t.number: short_failure(t.user_attrs.get(TRACEBACK_KEY, "")) for t in trials
                if t.state.name == "FAIL"}
    best = run.best_trial
    best_number = best.number if best is not None else None
    front = {r.number for r in digest.front}
    value_formats = [_Format([(r.values or (None,) * count)[i] for r in rows]) for i in range(count)]
    knob_formats = [_Format([r.params.get(n) for r in rows]) for n in names]
    constraint_formats = [_Format([constraints.get(r.number, {}).get(k) for r in rows]) for k in keys]
    headers: list[tuple[str, bool]] = [("#", True), ("state", False)]
    if population:
        headers.append(("member", True))
    headers += [(_value_title(run, i) if multi else "value", True) for i in range(count)]
    numeric = {n: any(isinstance(r.params.get(n), (int, float)) and not isinstance(r.params.get(n), bool)
                      for r in rows) for n in names}
    headers += [(n, numeric[n]) for n in names]
    headers += [(f"constraint {k}", True) for k in keys]
    headers += [("duration", True), ("note", False)]
    head = "".join(f"<th{' class=n' if num else ''}><button type='button'>{e(h)}</button></th>" for h, num in headers)

    def cell(text: str, sort: float | None = None, numeric_cell: bool = False) -> str:
        attr = f" data-v='{sort!r}'" if sort is not None and math.isfinite(sort) else ""
        return f"<td{' class=n' if numeric_cell else ''}{attr}>{e(text)}</td>"

    def sortable(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    body = []
    for r in rows:
        cells = [cell(str(r.number), r.number, True)]
        state = r.state if r.feasible else "infeasible"
        cells.append(f"<td><span class='tag tag-{e(state)}'>{e(state)}</span></td>")
        if population:
            cells.append(cell("" if r.member is None else str(r.member), r.member, True))
        values = r.values or (None,) * count
        cells += [cell(f(v), v, True) for f, v in zip(value_formats, values)]
        cells += [cell(f(r.params.get(n)), sortable(r.params.get(n)), numeric[n]) for f, n in zip(knob_formats, names)]
        kept = constraints.get(r.number, {})
        cells += [cell(f(kept.get(k)), kept.get(k), True) for f, k in zip(constraint_formats, keys)]
        cells.append(cell(duration(r.seconds), r.seconds, True))
        if r.state == "fail":
            note = failures.get(r.number, "")
        elif r.state == "pruned" and r.intermediate:
            note = f"pruned at step {r.intermediate[-1][0]} (last reported {number(r.intermediate[-1][1], 4)})"
        elif not r.feasible:
            note = f"broke a constraint by {number(r.violation, 4)}"
        elif r.number == best_number:
            note = "best" if not multi else "best in objective 0"
        elif r.number in front:
            note = "on the Pareto front"
        else:
            note = ""
        cells.append(cell(note))
        classes = [f"s-{state}"] + (["best"] if r.number == best_number else []) + \
            (["front"] if r.number in front and multi else [])
        body.append(f"<tr class='{' '.join(classes)}' data-n='{r.number}'>{''.join(cells)}</tr>")
    return (f"<div class='table-wrap'><table class='grid trials sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


_ENDS_SCRIPT = re.compile(r"<(?=[/!])")


def _json(value: Any) -> str:
    """JSON for a ``<script type="application/json">``: no NaN (JSON.parse refuses it), and no
    ``</`` or ``<!`` that could end the element early (plotly's own ``<b>`` and ``<br>`` stay
    as they are: escaping every ``<`` would grow each hover label by a fifth)."""
    text = json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)
    return _ENDS_SCRIPT.sub(r"\\u003c", text)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _finite(value.tolist())
    return value


def _chart_html(chart: Chart) -> str:
    height = chart.layout.get("height", 400)
    title = f"<div class='chart-title'>{chart.title}</div>" if chart.title else ""
    note = f"<div class='chart-note'>{chart.note}</div>" if chart.note else ""
    return (f"<figure class='chart' id='chart-{chart.key}'>{title}"
            f"<div class='plot' id='hpt-chart-{chart.key}' style='height:{height}px'></div>{note}"
            f"<script type='application/json' class='hpt-figure' data-target='hpt-chart-{chart.key}'>"
            f"{_json({'data': chart.data, 'layout': chart.layout})}</script></figure>")


def _section_html(section: Section) -> str:
    charts = "".join(_chart_html(c) for c in section.charts)
    if section.small_multiples:
        charts = f"<div class='multiples'>{charts}</div>"
    caption = f"<p class='caption'>{html.escape(section.caption)}</p>" if section.caption else ""
    return (f"<section class='card' id='{section.key}'><h2>{html.escape(section.title)}</h2>{caption}"
            f"{charts}{section.extra}</section>")


def render(run: Run, plotly_js: str) -> str:
    """The whole page, as text."""
    digest, trials = digest_of(run)
    written = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    parts = sections(run, digest)
    if run.is_multi_objective:
        note = ("<p class='caption'>Slices, parallel coordinates and importance are drawn for single-objective "
                "studies, as in the dashboard.</p>")
    else:
        note = ""
    # Several objectives have no one best trial: the Pareto section lists the front instead.
    best = "" if run.is_multi_objective else \
        f"<section class='card' id='best'><h2>Best trial</h2>{best_html(run, digest)}</section>"
    nav = [("summary", "Summary")] + ([("best", "Best trial")] if best else []) + [(s.key, s.title) for s in parts] \
        + [("trials", "Trials")]
    nav_html = "".join(f"<a href='#{k}'>{html.escape(t)}</a>" for k, t in nav)
    from .. import __version__

    title = f"{run.name} · hpt-jupyter report"
    finished = len(digest.rows)
    body = (
        f"<header class='top'><div class='inner'><div class='brand'>hpt-jupyter report</div>"
        f"<h1>{html.escape(run.name)}</h1>"
        f"<div class='subtitle'>{html.escape(run.progress())}</div>"
        f"<div class='subtitle muted'>written {html.escape(written)} · hpt-jupyter {html.escape(__version__)}"
        f"</div></div></header>"
        f"<nav class='sections'><div class='inner'>{nav_html}</div></nav><main class='inner'>"
        f"<section class='card' id='summary'><h2>Summary</h2>{summary_html(run, digest)}{note}</section>"
        f"{best}"
        + "".join(_section_html(s) for s in parts)
        + f"<section class='card' id='trials'><h2>Trials</h2><p class='caption'>{finished} finished trials; click a "
          f"column's name to sort by it (again: the other way).</p>{trial_table(run, digest, trials)}</section>"
        f"</main><footer class='inner muted'>Written by hpt-jupyter {html.escape(__version__)}; charts by "
        f"plotly.js, included in this file: it opens offline.</footer>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            # plotly.py's own offline files set this: no MathJax is configured or fetched
            f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>"
            f"<script>{plotly_js}</script></head><body>{body}<script>{SCRIPT}</script></body></html>\n")


CSS = """
:root { --text: #1f2328; --muted: #59636e; --border: #d1d9e0; --accent: #0969da; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.5 %(font)s; }
.inner { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header.top { background: #ffffff; border-bottom: 1px solid var(--border); padding: 20px 0 14px; }
header.top .brand { color: var(--accent); font-weight: 600; font-size: 12px; letter-spacing: .06em;
  text-transform: uppercase; }
header.top h1 { margin: 2px 0 4px; font-size: 26px; font-weight: 600; word-break: break-word; }
.subtitle { font-size: 13px; }
.muted { color: var(--muted); }
nav.sections { position: sticky; top: 0; z-index: 10; background: rgba(255,255,255,.96);
  border-bottom: 1px solid var(--border); backdrop-filter: blur(4px); }
nav.sections .inner { display: flex; flex-wrap: wrap; gap: 2px 4px; padding-top: 6px; padding-bottom: 6px; }
nav.sections a { color: var(--muted); text-decoration: none; padding: 3px 10px; border-radius: 6px; font-size: 13px; }
nav.sections a:hover { color: var(--text); background: var(--bg); }
main.inner { padding-top: 20px; padding-bottom: 8px; }
.card { background: #ffffff; border: 1px solid var(--border); border-radius: 10px; padding: 16px 20px 18px;
  margin: 0 0 20px; scroll-margin-top: 56px; }
.card h2 { margin: 0 0 4px; font-size: 17px; font-weight: 600; }
.caption { margin: 0 0 10px; color: var(--muted); font-size: 13px; max-width: 900px; }
figure.chart { margin: 0; min-width: 0; }
.chart-title { font-size: 13px; font-weight: 600; margin: 2px 0 0 4px; word-break: break-word; }
.chart-note { font-size: 12px; color: var(--muted); margin: 2px 0 0 4px; }
.multiples { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 14px 20px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 10px; margin-top: 8px; }
.fact { border: 1px solid var(--border); border-radius: 8px; padding: 8px 12px; min-width: 0; }
.fact .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .05em; }
.fact .value { font-size: 15px; font-weight: 600; word-break: break-word; }
.fact .note { color: var(--muted); font-size: 12px; word-break: break-word; }
.state-finished { color: #0969da; } .state-failed { color: #cf222e; } .state-stopped { color: #57606a; }
.state-running, .state-paused, .state-stopping { color: #9a6700; }
.best-value { font-size: 15px; margin: 6px 0 8px; }
.best-value b { font-size: 22px; margin: 0 6px; }
.best-value .label { color: var(--muted); }
.ok { color: #1a7f37; font-size: 12px; }
table { border-collapse: separate; border-spacing: 0; font-variant-numeric: tabular-nums; }
table.kv th { text-align: left; font-weight: 500; color: var(--muted); padding: 3px 24px 3px 0; }
table.kv td { padding: 3px 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 13px; word-break: break-all; }
.table-wrap { max-height: 70vh; overflow: auto; border: 1px solid var(--border); border-radius: 8px; }
.table-wrap.short { max-height: 360px; margin-top: 12px; }
table.grid { width: 100%%; font-size: 13px; }
table.grid th { position: sticky; top: 0; z-index: 1; background: #f6f8fa; border-bottom: 1px solid var(--border);
  text-align: left; white-space: nowrap; padding: 0; font-weight: 600; }
table.grid th button { all: unset; display: block; cursor: pointer; padding: 6px 10px; width: 100%%;
  box-sizing: border-box; }
table.grid th.n, table.grid td.n { text-align: right; }
table.grid th button:hover { background: #eaeef2; }
table.grid th button:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
table.grid th[aria-sort=ascending] button::after { content: " \\25B2"; color: var(--accent); font-size: 10px; }
table.grid th[aria-sort=descending] button::after { content: " \\25BC"; color: var(--accent); font-size: 10px; }
table.schedule th, table.grid:not(.trials) th { padding: 6px 10px; }
table.grid td { padding: 4px 10px; border-bottom: 1px solid #eef1f4; white-space: nowrap; }
table.grid tbody tr:hover td { background: #f6f8fa; }
tr.best td { background: #ddf4ff !important; font-weight: 600; }
tr.s-pruned td { color: #8c959f; font-style: italic; }
tr.s-fail td { color: #cf222e; }
tr.s-infeasible td { background: #fff5f5; }
.tag { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 11px; font-style: normal;
  border: 1px solid var(--border); background: #f6f8fa; color: #57606a; }
.tag-complete { border-color: #b6e3c2; background: #dafbe1; color: #1a7f37; }
.tag-pruned { border-color: #d1d9e0; }
.tag-fail { border-color: #ffcecb; background: #ffebe9; color: #cf222e; }
.tag-infeasible { border-color: #ffcecb; background: #ffffff; color: #cf222e; font-weight: 600; }
footer { padding: 4px 24px 28px; font-size: 12px; }
@media print { nav.sections { display: none; } body { background: #fff; } .card { break-inside: avoid; }
  .table-wrap { max-height: none; } }
""" % {"font": FONT}

# Draws each chart from its JSON block; sorts the trial table by a clicked column (numbers by
# value, text by text, empty cells last, ties by trial number).
SCRIPT = """
(function () {
  // No button that would send a chart to a server: the report is offline, and may be private.
  var config = {responsive: true, displaylogo: false, showLink: false,
                modeBarButtonsToRemove: ['select2d', 'lasso2d', 'sendChartToCloud'],
                toImageButtonOptions: {format: 'svg'}};
  document.querySelectorAll('script.hpt-figure').forEach(function (block) {
    var figure = JSON.parse(block.textContent);
    Plotly.newPlot(block.getAttribute('data-target'), figure.data, figure.layout, config);
  });
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function (th, column) {
      th.querySelector('button').addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row) {
          var td = row.cells[column], v = td.getAttribute('data-v'), text = td.textContent;
          return {row: row, n: +row.getAttribute('data-n'), num: v === null ? null : +v, text: text};
        });
        var sign = ascending ? 1 : -1;
        rows.sort(function (a, b) {
          var ea = a.num === null && a.text === '', eb = b.num === null && b.text === '';
          if (ea !== eb) return ea ? 1 : -1;
          var d = 0;
          if (a.num !== null && b.num !== null) d = a.num - b.num;
          else if (a.num !== null || b.num !== null) d = a.num !== null ? -1 : 1;
          else d = a.text.localeCompare(b.text, undefined, {numeric: true});
          return d !== 0 ? sign * d : a.n - b.n;
        });
        var fragment = document.createDocumentFragment();
        rows.forEach(function (r) { fragment.appendChild(r.row); });
        body.appendChild(fragment);
      });
    });
  });
})();
"""
