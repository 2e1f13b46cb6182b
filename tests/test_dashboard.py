"""The widget dashboard, judged by the comm messages its widgets really send from a real kernel."""

from __future__ import annotations

import time

SETUP = """
from IPython.display import display
from hpt_jupyter import start, tune
from hpt_jupyter.views.dashboard import Dashboard
import time
"""

PROBE = "<img src=x onerror=alert(1)>"


def update_count(kernel, msg_id: str) -> int:
    """How many widget state updates the kernel sent for the widgets a cell opened."""
    opened = {m["content"]["comm_id"] for m in kernel.outputs[msg_id] if m["msg_type"] == "comm_open"}
    return sum(1 for m in kernel.arrived if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in opened
               and m["content"]["data"].get("method") == "update")


def test_table_and_history_receive_every_trial_and_values_are_escaped(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "def objective():\n"
        "    x = tune.float(0, 1)\n"
        f"    label = tune.choice([{PROBE!r}, 'plain'])\n"
        "    return x\n"
        "run = start(objective, n_trials=40, storage='memory', report=False, name='probe', seed=0, launch=False)\n"
        "board = Dashboard(run)\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("run.wait(); time.sleep(1)")
    states = kernel.widgets(cell.msg_id, 1.0).values()
    html_values = [s["value"] for s in states if s.get("_model_name") == "HTMLModel"]
    table = next(value for value in html_values if "<table" in value)
    assert "40 trials" in table
    assert "&lt;img src=x onerror=alert(1)&gt;" in table and "<img src=x" not in table
    scatter = next(s for s in states if s.get("_model_name") == "ScatterModel")
    assert scatter["x"]["shape"] == [40]
    header = next(value for value in html_values if "sampler" in value)
    assert "40/40 trials" in header and "finished" in header


def test_update_messages_are_bounded_by_the_throttle_not_the_trial_count(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "run = start(lambda: tune.float(0, 1, name='x'), n_trials=2000, sampler='random', storage='memory',"
        " report=False, name='many', launch=False)\n"
        "board = Dashboard(run, interval=0.25)\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("run.wait(); time.sleep(1)")
    kernel._drain(None, 1.0)
    updates = update_count(kernel, cell.msg_id)
    elapsed, refreshes, slowest = kernel.value("(run.elapsed, board.refreshes, board.refresh_seconds_max)")
    assert kernel.value("run.n_complete") == 2000
    assert refreshes <= elapsed / 0.25 + 4  # one refresh per interval at most, plus start and end
    assert updates <= refreshes * 12 < 2000  # a refresh touches at most a dozen models
    assert slowest < 1.0


def test_a_stop_click_sent_as_the_frontend_sends_it_stops_within_one_trial(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "def slow():\n"
        "    time.sleep(0.2)\n"
        "    return tune.float(0, 1, name='x')\n"
        "run = start(slow, n_trials=200, storage='memory', report=False, name='clicky', launch=False)\n"
        "board = Dashboard(run)\n"
        "finished_at_click = []\n"
        "board.stop_button.on_click(lambda _: finished_at_click.append(run.n_finished))\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    time.sleep(1.0)
    kernel._drain(None, 0.5)
    stop = next(cid for cid, state in kernel.widgets(cell.msg_id).items()
                if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop")
    click = kernel.client.session.msg("comm_msg", {"comm_id": stop,
                                                   "data": {"method": "custom", "content": {"event": "click"}}})
    kernel.client.shell_channel.send(click)
    kernel.run("run.wait(10)")
    state, after, at_click = kernel.value("(run.state, run.n_finished, finished_at_click)")
    assert state == "stopped" and len(at_click) == 1
    assert after <= at_click[0] + 1  # only the trial running when the click was handled finished


def _states_by_model(kernel, msg_id: str) -> dict[str, list[dict]]:
    by_model: dict[str, list[dict]] = {}
    for state in kernel.widgets(msg_id, 1.0).values():
        by_model.setdefault(state.get("_model_name"), []).append(state)
    return by_model


def test_slices_parallel_intermediate_and_importance_receive_the_trials(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "%%tune -n 30 --seed 0 --storage memory --name plots\n"
        "lr = tune.float(1e-4, 1e-1, log=True)\n"
        "kind = tune.choice(['a', 'b'])\n"
        "for step in range(3):\n"
        "    tune.trial.report(lr * (3 - step), step)\n"
        "abs(lr - 0.01) + (kind == 'b')\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("%tune wait plots\ntime.sleep(3)")  # importance is computed when the study ends
    models = _states_by_model(kernel, cell.msg_id)
    scatters = models["ScatterModel"]
    # history + one slice per knob (+ the run-time-knob figure and the Pareto marks, empty here)
    sizes = sorted(s["x"]["shape"][0] if isinstance(s["x"], dict) else len(s["x"]) for s in scatters)
    assert sizes.count(30) == 3  # history, slice of lr, slice of kind
    scales = {s["_model_name"] for s in models["LogScaleModel"]}
    assert scales == {"LogScaleModel"}  # lr's slice is on a log axis
    lines = models["LinesModel"]
    parallel = next(s for s in lines if s.get("x") == ["lr", "kind", "value"])
    assert parallel["y"]["shape"] == [30, 3]
    intermediate = next(s for s in lines if isinstance(s.get("x"), dict) and s["x"]["shape"] == [3])
    assert intermediate["y"]["shape"] == [30, 3]  # 3 reported steps for each of 30 trials
    bars = models["BarsModel"][0]
    assert sorted(bars["x"]) == ["kind", "lr"]
    assert "From 30 complete trials." in "".join(s["value"] for s in models["HTMLModel"])


def test_pareto_front_for_several_objectives(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "%%tune -n 20 --seed 0 --storage memory --name mo --direction minimize minimize\n"
        "x = tune.float(0, 1)\n"
        "x, (1 - x) ** 2\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("%tune wait mo\ntime.sleep(1)")
    front = kernel.value("sorted(t.number for t in tune.last.study.best_trials)")
    scatters = _states_by_model(kernel, cell.msg_id)["ScatterModel"]
    shapes = sorted(s["x"]["shape"][0] for s in scatters if isinstance(s["x"], dict))
    assert 20 in shapes and len(front) in shapes  # every trial, and the front drawn over them


def test_a_view_error_shows_once_in_the_dashboard_and_the_study_goes_on(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "def slow():\n"
        "    time.sleep(0.02)\n"
        "    return tune.float(0, 1, name='x')\n"
        "run = start(slow, n_trials=60, storage='memory', report=False, name='broken', launch=False)\n"
        "board = Dashboard(run)\n"
        "def broken(taken):\n"
        "    raise RuntimeError('history view broke')\n"
        "board._draw_history = broken\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("run.wait(); time.sleep(1)")
    assert kernel.value("(run.state, run.n_complete)") == ("finished", 60)
    output = next(state for state in kernel.widgets(cell.msg_id, 1.0).values()
                  if state.get("_model_name") == "OutputModel")
    texts = [o["text"] for o in output["outputs"] if o.get("name") == "stderr"]
    assert len(texts) == 1  # shown once, not at every refresh
    assert "could not refresh" in texts[0] and "RuntimeError: history view broke" in texts[0]
