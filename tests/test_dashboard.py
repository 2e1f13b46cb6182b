"""The widget dashboard, judged by the comm messages its widgets really send from a real kernel."""

from __future__ import annotations

import re

import numpy as np

from conftest import wait_until

SETUP = """
from IPython.display import display
from hpt_jupyter import start, tune
from hpt_jupyter.views.dashboard import Dashboard
import time
"""

PROBE = "<img src=x onerror=alert(1)>"


def _widgets_once(kernel, msg_id: str, ready, what: str, decoded: bool = False) -> dict[str, dict]:
    """The latest state of the widgets a cell opened, as soon as ``ready(states)`` holds: the
    dashboard refreshes in its own thread, so a test waits for the messages it needs, not a
    guessed time. ``decoded``: binary arrays as numpy arrays (see :func:`_decoded_widgets`)."""
    states: dict[str, dict] = {}

    def check() -> bool:
        states.clear()
        states.update(_decoded_widgets(kernel, msg_id, 0.2) if decoded else kernel.widgets(msg_id, 0.2))
        return ready(states)

    wait_until(check, what, interval=0)
    return states


def _html(states: dict[str, dict]) -> list[str]:
    return [s["value"] for s in states.values() if s.get("_model_name") == "HTMLModel"]


def _header(states: dict[str, dict]) -> str:
    return next((value for value in _html(states) if "hpt-header" in value), "")


def _ended(states: dict[str, dict]) -> bool:
    """The header says the run finished, and why: what the refresh after its end writes."""
    return "finished: " in _header(states)


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
    kernel.run("run.wait()")

    def shows_every_trial(found: dict[str, dict]) -> bool:
        scatter = next(s for s in found.values() if s.get("_model_name") == "ScatterModel")
        return (_ended(found) and any("<table" in value and "40 trials" in value for value in _html(found))
                and isinstance(scatter["x"], dict) and scatter["x"]["shape"] == [40])

    states = _widgets_once(kernel, cell.msg_id, shows_every_trial,
                           "the dashboard's header, table and history to show the ended run's 40 trials").values()
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
    kernel.run("run.wait()")
    # The writer's last act after the run ended (its full refresh done): the importance note.
    _widgets_once(kernel, cell.msg_id, lambda found: "From 2000 complete trials." in _html(found),
                  "the dashboard's last refresh (importance from the 2000 complete trials)")
    updates = update_count(kernel, cell.msg_id)
    elapsed, refreshes, slowest = kernel.value("(run.elapsed, board.refreshes, board.refresh_seconds_max)")
    assert kernel.value("run.n_complete") == 2000
    assert refreshes <= elapsed / 0.25 + 4  # one refresh per interval at most, plus start and end
    assert updates <= refreshes * 24 < 2000  # a refresh touches at most two dozen models (marks, axes, scales)
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
    wait_until(lambda: kernel.value("run.n_finished") >= 2, "two finished trials of 'clicky'")  # clicked mid-run
    stop = next(cid for cid, state in kernel.widgets(cell.msg_id, 0.2).items()
                if state.get("_model_name") == "ButtonModel" and state.get("description") == "Stop")
    click = kernel.client.session.msg("comm_msg", {"comm_id": stop,
                                                   "data": {"method": "custom", "content": {"event": "click"}}})
    kernel.client.shell_channel.send(click)
    kernel.run("run.wait(60)")
    state, after, at_click = kernel.value("(run.state, run.n_finished, finished_at_click)")
    assert state == "stopped" and len(at_click) == 1
    assert after <= at_click[0] + 1  # only the trial running when the click was handled finished


