"""Warnings that trials raise: each kind shown once, every occurrence counted on the run.

A warning a trial raises again and again (scikit-learn's ``ConvergenceWarning`` in every trial)
would fill the cell's output, or show once or per trial depending on the warnings filters. Here
it is shown the first time and counted every time, on the run (``run.warnings``), and the run
says once at its end how often it came (``run.warnings_summary()``).

How, without touching what code outside trials sees:

- The engine marks the thread of a running trial with a context variable (a worker process
  marks its trial the same way). Only warnings raised while that mark is set are handled here.
- While a run is active, ``warnings.showwarning`` is wrapped (installed when the first run
  starts, restored when the last one ends). Outside trials the wrapper hands every warning on
  unchanged. In a trial it counts the warning on the run and shows only the first of its kind
  (a category raised at one line of one file, whatever its text), through the
  ``showwarning`` that was there before, so where warnings go (stderr, a logger) is unchanged.
- Python's own filters still decide whether a warning counts at all: one the user ignores is
  ignored, one they made an error raises. But the "default", "module" and "once" actions show a
  warning once per module (or per process) and skip the rest before any hook sees them, so a
  count would depend on the filters and on what ran before. So after a trial's warning is
  handled, the dedup entry it just left in its module's ``__warningregistry__`` (or in
  ``warnings.onceregistry``) is taken out again: the next occurrence reaches the wrapper too
  ("always" semantics inside trials, with no change to ``warnings.filters``). Code outside
  trials never finds trial entries in the registries, so its own warnings show as before.
- When the first run starts, the filters' version is bumped (what every
  ``warnings.filterwarnings`` call does), so that a warning already shown before the study, at
  the same line with the same text, is not skipped in the trials. Outside trials this can show
  such a warning once more, as after any change of the filters.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

__all__ = ["TrialWarning", "WarningLog", "TrialSink", "activate", "deactivate", "enter", "leave",
           "note_remote"]

# The trial running in this thread (a sink that takes its warnings), or None outside trials.
_sink: contextvars.ContextVar[Any] = contextvars.ContextVar("hpt_trial_warnings", default=None)
_lock = threading.Lock()
_active = 0  # runs (in a worker: trials) under way
_hook: _Hook | None = None
_handing_on = threading.local()  # set while a wrapper shows a warning: a nested wrapper passes it on
_SUMMARY_LINES = 3
_MESSAGE_CHARS = 100


@dataclass
class TrialWarning:
    """One kind of warning the trials of a run raised: a category raised at one line of one file.

    ``category`` is the warning's class name (``"ConvergenceWarning"``), ``message`` the text of
    its first occurrence, ``filename``/``lineno`` (``where``) the line that raised it, ``count``
    how many times it was raised in all, ``trials`` the run-wide numbers of the trials that raised
    it, in the order they first did (``first_trial``)."""

    category: str
    message: str
    filename: str
    lineno: int
    count: int = 0
    trials: list[int] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.filename}:{self.lineno}"

    @property
    def first_trial(self) -> int | None:
        return self.trials[0] if self.trials else None


class WarningLog:
    """A run's warnings from trials, counted (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str, int], TrialWarning] = {}
        self._seen: dict[tuple[str, str, int], set[int]] = {}

    def note(self, number: int, category: str, message: str, filename: str, lineno: int) -> bool:
        """Count one occurrence in trial ``number``; True when it is the first of its kind
        (show it)."""
        key = (category, filename, int(lineno))
        with self._lock:
            record = self._records.get(key)
            first = record is None
            if first:
                record = self._records[key] = TrialWarning(category, message, filename, int(lineno))
                self._seen[key] = set()
            record.count += 1
            if number not in self._seen[key]:
                self._seen[key].add(number)
                record.trials.append(number)
        return first

    def records(self) -> list[TrialWarning]:
        """Copies, in the order the kinds first occurred."""
        with self._lock:
            return [replace(r, trials=list(r.trials)) for r in self._records.values()]

    def summary(self, n_trials: int, where: str) -> str:
        """One line per kind raised more than once (the rest of its occurrences were not shown):
        ``ConvergenceWarning: Maximum iterations (50) reached … — in 29 of 30 trials (WHERE)``;
        "" when there is none."""
        repeated = [r for r in self.records() if r.count > 1]
        lines = []
        for record in repeated[:_SUMMARY_LINES]:
            text = (record.message.strip().splitlines() or [""])[0]
            if len(text) > _MESSAGE_CHARS or "\n" in record.message.strip():
                text = text[:_MESSAGE_CHARS].rstrip() + "…"
            times = f"{record.count} times " if record.count != len(record.trials) else ""
            of = f" of {n_trials}" if n_trials >= len(record.trials) else ""
            noun = "trial" if (n_trials if of else len(record.trials)) == 1 else "trials"
            lines.append(f"{record.category}: {text} — {times}in {len(record.trials)}{of} {noun}, "
                         f"shown once ({where})")
        if len(repeated) > _SUMMARY_LINES:
            more = len(repeated) - _SUMMARY_LINES
            lines.append(f"… and {more} more repeated warning{'s' if more != 1 else ''} ({where})")
        return "\n".join(lines)


