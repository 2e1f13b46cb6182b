"""Which members of a run object a plain cell may use while its study runs, and which make the
cell wait for the study's end (magic.py's _CONTROL_ATTRIBUTES and _RESULT_ATTRIBUTES).

Every public member of Run is classified: a member added to Run fails here until it is put in
one of the two sets. The kernel test checks that steering and live calls really return while a
study runs, and that reading a result really waits."""

from __future__ import annotations

import time

import optuna
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from hpt_jupyter import start
from hpt_jupyter.core.run import Run
from hpt_jupyter.magic import _CONTROL_ATTRIBUTES, _RESULT_ATTRIBUTES, names_used

optuna.logging.set_verbosity(optuna.logging.WARNING)

HOW = ("classify each in hpt_jupyter/magic.py: _CONTROL_ATTRIBUTES if a cell may use it while the study "
       "runs (control, steering, live facts), _RESULT_ATTRIBUTES if it needs the study's result")


class _Shell:
    """What names_used needs of an IPython shell."""

    transform_cell = staticmethod(TransformerManager().transform_cell)


def _public(names) -> set[str]:
    return {name for name in names if not name.startswith("_")}


@pytest.fixture
def instance_members() -> set[str]:
    """The public attributes a real run sets on itself (``run.state``, ``run.budget``, ...)."""
    def objective(trial):
        return trial.suggest_float("x", 0, 1)

    run = start(objective, n_trials=2, storage="memory", report=False, name="members").wait(30)
    assert not run.is_alive
    return _public(vars(run))


def test_every_public_member_of_run_is_classified():
    unclassified = sorted(_public(dir(Run)) - _CONTROL_ATTRIBUTES - _RESULT_ATTRIBUTES)
    assert not unclassified, f"Run members in neither set: {', '.join(unclassified)}; {HOW}."


def test_every_public_attribute_of_a_run_is_classified(instance_members):
    unclassified = sorted(instance_members - _CONTROL_ATTRIBUTES - _RESULT_ATTRIBUTES)
    assert not unclassified, f"Run attributes in neither set: {', '.join(unclassified)}; {HOW}."


def test_no_member_is_in_both_sets():
    both = sorted(_CONTROL_ATTRIBUTES & _RESULT_ATTRIBUTES)
    assert not both, f"in both _CONTROL_ATTRIBUTES and _RESULT_ATTRIBUTES of magic.py: {', '.join(both)}"


def test_every_classified_name_is_a_member_of_run(instance_members):
    stale = sorted((_CONTROL_ATTRIBUTES | _RESULT_ATTRIBUTES) - _public(dir(Run)) - instance_members)
    assert not stale, f"no longer members of Run: {', '.join(stale)}; remove them from magic.py's sets."


@pytest.mark.parametrize("run_object", ["tune.last", "tune.runs['svc']"])
def test_names_used_waits_for_result_members_only(run_object):
    for name in sorted(_CONTROL_ATTRIBUTES):
        for code in (f"{run_object}.{name}", f"print({run_object}.{name}())", f"v = {run_object}.{name}[0]"):
            assert names_used(_Shell, code)[1] is False, code
    for name in sorted(_RESULT_ATTRIBUTES):
        for code in (f"{run_object}.{name}", f"print({run_object}.{name}())", f"v = {run_object}.{name}[0]"):
            assert names_used(_Shell, code)[1] is True, code
    # a name in neither set waits: the safe side
    assert names_used(_Shell, f"{run_object}.something_new")[1] is True


def test_names_used_still_collects_names_and_reads_line_magics():
    names, uses_result = names_used(_Shell, "y = f(C)\n%timeit g(gamma)\ntune.last.preview(x=(0, 0.5))")
    assert {"y", "f", "C", "gamma"} <= names and "x" not in names and uses_result is False
    assert names_used(_Shell, "best = tune.last.best_params['C']")[1] is True
    assert names_used(_Shell, "def broken(:") == (set(), False)


# -- a real kernel ------------------------------------------------------------------------

LONG_CELL = """%%tune -n 200 --storage memory --seed 0 --name nowait --sampler random
x = tune.float(-1, 1)
kind = tune.choice(["a", "b"])
import time; time.sleep(0.2)
x ** 2 + (kind == "b")
"""  # 200 trials of 0.2 s: 40 s unless stopped

NO_WAIT_CELLS = {
    "preview": "print('PREVIEW', tune.last.preview(x=(0, 0.5)))",
    "status": "print('STATUS', tune.last.status())",
    "running_trials": "print('RUNNING', tune.last.running_trials())",
    "narrow": "print('NARROW', tune.last.narrow(x=(0, 0.5)).describe())",
    "eta": "print('ETA', tune.runs['nowait'].eta())",
    "warnings": "print('WARNINGS', tune.runs['nowait'].warnings, tune.runs['nowait'].is_multi_objective)",
    "start": "print('START', tune.last.start() is tune.last)",
}


def _texts(kernel, msg_id: str) -> str:
    """Everything a cell showed: streams, displays and their updates."""
    found = []
    for msg in kernel.outputs[msg_id]:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            found.append(content["text"])
        elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
            found.append(content["data"].get("text/plain", ""))
    return "\n".join(found)


def test_steering_and_live_calls_return_while_the_study_runs_and_results_wait(kernel):
    assert kernel.run(LONG_CELL).error is None
    time.sleep(1.0)  # a few trials finish: the preview has trials to count
    for member, code in NO_WAIT_CELLS.items():
        sent = time.monotonic()
        try:
            reply = kernel.run(code, timeout=20)
        except TimeoutError:
            pytest.fail(f"a cell using tune.last.{member} waited for the study; {HOW}")
        took = time.monotonic() - sent
        assert reply.error is None, (member, reply.error_text)
        shown = _texts(kernel, reply.msg_id)
        assert "Waiting for" not in shown and "Waited" not in shown, (member, shown)
        assert took < 5, (member, took)  # far less than the study's 40 s
    alive, finished, narrowings = kernel.value(
        "(tune.last.is_alive, tune.last.n_finished, [n.ranges for n in tune.last.narrowings])")
    assert alive is True and finished < 100, (alive, finished)
    assert narrowings in ([], [{"x": "0 .. 0.5"}])  # the loop applies it before its next trial

    # Reading a result waits for the study: the cell says so, and goes on when Stop is clicked.
    stop = kernel.value("get_ipython().magics_manager.registry['TuneMagics'].dashboards['nowait']"
                        ".stop_button.model_id")
    waiting = kernel.client.execute("print('BEST', tune.last.best_params)")
    deadline = time.monotonic() + 60
    while "Waiting for 'nowait'" not in _texts(kernel, waiting):
        assert time.monotonic() < deadline, "a cell reading best_params did not wait for the study"
        kernel._drain(None, 0.2)
    assert "because this cell uses the run's result" in _texts(kernel, waiting)
    kernel.click(stop)
    reply = kernel.finish(waiting, 60)
    assert reply.error is None, reply.error_text
    shown = _texts(kernel, waiting)
    assert "Waited " in shown and "'nowait' (stopped: " in shown, shown
    state, alive, best = kernel.value("(tune.last.state, tune.last.is_alive, tune.last.best_params)")
    assert (state, alive) == ("stopped", False)
    assert reply.stdout.split("BEST ")[1].strip() == repr(best)
