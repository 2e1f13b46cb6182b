"""A study's store goes away under a notebook in a real JupyterLab: the dashboard's header and
the Tuning sidebar say so while it waits, then the study finishes. Screenshots of both go to
test-artifacts/ for people to look at."""

from __future__ import annotations

import pytest

from test_browser import ARTIFACTS, _notebook, _run_all, lab, page  # noqa: F401  (fixtures)
from postgres import own_postgres  # noqa: F401 (a fixture)


@pytest.fixture
def server(own_postgres):
    return own_postgres


def test_the_header_and_the_sidebar_say_the_store_is_away_and_the_study_goes_on(lab, page, server):  # noqa: F811
    url, root = lab
    store = server.new_database("browser_outage")
    _notebook(root / "outage.ipynb", [
        "%load_ext hpt_jupyter",
        f"%%tune -n 60 --name outage --sampler random --storage {store}\n"
        "x = tune.float(-1, 1)\nimport time; time.sleep(0.2)\nx * x",
    ])
    _run_all(page, url, "outage.ipynb")
    page.click(".jp-SideBar [title='Tuning']")
    header = page.locator(".hpt-header-main", has_text="outage")
    header.wait_for(timeout=90_000)
    page.wait_for_function(  # a few trials first
        "/\\b([5-9]|[1-5][0-9])\\/60 trials/.test(document.querySelector('.hpt-header-main')?.textContent || '')",
        timeout=90_000)
    server.stop()
    try:
        away = page.locator(".hpt-header-main .hpt-storage-problem")
        away.wait_for(timeout=60_000)
        # A call in flight when the server went may hang a while before it fails: the header then
        # says "not answering" first, and "unreachable ..., retrying" once a call fails.
        said = away.inner_text()
        assert said.startswith(("\u26a0 storage unreachable since", "\u26a0 storage not answering since")), said
        assert ("retrying" in said or "waiting" in said) and server.password not in said
        note = page.locator("#hpt-jupyter-sidebar .hpt-study[data-study='outage'] .hpt-resume-hint")
        note.wait_for(state="visible", timeout=60_000)
        assert note.inner_text().startswith(("storage unreachable since", "storage not answering since")), \
            note.inner_text()
        # The header still fits its box: the warning wraps inside it, it does not spill over.
        fits = page.evaluate("""() => {
            const main = document.querySelector('.hpt-header-main');
            const board = main.closest('.hpt-dashboard');
            return main.getBoundingClientRect().right <= board.getBoundingClientRect().right + 1;
        }""")
        assert fits
        page.screenshot(path=str(ARTIFACTS / "outage-waiting.png"))
    finally:
        server.start()
    page.locator(".hpt-header-main", has_text="finished").wait_for(timeout=120_000)
    assert page.locator(".hpt-header-main .hpt-storage-problem").count() == 0
    assert "60/60 trials" in page.locator(".hpt-header-main").inner_text()
    page.screenshot(path=str(ARTIFACTS / "outage-finished.png"))
    assert not [e for e in page.console_errors if "hpt" in e.lower()], page.console_errors
