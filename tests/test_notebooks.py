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
from mlflow_server import mlflow_server  # noqa: F401 - the session's MLflow server (a fixture)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _shown(cell) -> str:
    """The text of a cell's displays: the line that said "Waiting for ..." and, updated when
    the wait ended, says "Waited ..."."""
    return "".join(o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "display_data")


def _stored_best(folder, name: str) -> optuna.trial.FrozenTrial:
    storage = JournalStorage(JournalFileBackend(str(folder / "hpt_studies.journal")))
    return optuna.load_study(study_name=name, storage=storage).best_trial


def _executed(name: str, folder) -> tuple:
    """``notebooks/<name>`` run in ``folder`` by nbclient (no cell may fail), and the text its
    code cells printed."""
    notebook = folder / name
    shutil.copy(ROOT / "notebooks" / name, notebook)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    return nb, "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")


def test_quickstart_runs_headless_and_later_cells_see_the_best_values(tmp_path):
    nb, _ = _executed("quickstart.ipynb", tmp_path)
    cell = next(c for c in nb.cells if c.cell_type == "code" and _text(c).count("best: C="))
    result = _text(cell)
    assert "Waited " in _shown(cell) and " for 'svc' (finished: " in _shown(cell)  # it waited for the study

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
    assert f"X {best.params['x']}" in printed and "for 'small' (finished: " in _shown(nb.cells[-1])
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
    nb, text = _executed("steering.ipynb", tmp_path)
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


