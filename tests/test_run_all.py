"""Run All, as users run notebooks: each shipped notebook in a real JupyterLab and in Jupyter
Notebook 7, in headless Chromium. While a later cell waits for a study, every
page button of that study's dashboard works and Stop ends the study early; then the waiting
cell finishes.

The first study of each notebook gets twenty times its budget here, so that it is still
running when the later cell starts waiting, and that cell could never finish unless Stop acts.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_browser import (ARTIFACTS, TOKEN, _run_all, _run_all_in_notebook7, lab, notebook7,  # noqa: F401
                          page)  # lab and notebook7: fixtures, asked for by name below
from conftest import ROOT

MEASURE = (ROOT / "tests" / "dom_checks.js").read_text()

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


def _with_a_long_first_study(source: Path, target: Path) -> str:
    """Copy a notebook with its first %%tune cell's budget raised (twenty-fold, and to at least
    3,000 trials: some notebooks' trials take milliseconds); its study's name."""
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%tune"))
    first, rest = cell.source.split("\n", 1)
    first = re.sub(r"-n (\d+)", lambda m: f"-n {max(int(m.group(1)) * 20, 3000)}", first)
    first = first.replace(" --stop auto", "")  # the test stops it, not the rule
    cell.source = f"{first}\n{rest}"
    nbformat.write(nb, target)
    return re.search(r"--name (\S+)", first).group(1)


def _shut_down_kernels(url: str) -> None:
    """Each notebook's kernel goes when its test is done: two cores run one study at a time."""
    sessions = json.load(urllib.request.urlopen(f"{url}/api/sessions?token={TOKEN}"))
    for session in sessions:
        request = urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={TOKEN}", method="DELETE")
        urllib.request.urlopen(request)


def _stop_while_a_later_cell_waits(page, study: str, shot: str) -> None:  # noqa: F811
    waiting = page.locator(".jp-Cell", has=page.locator(".jp-OutputArea-output", has_text=f"Waiting for '{study}'"))
    waiting.first.wait_for(timeout=240_000)
    board = page.locator(".hpt-dashboard", has=page.locator(".hpt-header-main", has_text=study)).first
    header = board.locator(".hpt-header-main")
    header.filter(has_text="running").wait_for(timeout=60_000)

    # Every page button acts while the cell waits: the page shows what it should, and reads
    # (here beside the Steer panel, so narrower than on a finished study).
    problems = []
    buttons = board.locator(".hpt-pages .widget-toggle-button")
    page.wait_for_function(  # the page buttons have rendered, each with its name
        "study => { const board = [...document.querySelectorAll('.hpt-dashboard')].find(d =>"
        " d.querySelector('.hpt-header-main')?.textContent.startsWith(study + ' '));"
        " const buttons = board ? [...board.querySelectorAll('.hpt-pages .widget-toggle-button')] : [];"
        " return buttons.length >= 6 && buttons.every(e => e.textContent.trim()); }", arg=study, timeout=30_000)
    for title in [t.strip() for t in buttons.all_text_contents()]:
        board.locator(f".hpt-pages .widget-toggle-button:text-is('{title}')").click()
        # The page asked for is attached (the kernel handles the click while the cell waits),
        # then what it shows: while the study runs, Importance says when it will be computed,
        # and Intermediate, in a study whose cell never calls tune.report, says how to.
        slug = title.lower().replace(" ", "-")
        expected = {"Trials": "table.hpt-trials", "Importance": ".widget-html-content"}.get(title, ".bqplot.figure")
        try:
            shown = board.locator(f".hpt-page .hpt-page-{slug}")
            shown.wait_for(state="attached", timeout=20_000)
            if title == "Intermediate":  # curves, or the sentence (drawn just after the page attaches)
                shown.locator(".bqplot.figure, :text('No trial has reported an intermediate value')").first.wait_for(
                    state="attached", timeout=20_000)
                if not shown.locator(".bqplot.figure").count():
                    expected = ".widget-html-content"
            shown.locator(expected).first.wait_for(state="attached", timeout=20_000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{shot}-page-{title.lower()}.png"))
            raise
        if expected != ".bqplot.figure":  # a table, or a sentence: nothing to measure as a chart
            continue
        time.sleep(1.0)
        measured = board.evaluate(MEASURE)
        if measured["span"] is not None and measured["span"] < 0.9:
            problems.append(f"{title}: charts span {measured['span']:.2f} of the page")
        problems += [f"{title}: {o}" for o in measured["overlaps"]]
    assert problems == [], problems
    first = buttons.first.text_content().strip()  # History (or Pareto front): the live chart, for the picture
    buttons.first.click()
    board.locator(f".hpt-page .hpt-page-{first.lower().replace(' ', '-')} .bqplot.figure").wait_for(timeout=20_000)
    time.sleep(1.0)
    page.screenshot(path=str(ARTIFACTS / f"{shot}-waiting.png"))
    before = int(re.search(r"(\d+)/\d+ trials", header.inner_text()).group(1))

    # Stop acts: the study ends long before its budget, and the waiting cell goes on; its line
    # says how the wait ended (later cells may change the study at once, so not the header).
    board.locator(".widget-button:has-text('Stop')").click()
    ended = page.locator(".jp-OutputArea-output", has_text=f"for '{study}' (stopped: ").first
    ended.wait_for(timeout=90_000)
    finished, budget = map(int, re.search(r"\(stopped: (\d+)/(\d+) trials", ended.inner_text()).groups())
    assert finished < budget / 2, (before, finished, budget)
    assert ended.inner_text().startswith("Waited ")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-stopped.png"))


@pytest.mark.parametrize("frontend", ["jupyterlab", "notebook7"])
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_keeps_the_dashboard_alive_while_a_later_cell_waits(request, page, frontend, name):  # noqa: F811
    url, root = request.getfixturevalue("lab" if frontend == "jupyterlab" else "notebook7")
    study = _with_a_long_first_study(ROOT / "notebooks" / name, root / name)
    try:
        (_run_all if frontend == "jupyterlab" else _run_all_in_notebook7)(page, url, name)
        _stop_while_a_later_cell_waits(page, study, f"run-all-{frontend}-{Path(name).stem}")
        assert page.console_errors == [], page.console_errors
    finally:
        _shut_down_kernels(url)
