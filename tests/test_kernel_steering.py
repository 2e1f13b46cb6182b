"""Steering a running %%tune study through a real kernel: sliders, toggles, brushes and buttons
moved with the comm messages a frontend sends, and the %tune line commands."""

from __future__ import annotations

import re
import time

import numpy as np

CELL = """%%tune -n {n} --seed 0 --storage memory --name {name}
x = tune.float(-5, 5)
lr = tune.float(1e-5, 1e-1, log=True)
kind = tune.choice(["a", "b", "c"])
import time; time.sleep({delay})
(x - 1) ** 2 + abs(lr - 1e-3) + (kind == "b")
"""


def _later(kernel, name: str, expression: str):
    """``expression`` over the trials asked after the latest narrowing of ``name``."""
    return kernel.value(f"(lambda r: [{expression} for t in r.trials() if t.number >= r.narrowings[-1].first_trial])"
                        f"(tune.runs[{name!r}])")


def test_a_slider_moved_in_the_frontend_narrows_every_later_trial(kernel):
    cell = kernel.run(CELL.format(n=120, name="slid", delay=0.05))
    assert cell.error is None, cell.error_text
    time.sleep(1.0)
    slider = kernel.find_widget(cell.msg_id, "FloatRangeSliderModel", description="x")
    kernel.update_widget(slider, {"value": [0.0, 2.0]})
    kernel.run("%tune wait slid")
    source, ranges = kernel.value("(tune.runs['slid'].narrowings[-1].source, tune.runs['slid'].narrowings[-1].ranges)")
    assert source == "slider" and ranges == {"x": "0 .. 2"}
    xs = _later(kernel, "slid", "t.params['x']")
    assert xs and all(0.0 <= x <= 2.0 for x in xs)
    assert kernel.value("tune.runs['slid'].n_finished") == 120
    messages = kernel.html_widgets(cell.msg_id)
    assert any("Searching x 0 .. 2 from the next trial on (slider)" in m for m in messages)
    assert any("Narrowings" in m and "slider: x 0 .. 2" in m for m in messages)


def test_toggles_narrow_the_options_and_removing_every_option_is_refused(kernel):
    cell = kernel.run(CELL.format(n=120, name="toggled", delay=0.05))
    assert cell.error is None, cell.error_text
    time.sleep(0.8)
    toggles = {label: kernel.find_widget(cell.msg_id, "ToggleButtonModel", description=label)
               for label in ("a", "b", "c")}
    kernel.update_widget(toggles["b"], {"value": False})
    kernel.update_widget(toggles["a"], {"value": False})
    kernel.update_widget(toggles["c"], {"value": False})  # nothing left: refused
    time.sleep(0.5)
    kernel.run("%tune wait toggled")
    assert kernel.value("tune.runs['toggled'].overrides['kind'].labels") == ("c",)
    kinds = _later(kernel, "toggled", "t.params['kind']")
    assert kinds and set(kinds) == {"c"}
    states = kernel.widgets(cell.msg_id)
    assert any("Keep at least one option of &#x27;kind&#x27;" in s.get("value", "") for s in states.values()
               if s.get("_model_name") == "HTMLModel")
    assert states[toggles["c"]]["value"] is True  # the refused click was put back


def test_a_brush_on_a_slice_proposes_and_one_click_applies(kernel):
    cell = kernel.run(CELL.format(n=200, name="brushed", delay=0.05))
    assert cell.error is None, cell.error_text
    time.sleep(0.8)
    figure_id = kernel.find_widget(cell.msg_id, "FigureModel", title="x")
    assert kernel.widgets(cell.msg_id)[figure_id]["interaction"] is None  # hover first: brushing is a mode
    kernel.update_widget(kernel.find_widget(cell.msg_id, "ToggleButtonModel", description="brush to narrow"),
                         {"value": True})
    time.sleep(0.5)
    figure = kernel.widgets(cell.msg_id)[figure_id]
    brush = figure["interaction"].removeprefix("IPY_MODEL_")  # the brush on x's slice plot
    kernel.update_widget(brush, {"brushing": True})
    kernel.update_widget(brush, {"selected": {"dtype": "float64", "shape": [2]}, "brushing": False},
                         buffers=[np.array([-1.0, 0.5]).tobytes()], buffer_paths=[["selected", "value"]])
    time.sleep(0.5)
    assert kernel.value("tune.runs['brushed'].narrowings") == []  # proposed, not applied yet
    messages = kernel.html_widgets(cell.msg_id)
    proposal = [m for m in messages if "Proposed (brush)" in m]
    assert proposal and "x -1 .. 0.5: 15% of the declared space" in proposal[0], messages
    kernel.click(kernel.find_widget(cell.msg_id, "ButtonModel", description="Apply proposal"))
    kernel.run("%tune wait brushed")
    record = kernel.value("tune.runs['brushed'].narrowings[-1].as_dict()")
    assert record["source"] == "brush" and record["ranges"] == {"x": "-1 .. 0.5"}
    assert record["first_trial"] < 200
    xs = _later(kernel, "brushed", "t.params['x']")
    assert xs and all(-1.0 <= x <= 0.5 for x in xs)


def test_tune_line_commands_narrow_refuse_and_enqueue(kernel):
    cell = kernel.run(CELL.format(n=100, name="typed", delay=0.05))
    assert cell.error is None, cell.error_text
    time.sleep(0.8)  # a few complete trials to count
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
    time.sleep(0.8)
    pages = kernel.find_widget(cell.msg_id, "ToggleButtonsModel", _options_labels=[
        "History", "Trials", "Slices", "Parallel", "Intermediate", "Importance"])
    kernel.update_widget(pages, {"index": 3})  # the parallel coordinates page: it draws while on show
    time.sleep(1.0)
    axis = kernel.find_widget(cell.msg_id, "DropdownModel", description="brush axis")
    labels = kernel.widgets(cell.msg_id)[axis]["_options_labels"]
    kernel.update_widget(axis, {"index": labels.index("x")})
    kernel.run("%tune pause parallel\nimport time; time.sleep(0.8)")  # no new trial moves the axes now
    drawn = kernel.value("get_ipython().magics_manager.registry['TuneMagics'].dashboards['parallel']"
                         "._parallel_scaling['x']")
    brush = kernel.find_widget(cell.msg_id, "BrushIntervalSelectorModel", orientation="vertical")
    kernel.update_widget(brush, {"brushing": True})
    kernel.update_widget(brush, {"selected": {"dtype": "float64", "shape": [2]}, "brushing": False},
                         buffers=[np.array([0.0, 0.5]).tobytes()], buffer_paths=[["selected", "value"]])
    time.sleep(0.5)
    kernel.click(kernel.find_widget(cell.msg_id, "ButtonModel", description="Apply proposal"))
    time.sleep(0.5)
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
    time.sleep(1.5)
    assert kernel.run("%tune narrow crashy x=0:2 kind=a").error is None
    store = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until a trial runs in the narrowed study
        names = [s.study_name for s in store.get_all_studies()]
        if "crashy ~narrowed-1" in names:
            trials = optuna.load_study(study_name="crashy ~narrowed-1", storage=store).trials
            if trials and trials[-1].state == TrialState.RUNNING and "hpt:copy_of" not in trials[-1].system_attrs:
                break
        time.sleep(0.05)
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
    later = _later(kernel, "crashy", "(t.params['x'], t.params['kind'])")
    assert all(0 <= x <= 2 and kind == "a" for x, kind in later) and first < 30
