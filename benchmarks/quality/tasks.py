"""The tasks of the quality benchmark: synthetic functions with known optima, and scikit-learn
models cross-validated on datasets bundled with scikit-learn.

Every task is in one of two groups. ``design`` tasks are the ones the design of ``auto`` may look
at and be tuned on (in-sample). ``held-out`` tasks (out-of-sample) were fixed on 2026-12-07 at
04:55 UTC, before any design of the new ``auto`` was tried, and must not be used to design it: they
show how the design generalises. Do not move a task between the groups.

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
GROUPS = ("design", "held-out")


@dataclass(frozen=True)
class Task:
    """One benchmark problem. ``optimum`` and ``argmin`` are known for the synthetic tasks only;
    ``group`` is ``design`` (in-sample) or ``held-out`` (out-of-sample)."""

    name: str
    kind: str  # "synthetic" or "sklearn"
    declare: Callable[[optuna.Trial], Params]
    evaluate: Callable[[Params], float]
    about: str
    direction: str = "minimize"
    optimum: float | None = None
    argmin: Params | None = field(default=None, hash=False)
    group: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"task {self.name}: group {self.group!r} is not one of {', '.join(GROUPS)}")


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


# the six synthetic functions added to the design group

def ackley(p: Params, n: int = 5) -> float:
    x = _vector(p, n)
    return float(-20 * np.exp(-0.2 * np.sqrt(np.mean(x ** 2))) - np.exp(np.mean(np.cos(2 * np.pi * x))) + 20 + np.e)


def levy(p: Params, n: int = 4) -> float:
    w = 1 + (_vector(p, n) - 1) / 4
    middle = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:-1] + 1) ** 2))
    return float(np.sin(np.pi * w[0]) ** 2 + middle + (w[-1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[-1]) ** 2))


def goldstein_price(p: Params) -> float:
    x1, x2 = p["x0"], p["x1"]
    a = 1 + (x1 + x2 + 1) ** 2 * (19 - 14 * x1 + 3 * x1 ** 2 - 14 * x2 + 6 * x1 * x2 + 3 * x2 ** 2)
    b = 30 + (2 * x1 - 3 * x2) ** 2 * (18 - 32 * x1 + 12 * x1 ** 2 + 48 * x2 - 36 * x1 * x2 + 27 * x2 ** 2)
    return a * b


def six_hump_camel(p: Params) -> float:
    x1, x2 = p["x0"], p["x1"]
    return (4 - 2.1 * x1 ** 2 + x1 ** 4 / 3) * x1 ** 2 + x1 * x2 + (-4 + 4 * x2 ** 2) * x2 ** 2


def declare_six_hump_camel(trial: optuna.Trial) -> Params:
    return {"x0": trial.suggest_float("x0", -3, 3), "x1": trial.suggest_float("x1", -2, 2)}


def michalewicz(p: Params, n: int = 5, m: int = 10) -> float:
    x = _vector(p, n)
    return float(-np.sum(np.sin(x) * np.sin(np.arange(1, n + 1) * x ** 2 / np.pi) ** (2 * m)))


def rastrigin(x: np.ndarray) -> float:
    return float(10 * len(x) + np.sum(x ** 2 - 10 * np.cos(2 * np.pi * x)))


def rastrigin4(p: Params) -> float:
    return rastrigin(_vector(p, 4))


# the held-out synthetic functions

_HARTMANN3_A = np.array([[3, 10, 30], [0.1, 10, 35], [3, 10, 30], [0.1, 10, 35]])
_HARTMANN3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])


def hartmann3(p: Params) -> float:
    x = _vector(p, 3)
    return float(-_HARTMANN_ALPHA @ np.exp(-(_HARTMANN3_A * (x - _HARTMANN3_P) ** 2).sum(axis=1)))


def griewank(p: Params, n: int = 6) -> float:
    x = _vector(p, n)
    return float(1 + np.sum(x ** 2) / 4000 - np.prod(np.cos(x / np.sqrt(np.arange(1, n + 1)))))


_SCHWEFEL_PEAK = 418.9828872724338  # the largest x sin(sqrt|x|) on [-500, 500], at x = 420.968746


def schwefel(p: Params, n: int = 3) -> float:
    x = _vector(p, n)
    return float(_SCHWEFEL_PEAK * n - np.sum(x * np.sin(np.sqrt(np.abs(x)))))


def dixon_price(p: Params, n: int = 5) -> float:
    x = _vector(p, n)
    return float((x[0] - 1) ** 2 + np.sum(np.arange(2, n + 1) * (2 * x[1:] ** 2 - x[:-1]) ** 2))


def powell(p: Params, n: int = 4) -> float:
    x = _vector(p, n).reshape(-1, 4).T
    return float(np.sum((x[0] + 10 * x[1]) ** 2 + 5 * (x[2] - x[3]) ** 2 + (x[1] - 2 * x[2]) ** 4
                        + 10 * (x[0] - x[3]) ** 4))


def zakharov(p: Params, n: int = 5) -> float:
    x = _vector(p, n)
    weighted = np.sum(0.5 * np.arange(1, n + 1) * x)
    return float(np.sum(x ** 2) + weighted ** 2 + weighted ** 4)


_SHEKEL_BETA = 0.1 * np.array([1, 2, 2, 4, 4, 6, 3, 7, 5, 5])
_SHEKEL_C = np.array([[4, 1, 8, 6, 3, 2, 5, 8, 6, 7], [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6],
                      [4, 1, 8, 6, 3, 2, 5, 8, 6, 7], [4, 1, 8, 6, 7, 9, 3, 1, 2, 3.6]])


def shekel10(p: Params) -> float:
    x = _vector(p, 4)
    return float(-np.sum(1 / (((x[:, None] - _SHEKEL_C) ** 2).sum(axis=0) + _SHEKEL_BETA)))


def step(p: Params, n: int = 5) -> float:
    """De Jong's step function: plateaus, where a small move changes nothing."""
    return float(np.sum(np.floor(_vector(p, n) + 0.5) ** 2))


