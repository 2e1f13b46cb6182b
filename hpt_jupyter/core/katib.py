"""A tuned cell as a Kubeflow Katib Experiment (``kubeflow.org/v1beta1``).

Work in progress: the Experiment's spec (objective, algorithm, parameters, counts, early
stopping, PBT, GPUs, trial template) from a run, with the refusals Katib's admission webhook
and suggestion services would give later. Still to come: ``trial.py``, requirements and
Dockerfile, ``%tune export``/``run.to_katib``, and importing a cluster's trials back.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import TuneError
from .space import ChoiceParam, FloatParam, IntParam, Param

# Our --sampler as Katib's algorithm (its default katib-config's names).
ALGORITHMS = {"tpe": "multivariate-tpe", "gp": "bayesianoptimization", "cmaes": "cmaes", "qmc": "sobol",
              "random": "random", "grid": "grid"}
METRIC = "score"  # the objective's metric name in the trial's output lines
CONTAINER = "training"
NAME_LIMIT = 40
PBT_NAME_LIMIT = 26  # PBT trial names and their parent labels add 37 characters; labels hold 63
CHECKPOINTS = "/var/log/katib/checkpoints/"


def katib_name(study: str, limit: int = NAME_LIMIT) -> str:
    """A name Katib accepts (``^[a-z]([-a-z0-9]*[a-z0-9])?$``, at most ``limit``), from the study's."""
    name = re.sub(r"[^a-z0-9]+", "-", study.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"hpt-{name}".rstrip("-")
    return name[:limit].rstrip("-")


def _number(value: float | int) -> str:
    """Katib reads every bound and setting as a string."""
    return repr(value) if isinstance(value, float) else str(value)


def parameter(param: Param, algorithm: str) -> dict[str, Any]:
    """One knob as a Katib parameter; a knob the algorithm cannot take is one TuneError."""
    if isinstance(param, ChoiceParam):
        for option in param.options:
            if not isinstance(option, (str, int, float, bool)) or option is None:
                raise TuneError(f"`{param.name}` chooses among {type(option).__name__} objects, which a Katib trial "
                                "receives only as text: choose among names (strings) and build the object in the "
                                "cell, then export.")
        return {"name": param.name, "parameterType": "categorical",
                "feasibleSpace": {"list": [str(label) for label in param.labels]}}
    kind = "double" if isinstance(param, FloatParam) else "int"
    space: dict[str, Any] = {"min": _number(param.low), "max": _number(param.high)}
    step = param.step if isinstance(param, FloatParam) else (param.step if param.step != 1 else None)
    if step is not None:
        space["step"] = _number(step)
    if algorithm == "bayesianoptimization" and kind == "double" and param.low <= 0:
        raise TuneError(f"Katib's bayesianoptimization samples every real knob on a log scale, so `{param.name}` "
                        f"in [{param.low:g}, {param.high:g}] cannot go to it: export with --sampler tpe.")
    if algorithm in ("grid", "pbt") and kind == "double" and step is None:
        raise TuneError(f"Katib's {algorithm} needs a step on every real knob: give `{param.name}` one "
                        f"(tune.float({param.low:g}, {param.high:g}, step=...)), then export.")
    if param.log and algorithm not in ("bayesianoptimization",):  # that one is log whatever it is told
        space["distribution"] = "logUniform"
    return {"name": param.name, "parameterType": kind, "feasibleSpace": space}


def searched_space(space: dict[str, Param], overrides: dict[str, Param]) -> tuple[dict[str, Param], list[str]]:
    """The space as the run searches it now (narrowed knobs at their narrowed ranges), and a
    note for each narrowed knob."""
    current, notes = {}, []
    for name, param in space.items():
        override = overrides.get(name)
        if override is None:
            current[name] = param
        elif isinstance(param, ChoiceParam) and isinstance(override, ChoiceParam):
            kept = tuple(i for i, label in enumerate(param.labels) if label in override.labels) or \
                tuple(range(len(param.labels)))
            current[name] = ChoiceParam(name, tuple(param.options[i] for i in kept),
                                        tuple(param.labels[i] for i in kept))
            notes.append(f"{name}: narrowed to {len(kept)} of {len(param.labels)} options")
        elif not isinstance(param, ChoiceParam) and not isinstance(override, ChoiceParam):
            low, high = max(param.low, override.low), min(param.high, override.high)
            if low > high:
                low, high = param.low, param.high
            current[name] = type(param)(name, low, high, param.log, param.step)
            notes.append(f"{name}: narrowed to [{low:g}, {high:g}] from [{param.low:g}, {param.high:g}]")
        else:
            current[name] = param
    return current, notes


def check_counts(max_trials: int, parallel: int, max_failed: int) -> None:
    if max_trials < 1 or parallel < 1 or max_failed < 0:
        raise TuneError(f"Katib needs at least one trial, one at a time and no negative failure count; got "
                        f"{max_trials}, {parallel}, {max_failed}.")


def experiment(*, name: str, namespace: str, direction: str, goal: float | None, algorithm: str,
               space: dict[str, Param], max_trials: int, parallel: int, max_failed: int, image: str,
               gpus_per_trial: float | None = None, median_stop: dict[str, int] | None = None,
               pbt: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Experiment as a plain dict (camelCase, as ``kubectl`` reads it)."""
    if not space:
        raise TuneError("The study has no knobs to export: run a trial first, so the space is known.")
    if algorithm == "cmaes" and sum(not isinstance(p, ChoiceParam) for p in space.values()) < 2:
        raise TuneError("Katib's cmaes needs two numeric knobs or more: export with --sampler tpe.")
    parallel = min(parallel, max_trials)
    max_failed = min(max_failed, max_trials)
    check_counts(max_trials, parallel, max_failed)
    parameters = [parameter(p, "pbt" if pbt is not None else algorithm) for p in space.values()]
    arguments = [f"--{p['name']}=${{trialParameters.{_trial_name(p['name'])}}}" for p in parameters]
    container: dict[str, Any] = {"name": CONTAINER, "image": image,
                                 "command": ["python3", "/app/trial.py", *arguments]}
    if gpus_per_trial is not None:
        if not float(gpus_per_trial).is_integer():
            raise TuneError(f"--gpus-per-trial {gpus_per_trial:g}: a Kubernetes pod gets whole GPUs; export with a "
                            "whole number.")
        container["resources"] = {"limits": {"nvidia.com/gpu": str(int(gpus_per_trial))}}
    if pbt is not None:
        container["command"].append(f"--checkpoints={CHECKPOINTS}")
    objective: dict[str, Any] = {"type": direction, "objectiveMetricName": METRIC}
    if goal is not None:
        objective["goal"] = float(goal)
    spec: dict[str, Any] = {
        "objective": objective,
        "algorithm": {"algorithmName": "pbt" if pbt is not None else algorithm},
        "parallelTrialCount": parallel,
        "maxTrialCount": max_trials,
        "maxFailedTrialCount": max_failed,
        "parameters": parameters,
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "trialTemplate": {
            "primaryContainerName": CONTAINER,
            "trialParameters": [{"name": _trial_name(p["name"]), "description": f"the knob {p['name']}",
                                 "reference": p["name"]} for p in parameters],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job",
                          "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}}},
        },
    }
    if median_stop is not None:
        spec["earlyStopping"] = {"algorithmName": "medianstop", "algorithmSettings": [
            {"name": key, "value": str(value)} for key, value in median_stop.items()]}
    if pbt is not None:
        population = max(5, int(pbt["population"]))  # Katib's PBT wants five members or more
        spec["resumePolicy"] = "FromVolume"
        spec["algorithm"]["algorithmSettings"] = [
            {"name": "suggestion_trial_dir", "value": CHECKPOINTS},
            {"name": "n_population", "value": str(population)},
            {"name": "truncation_threshold", "value": _number(float(pbt["quantile"]))},
        ]
    return {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _trial_name(knob: str) -> str:
    """A trial parameter's name: the knob's, without what Katib's placeholders cannot hold."""
    return re.sub(r"[{}]", "_", knob)


def grid_size(space: dict[str, Param]) -> int:
    """How many points Katib's grid has for this space (it refuses more trials than that)."""
    total = 1
    for param in space.values():
        if isinstance(param, ChoiceParam):
            total *= len(param.labels)
        elif isinstance(param, IntParam):
            total *= (param.high - param.low) // param.step + 1
        else:
            total *= math.floor((param.high - param.low) / param.step + 1e-9) + 1
    return total


_NUMERIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^(true|false|null|yes|no|on|off|~)$", re.IGNORECASE)


def to_yaml(document: dict[str, Any]) -> str:
    """YAML that kubectl reads back as this dict. A string that looks like a number or a boolean
    is quoted: PyYAML writes ``1e-05`` bare (YAML 1.1 reads it as text), but Kubernetes' YAML 1.2
    reader takes it for a number, and Katib's webhook then refuses the Experiment."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        style = '"' if _NUMERIC.match(value) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(document, Dumper=Dumper, sort_keys=False, default_flow_style=False)
