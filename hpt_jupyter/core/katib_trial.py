"""One trial of an exported study, as Katib starts it: ``python3 trial.py --lr=0.01 --depth=3``.

The exported folder holds the cell and the notebook values it reads (``cell.pkl``: the shipment
the process backend sends its workers) and the space (``space.json``). The knobs' values come on
the command line as text; each ``tune.report`` and the final score are printed as
``2026-12-07T10:00:00.123456Z score=0.93``, the lines Katib's StdOut collector reads (a leading
RFC 3339 timestamp, then ``name=value``). Under PBT, ``tune.checkpoint``/``tune.restore`` use
``checkpoint.pkl`` in the folder Katib mounts (``--checkpoints=DIR``).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
from typing import Any

from ..errors import TuneError
from .space import ChoiceParam, Param, set_context

METRIC = "score"
CHECKPOINT_FILE = "checkpoint.pkl"


def metric_line(value: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return f"{now} {METRIC}={float(value)!r}"


class KatibContext:
    """What ``tune.*`` talks to in an exported trial: the values Katib chose, reports printed."""

    def __init__(self, values: dict[str, str], space: dict[str, dict], checkpoints: str | None) -> None:
        self.values, self.space, self.checkpoints = values, space, checkpoints
        self.assigned: dict[str, Any] = {}
        self.remote = checkpoints is not None  # tune.checkpoint keeps the state only under PBT
        self.devices: list[str] | None = None

    def suggest(self, param: Param) -> Any:
        text = self.values.get(param.name)
        if text is None:
            raise TuneError(f"Katib gave no value for `{param.name}`: the exported space does not have it "
                            "(export the study again after the cell declared it).")
        if isinstance(param, ChoiceParam):
            for label, option in zip(param.labels, param.options):
                if str(label) == text:
                    return option
            raise TuneError(f"`{param.name}`={text!r} is none of the cell's options {list(param.labels)}.")
        kind = self.space.get(param.name, {}).get("kind")
        return int(text) if kind == "int" or (kind is None and text.lstrip("-").isdigit()) else float(text)

    def report(self, value: float, step: int) -> bool:
        print(metric_line(value), flush=True)
        return False  # Katib's median stopping ends the process itself

    def should_prune(self) -> bool:
        return False

    def cv_scores(self, scores: list[float]) -> None:
        return None

    def constraint(self, name: str | None, value: float) -> None:
        return None  # Katib has no constraints: the experiment optimises the score alone

    def checkpoint(self, blob: bytes) -> None:
        if self.checkpoints is not None:
            os.makedirs(self.checkpoints, exist_ok=True)
            path = os.path.join(self.checkpoints, CHECKPOINT_FILE)
            with open(path + ".tmp", "wb") as out:
                out.write(blob)
            os.replace(path + ".tmp", path)

    def restore(self) -> bytes | None:
        if self.checkpoints is None:
            return None
        path = os.path.join(self.checkpoints, CHECKPOINT_FILE)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as source:
            return source.read()


def parse_arguments(argv: list[str]) -> tuple[dict[str, str], str | None]:
    values: dict[str, str] = {}
    checkpoints = None
    for argument in argv:
        if not argument.startswith("--") or "=" not in argument:
            raise TuneError(f"trial.py takes --NAME=VALUE arguments, got {argument!r}.")
        name, value = argument[2:].split("=", 1)
        if name == "checkpoints":
            checkpoints = value
        else:
            values[name] = value
    return values, checkpoints


def main(argv: list[str], folder: str) -> int:
    """Run the exported cell once with the values on the command line; 0 when it gave a score."""
    from .executors.remote import RemoteTrial, Session
    from .executors.thread import evaluate

    values, checkpoints = parse_arguments(argv)
    with open(os.path.join(folder, "space.json")) as source:
        space = json.load(source)
    with open(os.path.join(folder, "cell.pkl"), "rb") as source:
        session = Session(source.read())
    context = KatibContext(values, space, checkpoints)
    set_context(context)  # type: ignore[arg-type] - quacks like a TrialContext
    try:
        outcome = evaluate(session.objective, session.wants_trial, RemoteTrial(context, 0),  # type: ignore[arg-type]
                           session.n_directions)
    finally:
        set_context(None)
    if outcome.failure is not None or outcome.values is None:
        print(outcome.failure or "the trial gave no score", file=sys.stderr, flush=True)
        return 1
    value = outcome.values[0] if isinstance(outcome.values, (list, tuple)) else outcome.values
    print(metric_line(value), flush=True)
    return 0


def run_file(path: str) -> None:
    """``trial.py``'s body: the folder is the script's own."""
    try:
        code = main(sys.argv[1:], os.path.dirname(os.path.abspath(path)))
    except TuneError as error:
        print(f"trial.py: {error}", file=sys.stderr)
        code = 2
    except Exception:  # noqa: BLE001 - said on stderr, which Katib keeps with the trial's log
        traceback.print_exc()
        code = 1
    sys.exit(code)
