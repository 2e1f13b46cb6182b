"""The dashboard in a real JupyterLab, driven in headless Chromium (Debian's package) by Playwright.

Playwright cannot download its own browser here, so it launches /usr/bin/chromium, which
.ci/run installs with apt-get. Assertions are on the DOM, never on pixels; screenshots go
to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "hpt-test-token"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temp folder."""
    root = tmp_path_factory.mktemp("lab")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Workspaces and settings of its own: nothing from the user's ~/.jupyter leaks in (a
    # remembered workspace would reopen other notebooks), and no news prompt.
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly", f"--LabApp.workspaces_dir={root / 'workspaces'}",
         f"--LabApp.user_settings_dir={root / 'settings'}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.3)
    yield url, root
    server.terminate()
    server.wait(30)


@pytest.fixture
def page():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.console_errors = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        yield page
        browser.close()


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _run_all(page, url: str, name: str) -> None:
    workspace = Path(name).stem  # a fresh workspace per notebook: only this one is open
    page.goto(f"{url}/lab/workspaces/{workspace}/tree/{name}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel is up
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def test_quickstart_dashboard_through_tune_and_stop_in_jupyterlab(lab, page):
    """The product path: the quickstart's %%tune cell, then a slow %%tune cell to stop."""
    url, root = lab
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "%%tune -n 500 --name slow-stop --storage memory\n"
        "x = tune.float(0, 1)\nimport time\ntime.sleep(0.2)\nx"))
    nbformat.write(nb, root / "quickstart.ipynb")
    _run_all(page, url, "quickstart.ipynb")

    headers = page.locator(".widget-html-content", has_text="sampler")
    page.wait_for_function(
        "[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.includes('30/30 trials'))",
        timeout=120_000)
    page.locator(".jp-OutputArea-output pre", has_text="held-out accuracy:").wait_for(
        timeout=60_000)  # the later cell waited for the study and saw the names
    quickstart = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="svc ·")).first
    assert "finished" in quickstart.locator(".widget-html-content", has_text="sampler").inner_text()
    assert quickstart.locator(".bqplot path.dot").count() >= 30
    quickstart.locator(".widget-toggle-button:has-text('Trials')").click()
    quickstart.locator("table.hpt-trials tbody tr").nth(29).wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "quickstart-trials.png"))

    slow = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="slow-stop")).first
    slow.locator(".widget-html-content", has_text="running").wait_for(timeout=60_000)
    slow.locator(".widget-button:has-text('Stop')").click()
    slow.locator(".widget-html-content", has_text="● stopped").wait_for(timeout=15_000)
    assert headers.count() == 2
    page.screenshot(path=str(ARTIFACTS / "quickstart-stopped.png"))
    assert page.console_errors == [], page.console_errors


