"""--log mlflow against a real ``mlflow server`` (tests/mlflow_server.py): what lands there is read
back with MlflowClient and compared with the study's own trials."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from conftest import ROOT, wait_until
from kernel import Kernel
from mlflow_server import mlflow_server  # noqa: F401 - the session's MLflow server (a fixture)
from test_early_stopping import toy  # PBT's toy problem, in segments that checkpoint

from hpt_jupyter import TuneError, compile_cell, start, tune
from hpt_jupyter.core.pbt import PBT_KEY
from hpt_jupyter.core.tracking import TRACKING_EVENT, make_tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)

STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


@pytest.fixture(autouse=True, scope="module")
def _server_boots_meanwhile(mlflow_server):
    """Launch the server with the first test: it boots while the tests that need none run."""


def children(client: MlflowClient, parent: str) -> list:
    """The runs nested under ``parent``, by trial number."""
    experiment = client.get_run(parent).info.experiment_id
    found = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    return sorted(found, key=lambda r: int(r.data.tags["hpt.trial"]))


def text(value) -> str:
    return "none" if value is None else str(value)


def ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def tracking_events(run) -> list:
    seen = []
    run.subscribe(lambda event: seen.append(event.message) if event.kind == TRACKING_EVENT else None)
    return seen


def test_without_mlflow_or_with_a_bad_spec_it_is_one_line_before_any_study(tmp_path):
    for spec, message in [("bogus", "--log 'bogus' is not a tracker I know"),
                          ("mlflow:", "has no URI after the colon"),
                          ("mlflow:ftp://host/x", "MLflow takes no 'ftp:' tracking URI"),
                          ("mlflow:http://", "names no server")]:
        with pytest.raises(TuneError, match=message):
            make_tracker(spec)
    # MLflow missing, simulated in a fresh interpreter: sys.modules["mlflow"] = None makes every
    # `import mlflow` fail as if it were not installed (this venv has it, as the tests need it).
    script = textwrap.dedent("""
        import sys
        sys.modules["mlflow"] = None
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "hpt_jupyter")
        shell.run_cell("%%tune -n 2 --quiet\\nx = tune.float(0, 1)\\nx")  # a plain study works
        shell.run_cell("%tune wait")
        shell.run_cell("%%tune -n 2 --log mlflow --name wanted\\nx = tune.float(0, 1)\\nx")
        from hpt_jupyter import tune
        print("studies:", sorted(tune.runs))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if "Error" in line]
    assert errors == ["UsageError: --log mlflow needs MLflow: pip install 'hpt-jupyter[mlflow]'."], output
    assert "Traceback" not in output and "studies: ['x-" in done.stdout and "wanted" not in done.stdout
    assert "wanted" not in (tmp_path / "hpt_studies.journal").read_text()  # no study was touched


def test_refit_in_a_kernel_logs_the_best_model_and_bad_specs_are_one_line(mlflow_server, tmp_path):
    kernel = Kernel(str(tmp_path))
    try:
        setup = kernel.run("%load_ext hpt_jupyter\nfrom sklearn.datasets import load_iris\n"
                           "from sklearn.linear_model import LogisticRegression\nX, y = load_iris(return_X_y=True)")
        assert setup.error is None, setup.error_text
        bogus = kernel.run("%%tune -n 2 --log bogus\nC = tune.float(0.01, 10)\nC")
        assert bogus.error["ename"] == "UsageError" and bogus.stderr.strip() == f"UsageError: {bogus.error['evalue']}"
        assert "--log 'bogus' is not a tracker I know" in bogus.error["evalue"]
        assert "mlflow:URI" in bogus.error["evalue"] and "\n" not in bogus.error["evalue"]

        cell = kernel.run(f"%%tune -n 3 --log mlflow:{mlflow_server.uri} --refit --storage memory --sampler random "
                          "--seed 0 --name iris --quiet\n"
                          "C = tune.float(0.01, 10, log=True)\n"
                          "model = LogisticRegression(C=C, max_iter=500).fit(X, y)\n"
                          "model.score(X, y)")
        assert cell.error is None, cell.error_text
        waited = kernel.run("%tune wait iris")
        assert waited.error is None, waited.error_text
        done = kernel.value("(tune.last.tracker.flush(60), tune.last.tracker.parent_run_id, "
                            "tune.last.tracker.problem, model.C, model.predict(X[::10]).tolist())")
        assert done[3] == kernel.value("tune.last.best_params['C']")  # `model` is the refit best one
    finally:
        kernel.shutdown()
    flushed, parent, problem, best_c, predicted = done
    assert flushed and problem is None
    client = MlflowClient(mlflow_server.uri)
    assert [a.path for a in client.list_artifacts(parent, "model") if a.path.endswith("MLmodel")] == ["model/MLmodel"]
    import mlflow.sklearn
    from sklearn.datasets import load_iris

    model = mlflow.sklearn.load_model(client.download_artifacts(parent, "model", str(tmp_path)))
    X, _ = load_iris(return_X_y=True)
    assert model.C == best_c and model.predict(X[::10]).tolist() == predicted  # the refit best model
    assert len(children(client, parent)) == 3


