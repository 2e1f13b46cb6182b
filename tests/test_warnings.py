"""A warning trials raise again and again is shown once, counted on the run (``run.warnings``),
and summed up in one line when the run ends; warnings outside trials are left alone."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
import warnings

import pytest

from hpt_jupyter import optimize, start, tune


class NoisyWarning(UserWarning):
    pass


MESSAGE = "the fit did not converge"


def noisy() -> None:
    warnings.warn(MESSAGE, NoisyWarning)  # the one line every occurrence comes from


NOISY_LINE = noisy.__code__.co_firstlineno + 1


def objective() -> float:
    x = tune.float(0, 1)
    noisy()
    noisy()  # twice per trial: counted twice, in one trial
    return x


def slow_objective() -> float:
    x = tune.float(0, 1)
    noisy()
    time.sleep(0.05)
    return x


@pytest.fixture
def shown(monkeypatch):
    """What ``warnings.showwarning`` prints, as Python's own does, to ``sys.stderr``. (pytest
    records warnings; this puts back a printer that our wrapper must hand shown warnings to.)"""
    printed: list[str] = []

    def show(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        printed.append(text)
        sys.stderr.write(text)

    monkeypatch.setattr(warnings, "showwarning", show)
    return printed


def _check_counted(run, n: int, per_trial: int = 2, filename: str = __file__) -> None:
    assert run.n_complete == n
    [record] = [w for w in run.warnings if w.category == "NoisyWarning"]
    assert record.count == per_trial * n  # every occurrence, in every trial
    assert sorted(record.trials) == list(range(n)) and record.first_trial in record.trials
    assert record.message == MESSAGE
    assert record.where == f"{filename}:{NOISY_LINE}"
    assert (record.filename, record.lineno) == (filename, NOISY_LINE)


@pytest.mark.parametrize("action", [None, "default", "module", "once", "always"])
def test_a_warning_in_every_trial_is_shown_once_counted_every_time_and_summed_up(shown, capsys, action):
    stream = io.StringIO()
    with warnings.catch_warnings():
        if action is not None:  # whatever the filters say about repeats, the count is the same
            warnings.simplefilter(action, NoisyWarning)
        run = optimize(objective, n_trials=12, storage="memory", name="noisy", seed=0, stream=stream)
    _check_counted(run, 12)
    assert capsys.readouterr().err.count(MESSAGE) == 1  # shown once: the first occurrence
    assert len(shown) == 1 and f":{NOISY_LINE}: NoisyWarning: {MESSAGE}" in shown[0]
    summary = run.warnings_summary()
    assert summary == (f"NoisyWarning: {MESSAGE} — 24 times in 12 of 12 trials, shown once "
                       "(tune.runs['noisy'].warnings)")
    assert summary in stream.getvalue()  # the text view's final lines say it
    assert stream.getvalue().count(MESSAGE) == 1


def test_threads_two_at_a_time_count_every_trial_and_show_it_once(shown, capsys):
    seen_threads = set()

    def objective_in_threads() -> float:
        seen_threads.add(threading.get_ident())
        return objective()

    def slow() -> float:
        value = objective_in_threads()
        time.sleep(0.02)
        return value

    run = optimize(slow, n_trials=16, storage="memory", name="noisy-threads", jobs=2, seed=0, report=False)
    _check_counted(run, 16)
    assert len(seen_threads) == 2
    assert capsys.readouterr().err.count(MESSAGE) == 1
    assert len(shown) == 1


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_worker_processes_send_their_warnings_to_the_kernel(capsys, backend):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    try:
        run = optimize(objective, n_trials=6, storage="memory", name=f"noisy-{backend}", jobs=2, backend=backend,
                       report=False)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    # code cloudpickle sends by value is named <dynamic-code> in the worker
    _check_counted(run, 6, filename="<dynamic-code>")
    err = capsys.readouterr().err
    assert err.count(MESSAGE) == 1 and f":{NOISY_LINE}: NoisyWarning: {MESSAGE}" in err
    assert "in 6 of 6 trials" in run.warnings_summary()


def test_a_warning_shown_before_the_study_still_counts_in_its_trials(shown, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("default", NoisyWarning)
        noisy()  # outside, before: its module's registry now says "shown"
        noisy()  # and so this one is not shown
        assert len(shown) == 1
        run = optimize(objective, n_trials=5, storage="memory", name="noisy-again", report=False)
    _check_counted(run, 5)
    assert len(shown) == 2


def test_a_warning_the_user_ignores_is_neither_shown_nor_counted(shown, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoisyWarning)
        run = optimize(objective, n_trials=4, storage="memory", name="noisy-ignored", report=False)
    assert run.n_complete == 4 and run.warnings == [] and run.warnings_summary() == ""
    assert shown == [] and MESSAGE not in capsys.readouterr().err


def test_warnings_outside_trials_are_untouched_while_a_study_runs(shown):
    original_show, original_filters = warnings.showwarning, list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("default", NoisyWarning)
        run = start(slow_objective, n_trials=30, storage="memory", name="noisy-outside", report=False)
        deadline = time.monotonic() + 30
        while run.n_finished < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.is_alive
        assert warnings.showwarning is not original_show  # wrapped while the study runs
        assert list(warnings.filters) == [("default", None, NoisyWarning, None, 0)] + original_filters
        before = len(shown)
        for _ in range(3):  # the main thread, at the trials' own line: "default" shows it once
            outside_line = sys._getframe().f_lineno + 1
            warnings.warn("raised outside any trial", NoisyWarning)
        with warnings.catch_warnings():
            warnings.simplefilter("always", NoisyWarning)
            for _ in range(3):  # "always" outside trials: all three
                warnings.warn("raised outside, always", NoisyWarning)
        outside = [text for text in shown[before:] if "outside" in text]
        assert sum("raised outside any trial" in t for t in outside) == 1
        assert sum("raised outside, always" in t for t in outside) == 3
        run.wait()
    assert warnings.showwarning is original_show  # put back when the study ended
    assert list(warnings.filters) == original_filters
    assert [w.lineno for w in run.warnings] == [NOISY_LINE]  # none of the outside ones
    assert run.warnings[0].count == run.n_complete == 30
    assert outside_line != NOISY_LINE
    assert sum(MESSAGE in t for t in shown) == 1


# --- in a notebook ------------------------------------------------------------------------

KERNEL_SETUP = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
"""

