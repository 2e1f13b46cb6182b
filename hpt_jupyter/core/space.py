"""The inline search space: ``tune.float``, ``tune.int``, ``tune.choice`` and the trial context.

A declaration is validated when it is made; inside a trial it becomes Optuna's
``suggest_*`` call with the same arguments, so a named sampler sees exactly what it
would see from a hand-written objective.
"""

from __future__ import annotations

import math
import numbers
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import optuna

from ..errors import TuneError
from .naming import name_from_caller
from .resilient import StoreUnavailable
from .scheduling import SEGMENT_END, Plan, TrialScheduler

CV_SCORES_KEY = "terminator:cv_scores"  # where Optuna's CrossValidationErrorEvaluator reads them


class KnobRecorder(Protocol):
    """What a trial context tells about the knobs it meets (a run is one)."""

    overrides: dict[str, Any]  # name -> the narrowed knob trials are asked from

    def _note_param(self, param: Any) -> None: ...


_PRIMITIVE = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def describe(self) -> str:
        extra = ", log=True" if self.log else (f", step={self.step!r}" if self.step else "")
        return f"tune.float({self.low!r}, {self.high!r}{extra})"


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def describe(self) -> str:
        extra = ", log=True" if self.log else (f", step={self.step!r}" if self.step != 1 else "")
        return f"tune.int({self.low!r}, {self.high!r}{extra})"


@dataclass(frozen=True)
class ChoiceParam:
    name: str
    options: tuple
    labels: tuple  # what Optuna stores: the option itself, or a text label for objects

    def describe(self) -> str:
        return f"tune.choice({list(self.labels)!r})"

    def decode(self, label: Any) -> Any:
        if self.labels is self.options:
            return label
        return self.options[self.labels.index(label)]


Param = FloatParam | IntParam | ChoiceParam


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _where(name: str | None) -> str:
    return f" for '{name}'" if name else ""


def _check_bounds(kind: str, where: str, low: Any, high: Any) -> None:
    if low > high:
        raise TuneError(
            f"tune.{kind}{where}: the range is inverted (low={low!r} > high={high!r}); "
            f"swap them: tune.{kind}({high!r}, {low!r})."
        )
    if low == high:
        raise TuneError(
            f"tune.{kind}{where}: the range [{low!r}, {high!r}] is empty; "
            f"make high larger than low, or use the constant {low!r}."
        )


def make_float(name: str | None, low: Any, high: Any, log: bool, step: Any) -> FloatParam:
    where = _where(name)
    if not (_is_number(low) and _is_number(high)):
        raise TuneError(f"tune.float{where}: low and high must be numbers, got {low!r} and {high!r}.")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise TuneError(f"tune.float{where}: low and high must be finite, got {low!r} and {high!r}.")
    _check_bounds("float", where, low, high)
    if log and low <= 0:
        raise TuneError(
            f"tune.float{where}, log=True: low must be > 0 on a log scale, got {low!r}; "
            "use a small positive low such as 1e-8, or drop log=True."
        )
    if step is not None:
        if log:
            raise TuneError(f"tune.float{where}: step and log=True cannot be combined; drop one of them.")
        if not _is_number(step) or step <= 0:
            raise TuneError(f"tune.float{where}: step must be a positive number, got {step!r}.")
        if step > high - low:
            raise TuneError(f"tune.float{where}: step={step!r} is larger than the range [{low!r}, {high!r}].")
    return FloatParam(name or "", float(low), float(high), bool(log), None if step is None else float(step))


