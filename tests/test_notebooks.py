"""Batch execution: the same notebook, run headless, gives the same semantics as by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
import optuna
from nbclient import NotebookClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from conftest import ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _stored_best(folder, name: str) -> optuna.trial.FrozenTrial:
    storage = JournalStorage(JournalFileBackend(str(folder / "hpt_studies.journal")))
    return optuna.load_study(study_name=name, storage=storage).best_trial


def test_quickstart_runs_headless_and_later_cells_see_the_best_values(tmp_path):
    notebook = tmp_path / "quickstart.ipynb"
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", notebook)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [_text(c) for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    result = next(text for text in outputs if text.count("best: C="))
    assert "Waiting for 'svc'" in result  # the cell that uses the names waited for the study

    best = _stored_best(tmp_path, "svc")
    line = next(l for l in result.splitlines() if l.startswith("best: "))
    values = eval("dict(" + line[len("best: "):] + ")")
    expected = {"C": best.params["C"], "kernel": best.params["kernel"],
                "gamma": best.params.get("gamma", "scale"), "degree": best.params.get("degree", 3)}
    assert values == expected
    assert len(optuna.load_study(study_name="svc", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "hpt_studies.journal")))).trials) == 30

    # The saved notebook keeps the dashboard's final state, readable on reopening.
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    header = next(m["state"]["value"] for m in saved.values()
                  if m["model_name"] == "HTMLModel" and "sampler" in m["state"].get("value", ""))
    assert "30/30 trials" in header and "finished" in header and f"{best.value:.6g}" in header
    table = next(m["state"]["value"] for m in saved.values()
                 if m["model_name"] == "HTMLModel" and "hpt-trials" in m["state"].get("value", ""))
    assert "30 trials" in table


SMALL = [
    nbformat.v4.new_code_cell("%load_ext hpt_jupyter"),
    nbformat.v4.new_code_cell("budget = 8", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("%%tune -n $budget --seed 0 --name small\n"
                              "x = tune.float(-2, 2)\nimport time; time.sleep(0.05)\n(x - 0.5) ** 2"),
    nbformat.v4.new_code_cell("print('X', x)"),
]


def _small_notebook(folder):
    nb = nbformat.v4.new_notebook(cells=SMALL)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "small.ipynb"
    nbformat.write(nb, path)
    return path


def test_papermill_with_parameters(tmp_path):
    import papermill

    source = _small_notebook(tmp_path)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(source), str(out), parameters={"budget": 5}, cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    printed = _text(nb.cells[-1])
    best = _stored_best(tmp_path, "small")
    assert f"X {best.params['x']}" in printed and "Waiting for 'small'" in printed
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    assert len(optuna.load_study(study_name="small", storage=storage).trials) == 5


def test_nbconvert_execute(tmp_path):
    source = _small_notebook(tmp_path)
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                    "--output", "done.ipynb", str(source)], check=True, cwd=tmp_path, capture_output=True)
    nb = nbformat.read(tmp_path / "done.ipynb", as_version=4)
    best = _stored_best(tmp_path, "small")
    assert f"X {best.params['x']}" in _text(nb.cells[-1])


def test_steering_notebook_narrows_in_batch_and_every_later_trial_is_inside(tmp_path):
    notebook = tmp_path / "steering.ipynb"
    shutil.copy(ROOT / "notebooks" / "steering.ipynb", notebook)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "25 trials after the narrowing, all inside the box: True" in text
    assert "top: alpha" in text  # the narrowing, described
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    names = sorted(s.study_name for s in storage.get_all_studies())
    assert names == ["ridge", "ridge ~narrowed-1"]
    base = optuna.load_study(study_name="ridge", storage=storage)
    log = base._storage.get_study_system_attrs(base._study_id)["hpt:narrowings"]["log"]
    assert [entry["source"] for entry in log] == ["top"] and log[0]["first_trial"] == 25
    narrowed = optuna.load_study(study_name="ridge ~narrowed-1", storage=storage)
    assert len(narrowed.trials) == 25 + log[0]["seeded"]
