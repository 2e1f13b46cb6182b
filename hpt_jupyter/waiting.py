"""Keep the dashboard alive while a cell waits for a study.

A cell that waits (``%tune wait``, or a later cell that uses the tuned names under Run All)
keeps the kernel's main thread busy, and ipykernel handles the frontend's comm messages
(button clicks, slider drags, page switches, the JupyterLab sidebar) only on that thread's
event loop, which is blocked: Stop would do nothing. :class:`MessagePump` reads the main
shell's pending messages itself while the cell waits:

- comm messages (and ``comm_info_request`` / ``kernel_info_request``, which only read) are
  dispatched at once, the way ipykernel 7 itself dispatches a comm while an async cell holds
  the shell lock: ``kernel.dispatch_shell(msg, subshell_id=None, concurrent=True)``, in a copy
  of the context, the waiting cell's parent header restored afterwards;
- everything else (the next cells' ``execute_request``, completions, ...) is held in arrival
  order and handed to the kernel's own receive callback when the wait ends, so those
  requests run after the waiting cell, in order, exactly once. (``jupyter-ui-poll`` holds
  ``execute_request`` the same way; it is not used because its pump, ``do_one_iteration``,
  no longer exists in ipykernel 7.)

What this relies on (ipykernel 7.x): the main shell's messages arrive on the ZMQStream that
``ipykernel.eventloops.get_shell_stream`` returns (the shell-channel thread forwards them over
an inproc socket), whose receive callback is an async wrapper of ``kernel.shell_main``;
``ZMQStream.flush`` runs that stream's callback synchronously for each pending message, so
swapping the callback for the time of a wait is enough; ``dispatch_shell`` takes
``concurrent=True`` (ipykernel 7.4: no busy/idle status, no SIGINT handler swap). Anything
else (terminal IPython, plain Python, an older or unknown kernel, a cell run in a subshell)
gets no pump, and the wait is the plain one. If the pump fails for a kernel it did not
expect, it is switched off for the rest of that wait and a log line says so once.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.run import Run

logger = logging.getLogger("hpt_jupyter")

#: Set to False to wait without pumping (an escape hatch for a kernel this does not suit).
enabled = True

#: Requests answered while a cell waits; everything else waits for the cell to end.
DISPATCH_NOW = frozenset({"comm_open", "comm_msg", "comm_close", "comm_info_request", "kernel_info_request"})

# Seconds between pumps: a click acts within about this long.
POLL_SECONDS = 0.03

_warned = False
_replays: set[asyncio.Task] = set()  # held requests handed back to the loop (the loop keeps weak refs)
_active: set[int] = set()  # kernels with a pump running: a nested wait waits plainly


def _warn_once(message: str, *args: Any) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("hpt_jupyter: " + message + "; waiting without processing widget messages.", *args)


class _Unsupported(Exception):
    pass


class MessagePump:
    """Processes a kernel's pending comm messages on demand while a cell waits (``with`` it,
    call :meth:`pump` every few milliseconds). Use :func:`message_pump` to get one."""

    def __init__(self, kernel: Any, stream: Any, readable: int) -> None:
        self.kernel = kernel
        self.stream = stream
        self._readable = readable  # zmq.POLLIN
        self.dispatched = 0  # comm messages handled while waiting (for tests and logs)
        self._held: list[list] = []
        self._callback: Any = None
        self._copy = False
        self._on = False

    def __enter__(self) -> MessagePump:
        _active.add(id(self.kernel))
        self._callback = self.stream._recv_callback
        self._copy = getattr(self.stream, "_recv_copy", False)
        self.stream.on_recv(self._receive, copy=False)
        self._on = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._on = False
        _active.discard(id(self.kernel))
        self.stream.on_recv(self._callback, copy=self._copy)
        held, self._held = self._held, []
        if not held:
            return
        # Back to the kernel, as its stream would have delivered them: each becomes a
        # shell_main task queued on the shell's asyncio lock behind this cell, in order,
        # before any message the stream reads from now on.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self.stream.io_loop.asyncio_loop
        for frames in held:
            result = self._callback(frames)
            if inspect.isawaitable(result):
                task = loop.create_task(result)
                _replays.add(task)
                task.add_done_callback(_replays.discard)

    def pump(self) -> None:
        """Handle the messages that arrived since the last call. A Ctrl-C that comes while a
        handler runs is raised after it, not inside it (``dispatch_shell`` would swallow it)."""
        if not self._on:
            return
        interrupted: list[bool] = []
        previous = signal.getsignal(signal.SIGINT)
        if previous is not None:  # None: a handler not set from Python, which cannot be restored
            signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
        try:
            self.stream.flush(self._readable, limit=100)  # a bounded batch keeps Ctrl-C prompt
        except _Unsupported as error:
            self._on = False
            _warn_once("%s", error)
        except Exception as error:  # noqa: BLE001 - an unexpected kernel must not break the cell
            self._on = False
            _warn_once("the message pump failed (%r)", error)
            logger.debug("hpt_jupyter: message pump failure", exc_info=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if interrupted:
            raise KeyboardInterrupt

    # -- the stream's callback while waiting (main thread, inside flush) --
    def _receive(self, frames: list) -> None:
        if not self._on:  # switched off mid-batch: keep the rest for the kernel
            self._held.append(frames)
            return
        try:
            _, parts = self.kernel.session.feed_identities(frames, copy=False)
            # Peek at the header only (content=False does not record the signature, so the
            # kernel's own deserialisation later does not see a replay).
            peeked = self.kernel.session.deserialize(parts, content=False, copy=False)
            kind = peeked["header"]["msg_type"]
        except Exception:  # noqa: BLE001 - not ours to judge (e.g. ipykernel's "stop aborting")
            kind = None
        if kind not in DISPATCH_NOW:
            self._held.append(frames)
            return
        self._dispatch(frames, {"header": peeked["header"]})

    def _dispatch(self, frames: list, message: dict) -> None:
        kernel = self.kernel
        parent = kernel.get_parent("shell")
        ident = kernel._get_shell_context_var(kernel._shell_parent_ident)
        coroutine = kernel.dispatch_shell(frames, subshell_id=None, concurrent=True)
        try:
            # dispatch_shell is a coroutine, but for these messages nothing in it awaits the
            # loop (the comm handlers are plain functions): one step runs it to the end.
            contextvars.copy_context().run(coroutine.send, None)
        except StopIteration:
            self.dispatched += 1
        else:
            coroutine.close()
            raise _Unsupported("a comm handler of this kernel awaits its event loop")
        finally:
            kernel.set_parent(ident, parent, channel="shell")  # output goes on to the waiting cell
        # A concurrent dispatch (the kernel's own for a comm during an async cell) publishes no
        # status, but a widget in the browser sends its next change only once the kernel says
        # "idle" for the previous one (ipywidgets keeps one message in flight): without these,
        # a second click on the same widget would never arrive. Then "busy" again, for the
        # cell that still waits.
        for status, on in (("busy", message), ("idle", message), ("busy", parent)):
            kernel._publish_status(status, "shell", parent=on)


def message_pump(shell: Any) -> MessagePump | None:
    """A pump for the kernel ``shell`` runs in, or None where a wait needs none or cannot have
    one (no ZMQ kernel, another thread than the main shell's, an unexpected ipykernel)."""
    if not enabled:
        return None
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "shell_main") or getattr(kernel, "session", None) is None:
        return None  # terminal IPython, plain Python
    if id(kernel) in _active:
        return None  # a wait inside a comm handler inside a wait: the outer pump is running
    if threading.current_thread() is not threading.main_thread():
        return None  # a subshell's cell: the main shell's stream is not this thread's
    try:
        import zmq
        from ipykernel.eventloops import get_shell_stream

        if "concurrent" not in inspect.signature(kernel.dispatch_shell).parameters:
            raise _Unsupported("this ipykernel cannot dispatch a comm message inside a cell")
        kernel._get_shell_context_var  # noqa: B018 - fail here, not mid-wait
        kernel._publish_status  # noqa: B018
        kernel._shell_parent_ident  # noqa: B018
        stream = get_shell_stream(kernel)
        if stream is None or getattr(stream, "_recv_callback", None) is None or not hasattr(stream, "flush"):
            raise _Unsupported("this ipykernel's shell stream is not the expected one")
    except Exception as error:  # noqa: BLE001 - whatever is missing, wait plainly
        _warn_once("%s", error if isinstance(error, _Unsupported) else f"unexpected kernel ({error!r})")
        return None
    return MessagePump(kernel, stream, zmq.POLLIN)


def wait_for(run: Run, pump: MessagePump | None) -> None:
    """Block until ``run`` ends, pumping the kernel's messages meanwhile.

    Interrupts behave as :meth:`Run.wait`'s: the first stops the run gracefully and the wait
    goes on (the dashboard stays alive while the running trial finishes); the second
    propagates (stop waiting)."""
    if pump is None:
        run.wait()
        return
    interrupted = False
    while run.is_alive:
        try:
            pump.pump()
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            if interrupted or not run.is_alive:
                raise
            interrupted = True
            print(f"Interrupted: stopping '{run.name}' after its running trial "
                  "(interrupt again to stop waiting).", flush=True)
            run.stop()
