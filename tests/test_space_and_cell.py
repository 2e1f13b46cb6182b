"""The inline search space and the cell compiler, in process."""

from __future__ import annotations

import optuna
import pytest

from hpt_jupyter import TuneError, compile_cell, tune
from hpt_jupyter.core.space import TrialContext, set_context


def names_of(body: str) -> list[str]:
    return compile_cell(body, {}).param_names


@pytest.mark.parametrize(
    "body, names",
    [
        ("C = tune.float(1e-3, 1e3, log=True)\nC", ["C"]),
        ("m = dict(C=tune.float(0, 1))\n1", ["C"]),
        ("p = {'depth': tune.int(1, 5)}\n1", ["depth"]),
        ("a, b = tune.int(1, 5), tune.choice(['x', 'y'])\n1", ["a", "b"]),
        ("g = tune.float(0.1, 1) if True else 'scale'\n1", ["g"]),
        ("(lr := tune.float(0.1, 1))", ["lr"]),
        ("x: float = tune.float(0, 1)\nx", ["x"]),
        ("v = abs(tune.float(0, 1, name='w'))\nv", ["w"]),
    ],
)
def test_names_come_from_the_code(body, names):
    assert names_of(body) == names


@pytest.mark.parametrize(
    "body, message",
    [
        ("x = tune.float(1, 0)\nx", "inverted"),
        ("x = tune.float(0.5, 0.5)\nx", "empty"),
        ("x = tune.float(0, 1, log=True)\nx", "log scale"),
        ("x = tune.float(0.1, 1, step=0.1, log=True)\nx", "cannot be combined"),
        ("x = tune.int(1.5, 3)\nx", "must be integers"),
        ("x = tune.int(5, 2)\nx", "inverted"),
        ("x = tune.choice([])\nx", "empty"),
        ("x = tune.choice('abc')\nx", "got the string"),
        ("x = tune.choice(['a', 'a'])\nx", "listed twice"),
        ("x = tune.float(0, 1)\nx = tune.int(1, 3)\nx", "already declared on line 1"),
        ("print(tune.float(0, 1))\n1", "cannot tell what to call"),
        ("for i in range(3):\n    u = tune.int(1, 3)\n1", "inside a loop"),
        ("x = tune.float(0, 1)\ny = x", "no final expression"),
        ("x = tune.float(0, 1, 2)\nx", "tune.float(...)"),
        ("x = (\n", "syntax error"),
        ("", "empty"),
    ],
)
def test_mistakes_are_named_before_any_trial(body, message):
    with pytest.raises(TuneError, match=None) as caught:
        compile_cell(body, {})
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_error_line_numbers_are_the_cells_own():
    with pytest.raises(TuneError, match="Line 3"):
        compile_cell("a = 1\nx = tune.float(1, 0)\nx", {}, first_line=2)


def test_cell_reads_the_namespace_and_keeps_its_own_names_local():
    namespace = {"offset": 10}
    cell = compile_cell("x = tune.float(0, 1)\nmodel = 'trained'\nx + offset", namespace)
    study = optuna.create_study()
    trial = study.ask()
    set_context(TrialContext(trial, None))
    try:
        score = cell.objective()
    finally:
        set_context(None)
    assert score == trial.params["x"] + 10
    assert "model" not in namespace and "x" not in namespace
    assert "tune" not in namespace  # tune is a closure variable, not a namespace entry


def test_explicit_return_is_the_score():
    cell = compile_cell("x = tune.float(0, 1)\nif x > 2:\n    return 1.0\nreturn -x", {})
    study = optuna.create_study()
    trial = study.ask()
    set_context(TrialContext(trial, None))
    try:
        assert cell.objective() == -trial.params["x"]
    finally:
        set_context(None)


def test_refit_runs_at_the_cells_level_with_fixed_values():
    namespace: dict = {}
    cell = compile_cell("k = tune.choice(['linear', 'rbf'])\n"
                        "g = tune.float(0.1, 1) if k != 'linear' else 'scale'\n"
                        "model = (k, g)\n0", namespace)
    cell.refit({"k": "linear"})
    assert namespace["model"] == ("linear", "scale") and namespace["g"] == "scale"


def test_grid_space_needs_enumerable_knobs():
    cell = compile_cell("a = tune.int(1, 3)\nb = tune.choice(['x', 'y'])\nc = tune.float(0, 1, step=0.5)\na", {})
    assert cell.grid_space() == {"a": [1, 2, 3], "b": ["x", "y"], "c": [0.0, 0.5, 1.0]}
    with pytest.raises(TuneError, match="needs a step"):
        compile_cell("c = tune.float(0, 1)\nc", {}).grid_space()


def test_default_name_changes_with_the_space_only():
    a = compile_cell("lr = tune.float(0.1, 1)\nprint('x')\nlr", {}).default_name()
    b = compile_cell("lr = tune.float(0.1, 1)\nprint('y')\nlr", {}).default_name()
    c = compile_cell("lr = tune.float(0.1, 2)\nlr", {}).default_name()
    assert a == b != c and a.startswith("lr-")


def test_tune_outside_a_trial_says_where_it_belongs():
    with pytest.raises(TuneError, match="inside a %%tune cell"):
        tune.float(0, 1)
