"""What a worker needs to run a run's trials, packed once per run: the cell's code and the
values of the notebook names it reads (or a plain function), by value with cloudpickle."""

from __future__ import annotations

import ast
import builtins
import linecache
import pickle
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import TuneError
from . import sharing
from .sharing import layout

FUNCTION = "<objective>"  # the shared-buffer key of a plain function's own pickle


@dataclass(frozen=True)
class Shipment:
    blob: bytes  # pickled payload; a worker unpacks it once (Session)
    token: str  # names this shipment: workers cache the unpacked session by it
    n_directions: int
    # The large values' out-of-band buffers (views of the notebook's own arrays, not copies),
    # written to shared memory when the run starts (sharing.py); the blob says where each goes.
    buffers: tuple[pickle.PickleBuffer, ...] = ()
    shared_names: tuple[str, ...] = ()  # the notebook names whose data is shared

    @property
    def size(self) -> int:
        return len(self.blob)


def names_read(code: str) -> set[str]:
    """Every name the code loads (its own locals included: the caller keeps those that the
    namespace holds)."""
    tree = ast.parse(code)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _dumps(what: str, value: Any, share: bool) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """The value pickled, and (``share``) its large out-of-band buffers, which the pickle then
    does not hold: NumPy's arrays, and those inside pandas and SciPy objects, give theirs."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []
    try:
        blob = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append if share else None)
        if buffers and sum(b.raw().nbytes for b in buffers) < sharing.SHARE_MIN_BYTES:
            buffers = []  # small: inside the pickle, as every value used to travel
            blob = cloudpickle.dumps(value, protocol=5)
    except Exception as error:  # noqa: BLE001 - locks, sockets, open files, generators...
        raise TuneError(
            f"{what} cannot be sent to a worker process ({type(error).__name__}: {error}); "
            "use --backend thread, or create it inside the cell."
        ) from None
    return blob, buffers


def ship(objective: Callable[..., Any], n_directions: int, *, cell: Any = None, share: bool = False) -> Shipment:
    """Pack the cell (or function) for workers; a value that cannot travel is one TuneError.
    ``share``: the workers are on this machine, so large values go to shared memory."""
    buffers: list[pickle.PickleBuffer] = []
    shared: dict[str, list[tuple[int, int]]] = {}  # name -> its buffers' spans in the shared file

    def pack(name: str, what: str, value: Any) -> bytes:
        blob, own = _dumps(what, value, share)
        if own:
            first = len(buffers)
            buffers.extend(own)
            shared[name] = list(range(first, len(buffers)))  # spans filled in below
        return blob

    if cell is not None:
        namespace = cell.namespace
        wanted = sorted(n for n in names_read(cell.code) if n in namespace and n != "tune"
                        and not n.startswith("__") and namespace[n] is not getattr(builtins, n, object()))
        values = {n: pack(n, f"The cell reads `{n}` ({type(namespace[n]).__name__}), which", namespace[n])
                  for n in wanted}
        payload = {"kind": "cell", "code": cell.code, "filename": cell.filename, "source": cell.source,
                   "first_line": cell.first_line, "namespace": values}
    else:
        name = getattr(objective, "__name__", repr(objective))
        filename = getattr(getattr(objective, "__code__", None), "co_filename", "")
        payload = {"kind": "function", "function": pack(FUNCTION, f"The objective {name!r}", objective),
                   "lines": {filename: linecache.getlines(filename)} if filename else {}}
    spans, size = layout([b.raw().nbytes for b in buffers])
    payload["shared"] = {name: [spans[i] for i in indices] for name, indices in shared.items()}
    payload["shared_size"] = size
    payload["n_directions"] = n_directions
    return Shipment(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), secrets.token_hex(8), n_directions,
                    tuple(buffers), tuple(n for n in shared if n != FUNCTION))
