"""Compile a notebook cell once into an objective function.

The cell's globals are the user namespace, so it reads ``X``, ``y`` and imports exactly as
the notebook does, while its own assignments stay local to each trial (trials in threads do
not trample each other or the namespace). The last expression becomes the score. ``tune``
is a closure variable, so it works without an import and without touching the namespace.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import linecache
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, Callable

from ..errors import TuneError
from .naming import explicit_name, inferred_name, parent_map, tune_call_kind
from .space import (
    FixedContext,
    Param,
    current_context,
    make_choice,
    make_float,
    make_int,
    set_context,
    tune,
)

TRIAL_FUNCTION = "<tune cell>"
REFIT_FUNCTION = "<tune refit>"
_RECORD = "__hpt_record__"
_OWN_SCOPE_STOP = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Declaration:
    """One ``tune.*`` call found in the cell."""

    kind: str
    name: str | None  # None when the name is computed (name=f"units_{i}")
    lineno: int
    param: Param | None  # known before any trial when the arguments are literals
    text: str
    col: int = 0

    def describe(self) -> str:
        return self.param.describe() if self.param is not None else self.text


@dataclass
class CompiledCell:
    """A cell ready to run as a trial (``objective()``) or once more with fixed values."""

    source: str
    filename: str
    objective: Callable[[], Any]
    refit_function: Callable[[], Any]
    declarations: list[Declaration]
    assigned_names: set[str]
    namespace: dict = field(repr=False)
    code: str = ""  # the body as compiled (IPython syntax transformed): what a worker compiles again
    first_line: int = 1

    @property
    def param_names(self) -> list[str]:
        return [d.name for d in self.declarations if d.name]

    def signature(self) -> str:
        """The declared space as text: equal signatures mean the same search space."""
        return "\n".join(f"{d.name or '?'}={d.describe()}" for d in self.declarations)

    def default_name(self, extra: str = "") -> str:
        """A stable study name: the first knobs' names and a hash of the space."""
        digest = hashlib.sha1((self.signature() + extra).encode()).hexdigest()[:6]
        names = self.param_names[:3]
        return "-".join(names + [digest]) if names else f"study-{digest}"

    def grid_space(self) -> dict[str, list]:
        """The grid for ``--sampler grid``: every knob must be enumerable from the cell itself."""
        grid: dict[str, list] = {}
        for d in self.declarations:
            if d.param is None or not d.name:
                raise TuneError(
                    f"--sampler grid needs every knob's values in the cell itself; line {d.lineno}, "
                    f"{d.text}, is computed at run time. Use literal arguments, or another sampler."
                )
            p = d.param
            if d.kind == "choice":
                grid[d.name] = list(p.labels)
            elif d.kind == "int":
                if p.log:
                    raise TuneError(f"--sampler grid cannot enumerate log-scale '{d.name}'; use tune.choice([...]).")
                grid[d.name] = list(range(p.low, p.high + 1, p.step))
            else:
                if p.step is None:
                    raise TuneError(
                        f"--sampler grid needs a step for the real-valued '{d.name}' "
                        f"(tune.float({p.low!r}, {p.high!r}, step=...)), or tune.choice([...])."
                    )
                n = int(round((p.high - p.low) / p.step))
                grid[d.name] = [p.low + i * p.step for i in range(n + 1)]
        return grid

    def refit(self, values: dict[str, Any]) -> None:
        """Run the body once, at the cell's level, with ``values`` for the knobs."""
        previous = current_context()
        set_context(FixedContext(values))
        try:
            self.refit_function()
        finally:
            set_context(previous)


def _record(name: str, value: Any) -> None:
    context = current_context()
    if context is not None:
        context.assigned[name] = value