def make_int(name: str | None, low: Any, high: Any, log: bool, step: Any) -> IntParam:
    where = _where(name)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (low, high)):
        raise TuneError(
            f"tune.int{where}: low and high must be integers, got {low!r} and {high!r}; "
            "use tune.float for real numbers."
        )
    _check_bounds("int", where, low, high)
    if log and low <= 0:
        raise TuneError(
            f"tune.int{where}, log=True: low must be >= 1 on a log scale, got {low!r}; "
            "start the range at 1, or drop log=True."
        )
    if not isinstance(step, numbers.Integral) or isinstance(step, bool) or step < 1:
        raise TuneError(f"tune.int{where}: step must be a positive integer, got {step!r}.")
    if log and step != 1:
        raise TuneError(f"tune.int{where}: step and log=True cannot be combined; drop one of them.")
    return IntParam(name or "", int(low), int(high), bool(log), int(step))


def _label(option: Any) -> str:
    return getattr(option, "__name__", None) or repr(option)


def make_choice(name: str | None, options: Any) -> ChoiceParam:
    where = _where(name)
    if isinstance(options, (str, bytes)):
        raise TuneError(
            f"tune.choice{where}: options must be a list, got the string {options!r}; "
            f"write tune.choice([{options!r}, ...])."
        )
    if isinstance(options, (set, frozenset, dict)) or not hasattr(options, "__iter__"):
        raise TuneError(
            f"tune.choice{where}: options must be a list (an ordered sequence), got "
            f"{type(options).__name__}; write tune.choice([a, b, c])."
        )
    options = tuple(options)
    if not options:
        raise TuneError(f"tune.choice{where}: the list of options is empty; give at least two.")
    labels = options
    if not all(isinstance(o, _PRIMITIVE) for o in options):
        # Classes, functions, objects: Optuna stores a text label, the trial gets the object.
        labels = tuple(_label(o) for o in options)
        if len(set(labels)) != len(labels):
            labels = tuple(f"{i}: {label}" for i, label in enumerate(labels))
    seen: set = set()
    for label in labels:
        if (type(label), label) in seen:
            raise TuneError(f"tune.choice{where}: the option {label!r} is listed twice; list each option once.")
        seen.add((type(label), label))
    return ChoiceParam(name or "", options, labels)


