"""The tasks of the quality benchmark: synthetic functions with known optima, and scikit-learn
models cross-validated on datasets bundled with scikit-learn.

A task declares its knobs on an Optuna trial (``declare``) and scores the values it got
(``evaluate``); the two are apart so that the evaluation alone can be timed (Optuna samples a
trial's joint values at its first ``suggest_*``, inside the objective) and so that a synthetic
task can be evaluated at its known minimiser. Everything in a task is deterministic: the
models' ``random_state`` and the folds are fixed, so a configuration always gets the same score.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import optuna

Params = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """One benchmark problem. ``optimum`` and ``argmin`` are known for the synthetic tasks only."""

    name: str
    kind: str  # "synthetic" or "sklearn"
    declare: Callable[[optuna.Trial], Params]
    evaluate: Callable[[Params], float]
    about: str
    direction: str = "minimize"
    optimum: float | None = None
    argmin: Params | None = field(default=None, hash=False)


# --- synthetic functions ---------------------------------------------------------------

def branin(p: Params) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HARTMANN_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                        [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                               [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def _vector(p: Params, n: int) -> np.ndarray:
    return np.array([p[f"x{i}"] for i in range(n)], dtype=float)


def hartmann6(p: Params) -> float:
    x = _vector(p, 6)
    return float(-_HARTMANN_ALPHA @ np.exp(-(_HARTMANN_A * (x - _HARTMANN_P) ** 2).sum(axis=1)))


def rosenbrock5(p: Params) -> float:
    x = _vector(p, 5)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def styblinski_tang8(p: Params) -> float:
    x = _vector(p, 8)
    return float(0.5 * np.sum(x ** 4 - 16 * x ** 2 + 5 * x))


def _box(n: int, low: float, high: float) -> Callable[[optuna.Trial], Params]:
    def declare(trial: optuna.Trial) -> Params:
        return {f"x{i}": trial.suggest_float(f"x{i}", low, high) for i in range(n)}
    return declare


def declare_branin(trial: optuna.Trial) -> Params:
    return {"x1": trial.suggest_float("x1", -5, 10), "x2": trial.suggest_float("x2", 0, 15)}


MIXED_KINDS = ("quad", "abs", "flat")
MIXED_BRANCH_KNOB = {"quad": "shift", "abs": "scale", "flat": None}  # the knob each kind adds


def declare_mixed(trial: optuna.Trial) -> Params:
    """A categorical ``kind``, two shared knobs (a float and an int), and a knob that only
    ``quad`` (``shift``) or ``abs`` (``scale``, log scale) declares; ``flat`` adds none."""
    p: Params = {"kind": trial.suggest_categorical("kind", MIXED_KINDS),
                 "x": trial.suggest_float("x", -5, 5), "n": trial.suggest_int("n", 0, 10)}
    if p["kind"] == "quad":
        p["shift"] = trial.suggest_float("shift", -2, 2)
    elif p["kind"] == "abs":
        p["scale"] = trial.suggest_float("scale", 0.1, 10, log=True)
    return p


def mixed(p: Params) -> float:
    """Each branch is a sum of non-negative terms plus a floor, so its minimum is its floor:
    0 for ``quad`` (x=1.5, n=3, shift=0.5), 0.25 for ``abs`` (x=-2, n=7), 1 for ``flat``. The
    best branch is the narrowest to hit; ``abs`` is a wide, easy trap."""
    x, n = p["x"], p["n"]
    if p["kind"] == "quad":
        return 0.5 * (x - 1.5) ** 2 + 2 * (p["shift"] - 0.5) ** 2 + 0.1 * (n - 3) ** 2
    if p["kind"] == "abs":
        return 0.25 + 0.2 * p["scale"] * abs(x + 2) + 0.05 * abs(n - 7)
    return 1.0 + 0.01 * x ** 2


# --- scikit-learn models ---------------------------------------------------------------

FOLDS = 3


@functools.cache
def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Bundled datasets, loaded once per process. Digits is cut to 500 images (fixed draw) and
    scaled to [0, 1], to keep a trial cheap."""
    from sklearn import datasets

    if name == "digits":
        data = datasets.load_digits()
        rows = np.random.RandomState(0).choice(len(data.target), 500, replace=False)
        return data.data[rows] / 16.0, data.target[rows]
    loaded = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer,
              "diabetes": datasets.load_diabetes}[name]()
    return loaded.data, loaded.target