INT_QUADRATIC_CENTRE = (3, 17, 25, 8, 12, 29)
INT_QUADRATIC_WEIGHT = (1, 2, 0.5, 3, 1, 1.5)


def declare_int_quadratic(trial: optuna.Trial) -> Params:
    return {f"x{i}": trial.suggest_int(f"x{i}", 0, 30) for i in range(len(INT_QUADRATIC_CENTRE))}


def int_quadratic(p: Params) -> float:
    return float(sum(w * (p[f"x{i}"] - c) ** 2
                     for i, (c, w) in enumerate(zip(INT_QUADRATIC_CENTRE, INT_QUADRATIC_WEIGHT))))


CONDITIONAL_BRANCHES = ("a", "b", "c")


def declare_conditional(trial: optuna.Trial) -> Params:
    """A categorical ``branch``, and knobs of that branch only: ``a`` two floats, ``b`` an int and
    a log-scaled float, ``c`` two floats (a 2-D Rastrigin)."""
    p: Params = {"branch": trial.suggest_categorical("branch", CONDITIONAL_BRANCHES)}
    if p["branch"] == "a":
        p |= {"a_x0": trial.suggest_float("a_x0", -5, 5), "a_x1": trial.suggest_float("a_x1", -5, 5)}
    elif p["branch"] == "b":
        p |= {"b_n": trial.suggest_int("b_n", 1, 20), "b_y": trial.suggest_float("b_y", 1e-3, 10, log=True)}
    else:
        p |= {"c_x0": trial.suggest_float("c_x0", -5.12, 5.12), "c_x1": trial.suggest_float("c_x1", -5.12, 5.12)}
    return p


def conditional(p: Params) -> float:
    """Floors 1 (``a``), 0.5 (``b``, at n=7, y=1) and 2 (``c``): the best branch is ``b``."""
    if p["branch"] == "a":
        return 1 + p["a_x0"] ** 2 + p["a_x1"] ** 2
    if p["branch"] == "b":
        return 0.5 + math.log10(p["b_y"]) ** 2 + ((p["b_n"] - 7) / 5) ** 2
    return 2 + rastrigin(np.array([p["c_x0"], p["c_x1"]]))


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


def declare_svc_kernel(trial: optuna.Trial) -> Params:
    return {"kernel": trial.suggest_categorical("kernel", ("rbf", "linear", "poly")),
            "C": trial.suggest_float("C", 1e-2, 1e3, log=True),
            "gamma": trial.suggest_float("gamma", 1e-4, 1.0, log=True)}


def svc_breast_cancer(p: Params) -> float:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return cross_validated(make_pipeline(StandardScaler(), SVC(**p)), "breast_cancer")


