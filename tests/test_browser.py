"""The dashboard and the extension in a real JupyterLab and a real Jupyter Notebook 7, driven in
headless Chromium (Debian's package) by Playwright.

Playwright cannot download its own browser here, so it launches /usr/bin/chromium, which
.ci/run installs with apt-get. Assertions are on the DOM, never on pixels; screenshots go
to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
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


@contextlib.contextmanager
def _serve(root: Path, command: list[str], app: str, flags: list[str]):
    """Start `python -m jupyter <command>` on 127.0.0.1 serving `root`; yield its URL, then stop it.

    `app` is the application class (LabApp, JupyterNotebookApp) whose workspaces and settings
    get folders of their own under `root`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Workspaces and settings of its own: nothing from the user's ~/.jupyter leaks in (a
    # remembered workspace would reopen other notebooks), and no news prompt.
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log_path = root / f"{command[0]}.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", *command, "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         f"--{app}.workspaces_dir={root / 'workspaces'}", f"--{app}.user_settings_dir={root / 'settings'}",
         *flags],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"jupyter {command[0]} did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temp folder."""
    root = tmp_path_factory.mktemp("lab")
    with _serve(root, ["lab"], "LabApp", [
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]) as url:
        yield url, root


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):
    """A Jupyter Notebook 7 server on 127.0.0.1 serving a temp folder."""
    root = tmp_path_factory.mktemp("notebook7")
    with _serve(root, ["notebook"], "JupyterNotebookApp", []) as url:
        yield url, root


@pytest.fixture
def page():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.console_errors = []
        page.console_warnings = []
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.on("console", lambda m: page.console_warnings.append(m.text) if m.type == "warning" else None)
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
    _menu(page, "Run", "Run All Cells")


def _run_all_in_notebook7(page, url: str, name: str) -> None:
    page.goto(f"{url}/notebooks/{name}?token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function(  # the kernel is up: its name in the toolbar, and idle
        "document.querySelector('.jp-Toolbar-kernelName')?.textContent === 'Python 3 (ipykernel)'"
        " && document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'",
        timeout=90_000)
    _menu(page, "Run", "Run All Cells")


def _menu(page, menu: str, *items: str) -> None:
    """Click a menu of the menu bar, then each item in turn (a submenu, then its item)."""
    page.click(f"li.lm-MenuBar-item:has-text('{menu}')")
    for item in items:
        page.click(f".lm-Menu-itemLabel:text-is('{item}')")


def _quickstart_with_slow_studies(path: Path, *names: str) -> None:
    """The quickstart notebook, and after it a slow %%tune cell per name, to stop while they run."""
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    for name in names:
        nb.cells.append(nbformat.v4.new_code_cell(
            f"%%tune -n 500 --name {name} --storage memory\n"
            "x = tune.float(0, 1)\nimport time\ntime.sleep(0.2)\nx"))
    nbformat.write(nb, path)


def test_quickstart_dashboard_through_tune_and_stop_in_jupyterlab(lab, page):
    """The product path: the quickstart's %%tune cell, then a slow %%tune cell to stop."""
    url, root = lab
    _quickstart_with_slow_studies(root / "quickstart.ipynb", "slow-stop")
    _run_all(page, url, "quickstart.ipynb")

    headers = page.locator(".widget-html-content", has_text="sampler")
    page.wait_for_function(
        "[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.includes('30/30 trials'))",
        timeout=120_000)
    page.locator(".jp-OutputArea-output pre", has_text="held-out accuracy:").wait_for(
        timeout=60_000)  # the later cell waited for the study and saw the names
    quickstart = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="svc ·")).first
    # textContent, not innerText: JupyterLab skips rendering cells scrolled out of view
    # (content-visibility), and Chromium gives such an element's innerText as "".
    assert "finished" in quickstart.locator(".widget-html-content", has_text="sampler").text_content()
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
    finished = int(re.search(r"(\d+)/\d+ trials", text).group(1))
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
    _quickstart_with_slow_studies(root / "sidebar.ipynb", "sidebar-slow")
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


