"""What the views show of a study, kept up to date as trials arrive.

Headless: the dashboard (and any other view) folds finished trials in batches and reads the
digest, so that showing a study costs the same at 10,000 trials as at 10: samples are
bounded, the best rows and the Pareto front are kept incrementally, nothing rescans every
trial.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from ..core.pbt import PBT_KEY
from ..core.resources import PLACEMENT_KEY

_STATE_NAMES = {state: state.name.lower() for state in TrialState}


class Row(NamedTuple):
    """One finished trial, as tables and plots need it (parameters decoded to the cell's values).
    A named tuple: made for every trial, it costs a third of a frozen dataclass."""

    number: int
    state: str
    values: tuple[float, ...] | None
    params: dict[str, Any]
    seconds: float | None
    intermediate: tuple[tuple[int, float], ...] = ()
    member: int | None = None  # population-based training: the member this segment trained
    placement: str = ""  # the GPUs (or cores) it ran on, where the run handed them out
    # tune.constraint: how far it broke its constraints (the sum of their positive values; 0 when
    # it kept them all or has none). A complete trial with a violation is infeasible: never best.
    violation: float = 0.0

    @property
    def feasible(self) -> bool:
        return self.violation <= 0.0


def plot_coordinate(value: Any, categorical: bool) -> float | str:
    """A knob's value as a plot axis takes it: text for a categorical knob, else a float."""
    if categorical or isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
        return str(value)
    return float(value)


class StrideSample:
    """Every ``stride``-th point of a growing series, plus every improvement, in O(1) per point.

    When more than ``limit`` ordinary points are kept the stride doubles and every other one
    goes, so a view copies at most about ``limit`` points however long the study runs."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stride = 1
        self.count = 0
        self.points: list[Any] = []
        self.improvements: list[Any] = []

    def add(self, item: Any, improved: bool = False) -> str | None:
        """Keep ``item`` or not: "kept", "thinned" (kept, and the ordinary points halved, so
        views derived from them rebuild) or None."""
        outcome = None
        if improved:
            self.improvements.append(item)
            outcome = "kept"
        elif self.count % self.stride == 0:
            self.points.append(item)
            outcome = "kept"
            if len(self.points) > self.limit:
                self.stride *= 2
                self.points = self.points[::2]
                outcome = "thinned"
        self.count += 1
        return outcome

    def items(self) -> list[Any]:
        return self.points + self.improvements


class SeriesSample:
    """A :class:`StrideSample` of (x, y) points kept as float arrays: a view takes a copy in
    microseconds and hands bqplot what it sends without converting a list."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stride = 1
        self.count = 0
        self._x = np.empty(2 * limit + 2)
        self._y = np.empty(2 * limit + 2)
        self._n = 0
        self._better_x: list[float] = []
        self._better_y: list[float] = []

    def add(self, x: float, y: float, improved: bool = False) -> None:
        if improved:
            self._better_x.append(x)
            self._better_y.append(y)
        elif self.count % self.stride == 0:
            self._x[self._n], self._y[self._n] = x, y
            self._n += 1
            if self._n > self.limit:
                self.stride *= 2
                kept = (self._n + 1) // 2
                self._x[:kept], self._y[:kept] = self._x[: self._n : 2], self._y[: self._n : 2]
                self._n = kept
        self.count += 1

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate((self._x[: self._n], self._better_x)),
                np.concatenate((self._y[: self._n], self._better_y)))


def constraint_violation(trial: FrozenTrial) -> float:
    """The sum of a trial's positive ``tune.constraint`` values (Optuna's own measure); 0.0 when
    it kept them all or has none."""
    if not trial.system_attrs:
        return 0.0
    return float(sum(v for v in trial.constraints.values() if v is not None and v > 0))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (values signed so
    that smaller is better)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


