"""A real IPython kernel driven over ZMQ with jupyter_client, as a notebook frontend drives it."""

from __future__ import annotations

import queue
import time
from collections import defaultdict
from dataclasses import dataclass, field

from jupyter_client.manager import KernelManager


@dataclass
class Reply:
    msg_id: str
    stdout: str = ""
    stderr: str = ""
    error: dict | None = None
    results: list = field(default_factory=list)
    pages: list = field(default_factory=list)  # what `thing?` shows in the pager

    @property
    def error_text(self) -> str:
        if self.error is None:
            return ""
        return (f"{self.error['ename']}: {self.error['evalue']}\n" + "\n".join(self.error["traceback"])
                + "\n" + self.stderr)


class Kernel:
    def __init__(self, cwd: str, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = env  # the kernel's whole environment (None: this process's)
        self.manager = KernelManager(kernel_name="python3")
        self.start()

    def start(self) -> None:
        if self.env is not None:
            self.manager.start_kernel(cwd=self.cwd, env=self.env)
        else:
            self.manager.start_kernel(cwd=self.cwd)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.outputs: dict[str, list[dict]] = defaultdict(list)  # parent msg_id -> iopub messages
        self.arrived: list[dict] = []  # every iopub message, in arrival order

    @property
    def pid(self) -> int:
        return self.manager.provisioner.pid

    def kill_and_restart(self) -> None:
        """SIGKILL the kernel (as a crash would) and start a fresh one."""
        self.client.stop_channels()
        self.manager.restart_kernel(now=True)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.outputs = defaultdict(list)
        self.arrived = []

    def _drain(self, until_idle_of: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if until_idle_of is None:
                    return
                raise TimeoutError(f"no idle for {until_idle_of} within {timeout}s")
            try:
                msg = self.client.get_iopub_msg(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue  # without a cell to wait for, collect for the whole period
            parent = msg["parent_header"].get("msg_id", "")
            self.outputs[parent].append(msg)
            self.arrived.append(msg)
            if (until_idle_of is not None and parent == until_idle_of and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                return

    def reply(self, msg_id: str) -> Reply:
        reply = Reply(msg_id)
        for msg in self.outputs[msg_id]:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    reply.stdout += content["text"]
                else:
                    reply.stderr += content["text"]
            elif kind == "error":
                reply.error = content
            elif kind in ("execute_result", "display_data"):
                reply.results.append(content["data"])
        return reply

    def run(self, code: str, timeout: float = 120) -> Reply:
        return self.finish(self.client.execute(code), timeout)

    def finish(self, msg_id: str, timeout: float = 120) -> Reply:
        """Collect the output and reply of a cell sent with ``client.execute``."""
        self._drain(msg_id, timeout)
        reply = self.reply(msg_id)
        # A UsageError is no iopub "error" message: IPython prints it to stderr and the
        # execute_reply carries the status, as a notebook frontend sees it.
        while True:
            shell = self.client.get_shell_msg(timeout=timeout)
            if shell["parent_header"].get("msg_id") == msg_id:
                break
        content = shell["content"]
        reply.pages = [p["data"].get("text/plain", "") for p in content.get("payload", []) if p.get("source") == "page"]
        if content["status"] == "error" and reply.error is None:
            reply.error = {"ename": content["ename"], "evalue": content["evalue"],
                           "traceback": content.get("traceback", [])}
        return reply

    def later_output(self, msg_id: str, wait: float = 0.5) -> Reply:
        """Output that a cell's background thread sent after the cell returned."""
        self._drain(None, wait)
        return self.reply(msg_id)

    def widgets(self, msg_id: str, settle: float = 0.5) -> dict[str, dict]:
        """The latest state of every widget a cell opened: ``{comm_id: state}``, from the
        comm_open and update messages the kernel really sent, under any cell (a frontend
        applies a widget's updates whichever cell was running when they were sent)."""
        self._drain(None, settle)
        states: dict[str, dict] = {}
        for msg in self.outputs[msg_id]:
            if msg["msg_type"] == "comm_open":
                states[msg["content"]["comm_id"]] = dict(msg["content"]["data"]["state"])
        for msg in self.arrived:
            content = msg["content"]
            if (msg["msg_type"] == "comm_msg" and content.get("comm_id") in states
                    and content["data"].get("method") == "update"):
                states[content["comm_id"]].update(content["data"]["state"])
        return states

    def update_widget(self, comm_id: str, state: dict, buffers: list[bytes] | None = None,
                      buffer_paths: list[list] | None = None) -> str:
        """Change a widget's state as a frontend does when the user moves it; the message's id."""
        data = {"method": "update", "state": state, "buffer_paths": buffer_paths or []}
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.session.send(self.client.shell_channel.socket, msg, buffers=buffers or [])
        return msg["header"]["msg_id"]

    def click(self, comm_id: str) -> None:
        """Click a Button as the frontend does."""
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id,
                                                   "data": {"method": "custom", "content": {"event": "click"}}})
        self.client.shell_channel.send(msg)

    def find_widget(self, msg_id: str, model: str, **state) -> str:
        """The comm id of the widget of ``model`` whose state has these values."""
        for comm_id, found in self.widgets(msg_id).items():
            if found.get("_model_name") == model and all(found.get(k) == v for k, v in state.items()):
                return comm_id
        raise KeyError(f"no {model} with {state}")

    def html_widgets(self, msg_id: str, settle: float = 0.5) -> list[str]:
        return [s["value"] for s in self.widgets(msg_id, settle).values() if s.get("_model_name") == "HTMLModel"]

    def value(self, expression: str, timeout: float = 120):
        """Evaluate ``expression`` in the kernel and return it (via repr/literal_eval)."""
        import ast

        reply = self.run(f"print(repr({expression}))", timeout)
        assert reply.error is None, reply.error_text
        return ast.literal_eval(reply.stdout.strip().splitlines()[-1])

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
