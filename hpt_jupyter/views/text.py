"""The text view: a compact, throttled progress line and a final table of the best trials.

Used wherever no widget frontend is (terminal IPython, scripts, batch logs).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from optuna.trial import TrialState

from ..core.run import FINISHED

if TYPE_CHECKING:
    from ..core.run import Event, Run

_SHOWN_FAILURES = 3


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    text = str(value)
    return text if len(text) <= 14 else text[:13] + "…"


def best_trials_table(run: Run, top: int = 5) -> str:
    """The best complete trials as an aligned text table."""
    if run.is_multi_objective:
        front = run.pareto_front()
        trials = sorted(front, key=lambda t: t.number)[:top]
        title = f"Pareto front ({len(front)} trials), first {len(trials)}:"
    else:
        trials = run.trials()  # across narrowings, numbered run-wide
        reverse = run.directions[0] == "maximize"
        trials = sorted(trials, key=lambda t: t.value, reverse=reverse)[:top]
        title = f"Top {len(trials)} trials:"
    if not trials:
        return "No trial completed."
    names: list[str] = []
    for trial in trials:
        names.extend(n for n in trial.params if n not in names)
    score_headers = ["value"] if not run.is_multi_objective else [f"value{i}" for i in range(len(run.directions))]
    header = ["#", *score_headers, *names, "seconds"]
    rows = []
    for trial in trials:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else float("nan")
        params = run._decoded(trial.params)
        rows.append([str(trial.number), *(_fmt(v) for v in trial.values),
                     *(_fmt(params[n]) if n in params else "-" for n in names), f"{seconds:.3g}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [title] + ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def best_schedule_table(run: Run, limit: int = 10) -> str:
    """Under population-based training, the best member's schedule as an aligned text table:
    one row per stretch of steps with the same member and hyperparameters (steps, member,
    hyperparameters, the score at its end); "" for other runs or before a segment completed."""
    if not run.scheduler.population_based:
        return ""
    schedule = run.best_schedule
    if not schedule:
        return ""
    fixed = ("trial", "member", "start", "end", "value")
    names: list[str] = []
    for entry in schedule:
        names.extend(k for k in entry if k not in fixed and k not in names)
    stretches: list[dict[str, Any]] = []  # consecutive segments that changed nothing, merged
    for entry in schedule:
        last = stretches[-1] if stretches else None
        if last is not None and last["member"] == entry["member"] \
                and all(last.get(n) == entry.get(n) for n in names):
            last.update(end=entry["end"], value=entry["value"], trial=entry["trial"])
        else:
            stretches.append(dict(entry))
    header = ["steps", "member", *names, "value"]
    rows = [[f"{e['start']}-{e['end']}", str(e["member"]), *(_fmt(e[n]) if n in e else "-" for n in names),
             _fmt(e["value"]) if e["value"] is not None else "-"] for e in stretches]
    skipped = 0
    if len(rows) > limit:  # the start and the latest stretches: where it began, where it got to
        skipped = len(rows) - limit
        rows = rows[:2] + [["…", *[""] * (len(header) - 1)]] + rows[-(limit - 2):]
    title = (f"Best member's schedule (member {schedule[-1]['member']}, trial #{schedule[-1]['trial']}; "
             f"{len(schedule)} segments, a row where the member or its hyperparameters changed"
             + (f", {skipped} rows not shown" if skipped else "") + "):")
    return "\n".join([title, *_aligned(header, rows)])


class TextReporter:
    """Subscribes to a run and prints to ``stream`` (default: ``sys.stdout`` at print time)."""

    def __init__(self, run: Run, stream: TextIO | None = None, interval: float = 1.0, top: int = 5) -> None:
        self.run = run
        self.stream = stream
        self.interval = interval
        self.top = top
        self._last_print = 0.0
        self._line_open = False
        self._lock = threading.Lock()
        run.subscribe(self)

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def _close_line(self) -> str:
        opened, self._line_open = self._line_open, False
        return "\n" if opened else ""

    def __call__(self, event: Event) -> None:
        with self._lock:
            getattr(self, f"_on_{event.kind}", lambda e: None)(event)

    def _on_started(self, event: Event) -> None:
        run = self.run
        if run.budget is not None and run.n_finished >= run.budget:
            return  # nothing to run: the finished event says so
        todo = f"{run.budget - run.n_finished} trials" if run.budget is not None else "trials"
        limit = f" for up to {run.timeout:g}s" if run.timeout else ""
        self._write(f"{self._close_line()}Tuning '{run.name}' · {run.sampler_name} · {'/'.join(run.directions)}"
                    f"{run.scheduler_text()} · {event.message} · running {todo}{limit} in the background"
                    f"{run.slots_text()}\n")
        if run.tracker is not None:
            self._write(f"  logging to {run.tracker.describe()}\n")
        self._last_print = time.monotonic()

    def _on_trial_finished(self, event: Event) -> None:
        run = self.run
        if event.trial is not None and event.trial.state == TrialState.FAIL and len(run.failures) <= _SHOWN_FAILURES:
            more = " (later failures are counted, not shown)" if len(run.failures) == _SHOWN_FAILURES else ""
            self._write(f"{self._close_line()}  trial {event.number} failed: {event.message}; "
                        f"traceback: tune.runs[{run.name!r}].failure({event.number}){more}\n")
        now = time.monotonic()
        if now - self._last_print >= self.interval:
            self._last_print = now
            self._write(f"\r  {run.progress()}   ")
            self._line_open = True

    def _on_storage(self, event: Event) -> None:
        text = event.message or "storage answering again; going on"
        self._write(f"{self._close_line()}  '{self.run.name}': {text}\n")

    def _on_tracking(self, event: Event) -> None:
        text = event.message or "the tracking server answers again; logging goes on"
        self._write(f"{self._close_line()}  '{self.run.name}': {text}\n")

    def _on_paused(self, event: Event) -> None:
        self._write(f"{self._close_line()}  paused '{self.run.name}' after the running trial\n")

    def _on_resumed(self, event: Event) -> None:
        self._write(f"{self._close_line()}  resumed '{self.run.name}'\n")

    def _on_budget(self, event: Event) -> None:
        self._write(f"{self._close_line()}  budget of '{self.run.name}' is now {self.run.budget} trials\n")

    def _on_narrowed(self, event: Event) -> None:
        self._write(f"{self._close_line()}  '{self.run.name}' narrowed: {event.message}\n")

    def _on_finished(self, event: Event) -> None:
        run = self.run
        if run.n_run == 0 and run.state == FINISHED and run.budget is not None:
            self._write(f"{self._close_line()}'{run.name}' ({run.opened}) already has {run.n_finished} of "
                        f"{run.budget} trials: nothing to run. Use --fresh to start over, or a larger -n.\n")
            return
        prefix = self._close_line()
        if run.n_run:
            prefix += f"\r  {run.progress()}\n"
        if run.waiting_for_store:
            # The tables read the store, which is what is missing: the line says what to do.
            self._write(f"{prefix}'{run.name}' {run.state}: {event.message}.\n")
            return
        schedule = best_schedule_table(run)
        used = run.samplers_used() if run.sampler_name == "auto" else {}
        chose = ("auto sampled " + ", ".join(f"{n} trial{'' if n == 1 else 's'} with {kind}" for kind, n in used.items())
                 + f"; last: {run.sampler_text()[len('auto: '):]}.\n") if used else ""
        warned = run.warnings_summary()  # a warning trials raised again and again: once, with its count
        chose = (f"{warned}\n" if warned else "") + chose
        self._write(f"{prefix}'{run.name}' {run.state}: {event.message}. "
                    f"{run.n_run} trials run in {run.elapsed:.1f}s.\n{chose}{best_trials_table(run, self.top)}\n"
                    + (f"{schedule}\n" if schedule else ""))