class Digest:
    """Running aggregates of a study's finished trials.

    ``decoders`` maps a categorical knob's name to the function that turns Optuna's stored
    label back into the cell's value; ``categorical`` names the knobs plotted as categories.
    Not thread-safe: one thread folds and reads (the dashboard's writer)."""

    def __init__(self, directions: list[str], *, decoders: dict[str, Callable[[Any], Any]] | None = None,
                 categorical: Iterable[str] = (), max_points: int = 2000, top: int = 100,
                 reporters: int = 50) -> None:
        self.signs = tuple(-1.0 if d == "maximize" else 1.0 for d in directions)
        self.multi = len(directions) > 1
        self.decoders = dict(decoders or {})
        self.categorical = set(categorical)
        self.version = 0  # goes up with every fold that brought trials
        self.count = 0
        self.rows: list[Row] = []  # every finished trial, in arrival order
        self.param_names: list[str] = []
        self.known_names: set[str] = set()
        self.failed: list[int] = []
        self.n_complete = 0
        self.best: Row | None = None  # single objective
        self.best_steps: list[tuple[float, float]] = []  # (trial number, best so far) at each improvement
        self.last_number = 0.0
        self.history = SeriesSample(max_points)  # (x, y): number and value, or two objectives
        self.kept = StrideSample(max_points // 2)  # complete rows for the slices and parallel lines
        self.slices: dict[str, tuple[list, list]] = {}  # knob -> (xs, ys) of the kept rows
        self.slice_numbers: dict[str, list[int]] = {}  # knob -> the trial number of each slice point
        self.by_number: dict[int, Row] = {}  # every finished trial's row, for hover labels
        sign = self.signs[0]
        self._top = RankedRows(top, lambda row: (sign * row.values[0], row.number))  # single objective
        self.front: list[Row] = []  # the Pareto front (several objectives)
        self.reporters: deque[Row] = deque(maxlen=reporters)  # latest trials with intermediate values
        self.constrained = False  # some trial broke a tune.constraint
        self.n_infeasible = 0  # complete trials that broke one
        self.infeasible = SeriesSample(max(1, max_points // 4))  # their history points, marked apart

    # --- folding ---------------------------------------------------------------------

    def row(self, trial: FrozenTrial) -> Row:
        start, end = trial.datetime_start, trial.datetime_complete
        seconds = (end - start).total_seconds() if start and end else None
        decoders, params = self.decoders, trial.params
        if decoders and not decoders.keys().isdisjoint(params):
            params = {k: decoders[k](v) if k in decoders else v for k, v in params.items()}
        reported = trial.intermediate_values
        values = trial.values
        segment = trial.user_attrs.get(PBT_KEY) if trial.user_attrs else None
        member = segment.get("member") if isinstance(segment, dict) else None
        placement = trial.system_attrs.get(PLACEMENT_KEY, "") if trial.system_attrs else ""
        violation = constraint_violation(trial)
        if violation:
            self.constrained = True
        return Row(trial.number, _STATE_NAMES[trial.state], tuple(values) if values is not None else None, params,
                   seconds, tuple(sorted(reported.items())) if reported else (), member, placement, violation)

    def fold(self, trials: Iterable[FrozenTrial]) -> list[Row]:
        """Fold finished trials in; returns their rows."""
        rows = [self.row(trial) for trial in trials]
        if not rows:
            return rows
        complete = []
        names, known = self.param_names, self.known_names
        by_number = self.by_number
        for row in rows:
            by_number[row.number] = row
            if not row.params.keys() <= known:
                names.extend(n for n in row.params if n not in known)
                known.update(row.params)
            if row.intermediate:
                self.reporters.append(row)
            if row.state != "complete":
                if row.state == "fail":
                    self.failed.append(row.number)
                continue
            complete.append(row)
            if not row.feasible:
                self.n_infeasible += 1
                x, y = (row.values[0], row.values[1]) if self.multi else (row.number, row.values[0])
                self.infeasible.add(float(x), float(y))
            if self.multi:
                self._fold_front(row)
            else:
                self._fold_single(row)
        self.rows.extend(rows)
        self.count += len(rows)
        self.n_complete += len(complete)
        self.version += 1
        return rows

    def _fold_single(self, row: Row) -> None:
        """An infeasible trial is plotted (views mark it) but is never the best nor in the top."""
        value = row.values[0]
        sign = self.signs[0]
        improved = row.feasible and (self.best is None or sign * value < sign * self.best.values[0])
        if improved:
            self.best = row
            self.best_steps.append((float(row.number), value))
        self.last_number = max(self.last_number, float(row.number))
        if row.feasible:
            self._top.add(row)
        self.history.add(float(row.number), value, improved)
        outcome = self.kept.add(row, improved)
        if outcome == "thinned":
            self._rebuild_slices()
        elif outcome == "kept":
            self._append_slices(row)

    def _fold_front(self, row: Row) -> None:
        self.history.add(float(row.values[0]), float(row.values[1]))
        if not row.feasible:
            return
        signed = tuple(s * v for s, v in zip(self.signs, row.values))
        front = self.front
        for member in front:
            if dominates(tuple(s * v for s, v in zip(self.signs, member.values)), signed):
                return
        self.front = [m for m in front if not dominates(signed, tuple(s * v for s, v in zip(self.signs, m.values)))]
        self.front.append(row)

    def _append_slices(self, row: Row) -> None:
        value = row.values[0]
        for name, knob in row.params.items():
            xs, ys = self.slices.setdefault(name, ([], []))
            xs.append(plot_coordinate(knob, name in self.categorical))
            ys.append(value)
            self.slice_numbers.setdefault(name, []).append(row.number)

    def _rebuild_slices(self) -> None:
        self.slices, self.slice_numbers = {}, {}
        for row in self.kept.items():
            self._append_slices(row)

    # --- reading -----------------------------------------------------------------------

    @property
    def top(self) -> list[Row]:
        """The best complete rows, best first (single objective)."""
        return self._top.rows

    def history_xy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.history.xy()

    def best_line(self, until: float | None = None) -> tuple[list[float], list[float]]:
        """The best-so-far step line, drawn on to trial number ``until`` (default: the latest)."""
        steps = list(self.best_steps)
        if steps:
            steps.append((max(steps[-1][0], self.last_number if until is None else until), steps[-1][1]))
        return [p[0] for p in steps], [p[1] for p in steps]

    def parallel_rows(self, limit: int = 100) -> list[Row]:
        """The best ``limit`` rows and about ``limit`` more spread over the whole study."""
        spread = self.kept.points
        step = max(1, len(spread) // limit)
        chosen = {row.number: row for row in self.top[:limit]}
        for row in spread[::step]:
            chosen.setdefault(row.number, row)
        return list(chosen.values())


def sort_key(key: str, descending: bool) -> Callable[[Row], tuple]:
    """How the trial table orders rows by ``key`` ("value", "#", "seconds", "state" or a knob):
    missing values (a failed trial's score, a conditional knob) last, ties by trial number."""

    def value_of(row: Row) -> Any:
        if key == "value":
            return row.values[0] if row.values else None
        if key == "#":
            return row.number
        if key == "seconds":
            return row.seconds
        if key == "state":
            return row.state
        return row.params.get(key)

    def ordered(row: Row) -> tuple:
        value = value_of(row)
        if value is None:
            return (2, 0.0, "", row.number)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, -value if descending else value, "", row.number)
        return (1, 0.0, str(value), row.number)

    return ordered


class RankedRows:
    """The first ``limit`` rows under ``key``, kept as rows arrive in O(log limit) each."""

    def __init__(self, limit: int, key: Callable[[Row], tuple], rows: Iterable[Row] = ()) -> None:
        self.limit = limit
        self.key = key
        self.rows = heapq.nsmallest(limit, rows, key=key)
        self._ranks = [key(row) for row in self.rows]

    def add(self, row: Row) -> None:
        rank = self.key(row)
        if len(self.rows) < self.limit or rank < self._ranks[-1]:
            at = bisect.bisect(self._ranks, rank)
            self._ranks.insert(at, rank)
            self.rows.insert(at, row)
            if len(self.rows) > self.limit:
                self._ranks.pop()
                self.rows.pop()


class TableOrder:
    """The trial table's first ``limit`` rows under the chosen ordering, kept as rows arrive;
    a change of ordering rescans the digest once."""

    def __init__(self, digest: Digest, limit: int, key: str, descending: bool) -> None:
        self.limit = limit
        self.ordering: tuple[str, bool] | None = None
        self.reorder(digest, key, descending)

    @property
    def shown(self) -> list[Row]:
        return self._ranked.rows

    def add(self, row: Row) -> None:
        self._ranked.add(row)

    def reorder(self, digest: Digest, key: str, descending: bool) -> None:
        if self.ordering == (key, descending):
            return
        self.ordering = (key, descending)
        self._ranked = RankedRows(self.limit, sort_key(key, descending), digest.rows)
