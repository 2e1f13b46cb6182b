"""What makes a chart or a table readable, computed in plain functions the views only draw:
tick values and their labels, number and duration formats, the range that matters.

bqplot's own tick choice runs log-axis labels together and puts trial numbers at 0.5; these
functions choose ticks in the kernel (decades or 1-2-5 steps, whole numbers) and hand the
figure ``tick_values`` with compact labels.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

_MANTISSAS = (1.0, 2.0, 5.0)


def number(value: float, digits: int = 4) -> str:
    """A compact label: ``0.0005``, ``0.9975``, ``120``, ``1e-05`` (the shortest of ``.{digits}g``)."""
    if value == 0:
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def log_ticks(low: float, high: float, max_ticks: int = 6) -> list[float]:
    """Ticks of a log axis from ``low`` to ``high`` (both > 0): every decade, or every n-th when
    there are many, or 1-2-5 steps when the range spans about a decade or less."""
    if not (low > 0 and high > 0):
        return []
    low, high = min(low, high), max(low, high)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    decades = [10.0 ** e for e in range(first, last + 1) if low * (1 - 1e-9) <= 10.0 ** e <= high * (1 + 1e-9)]
    if len(decades) >= 3:
        stride = math.ceil(len(decades) / max_ticks)
        return [tidy(d) for d in decades[::stride]]
    steps = [m * 10.0 ** e for e in range(first, last + 1) for m in _MANTISSAS]
    inside = [s for s in steps if low * (1 - 1e-9) <= s <= high * (1 + 1e-9)]
    if len(inside) > max_ticks:
        inside = [s for s in inside if round(s / 10 ** math.floor(math.log10(s) + 1e-9)) in (1, 5)]
    return [tidy(s) for s in inside] if len(inside) >= 3 else linear_ticks(low, high, 4)


def linear_ticks(low: float, high: float, max_ticks: int = 6, integer: bool = False) -> list[float]:
    """"Nice" ticks (1, 2 or 5 times a power of ten) from ``low`` to ``high``; whole numbers only
    when ``integer``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw = (high - low) / max(max_ticks - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next((m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw - 1e-12), 10 * power)
    if integer:
        step = max(1.0, round(step))
    start = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(tidy(value))
        value += step
    return ticks


def tick_labels(ticks: Iterable[float]) -> dict[str, str]:
    """bqplot's ``Axis.tick_labels``: the label of each tick value (keys as the frontend prints
    the value), all plain (``0.001``, ``500``) or all scientific (``1e-5``) on one axis."""
    ticks = list(ticks)
    plain = all(t == 0 or 1e-3 <= abs(t) < 1e5 for t in ticks)
    return {_js_number(t): number(t, 3) if plain else _scientific(t) for t in ticks}


def _scientific(value: float) -> str:
    """``1e-5``, ``2.5e-4``: the mantissa without trailing zeros."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _js_number(value: float) -> str:
    """How JavaScript's String(value) writes a number (bqplot looks tick labels up by it):
    the shortest round-trip digits, positional from 1e-6 up to 1e21."""
    if 1e-6 <= abs(value) < 1e21 or value == 0:
        return np.format_float_positional(value, trim="-")
    mantissa, exponent = repr(float(value)).split("e")
    return f"{mantissa}e{'-' if exponent.startswith('-') else '+'}{int(exponent.lstrip('+-'))}"


def tidy(value: float) -> float:
    """A tick value without float noise (2.0000000000000002e-05 is 2e-05), so that the value
    sent and the label's key agree."""
    return float(f"{value:.12g}")


def robust_range(values: Sequence[float] | np.ndarray, keep: Iterable[float] = ()) -> tuple[float, float] | None:
    """The band where most scores lie, so that one outlier does not squash the rest: the
    quartiles widened by three times their spread, clipped to the data and stretched to
    include ``keep`` (the best so far). None when nothing lies outside it."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size < 10:  # with a handful of scores, every one matters
        return None
    q1, q3 = np.percentile(finite, [25, 75])
    lowest, highest = float(finite.min()), float(finite.max())
    spread = float(q3 - q1) or abs(float(q3)) * 1e-3 or 1e-9
    low, high = max(lowest, float(q1) - 3 * spread), min(highest, float(q3) + 3 * spread)
    for v in keep:
        if math.isfinite(v):
            low, high = min(low, v), max(high, v)
    if low <= lowest and high >= highest:
        return None
    pad = (high - low) * 0.05 or 1e-9
    return low - pad, high + pad


def ranks(values: Sequence[float], higher_is_better: bool) -> list[float]:
    """Each value's rank as a share from 0 (worst) to 1 (best): a colour scale by rank
    separates members however far one outlier lies from the rest."""
    if not values:
        return []
    order = sorted(range(len(values)), key=lambda i: values[i] if higher_is_better else -values[i])
    shares = [0.0] * len(values)
    last = max(len(values) - 1, 1)
    for position, index in enumerate(order):
        shares[index] = position / last
    return shares


def duration(seconds: float | None) -> str:
    """``0.80 s``, ``12.3 s``, ``1 min 12 s``, ``2 h 5 min``."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min"


class ColumnFormat:
    """One number format for a whole table column: fixed notation with ``digits`` significant
    digits when every value reads well that way, else scientific for all."""

    def __init__(self, values: Iterable[object], digits: int = 4) -> None:
        numbers = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v) and v != 0]
        self.digits = digits
        self.scientific = any(v < 1e-3 or v >= 1e6 for v in numbers)
        # fixed: as many decimals as the smallest value needs for its significant digits
        smallest = min(numbers) if numbers else 1.0
        self.decimals = 0 if self.scientific else max(0, digits - 1 - math.floor(math.log10(smallest)))
        self.decimals = min(self.decimals, 8)

    def __call__(self, value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool) or not isinstance(value, float):
            return str(value)
        if not math.isfinite(value):
            return str(value)
        if self.scientific:
            mantissa, exponent = f"{value:.{self.digits - 1}e}".split("e")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.{self.decimals}f}"

    @property
    def key(self) -> tuple:
        return (self.scientific, self.decimals)
