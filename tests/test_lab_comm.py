"""The JupyterLab sidebar's transport, from a real kernel: the comm target that %load_ext
registers, driven with the messages the extension sends (js/src/protocol.ts)."""

from __future__ import annotations

import time
import uuid

SLOW = """%%tune -n {n} --name {name} --storage memory --seed 0
x = tune.float(0, 1)
import time; time.sleep({delay})
x
"""


def _open(kernel, data=None) -> str:
    comm_id = uuid.uuid4().hex
    msg = kernel.client.session.msg("comm_open", {"comm_id": comm_id, "target_name": "hpt_jupyter",
                                                  "data": data or {"type": "hello", "protocol": 1}})
    kernel.client.shell_channel.send(msg)
    return comm_id


def _send(kernel, comm_id: str, data) -> None:
    kernel.client.shell_channel.send(kernel.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data}))


def _received(kernel, comm_id: str, settle: float = 0.6) -> list[dict]:
    kernel._drain(None, settle)
    return [m["content"]["data"] for m in kernel.arrived
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]


def test_the_sidebar_gets_studies_live_and_its_commands_act(kernel):
    kernel.run(SLOW.format(n=2, name="done-before", delay=0.0))
    kernel.run("%tune wait done-before")
    opened = time.monotonic()
    comm = _open(kernel)
    first = _received(kernel, comm)[0]
    assert first["type"] == "studies" and first["protocol"] == 1
    assert [s["name"] for s in first["studies"]] == ["done-before"]
    assert first["studies"][0]["state"] == "finished" and first["studies"][0]["finished"] == 2

    cell = kernel.run(SLOW.format(n=400, name="live", delay=0.02))
    assert cell.error is None
    time.sleep(2.0)
    updates = _received(kernel, comm)
    live = [s for u in updates for s in u["studies"] if s["name"] == "live"]
    assert live and live[-1]["state"] == "running" and live[-1]["live"]
    assert 0 < live[-1]["finished"] < 400 and live[-1]["budget"] == 400
    assert live[-1]["history"] and live[-1]["best"] == min(live[-1]["history"])
    assert len(updates) <= (time.monotonic() - opened) / 0.5 + 2  # at most two a second
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "pause", "study": "live"})
    time.sleep(0.6)
    assert kernel.value("tune.runs['live'].state") == "paused"
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "resume", "study": "live"})
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "more", "study": "live", "n": 5})
    time.sleep(0.3)
    assert kernel.value("tune.runs['live'].budget") == 405
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "stop", "study": "live"})
    kernel.run("%tune wait live")
    assert kernel.value("tune.runs['live'].state") == "stopped"
    last = _received(kernel, comm)[-1]
    assert next(s for s in last["studies"] if s["name"] == "live")["state"] == "stopped"


def test_malformed_or_unknown_messages_are_logged_and_ignored(kernel):
    cell = kernel.run(SLOW.format(n=60, name="guarded", delay=0.05))
    assert cell.error is None
    comm = _open(kernel)
    for bad in [{"type": "command", "protocol": 1, "action": "exec", "study": "guarded"},
                {"type": "command", "protocol": 2, "action": "stop", "study": "guarded"},
                {"type": "command", "protocol": 1, "action": "more", "study": "guarded", "n": "9; import os"},
                {"type": "command", "protocol": 1, "action": "stop", "study": "nope"},
                {"type": "shell", "code": "print('pwned')"}, ["stop"], "stop"]:
        _send(kernel, comm, bad)
    time.sleep(1.0)
    assert kernel.value("(tune.runs['guarded'].state, tune.runs['guarded'].budget)") == ("running", 60)
    logged = "".join(m["content"].get("text", "") for m in kernel.arrived if m["msg_type"] == "stream")
    assert "pwned" not in logged
    for reason in ["unknown action 'exec'", "protocol 2, expected 1", "'more' needs n", "unknown study 'nope'",
                   "protocol None, expected 1", "not an object: list", "not an object: str"]:
        assert reason in logged, reason
    # A comm opened without the sidebar's hello is closed at once.
    stranger = _open(kernel, {"type": "other"})
    kernel._drain(None, 0.5)
    assert any(m["msg_type"] == "comm_close" and m["content"]["comm_id"] == stranger for m in kernel.arrived)
    kernel.run("%tune stop guarded\n%tune wait guarded")


def test_stored_studies_that_no_run_has_opened_are_listed_with_a_resume_hint(kernel, tmp_path):
    kernel.run("%%tune -n 3 --name on-disk --quiet\nx = tune.float(0, 1)\nx")
    kernel.run("%tune wait on-disk")
    kernel.kill_and_restart()
    assert kernel.run("%load_ext hpt_jupyter").error is None
    comm = _open(kernel)
    studies = _received(kernel, comm)[0]["studies"]
    stored = next(s for s in studies if s["name"] == "on-disk")
    assert stored["live"] is False and stored["state"] == "stored" and stored["finished"] == 3
    assert "Re-run its %%tune cell" in stored["resume_hint"]
