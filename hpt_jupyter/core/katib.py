"""A tuned cell as a Kubeflow Katib Experiment (``kubeflow.org/v1beta1``), and the cluster's
trials back into the study.

The Experiment (objective, algorithm, parameters, counts, early stopping, PBT, GPUs, a Job trial
template with the StdOut metrics collector) follows the rules Katib's admission webhook applies,
and refuses up front what its suggestion services would refuse only after the Experiment was
created. The trial is the cell itself (``katib_trial.py``), with the notebook values it reads.
"""

from __future__ import annotations

import math
import re
import types
from typing import Any, Collection

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
    # The trial prints every tune.report under the objective's name (median stopping compares
    # them), and its final score last: Katib's objective value is then the latest, as ours.
    objective: dict[str, Any] = {"type": direction, "objectiveMetricName": METRIC,
                                 "metricStrategies": [{"name": METRIC, "value": "latest"}]}
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


TRIAL_SCRIPT = '''"""One trial of the study {study}, as Katib runs it: python3 trial.py --KNOB=VALUE ...

The cell and the notebook values it reads are in cell.pkl, its space in space.json (written by
%tune export). Prints `TIMESTAMP score=VALUE` for each tune.report and for the final score.
"""

from hpt_jupyter.core.katib_trial import run_file

if __name__ == "__main__":
    run_file(__file__)
'''


def auto_algorithm(space: dict[str, Param], budget: int | None) -> tuple[str, str]:
    """What ``--sampler auto`` is on Katib: its Gaussian process (skopt's) where auto would run
    one and Katib's can take the space, else multivariate TPE."""
    numeric = all(not isinstance(p, ChoiceParam) for p in space.values())
    positive = all(p.low > 0 for p in space.values() if isinstance(p, FloatParam))
    if numeric and positive and (budget or 0) < 200:
        return "bayesianoptimization", "auto runs a Gaussian process on numeric knobs while trials are few"
    why = "knobs with choices" if not numeric else ("a real knob reaching 0 or below, which Katib's GP cannot "
                                                   "take" if not positive else "200 trials or more")
    return "multivariate-tpe", f"auto runs TPE here ({why})"


def _distributions(names: set[str]) -> list[str]:
    """``package==version`` for the imported top-level modules that come from installed
    distributions (the standard library needs none)."""
    from importlib import metadata

    found = metadata.packages_distributions()
    found.setdefault("hpt_jupyter", ["hpt-jupyter"])  # an editable install is not in that map
    pins = set()
    for module in names:
        for distribution in found.get(module, []):
            try:
                pins.add(f"{distribution}=={metadata.version(distribution)}")
            except metadata.PackageNotFoundError:
                continue
    return sorted(pins, key=str.lower)


def _modules_used(run: Any) -> set[str]:
    import ast

    modules = {"hpt_jupyter", "optuna", "cloudpickle"}
    cell = run.cell
    if cell is not None:
        for node in ast.walk(ast.parse(cell.code)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
        from .executors.shipping import names_read

        for name in names_read(cell.code):
            if name not in cell.namespace:
                continue
            value = cell.namespace[name]
            if isinstance(value, types.ModuleType):  # `import numpy as np`
                module = value.__name__
            elif isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):  # `from x import f`
                module = getattr(value, "__module__", "") or ""
            else:  # an instance: its class's package (a DataFrame: pandas)
                module = getattr(type(value), "__module__", "") or ""
            if module and module not in ("builtins", "__main__"):
                modules.add(module.split(".")[0])
    return modules