def _by_model(states: dict[str, dict]) -> dict[str, list[dict]]:
    by_model: dict[str, list[dict]] = {}
    for state in states.values():
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
    kernel.run("%tune wait plots")
    # importance is computed when the study ends, after the dashboard's last refresh
    models = _by_model(_widgets_once(kernel, cell.msg_id, lambda found: "From 30 complete trials." in _html(found),
                                     "importance from the 30 complete trials"))
    scatters = models["ScatterModel"]
    # history + one slice per knob (+ the run-time-knob figure and the Pareto marks, empty here)
    sizes = sorted(s["x"]["shape"][0] if isinstance(s["x"], dict) else len(s["x"]) for s in scatters)
    assert sizes.count(30) == 3  # history, slice of lr, slice of kind
    scales = {s["_model_name"] for s in models["LogScaleModel"]}
    assert scales == {"LogScaleModel"}  # lr's slice is on a log axis
    lines = models["LinesModel"]
    parallel = next(s for s in lines if s.get("x") == ["lr", "kind", "value"])
    assert parallel["y"]["shape"] == [30, 3]
    # 3 reported steps for each of 30 trials: the complete trials' curves and the best one's
    decoded = _decoded_widgets(kernel, cell.msg_id, 0)
    curves = _figure_marks(decoded, "intermediate values")
    assert [s["_model_name"] for s in _page_box(decoded, "intermediate")] == ["HTMLModel", "FigureModel"]
    assert sum(_line_count(m) for m in curves) == 30
    assert all(m["y"].shape[-1] == 3 for m in curves if _line_count(m))
    bars = models["BarsModel"][0]
    assert sorted(bars["x"]) == ["kind", "lr"]
    assert "From 30 complete trials." in "".join(s["value"] for s in models["HTMLModel"])


def _points(mark: dict) -> list[tuple[float, float]]:
    """A Scatter mark's (x, y) points, sorted."""
    return sorted(zip(np.asarray(mark["x"], dtype=float).tolist(), np.asarray(mark["y"], dtype=float).tolist()))


