"""A cell that waits for a study keeps the dashboard alive: a real kernel, driven over ZMQ as
JupyterLab drives it under Run All (every cell's execute_request sent at once), with the
frontend's widget messages sent while the waiting cell runs."""

from __future__ import annotations

import time
import uuid

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)

SLOW_CELL = """%%tune -n {n} --storage memory --seed 0 --name slow --sampler random
a = tune.float(0, 1)
import time; time.sleep({sleep})
a
"""


def _board(kernel, attribute: str):
    """A widget of the 'slow' study's dashboard (read while the kernel is idle)."""
    return kernel.value("get_ipython().magics_manager.registry['TuneMagics']"
                        f".dashboards['slow'].{attribute}")


def _texts(kernel, msg_id: str) -> list[str]:
    """Every text a cell showed: streams, displays and their updates, in arrival order."""
    found = []
    for msg in kernel.outputs[msg_id]:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            found.append(content["text"])
        elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
            found.append(content["data"].get("text/plain", ""))
    return found


def _await_waiting(kernel, msg_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any("Waiting for 'slow'" in text for text in _texts(kernel, msg_id)):
        assert time.monotonic() < deadline, "the cell never started waiting"
        kernel._drain(None, 0.2)


def _idle_index(kernel, msg_id: str) -> int:
    return next(i for i, m in enumerate(kernel.arrived) if m["parent_header"].get("msg_id") == msg_id
                and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle")


def test_stop_clicked_while_a_later_cell_waits_stops_the_study_and_the_cell_goes_on(kernel):
    assert kernel.run(SLOW_CELL.format(n=100, sleep=0.15)).error is None
    stop = _board(kernel, "stop_button.model_id")
    waiting = kernel.client.execute("print('VALUES', a)")  # Run All: the next cell is already sent
    _await_waiting(kernel, waiting)
    time.sleep(1.0)
    clicked = time.monotonic()
    kernel.click(stop)
    reply = kernel.finish(waiting, 60)
    ended = time.monotonic() - clicked
    assert reply.error is None, reply.error_text
    # The click acted during the wait: the study stopped after its running trial, and the
    # cell went on at once with the best so far (without the pump: all 100 trials, 15 s).
    state, finished, best = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.best_params)")
    assert state == "stopped" and 0 < finished < 50, (state, finished)
    assert ended < 8, ended
    assert "Injected a=" in reply.stdout
    assert float(reply.stdout.split("VALUES ")[1].split()[0]) == best["a"]
    # The waiting line is replaced by how the wait ended, not left saying "Waiting for".
    updates = [m["content"]["data"]["text/plain"] for m in kernel.outputs[waiting]
               if m["msg_type"] == "update_display_data"]
    assert updates and updates[-1].startswith("Waited ") and "'slow' (stopped: " in updates[-1]
    assert f"{finished}/100 trials" in updates[-1] and "because this cell uses a" in updates[-1]


def test_cells_queued_behind_a_waiting_cell_run_after_it_once_each_in_order(kernel):
    assert kernel.run("order = []").error is None
    assert kernel.run(SLOW_CELL.format(n=40, sleep=0.1)).error is None
    waiting = kernel.client.execute("order.append(('waiting', a))")
    queued = [kernel.client.execute(f"order.append({i})") for i in range(3)]
    _await_waiting(kernel, waiting)
    # Messages a frontend sends meanwhile are answered while the cell still waits.
    info = kernel.client.comm_info(target_name="jupyter.widget")
    kernel_info = kernel.client.kernel_info()
    replies = {}
    for _ in range(2):
        msg = kernel.client.get_shell_msg(timeout=10)
        replies[msg["parent_header"]["msg_id"]] = msg
    assert set(replies) == {info, kernel_info}  # and not an execute_reply: the cell still waits
    assert replies[info]["content"]["comms"]  # the dashboard's widgets
    kernel._drain(None, 0.1)
    assert not any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                   for m in kernel.outputs[waiting])

    assert kernel.finish(waiting, 60).error is None
    for msg_id in queued:
        assert kernel.finish(msg_id, 60).error is None
    order = kernel.value("order")
    assert order[0][0] == "waiting" and order[1:] == [0, 1, 2]
    assert order[0][1] == kernel.value("tune.last.best_params['a']")
    # Each queued cell started after the waiting cell ended, in order, once.
    inputs = [i for i, m in enumerate(kernel.arrived) if m["msg_type"] == "execute_input"
              and m["parent_header"].get("msg_id") in queued]
    assert len(inputs) == 3 and inputs == sorted(inputs) and inputs[0] > _idle_index(kernel, waiting)
    counts = [m["content"]["execution_count"] for i, m in enumerate(kernel.arrived) if i in inputs]
    assert counts == sorted(counts) and len(set(counts)) == 3


