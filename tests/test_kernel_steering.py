"""Steering a running %%tune study through a real kernel: sliders, toggles, brushes and buttons
moved with the comm messages a frontend sends, and the %tune line commands."""

from __future__ import annotations

import re

import numpy as np

from conftest import wait_until

CELL = """%%tune -n {n} --seed 0 --storage memory --name {name}
x = tune.float(-5, 5)
lr = tune.float(1e-5, 1e-1, log=True)
kind = tune.choice(["a", "b", "c"])
import time; time.sleep({delay})
(x - 1) ** 2 + abs(lr - 1e-3) + (kind == "b")
"""


BOARD = "get_ipython().magics_manager.registry['TuneMagics'].dashboards[{name!r}]"


def _later(kernel, name: str, expression: str) -> list:
    """``expression`` over the complete trials asked after the latest narrowing of ``name``:
    at least one, or the narrowing was never put to the test."""
    found = kernel.value(f"(lambda r: [{expression} for t in r.trials() if t.number >= r.narrowings[-1].first_trial])"
                         f"(tune.runs[{name!r}])")
    assert found, f"no complete trial of {name!r} ran after its latest narrowing"
    return found


def _finished(kernel, name: str, n: int) -> None:
    """Wait until study ``name`` has finished ``n`` trials: what follows lands while it runs."""
    wait_until(lambda: kernel.value(f"tune.runs[{name!r}].n_finished") >= n, f"{n} finished trials of {name!r}")


def _widgets_once(kernel, msg_id: str, ready, what: str) -> dict[str, dict]:
    """The latest state of a cell's widgets, as soon as ``ready(states)`` holds (from the
    messages the kernel really sent)."""
    states: dict[str, dict] = {}

    def check() -> bool:
        states.clear()
        states.update(kernel.widgets(msg_id, 0.2))
        return ready(states)

    wait_until(check, what, interval=0)
    return states


def _sent(kernel, comm_id: str) -> list[dict]:
    """The state updates the kernel sent for one widget, in order (a frontend's own changes
    are not echoed back)."""
    return [m["content"]["data"]["state"] for m in kernel.arrived
            if m["msg_type"] == "comm_msg" and m["content"].get("comm_id") == comm_id
            and m["content"]["data"].get("method") == "update"]


def _html_once(kernel, msg_id: str, wanted: str, what: str) -> list[str]:
    """The values of a cell's HTML widgets, as soon as one of them contains ``wanted``."""
    states = _widgets_once(kernel, msg_id, lambda found: any(wanted in s.get("value", "") for s in found.values()
                                                             if s.get("_model_name") == "HTMLModel"), what)
    return [s["value"] for s in states.values() if s.get("_model_name") == "HTMLModel"]


def test_a_slider_moved_in_the_frontend_narrows_every_later_trial(kernel):
    cell = kernel.run(CELL.format(n=120, name="slid", delay=0.05))
    assert cell.error is None, cell.error_text
    _finished(kernel, "slid", 3)
    slider = kernel.find_widget(cell.msg_id, "FloatRangeSliderModel", description="x")
    kernel.update_widget(slider, {"value": [0.0, 2.0]})
    kernel.run("%tune wait slid")
    source, ranges = kernel.value("(tune.runs['slid'].narrowings[-1].source, tune.runs['slid'].narrowings[-1].ranges)")
    assert source == "slider" and ranges == {"x": "0 .. 2"}
    xs = _later(kernel, "slid", "t.params['x']")
    assert all(0.0 <= x <= 2.0 for x in xs)
    assert kernel.value("tune.runs['slid'].n_finished") == 120
    messages = _html_once(kernel, cell.msg_id, "slider: x 0 .. 2",
                          "the panel's list of narrowings to show the slider's")
    assert any("Searching x 0 .. 2 from the next trial on (slider)" in m for m in messages)
    assert any("Narrowings" in m and "slider: x 0 .. 2" in m for m in messages)


def test_toggles_narrow_the_options_and_removing_every_option_is_refused(kernel):
    cell = kernel.run(CELL.format(n=120, name="toggled", delay=0.05))
    assert cell.error is None, cell.error_text
    _finished(kernel, "toggled", 3)
    toggles = {label: kernel.find_widget(cell.msg_id, "ToggleButtonModel", description=label)
               for label in ("a", "b", "c")}
    kernel.update_widget(toggles["b"], {"value": False})
    kernel.update_widget(toggles["a"], {"value": False})
    kernel.update_widget(toggles["c"], {"value": False})  # nothing left: refused
    kernel.run("%tune wait toggled")
    assert kernel.value("tune.runs['toggled'].overrides['kind'].labels") == ("c",)
    kinds = _later(kernel, "toggled", "t.params['kind']")
    assert set(kinds) == {"c"}
    assert any("Keep at least one option of &#x27;kind&#x27;" in m for m in kernel.html_widgets(cell.msg_id, 0.2))
    # The refused click is put back: the kernel tells the frontend that c is on again (the
    # kernel never turns c off itself, so an update to True answers the click), and the
    # toggles show the space searched, c alone.
    wait_until(lambda: kernel._drain(None, 0.2) or any(state.get("value") is True for state in
                                                       _sent(kernel, toggles["c"])),
               "the kernel to put the refused click on 'c' back")
    board = BOARD.format(name="toggled")
    assert kernel.value(f"[t.value for t in {board}.steer.controls['kind'].toggles]") == [False, False, True]


