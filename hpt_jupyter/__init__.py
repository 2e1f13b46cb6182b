"""hpt-jupyter: notebook-native hyperparameter tuning.

``%load_ext hpt_jupyter`` gives the ``%%tune`` cell magic; ``from hpt_jupyter import tune,
start`` gives the same from plain Python.
"""

from __future__ import annotations

from typing import Any

from .api import optimize, start
from .core.cell import CompiledCell, compile_cell
from .core.run import Event, Run, set_report_writer
from .core.space import tune
from .errors import TuneError

__all__ = ["tune", "start", "optimize", "compare", "compile_cell", "CompiledCell", "Run", "Event", "TuneError"]
__version__ = "0.1.0"


def _write_report(run: Run, path: str) -> str:
    from .views.report import write_report  # plotly loads only when a report is written

    return write_report(run, path)


set_report_writer(_write_report)


def compare(*studies: Any, storage: str | None = None) -> Any:
    """Compare studies (Run objects or stored studies' names): best-so-far by trial and by time on
    one chart, best values and parameters side by side, and where their spaces differ."""
    from .views.compare import compare as _compare

    return _compare(*studies, storage=storage)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the Tuning sidebar (built from js/ into hpt_jupyter/labextension)."""
    return [{"src": "labextension", "dest": "hpt-jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    from .magic import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magic import unload

    unload(ipython)