def cross_validated(model: Any, data: str, regression: bool = False) -> float:
    """Mean score over fixed folds (accuracy, or R² for regression), warnings quieted: a model
    that does not converge in its iterations is a legitimate, worse configuration."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    X, y = dataset(data)
    folds = (KFold if regression else StratifiedKFold)(FOLDS, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cross_val_score(model, X, y, cv=folds, scoring="r2" if regression else "accuracy").mean())


def declare_svc(trial: optuna.Trial) -> Params:
    return {"C": trial.suggest_float("C", 1e-2, 1e3, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4, 1.0, log=True)}


def svc_digits(p: Params) -> float:
    from sklearn.svm import SVC

    return cross_validated(SVC(C=p["C"], gamma=p["gamma"]), "digits")


def declare_boosting(trial: optuna.Trial) -> Params:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1.0, log=True),
            "max_iter": trial.suggest_int("max_iter", 10, 40),
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 2, 40),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True)}


def boosting_breast_cancer(p: Params) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return cross_validated(HistGradientBoostingClassifier(**p, early_stopping=False, random_state=0),
                           "breast_cancer")


def declare_mlp(trial: optuna.Trial) -> Params:
    return {"units": trial.suggest_int("units", 4, 128, log=True),
            "alpha": trial.suggest_float("alpha", 1e-6, 1.0, log=True),
            "learning_rate_init": trial.suggest_float("learning_rate_init", 1e-4, 0.3, log=True)}


def mlp_wine(p: Params) -> float:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = MLPClassifier((p["units"],), alpha=p["alpha"], learning_rate_init=p["learning_rate_init"],
                          max_iter=60, random_state=0)
    return cross_validated(make_pipeline(StandardScaler(), model), "wine")


def declare_knn(trial: optuna.Trial) -> Params:
    return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 40),
            "weights": trial.suggest_categorical("weights", ("uniform", "distance")),
            "p": trial.suggest_int("p", 1, 2)}  # p > 2 runs ~10x slower


def knn_digits(p: Params) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return cross_validated(KNeighborsClassifier(**p), "digits")


def declare_elastic_net(trial: optuna.Trial) -> Params:
    return {"alpha": trial.suggest_float("alpha", 1e-5, 10.0, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", 0.0, 1.0)}


def elastic_net_diabetes(p: Params) -> float:
    from sklearn.linear_model import ElasticNet
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    model = make_pipeline(PolynomialFeatures(2), ElasticNet(alpha=p["alpha"], l1_ratio=p["l1_ratio"], max_iter=2000))
    return cross_validated(model, "diabetes", regression=True)


# --- the suite -------------------------------------------------------------------------

_STYBLINSKI_TANG_X = -2.903534018185960  # the 1-D minimiser; the 1-D minimum is -39.16616570377142

TASKS: dict[str, Task] = {task.name: task for task in (
    Task("branin", "synthetic", declare_branin, branin, "Branin, 2-D", optimum=5 / (4 * math.pi),
         argmin={"x1": math.pi, "x2": 2.275}),
    Task("hartmann6", "synthetic", _box(6, 0, 1), hartmann6, "Hartmann, 6-D on [0, 1]^6",
         optimum=-3.322368011415515,
         argmin={f"x{i}": v for i, v in enumerate((0.20168952, 0.15001069, 0.47687398, 0.27533243,
                                                    0.31165162, 0.65730054))}),
    Task("rosenbrock5", "synthetic", _box(5, -2.048, 2.048), rosenbrock5, "Rosenbrock, 5-D on [-2.048, 2.048]^5",
         optimum=0.0, argmin={f"x{i}": 1.0 for i in range(5)}),
    Task("styblinski_tang8", "synthetic", _box(8, -5, 5), styblinski_tang8, "Styblinski-Tang, 8-D on [-5, 5]^8",
         optimum=8 * -39.16616570377142, argmin={f"x{i}": _STYBLINSKI_TANG_X for i in range(8)}),
    Task("mixed", "synthetic", declare_mixed, mixed,
         "categorical kind (3), float, int, and a knob per kind (conditional)", optimum=0.0,
         argmin={"kind": "quad", "x": 1.5, "n": 3, "shift": 0.5}),
    Task("svc_digits", "sklearn", declare_svc, svc_digits, "SVC (C, gamma; log) on 500 digits, accuracy",
         direction="maximize"),
    Task("hgb_breast_cancer", "sklearn", declare_boosting, boosting_breast_cancer,
         "HistGradientBoosting (5 knobs, 3 int) on breast cancer, accuracy", direction="maximize"),
    Task("mlp_wine", "sklearn", declare_mlp, mlp_wine,
         "MLP (units int, alpha, learning rate; log), scaled wine, accuracy", direction="maximize"),
    Task("knn_digits", "sklearn", declare_knn, knn_digits,
         "kNN (k int, weights categorical, p int) on 500 digits, accuracy", direction="maximize"),
    Task("enet_diabetes", "sklearn", declare_elastic_net, elastic_net_diabetes,
         "ElasticNet (alpha log, l1_ratio) on degree-2 features of diabetes, R²", direction="maximize"),
)}


class TimedObjective:
    """A task as an Optuna objective that clocks its evaluations alone: ``marks[k]`` is (seconds
    since ``begin()``, evaluation seconds so far) at the end of the k-th evaluation, so the rest,
    the sampler's and the loop's time, can be read off at any budget."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.marks: list[tuple[float, float]] = []
        self._evaluating = 0.0
        self._begun = time.perf_counter()

    def begin(self) -> None:
        self.marks.clear()
        self._evaluating = 0.0
        self._begun = time.perf_counter()

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.task.declare(trial)
        started = time.perf_counter()
        value = self.task.evaluate(params)
        ended = time.perf_counter()
        self._evaluating += ended - started
        self.marks.append((ended - self._begun, self._evaluating))
        return value


