"""The package's shape: a headless core, views that depend on it, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "hpt_jupyter"


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in it, lazy imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                for alias in node.names:  # `from . import x` may name a module
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if candidate in modules else target)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpt_jupyter"):
                found.add(node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    # Packages' __init__ re-export their modules; a cycle through them is not a real one.
    graph = {m: {d for d in deps if not PACKAGE.joinpath(*d.split(".")[1:], "__init__.py").exists()}
             for m, deps in graph.items()}
    cycles = []
    for start in graph:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_core_imports_no_frontend():
    graph = _imports()
    core = [m for m in graph if m.startswith("hpt_jupyter.core")]
    assert core, "no hpt_jupyter.core package"
    assert not [(m, d) for m in core for d in graph[m] if not d.startswith("hpt_jupyter.core")
                and d != "hpt_jupyter.errors"], "the core imports outside itself"
    code = ("import sys, hpt_jupyter.core.run, hpt_jupyter.core.cell, hpt_jupyter.core.storage, "
            "hpt_jupyter.core.engine, hpt_jupyter.core.executors; "
            "print(sorted(m for m in ('IPython', 'ipywidgets', 'bqplot', 'ipykernel') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_only_the_dashboard_views_import_widgets():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        if names & {"ipywidgets", "bqplot"}:
            assert path.parent.name == "views" and path.stem in ("dashboard", "steer_panel", "compare"), path


def _private_run_attributes(path: Path) -> list[str]:
    """``run._x`` / ``self.run._x`` reads and writes in ``path``: a Run's private state."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id == "run") or \
                    (isinstance(owner, ast.Attribute) and owner.attr == "run"):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def test_the_engine_keeps_out_of_the_runs_books(tmp_path):
    # The engine keeps the slots and the ask/tell path; the run keeps its own counts, best
    # trial and end reason behind its public methods (record, end_reason, loop_ended, ...).
    assert _private_run_attributes(PACKAGE / "core" / "engine.py") == []
    # the check sees what it is meant to see
    sample = tmp_path / "sample.py"
    sample.write_text("def f(run, self):\n    run._best = 1\n    return self.run._condition\n")
    assert len(_private_run_attributes(sample)) == 2


def test_schedulers_share_one_interface():
    # PBT and the default scheduler are one interface: no "is there a scheduler" branches.
    for name in ("engine.py", "run.py", "steered.py", "space.py"):
        text = (PACKAGE / "core" / name).read_text()
        assert "scheduler is None" not in text and "scheduler is not None" not in text, name
