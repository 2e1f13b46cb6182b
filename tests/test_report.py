"""run.report(path) / %tune report: one self-contained HTML file of a study.

Five studies run through the real API (a single objective with log, integer and choice knobs;
pruning with failures; constraints; two objectives; PBT). Their reports are checked twice: in
Python (each chart's plotly figure, validated by plotly's own schema, holds exactly the trials it
should) and in headless Chromium with the network cut off (every chart is drawn, the table has a
row per trial and sorts, hover names the trial, no tick labels collide, nothing is fetched, the
page logs no error). Screenshots go to test-artifacts/report/ for people to look at.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys

import pytest

from conftest import ROOT
from hpt_jupyter import start, tune
from hpt_jupyter.errors import TuneError
from hpt_jupyter.views.report import MISSING_PLOTLY

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "report"
XSS = "</script><img src=x onerror=window.__xss=1>"  # a choice that must show as text


# --- the studies ------------------------------------------------------------------------------


def single():
    lr = tune.float(1e-5, 1e-1, log=True)
    layers = tune.int(1, 8)
    width = tune.int(16, 512, log=True)
    activation = tune.choice(["relu", "tanh", XSS])
    penalty = {"relu": 0.0, "tanh": 0.05, XSS: 0.1}[activation]
    return (math.log10(lr) + 3) ** 2 + (layers - 5) ** 2 / 10 + abs(math.log2(width) - 7) / 3 + penalty


def pruned():
    lr = tune.float(1e-3, 1.0, log=True)
    momentum = tune.float(0.0, 0.99)
    if tune.trial.number % 9 == 4:
        raise ValueError("diverged: loss is nan")
    loss = 1.0
    for epoch in range(12):
        loss = loss * (1 - lr * (1 + momentum) / 2) + 0.01 * abs(math.log10(lr) + 1)
        tune.report(loss, epoch)
    return loss


def constrained():
    x = tune.float(0, 2)
    y = tune.float(0, 2)
    tune.constraint(x + y - 2, name="budget")  # feasible when x + y <= 2
    return -(x * y) + 0.1 * x


def two():
    size = tune.int(1, 64, log=True)
    dropout = tune.float(0.0, 0.5)
    return 1 / size + dropout / 4, 100 / size - dropout * 10  # error (minimise), speed (maximise)


def pbt():
    lr = tune.float(1e-3, 1.0, log=True)
    decay = tune.float(0.0, 0.2)
    state = tune.restore()
    step, q = state if state is not None else (0, 0.0)
    for _ in range(2):
        step += 1
        q += lr * (1 - q) - decay * lr * q
        tune.checkpoint((step, q))
        tune.report(q, step)
    return q


STUDIES = {
    "single": (single, dict(n_trials=100, sampler="tpe", seed=0)),
    "pruned": (pruned, dict(n_trials=30, sampler="tpe", seed=0, pruner="median(n_warmup_steps=2)",
                            max_failures=None)),
    "constrained": (constrained, dict(n_trials=40, sampler="tpe", seed=0)),
    "two": (two, dict(n_trials=40, sampler="random", seed=0, direction=["minimize", "maximize"])),
    "pbt": (pbt, dict(n_trials=32, sampler="random", seed=0, direction="maximize", scheduler="pbt", population=4,
                      interval=2)),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """name -> (run, path written, its text)."""
    folder = tmp_path_factory.mktemp("reports")
    found = {}
    for name, (objective, options) in STUDIES.items():
        run = start(objective, storage="memory", report=False, name=f"report-{name}", **options).wait()
        assert run.n_finished == options["n_trials"], run.status()
        path = run.report(str(folder / f"{name}.html"))
        with open(path, encoding="utf-8") as f:
            found[name] = (run, path, f.read())
    return found


# --- reading a report back --------------------------------------------------------------------

FIGURE = re.compile(r"<script type='application/json' class='hpt-figure' data-target='hpt-chart-([^']+)'>(.*?)</script>",
                    re.S)


def figures(text: str) -> dict[str, dict]:
    """Every chart's figure, each validated by plotly's schema (a misspelt property fails here)."""
    import plotly.graph_objects as go

    found = {}
    for key, block in FIGURE.findall(text):
        figure = json.loads(block)
        go.Figure(data=figure["data"], layout=figure["layout"])  # raises on what plotly.js would ignore
        found[key] = figure
    return found


def without_plotly(text: str) -> str:
    """The page with the plotly.js bundle left out: what the report itself wrote."""
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs().replace("</script", "<\\/script")
    assert text.count(bundle) == 1, "plotly.js must be inlined exactly once"
    return text.replace(bundle, "")


def trace(figure: dict, name_start: str) -> dict:
    matches = [t for t in figure["data"] if t.get("name", "").startswith(name_start)]
    assert len(matches) == 1, [t.get("name") for t in figure["data"]]
    return matches[0]


def table_numbers(text: str) -> list[int]:
    table = text[text.index("<table class='grid trials sortable'>"):]
    table = table[:table.index("</table>")]
    return [int(n) for n in re.findall(r"<tr class='[^']*' data-n='(\d+)'>", table)]


def states(run, *names: str) -> list[int]:
    return sorted(t.number for t in run.trials(states=None) if t.state.name in names)


# --- what each report holds -------------------------------------------------------------------


def test_a_single_objective_report_holds_every_chart_of_the_dashboard(reports):
    run, path, text = reports["single"]
    assert os.path.isabs(path) and path.endswith("single.html")
    own = without_plotly(text)
    # Nothing to fetch: no external script, style sheet, font or image; no MathJax.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", own, re.I), "an external resource"
    assert "<link" not in own and "@import" not in own and "@font-face" not in own
    assert "MathJax.js" not in own and "cdn." not in own
    charts = figures(text)
    assert set(charts) == {"history", "parallel", "importance", "slice-0", "slice-1", "slice-2", "slice-3"}

    history = charts["history"]
    complete = [t for t in run.trials()]
    assert sorted(trace(history, "trial")["x"]) == sorted(t.number for t in complete)
    best_line = trace(history, "best so far")
    assert best_line["y"][-1] == pytest.approx(run.best_value)
    assert trace(history, "best: trial")["x"] == [run.best_trial.number]
    labels = trace(history, "trial")["hovertext"]
    assert all(re.match(r"<b>trial #\d+</b> · ", label) and "lr = " in label for label in labels)

    axes = {charts[f"slice-{i}"]["layout"]["xaxis"]["title"]["text"]: charts[f"slice-{i}"] for i in range(4)}
    assert set(axes) == {"lr (log)", "layers", "width (log)", "activation"}
    assert axes["lr (log)"]["layout"]["xaxis"]["type"] == "log"
    assert axes["lr (log)"]["layout"]["xaxis"]["ticktext"] == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]
    assert axes["width (log)"]["layout"]["xaxis"]["type"] == "log"
    assert axes["layers"]["layout"]["xaxis"]["dtick"] == 1
    activation = axes["activation"]["layout"]["xaxis"]
    assert activation["type"] == "category"
    assert activation["categoryarray"] == ["relu", "tanh", html.escape(XSS)]
    for chart in axes.values():  # every complete trial in every slice
        assert len(chart["data"][0]["x"]) == run.n_complete

    parallel = charts["parallel"]["data"][0]
    assert [d["label"] for d in parallel["dimensions"]] == ["lr (log)", "layers", "width (log)", "activation",
                                                             "value (minimize)"]
    assert all(len(d["values"]) == run.n_complete for d in parallel["dimensions"])
    lr = parallel["dimensions"][0]
    assert lr["range"] == pytest.approx([-5, -1])  # log10 of the declared range

    importance = charts["importance"]["data"][0]
    assert set(importance["y"]) == {"lr", "layers", "width", "activation"}
    assert sum(importance["x"]) == pytest.approx(1.0, abs=0.02)

    assert table_numbers(text) == list(range(100))
    assert f"<tr class='s-complete best' data-n='{run.best_trial.number}'>" in text
    # The choice shows as text: escaped in the page, and no "</" inside a chart's JSON ends it early.
    assert "<img" not in FIGURE.sub("", own).lower()
    assert all("</" not in block for _, block in FIGURE.findall(own))
    for fact in ("report-single", "tpe", "seed 0", "100 complete", "memory", "budget reached (100 trials)"):
        assert fact in own, fact


def test_pruned_and_failed_trials_are_listed_but_not_plotted_as_values(reports):
    run, _, text = reports["pruned"]
    charts = figures(text)
    assert {"history", "intermediate"} <= set(charts)
    pruned_numbers, failed_numbers = states(run, "PRUNED"), states(run, "FAIL")
    assert pruned_numbers and failed_numbers
    assert sorted(charts["history"]["data"][0]["x"]) == states(run, "COMPLETE")
    curves = charts["intermediate"]["data"]
    by_kind: dict[str, list[int]] = {}
    for curve in curves:
        number = int(re.match(r"<b>trial #(\d+)</b>", curve["hovertext"]).group(1))
        by_kind.setdefault(curve["legendgroup"], []).append(number)
        if curve["legendgroup"] == "pruned":
            assert curve["line"]["dash"] == "dash" and curve["opacity"] < 0.6  # dimmed
    assert sorted(by_kind["pruned"]) == pruned_numbers
    assert by_kind["best"] == [run.best_trial.number]
    assert sum(len(v) for v in by_kind.values()) == len(run.trials(states=None)) - len(failed_numbers)
    assert table_numbers(text) == list(range(30))
    assert text.count("ValueError: diverged: loss is nan") == len(failed_numbers)
    assert len(re.findall(r"pruned at step \d+ \(last reported", text)) == len(pruned_numbers)


def test_infeasible_trials_are_marked_and_never_the_best(reports):
    run, _, text = reports["constrained"]
    charts = figures(text)
    trials = run.trials()
    infeasible = sorted(t.number for t in trials if t.constraints["budget"] > 0)
    assert infeasible and run.n_infeasible == len(infeasible)
    history = charts["history"]
    assert sorted(trace(history, "infeasible")["x"]) == infeasible
    assert sorted(trace(history, "trial")["x"]) == sorted(t.number for t in trials if t.number not in infeasible)
    assert trace(history, "infeasible")["marker"]["symbol"] == "x-thin-open"
    assert run.best_trial.number not in infeasible
    assert text.count("<span class='tag tag-infeasible'>infeasible</span>") == len(infeasible)
    best = text[text.index("id='best'"):text.index("id='history'")]
    assert "constraint budget" in best and "kept (&lt;= 0)" in best
    # Parallel coordinates: infeasible lines grey at a level of their own below the colour
    # range, which the feasible scores alone span, so its best end is the best feasible value.
    line = charts["parallel"]["data"][0]["line"]
    numbers = sorted(t.number for t in trials if t.state.name == "COMPLETE")
    assert len(line["color"]) == len(numbers)
    broken = [c for n, c in zip(numbers, line["color"]) if n in infeasible]
    kept = [c for n, c in zip(numbers, line["color"]) if n not in infeasible]
    assert set(broken) == {line["cmin"]} and min(kept) > line["cmin"]
    assert line["colorscale"][0][1] == line["colorscale"][1][1] == "#8c959f"
    grey_top = line["cmin"] + line["colorscale"][1][0] * (line["cmax"] - line["cmin"])
    assert min(kept) >= grey_top - 1e-9
    feasible_values = [t.value for t in trials if t.number not in infeasible and t.value is not None]
    assert min(feasible_values) - 1e-9 <= grey_top and line["cmax"] <= max(feasible_values) + 1e-9
    assert min(t.value for t in trials if t.number in infeasible) < min(feasible_values)  # they would have
    assert line["colorbar"]["ticktext"][0] == "infeasible"


def test_two_objectives_show_the_pareto_front(reports):
    run, _, text = reports["two"]
    charts = figures(text)
    assert set(charts) == {"pareto"}
    front = trace(charts["pareto"], "Pareto front")
    expected = sorted(run.pareto_front(), key=lambda t: t.values[0])
    assert front["x"] == [t.values[0] for t in expected] and front["y"] == [t.values[1] for t in expected]
    others = trace(charts["pareto"], "trial (")
    assert len(others["x"]) + len(front["x"]) == run.n_complete
    layout = charts["pareto"]["layout"]
    assert layout["xaxis"]["title"]["text"] == "objective 0 (minimize)"
    assert layout["yaxis"]["title"]["text"] == "objective 1 (maximize)"
    assert table_numbers(text) == list(range(40))
    assert "id='best'" not in text  # no one best: the front is listed under the chart
    assert f"{len(expected)} trials on the Pareto front" in text


def test_pbt_shows_the_lineage_and_the_best_members_schedule(reports):
    run, _, text = reports["pbt"]
    charts = figures(text)
    assert {"history", "intermediate", "lineage", "schedule"} <= set(charts)
    lineage = run.lineage()
    segments = trace(charts["lineage"], "segment")
    assert len(segments["x"]) == len(lineage)
    links = trace(charts["lineage"], "clones")
    assert len(links["x"]) == 3 * sum(1 for s in lineage if s.exploited)  # two ends and a gap each
    schedule = run.best_schedule
    score = charts["schedule"]["data"][0]
    assert score["y"] == pytest.approx([e["value"] for e in schedule])
    assert [t["name"] for t in charts["schedule"]["data"]] == ["score", "lr", "decay"]
    assert charts["schedule"]["layout"]["yaxis2"]["type"] == "log"
    table = text[text.index("<table class='grid schedule'>"):]
    assert table[:table.index("</table>")].count("<tr>") == len(schedule) + 1  # and the header
    assert table_numbers(text) == list(range(32))
    assert "<button type='button'>member</button>" in text


def test_a_report_of_100_trials_weighs_little_more_than_plotly_itself(reports):
    _, path, text = reports["single"]
    own = len(without_plotly(text).encode())
    assert os.path.getsize(path) - own > 3_000_000  # the bundle (measured here, not assumed)
    assert own < 250_000, f"the report's own part is {own} bytes for 100 trials"


# --- refusals ---------------------------------------------------------------------------------


def test_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    run = start(single, n_trials=3, storage="memory", report=False, name="refusals", sampler="random",
                seed=0).wait()
    cases = [
        (str(tmp_path / "study.txt"), "is not an .html file"),
        (str(tmp_path / "missing" / "study.html"), "does not exist; create it first"),
        ("", "give the file to write"),
    ]
    (tmp_path / "folder.html").mkdir()
    cases.append((str(tmp_path / "folder.html"), "is a folder"))
    for path, message in cases:
        with pytest.raises(TuneError, match=re.escape(message)) as caught:
            run.report(path)
        assert "\n" not in str(caught.value)
    # Without plotly: the one line that says what to install, and no file.
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.offline", None)
    with pytest.raises(TuneError) as caught:
        run.report(str(tmp_path / "study.html"))
    assert str(caught.value) == MISSING_PLOTLY
    assert sorted(os.listdir(tmp_path)) == ["folder.html"]


def test_the_magic_writes_the_report_and_says_where(kernel, tmp_path):
    cell = kernel.run("%%tune -n 12 --name magic --storage memory --sampler random --seed 0 --quiet\n"
                      "x = tune.float(-2, 2)\nkind = tune.choice(['a', 'b'])\nx ** 2 + (kind == 'b')")
    assert cell.error is None, cell.error_text
    reply = kernel.run("%tune report magic magic.html")
    assert reply.error is None, reply.error_text
    written = tmp_path / "magic.html"
    assert written.exists()
    assert f"'magic': report written to {written}" in reply.stdout and "MB" in reply.stdout
    assert table_numbers(written.read_text(encoding="utf-8")) == list(range(12))
    refused = kernel.run("%tune report magic magic.pdf")
    assert refused.error is not None and "FILE.html" in refused.stderr + refused.error_text


# --- in a browser, offline --------------------------------------------------------------------

# Per chart: what plotly drew, and every pair of tick labels of one axis (or an axis title and a
# tick label of its axis) that overlap, and legends over the plot area.
MEASURE = """
() => {
  const hit = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
    && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const shown = (e) => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; };
  const charts = {};
  for (const plot of document.querySelectorAll('div.plot')) {
    const problems = [];
    const axes = {};
    for (const text of plot.querySelectorAll('g[class$="tick"] > text')) {
      const axis = text.parentNode.getAttribute('class');
      if (text.textContent.trim() && shown(text)) (axes[axis] = axes[axis] || []).push(text);
    }
    for (const [axis, ticks] of Object.entries(axes)) {
      for (let i = 0; i < ticks.length; i++) for (let j = i + 1; j < ticks.length; j++) {
        if (hit(ticks[i].getBoundingClientRect(), ticks[j].getBoundingClientRect()))
          problems.push(`${axis}: '${ticks[i].textContent}' and '${ticks[j].textContent}'`);
      }
      const title = plot.querySelector(`g.g-${axis.replace('tick', '')}title text`);
      if (title && shown(title)) for (const t of ticks) {
        if (hit(title.getBoundingClientRect(), t.getBoundingClientRect()))
          problems.push(`title '${title.textContent}' and '${t.textContent}'`);
      }
    }
    const area = plot.querySelector('.draglayer .nsewdrag');
    const legend = plot.querySelector('g.legend');
    if (area && legend && shown(legend) && hit(area.getBoundingClientRect(), legend.getBoundingClientRect()))
      problems.push('the legend covers the plot');
    charts[plot.id] = {
      svg: plot.querySelectorAll('.main-svg').length,
      traces: plot.querySelectorAll('.scatterlayer .trace').length,
      marks: plot.querySelectorAll('.scatterlayer .point, .scatterlayer path.js-line, .barlayer .point').length,
      parcoords: plot.querySelectorAll('.parcoords').length,
      parcoordsAxes: plot.querySelectorAll('.parcoords .y-axis').length,
      canvases: plot.querySelectorAll('canvas').length,
      share: plot.querySelectorAll('.modebar-btn[data-title^="Share"]').length,
      width: plot.getBoundingClientRect().width,
      problems,
    };
  }
  return {charts, rows: document.querySelectorAll('table.trials tbody tr').length,
          images: document.querySelectorAll('img').length, xss: window.__xss === undefined ? null : window.__xss};
}
"""


def test_every_report_draws_offline_in_a_browser(reports):
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    fetched: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)

        def cut(route):  # any request that is not the file itself is a failure, and goes nowhere
            if not route.request.url.startswith("file://"):
                fetched.append(route.request.url)
                return route.abort()
            return route.continue_()

        context.route("**/*", cut)
        context.on("request", lambda r: None if r.url.startswith(("file://", "data:")) else fetched.append(r.url))
        for name, (run, path, text) in reports.items():
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(f"file://{path}")
            expected = set(figures(text))
            page.wait_for_function(f"document.querySelectorAll('div.plot .main-svg').length >= {len(expected)}")
            page.wait_for_timeout(300)  # parcoords draws its lines a frame later
            seen = page.evaluate(MEASURE)
            charts = seen["charts"]
            assert set(charts) == {f"hpt-chart-{key}" for key in expected}, name
            for key, chart in charts.items():
                assert chart["svg"] > 0, (name, key)
                if key == "hpt-chart-parallel":
                    assert chart["parcoords"] == 1 and chart["canvases"] > 0, (name, chart)
                    dims = len(figures(text)["parallel"]["data"][0]["dimensions"])
                    assert chart["parcoordsAxes"] == dims, (name, chart)
                else:
                    assert chart["marks"] > 0, (name, key, chart)
                assert chart["width"] >= 360, (name, key, chart)  # no chart squeezed
                assert chart["share"] == 0, (name, key)  # no button sends the chart to a server
                assert not chart["problems"], (name, key, chart["problems"])
            assert seen["rows"] == run.n_finished, name
            assert seen["images"] == 0 and seen["xss"] is None, name
            if name == "single":
                _check_hover_and_sorting(page, run)
            page.evaluate("window.scrollTo(0, 0)")  # the sticky section bar at the top, where it belongs
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            assert not errors, (name, errors)
            page.close()
        browser.close()
    assert not fetched, f"the report tried to fetch: {fetched}"


def _check_hover_and_sorting(page, run) -> None:
    # Hover over the best trial's ring: its label names the trial and its knobs.
    best = run.best_trial.number
    point = page.locator("#hpt-chart-history .scatterlayer .trace").last.locator(".point").first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    label = page.locator("#hpt-chart-history .hoverlayer .hovertext")
    label.first.wait_for()
    text = label.first.text_content()
    assert f"trial #{best}" in text and "lr = " in text and "activation = " in text, text
    # Sort by value: the best first (minimised), then the other way round.
    header = page.locator("table.trials thead button", has_text=re.compile(r"^value$"))
    header.click()
    first = page.locator("table.trials tbody tr").first
    assert first.get_attribute("data-n") == str(best)
    header.click()
    worst = max(run.trials(), key=lambda t: t.value).number
    assert page.locator("table.trials tbody tr").first.get_attribute("data-n") == str(worst)
    page.locator("table.trials thead button", has_text=re.compile(r"^#$")).click()
    assert page.locator("table.trials tbody tr").first.get_attribute("data-n") == "0"