def test_a_brush_on_a_slice_proposes_and_one_click_applies(kernel):
    cell = kernel.run(CELL.format(n=200, name="brushed", delay=0.05))
    assert cell.error is None, cell.error_text
    _finished(kernel, "brushed", 3)
    figure_id = kernel.find_widget(cell.msg_id, "FigureModel", title="x")
    assert kernel.widgets(cell.msg_id)[figure_id]["interaction"] is None  # hover first: brushing is a mode
    kernel.update_widget(kernel.find_widget(cell.msg_id, "ToggleButtonModel", description="brush to narrow"),
                         {"value": True})
    figure = _widgets_once(kernel, cell.msg_id, lambda found: found[figure_id]["interaction"],
                           "brush mode to put a brush on x's slice plot")[figure_id]
    brush = figure["interaction"].removeprefix("IPY_MODEL_")  # the brush on x's slice plot
    kernel.update_widget(brush, {"brushing": True})
    kernel.update_widget(brush, {"selected": {"dtype": "float64", "shape": [2]}, "brushing": False},
                         buffers=[np.array([-1.0, 0.5]).tobytes()], buffer_paths=[["selected", "value"]])
    messages = _html_once(kernel, cell.msg_id, "Proposed (brush)", "the panel to show the brush's proposal")
    assert kernel.value("tune.runs['brushed'].narrowings") == []  # proposed, not applied yet
    proposal = [m for m in messages if "Proposed (brush)" in m]
    assert proposal and "x -1 .. 0.5: 15% of the declared space" in proposal[0], messages
    kernel.click(kernel.find_widget(cell.msg_id, "ButtonModel", description="Apply proposal"))
    kernel.run("%tune wait brushed")
    record = kernel.value("tune.runs['brushed'].narrowings[-1].as_dict()")
    assert record["source"] == "brush" and record["ranges"] == {"x": "-1 .. 0.5"}
    assert record["first_trial"] < 200
    xs = _later(kernel, "brushed", "t.params['x']")
    assert all(-1.0 <= x <= 0.5 for x in xs)


def test_tune_line_commands_narrow_refuse_and_enqueue(kernel):
    cell = kernel.run(CELL.format(n=100, name="typed", delay=0.05))
    assert cell.error is None, cell.error_text
    # a complete trial inside the range narrowed to below, for the narrowing to count
    kernel.run("inside = []\n"
               "tune.runs['typed'].subscribe(lambda e: inside.append(e.number) if e.kind == 'trial_finished'"
               " and e.trial.state.name == 'COMPLETE' and -1 <= e.trial.params['x'] <= 0.5"
               " and e.trial.params['kind'] in ('a', 'c') else None)")
    wait_until(lambda: kernel.value("len(inside)") > 0, "a complete trial of 'typed' with x in -1 .. 0.5, kind a or c")
    reply = kernel.run("%tune narrow typed x=-1:0.5 kind=a,c")
    assert reply.error is None, reply.error_text
    said = re.search(r"'typed': searching x -1 \.\. 0\.5, kind \['a', 'c'\] from the next trial on "
                     r"\(10% of the declared space, (\d+) complete trials inside\)\.", reply.stdout)
    assert said, reply.stdout  # 1.5 of x's 10 times 2 of 3 options
    inside_when_asked = int(said[1])
    assert inside_when_asked > 0
    bad = kernel.run("%tune narrow typed x=3:1")
    assert bad.error["ename"] == "UsageError" and "is empty (low > high)" in bad.error["evalue"]
    assert bad.stderr.strip() == f"UsageError: {bad.error['evalue']}"  # one line
    outside = kernel.run("%tune narrow typed lr=1e-9:1e-3")
    assert "outside the declared range" in outside.error["evalue"]
    # steering from code does not wait for the study's end (as reading its results would)
    assert kernel.value("(len(tune.runs['typed'].narrowings), tune.runs['typed'].is_alive)")[1] is True
    queued = kernel.run("%tune enqueue typed x=0.25 lr=0.001 kind=c")
    assert queued.error is None, queued.error_text
    assert "queued as the next trial: x=0.25, lr=0.001, kind='c'" in queued.stdout
    kernel.run("%tune wait typed")
    assert kernel.value("len(tune.runs['typed'].narrowings)") == 1  # the refusals changed nothing
    # counted when asked; the loop seeds the new study a trial or so later, with those and more
    assert inside_when_asked <= kernel.value("tune.runs['typed'].narrowings[0].seeded")
    later = _later(kernel, "typed", "(t.params['x'], t.params['kind'])")
    assert all(-1 <= x <= 0.5 and kind in ("a", "c") for x, kind in later)
    assert (0.25, "c") in later
    reset = kernel.run("%tune reset typed")
    assert "searching the whole declared space" in reset.stdout
    focus = kernel.run("%tune focus typed top=0.2")
    assert focus.error is None and "'typed': searching x" in focus.stdout


