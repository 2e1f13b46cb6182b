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
