"""What a trial gave back, as Optuna wants it: pure functions shared by every backend (a worker
process checks its own score, so only numbers travel back)."""

from __future__ import annotations

import math
import numbers
import os
import traceback
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # hpt_jupyter/


def check_score(result: Any, n_directions: int) -> tuple[Any, str | None]:
    """``(score, None)``, or ``(None, why it is not a score)``."""
    if n_directions > 1:
        if not isinstance(result, (tuple, list)) or len(result) != n_directions:
            return None, (f"The study has {n_directions} directions, so the cell must end with {n_directions} "
                          f"scores (a tuple), but it gave {result!r:.80}.")
        scores = []
        for item in result:
            score, problem = one_score(item)
            if problem:
                return None, problem
            scores.append(score)
        return scores, None
    if isinstance(result, (tuple, list)):
        return None, (f"The cell gave {len(result)} scores but the study has one direction; "
                      f"give one --direction per score (e.g. --direction maximize minimize).")
    return one_score(result)


def one_score(value: Any) -> tuple[float | None, str | None]:
    if value is None:
        return None, ("The cell's last expression gave None, not a score: end the cell with the "
                      "value to optimise (a number), not a call such as print(...).")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # numpy scalars and 0-d arrays
            if getattr(value, "shape", None) == () or getattr(value, "size", 2) == 1:
                value = float(value)
            else:
                raise TypeError
        except (TypeError, ValueError):
            return None, f"The score must be a number, but the cell gave {type(value).__name__}: {value!r:.80}."
    value = float(value)
    if not math.isfinite(value):
        return None, f"The score is {value}, not a finite number; this trial counts as failed."
    return value, None


def format_failure(error: BaseException) -> str:
    """The traceback without this package's own frames: it starts at the user's code."""
    summary = traceback.TracebackException.from_exception(error)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not frame.filename.startswith(_PACKAGE_DIR)]
    )
    return "".join(summary.format())


def short_failure(text: str) -> str:
    """``ValueError: boom (line 4)`` from a traceback text."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "unknown error"
    line_no = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("File ") and ", line " in stripped and "<tune" in stripped:
            line_no = stripped.split(", line ")[1].split(",")[0]
    return f"{last} (line {line_no})" if line_no else last
