"""The Katib export, checked offline against Katib's own definitions (no cluster runs here):
the Experiment models of Katib's API package, and the rules its admission webhook applies
(pkg/webhook/v1beta1/experiment/validator/validator.go), restated in ``webhook_problems``."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from hpt_jupyter import TuneError
from hpt_jupyter.core.katib import experiment, katib_name, to_yaml
from hpt_jupyter.core.space import ChoiceParam, FloatParam, IntParam

KNOWN_ALGORITHMS = {"random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol",
                    "multivariate-tpe", "pbt"}  # katib-config's default suggestions


def webhook_problems(document: dict) -> list[str]:
    """What Katib's validating webhook would refuse in this Experiment."""
    problems = []
    name = document["metadata"]["name"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        problems.append(f"name {name!r}")
    spec = document["spec"]
    if spec["maxTrialCount"] <= 0 or spec["parallelTrialCount"] <= 0 or spec["maxFailedTrialCount"] < 0:
        problems.append("counts")
    if spec["parallelTrialCount"] > spec["maxTrialCount"] or spec["maxFailedTrialCount"] > spec["maxTrialCount"]:
        problems.append("counts above maxTrialCount")
    if spec["objective"]["type"] not in ("minimize", "maximize") or not spec["objective"]["objectiveMetricName"]:
        problems.append("objective")
    if spec["algorithm"]["algorithmName"] not in KNOWN_ALGORITHMS:
        problems.append("algorithm")
    for p in spec["parameters"]:
        space = p["feasibleSpace"]
        if p["parameterType"] in ("double", "int") and ("list" in space or "min" not in space or "max" not in space):
            problems.append(f"{p['name']}: min/max")
        if p["parameterType"] == "categorical" and set(space) & {"min", "max", "step"}:
            problems.append(f"{p['name']}: list")
        if any(not isinstance(v, str) for k, v in space.items() if k != "list") or \
                any(not isinstance(v, str) for v in space.get("list", [])):
            problems.append(f"{p['name']}: values must be strings")
    template = spec["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    declared = [t["name"] for t in template["trialParameters"]]
    for t in template["trialParameters"]:
        if f"${{trialParameters.{t['name']}}}" not in text:
            problems.append(f"{t['name']} declared, not used")
    for used in re.findall(r"\$\{trialParameters\.(.+?)\}", text):
        if used not in declared:
            problems.append(f"{used} used, not declared")
    if sorted(t["reference"] for t in template["trialParameters"]) != sorted(p["name"] for p in spec["parameters"]):
        problems.append("every parameter referenced once")
    if "name" in template["trialSpec"].get("metadata", {}):
        problems.append("Job metadata.name")
    return problems


SPACE = {"lr": FloatParam("lr", 1e-5, 1e-1, True, None), "depth": IntParam("depth", 1, 8, False, 1),
         "kernel": ChoiceParam("kernel", ("rbf", "linear"), ("rbf", "linear"))}


def _experiment(**changes):
    options = dict(name=katib_name("C-kernel-gamma-1a2b3c"), namespace="kubeflow", direction="maximize", goal=0.99,
                   algorithm="multivariate-tpe", space=SPACE, max_trials=40, parallel=2, max_failed=5, image="x:1")
    options.update(changes)
    return experiment(**options)


def test_the_experiment_round_trips_through_katibs_models_and_passes_its_webhook():
    from kubeflow_katib_api.models import V1beta1Experiment

    document = _experiment(gpus_per_trial=1, median_stop={"min_trials_required": 3, "start_step": 4})
    assert webhook_problems(document) == []
    loaded = yaml.safe_load(to_yaml(document))
    assert loaded == document  # strings that look like numbers stay strings in YAML
    assert V1beta1Experiment.from_dict(loaded).to_dict() == document


@pytest.mark.parametrize("study, expected", [("C-kernel-gamma-1a2b3c", "c-kernel-gamma-1a2b3c"),
                                             ("9 lives", "hpt-9-lives"), ("x" * 60, "x" * 40)])
def test_names_follow_katibs_rules(study, expected):
    assert katib_name(study) == expected


def test_what_katib_cannot_take_is_one_line():
    with pytest.raises(TuneError, match="log scale"):
        _experiment(algorithm="bayesianoptimization", space={"x": FloatParam("x", -1, 1, False, None)})
    with pytest.raises(TuneError, match="needs a step"):
        _experiment(algorithm="grid")
    with pytest.raises(TuneError, match="whole GPUs"):
        _experiment(gpus_per_trial=0.5)
    with pytest.raises(TuneError, match="text"):
        _experiment(space={"model": ChoiceParam("model", (object(),), ("object",))})


# --- a tuned cell, exported and replayed ----------------------------------------------------

KATIB_LINE = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")  # the StdOut collector's filter

CELL = """%%tune -n 4 --seed 0 --name Katib_Demo --storage memory --direction maximize --quiet --jobs 2 --target 0.5
x = tune.float(0.01, 1, log=True)
kind = tune.choice(["a", "b"])
for step in range(1, 4):
    tune.report(-(x - offset[0]) ** 2 * step, step)
-(x - offset[0]) ** 2 + (0.1 if kind == "a" else 0.0)
"""


def test_a_tuned_cell_exports_as_an_experiment_whose_trial_replays_a_notebook_trial(kernel, tmp_path):
    import subprocess
    import sys
    from datetime import datetime

    from kubernetes.client import ApiClient
    from kubeflow_katib_api.models import V1beta1Experiment

    assert kernel.run("import numpy as np\noffset = np.array([0.25])").error is None
    assert kernel.run(CELL).error is None
    assert kernel.run("%tune wait Katib_Demo").error is None
    folder = tmp_path / "katib"
    reply = kernel.run(f"%tune export Katib_Demo --katib {folder} --image registry.example/demo:1")
    assert reply.error is None, reply.error_text
    assert "exported for Katib" in reply.stdout and "kubectl apply -f" in reply.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["Dockerfile", "cell.pkl", "experiment.yaml",
                                                          "requirements.txt", "space.json", "trial.py"]

    document = yaml.safe_load((folder / "experiment.yaml").read_text())
    assert webhook_problems(document) == []
    assert V1beta1Experiment.from_dict(document).to_dict() == document
    spec = document["spec"]
    assert document["metadata"]["name"] == "katib-demo"
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "score", "goal": 0.5,
                                 "metricStrategies": [{"name": "score", "value": "latest"}]}
    assert spec["parallelTrialCount"] == 2 and spec["maxTrialCount"] == 4 and spec["maxFailedTrialCount"] == 4
    x, kind = spec["parameters"]
    assert x["parameterType"] == "double" and x["feasibleSpace"]["distribution"] == "logUniform"
    assert float(x["feasibleSpace"]["min"]) == 0.01 and float(x["feasibleSpace"]["max"]) == 1
    assert kind == {"name": "kind", "parameterType": "categorical", "feasibleSpace": {"list": ["a", "b"]}}
    job = spec["trialTemplate"]["trialSpec"]
    assert ApiClient().sanitize_for_serialization(ApiClient()._ApiClient__deserialize(job, "V1Job")) == job
    assert "kubectl" not in (folder / "Dockerfile").read_text()
    requirements = (folder / "requirements.txt").read_text().split()
    for package in ("numpy", "optuna", "hpt-jupyter", "cloudpickle"):  # what loading the cell needs
        assert any(r.lower().startswith(f"{package}==") for r in requirements), (package, requirements)

    # The exported trial, in a fresh interpreter, with a notebook trial's values: the same score.
    trial = kernel.value("(lambda t: (t.params, t.value))(tune.runs['Katib_Demo'].trials()[1])")
    params, value = trial
    arguments = [f"--x={params['x']!r}", f"--kind={params['kind']}"]
    done = subprocess.run([sys.executable, str(folder / "trial.py"), *arguments], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4  # three reports, then the score
    for line in lines:
        stamp, rest = line.split(" ", 1)
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # RFC 3339, as the collector parses it
        assert [m[0] for m in KATIB_LINE.findall(rest)] == ["score"]
    assert float(KATIB_LINE.findall(lines[-1])[0][1]) == pytest.approx(value, rel=1e-12)

    failed = subprocess.run([sys.executable, str(folder / "trial.py"), "--x=0.5", "--kind=c"],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "`kind`='c' is none of the cell's options" in failed.stderr


def _katib_trial(name: str, x: float, kind: str, condition: str, score: str | None = None, log=()) -> dict:
    """A Trial as `kubectl get trials -o json` lists it, built here from Katib's own model (not
    recorded from a cluster: none runs here)."""
    from kubeflow_katib_api.models import V1beta1Trial

    trial = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial",
             "metadata": {"name": name, "labels": {"katib.kubeflow.org/experiment": "katib-demo"}},
             "spec": {"parameterAssignments": [{"name": "x", "value": repr(x)}, {"name": "kind", "value": kind}]},
             "status": {"conditions": [{"type": "Created", "status": "True"},
                                       {"type": "Running", "status": "False" if condition != "Running" else "True"},
                                       *([{"type": condition, "status": "True"}] if condition != "Running" else [])]}}
    if score is not None:
        trial["status"]["observation"] = {"metrics": [{"name": "score", "latest": score, "min": score, "max": score}]}
    built = V1beta1Trial.from_dict(trial).model_dump(mode="json", by_alias=True, exclude_none=True)
    if log:
        built["observationLog"] = [{"time_stamp": f"2026-12-07T10:00:0{i}Z", "metric": {"name": "score", "value": v}}
                                   for i, v in enumerate(log)]
    return built


def test_a_clusters_trials_come_back_into_the_study_and_their_best_is_injected(kernel, tmp_path):
    assert kernel.run("import numpy as np\noffset = np.array([0.25])").error is None
    assert kernel.run(CELL.replace("--quiet", "--quiet --refit")).error is None
    assert kernel.run("%tune wait Katib_Demo").error is None
    before = kernel.value("tune.runs['Katib_Demo'].best_value")
    trials = [_katib_trial("katib-demo-a1", 0.25, "a", "Succeeded", "0.1", log=["-0.01", "-0.02", "-0.03", "0.1"]),
              _katib_trial("katib-demo-b2", 0.5, "b", "Succeeded", "-0.0625"),
              _katib_trial("katib-demo-c3", 0.9, "a", "Failed"),
              _katib_trial("katib-demo-d4", 0.3, "b", "EarlyStopped", log=["-0.01", "-0.02"]),
              _katib_trial("katib-demo-e5", 0.4, "a", "Running")]
    path = tmp_path / "trials.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": trials}))
    reply = kernel.run(f"%tune import Katib_Demo --katib {path}")
    assert reply.error is None, reply.error_text
    assert "'Katib_Demo': imported 4 Katib trials (2 complete, 1 pruned, 1 fail); 1 had not finished and were " \
           "left out; best 0.1 (trial #4)." in reply.stdout
    assert before < 0.1
    assert kernel.value("(tune.runs['Katib_Demo'].n_complete, tune.runs['Katib_Demo'].n_pruned, "
                        "tune.runs['Katib_Demo'].n_failed)") == (6, 1, 1)
    imported = kernel.value("[(t.number, t.params, t.intermediate_values, t.user_attrs.get('katib_trial')) "
                            "for t in tune.runs['Katib_Demo'].trials(states=None)[4:]]")
    assert imported[0] == (4, {"x": 0.25, "kind": "a"}, {1: -0.01, 2: -0.02, 3: -0.03}, "katib-demo-a1")
    assert imported[3][2] == {1: -0.01, 2: -0.02}  # an early-stopped trial keeps its curve
    assert kernel.value("(x, kind)") == (0.25, "a")  # the cluster's best, injected
    assert "Injected x=0.25, kind='a'. Refit: the cell ran once more" in reply.stdout
    assert "8/4 trials · best 0.1 (#4)" in kernel.run("%tune status Katib_Demo").stdout

    # A newer list of the same experiment: what came before is not imported twice.
    trials.append(_katib_trial("katib-demo-f6", 0.2, "b", "Succeeded", "0.05"))
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": trials}))
    again = kernel.run(f"%tune import Katib_Demo --katib {path}")
    assert "imported 1 Katib trials (1 complete); 1 had not finished and were left out; 4 imported before were " \
           "skipped" in again.stdout, again.stdout
    assert kernel.value("len(tune.runs['Katib_Demo'].trials(states=None))") == 9

    path.write_text(json.dumps({"items": [{"kind": "Trial", "metadata": {"name": "t"}, "spec": {},
                                           "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}]}))
    reply = kernel.run(f"%tune import Katib_Demo --katib {path}")
    assert reply.error is not None and "trial 0 is not a Katib Trial this study can take" in reply.error["evalue"]


# --- every mapping row and every refusal, through the run API --------------------------------

def _exported(tmp_path, body: str, namespace: dict | None = None, **options) -> dict:
    from hpt_jupyter import start
    from hpt_jupyter.core.cell import compile_cell

    options = {"n_trials": 3, "storage": "memory", "report": False, "seed": 0, **options}
    run = start(compile_cell(body, namespace or {}), **options).wait()
    folder = tmp_path / f"export-{len(list(tmp_path.iterdir()))}"
    run.to_katib(str(folder), image="img:1")
    text = (folder / "experiment.yaml").read_text()
    document = yaml.safe_load(text)
    assert webhook_problems(document) == [], webhook_problems(document)
    from kubeflow_katib_api.models import V1beta1Experiment

    assert V1beta1Experiment.from_dict(document).to_dict() == document
    document["comments"] = [line[2:] for line in text.splitlines() if line.startswith("# ")]
    return document


NUMERIC = "a = tune.float(0.1, 1.0)\nb = tune.int(1, 9, step=2)\nc = tune.float(1e-4, 1.0, log=True)\na * b * c"


@pytest.mark.parametrize("sampler, algorithm", [("tpe", "multivariate-tpe"), ("gp", "bayesianoptimization"),
                                                ("cmaes", "cmaes"), ("qmc", "sobol"), ("random", "random")])
def test_each_sampler_exports_as_katibs_algorithm(tmp_path, sampler, algorithm):
    document = _exported(tmp_path, NUMERIC, sampler=sampler)
    assert document["spec"]["algorithm"] == {"algorithmName": algorithm}
    a, b, c = document["spec"]["parameters"]
    assert a == {"name": "a", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "1.0"}}
    assert b == {"name": "b", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "9", "step": "2"}}
    # Katib's GP samples every real knob on a log scale whatever it is told: no distribution there.
    assert c["feasibleSpace"].get("distribution") == (None if algorithm == "bayesianoptimization" else "logUniform")


def test_auto_grid_median_pbt_and_gpus_map_to_their_katib_settings(tmp_path, monkeypatch):
    auto = _exported(tmp_path, NUMERIC)
    assert auto["spec"]["algorithm"]["algorithmName"] == "bayesianoptimization"
    assert any(c.startswith("--sampler auto is exported as Katib's bayesianoptimization") for c in auto["comments"])
    mixed = _exported(tmp_path, "k = tune.choice(['x', 'y'])\nv = tune.float(-1, 1)\nv")
    assert mixed["spec"]["algorithm"]["algorithmName"] == "multivariate-tpe"

    grid = _exported(tmp_path, "a = tune.float(0, 1, step=0.5)\nk = tune.choice(['x', 'y'])\na", sampler="grid",
                     n_trials=None)
    assert grid["spec"]["algorithm"]["algorithmName"] == "grid" and grid["spec"]["maxTrialCount"] == 6

    median = _exported(tmp_path, "a = tune.float(0, 1)\nfor s in range(5):\n    tune.report(a * s, s)\na",
                       pruner="median(n_startup_trials=3, n_warmup_steps=2)")
    assert median["spec"]["earlyStopping"] == {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "3"}]}

    pbt = _exported(tmp_path, "lr = tune.float(0.01, 1.0, step=0.01)\nstate = tune.restore()\n"
                              "for s in range(1, 5):\n    tune.checkpoint(s)\n    tune.report(lr * s, s)\nlr",
                    scheduler="pbt", population=4, interval=2, n_trials=8, name="a-pbt-study-with-a-long-name")
    spec = pbt["spec"]
    assert spec["resumePolicy"] == "FromVolume" and len(pbt["metadata"]["name"]) <= 26
    assert spec["algorithm"] == {"algorithmName": "pbt", "algorithmSettings": [
        {"name": "suggestion_trial_dir", "value": "/var/log/katib/checkpoints/"},
        {"name": "n_population", "value": "5"}, {"name": "truncation_threshold", "value": "0.25"}]}
    command = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "--checkpoints=/var/log/katib/checkpoints/"
    assert any("--population 4 is exported as 5" in c for c in pbt["comments"])

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    gpus = _exported(tmp_path, NUMERIC, gpus_per_trial=1, jobs=2, backend="thread")
    container = gpus["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert gpus["spec"]["parallelTrialCount"] == 2


def test_a_narrowed_space_and_knobs_of_some_trials_are_said_in_comments(tmp_path):
    from hpt_jupyter import start
    from hpt_jupyter.core.cell import compile_cell

    body = "k = tune.choice(['lin', 'rbf'])\ng = tune.float(0.1, 10.0, log=True) if k == 'rbf' else 1.0\ng"
    run = start(compile_cell(body, {}), n_trials=6, storage="memory", report=False, seed=1).wait()
    run.narrow(g=(0.5, 5.0))
    run.to_katib(str(tmp_path / "k"), image="i:1")
    text = (tmp_path / "k" / "experiment.yaml").read_text()
    document = yaml.safe_load(text)
    g = next(p for p in document["spec"]["parameters"] if p["name"] == "g")
    assert (float(g["feasibleSpace"]["min"]), float(g["feasibleSpace"]["max"])) == (0.5, 5.0)
    assert "# g is exported as narrowed in the notebook" in text
    assert "# g is declared by only some trials in the notebook; Katib samples it in every trial" in text


@pytest.mark.parametrize("body, options, message", [
    ("a = tune.float(0, 1)\n(a, 1 - a)", dict(direction=["minimize", "maximize"]), "Katib optimises one metric"),
    ("m = tune.choice([dict, list])\n1.0", {}, "chooses among type objects"),
    ("a = tune.float(-1, 1)\na", dict(sampler="gp"), "samples every real knob on a log scale"),
    ("a = tune.float(0, 1)\na", dict(sampler="cmaes"), "needs two numeric knobs"),
    ("a = tune.float(0, 1)\na", dict(sampler="nsga2"), "has no Katib counterpart"),
    ("a = tune.float(0, 1)\na", dict(sampler="grid", search_space={"a": [0.0, 1.0]}), "needs a step"),
    ("a = tune.float(0, 1)\nwith lock:\n    b = a\nb", dict(namespace={"lock": __import__("threading").Lock()}),
     "cannot be sent to a worker process"),
])
def test_what_katib_cannot_run_is_refused_before_anything_is_written(tmp_path, body, options, message):
    from hpt_jupyter import start
    from hpt_jupyter.core.cell import compile_cell

    namespace = options.pop("namespace", {})
    run = start(compile_cell(body, namespace), n_trials=2, storage="memory", report=False, **options).wait()
    with pytest.raises(TuneError, match=re.escape(message)):
        run.to_katib(str(tmp_path / "out"), image="i:1")
    assert not (tmp_path / "out").exists()


def test_the_exported_trial_keeps_its_pbt_checkpoint_in_the_folder_katib_mounts(tmp_path):
    import subprocess
    import sys

    body = ("lr = tune.float(0.1, 1.0, step=0.1)\nstate = tune.restore()\nstep = 0 if state is None else state\n"
            "for _ in range(2):\n    step += 1\n    tune.checkpoint(step)\n    tune.report(lr * step, step)\nlr * step")
    from hpt_jupyter import start
    from hpt_jupyter.core.cell import compile_cell

    run = start(compile_cell(body, {}), n_trials=4, storage="memory", report=False, scheduler="pbt",
                population=2, interval=2).wait()
    run.to_katib(str(tmp_path / "pbt"), image="i:1")
    checkpoints = tmp_path / "member"
    scores = []
    for _ in range(2):  # a member's two segments: the second goes on from the first's checkpoint
        done = subprocess.run([sys.executable, str(tmp_path / "pbt" / "trial.py"), "--lr=0.5",
                               f"--checkpoints={checkpoints}"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        scores.append(float(done.stdout.strip().splitlines()[-1].split("score=")[1]))
    assert scores == [1.0, 2.0] and (checkpoints / "checkpoint.pkl").exists()