def value_at(task: Task, params: Params) -> tuple[float, Params]:
    """The task's value at ``params`` through its own declarations, and the knobs it declared."""
    trial = optuna.trial.FixedTrial(params)
    value = task.evaluate(task.declare(trial))
    return value, trial.params


def check_optima(n_random: int = 1000, seed: int = 0) -> list[str]:
    """What is wrong with the synthetic tasks' known optima (nothing: an empty list): each must
    be met at its minimiser, through the task's own declarations, and no random point may beat it."""
    problems = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for task in TASKS.values():
            if task.kind == "synthetic":
                problems += optimum_problems(task, n_random, seed)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return problems


def optimum_problems(task: Task, n_random: int = 1000, seed: int = 0) -> list[str]:
    """What is wrong with one synthetic task's known optimum (nothing: an empty list)."""
    assert task.optimum is not None and task.argmin is not None
    problems = []
    value, declared = value_at(task, task.argmin)
    if set(declared) != set(task.argmin):
        problems.append(f"{task.name}: the minimiser names {sorted(task.argmin)}, the task declares {sorted(declared)}")
    if abs(value - task.optimum) >= 1e-4:
        problems.append(f"{task.name}: f(argmin) = {value:.6f}, the known optimum is {task.optimum:.6f}")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(lambda trial: task.evaluate(task.declare(trial)), n_trials=n_random)
    if study.best_value < task.optimum - 1e-9:
        problems.append(f"{task.name}: a random point scores {study.best_value:.6f}, below the "
                        f"known optimum {task.optimum:.6f} ({study.best_params})")
    return problems
