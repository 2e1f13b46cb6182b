"""Narrowing a search space while it is searched: checking, snapping and describing ranges.

Headless. :meth:`Run.narrow` uses these to turn what a slider, a brush, a line of code or
``%tune narrow`` asks for into knobs of the same kind with smaller bounds (or fewer options),
refusing with one message anything outside what the cell declared.
"""

from __future__ import annotations

import ast
import datetime
import math
import numbers
import random
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ..errors import TuneError
from .space import ChoiceParam, FloatParam, IntParam, Param

@dataclass
class Narrowing:
    """One change of the search space: when, what, by whom, and what the search kept."""

    source: str  # api, slider, brush, top, magic or reset
    ranges: dict[str, str]  # knob -> its new range, described ("1e-4 .. 1e-2 (log)", "['rbf']")
    study: str = ""  # the study that searches the narrowed space
    seeded: int = 0  # completed trials inside the new space copied into it
    first_trial: int | None = None  # the first trial asked under it (run-wide number)
    at: str = field(default_factory=lambda: datetime.datetime.now().isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ranges": self.ranges, "study": self.study, "seeded": self.seeded,
                "first_trial": self.first_trial, "at": self.at}

    def describe(self) -> str:
        what = ", ".join(f"{k} {v}" for k, v in self.ranges.items()) or "the declared space"
        start = f", from trial #{self.first_trial}" if self.first_trial is not None else ""
        return f"{self.at} · {self.source}: {what} ({self.seeded} trials kept{start})"


def describe(param: Param) -> str:
    if isinstance(param, ChoiceParam):
        return repr(list(param.labels))
    scale = " (log)" if param.log else ""
    return f"{param.low:.6g} .. {param.high:.6g}{scale}"


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution ``tune.*`` asks for with this knob."""
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return CategoricalDistribution(list(param.labels))


def contains(param: Param, stored: Any) -> bool:
    """Whether a value as Optuna stores it (a choice's label) lies in ``param``."""
    if isinstance(param, ChoiceParam):
        return any(stored == label and type(stored) is type(label) for label in param.labels)
    if not isinstance(stored, numbers.Real) or isinstance(stored, bool):
        return False
    tolerance = 1e-12 * max(1.0, abs(param.high), abs(param.low))
    return param.low - tolerance <= stored <= param.high + tolerance


def _snap(declared: FloatParam | IntParam, low: float, high: float) -> tuple[Any, Any]:
    """Bounds moved inward on to the declared step grid, so narrowed trials stay on it."""
    step = declared.step
    if not step:
        return low, high
    first = math.ceil((low - declared.low) / step - 1e-9)
    last = math.floor((high - declared.low) / step + 1e-9)
    return declared.low + first * step, declared.low + last * step


def narrowed(declared: Param, request: Any) -> Param:
    """``declared`` narrowed to ``request``: ``(low, high)`` for a number, a list of options
    for a choice. One clear :class:`TuneError` for a request outside the declared knob."""
    name = declared.name
    if isinstance(declared, ChoiceParam):
        if isinstance(request, (str, bytes)) or not isinstance(request, Iterable):
            request = [request]
        wanted = list(request)
        keep_options, keep_labels = [], []
        unknown = []
        for item in wanted:
            for option, label in zip(declared.options, declared.labels):
                if item is option or same_choice(item, option) or same_choice(item, label):
                    if label not in keep_labels:
                        keep_options.append(option)
                        keep_labels.append(label)
                    break
            else:
                unknown.append(item)
        if unknown:
            raise TuneError(f"'{name}' has no option {unknown[0]!r}; its options are {list(declared.labels)!r}.")
        if not keep_labels:
            raise TuneError(f"Keep at least one option of '{name}'; removing every choice leaves nothing to try.")
        order = [label for label in declared.labels if label in keep_labels]  # the declared order
        options = tuple(declared.options[declared.labels.index(label)] for label in order)
        labels = tuple(order) if declared.labels is not declared.options else options
        return ChoiceParam(name, options, labels)
    if not isinstance(request, (tuple, list)) or len(request) != 2:
        raise TuneError(f"'{name}' is a number: give its new range as (low, high), got {request!r}.")
    low, high = request
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high)):
        raise TuneError(f"'{name}': low and high must be numbers, got {low!r} and {high!r}.")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise TuneError(f"'{name}': low and high must be finite, got {low!r} and {high!r}.")
    if low > high:
        raise TuneError(f"'{name}': the range {low!r} .. {high!r} is empty (low > high); swap them.")
    slack = 1e-9 * max(1.0, abs(declared.high - declared.low))
    if low < declared.low - slack or high > declared.high + slack:
        raise TuneError(
            f"'{name}': {low!r} .. {high!r} goes outside the declared range {declared.low!r} .. {declared.high!r}; "
            f"narrowing can only stay inside it (widen the tune.{'int' if isinstance(declared, IntParam) else 'float'}"
            f"(...) in the cell to search further)."
        )
    low, high = max(low, declared.low), min(high, declared.high)
    if isinstance(declared, IntParam):
        low, high = math.ceil(low - 1e-9), math.floor(high + 1e-9)
    low, high = _snap(declared, low, high)
    if low > high:
        raise TuneError(f"'{name}': no value of step {declared.step!r} lies in {request[0]!r} .. {request[1]!r}; "
                        "widen the range.")
    if isinstance(declared, IntParam):
        return replace(declared, low=int(low), high=int(high))
    return replace(declared, low=float(low), high=float(high))