# Every trial's fit stops at 3 iterations: scikit-learn's ConvergenceWarning, 20 times.
KERNEL_CELL = """%%tune -n 20 --storage memory --name lr --sampler random --seed 0 --direction maximize
C = tune.float(1e-2, 1e2, log=True)
LogisticRegression(C=C, max_iter=3).fit(X, y).score(X, y)
"""


def _all_text(kernel) -> str:
    """Everything every cell printed (stdout and stderr), in arrival order."""
    return "".join(m["content"]["text"] for m in kernel.arrived if m["msg_type"] == "stream")


def _shown(text: str) -> int:
    """How many times the warning itself was printed (``…/_logistic.py:599: ConvergenceWarning: …``)."""
    return len(re.findall(r"\.py:\d+: ConvergenceWarning: lbfgs failed to converge", text))


def _tuned_with_warnings(kernel):
    assert kernel.run(KERNEL_SETUP).error is None
    reply = kernel.run(KERNEL_CELL)
    assert reply.error is None, reply.error_text
    waited = kernel.run("%tune wait lr")
    assert waited.error is None, waited.error_text
    return reply, kernel.later_output(reply.msg_id, wait=1.0)


def test_a_notebook_shows_a_warning_its_trials_raise_once_and_counts_all_20(kernel):
    reply, under_cell = _tuned_with_warnings(kernel)
    assert _shown(under_cell.stderr) == 1  # under the %%tune cell
    assert _shown(_all_text(kernel)) == 1  # and nowhere else
    records = kernel.value("[(w.category, w.count, len(w.trials), w.where.rsplit(':', 1)[0].endswith('.py')) "
                           "for w in tune.runs['lr'].warnings]")
    assert records == [("ConvergenceWarning", 20, 20, True)]
    summary = kernel.value("tune.runs['lr'].warnings_summary()")
    assert summary.startswith("ConvergenceWarning: lbfgs failed to converge")
    assert summary.endswith("— in 20 of 20 trials, shown once (tune.runs['lr'].warnings)")
    outside = kernel.run("import warnings\nfor _ in range(2): warnings.warn('after the study', UserWarning)")
    assert outside.stderr.count("UserWarning: after the study") == 1  # Python's own "default", as before


def test_a_notebook_says_how_often_the_warning_came_when_the_study_ends(kernel):
    _tuned_with_warnings(kernel)
    text = _all_text(kernel)
    assert _shown(text) == 1
    summary = "ConvergenceWarning: lbfgs failed to converge after 3 iteration(s) (status=1):… — in 20 of 20 " \
              "trials, shown once (tune.runs['lr'].warnings)"
    assert text.count(summary) == 1
    assert re.search(r"\.py:\d+: ConvergenceWarning", text).start() < text.index(summary)  # the warning, then the count