def test_parallel_notebook_runs_two_at_a_time_in_worker_processes_and_on_its_dask_cluster(tmp_path):
    nb, text = _executed("parallel.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))

    def trials(name):
        return optuna.load_study(study_name=name, storage=storage).trials

    def most_at_once(found):  # from the stored start and end times, not the notebook's own count
        events = sorted([(t.datetime_start, 1) for t in found] + [(t.datetime_complete, -1) for t in found])
        running = [0]
        for _, change in events:
            running.append(running[-1] + change)
        return max(running)

    # The same cell on two local processes and on the notebook's own LocalCluster: 12 trials
    # each, two at a time, and the waiting cells see the stored best values.
    for name in ("digits-process", "digits-dask"):
        assert [t.state for t in trials(name)] == [optuna.trial.TrialState.COMPLETE] * 12
        assert most_at_once(trials(name)) == 2
        best = _stored_best(tmp_path, name)
        assert f"'{name}' best: trial {best.number}, value {best.value:.6g}. Injected C={best.params['C']!r}, " \
               f"gamma={best.params['gamma']!r}." in text
        assert f"best: C={best.params['C']:.4g}, gamma={best.params['gamma']:.4g} (CV accuracy {best.value:.4f})" in text
    assert "12 trials, at most 2 at once" in text
    # {cluster.scheduler_address} was expanded in the magic's line: the study ran on that scheduler,
    # whose two workers (processes other than the kernel) ran its 12 trials between them.
    address = next(l.split()[-1] for l in text.splitlines() if l.startswith("scheduler: tcp://"))
    assert f"12 trials on 2 dask slots on {address}, at most 2 at once" in text
    workers = [l.split() for l in text.splitlines() if l.startswith("worker tcp://")]
    kernel_pid = next(l.split()[-1] for l in text.splitlines() if l.startswith("the kernel is pid "))
    assert len(workers) == 2 and sum(int(w[-2]) for w in workers) == 12, workers
    assert kernel_pid not in {w[3].rstrip(")") for w in workers}

    # The saved dashboards say where the trials ran.
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    headers = [m["state"]["value"] for m in saved.values()
               if m["model_name"] == "HTMLModel" and "hpt-header" in m["state"].get("value", "")]
    assert any("<b>digits-process</b>" in h and "2 process slots" in h and "12/12 trials" in h for h in headers)
    assert any("<b>sgd</b>" in h and "2 process slots" in h for h in headers)

    # tune.report from worker processes: every trial of the SGD study reported its whole curve (15
    # epochs; no pruner is set, so none stopped early); the last cell used the injected best values.
    sgd = trials("sgd")
    assert len(sgd) == 10 and all(t.state == optuna.trial.TrialState.COMPLETE for t in sgd)
    assert all(sorted(t.intermediate_values) == list(range(15)) for t in sgd)
    best = _stored_best(tmp_path, "sgd")
    assert best.intermediate_values[14] == best.value
    assert f"SGDClassifier(loss={best.params['loss']!r}, alpha={best.params['alpha']:.4g}): test accuracy" in text
    dask_best = _stored_best(tmp_path, "digits-dask")
    assert f"SVC(C={dask_best.params['C']:.4g}, gamma={dask_best.params['gamma']:.4g}): test accuracy" in text
    table = next(o["data"]["text/plain"] for o in nb.cells[-3].outputs if o.get("output_type") == "execute_result")
    assert "epochs reported" in table and len(table.splitlines()) >= 10


def test_early_stopping_and_pbt_notebook_prunes_under_hyperband_and_exploits_under_pbt(tmp_path):
    nb, text = _executed("early_stopping_and_pbt.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))

    # Hyperband: 30 trials, some pruned before their 30th epoch; the waiting cell saw the best.
    hyperband = optuna.load_study(study_name="sgd-hyperband", storage=storage).trials
    pruned = [t for t in hyperband if t.state == optuna.trial.TrialState.PRUNED]
    assert len(hyperband) == 30 and pruned
    assert all(len(t.intermediate_values) < 30 for t in pruned)
    assert all(sorted(t.intermediate_values) == list(range(1, 31))
               for t in hyperband if t.state == optuna.trial.TrialState.COMPLETE)
    assert f"{len(pruned)} of 30 trials pruned; {sum(len(t.intermediate_values) for t in hyperband)} epochs" in text
    best = _stored_best(tmp_path, "sgd-hyperband")
    assert f"injected: eta0={best.params['eta0']:.4g}, alpha={best.params['alpha']:.4g}; equal to best_params: " \
           f"True" in text

    # PBT: segments of 5 epochs, four members, at least one exploit in the store and in the notebook.
    segments = optuna.load_study(study_name="sgd-pbt", storage=storage).trials
    info = [t.user_attrs["hpt:pbt"] for t in segments]
    assert {i["member"] for i in info} == {0, 1, 2, 3}
    assert all(len(t.intermediate_values) <= 5 for t in segments)
    exploited = [t for t, i in zip(segments, info) if i["exploited"]]
    assert exploited
    assert f"{len(segments)} segments, {len(exploited)} of them exploited" in text
    for t in exploited[:4]:  # each exploit named with its member, donor, checkpoint and first epoch
        i = t.user_attrs["hpt:pbt"]
        assert f"trial {t.number}: member {i['member']} cloned member {i['parent']} (trial {i['from_trial']}'s " \
               f"checkpoint) and went on from epoch {i['start']}" in text
    # The injected values are those of a member's latest segment, and no member's latest is better.
    latest = {}
    for t, i in zip(segments, info):
        latest[i["member"]] = t
    lines = [line for line in text.splitlines() if line.startswith("injected: ")]
    assert len(lines) == 2 and all(line.endswith("equal to best_params: True") for line in lines)
    top = max(t.value for t in latest.values())
    assert any(lines[1].startswith(f"injected: eta0={t.params['eta0']:.4g}, alpha={t.params['alpha']:.4g};")
               for t in latest.values() if t.value == top), lines[1]
    # The best schedule, replayed on a fresh model, gives the best member's model again.
    assert "the same as the best member: True" in text
    assert "replayed over 30 epochs" in text

    # The saved dashboards: Hyperband's header counts the pruned trials, PBT's names the scheduler.
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    headers = [m["state"]["value"] for m in saved.values()
               if m["model_name"] == "HTMLModel" and "hpt-header" in m["state"].get("value", "")]
    assert any("<b>sgd-hyperband</b>" in h and f"{len(pruned)} pruned</span>" in h for h in headers)
    assert any("<b>sgd-pbt</b>" in h and "PBT · population 4 · every 5 steps" in h for h in headers)


def test_choosing_a_sampler_notebook_stops_by_the_terminator_and_auto_beats_tpe_on_branin(tmp_path):
    nb, text = _executed("choosing_a_sampler.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))

    # --stop auto ended the wine study before its 100 trials, and the notebook says so.
    trials = optuna.load_study(study_name="wine", storage=storage).trials
    assert 20 <= len(trials) < 100
    assert f"{len(trials)} trials; sampled by " in text
    kinds = [t.system_attrs["hpt:sampler"] for t in trials]
    assert kinds[0] == "random" and kinds[1] == "qmc" and {"gp", "tpe"} <= set(kinds)  # the GP and its hedge
    assert f"sampled by {dict((k, kinds.count(k)) for k in dict.fromkeys(kinds))}" in text
    assert "ended: more trials are unlikely to pay" in text and "cross-validation folds" in text
    best = _stored_best(tmp_path, "wine")
    assert f"best: C={best.params['C']:.4g}, l1_ratio={best.params['l1_ratio']:.3f}" in text

    # The comparison table: auto's median regret on Branin below TPE's and random search's.
    medians = dict(line.split() for line in text.split("sampler\n", 1)[1].splitlines()[:3])
    assert set(medians) == {"auto", "random", "tpe"}
    assert float(medians["auto"]) < float(medians["tpe"]) < float(medians["random"]), medians

    # The saved dashboard's header names what auto ran, for how many trials, and the stop rule.
    saved = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    header = next(m["state"]["value"] for m in saved.values()
                  if m["model_name"] == "HTMLModel" and "<b>wine</b>" in m["state"].get("value", ""))
    counts = ", ".join(f"{k} for {kinds.count(k)}" for k in dict.fromkeys(kinds))
    assert f"auto chose {counts}" in header and "stop auto" in header


def test_deep_learning_notebook_prunes_restores_checkpoints_and_scores_the_refit_model(tmp_path):
    nb, text = _executed("deep_learning.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))

    # Hyperband over 20 epochs: 30 trials, some pruned before their 20th, and the notebook counted them.
    hyperband = optuna.load_study(study_name="mlp-hyperband", storage=storage).trials
    pruned = [t for t in hyperband if t.state == optuna.trial.TrialState.PRUNED]
    assert len(hyperband) == 30 and pruned
    assert all(len(t.intermediate_values) < 20 for t in pruned)
    assert f"{len(pruned)} of 30 trials pruned" in text
    best = _stored_best(tmp_path, "mlp-hyperband")
    assert f"best: hidden={best.params['hidden']}, dropout={best.params['dropout']:.2f}, lr={best.params['lr']:.3g}, " \
           f"weight_decay={best.params['weight_decay']:.2g}, batch_size={best.params['batch_size']};" in text

    # PBT: segments of four members; a segment that continued from a checkpoint went on from the
    # epoch stored in it (the cell restored it: a fresh start would report epoch 1 again).
    segments = optuna.load_study(study_name="mlp-pbt", storage=storage).trials
    assert segments and all(t.state == optuna.trial.TrialState.COMPLETE for t in segments)
    info = {t.number: t.user_attrs["hpt:pbt"] for t in segments}
    steps = {t.number: sorted(t.intermediate_values) for t in segments}
    assert {i["member"] for i in info.values()} == {0, 1, 2, 3}
    assert all(len(s) <= 3 for s in steps.values())
    restored = [n for n, i in info.items() if i["from_trial"] is not None]
    continued = [n for n in restored if steps[n]]
    assert continued
    for n in continued:
        assert steps[n][0] == steps[info[n]["from_trial"]][-1] + 1, (n, info[n], steps[n])
    exploited = [n for n in restored if info[n]["exploited"]]
    assert exploited and all(info[n]["parent"] != info[n]["member"] for n in exploited)
    latest = {}
    for t in segments:
        latest[info[t.number]["member"]] = t
    assert all(steps[t.number] and steps[t.number][-1] == 20 for t in latest.values())  # each trained 20 epochs
    assert f"{len(segments)} segments of 4 members; {len(restored)} continued from a checkpoint, " \
           f"{len(exploited)} of them another member's" in text

    # The refit model and the replayed best schedule, scored on the held-out test set.
    line = next(l for l in text.splitlines() if l.startswith("test accuracy: "))
    assert float(line.split()[-1]) > 0.9, line
    line = next(l for l in text.splitlines() if l.startswith("the best schedule replayed over 20 epochs: "))
    assert float(line.split()[-1]) > 0.9, line


def test_to_katib_notebook_exports_an_experiment_replays_its_trial_and_imports_a_clusters_trials(tmp_path):
    import json
    from datetime import datetime

    import yaml
    from test_katib import KNOWN_ALGORITHMS, webhook_problems

    nb, text = _executed("to_katib.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    trials = optuna.load_study(study_name="wine-katib", storage=storage).trials
    ran_here = [t for t in trials if "katib_trial" not in t.user_attrs]
    assert len(ran_here) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in ran_here)

    # The exported Experiment: Katib's algorithm, the cell's two knobs, the image given to --image.
    folder = tmp_path / "katib-wine"
    assert sorted(p.name for p in folder.iterdir()) == ["Dockerfile", "cell.pkl", "experiment.yaml",
                                                          "requirements.txt", "space.json", "trial.py"]
    document = yaml.safe_load((folder / "experiment.yaml").read_text())
    assert isinstance(document, dict) and webhook_problems(document) == []
    # What loading the cell in the image needs: the cell's functions came from scikit-learn.
    requirements = [line.split("==")[0].lower() for line in (folder / "requirements.txt").read_text().split()]
    assert {"scikit-learn", "hpt-jupyter", "optuna", "cloudpickle"} <= set(requirements), requirements
    spec = document["spec"]
    assert spec["algorithm"]["algorithmName"] in KNOWN_ALGORITHMS
    assert document["metadata"] == {"name": "wine-katib", "namespace": "kubeflow"}
    assert spec["objective"]["type"] == "maximize" and spec["maxTrialCount"] == 8
    C, solver = spec["parameters"]
    assert C["name"] == "C" and C["parameterType"] == "double" and C["feasibleSpace"]["distribution"] == "logUniform"
    assert (float(C["feasibleSpace"]["min"]), float(C["feasibleSpace"]["max"])) == (1e-3, 1e2)
    assert solver == {"name": "solver", "parameterType": "categorical",
                      "feasibleSpace": {"list": ["lbfgs", "newton-cg", "saga"]}}
    container = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/wine-trial:1"
    assert container["command"][2:] == ["--C=${trialParameters.C}", "--solver=${trialParameters.solver}"]
    assert "kubectl apply -f katib-wine/experiment.yaml" in text

    # trial.py, run in a fresh interpreter with the best notebook trial's values, printed the
    # score stored for that trial, on a line Katib's StdOut collector reads.
    best_here = max(ran_here, key=lambda t: t.value)
    recorded = next(l for l in text.splitlines() if l.startswith("recorded in the notebook: "))
    assert recorded == f"recorded in the notebook: trial #{best_here.number} score={best_here.value!r}"
    command = next(l for l in text.splitlines() if l.startswith("$ python3 katib-wine/trial.py "))
    assert command.split()[3:] == [f"--C={best_here.params['C']!r}", f"--solver={best_here.params['solver']}"]
    lines = text.split(command + "\n", 1)[1].splitlines()
    stamp, score = lines[0].split(" score=")
    datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # RFC 3339, as the collector parses it
    assert float(score) == best_here.value, lines[0]

    # The hand-written trials file came back into the stored study: both its trials, their values
    # and scores, named by the user attribute katib_trial; the best of them is the study's best,
    # and its values were injected.
    items = json.loads((tmp_path / "trials.json").read_text())["items"]
    expected = {i["metadata"]["name"]: ({a["name"]: a["value"] for a in i["spec"]["parameterAssignments"]},
                                        float(i["status"]["observation"]["metrics"][0]["latest"])) for i in items}
    imported = {t.user_attrs["katib_trial"]: t for t in trials if "katib_trial" in t.user_attrs}
    assert len(expected) == 2 and sorted(imported) == sorted(expected)
    for name, t in imported.items():
        params, value = expected[name]
        assert (t.state, t.value) == (optuna.trial.TrialState.COMPLETE, value)
        assert t.params == {"C": float(params["C"]), "solver": params["solver"]}
    best = _stored_best(tmp_path, "wine-katib")
    assert best.user_attrs.get("katib_trial") == max(expected, key=lambda n: expected[n][1])
    assert best.value > best_here.value
    line = next(l for l in text.splitlines() if l.startswith("injected: "))
    assert eval("dict(" + line[len("injected: "):] + ")") == best.params
    assert f"imported 2 Katib trials (2 complete); best {best.value:.6g} (trial #{best.number})." in text
    status = _text(next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%tune status")))
    assert "10/8 trials" in status and f"best {best.value:.6g} (#{best.number})" in status
    assert any(row.split()[:2] == [str(best.number), f"{best.value:.5f}"] for row in status.splitlines()), status


def test_tracking_notebook_logs_to_mlflow_warm_starts_a_constrained_study_compares_and_reports(
        tmp_path, mlflow_server, monkeypatch):
    import mlflow
    from sklearn.datasets import load_breast_cancer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    mlflow_server.wait_until_answering()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # the notebook's kernel inherits it
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"notebook-{tmp_path.name}")
    nb, text = _executed("tracking.ipynb", tmp_path)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    first = optuna.load_study(study_name="cancer-svm", storage=storage)

    # MLflow, read back from the server: the study's run, a nested run per trial with its knobs and
    # score, the refit model, which predicts as the best trial's model does.
    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(f"notebook-{tmp_path.name}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == ["cancer-svm", "cancer-svm-compact"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents["cancer-svm"].info.run_id]
    assert sorted(int(r.data.tags["hpt.trial"]) for r in children) == list(range(20))
    for run in children:
        trial = first.trials[int(run.data.tags["hpt.trial"])]
        assert run.data.metrics["value"] == trial.value
        assert float(run.data.params["C"]) == trial.params["C"] and float(run.data.params["gamma"]) == trial.params["gamma"]
    assert parents["cancer-svm"].data.metrics["best_value"] == first.best_value
    assert "MLflow run 'cancer-svm': 20 nested trial runs" in text and "model artifact: ['model']" in text
    model = mlflow.sklearn.load_model(f"runs:/{parents['cancer-svm'].info.run_id}/model")
    X, y = load_breast_cancer(return_X_y=True)
    best = first.best_trial
    expected = make_pipeline(StandardScaler(), SVC(C=best.params["C"], gamma=best.params["gamma"])).fit(X, y)
    assert (model.predict(X) == expected.predict(X)).all()

    # The constrained study: 20 trials carried over from the first, its best is the best feasible
    # (at most 60 support vectors, checked by fitting its model again), and it is injected.
    compact = optuna.load_study(study_name="cancer-svm-compact", storage=storage)
    own = [t for t in compact.trials if "hpt:copy_of" not in t.system_attrs]
    assert len(compact.trials) - len(own) == 20 and len(own) == 30
    assert "warm start: 20 trials carried over from cancer-svm, their best 3 tried first" in text
    feasible = [t for t in own if t.constraints["0"] <= 0]
    chosen = max(feasible, key=lambda t: (t.value, -t.number))  # the first of equals, as the run keeps it
    fitted = make_pipeline(StandardScaler(), SVC(C=chosen.params["C"], gamma=chosen.params["gamma"])).fit(X, y)
    assert fitted[-1].n_support_.sum() <= 60
    line = next(l for l in text.splitlines() if l.startswith("best feasible: "))
    assert line.startswith(f"best feasible: trial #{chosen.number - 20}, accuracy {chosen.value:.4f}")  # run-wide numbers
    assert f"{len(own) - len(feasible)} of 30 trials broke" in line

    # The saved notebook shows both dashboards finished: the first study ended during `%tune wait`,
    # whose cell sent its final state again (nbclient keeps only the messages of the running cell).
    import re

    widgets = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    headers = [re.sub("<[^>]+>", "", w["state"]["value"]) for w in widgets.values()
               if "hpt-header-main" in str(w["state"].get("value", ""))]
    for name, total in (("cancer-svm", 20), ("cancer-svm-compact", 30)):
        header = next(h for h in headers if h.startswith(f"{name} "))
        assert f"finished: budget reached ({total} trials)" in header, header

    # The comparison (text beside the widget) and the report on disk.
    compare = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%tune compare"))
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in compare.outputs)
    assert "Comparing cancer-svm, cancer-svm-compact" in shown and "same space" in shown
    report = tmp_path / "cancer-svm-compact.html"
    assert report.stat().st_size > 4e6 and "cancer-svm-compact" in report.read_text()
    assert f"report written to {report}" in text