def _own_scope_walk(nodes: list[ast.stmt]):
    """Walk statements without entering nested functions, classes or lambdas."""
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, _OWN_SCOPE_STOP):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _static_param(kind: str, call: ast.Call, name: str | None, lineno: int) -> Param | None:
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg not in (None, "name")}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None  # computed arguments: validated when the first trial declares them

    def float_(low, high, *, log=False, step=None):
        return make_float(name, low, high, log, step)

    def int_(low, high, *, log=False, step=1):
        return make_int(name, low, high, log, step)

    def choice(options):
        return make_choice(name, options)

    binder = {"float": float_, "int": int_, "choice": choice}[kind]
    try:
        return binder(*args, **kwargs)
    except TypeError as error:
        message = str(error).replace("float_()", "").replace("int_()", "").replace("choice()", "")
        raise TuneError(f"Line {lineno}: tune.{kind}(...):{message}; see %%tune? for the signature.") from None
    except TuneError as error:
        raise TuneError(f"Line {lineno}: {error}") from None


def _find_declarations(tree: ast.Module) -> list[Declaration]:
    parents = parent_map(tree)
    found: list[Declaration] = []
    by_name: dict[str, Declaration] = {}
    for node in ast.walk(tree):
        kind = tune_call_kind(node)
        if kind is None:
            continue
        lineno = node.lineno
        text = ast.unparse(node)
        given = explicit_name(node)
        if given is not None:
            name = given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else None
        else:
            name = inferred_name(node, parents)
            if name is None:
                raise TuneError(
                    f"Line {lineno}: cannot tell what to call {text}: assign it (lr = tune.{kind}(...)), "
                    f"pass it as a keyword (Model(lr=tune.{kind}(...))), or give name='lr'."
                )
            ancestor = parents.get(node)
            while ancestor is not None and not isinstance(ancestor, _OWN_SCOPE_STOP):
                if isinstance(ancestor, _LOOPS):
                    raise TuneError(
                        f"Line {lineno}: {text} is inside a loop, so every pass would reuse the name "
                        f"'{name}'; give each pass its own name, e.g. name=f'{name}_{{i}}'."
                    )
                ancestor = parents.get(ancestor)
            node.keywords.append(ast.keyword(arg="name", value=ast.Constant(name)))
        if name is not None and name in by_name:
            raise TuneError(
                f"Line {lineno}: the name '{name}' is already declared on line {by_name[name].lineno}; "
                f"two knobs cannot share a name. Rename one with name='...'."
            )
        declaration = Declaration(kind, name, lineno, _static_param(kind, node, name, lineno), text,
                                  node.col_offset)
        if name is not None:
            by_name[name] = declaration
        found.append(declaration)
    found.sort(key=lambda d: (d.lineno, d.col))
    return found


