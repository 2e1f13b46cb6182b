"""The JupyterLab sidebar's transport, from a real kernel: the comm target that %load_ext
registers, driven with the messages the extension sends (js/src/protocol.ts)."""

from __future__ import annotations

import time
import uuid

from conftest import wait_until

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


def _received(kernel, comm_id: str, settle: float = 0.2) -> list[dict]:
    """What the kernel sent the sidebar on ``comm_id`` so far (collecting for ``settle`` seconds)."""
    kernel._drain(None, settle)
    return [m["content"]["data"] for m in kernel.arrived
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id]


def _received_once(kernel, comm_id: str, ready, what: str) -> list[dict]:
    """What the kernel sent the sidebar on ``comm_id``, as soon as ``ready(messages)`` holds."""
    got: list[dict] = []

    def check() -> bool:
        got[:] = _received(kernel, comm_id)
        return bool(got) and ready(got)

    wait_until(check, what, interval=0)
    return got


def _study(message: dict, name: str) -> dict | None:
    return next((s for s in message["studies"] if s["name"] == name), None)


def _latest(name: str, check):
    """``ready`` for :func:`_received_once`: the latest message lists ``name`` and ``check`` holds for it."""
    return lambda got: (study := _study(got[-1], name)) is not None and check(study)


def _logged(kernel) -> str:
    return "".join(m["content"].get("text", "") for m in kernel.arrived if m["msg_type"] == "stream")


def test_the_sidebar_gets_studies_live_and_its_commands_act(kernel):
    kernel.run(SLOW.format(n=2, name="done-before", delay=0.0))
    kernel.run("%tune wait done-before")
    opened = time.monotonic()
    comm = _open(kernel)
    first = _received_once(kernel, comm, bool, "the sidebar's first message")[0]
    assert first["type"] == "studies" and first["protocol"] == 1
    assert [s["name"] for s in first["studies"]] == ["done-before"]
    assert first["studies"][0]["state"] == "finished" and first["studies"][0]["finished"] == 2

    cell = kernel.run(SLOW.format(n=400, name="live", delay=0.02))
    assert cell.error is None
    # 40 trials take 0.8 s or more: an update per trial instead of two a second would show
    updates = _received_once(kernel, comm, _latest("live", lambda s: s["finished"] >= 40),
                             "the sidebar to count 40 finished trials of 'live'")
    live = _study(updates[-1], "live")
    assert live["state"] == "running" and live["live"]
    assert 40 <= live["finished"] < 400 and live["budget"] == 400
    assert live["history"] and live["best"] == min(live["history"])
    assert len(updates) <= (time.monotonic() - opened) / 0.5 + 2  # at most two a second
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "pause", "study": "live"})
    _received_once(kernel, comm, _latest("live", lambda s: s["state"] == "paused"), "the sidebar to show 'live' paused")
    assert kernel.value("tune.runs['live'].state") == "paused"
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "resume", "study": "live"})
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "more", "study": "live", "n": 5})
    _received_once(kernel, comm, _latest("live", lambda s: s["state"] == "running" and s["budget"] == 405),
                   "the sidebar to show 'live' running again with a budget of 405")
    assert kernel.value("(tune.runs['live'].state, tune.runs['live'].budget)") == ("running", 405)
    _send(kernel, comm, {"type": "command", "protocol": 1, "action": "stop", "study": "live"})
    kernel.run("%tune wait live")
    assert kernel.value("tune.runs['live'].state") == "stopped"
    _received_once(kernel, comm, _latest("live", lambda s: s["state"] == "stopped"),
                   "the sidebar to show 'live' stopped")


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
    # handled in the order sent: once the last one's refusal is logged, every one was handled
    wait_until(lambda: kernel._drain(None, 0.2) or "not an object: str" in _logged(kernel),
               "the refusal of the last malformed message in the kernel's log", interval=0)
    assert kernel.value("(tune.runs['guarded'].state, tune.runs['guarded'].budget)") == ("running", 60)
    logged = _logged(kernel)
    assert "pwned" not in logged
    for reason in ["unknown action 'exec'", "protocol 2, expected 1", "'more' needs n", "unknown study 'nope'",
                   "protocol None, expected 1", "not an object: list", "not an object: str"]:
        assert reason in logged, reason
    # A comm opened without the sidebar's hello is closed at once.
    stranger = _open(kernel, {"type": "other"})
    wait_until(lambda: kernel._drain(None, 0.2) or any(
        m["msg_type"] == "comm_close" and m["content"]["comm_id"] == stranger for m in kernel.arrived),
        "the kernel to close a comm opened without the sidebar's hello", interval=0)
    kernel.run("%tune stop guarded\n%tune wait guarded")


def test_stored_studies_that_no_run_has_opened_are_listed_with_a_resume_hint(kernel, tmp_path):
    kernel.run("%%tune -n 3 --name on-disk --quiet\nx = tune.float(0, 1)\nx")
    kernel.run("%tune wait on-disk")
    kernel.kill_and_restart()
    assert kernel.run("%load_ext hpt_jupyter").error is None
    comm = _open(kernel)
    studies = _received_once(kernel, comm, bool, "the sidebar's first message")[0]["studies"]
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
    wait_until(lambda: kernel.value("tune.runs['halted'].n_finished") > 0, "a finished trial of 'halted'")
    kernel.run("%tune stop halted")  # stopped while it runs
    for name in ["done", "timed", "halted", "broken"]:
        kernel.run(f"%tune wait {name}")
    comm = _open(kernel)
    studies = _received_once(kernel, comm, bool, "the sidebar's first message")[0]["studies"]
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
    got = _received_once(kernel, comm, _latest("done", lambda s: s["finished"] == 6 and s["state"] == "finished"),
                         "the sidebar to show 'done' finished again after +2")
    last = _study(got[-1], "done")
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
    assert len(comm.sent) == 1  # the first snapshot goes out at once; no run here marks the sender dirty
    real, calls = bridge.snapshot, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a run changed under us")
        return real()

    bridge.snapshot = flaky
    before = len(comm.sent)
    bridge._dirty.set()
    wait_until(lambda: len(comm.sent) > before, "a snapshot sent after one that failed (the sender must go on)")
    assert len(calls) >= 2
    assert bridge._sender.is_alive()
