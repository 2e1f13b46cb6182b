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


@dataclass(frozen=True)
class Shipment:
    blob: bytes  # pickled payload; a worker unpacks it once (Session)
    token: str  # names this shipment: workers cache the unpacked session by it
    n_directions: int

    @property
    def size(self) -> int:
        return len(self.blob)


def names_read(code: str) -> set[str]:
    """Every name the code loads (its own locals included: the caller keeps those that the
    namespace holds)."""
    tree = ast.parse(code)
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _dumps(what: str, value: Any) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # noqa: BLE001 - locks, sockets, open files, generators...
        raise TuneError(
            f"{what} cannot be sent to a worker process ({type(error).__name__}: {error}); "
            "use --backend thread, or create it inside the cell."
        ) from None


def ship(objective: Callable[..., Any], n_directions: int, *, cell: Any = None) -> Shipment:
    """Pack the cell (or function) for workers; a value that cannot travel is one TuneError."""
    if cell is not None:
        namespace = cell.namespace
        wanted = sorted(n for n in names_read(cell.code) if n in namespace and n != "tune"
                        and not n.startswith("__") and namespace[n] is not getattr(builtins, n, object()))
        values = {n: _dumps(f"The cell reads `{n}` ({type(namespace[n]).__name__}), which", namespace[n])
                  for n in wanted}
        payload = {"kind": "cell", "code": cell.code, "filename": cell.filename, "source": cell.source,
                   "first_line": cell.first_line, "namespace": values}
    else:
        filename = getattr(getattr(objective, "__code__", None), "co_filename", "")
        payload = {"kind": "function",
                   "function": _dumps(f"The objective {getattr(objective, '__name__', objective)!r}", objective),
                   "lines": {filename: linecache.getlines(filename)} if filename else {}}
    payload["n_directions"] = n_directions
    return Shipment(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), secrets.token_hex(8), n_directions)