class TrialSink:
    """What a trial running in the kernel does with its warnings: counts them on its run."""

    def __init__(self, log: WarningLog, number: int) -> None:
        self.log, self.number = log, number

    def note(self, message: Any, category: type, filename: str, lineno: int, line: str | None) -> bool:
        return self.log.note(self.number, category.__name__, str(message), filename, lineno)


# --- while runs are active ----------------------------------------------------------------

class _Hook:
    """``warnings.showwarning`` while runs are active: hands warnings outside trials on."""

    def __init__(self, previous: Callable[..., Any]) -> None:
        self.previous = previous

    def __call__(self, message: Any, category: type, filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
        sink = _sink.get()
        if sink is None or getattr(_handing_on, "active", False):
            self.previous(message, category, filename, lineno, file, line)
            return
        _forget(message, category, filename, lineno)
        try:
            show = sink.note(message, category, filename, lineno, line)
        except Exception:  # noqa: BLE001 - counting must never lose the warning itself
            show = True
        if show:
            _handing_on.active = True
            try:
                self.previous(message, category, filename, lineno, file, line)
                if file is None and sys.stderr is not None:  # before the run's own lines, which
                    sys.stderr.flush()  # go to stdout: a notebook shows streams in arrival order
            finally:
                _handing_on.active = False


def _forget(message: Any, category: type, filename: str, lineno: int) -> None:
    """Take out the dedup entries this occurrence left ("default", "module" and "once"
    filters), so that the next occurrence in a trial is seen too. The registry is that of the
    module whose line raised the warning: the frame on this stack running that line."""
    text = str(message) if isinstance(message, Warning) else message
    frame = sys._getframe(2)
    for _ in range(200):
        if frame is None:
            break
        if frame.f_lineno == lineno and frame.f_code.co_filename == filename:
            registry = frame.f_globals.get("__warningregistry__")
            if isinstance(registry, dict):  # "default": (text, category, lineno); "module" and
                for key in ((text, category, lineno), (text, category, 0), (text, category)):  # "once"
                    registry.pop(key, None)  # add (text, category) (the C code) or (…, 0) (Python's)
            break
        frame = frame.f_back
    warnings.onceregistry.pop((text, category), None)


def activate() -> None:
    """A run starts: the first one wraps ``warnings.showwarning``."""
    global _active, _hook
    with _lock:
        _active += 1
        if _active == 1:
            current = warnings.showwarning
            if not isinstance(current, _Hook):
                _hook = _Hook(current)
                warnings.showwarning = _hook
            warnings._filters_mutated()  # dedup entries made before the study do not hide its warnings


def deactivate() -> None:
    """A run ended: the last one puts ``warnings.showwarning`` back (unless someone replaced
    the wrapper meanwhile: then it stays in their chain, handing every warning on)."""
    global _active, _hook
    with _lock:
        _active = max(0, _active - 1)
        if _active == 0 and _hook is not None:
            if warnings.showwarning is _hook:
                warnings.showwarning = _hook.previous
            _hook = None


def enter(sink: Any) -> contextvars.Token:
    """This thread now runs a trial whose warnings go to ``sink``."""
    return _sink.set(sink)


def leave(token: contextvars.Token) -> None:
    _sink.reset(token)


def note_remote(category: str, message: str, filename: str, lineno: int, text: str) -> None:
    """A warning a worker process raised in the trial this thread serves: count it, and write
    ``text`` (as the worker would have printed it) to stderr when it is the first of its kind."""
    sink = _sink.get()
    show = True
    if isinstance(sink, TrialSink):
        show = sink.log.note(sink.number, category, message, filename, lineno)
    if show:
        sys.stderr.write(text)
        sys.stderr.flush()
