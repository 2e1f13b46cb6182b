"""Parameter names from the code that declares them.

``C = tune.float(...)`` is called "C", ``SVC(C=tune.float(...))`` too, and
``{"C": tune.float(...)}`` as well. The cell compiler uses this statically; plain
functions that use ``tune.*`` get the same answer at run time from the caller's frame.
"""

from __future__ import annotations

import ast
import linecache
import sys
import threading
from types import CodeType, FrameType

DECLARATIONS = ("float", "int", "choice")


def tune_call_kind(node: ast.AST, tune_name: str = "tune") -> str | None:
    """'float', 'int' or 'choice' when ``node`` is ``tune.<kind>(...)``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in DECLARATIONS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == tune_name
    ):
        return node.func.attr
    return None


def explicit_name(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "name":
            return keyword.value
    return None


def parent_map(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _target_name(target: ast.expr) -> str | None:
    return target.id if isinstance(target, ast.Name) else None


def inferred_name(call: ast.Call, parents: dict[ast.AST, ast.AST]) -> str | None:
    """The name the context gives ``call``, or None when the context gives none."""
    child: ast.AST = call
    node = parents.get(call)
    # `x = tune.float(...) if cond else "fixed"`: the branch still assigns x.
    while isinstance(node, ast.IfExp) and child is not node.test:
        child, node = node, parents.get(node)
    if isinstance(node, ast.keyword):
        return node.arg
    if isinstance(node, ast.Assign) and child is node.value:
        return _target_name(node.targets[0])
    if isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and child is node.value:
        return _target_name(node.target)
    if isinstance(node, ast.Dict):
        index = next(i for i, value in enumerate(node.values) if value is child)
        key = node.keys[index]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        return None
    if isinstance(node, ast.Tuple):  # `a, b = tune.int(...), tune.int(...)`
        assign = parents.get(node)
        if isinstance(assign, ast.Assign) and assign.value is node:
            target = assign.targets[0]
            if isinstance(target, ast.Tuple) and len(target.elts) == len(node.elts):
                index = next(i for i, elt in enumerate(node.elts) if elt is child)
                return _target_name(target.elts[index])
    return None


# --- run-time inference for plain functions -------------------------------------------

_names_by_site: dict[tuple[CodeType, int], str | None] = {}
_parse_lock = threading.Lock()
_trees_by_source: dict[tuple[str, int], tuple[ast.AST, dict[ast.AST, ast.AST]] | None] = {}


def name_from_caller(frame: FrameType) -> str | None:
    """Infer the name of the ``tune.*`` call that ``frame`` is executing (cached per site)."""
    key = (frame.f_code, frame.f_lasti)
    try:
        return _names_by_site[key]
    except KeyError:
        pass
    name = _infer_at(frame)
    _names_by_site[key] = name
    return name


def _infer_at(frame: FrameType) -> str | None:
    if sys.version_info < (3, 11):  # no column positions before 3.11
        return None
    positions = list(frame.f_code.co_positions())
    index = frame.f_lasti // 2
    if index >= len(positions):
        return None
    lineno, end_lineno, col, end_col = positions[index]
    filename = frame.f_code.co_filename
    source = "".join(linecache.getlines(filename, frame.f_globals))
    key = (filename, hash(source))  # an edited, reloaded module gets a new tree
    if key not in _trees_by_source:
        # One parse at a time: trials in several threads meet their first knob together, and
        # CPython 3.11's ast.parse is not safe to run in two threads at once (SystemError).
        with _parse_lock:
            if key not in _trees_by_source:
                try:
                    tree = ast.parse(source)
                    _trees_by_source[key] = (tree, parent_map(tree))
                except (SyntaxError, ValueError):
                    _trees_by_source[key] = None
    parsed = _trees_by_source[key]
    if parsed is None:
        return None
    tree, parents = parsed
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and node.lineno == lineno
            and node.col_offset == col
            and node.end_lineno == end_lineno
            and node.end_col_offset == end_col
        ):
            return inferred_name(node, parents)
    return None