def test_a_page_switch_while_a_cell_waits_shows_the_page(kernel):
    assert kernel.run(SLOW_CELL.format(n=100, sleep=0.15)).error is None
    picker = _board(kernel, "page_picker.model_id")
    box = _board(kernel, "page.model_id")
    options = _board(kernel, "page_picker.options")
    target = _board(kernel, f"pages[{options[1]!r}].model_id")
    stop = _board(kernel, "stop_button.model_id")
    waiting = kernel.client.execute("print('VALUES', a)")
    _await_waiting(kernel, waiting)
    switch = kernel.update_widget(picker, {"index": 1})
    deadline = time.monotonic() + 10
    shown = None
    while shown is None and time.monotonic() < deadline:
        kernel._drain(None, 0.2)
        shown = next((i for i, m in enumerate(kernel.arrived) if m["msg_type"] == "comm_msg"
                      and m["content"]["comm_id"] == box
                      and f"IPY_MODEL_{target}" in m["content"]["data"].get("state", {}).get("children", [])),
                     None)
    assert shown is not None, "the kernel never sent the new page"
    # A browser's widget sends its next change only after "idle" for this one (ipywidgets keeps
    # one message in flight): without it a second page switch would never reach the kernel.
    kernel._drain(None, 0.5)
    statuses = [m["content"]["execution_state"] for m in kernel.arrived if m["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == switch]
    assert statuses == ["busy", "idle"], statuses
    kernel.click(stop)
    assert kernel.finish(waiting, 60).error is None
    assert shown < _idle_index(kernel, waiting)  # sent while the cell still waited
    assert _board(kernel, "page_picker.value") == options[1]


def test_interrupting_a_waiting_cell_still_stops_the_study_gracefully(kernel):
    assert kernel.run(SLOW_CELL.format(n=200, sleep=0.1)).error is None
    waiting = kernel.client.execute("print('VALUES', a)")
    after = kernel.client.execute("print('AFTER', a)")
    _await_waiting(kernel, waiting)
    time.sleep(0.5)
    kernel.manager.interrupt_kernel()
    reply = kernel.finish(waiting, 60)
    assert reply.error is None, reply.error_text  # the cell went on with the best so far
    assert "Interrupted: stopping 'slow'" in reply.stdout and "Injected a=" in reply.stdout
    later = kernel.finish(after, 60)
    assert later.error is None and later.stdout.count("AFTER") == 1
    state, finished, best = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.best_params)")
    assert state == "stopped" and 0 < finished < 200
    assert float(reply.stdout.split("VALUES ")[1].split()[0]) == best["a"]
    assert float(later.stdout.split("AFTER ")[1].split()[0]) == best["a"]


def test_tune_wait_keeps_the_stop_button_working(kernel):
    assert kernel.run(SLOW_CELL.format(n=100, sleep=0.15)).error is None
    stop = _board(kernel, "stop_button.model_id")
    waiting = kernel.client.execute("%tune wait\nprint('VALUES', a)")
    deadline = time.monotonic() + 30
    while not any(m["msg_type"] == "execute_input" for m in kernel.outputs[waiting]):
        assert time.monotonic() < deadline
        kernel._drain(None, 0.2)
    time.sleep(1.0)
    clicked = time.monotonic()
    kernel.click(stop)
    reply = kernel.finish(waiting, 60)
    assert reply.error is None, reply.error_text
    assert time.monotonic() - clicked < 8
    state, finished, best = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.best_params)")
    assert state == "stopped" and 0 < finished < 50, (state, finished)
    assert float(reply.stdout.split("VALUES ")[1].split()[0]) == best["a"]


def test_the_sidebar_connects_and_stops_a_study_while_a_cell_waits(kernel):
    assert kernel.run(SLOW_CELL.format(n=100, sleep=0.15)).error is None
    waiting = kernel.client.execute("print('VALUES', a)")
    _await_waiting(kernel, waiting)
    # JupyterLab opens the sidebar's comm when the panel shows, maybe mid-wait (js/src/protocol.ts).
    comm_id = uuid.uuid4().hex
    kernel.client.shell_channel.send(kernel.client.session.msg(
        "comm_open", {"comm_id": comm_id, "target_name": "hpt_jupyter", "data": {"type": "hello", "protocol": 1}}))
    deadline = time.monotonic() + 10
    studies = []
    while not studies and time.monotonic() < deadline:
        kernel._drain(None, 0.2)
        studies = [m["content"]["data"] for m in kernel.arrived
                   if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]
    assert studies and [s["name"] for s in studies[0]["studies"]] == ["slow"]
    kernel.client.shell_channel.send(kernel.client.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "type": "command", "protocol": 1, "action": "stop", "study": "slow"}}))
    reply = kernel.finish(waiting, 60)
    assert reply.error is None and "Injected a=" in reply.stdout
    state, finished = kernel.value("(tune.last.state, tune.last.n_finished)")
    assert state == "stopped" and 0 < finished < 50, (state, finished)