def test_pareto_front_for_several_objectives(kernel):
    kernel.run(SETUP)
    # Both objectives grow with x above 0.5: a trial there is beaten by any trial between 1 - x
    # and x, so the front is the trials below 0.5 (and perhaps the lowest one above), not all.
    cell = kernel.run(
        "%%tune -n 20 --seed 0 --sampler random --storage memory --name mo --direction minimize minimize\n"
        "x = tune.float(0, 1)\n"
        "x, (x - 0.5) ** 2\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("%tune wait mo")
    values = [tuple(v) for v in kernel.value("[t.values for t in tune.runs['mo'].trials()]")]
    assert len(values) == 20
    # the front by brute force: the trials no other trial is at least as good as in both objectives
    front = sorted(v for v in values if not any(w != v and w[0] <= v[0] and w[1] <= v[1] for w in values))
    assert 0 < len(front) < len(values)  # some trials are dominated

    def drawn(found: dict[str, dict]) -> tuple[list, list]:
        # every trial, the best line (unused), the front, the infeasible trials (none here)
        points, _, on_front, _ = _figure_marks(found, "Pareto front")
        return _points(points), _points(on_front)

    states = _widgets_once(kernel, cell.msg_id, lambda found: drawn(found) == (sorted(values), front),
                           f"the Pareto front drawn as the {len(front)} non-dominated of the 20 trials", decoded=True)
    assert drawn(states) == (sorted(values), front)
    assert f"{len(front)} trials on the Pareto front" in _header(states)


def test_a_view_error_shows_once_in_the_dashboard_and_the_study_goes_on(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "def slow():\n"
        "    time.sleep(0.02)\n"
        "    return tune.float(0, 1, name='x')\n"
        "run = start(slow, n_trials=60, storage='memory', report=False, name='broken', launch=False)\n"
        "board = Dashboard(run)\n"
        "calls = []\n"
        "def broken(taken):\n"
        "    calls.append(1)\n"
        "    raise RuntimeError('history view broke')\n"
        "board._draw_history = broken\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("run.wait()")
    assert kernel.value("(run.state, run.n_complete)") == ("finished", 60)
    # Three refreshes met the broken view, so the first two were handled (shown, or not) before
    # the third began; each poll asks the writer for one more, the run having ended.
    wait_until(lambda: kernel.value("board._dirty.set() or len(calls)") >= 3, "three refreshes of the broken view")
    output = next(state for state in kernel.widgets(cell.msg_id, 0.2).values()
                  if state.get("_model_name") == "OutputModel")
    texts = [o["text"] for o in output["outputs"] if o.get("name") == "stderr"]
    assert len(texts) == 1  # shown once, not at every refresh
    assert "could not refresh" in texts[0] and "RuntimeError: history view broke" in texts[0]


def _decoded_widgets(kernel, msg_id: str, settle: float = 1.0) -> dict[str, dict]:
    """Like ``kernel.widgets``, with the binary buffers put back: a bqplot array arrives as
    ``{"shape", "dtype"}`` plus a buffer, and is returned here as a numpy array."""
    import numpy as np

    kernel._drain(None, settle)
    states: dict[str, dict] = {}

    def merge(comm_id: str, data: dict, buffers: list) -> None:
        state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data["state"].items()}
        for path, buffer in zip(data.get("buffer_paths", []), buffers):
            target = state
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = bytes(buffer)
        for key, value in state.items():
            if isinstance(value, dict) and {"shape", "dtype", "value"} <= value.keys():
                state[key] = np.frombuffer(value["value"], dtype=value["dtype"]).reshape(value["shape"])
        states.setdefault(comm_id, {}).update(state)

    for msg in kernel.outputs[msg_id]:
        if msg["msg_type"] == "comm_open":
            merge(msg["content"]["comm_id"], msg["content"]["data"], msg.get("buffers", []))
    for msg in kernel.arrived:
        content = msg["content"]
        if (msg["msg_type"] == "comm_msg" and content.get("comm_id") in states
                and content["data"].get("method") == "update"):
            merge(content["comm_id"], content["data"], msg.get("buffers", []))
    return states


def _lines(mark: dict) -> list[list[float]]:
    """A Lines mark's lines (bqplot sends a single line as one flat array)."""
    y = mark["y"].tolist() if hasattr(mark["y"], "tolist") else mark["y"]
    return [y] if y and not isinstance(y[0], list) else y


def _line_count(mark: dict) -> int:
    return len(_lines(mark))


def _figure_marks(states: dict[str, dict], title_start: str) -> list[dict]:
    figure = next(s for s in states.values() if s.get("_model_name") == "FigureModel"
                  and str(s.get("title", "")).startswith(title_start))
    return [states[ref.removeprefix("IPY_MODEL_")] for ref in figure["marks"]]


def _page_box(states: dict[str, dict], title: str) -> list[dict]:
    """What a dashboard page (tagged ``hpt-page-<title>``) holds, as the frontend has it."""
    box = next(s for s in states.values() if f"hpt-page-{title}" in s.get("_dom_classes", ()))
    return [states[ref.removeprefix("IPY_MODEL_")] for ref in box["children"]]


PRUNED_RUN = (
    "def reporting():\n"
    "    x = tune.float(0, 1, name='x')\n"
    "    for step in range(3):\n"
    "        tune.report(x, step)\n"
    "    return x\n"
    "run = start(reporting, n_trials=20, storage='memory', report=False, name='pruny', seed=0,\n"
    "            pruner='threshold(upper=0.5)', launch=False)\n"
    "board = Dashboard(run)\n"
    "display(board.widget)\n"
    "run.start()\n"
)


def test_header_names_the_pruner_and_pruned_rows_are_marked_and_plotted(kernel):
    import math

    kernel.run(SETUP)
    cell = kernel.run(PRUNED_RUN)
    assert cell.error is None, cell.error_text
    kernel.run("run.wait()")
    pruned = kernel.value("sorted(t.number for t in run.trials(states=None) if t.state.name == 'PRUNED')")
    assert 0 < len(pruned) < 20  # the threshold prunes the trials whose x is above 0.5, and only those

    def shows_every_trial(found: dict[str, dict]) -> bool:
        table = next((value for value in _html(found) if "<table class='hpt-trials" in value), "")
        curves = _figure_marks(found, "intermediate values")
        return (_ended(found) and len(re.findall(r"<td class=n>\d+</td>", table)) == 20
                and sum(_line_count(m) for m in curves) == 20)

    states = _widgets_once(kernel, cell.msg_id, shows_every_trial,
                           "the ended run's 20 trials in the header, table and intermediate curves", decoded=True)
    html_values = [s["value"] for s in states.values() if s.get("_model_name") == "HTMLModel"]
    header = next(value for value in html_values if "hpt-header" in value)
    assert "pruner threshold(upper=0.5)" in header
    assert f"{len(pruned)} pruned" in header
    table = next(value for value in html_values if "<table class='hpt-trials" in value)
    rows = re.findall(r"<tr([^>]*)><td class=n>(\d+)</td><td>(\w+)</td>", table)
    marked = sorted(int(number) for attrs, number, state in rows if state == "pruned")
    assert marked == pruned
    assert all("hpt-pruned" in attrs for attrs, number, state in rows if state == "pruned")
    assert not any("hpt-pruned" in attrs for attrs, number, state in rows if state != "pruned")
    # The intermediate page has every trial's curve: the pruned ones dashed, ending at their
    # first step (their last point repeated), the others over all three steps.
    marks = _figure_marks(states, "intermediate values")
    dashed = next(m for m in marks if m.get("line_style") == "dashed")
    solid = [m for m in marks if m.get("line_style") != "dashed" and _line_count(m)]
    xs = kernel.value("[t.params['x'] for t in sorted(run.trials(states=None), key=lambda t: t.number)]")
    assert dashed["y"].shape == (len(pruned), 3) and dashed["x"].tolist() == [[0.0, 0.0, 0.0]] * len(pruned)
    assert sorted(xs[n] for n in pruned) == sorted(float(line[0]) for line in dashed["y"])
    assert all(not math.isnan(v) for line in dashed["y"] for v in line)  # NaN ends log console errors
    assert sum(_line_count(m) for m in solid) == 20 - len(pruned)
    assert all(line == [0.0, 1.0, 2.0] for m in solid for line in _lines({"y": m["x"]}))
    # Not a PBT run: no lineage or schedule page.
    picker = next(s for s in states.values() if s.get("_model_name") == "ToggleButtonsModel"
                  and "History" in s["_options_labels"])
    assert "Intermediate" in picker["_options_labels"]
    assert "Lineage" not in picker["_options_labels"] and "Schedule" not in picker["_options_labels"]
    assert not [s for s in states.values() if s.get("_model_name") == "FigureModel"
                and str(s.get("title", "")).startswith(("lineage", "the best member"))]


def test_header_says_the_run_ended_for_want_of_improvement(kernel):
    kernel.run(SETUP)
    cell = kernel.run(
        "run = start(lambda: tune.float(0, 1, name='x') * 0 + 1.0, n_trials=50, storage='memory', report=False,"
        " name='flat', patience=3, seed=0, launch=False)\n"
        "board = Dashboard(run)\n"
        "display(board.widget)\n"
        "run.start()\n"
    )
    assert cell.error is None, cell.error_text
    kernel.run("run.wait()")
    assert kernel.value("(run.state, run.n_finished)") == ("finished", 4)
    header = _header(_widgets_once(kernel, cell.msg_id, _ended, "the header of the ended run"))
    assert "no improvement in 3 complete trials (--patience 3)" in header and "4/50 trials" in header
    # No trial called tune.report: the Intermediate page says how to, instead of an empty frame.
    intermediate = _page_box(_widgets_once(kernel, cell.msg_id, _ended, "the ended run's pages"), "intermediate")
    assert [s["_model_name"] for s in intermediate] == ["HTMLModel"]
    assert "No trial has reported an intermediate value" in intermediate[0]["value"]
    assert "tune.report(value, step)" in intermediate[0]["value"]


PBT_RUN = """
def toy():
    h0 = tune.float(0, 1, name="h0"); h1 = tune.float(0, 1, name="h1")
    state = tune.restore() or {"theta": [0.9, 0.9], "step": 0}
    t0, t1 = state["theta"]; step = state["step"]
    for _ in range(1000):
        t0, t1 = t0 + 0.01 * (-2 * h0 * t0), t1 + 0.01 * (-2 * h1 * t1)
        step += 1
        q = 1.2 - (t0 ** 2 + t1 ** 2)
        tune.checkpoint({"theta": [t0, t1], "step": step})
        tune.report(q, step)
    return q
run = start(toy, n_trials=40, storage="memory", report=False, name="toy", scheduler="pbt", population=3,
            interval=4, direction="maximize", seed=0, launch=False)
board = Dashboard(run)
display(board.widget)
run.start()
"""


def test_a_pbt_run_draws_its_lineage_and_the_best_members_schedule(kernel):
    kernel.run(SETUP)
    cell = kernel.run(PBT_RUN)
    assert cell.error is None, cell.error_text
    kernel.run("run.wait()")
    lineage = kernel.value("[(s.number, s.member, s.start, s.end, s.exploited, s.parent, s.from_trial)"
                           " for s in run.lineage()]")
    schedule = kernel.value("run.best_schedule")
    assert len(lineage) == 40 and any(s[4] for s in lineage)

    def draws_the_end(found: dict[str, dict]) -> bool:
        segments = next(m for m in _figure_marks(found, "lineage") if m.get("line_style") != "dashed")
        steps = _figure_marks(found, "the best member")[0]
        return (_ended(found) and len(np.asarray(segments["x"])) == 40
                and len(np.asarray(steps["x"])) == len(schedule) + 1
                and any(f"{len(schedule)} segments back" in value for value in _html(found)))

    states = _widgets_once(kernel, cell.msg_id, draws_the_end,
                           "the lineage of all 40 segments and the best member's schedule", decoded=True)
    picker = next(s for s in states.values() if s.get("_model_name") == "ToggleButtonsModel"
                  and "History" in s["_options_labels"])
    assert "Lineage" in picker["_options_labels"] and "Schedule" in picker["_options_labels"]
    header = next(s["value"] for s in states.values()
                  if s.get("_model_name") == "HTMLModel" and "hpt-header" in s["value"])
    assert "PBT · population 3 · every 4 steps" in header

    # Lineage: one solid line per segment at its member's height, one dashed link per exploit.
    marks = _figure_marks(states, "lineage")
    links = next(m for m in marks if m.get("line_style") == "dashed")
    lines = next(m for m in marks if m.get("line_style") != "dashed")
    assert lines["x"].tolist() == [[float(s[2]), float(s[3])] for s in lineage]
    assert lines["y"].tolist() == [[float(s[1]), float(s[1])] for s in lineage]
    assert len(lines["color"]) == 40
    ends = {s[0]: s[3] for s in lineage}
    exploits = [s for s in lineage if s[4]]
    assert links["x"].tolist() == [[float(ends[s[6]]), float(s[2])] for s in exploits]
    assert links["y"].tolist() == [[float(s[5]), float(s[1])] for s in exploits]
    assert all(a != b for a, b in links["y"].tolist())  # from the donor's line to another member's

    # Schedule: the best member's hyperparameters as step lines over its steps, and as a table.
    plotted = _figure_marks(states, "the best member")[0]
    assert plotted["interpolation"] == "step-after"
    assert plotted["labels"] == ["h0 (0-1)", "h1 (0-1)"]
    assert plotted["x"].tolist() == [float(e["start"]) for e in schedule] + [float(schedule[-1]["end"])]
    for name, line in zip(["h0", "h1"], plotted["y"].tolist()):
        expected = [e[name] for e in schedule]
        assert line == expected + expected[-1:]  # declared range 0-1: scaled values are the values
    table = next(s["value"] for s in states.values()
                 if s.get("_model_name") == "HTMLModel" and "hpt-schedule" in s["value"])
    cells = re.findall(r"<tr><td>(\d+)-(\d+)</td><td>(\d+)</td><td>(\d+)</td>", table)
    assert [(int(a), int(b), int(t), int(m)) for a, b, t, m in cells] == \
        [(e["start"], e["end"], e["trial"], e["member"]) for e in schedule]


def test_the_lineage_page_draws_a_bounded_number_of_segments_and_only_when_they_change():
    import numpy as np

    from hpt_jupyter import start
    from hpt_jupyter.views.dashboard import Dashboard

    namespace: dict = {"start": start, "Dashboard": Dashboard, "display": lambda widget: None}
    from hpt_jupyter import tune

    namespace["tune"] = tune
    exec(PBT_RUN.replace("board = Dashboard(run)", "board = Dashboard(run, max_segments=10)")
         .replace("run.start()", "run.start().wait()"), namespace)
    run, board = namespace["run"], namespace["board"]
    try:
        board.refresh(full=True)
        segments = run.lineage()
        latest = segments[-10:]
        assert np.asarray(board.lineage_lines.x).tolist() == [[float(s.start), float(s.end)] for s in latest]
        assert len(board.lineage_links.x) == sum(1 for s in latest if s.exploited)
        assert "the latest 10 of 40 segments" in board.lineage_note.value
        sent = []
        board.lineage_lines.observe(lambda change: sent.append(change["name"]), names=["x", "y", "color"])
        board.page_picker.value = "Lineage"
        board.refresh()
        assert sent == []  # nothing new: not drawn again
    finally:
        board.close()