class _RecordAssignments(ast.NodeTransformer):
    """After each assignment to a knob's name, note the value the cell really assigned.

    ``gamma = tune.float(...) if kernel != "linear" else "scale"`` assigns "scale" in some
    trials; injection then gives the namespace exactly what the best trial's cell had.
    """

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def _visit_body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            out.append(self.visit(stmt))
            targets: list[ast.expr] = []
            if isinstance(stmt, ast.Assign):
                targets = stmt.targets
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
                targets = [stmt.target]
            for name in sorted(_store_names(targets) & self.names):
                call = ast.Call(ast.Name(_RECORD, ast.Load()), [ast.Constant(name), ast.Name(name, ast.Load())], [])
                out.append(ast.copy_location(ast.Expr(call), stmt))
        return out

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, _OWN_SCOPE_STOP):
            return node
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(node, attr, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                setattr(node, attr, self._visit_body(block))
        for handler in getattr(node, "handlers", []) or []:
            handler.body = self._visit_body(handler.body)
        for case in getattr(node, "cases", []) or []:
            case.body = self._visit_body(case.body)
        return node


class _AnnotationsToAssignments(ast.NodeTransformer):
    """``x: float = v`` becomes ``x = v``: a ``global`` name cannot carry an annotation."""

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt:
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        return node if isinstance(node, _OWN_SCOPE_STOP) else super().generic_visit(node)


def _store_names(targets: list[ast.expr]) -> set[str]:
    names: set[str] = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.add(node.id)
    return names


def _assigned_at_cell_level(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in _own_scope_walk(body):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
    return names


def _has_return(body: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Return) for node in _own_scope_walk(body))


def register_source(filename: str, source: str) -> None:
    """Make tracebacks show the cell's lines (mtime None: linecache never drops it)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def compile_cell(
    body: str,
    namespace: dict,
    *,
    filename: str = "<tune cell>",
    source: str | None = None,
    first_line: int = 1,
    transform: Callable[[str], str] | None = None,
) -> CompiledCell:
    """Compile ``body`` into a :class:`CompiledCell` whose globals are ``namespace``.

    ``first_line`` is the line number of the body's first line as the user sees it (2 under a
    ``%%tune`` line), so tracebacks point at the cell's own lines. ``transform`` is IPython's
    ``transform_cell`` (so ``!cmd`` and ``%magic`` lines work).
    """
    code_text = transform(body) if transform else body
    if not code_text.strip():
        raise TuneError("The %%tune cell is empty: write the training code under %%tune, ending with the score.")
    try:
        tree = ast.parse(code_text, filename=filename)
    except SyntaxError as error:
        line = (error.lineno or 1) + first_line - 1
        raise TuneError(f"Line {line}: syntax error in the cell: {error.msg}.") from None
    ast.increment_lineno(tree, first_line - 1)

    declarations = _find_declarations(tree)
    if not tree.body or not (isinstance(tree.body[-1], ast.Expr) or _has_return(tree.body)):
        raise TuneError(
            "The cell has no final expression to use as the score: end it with the value to "
            "optimise, e.g. `cross_val_score(model, X, y).mean()` or `accuracy`."
        )
    assigned = _assigned_at_cell_level(tree.body)
    refit_body = copy.deepcopy(tree.body)

    trial_body = _RecordAssignments({d.name for d in declarations if d.name})._visit_body(tree.body)
    if isinstance(trial_body[-1], ast.Expr):
        trial_body[-1] = ast.copy_location(ast.Return(trial_body[-1].value), trial_body[-1])
    if assigned:
        refit_body = [_AnnotationsToAssignments().visit(stmt) for stmt in refit_body]
        refit_body.insert(0, ast.Global(sorted(assigned)))

    last_line = max(getattr(node, "end_lineno", 0) or 0 for node in ast.walk(tree))
    span = {"lineno": first_line, "end_lineno": max(last_line, first_line), "col_offset": 0, "end_col_offset": 0}

    def function(name: str, statements: list[ast.stmt]) -> ast.FunctionDef:
        return ast.FunctionDef(name=name, args=_no_args(), body=statements, decorator_list=[],
                               returns=None, type_params=[], **span)

    factory = ast.FunctionDef(
        name="__hpt_factory__",
        args=ast.arguments(posonlyargs=[], args=[ast.arg("tune"), ast.arg(_RECORD)], kwonlyargs=[],
                           kw_defaults=[], defaults=[]),
        body=[
            function(TRIAL_FUNCTION, trial_body),
            function(REFIT_FUNCTION, refit_body),
            ast.Return(ast.Tuple([ast.Name(TRIAL_FUNCTION, ast.Load()), ast.Name(REFIT_FUNCTION, ast.Load())],
                                 ast.Load())),
        ],
        decorator_list=[], returns=None, type_params=[], **span,
    )
    module = ast.fix_missing_locations(ast.Module(body=[factory], type_ignores=[]))
    try:
        code: CodeType = compile(module, filename, "exec")
    except SyntaxError as error:
        raise TuneError(f"Line {error.lineno}: {error.msg} (in a %%tune cell).") from None
    register_source(filename, source if source is not None else "\n" * (first_line - 1) + body)
    scratch: dict[str, Any] = {}
    exec(code, namespace, scratch)  # defines the factory only; its globals are the namespace
    objective, refit_function = scratch["__hpt_factory__"](tune, _record)
    return CompiledCell(
        source=source if source is not None else body,
        filename=filename,
        objective=objective,
        refit_function=refit_function,
        declarations=declarations,
        assigned_names=assigned,
        namespace=namespace,
        code=code_text,
        first_line=first_line,
    )


def _no_args() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