def same_choice(a: Any, b: Any) -> bool:
    """Equal and of the same type (so that 1 and True, or 1 and 1.0, are different options)."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - an option whose == misbehaves is simply not equal
        return False


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """``lr=1e-4:1e-2 kernel=rbf,poly`` (``%tune narrow``) or ``lr=1e-3 kernel=rbf``
    (``%tune enqueue``): ``low:high`` is a range, ``a,b`` a list, anything else one value."""
    parsed: dict[str, Any] = {}
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or not name.isidentifier() or not text:
            raise TuneError(f"{word!r} is not NAME=VALUE; write e.g. lr=1e-4:1e-2 or kernel=rbf,poly.")
        if ":" in text:
            low, _, high = text.partition(":")
            parsed[name] = (_literal(low), _literal(high))
        elif "," in text:
            parsed[name] = [_literal(part) for part in text.split(",") if part]
        else:
            parsed[name] = _literal(text)
    return parsed


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a text option such as rbf


def share_of_space(declared: Mapping[str, Param], searched: Mapping[str, Param]) -> float:
    """The fraction of the declared space that ``searched`` keeps, each number on the scale it
    is sampled on (its grid points for ints and stepped floats), each choice by its options:
    how hard a cut is, shown before it is applied."""
    share = 1.0
    for name, param in declared.items():
        kept = searched.get(name, param)
        if isinstance(param, ChoiceParam):
            share *= len(kept.labels) / len(param.labels)
        elif param.step and not param.log:
            share *= (round((kept.high - kept.low) / param.step) + 1) / (round((param.high - param.low) / param.step) + 1)
        elif param.high > param.low:
            scale = math.log if param.log else float
            share *= (scale(kept.high) - scale(kept.low)) / (scale(param.high) - scale(param.low))
    return share


def percent(share: float) -> str:
    """62%, 6.2%, 0.34%: enough digits to tell a small cut from a tiny one."""
    return f"{100 * share:.0f}%" if share >= 0.1 else f"{100 * share:.2g}%"


def span_of(declared: Mapping[str, Param], best: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The ranges the given trials' values span, per declared knob ("focus on the top X%")."""
    ranges: dict[str, Any] = {}
    for name, param in declared.items():
        values = [params[name] for params in best if name in params]
        if not values:
            continue
        if isinstance(param, ChoiceParam):
            ranges[name] = [v for v in param.options if any(same_choice(v, x) or v is x for x in values)]
        else:
            ranges[name] = (min(values), max(values))
    return ranges


def near(declared: Mapping[str, Param], values: Mapping[str, Any], spread: float, rng: random.Random) -> dict:
    """``values`` moved a little (``spread`` of each numeric range, on the log scale for log
    knobs) and kept inside ``declared``: "try near this"."""
    moved: dict[str, Any] = {}
    for name, value in values.items():
        param = declared.get(name)
        if param is None or isinstance(param, ChoiceParam) or spread <= 0:
            moved[name] = value
            continue
        if param.log:
            low, high, x = math.log(param.low), math.log(param.high), math.log(value)
            x = min(max(x + rng.uniform(-spread, spread) * (high - low), low), high)
            x = math.exp(x)
        else:
            x = min(max(value + rng.uniform(-spread, spread) * (param.high - param.low), param.low), param.high)
        if isinstance(param, IntParam):
            x = int(round(x))
        if param.step:
            x = param.low + round((x - param.low) / param.step) * param.step
            x = min(max(x, param.low), param.high)
        moved[name] = type(value)(x) if isinstance(param, IntParam) else float(x)
    return moved