def test_quickstart_dashboard_stop_and_tuning_sidebar_in_notebook7(notebook7, page):
    """Jupyter Notebook 7 (no JupyterLab shell, no status bar): the quickstart's dashboard fills and
    its Stop button stops a study; the extension activates, its Tuning sidebar (a left side panel,
    hidden until asked for) lists the studies, and its status item sits in the menu bar."""
    url, root = notebook7
    ready = []
    page.on("console", lambda m: ready.append(m.text) if "Tuning sidebar is ready" in m.text else None)
    uncaught = []  # Notebook 7.6 itself throws one at start-up (its shortcuts plugin); ours would name hpt-jupyter
    page.on("pageerror", lambda error: uncaught.append(f"{error}\n{error.stack}"))
    # nb7-slow to stop from its dashboard, nb7-rest from "stop all" (Alt+Shift+X).
    _quickstart_with_slow_studies(root / "quickstart.ipynb", "nb7-slow", "nb7-rest")
    _run_all_in_notebook7(page, url, "quickstart.ipynb")
    assert ready, "the extension did not activate"

    # The quickstart's dashboard fills; the later cell waited for the study and saw the names.
    page.wait_for_function(
        "[...document.querySelectorAll('.widget-html-content')].some(e => e.textContent.includes('30/30 trials'))",
        timeout=120_000)
    page.locator(".jp-OutputArea-output pre", has_text="held-out accuracy:").wait_for(timeout=60_000)
    quickstart = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="svc ·")).first
    # textContent, not innerText: JupyterLab skips rendering cells scrolled out of view
    # (content-visibility), and Chromium gives such an element's innerText as "".
    assert "finished" in quickstart.locator(".widget-html-content", has_text="sampler").text_content()
    assert quickstart.locator(".bqplot path.dot").count() >= 30

    # The Tuning sidebar: hidden at first (Notebook 7 hides its side panels); Alt+Shift+T shows it.
    sidebar = page.locator("#hpt-jupyter-sidebar")
    assert not sidebar.is_visible()
    page.keyboard.press("Alt+Shift+T")
    sidebar.wait_for(state="visible", timeout=10_000)
    svc = sidebar.locator(".hpt-study[data-study='svc']")
    svc.wait_for(timeout=30_000)
    sidebar.locator(".hpt-study[data-study='nb7-slow']").wait_for(timeout=90_000)
    sidebar.locator(".hpt-study[data-study='nb7-rest']").wait_for(timeout=90_000)
    assert svc.locator(".hpt-study-counts").inner_text() == "30/30 trials"
    assert svc.locator(".hpt-study-state").inner_text() == "finished"
    assert svc.locator(".hpt-study-best").inner_text().startswith("best 0.9")
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='nb7-slow'] .hpt-study-state\")?.textContent"
        " === 'running'", timeout=60_000)
    status = page.locator("#menu-panel .hpt-status-text")  # no status bar: the right of the menu bar
    page.wait_for_function(
        "document.querySelector('#menu-panel .hpt-status-text')?.textContent.startsWith('Tuning 2 running')",
        timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "notebook7-sidebar.png"))

    # Go to cell: the notebook makes the study's %%tune cell active.
    svc.locator(".hpt-goto").click()
    page.wait_for_function(
        "document.querySelector('.jp-Notebook .jp-Cell.jp-mod-active')?.textContent.includes('--name svc')",
        timeout=10_000)

    # View > Left Sidebar > Show Tuning toggles the panel; a click on the status item opens it.
    _menu(page, "View", "Left Sidebar", "Show Tuning")
    sidebar.wait_for(state="hidden", timeout=10_000)
    page.click("#menu-panel .hpt-status")
    sidebar.wait_for(state="visible", timeout=10_000)

    # Stop from the slow cell's dashboard: the dashboard and the sidebar say so.
    cell = page.locator(".jp-Cell", has=page.locator(".widget-html-content", has_text="nb7-slow")).first
    cell.locator(".widget-html-content", has_text="running").wait_for(timeout=60_000)
    cell.locator(".widget-button:has-text('Stop')").click()
    cell.locator(".widget-html-content", has_text="● stopped").wait_for(timeout=15_000)
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='nb7-slow'] .hpt-study-state\")?.textContent"
        " === 'stopped'", timeout=15_000)
    page.wait_for_function(
        "document.querySelector('#menu-panel .hpt-status-text')?.textContent.startsWith('Tuning 1 running')",
        timeout=15_000)

    # Alt+Shift+X in the notebook stops every study of its kernel: the other one too.
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Alt+Shift+X")
    page.wait_for_function(
        "document.querySelector(\".hpt-study[data-study='nb7-rest'] .hpt-study-state\")?.textContent"
        " === 'stopped'", timeout=15_000)
    status.wait_for(state="hidden", timeout=15_000)  # nothing runs any more
    assert page.locator(".widget-html-content", has_text="sampler").count() == 3
    page.screenshot(path=str(ARTIFACTS / "notebook7-stopped.png"))
    ours = [m for m in page.console_errors + page.console_warnings + uncaught if "hpt" in m.lower()]
    assert ours == [], ours
    assert page.console_errors == [], page.console_errors