def export(run: Any, directory: str, *, image: str | None = None, namespace: str = "kubeflow",
           name: str | None = None) -> dict[str, str]:
    """Write ``directory/experiment.yaml``, ``trial.py``, ``cell.pkl``, ``space.json``,
    ``requirements.txt`` and ``Dockerfile``; returns their paths. Refusals come before anything
    is written."""
    import json
    import os
    import sys

    from .executors.shipping import ship
    from .pbt import PopulationScheduler

    try:
        import yaml  # noqa: F401 - the Experiment is written as YAML
    except ImportError:
        raise TuneError("Export for Katib writes YAML: pip install 'hpt-jupyter[katib]' (PyYAML).") from None
    if run.cell is None:
        raise TuneError("Export takes a %%tune cell (the cell is what the trial runs); this study's objective is "
                        "a Python function.")
    if run.is_multi_objective:
        raise TuneError("Katib optimises one metric; this study has "
                        f"{len(run.directions)} objectives. Export a study with one --direction.")
    space = run.effective_space()
    pbt = run.scheduler if isinstance(run.scheduler, PopulationScheduler) else None
    limit = PBT_NAME_LIMIT if pbt is not None else NAME_LIMIT
    experiment_name = katib_name(name or run.name, limit)
    comments = [f"Exported from the study '{run.name}' by hpt-jupyter's %tune export."]
    sampler = run.sampler_name
    if sampler == "auto":
        algorithm, why = auto_algorithm(space, run.budget)
        comments.append(f"--sampler auto is exported as Katib's {algorithm}: {why}.")
    elif sampler in ALGORITHMS:
        algorithm = ALGORITHMS[sampler]
    else:
        raise TuneError(f"--sampler {sampler} has no Katib counterpart; export with --sampler tpe, gp, cmaes, qmc, "
                        "random or grid.")
    for knob in run.overrides or {}:
        comments.append(f"{knob} is exported as narrowed in the notebook: {space[knob].describe()}.")
    partial = sorted(set(space) - set.intersection(*[set(t.params) for t in run.trials()] or [set(space)]))
    for knob in partial:
        comments.append(f"{knob} is declared by only some trials in the notebook; Katib samples it in every "
                        "trial (the cell ignores it where it does not declare it).")
    if run.max_failures is not None:
        comments.append(f"--max-failures {run.max_failures} ends a study after that many failures in a row; Katib's "
                        f"maxFailedTrialCount {run.max_failures} counts them in all.")
    median = None
    if run.pruner_name.startswith("median"):
        # Optuna's median pruner judges after n_startup_trials trials, from step n_warmup_steps + 1 on.
        pruner = run.study.pruner
        median = {"min_trials_required": max(1, int(getattr(pruner, "_n_startup_trials", 5))),
                  "start_step": max(1, int(getattr(pruner, "_n_warmup_steps", 0)) + 1)}
        comments.append(f"--pruner {run.pruner_name} is exported as Katib's medianstop (min_trials_required "
                        f"{median['min_trials_required']}, start_step {median['start_step']}).")
    elif run.pruner_name != "none":
        comments.append(f"--pruner {run.pruner_name} has no Katib counterpart: trials run to the end.")
    pbt_settings = None
    if pbt is not None:
        settings = pbt.settings
        pbt_settings = {"population": settings.population, "quantile": settings.quantile}
        if settings.population < 5:
            comments.append(f"Katib's PBT needs 5 members or more: --population {settings.population} is exported as 5.")
    for param in space.values():  # a knob the algorithm cannot take: one line before anything else
        parameter(param, "pbt" if pbt is not None else algorithm)
    budget = run.budget or max(run.n_finished, 1)
    if algorithm == "grid":
        budget = min(budget, grid_size(space))
    document = experiment(
        name=experiment_name, namespace=namespace, direction=run.directions[0], goal=run.target,
        algorithm=algorithm, space=space, max_trials=budget, parallel=run.executor.jobs,
        max_failed=run.max_failures if run.max_failures is not None else budget,
        image=image or f"{experiment_name}:latest",
        gpus_per_trial=run.executor.resources.gpus_per_trial, median_stop=median, pbt=pbt_settings)
    shipment = ship(run.cell.objective, 1, cell=run.cell)
    os.makedirs(directory, exist_ok=True)
    paths = {kind: os.path.join(directory, file) for kind, file in (
        ("experiment", "experiment.yaml"), ("trial", "trial.py"), ("cell", "cell.pkl"), ("space", "space.json"),
        ("requirements", "requirements.txt"), ("dockerfile", "Dockerfile"))}
    with open(paths["experiment"], "w") as out:
        out.write("".join(f"# {line}\n" for line in comments) + to_yaml(document))
    with open(paths["trial"], "w") as out:
        out.write(TRIAL_SCRIPT.format(study=run.name))
    with open(paths["cell"], "wb") as out:
        out.write(shipment.blob)
    with open(paths["space"], "w") as out:
        json.dump({knob: {"kind": "float" if isinstance(p, FloatParam) else "int" if isinstance(p, IntParam)
                          else "choice"} for knob, p in space.items()}, out, indent=1)
    with open(paths["requirements"], "w") as out:
        out.write("\n".join(_distributions(_modules_used(run))) + "\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"  # a pickled cell loads in the same Python
    with open(paths["dockerfile"], "w") as out:
        out.write(f"FROM python:{python}-slim\nWORKDIR /app\n"
                  "# requirements.txt pins hpt-jupyter: where your package index does not have it, put its\n"
                  "# wheel here (pip wheel --no-deps hpt-jupyter), COPY it in and pip install it first.\n"
                  "COPY requirements.txt .\n"
                  "RUN pip install --no-cache-dir -r requirements.txt\n"
                  "COPY trial.py cell.pkl space.json ./\n")
    return paths


# --- the cluster's trials, back into the study ------------------------------------------------

_STATES = {"Succeeded": "COMPLETE", "EarlyStopped": "PRUNED", "Failed": "FAIL", "Killed": "FAIL",
           "MetricsUnavailable": "FAIL"}


def _distribution(param: Param) -> Any:
    import optuna

    if isinstance(param, ChoiceParam):
        return optuna.distributions.CategoricalDistribution(param.labels)
    if isinstance(param, IntParam):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def _value_of(param: Param, text: str) -> Any:
    if isinstance(param, ChoiceParam):
        for label in param.labels:
            if str(label) == text:
                return label
        raise ValueError(f"{param.name}={text!r} is none of the options {list(param.labels)}")
    return int(text) if isinstance(param, IntParam) else float(text)


def read_trials(path: str, space: dict[str, Param], known: Collection[str] = ()) -> tuple[list[Any], int, int]:
    """The finished trials of a Katib trials file (``kubectl get trials -l
    katib.kubeflow.org/experiment=NAME -o json``, or a list of the SDK's trials, each optionally
    with an ``observationLog``: the SDK's ``get_trial_metrics`` list) as Optuna trials, and how
    many were left out because they had not finished or were ``known`` (imported before). A
    file that is not one is one TuneError."""
    import json

    import optuna
    from optuna.trial import TrialState

    from .storage import TRACEBACK_KEY

    hint = "save one with: kubectl get trials -l katib.kubeflow.org/experiment=NAME -o json > trials.json"
    try:
        with open(path) as source:
            document = json.load(source)
    except (OSError, ValueError) as error:
        raise TuneError(f"{path}: cannot read it as JSON ({error}); {hint}.") from None
    items = document.get("items") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise TuneError(f"{path}: no list of trials in it; {hint}.")
    trials, unfinished, again = [], 0, 0
    for k, item in enumerate(items):
        try:
            if item.get("kind", "Trial") != "Trial":
                raise ValueError(f"a {item.get('kind')}, not a Trial")
            name = item["metadata"]["name"]
            conditions = {c["type"] for c in item.get("status", {}).get("conditions", []) if c.get("status") == "True"}
            state = next((_STATES[c] for c in ("Succeeded", "EarlyStopped", "Failed", "Killed", "MetricsUnavailable")
                          if c in conditions), None)
            if state is None:
                unfinished += 1
                continue
            if name in known:  # imported before (a newer list of the same experiment)
                again += 1
                continue
            params = {}
            for assignment in item["spec"]["parameterAssignments"]:
                param = space.get(assignment["name"])
                if param is None:
                    raise ValueError(f"the knob {assignment['name']!r} is not in this study's space")
                params[param.name] = _value_of(param, str(assignment["value"]))
            metrics = {m["name"]: m for m in item.get("status", {}).get("observation", {}).get("metrics", [])}
            latest = metrics.get(METRIC, {}).get("latest")
            value = None
            if state == "COMPLETE":
                if latest in (None, "", "unavailable"):
                    state = "FAIL"
                else:
                    value = float(latest)
            log = [entry for entry in item.get("observationLog", []) if entry["metric"]["name"] == METRIC]
            reports = log[:-1] if state == "COMPLETE" else log  # a complete trial's last line is its score
            intermediate = {step: float(entry["metric"]["value"]) for step, entry in enumerate(reports, start=1)}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            detail = f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
            raise TuneError(f"{path}: trial {k} is not a Katib Trial this study can take ({detail}); {hint}.") from None
        user_attrs = {"katib_trial": name}
        if state == "FAIL":
            user_attrs[TRACEBACK_KEY] = f"Katib: {', '.join(sorted(conditions))}"
        trials.append(optuna.trial.create_trial(
            state=TrialState[state], value=value, params=params,
            distributions={n: _distribution(space[n]) for n in params}, user_attrs=user_attrs,
            intermediate_values=intermediate))
    return trials, unfinished, again