def mixed_outcomes():
    """Every outcome, decided by the trial's number: a failure, a pruned curve, constraints."""
    x = tune.float(0.0, 1.0)
    kind = tune.choice(["linear", "square"])
    number = tune.trial.number
    if number % 5 == 2:
        raise ValueError(f"no good at trial {number}")
    for step in range(3):
        # the threshold pruner (upper=50) stops the curves lifted by 100 at their first report
        tune.report(x + step + (100 if number % 5 == 3 else 0), step)
    tune.constraint(x - 0.5)
    return x if kind == "linear" else x * x


def test_a_study_is_one_parent_run_with_a_nested_run_per_trial(mlflow_server):
    run = start(mixed_outcomes, n_trials=12, name="mixed", storage="memory", sampler="random", seed=3,
                pruner="threshold(upper=50)", report=False, log=f"mlflow:{mlflow_server.uri}", launch=False)
    events = tracking_events(run)
    run.start().wait()
    tracker = run.tracker
    assert tracker.flush(60) and tracker.problem is None and events == [] and tracker.dropped == []
    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(tracker.parent_run_id)
    assert tracker.describe() == f"MLflow at {mlflow_server.uri} · experiment hpt-jupyter · run {parent.info.run_id}"

    # the parent: the study's settings, its best as it improved, its end
    tags = parent.data.tags
    assert (parent.info.run_name, parent.info.status) == ("mixed", "FINISHED")
    assert client.get_experiment(parent.info.experiment_id).name == "hpt-jupyter"
    assert tags["hpt.study"] == "mixed" and tags["hpt.directions"] == "minimize"
    assert tags["hpt.sampler"] == run.sampler_text() == "random"
    assert tags["hpt.pruner"] == "threshold(upper=50)" and tags["hpt.scheduler"] == "none"
    assert (tags["hpt.budget"], tags["hpt.timeout"], tags["hpt.seed"]) == ("12", "none", "3")
    assert tags["hpt.store"] == run.store and run.store
    assert tags["hpt.space"].splitlines() == [f"{name} = {param.describe()}"
                                              for name, param in run.declared_space().items()]
    best = run.best_trial
    assert tags["hpt.best_trial"] == str(best.number)
    assert {k: tags[f"hpt.best.{k}"] for k in run.best_params} == {k: str(v) for k, v in run.best_params.items()}
    history = client.get_metric_history(parent.info.run_id, "best_value")
    feasible = [t for t in run.trials() if all(v <= 0 for v in t.constraints.values())]
    improvements, so_far = [], None
    for trial in sorted(feasible, key=lambda t: t.number):
        if so_far is None or trial.value < so_far:
            so_far = trial.value
            improvements.append((trial.number, trial.value))
    assert [(m.step, m.value) for m in history] == improvements and improvements[-1] == (best.number, best.value)

    # one nested run per trial, as the trial ended
    trials = run.trials(states=None)
    logged = children(client, parent.info.run_id)
    assert [int(r.data.tags["hpt.trial"]) for r in logged] == [t.number for t in trials] == list(range(12))
    assert {t.state for t in trials} == set(STATUS)  # each outcome is there to check
    failures = dict(run.failures)
    for trial, child in zip(trials, logged):
        info, data = child.info, child.data
        assert info.status == STATUS[trial.state], trial.number
        assert data.tags["hpt.state"] == {"FINISHED": "complete", "KILLED": "pruned", "FAILED": "failed"}[info.status]
        assert info.run_name == f"trial {trial.number}" and data.tags["hpt.study"] == "mixed"
        assert data.params == {k: str(v) for k, v in trial.params.items()}
        assert (info.start_time, info.end_time) == (ms(trial.datetime_start), ms(trial.datetime_complete))
        steps = client.get_metric_history(info.run_id, "intermediate_value")
        assert sorted((m.step, m.value) for m in steps) == sorted(trial.intermediate_values.items())
        assert data.metrics["duration_seconds"] == pytest.approx(
            (trial.datetime_complete - trial.datetime_start).total_seconds())
        if trial.state == TrialState.FAIL:
            assert data.tags["hpt.failure"] == failures[trial.number] == f"ValueError: no good at trial {trial.number}"
            assert "ValueError" in data.tags["hpt.traceback"] and "value" not in data.metrics
            continue
        assert data.metrics["value"] == pytest.approx(trial.value)
        if trial.state == TrialState.COMPLETE:
            assert data.metrics["constraint.0"] == pytest.approx(trial.constraints["0"])
            assert data.tags["hpt.feasible"] == ("true" if trial.constraints["0"] <= 0 else "false")