def declare_gradient_boosting(trial: optuna.Trial) -> Params:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1.0, log=True),
            "n_estimators": trial.suggest_int("n_estimators", 10, 150),
            "max_depth": trial.suggest_int("max_depth", 1, 5),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0)}


def gb_wine(p: Params) -> float:
    """The suite's dearest trial: about 0.6 s on one core (median), up to 2 s at 150 estimators.
    The ranges are those of the held-out list, fixed before the trials were timed."""
    from sklearn.ensemble import GradientBoostingClassifier

    return cross_validated(GradientBoostingClassifier(**p, random_state=0), "wine")


def declare_knn_scaled(trial: optuna.Trial) -> Params:
    return {"n_neighbors": trial.suggest_int("n_neighbors", 1, 50),
            "weights": trial.suggest_categorical("weights", ("uniform", "distance")),
            "p": trial.suggest_int("p", 1, 2)}


def knn_breast_cancer(p: Params) -> float:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return cross_validated(make_pipeline(StandardScaler(), KNeighborsClassifier(**p)), "breast_cancer")


# --- the suite -------------------------------------------------------------------------

_STYBLINSKI_TANG_X = -2.903534018185960  # the 1-D minimiser; the 1-D minimum is -39.16616570377142

TASKS: dict[str, Task] = {task.name: task for task in (
    Task("branin", "synthetic", declare_branin, branin, "Branin, 2-D", optimum=5 / (4 * math.pi),
         argmin={"x1": math.pi, "x2": 2.275}, group="design"),
    Task("hartmann6", "synthetic", _box(6, 0, 1), hartmann6, "Hartmann, 6-D on [0, 1]^6",
         optimum=-3.322368011415515,
         argmin={f"x{i}": v for i, v in enumerate((0.20168952, 0.15001069, 0.47687398, 0.27533243,
                                                    0.31165162, 0.65730054))}, group="design"),
    Task("rosenbrock5", "synthetic", _box(5, -2.048, 2.048), rosenbrock5, "Rosenbrock, 5-D on [-2.048, 2.048]^5",
         optimum=0.0, argmin={f"x{i}": 1.0 for i in range(5)}, group="design"),
    Task("styblinski_tang8", "synthetic", _box(8, -5, 5), styblinski_tang8, "Styblinski-Tang, 8-D on [-5, 5]^8",
         optimum=8 * -39.16616570377142, argmin={f"x{i}": _STYBLINSKI_TANG_X for i in range(8)}, group="design"),
    Task("mixed", "synthetic", declare_mixed, mixed,
         "categorical kind (3), float, int, and a knob per kind (conditional)", optimum=0.0,
         argmin={"kind": "quad", "x": 1.5, "n": 3, "shift": 0.5}, group="design"),
    Task("svc_digits", "sklearn", declare_svc, svc_digits, "SVC (C, gamma; log) on 500 digits, accuracy",
         direction="maximize", group="design"),
    Task("hgb_breast_cancer", "sklearn", declare_boosting, boosting_breast_cancer,
         "HistGradientBoosting (5 knobs, 3 int) on breast cancer, accuracy", direction="maximize", group="design"),
    Task("mlp_wine", "sklearn", declare_mlp, mlp_wine,
         "MLP (units int, alpha, learning rate; log), scaled wine, accuracy", direction="maximize", group="design"),
    Task("knn_digits", "sklearn", declare_knn, knn_digits,
         "kNN (k int, weights categorical, p int) on 500 digits, accuracy", direction="maximize", group="design"),
    Task("enet_diabetes", "sklearn", declare_elastic_net, elastic_net_diabetes,
         "ElasticNet (alpha log, l1_ratio) on degree-2 features of diabetes, R²", direction="maximize", group="design"),
    Task("ackley5", "synthetic", _box(5, -32.768, 32.768), ackley, "Ackley, 5-D on [-32.768, 32.768]^5",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(5)}, group="design"),
    Task("levy4", "synthetic", _box(4, -10, 10), levy, "Levy, 4-D on [-10, 10]^4",
         optimum=0.0, argmin={f"x{i}": 1.0 for i in range(4)}, group="design"),
    Task("goldstein_price", "synthetic", _box(2, -2, 2), goldstein_price, "Goldstein-Price, 2-D on [-2, 2]^2",
         optimum=3.0, argmin={"x0": 0.0, "x1": -1.0}, group="design"),
    Task("six_hump_camel", "synthetic", declare_six_hump_camel, six_hump_camel,
         "six-hump camel, 2-D on [-3, 3] x [-2, 2]", optimum=-1.0316284534898774,
         argmin={"x0": 0.08984200893527233, "x1": -0.712656403019058}, group="design"),
    Task("michalewicz5", "synthetic", _box(5, 0, math.pi), michalewicz, "Michalewicz (m = 10), 5-D on [0, pi]^5",
         optimum=-4.687658179088115,
         argmin={f"x{i}": v for i, v in enumerate((2.20290552510338, math.pi / 2, 1.284991567759378,
                                                    1.9230584803391402, 1.720469770233173))}, group="design"),
    Task("rastrigin4", "synthetic", _box(4, -5.12, 5.12), rastrigin4, "Rastrigin, 4-D on [-5.12, 5.12]^4",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(4)}, group="design"),
    # held out: fixed on 2026-12-07 at 04:55 UTC, before any design of the new auto was tried
    Task("hartmann3", "synthetic", _box(3, 0, 1), hartmann3, "Hartmann, 3-D on [0, 1]^3",
         optimum=-3.862779787332663,
         argmin={f"x{i}": v for i, v in enumerate((0.11458887133078371, 0.5556488955562107, 0.852546983879289))},
         group="held-out"),
    Task("griewank6", "synthetic", _box(6, -10, 10), griewank, "Griewank, 6-D on [-10, 10]^6",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(6)}, group="held-out"),
    Task("schwefel3", "synthetic", _box(3, -500, 500), schwefel, "Schwefel, 3-D on [-500, 500]^3",
         optimum=0.0, argmin={f"x{i}": 420.968746 for i in range(3)}, group="held-out"),
    Task("dixon_price5", "synthetic", _box(5, -10, 10), dixon_price, "Dixon-Price, 5-D on [-10, 10]^5",
         optimum=0.0, argmin={f"x{i}": 2 ** -((2 ** (i + 1) - 2) / 2 ** (i + 1)) for i in range(5)},
         group="held-out"),
    Task("powell4", "synthetic", _box(4, -4, 5), powell, "Powell, 4-D on [-4, 5]^4",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(4)}, group="held-out"),
    Task("zakharov5", "synthetic", _box(5, -5, 10), zakharov, "Zakharov, 5-D on [-5, 10]^5",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(5)}, group="held-out"),
    Task("shekel10", "synthetic", _box(4, 0, 10), shekel10, "Shekel (m = 10), 4-D on [0, 10]^4",
         optimum=-10.53644315348353,
         argmin={f"x{i}": v for i, v in enumerate((4.000746866658956, 3.9995094808675886, 4.000746866997999,
                                                    3.9995094822423836))}, group="held-out"),
    Task("step5", "synthetic", _box(5, -5.12, 5.12), step, "De Jong step (plateaus), 5-D on [-5.12, 5.12]^5",
         optimum=0.0, argmin={f"x{i}": 0.0 for i in range(5)}, group="held-out"),
    Task("int_quadratic6", "synthetic", declare_int_quadratic, int_quadratic,
         "weighted quadratic in six ints in [0, 30]", optimum=0.0,
         argmin={f"x{i}": c for i, c in enumerate(INT_QUADRATIC_CENTRE)}, group="held-out"),
    Task("conditional3", "synthetic", declare_conditional, conditional,
         "categorical branch (3), each with its own two knobs (floats, an int, a log float)", optimum=0.5,
         argmin={"branch": "b", "b_n": 7, "b_y": 1.0}, group="held-out"),
    Task("svc_breast_cancer", "sklearn", declare_svc_kernel, svc_breast_cancer,
         "SVC (kernel categorical, C, gamma; log), scaled breast cancer, accuracy", direction="maximize",
         group="held-out"),
    Task("gb_wine", "sklearn", declare_gradient_boosting, gb_wine,
         "GradientBoosting (learning rate log, 2 int, subsample) on wine, accuracy", direction="maximize",
         group="held-out"),
    Task("knn_breast_cancer", "sklearn", declare_knn_scaled, knn_breast_cancer,
         "kNN (k int, weights categorical, p int), scaled breast cancer, accuracy", direction="maximize",
         group="held-out"),
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
