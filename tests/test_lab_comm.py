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


def test_ended_runs_of_this_kernel_are_listed_live_with_their_final_state_never_as_stored(kernel):
    """Runs of this kernel in the default store, ended four ways: each is listed once, as this
    kernel's (live), in its own final state with its final counts, best and why it ended; only a
    study no run here opened is "stored"."""
    kernel.run("%%tune -n 3 --name untouched --quiet\nx = tune.float(0, 1)\nx")
    kernel.run("%tune wait untouched")
    kernel.run("del tune.runs['untouched']")  # as if an earlier kernel had run it: in the store only
    kernel.run("%%tune -n 4 --name done --quiet --seed 0\nx = tune.float(0, 1)\nx")
    kernel.run("%%tune -n 1000 --timeout 1 --name timed --quiet\nx = tune.float(0, 1)\nimport time; time.sleep(0.05)\nx")
    kernel.run("%%tune -n 1000 --name halted --quiet\nx = tune.float(0, 1)\nimport time; time.sleep(0.05)\nx")
    broken = kernel.run("%%tune -n 10 --max-failures 2 --name broken --quiet\nx = tune.float(0, 1)\n"
                        "if x < 2:\n    raise ValueError('no')\nx")
    assert broken.error is None, broken.error_text
    time.sleep(0.3)
    kernel.run("%tune stop halted")
    for name in ["done", "timed", "halted", "broken"]:
        kernel.run(f"%tune wait {name}")
    comm = _open(kernel)
    studies = _received(kernel, comm)[0]["studies"]
    assert sorted(s["name"] for s in studies) == ["broken", "done", "halted", "timed", "untouched"]  # each once
    by_name = {s["name"]: s for s in studies}
    for name, state in [("done", "finished"), ("timed", "finished"), ("halted", "stopped"), ("broken", "failed")]:
        study = by_name[name]
        assert study["live"] is True and study["state"] == state, study
        assert "resume_hint" not in study
        run = kernel.value(f"(tune.runs[{name!r}].n_finished, tune.runs[{name!r}].best_value, tune.runs[{name!r}].reason)")
        assert (study["finished"], study["best"], study["reason"]) == tuple(run), study
    assert by_name["done"]["finished"] == 4 and by_name["done"]["best"] is not None
    assert by_name["done"]["reason"] == "budget reached (4 trials)"
    assert by_name["timed"]["reason"].startswith("timeout") and 0 < by_name["timed"]["finished"] < 1000
    assert by_name["halted"]["reason"] == "stopped" and by_name["halted"]["eta"] is None
    assert by_name["broken"]["best"] is None and by_name["broken"]["finished"] == 2
    untouched = by_name["untouched"]
    assert untouched["live"] is False and untouched["state"] == "stored" and "Re-run" in untouched["resume_hint"]

    # +N trials on an ended run starts it again: the sidebar sees it run, then end once more.
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "more", "study": "done", "n": 2})
    kernel.run("%tune wait done")
    last = next(s for s in _received(kernel, comm)[-1]["studies"] if s["name"] == "done")
    assert (last["live"], last["state"], last["finished"]) == (True, "finished", 6)


def test_one_failed_snapshot_does_not_silence_the_sidebar():
    from hpt_jupyter.views.lab import LabBridge

    class FakeComm:
        def __init__(self):
            self.sent = []

        def send(self, data):
            self.sent.append(data)

        def on_msg(self, _callback):
            pass

        def on_close(self, _callback):
            pass

    bridge = LabBridge(interval=0.01)
    comm = FakeComm()
    bridge.open(comm, {"content": {"data": {"type": "hello", "protocol": 1}}})
    time.sleep(0.1)
    real, calls = bridge.snapshot, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a run changed under us")
        return real()

    bridge.snapshot = flaky
    before = len(comm.sent)
    bridge._dirty.set()
    deadline = time.monotonic() + 5
    while len(comm.sent) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(calls) >= 2 and len(comm.sent) > before, "the sender stopped after one failed snapshot"
    assert bridge._sender.is_alive()