def test_log_refit_logs_torch_modules_and_leaves_out_unfitted_estimators_and_plain_values(mlflow_server, tmp_path):
    import mlflow.pytorch
    import torch
    from sklearn.linear_model import LinearRegression

    run = start(lambda: tune.float(0, 1, name="x"), n_trials=2, name="flavours", storage="memory", report=False,
                log=f"mlflow:{mlflow_server.uri}").wait()
    assert run.n_complete == 2
    net = torch.nn.Linear(3, 1)
    queued = run.tracker.log_refit({"net": net, "unfitted": LinearRegression(), "n": 3, "text": "x"})
    assert queued == ["net"] and run.tracker.flush(60) and run.tracker.dropped == []
    client = MlflowClient(mlflow_server.uri)
    local = client.download_artifacts(run.tracker.parent_run_id, "net", str(tmp_path))
    loaded = mlflow.pytorch.load_model(local)
    assert torch.equal(loaded.weight, net.weight) and torch.equal(loaded.bias, net.bias)
    assert client.get_run(run.tracker.parent_run_id).data.tags["hpt.model.net"] == "mlflow.pytorch"


def test_population_based_training_logs_each_segments_member_parent_and_steps(mlflow_server):
    run = start(toy, n_trials=15, name="pbt", storage="memory", direction="maximize", seed=1,
                scheduler="pbt(quantile=0.34)", population=3, interval=3, report=False, sampler="random",
                log=f"mlflow:{mlflow_server.uri}").wait()
    assert run.tracker.flush(60) and run.n_complete == 15
    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(run.tracker.parent_run_id)
    assert parent.data.tags["hpt.scheduler"] == "PBT · population 3 · every 3 steps"
    lineage = {segment.number: segment for segment in run.lineage()}
    assert any(s.exploited for s in lineage.values()), "no member cloned another: nothing to check"
    for child in children(client, parent.info.run_id):
        tags = child.data.tags
        segment = lineage[int(tags["hpt.trial"])]
        stored = run.trial(segment.number).user_attrs[PBT_KEY]
        assert (tags["hpt.pbt.member"], tags["hpt.pbt.parent"]) == (text(segment.member), text(segment.parent))
        assert (tags["hpt.pbt.member"], tags["hpt.pbt.parent"]) == (text(stored["member"]), text(stored["parent"]))
        assert (tags["hpt.pbt.start_step"], tags["hpt.pbt.end_step"]) == (str(segment.start), str(segment.end))
        assert tags["hpt.pbt.exploited"] == ("true" if segment.exploited else "false")
        assert tags["hpt.pbt.from_trial"] == text(segment.from_trial)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "intermediate_value")]
        assert sorted(steps) == list(range(segment.start, segment.end + 1))


