from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from kernel import Kernel  # noqa: E402
from postgres import postgres  # noqa: E402,F401 - the session's PostgreSQL server (a fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def kernel(tmp_path):
    """A fresh kernel whose working directory (and so the default store) is a temp folder."""
    k = Kernel(str(tmp_path))
    reply = k.run("%load_ext hpt_jupyter")  # puts `tune` in the namespace
    assert reply.error is None, reply.error_text
    yield k
    k.shutdown()


@pytest.fixture(autouse=True)
def _fresh_runs():
    """The in-process registry of runs and the in-memory store start empty for every test."""
    from hpt_jupyter import tune
    from hpt_jupyter.core import storage

    storage._storages.pop("memory", None)
    tune.runs.clear()
    tune._last = None
    yield


def wait_until(predicate, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy, and return that; after ``timeout``
    seconds raise AssertionError naming ``what`` was awaited. Tests wait for the event they need
    (a trial finished, a widget or comm message arrived) instead of sleeping for a guessed time:
    a slow machine only waits longer, and a broken feature fails here instead of passing."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}, in vain")
        time.sleep(interval)