def test_a_brush_on_a_parallel_coordinates_axis_proposes_that_axis_range(kernel):
    cell = kernel.run(CELL.format(n=300, name="parallel", delay=0.05))
    assert cell.error is None, cell.error_text
    _finished(kernel, "parallel", 3)
    pages = kernel.find_widget(cell.msg_id, "ToggleButtonsModel", _options_labels=[
        "History", "Trials", "Slices", "Parallel", "Intermediate", "Importance"])
    kernel.update_widget(pages, {"index": 3})  # the parallel coordinates page: it draws while on show
    axis = kernel.find_widget(cell.msg_id, "DropdownModel", description="brush axis")
    drawn_page = _widgets_once(kernel, cell.msg_id, lambda found: "x" in found[axis]["_options_labels"],
                               "the parallel coordinates page to be drawn (x among its brush axes)")
    labels = drawn_page[axis]["_options_labels"]
    kernel.update_widget(axis, {"index": labels.index("x")})
    kernel.run("%tune pause parallel")
    board = BOARD.format(name="parallel")
    # no trial runs or is about to, and the page shows every finished one: no new trial moves the axes now
    wait_until(lambda: kernel.value(f"(lambda r, d: r.state == 'paused' and r._engine.in_flight == 0"
                                    f" and d._drawn.get('Parallel') == d.digest.version)"
                                    f"(tune.runs['parallel'], {board})"),
               "'parallel' paused with no trial in flight and its parallel coordinates drawn up to date")
    drawn = kernel.value(f"{board}._parallel_scaling['x']")
    brush = kernel.find_widget(cell.msg_id, "BrushIntervalSelectorModel", orientation="vertical")
    kernel.update_widget(brush, {"brushing": True})
    kernel.update_widget(brush, {"selected": {"dtype": "float64", "shape": [2]}, "brushing": False},
                         buffers=[np.array([0.0, 0.5]).tobytes()], buffer_paths=[["selected", "value"]])
    _html_once(kernel, cell.msg_id, "Proposed (brush): x", "the panel to show the brush's proposal for x")
    kernel.click(kernel.find_widget(cell.msg_id, "ButtonModel", description="Apply proposal"))
    kernel.run("%tune stop parallel\n%tune resume parallel\n%tune wait parallel")
    low, high = kernel.value("(lambda p: (p.low, p.high))(tune.runs['parallel'].overrides['x'])")
    _, start, end, log = drawn
    assert not log  # x is not a log knob: its axis is linear
    assert abs(low - start) < 1e-9 and abs(high - (start + 0.5 * (end - start))) < 1e-9
    assert kernel.value("tune.runs['parallel'].narrowings[-1].source") == "brush"


def test_a_kernel_killed_in_a_narrowed_space_resumes_there(kernel, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    cell = ("%%tune -n 30 --name crashy --seed 0\n"
            "x = tune.float(-5, 5)\nkind = tune.choice(['a', 'b'])\nimport time; time.sleep(0.3)\n(x - 1) ** 2")
    assert kernel.run(cell).error is None
    _finished(kernel, "crashy", 2)  # narrowed with some history to seed the narrowed study
    assert kernel.run("%tune narrow crashy x=0:2 kind=a").error is None
    store = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))

    def running_in_the_narrowed_study() -> bool:
        if "crashy ~narrowed-1" not in [s.study_name for s in store.get_all_studies()]:
            return False
        trials = optuna.load_study(study_name="crashy ~narrowed-1", storage=store).trials
        return bool(trials) and trials[-1].state == TrialState.RUNNING and "hpt:copy_of" not in trials[-1].system_attrs

    wait_until(running_in_the_narrowed_study, "a trial running in the narrowed study (killed there)")
    kernel.kill_and_restart()
    assert kernel.run("%load_ext hpt_jupyter\nfrom hpt_jupyter import tune").error is None
    reply = kernel.run(cell)
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait crashy")
    header = next(h for h in kernel.html_widgets(reply.msg_id) if "sampler" in h)
    assert "resumed from" in header and "was cut off by a kernel restart" in header
    first = kernel.value("tune.runs['crashy'].narrowings[0].first_trial")
    assert kernel.value("sorted(tune.runs['crashy'].overrides)") == ["kind", "x"]
    states = kernel.value("[(t.number, t.state.name) for t in tune.runs['crashy'].trials(states=None)]")
    assert [n for n, _ in states] == list(range(len(states))) and [s for _, s in states].count("FAIL") == 1
    assert kernel.value("tune.runs['crashy'].n_finished") == 30
    # every trial from the narrowing on but the one cut off completed, inside the narrowed space
    later = _later(kernel, "crashy", "(t.params['x'], t.params['kind'])")
    assert len(later) == 30 - first - 1
    assert all(0 <= x <= 2 and kind == "a" for x, kind in later)