SMALL = "x = tune.float(-2, 2)\n(x - 1) ** 2\n"


def test_a_resumed_study_logs_under_the_same_parent_and_only_its_new_trials(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)  # --log mlflow: the URI from there
    cell = compile_cell(SMALL, {"tune": tune})
    options = dict(name="resumed", storage="studies.journal", directory=str(tmp_path), sampler="random",
                   report=False)
    first = start(cell, n_trials=4, log="mlflow", **options).wait()
    assert first.tracker.flush(60)
    parent = first.tracker.parent_run_id
    client = MlflowClient(mlflow_server.uri)
    assert len(children(client, parent)) == 4

    again = start(cell, n_trials=7, mode="resume", log="mlflow", **options).wait()
    assert again.tracker.flush(60) and again.tracker.parent_run_id == parent
    logged = children(client, parent)
    assert [int(r.data.tags["hpt.trial"]) for r in logged] == list(range(7))  # trials 0-3 once each
    assert client.get_run(parent).info.status == "FINISHED"

    # trials run without --log are logged by the next run that logs
    start(cell, n_trials=9, mode="resume", **options).wait()
    last = start(cell, n_trials=10, mode="resume", log="mlflow", **options).wait()
    assert last.tracker.flush(60) and last.tracker.parent_run_id == parent
    logged = children(client, parent)
    assert [int(r.data.tags["hpt.trial"]) for r in logged] == list(range(10))
    stored = {t.number: t.params["x"] for t in last.trials(states=None)}
    assert {int(r.data.tags["hpt.trial"]): float(r.data.params["x"]) for r in logged} == stored


def test_a_server_that_goes_away_costs_no_trial_and_is_said_once(mlflow_server):
    n, each = 40, 0.3

    def slow():
        x = tune.float(0, 1)
        time.sleep(each)
        return x

    run = start(slow, n_trials=n, name="outage", storage="memory", sampler="random", report=False,
                log=f"mlflow:{mlflow_server.uri}", launch=False)
    events = tracking_events(run)
    run.start()
    client = MlflowClient(mlflow_server.uri)
    wait_until(lambda: run.tracker.parent_run_id and len(children(client, run.tracker.parent_run_id)) >= 5,
               "five trials logged")
    # Killed between requests, as most outages begin: a request cut off in flight is retried by
    # MLflow's client inside the call (2, 4, 8, 16 s apart) and said after SLOW_CALL seconds.
    assert run.tracker.flush(10)
    try:
        mlflow_server.kill()
        killed_at = run.n_finished
        wait_until(lambda: run.tracker.problem, "the outage to be said", timeout=20)
        time.sleep(3)
        assert run.n_finished > killed_at + 5  # the study went on meanwhile
    finally:
        mlflow_server.start()
    run.wait()
    assert run.n_complete == n and run.n_failed == 0
    assert run.elapsed < n * each + 8, run.elapsed  # its time is its trials' (the outage was ~10 s)
    assert run.tracker.flush(90), run.tracker.problem
    assert run.tracker.problem is None and run.tracker.dropped == []
    said = [message for message in events if message is not None]
    assert len(said) == 1 and f"MLflow at {mlflow_server.uri}" in said[0] and "retrying" in said[0], events
    assert events[-1] is None  # and said when it cleared
    logged = children(client, run.tracker.parent_run_id)
    assert [int(r.data.tags["hpt.trial"]) for r in logged] == list(range(n))  # each trial once
    assert all(r.info.status == "FINISHED" for r in logged)
    assert client.get_run(run.tracker.parent_run_id).info.status == "FINISHED"