def test_dashboard_renders_fills_and_stops_in_jupyterlab(lab, page):
    url, root = lab
    _notebook(root / "board.ipynb", [
        "%load_ext hpt_jupyter\nfrom IPython.display import display\nfrom hpt_jupyter import start, tune\n"
        "from hpt_jupyter.views.dashboard import Dashboard\nimport time",
        "def slow():\n    time.sleep(0.15)\n    x = tune.float(-2, 2)\n"
        "    label = tune.choice(['<img src=x onerror=alert(1)>', 'plain'])\n    return (x - 0.5) ** 2\n"
        "run = start(slow, n_trials=400, storage='memory', report=False, name='browser', seed=0, launch=False)\n"
        "board = Dashboard(run)\ndisplay(board.widget)\nrun.start()",
    ])
    _run_all(page, url, "board.ipynb")

    # The history fills: one dot per complete trial, and the best-so-far line.
    page.wait_for_function("document.querySelectorAll('.bqplot path.dot').length >= 15", timeout=60_000)
    assert page.get_attribute(".bqplot path.line", "d")
    header = page.locator(".widget-html-content", has_text="sampler")
    assert "running" in header.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"))

    # The table fills, and the HTML probe shows as text, not as an element.
    page.click(".widget-toggle-button:has-text('Trials')")
    page.wait_for_function("document.querySelectorAll('table.hpt-trials tbody tr').length >= 15", timeout=30_000)
    cells = page.eval_on_selector_all("table.hpt-trials td", "els => els.map(e => e.textContent)")
    assert "<img src=x onerror=alert(1)>" in cells
    assert page.eval_on_selector_all("table.hpt-trials img", "els => els.length") == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-trials.png"))

    # Stop from the button: the state changes in the header.
    page.click(".widget-button:has-text('Stop')")
    page.wait_for_function(
        "[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.includes('● stopped'))",
        timeout=15_000)
    text = header.inner_text()
    finished = int(text.split(" trials")[0].split("·")[-1].split("/")[0])
    assert 15 <= finished < 400
    page.screenshot(path=str(ARTIFACTS / "dashboard-stopped.png"))

    # Every other page draws its marks; none logs an error.
    for name, selector in [("Slices", ".bqplot path.dot"), ("Parallel", ".bqplot path.line"),
                           ("Importance", ".bqplot rect.bar"), ("History", ".bqplot path.dot")]:
        page.click(f".widget-toggle-button:has-text('{name}')")
        page.wait_for_selector(selector, timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name.lower()}.png"))
    assert page.console_errors == [], page.console_errors


def test_dragging_a_range_slider_narrows_the_running_search_in_jupyterlab(lab, page):
    url, root = lab
    _notebook(root / "steer.ipynb", [
        "%load_ext hpt_jupyter",
        "%%tune -n 600 --name drag --storage memory --seed 0\n"
        "x = tune.float(-5, 5)\ny = tune.float(-5, 5)\nimport time\ntime.sleep(0.1)\n(x - 1) ** 2 + y ** 2",
    ])
    _run_all(page, url, "steer.ipynb")
    page.locator(".widget-html-content", has_text="running").first.wait_for(timeout=90_000)

    # Drag the lower handle of x's range slider to the right half of its track.
    slider = page.locator(".widget-hslider", has=page.locator("label.widget-label", has_text="x")).first
    handle = slider.locator(".noUi-handle-lower")
    track = slider.locator(".noUi-base").bounding_box()
    start = handle.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.6, start["y"] + start["height"] / 2, steps=10)
    page.mouse.up()

    message = page.locator(".widget-html-content", has_text="(slider)").first
    message.wait_for(timeout=20_000)
    text = message.inner_text()  # "Searching x 0.99 .. 5 from the next trial on (slider)."
    low, high = (float(v) for v in text.split("Searching x ")[1].split(" from")[0].split(" .. "))
    assert 0 < low < 3 and high == 5
    page.locator(".widget-html-content", has_text="Narrowings").first.wait_for(timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "steer-dragged.png"))
    time.sleep(3)  # about 25 trials asked in the narrowed space

    # The newest trials, in the table sorted by number, newest first, all lie in the range.
    page.click(".widget-toggle-button:has-text('Trials')")
    page.locator("table.hpt-trials tbody tr").first.wait_for(timeout=10_000)
    page.select_option(".widget-dropdown:has(label:text-is('sort by')) select", "#")
    page.click(".widget-toggle-button:has-text('ascending')")
    page.locator(".widget-toggle-button:has-text('descending')").wait_for(timeout=10_000)
    time.sleep(1)
    headers = page.eval_on_selector_all("table.hpt-trials th", "els => els.map(e => e.textContent)")
    rows = page.eval_on_selector_all(
        "table.hpt-trials tbody tr", "rows => rows.slice(0, 10).map(r => [...r.cells].map(c => c.textContent))")
    column = headers.index("x")
    newest = [float(row[column]) for row in rows if row[1] == "complete"]
    page.screenshot(path=str(ARTIFACTS / "steer-trials.png"))
    assert len(newest) >= 5 and all(low - 1e-6 <= x <= high for x in newest), (low, newest, rows[:3])
    page.screenshot(path=str(ARTIFACTS / "steer-trials.png"))
    page.click(".widget-button:has-text('Stop')")
    page.locator(".widget-html-content", has_text="● stopped").first.wait_for(timeout=15_000)
    assert page.console_errors == [], page.console_errors