class SegmentEnd(Exception):
    """Raised by ``tune.report`` when a PBT segment is over: the trial completes with ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(f"segment over at value {value!r}")
        self.value = value


# --- the trial context ----------------------------------------------------------------

class TrialContext:
    """What ``tune.*`` calls talk to while one trial of a run executes: in this thread, or for
    a worker process, on the worker's behalf (a remote trial asks its knobs here)."""

    __slots__ = ("trial", "run", "declared", "assigned", "sampler_seconds", "lock", "reseed", "plan",
                 "scheduler", "store_lost", "devices", "placement", "constraints")

    def __init__(self, trial: optuna.Trial, run: KnobRecorder | None, lock: Any = None,
                 reseed: Callable[[str], Any] | None = None, plan: Plan | None = None,
                 scheduler: TrialScheduler | None = None) -> None:
        self.trial = trial
        self.run = run
        self.declared: set[str] = set()
        self.assigned: dict[str, Any] = {}
        self.sampler_seconds = 0.0
        # Trials in several slots share the study: the engine's lock orders their sampler calls.
        self.lock = lock if lock is not None else _NO_LOCK
        self.reseed = reseed  # with several trials in flight: each knob's draw from the trial's own seed
        self.scheduler = scheduler or _DEFAULT_SCHEDULER  # decides what report and restore answer
        self.plan = plan if plan is not None else Plan()  # what the scheduler gave this trial
        self.store_lost: StoreUnavailable | None = None  # the store stayed away during this trial
        self.devices: list[str] | None = None  # tune.device(): the slot's GPUs (thread slots)
        self.placement = ""  # where the trial runs, for the table: "GPU 2", "CPUs 0-1"
        self.constraints: set[str] = set()  # names of the tune.constraint values this trial set

    def _lost_store(self) -> _NotingStoreLoss:
        return _NotingStoreLoss(self)

    def _declare(self, param: Param) -> None:
        if param.name in self.declared:
            raise TuneError(
                f"The parameter name '{param.name}' is declared twice in one trial (in a loop, or in two "
                f"places); give each declaration its own name, e.g. name=f'{param.name}_{{i}}'."
            )
        self.declared.add(param.name)
        if self.run is not None:
            self.run._note_param(param)

    def suggest(self, param: Param) -> Any:
        value = self.sample(param)
        return param.decode(value) if isinstance(param, ChoiceParam) else value

    def sample(self, param: Param) -> Any:
        """The trial's value for ``param`` as Optuna stores it (a choice's label)."""
        self._declare(param)
        start = time.perf_counter()
        trial = self.trial
        override = self.run.overrides.get(param.name) if self.run is not None and self.run.overrides else None
        with self.lock, self._lost_store():
            if self.reseed is not None:
                self.reseed(param.name)
            if isinstance(param, ChoiceParam):
                labels = param.labels
                if isinstance(override, ChoiceParam):  # narrowed: the kept options, in the declared order
                    labels = tuple(label for label in param.labels if label in override.labels) or labels
                value = trial.suggest_categorical(param.name, labels)
            else:
                low, high = param.low, param.high
                if override is not None and not isinstance(override, ChoiceParam):
                    # narrowed; clipped in case the cell's own bounds changed since
                    low, high = max(low, override.low), min(high, override.high)
                    if low > high:
                        low, high = param.low, param.high
                suggest = trial.suggest_float if isinstance(param, FloatParam) else trial.suggest_int
                value = suggest(param.name, low, high, log=param.log, step=param.step)
        self.sampler_seconds += time.perf_counter() - start
        return value

    def report(self, value: float, step: int) -> bool | str:
        """Record an intermediate value; True when the pruner says this trial should stop,
        :data:`SEGMENT_END` when a population-based training segment has had its reports."""
        with self.lock, self._lost_store():
            self.trial.report(value, step)
            return self.scheduler.reported(self.plan, self.trial, value)

    def should_prune(self) -> bool:
        with self.lock, self._lost_store():
            return self.scheduler.should_stop(self.plan, self.trial)

    def constraint(self, name: str | None, value: float) -> None:
        """Keep a ``tune.constraint`` value as Optuna's constraint of the trial, where the
        samplers that model constraints (TPE, GP, NSGA-II) and ``study.best_trial`` read it."""
        key = constraint_key(name, self.constraints)
        with self.lock, self._lost_store():
            self.trial.set_constraint(key, value)

    def cv_scores(self, scores: list[float]) -> None:
        """Keep the trial's cross-validation fold scores, where Optuna's Terminator reads them."""
        with self.lock, self._lost_store():
            self.trial.storage.set_trial_system_attr(self.trial._trial_id, CV_SCORES_KEY, scores)

    @property
    def keeps_checkpoints(self) -> bool:
        return self.scheduler.population_based

    def checkpoint(self, blob: bytes) -> None:
        """Keep the pickled state of this step (under PBT the segment's last one is saved when it ends)."""
        self.scheduler.checkpoint(self.plan, blob)

    def restore(self) -> bytes | None:
        """The pickled state this trial continues from (None: a new PBT member, or no PBT)."""
        return self.scheduler.restore(self.plan)


class _NotingStoreLoss:
    """Notes on the context that a call of the trial found the store gone for good (the engine
    then puts the trial back for the run's resumption instead of failing it)."""

    __slots__ = ("context",)

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if isinstance(error, StoreUnavailable):
            self.context.store_lost = error


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


_NO_LOCK = _NoLock()
_DEFAULT_SCHEDULER = TrialScheduler()


