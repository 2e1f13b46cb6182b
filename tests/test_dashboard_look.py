"""How the dashboard reads, judged from the DOM of a real JupyterLab in headless Chromium.

Three finished studies (an ordinary one with a log, an integer and a categorical knob and
`tune.report` curves; one under Hyperband; one under PBT) run with Run All at 1500x1000. On
every page of every dashboard: the charts span at least 90% of the page's width, no two tick
labels of an axis overlap, no axis label overlaps its ticks or sits in the plot, no legend covers
a plot; hover names the trial and its score, a click on a point brings its row to the table, the
table's header stays in view when scrolled; the page logs no console error. Screenshots of every page
go to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import re
import time

from test_browser import ARTIFACTS, _notebook, _run_all, lab, page  # noqa: F401  (fixtures)
from conftest import ROOT

MEASURE = (ROOT / "tests" / "dom_checks.js").read_text()

CELLS = [
    # Two GPUs as a GPU server's scheduler would give the kernel (no CUDA is used: the Hyperband
    # study runs one thread slot per device, and its table says which trial ran where).
    "%load_ext hpt_jupyter\nimport math, os, time\nos.environ['CUDA_VISIBLE_DEVICES'] = '0,1'",
    # an ordinary study: a log knob, an integer knob (one on a log scale), a choice, curves
    "%%tune -n 30 --direction maximize --seed 0 --name ordinary --storage memory\n"
    "lr = tune.float(1e-5, 1e-1, log=True)\nlayers = tune.int(1, 8)\nwidth = tune.int(16, 512, log=True)\n"
    "activation = tune.choice(['relu', 'tanh', 'gelu'])\n"
    "for epoch in range(1, 21):\n"
    "    score = 1 - math.exp(-epoch * lr * 50) * (1 + abs(math.log10(lr) + 3) / 3) / (1 + layers / 8)"
    " - 0.001 * width / 64\n"
    "    tune.report(score, epoch)\n"
    "time.sleep(0.05)\nscore",
    "%%tune -n 30 --direction maximize --seed 0 --name hyperband --storage memory --gpus-per-trial 1 "
    "--pruner \"hyperband(min_resource=1, max_resource=20, reduction_factor=3)\"\n"
    "lr = tune.float(1e-5, 1e-1, log=True)\nlayers = tune.int(1, 8)\n"
    "for epoch in range(1, 21):\n"
    "    score = 1 - math.exp(-epoch * lr * 50) * (1 + abs(math.log10(lr) + 3) / 3) / (1 + layers / 8)\n"
    "    tune.report(score, epoch)\n"
    "    time.sleep(0.005)\nscore",
    "%%tune -n 40 --direction maximize --seed 0 --name pbt --storage memory --scheduler pbt --population 4"
    " --interval 5\n"
    "lr = tune.float(1e-4, 1.0, log=True)\nalpha = tune.float(1e-6, 1e-1, log=True)\n"
    "state = tune.restore()\nstep, q = state if state is not None else (0, 0.0)\n"
    "while step < 30:\n    step += 1\n    q += lr * (1 - q) - alpha\n    tune.checkpoint((step, q))\n"
    "    tune.report(q, step)\nq",
    # constraints: maximise x + 2y with x + y <= 1 (best feasible (0, 1), value 2); the rest is marked
    "%%tune -n 25 --direction maximize --seed 0 --name constrained --storage memory\n"
    "x = tune.float(0, 1)\ny = tune.float(0, 1)\ntune.constraint(x + y - 1)\ntime.sleep(0.02)\nx + 2 * y",
    "print('done:', lr, layers, x)",  # waits for the studies (Run All)
]


def _dashboard(page, name: str):  # noqa: F811
    return page.locator(".hpt-dashboard", has=page.locator(".hpt-header-main", has_text=name)).first


def test_every_page_of_every_dashboard_reads_at_a_glance(lab, page):  # noqa: F811
    url, root = lab
    page.set_viewport_size({"width": 1500, "height": 1000})
    _notebook(root / "look.ipynb", CELLS)
    _run_all(page, url, "look.ipynb")
    page.locator(".jp-OutputArea-output pre", has_text="done:").wait_for(timeout=240_000)

    problems = []
    for name in ("ordinary", "hyperband", "pbt", "constrained"):
        board = _dashboard(page, name)
        board.locator(".hpt-header-main", has_text="finished").wait_for(timeout=60_000)
        board.scroll_into_view_if_needed()
        pages = board.locator(".hpt-pages .widget-toggle-button").all_inner_texts()
        expected = {"History", "Trials", "Slices", "Parallel", "Importance"}
        if name != "constrained":  # its trials report no curve
            expected.add("Intermediate")
        if name == "pbt":
            expected |= {"Lineage", "Schedule"}
        assert {p.strip() for p in pages} >= expected, pages
        for title in pages:
            board.locator(f".hpt-pages .widget-toggle-button:text-is('{title}')").click()
            slug = title.strip().lower().replace(" ", "-")
            # the page box changes when the kernel has handled the click
            board.locator(f".hpt-page .hpt-page-{slug}").wait_for(state="attached", timeout=15_000)
            if title == "Importance" and board.locator(".hpt-page", has_text="needs at least 10").count():
                # too few complete trials (Hyperband pruned most): a sentence, not an empty chart
                assert board.locator(".hpt-page .bqplot.figure").count() == 0
                continue
            if title == "Intermediate" and name == "constrained":
                # its cell never calls tune.report: a sentence saying how to, not an empty chart
                board.locator(".hpt-page", has_text="No trial has reported an intermediate value").wait_for(
                    timeout=15_000)
                assert board.locator(".hpt-page .bqplot.figure").count() == 0
                board.screenshot(path=str(ARTIFACTS / f"look-{name}-intermediate.png"))
                continue
            if title != "Trials":
                board.locator(".hpt-page .bqplot.figure").first.wait_for(timeout=15_000)
            time.sleep(1.0)  # the writer's next refresh, and the figure's own transition
            measured = board.evaluate(MEASURE)
            board.screenshot(path=str(ARTIFACTS / f"look-{name}-{title.strip().lower()}.png"))
            if title == "Trials":
                continue
            if measured["span"] is None or measured["span"] < 0.9:
                problems.append(f"{name}/{title}: charts span {measured['span']} of {measured['pageWidth']} px")
            problems += [f"{name}/{title}: {o}" for o in measured["overlaps"]]
            problems += [f"{name}/{title}: a legend covers the plot of {t}" for t in measured["legendsOverPlots"]]
    assert problems == [], problems

    # Where each trial ran: the header says how the GPUs were shared out, the table has a column.
    board = _dashboard(page, "hyperband")
    assert "2 thread slots · 1 GPU each" in board.locator(".hpt-header-details").inner_text()
    board.locator(".hpt-pages .widget-toggle-button:text-is('Trials')").click()
    board.locator("table.hpt-trials th", has_text="device").wait_for(timeout=10_000)
    headers = board.locator("table.hpt-trials th").all_inner_texts()
    column = headers.index("device")
    devices = {row.locator("td").nth(column).inner_text()
               for row in board.locator("table.hpt-trials tbody tr").all()}
    assert devices == {"GPU 0", "GPU 1"}, devices

    # Trials that broke a constraint: counted in the header, tagged in the table, crossed in the
    # history; the best is feasible.
    board = _dashboard(page, "constrained")
    header = board.locator(".hpt-header-main").inner_text()
    infeasible = int(re.search(r"(\d+) infeasible", header).group(1))
    header_best = re.search(r"best ([\d.]+)", header).group(1)
    best = float(header_best)
    assert infeasible > 0 and 1.8 < best <= 2.0, header
    board.locator(".hpt-pages .widget-toggle-button:text-is('Trials')").click()
    board.locator("table.hpt-trials tbody tr.hpt-infeasible").first.wait_for(timeout=10_000)
    states = board.locator("table.hpt-trials tbody tr td:nth-child(2)").all_inner_texts()
    assert states.count("infeasible") == min(infeasible, len(states)), states
    board.locator(".hpt-pages .widget-toggle-button:text-is('History')").click()
    title = board.locator(".hpt-page .bqplot .mainheading").first
    title.wait_for(timeout=10_000)
    assert "red ×: broke a constraint" in title.text_content()  # SVG text
    # The parallel coordinates' colour bar ends at the best feasible score; the rest are grey.
    board.locator(".hpt-pages .widget-toggle-button:text-is('Parallel')").click()
    legend = board.locator(".hpt-page .hpt-legend", has_text="colour: value").first
    legend.wait_for(timeout=10_000)
    legend_best = float(re.search(r"best ([\d.]+)", legend.inner_text()).group(1))  # 4 significant digits
    assert legend_best == float(f"{float(header_best):.4g}"), (legend.inner_text(), header)
    assert "broke a constraint" in board.locator(".hpt-page").first.inner_text()

    # Hover names the trial and its score; a click on a point brings its row to the top of the
    # table and names its knobs.
    board = _dashboard(page, "ordinary")
    board.locator(".hpt-pages .widget-toggle-button:text-is('History')").click()
    # every point in view: under the robust range, a point outside it is drawn off the plot
    board.locator(".hpt-page .widget-toggle-button:text-is('all points')").click()
    time.sleep(1.0)
    dot = board.locator(".hpt-page .bqplot path.dot").nth(5)
    dot.hover(force=True)  # points may overlap: the one on top answers
    tooltip = page.locator(".bqplot_mark_tooltip").filter(visible=True).filter(has_text="trial").first
    tooltip.wait_for(timeout=10_000)
    hovered = re.search(r"trial\s*(\d+)", tooltip.inner_text()).group(1)
    assert "value" in tooltip.inner_text()
    dot.click(force=True)
    note = board.locator(".hpt-page", has_text=f"Trial #{hovered} selected")
    note.wait_for(timeout=10_000)
    assert "lr=" in note.inner_text()
    board.locator(".hpt-pages .widget-toggle-button:text-is('Trials')").click()
    first = board.locator("table.hpt-trials tbody tr.hpt-selected").first
    first.wait_for(timeout=10_000)
    assert first.locator("td").first.inner_text() == hovered
    board.locator(".hpt-pages .widget-toggle-button:text-is('Slices')").click()
    board.locator(".hpt-page .bqplot path.dot").nth(3).hover(force=True)
    # read while it shows: the tooltip fades when the pointer's dot is redrawn
    said = page.wait_for_function("""() => {
        for (const tip of document.querySelectorAll('.bqplot_mark_tooltip')) {
            const style = getComputedStyle(tip);
            if (style.display !== 'none' && style.visibility !== 'hidden' && style.opacity !== '0'
                && tip.innerText.includes('score')) return tip.innerText;
        }
        return null;
    }""", timeout=10_000).json_value()
    assert re.search(r"trial\s*\d+", said) and "lr" in said, said

    # The table's header stays in view when its rows scroll (PBT: 40 rows, a member column).
    board = _dashboard(page, "pbt")
    board.locator(".hpt-pages .widget-toggle-button:text-is('Trials')").click()
    board.locator("table.hpt-trials th", has_text="member").wait_for(timeout=10_000)
    scroller = board.locator(".hpt-table-scroll")
    assert scroller.evaluate("e => e.scrollHeight > e.clientHeight"), "too few rows to scroll"
    scroller.evaluate("e => { e.scrollTop = e.scrollHeight; }")
    time.sleep(0.3)
    header_top = board.locator("table.hpt-trials th").first.evaluate("e => e.getBoundingClientRect().top")
    scroller_top = scroller.evaluate("e => e.getBoundingClientRect().top")
    assert abs(header_top - scroller_top) < 2, (header_top, scroller_top)
    chosen = board.locator("select").evaluate_all(  # ipywidgets writes labels with no-break spaces
        "els => els.map(e => e.options[e.selectedIndex]?.text.replace(/\u00a0/g, ' '))")
    assert "failed trials: none" in chosen, chosen
    cells = board.locator("table.hpt-trials tbody tr").first.locator("td")
    assert cells.last.inner_text().endswith(" s")  # durations formatted
    assert cells.nth(3).evaluate("e => getComputedStyle(e).textAlign") == "right"  # numbers aligned
    assert page.console_errors == [], page.console_errors