def test_tuning_sidebar_and_status_bar_follow_steer_and_stop_studies(lab, page):
    """The JupyterLab extension (js/): activates cleanly, lists the quickstart's study live in
    the sidebar and the status bar, stops a study from the sidebar, goes to its cell."""
    url, root = lab
    ready = []
    page.on("console", lambda m: ready.append(m.text) if "Tuning sidebar is ready" in m.text else None)
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "%%tune -n 500 --name sidebar-slow --storage memory\nx = tune.float(0, 1)\nimport time\ntime.sleep(0.2)\nx"))
    nbformat.write(nb, root / "sidebar.ipynb")
    _run_all(page, url, "sidebar.ipynb")
    assert ready, "the extension did not activate"

    # The sidebar (left area, "Tuning" tab) lists both studies; the status bar counts them.
    page.click(".jp-SideBar [title='Tuning']")
    sidebar = page.locator("#hpt-jupyter-sidebar")
    svc = sidebar.locator(".hpt-study[data-study='svc']")
    svc.wait_for(timeout=90_000)
    slow = sidebar.locator(".hpt-study[data-study='sidebar-slow']")
    slow.wait_for(timeout=90_000)
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='svc'] .hpt-study-counts\")?.textContent === '30/30 trials'",
        timeout=120_000)
    assert svc.locator(".hpt-study-state").inner_text() == "finished"
    assert svc.locator(".hpt-study-best").inner_text().startswith("best 0.9")
    assert svc.locator("svg.hpt-sparkline polyline").get_attribute("points")
    status = page.locator(".hpt-status-text")
    status.wait_for(timeout=30_000)
    assert status.inner_text().startswith("Tuning 1 running")
    assert page.locator(".hpt-status-progress").is_visible()
    page.screenshot(path=str(ARTIFACTS / "sidebar-running.png"))

    # A click on the status bar item opens the sidebar; so does the shortcut (Alt+Shift+T).
    page.click(".jp-SideBar [title='Tuning']")  # collapse the sidebar
    sidebar.wait_for(state="hidden", timeout=10_000)
    page.click(".hpt-status")
    sidebar.wait_for(state="visible", timeout=10_000)
    page.click(".jp-SideBar [title='Tuning']")
    sidebar.wait_for(state="hidden", timeout=10_000)
    page.keyboard.press("Alt+Shift+T")
    sidebar.wait_for(state="visible", timeout=10_000)

    # Go to cell: the notebook scrolls to the %%tune cell of that study and makes it active.
    slow.locator(".hpt-goto").click()
    page.wait_for_function(
        "document.querySelector('.jp-Notebook .jp-Cell.jp-mod-active')?.textContent.includes('sidebar-slow')",
        timeout=10_000)

    # Pause and Stop from the sidebar; the cell's dashboard shows the new state.
    slow.locator(".hpt-pause").click()
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='sidebar-slow'] .hpt-study-state\")?.textContent"
        " === 'paused'", timeout=15_000)
    slow.locator(".hpt-stop").click()
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='sidebar-slow'] .hpt-study-state\")?.textContent"
        " === 'stopped'", timeout=15_000)
    cell = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="sidebar-slow")).first
    cell.locator(".widget-html-content", has_text="● stopped").wait_for(timeout=15_000)
    assert cell.locator(".bqplot path.dot").count() >= 1  # the cell's dashboard drew its marks
    status.wait_for(state="hidden", timeout=15_000)  # nothing runs any more
    page.screenshot(path=str(ARTIFACTS / "sidebar-stopped.png"))
    assert page.console_errors == [], page.console_errors