class FixedContext:
    """Replays given values (the best trial) instead of sampling: used by ``--refit``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.assigned: dict[str, Any] = {}

    def suggest(self, param: Param) -> Any:
        try:
            return self.values[param.name]
        except KeyError:
            raise TuneError(
                f"'{param.name}' was not part of the best trial, so the refit cannot replay it."
            ) from None

    def report(self, value: float, step: int) -> bool:
        return False  # a refit runs to the end

    def should_prune(self) -> bool:
        return False

    def cv_scores(self, scores: list[float]) -> None:
        return None

    def constraint(self, name: str | None, value: float) -> None:
        return None  # a refit replays the best feasible trial: nothing to judge

    def checkpoint(self, blob: bytes) -> None:
        return None

    def restore(self) -> bytes | None:
        return None


_local = threading.local()


def constraint_key(name: str | None, taken: set[str]) -> str:
    """The key of a trial's next constraint: its ``name=``, else its position ("0", "1", ...);
    a name used twice in one trial is the user's mistake, said as such."""
    key = name if name is not None else str(len(taken))
    if key in taken:
        raise TuneError(f"tune.constraint(name={key!r}) is set twice in one trial; give each constraint "
                        "its own name, or leave name= out.")
    taken.add(key)
    return key


def current_context() -> TrialContext | FixedContext | None:
    return getattr(_local, "context", None)


def set_context(context: TrialContext | FixedContext | None) -> None:
    _local.context = context


def _context_or_error(what: str) -> TrialContext | FixedContext:
    context = getattr(_local, "context", None)
    if context is None:
        raise TuneError(
            f"tune.{what}() works only while a trial runs: use it inside a %%tune cell, "
            "or in an objective run by hpt_jupyter.start(...)."
        )
    return context


def _declare(kind: str, name: str | None, build: Callable[[str], Param]) -> Any:
    """Shared by tune.float/int/choice: find the trial, name the knob, suggest its value."""
    context = _context_or_error(kind)
    name = name or name_from_caller(sys._getframe(2))  # the frame that called tune.<kind>
    if not name:
        raise TuneError(
            f"Cannot tell what to call this tune.{kind}(...): assign it (lr = tune.{kind}(...)), "
            f"pass it as a keyword (Model(lr=tune.{kind}(...))), or give name='lr'."
        )
    return context.suggest(build(name))


# Keep builtins reachable: the methods below are called float, int and choice.
_float, _int = float, int


class Tune:
    """The ``tune`` object: declare knobs inside a trial, and find the runs of this process.

    ``tune.float(1e-5, 1e-1, log=True)``, ``tune.int(1, 8)``, ``tune.choice(["a", "b"])``;
    ``tune.trial`` is the running ``optuna.Trial``; ``tune.runs[name]`` and ``tune.last``
    are the run objects.
    """

    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}  # name -> Run
        self._last: Any = None

    def float(self, low: _float, high: _float, *, log: bool = False, step: _float | None = None,
              name: str | None = None) -> _float:
        """A real-valued knob in [low, high]; ``log=True`` samples on a log scale."""
        return _declare("float", name, lambda name: make_float(name, low, high, log, step))

    def int(self, low: _int, high: _int, *, log: bool = False, step: _int = 1,
            name: str | None = None) -> _int:
        """An integer knob in [low, high] (both included)."""
        return _declare("int", name, lambda name: make_int(name, low, high, log, step))

    def choice(self, options: Sequence[Any], *, name: str | None = None) -> Any:
        """One of ``options`` (numbers, strings, or any objects such as model classes)."""
        return _declare("choice", name, lambda name: make_choice(name, options))

    def report(self, value: _float, step: _int) -> None:
        """Record an intermediate value (a training curve's point at ``step``); when the pruner
        says stop, the trial ends here as pruned (``tune.should_stop()`` asks first)."""
        context = _context_or_error("report")
        verdict = context.report(value, step)
        if verdict == SEGMENT_END:
            raise SegmentEnd(value)
        if verdict:
            raise optuna.TrialPruned(f"pruned at step {step}")

    def cv_scores(self, scores: Sequence[_float]) -> None:
        """Record this trial's cross-validation fold scores (say ``cross_val_score(...)``, whose
        mean the cell returns): ``--stop auto`` weighs what more trials could gain against their
        spread."""
        values = [_float(score) for score in scores]
        if len(values) < 2:
            raise TuneError(f"tune.cv_scores needs the scores of 2 folds or more, got {len(values)}.")
        _context_or_error("cv_scores").cv_scores(values)

    def constraint(self, value: _float, *, name: str | None = None) -> None:
        """A limit a good model must respect: the trial is feasible when every ``value`` it
        gives is <= 0 (``tune.constraint(latency_ms - 50)``: at most 50 ms). Samplers that model
        constraints (TPE, GP, NSGA-II, and ``auto``) steer toward feasible trials; the best
        trial, the injected values and ``--refit`` are the best feasible one."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TuneError(f"tune.constraint needs a number (feasible when <= 0), got {type(value).__name__}: "
                            f"{value!r}.")
        number = _float(value)
        if math.isnan(number):
            raise TuneError("tune.constraint got NaN: give a number, feasible when <= 0 "
                            "(e.g. tune.constraint(size_mb - 100)).")
        if name is not None and (not isinstance(name, str) or not name):
            raise TuneError(f"tune.constraint's name= must be a non-empty string, got {name!r}.")
        _context_or_error("constraint").constraint(name, number)

    def checkpoint(self, state: Any) -> None:
        """Save the training state of this step (a model, an optimiser, the epoch: anything
        picklable). Under ``--scheduler pbt`` the member's next segment, or a member that
        clones it, gets it back from :meth:`restore`; without PBT it is not kept."""
        context = _context_or_error("checkpoint")
        if not getattr(context, "keeps_checkpoints", False) and not getattr(context, "remote", False):
            return  # pickling a model no scheduler will restore costs for nothing
        import cloudpickle

        context.checkpoint(cloudpickle.dumps(state))

    def restore(self) -> Any:
        """The state this trial continues from (saved by :meth:`checkpoint`): under
        ``--scheduler pbt``, the member's own latest or the better member's it cloned; None for
        a new member, and always None without PBT."""
        blob = _context_or_error("restore").restore()
        if blob is None:
            return None
        import pickle

        return pickle.loads(blob)

    def should_stop(self) -> bool:
        """True when the pruner says this trial should stop (clean up, then return or report)."""
        return _context_or_error("should_stop").should_prune()

    def device(self) -> str:
        """The device this trial's model goes to (``model.to(tune.device())``): the first GPU of
        this trial's own (``--gpus-per-trial``: ``"cuda:0"`` in a worker process that owns one,
        ``"cuda:2"`` for thread slot 2), else the GPU or ``"cpu"`` this machine offers, so
        one cell runs unchanged on a laptop and on a GPU server."""
        return self.devices()[0]

    def devices(self) -> list[str]:
        """All of this trial's devices (``--gpus-per-trial 2``: ``["cuda:0", "cuda:1"]``, for
        ``DataParallel(model, device_ids=...)``); ``["cpu"]`` without a GPU."""
        from .resources import default_devices

        assigned = getattr(current_context(), "devices", None)
        return list(assigned) if assigned else default_devices()

    @property
    def trial(self) -> Any:
        """The ``optuna.Trial`` of the trial running in this thread (in a worker process, a
        stand-in that asks the kernel's trial: ``number``, ``params``, ``suggest_*``, ``report``,
        ``should_prune``)."""
        context = current_context()
        trial = getattr(context, "trial", None)
        if trial is None:
            raise TuneError("tune.trial exists only while a trial runs (inside a %%tune cell or objective).")
        return trial

    @property
    def last(self) -> Any:
        """The most recently started run."""
        return self._last

    def _register(self, run: Any) -> None:
        self.runs[run.name] = run
        self._last = run

    def __repr__(self) -> str:
        return f"<hpt_jupyter.tune: {len(self.runs)} run(s); tune.float / tune.int / tune.choice>"

    def __reduce__(self) -> tuple:
        # A function sent to a worker refers to `tune`: there it is the worker's own.
        return (_the_tune, ())


def _the_tune() -> Tune:
    return tune


tune = Tune()
