"""Population-based training (Jaderberg et al. 2017), over the engine's slots.

A population of members trains side by side. A member trains in segments: each segment is one
Optuna trial of the study that runs the cell until it has called ``tune.report`` ``interval``
times (then ``tune.report`` ends the segment, scored by the value it reported), continuing from
the checkpoint ``tune.restore()`` returns and leaving one with ``tune.checkpoint(state)``.
Before a member's next segment the scheduler ranks the members by their latest score: a member
in the bottom quantile clones a top-quantile member's checkpoint and hyperparameters (exploit)
and perturbs them (explore); the others go on with their own.

Everything the schedule needs is in the stored trials (member, parent, the checkpoint it
continued from, the steps it reported), so a study resumed after a kernel restart rebuilds its
population from the store and goes on from the checkpoints kept next to it.
"""

from __future__ import annotations

import ast
import math
import os
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import TuneError
from .scheduling import SEGMENT_END, Plan, TrialScheduler
from .space import ChoiceParam, FloatParam, IntParam, Param, SegmentEnd

__all__ = ["SegmentEnd", "PBTSettings", "PopulationScheduler", "make_scheduler"]

PBT_KEY = "hpt:pbt"  # a segment's user attribute: {member, parent, from_trial, exploited, start}


@dataclass(frozen=True)
class PBTSettings:
    """``--scheduler "pbt(quantile=0.25, resample_probability=0.25, factors=(0.8, 1.2))"``."""

    population: int = 4
    interval: int = 5
    quantile: float = 0.25
    resample_probability: float = 0.25
    factors: tuple[float, ...] = (0.8, 1.2)

    def describe(self) -> str:
        return f"PBT · population {self.population} · every {self.interval} steps"


SCHEDULERS = ("none", "pbt")


def make_scheduler(spec: str | PBTSettings | None, population: int | None = None,
                   interval: int | None = None) -> PBTSettings | None:
    """The settings of ``--scheduler spec --population P --interval K``; None without one."""
    if isinstance(spec, PBTSettings):
        settings = spec
        spec_settings: dict[str, Any] = {}
    elif spec is None or spec == "none":
        if population is not None or interval is not None:
            raise TuneError("--population and --interval are settings of --scheduler pbt; add --scheduler pbt.")
        return None
    elif isinstance(spec, str):
        name, spec_settings = _parse(spec)
        if name != "pbt":
            raise TuneError(f"--scheduler {name!r} is not one I know; choose one of: {', '.join(SCHEDULERS)}.")
        known = ("population", "interval", "quantile", "resample_probability", "factors")
        for key in spec_settings:
            if key not in known:
                raise TuneError(f"--scheduler pbt: no setting called {key!r}; its settings are: {', '.join(known)}.")
        settings = PBTSettings()
    else:
        raise TuneError(f"scheduler must be 'pbt' or None, got {type(spec).__name__}.")
    values = {**settings.__dict__, **spec_settings}
    if population is not None:
        values["population"] = population
    if interval is not None:
        values["interval"] = interval
    _check(values)
    values["factors"] = tuple(float(f) for f in values["factors"])
    return PBTSettings(**values)


def _parse(spec: str) -> tuple[str, dict[str, Any]]:
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        node = None
    if isinstance(node, ast.Name):
        return node.id, {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args \
            and all(k.arg for k in node.keywords):
        names = [k.arg for k in node.keywords]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TuneError(f"--scheduler {spec!r}: {', '.join(repeated)} given twice; give each setting once.")
        try:
            return node.func.id, {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            pass
    raise TuneError(f"--scheduler {spec!r} cannot be read; write pbt, or pbt with settings: "
                    "--scheduler \"pbt(quantile=0.25, resample_probability=0.25)\".")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    """A finite int or float (True and False are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(values: dict[str, Any]) -> None:
    if not _whole(values["population"]) or values["population"] < 2:
        raise TuneError(f"--population must be a whole number >= 2 (members that learn from each other), "
                        f"got {values['population']!r}.")
    if not _whole(values["interval"]) or values["interval"] < 1:
        raise TuneError(f"--interval must be a whole number of tune.report steps >= 1, got {values['interval']!r}.")
    quantile = values["quantile"]
    if not _number(quantile) or not 0 < quantile <= 0.5:
        raise TuneError(f"pbt quantile must be in (0, 0.5] (the share of members that clone), got {quantile!r}.")
    probability = values["resample_probability"]
    if not _number(probability) or not 0 <= probability <= 1:
        raise TuneError(f"pbt resample_probability must be in [0, 1], got {probability!r}.")
    factors = values["factors"]
    if not isinstance(factors, (tuple, list)) or not factors \
            or not all(_number(f) and f > 0 for f in factors):
        raise TuneError(f"pbt factors must be a list of positive numbers such as (0.8, 1.2), got {factors!r}.")


# --- checkpoints ---------------------------------------------------------------------------

class MemoryCheckpoints:
    """Checkpoints of a ``--storage memory`` study: pickled states in this kernel."""

    where = "memory"

    def __init__(self) -> None:
        self._blobs: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def save(self, number: int, blob: bytes) -> None:
        with self._lock:
            self._blobs[number] = blob

    def load(self, number: int) -> bytes | None:
        with self._lock:
            return self._blobs.get(number)

    def delete(self, number: int) -> None:
        with self._lock:
            self._blobs.pop(number, None)

    def numbers(self) -> set[int]:
        with self._lock:
            return set(self._blobs)


class FileCheckpoints:
    """Checkpoints as files ``<number>.ckpt`` in a directory next to the study's store."""

    def __init__(self, directory: str) -> None:
        self.where = directory

    def _path(self, number: int) -> str:
        return os.path.join(self.where, f"{number}.ckpt")

    def save(self, number: int, blob: bytes) -> None:
        os.makedirs(self.where, exist_ok=True)
        path = self._path(number)
        partial = f"{path}.{os.getpid()}.part"
        with open(partial, "wb") as file:
            file.write(blob)
        os.replace(partial, path)  # a kernel killed mid-write leaves no half checkpoint

    def load(self, number: int) -> bytes | None:
        try:
            with open(self._path(number), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def delete(self, number: int) -> None:
        try:
            os.remove(self._path(number))
        except FileNotFoundError:
            pass

    def numbers(self) -> set[int]:
        try:
            names = os.listdir(self.where)
        except FileNotFoundError:
            return set()
        return {int(name[:-5]) for name in names if name.endswith(".ckpt") and name[:-5].isdigit()}


def checkpoint_directory(store_file: str | None, directory: str | None, study_name: str) -> str:
    """``hpt_checkpoints/<study>`` next to the store's file (or in ``directory``/the working
    directory for a database server)."""
    base = os.path.dirname(store_file) if store_file else (directory or os.getcwd())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name).strip("._") or "study"
    return os.path.join(base, "hpt_checkpoints", safe)


# --- the population ------------------------------------------------------------------------

@dataclass
class SegmentPlan(Plan):
    """The next segment of one member: what it continues from, with which hyperparameters."""

    member: int
    params: dict[str, Any] | None  # stored values (a choice's label); None: the sampler picks
    from_trial: int | None  # the segment whose checkpoint it continues; None: starts afresh
    parent: int | None  # the member it continues: itself, the member it cloned, None when new
    exploited: bool = False
    start: int = 0  # the first step it is expected to report
    number: int | None = None  # its trial, once asked
    reports: int = 0
    last_value: float | None = None
    checkpoint: bytes | None = None
    curve: dict[int, float] | None = None  # an exploit: the donor's curve as of the clone

    def attrs(self) -> dict[str, Any]:
        return {"member": self.member, "parent": self.parent, "from_trial": self.from_trial,
                "exploited": self.exploited, "start": self.start}


class LineageSegment(NamedTuple):
    """One segment of a member's training, as the lineage view and ``run.lineage()`` show it."""

    number: int
    member: int
    parent: int | None
    from_trial: int | None
    exploited: bool
    start: int
    end: int
    params: dict[str, Any]
    value: float | None
    state: str


@dataclass
class Member:
    index: int
    score: float | None = None
    last_trial: int | None = None  # its latest complete segment: the checkpoint it goes on from
    params: dict[str, Any] = field(default_factory=dict)
    next_step: int = 0
    finished: bool = False
    running: bool = False
    curve: dict[int, float] = field(default_factory=dict)  # step -> score, along its lineage

    def score_at(self, step: int) -> float | None:
        """Its score at ``step`` (the latest at or before it), so that members are compared at
        the same point of training; its latest score when it has not got that far."""
        reached = [s for s in self.curve if s <= step]
        return self.curve[max(reached)] if reached else self.score


def _steps(trial: FrozenTrial, plan_start: int) -> tuple[int, int]:
    """The first and last step a segment reported; a segment that reported nothing (its
    member's loop had already ended) sits at the last step of the state it continued."""
    steps = list(trial.intermediate_values)
    if steps:
        return min(steps), max(steps)
    return max(plan_start - 1, 0), max(plan_start - 1, 0)


class PopulationScheduler(TrialScheduler):
    """Decides each member's next segment; keeps the lineage and the checkpoints it needs."""

    population_based = True
    steering_refusal = ("Population-based training explores around its members itself: narrowing and "
                        "enqueueing do not apply. Stop it and start a %%tune without --scheduler pbt to "
                        "steer a sampler.")

    def __init__(self, settings: PBTSettings, maximize: bool, checkpoints: Any, seed: int | None) -> None:
        self.settings = settings
        self.maximize = maximize
        self.checkpoints = checkpoints
        self.random = random.Random(seed)
        self.members = [Member(k) for k in range(settings.population)]
        self.lineage: dict[int, LineageSegment] = {}  # trial number -> its segment
        self.frozen: dict[int, FrozenTrial] = {}  # each member's latest complete segment
        self.running: dict[int, SegmentPlan] = {}  # member -> its running segment
        self.lock = threading.Lock()

    # -- the store --
    def load(self, trials: list[FrozenTrial]) -> None:
        """Rebuild the population from a resumed study's trials (numbered run-wide)."""
        for trial in sorted(trials, key=lambda t: t.number):
            info = trial.user_attrs.get(PBT_KEY)
            if not isinstance(info, dict):
                continue
            plan = SegmentPlan(member=info["member"], params=dict(trial.params), from_trial=info.get("from_trial"),
                               parent=info.get("parent"), exploited=bool(info.get("exploited")),
                               start=int(info.get("start", 0)), number=trial.number,
                               reports=len(trial.intermediate_values))
            self._record(plan, trial, keep_checkpoint=False)
        for member in self.members:  # a checkpoint lost with its files: that member starts over
            if member.last_trial is not None and self.checkpoints.load(member.last_trial) is None \
                    and not member.finished:
                member.last_trial, member.score, member.next_step = None, None, 0

    # -- deciding --
    def claim(self, space: dict[str, Param]) -> SegmentPlan | None:
        """The next segment of a member that is neither running nor finished (None: none is free)."""
        with self.lock:
            free = [m for m in self.members if not m.running and not m.finished]
            if not free:
                return None
            member = min(free, key=lambda m: (m.last_trial is not None, m.next_step, m.index))
            if member.last_trial is None:  # new (or its segments all failed): the sampler picks
                plan = SegmentPlan(member.index, None, None, None)
            else:
                plan = self._continue(member, space)
            member.running = True
            self.running[member.index] = plan
            return plan

    def _continue(self, member: Member, space: dict[str, Param]) -> SegmentPlan:
        # Members are ranked at the step this member has reached: a member that has trained
        # longer is not better for that alone.
        step = max(member.curve) if member.curve else member.next_step - 1
        scored = [(m.score_at(step) if m is not member else m.score, m) for m in self.members
                  if m.score is not None and not m.finished and m.last_trial is not None]
        sign = -1 if self.maximize else 1
        # best first; ties in random order (members that score the same are equally good
        # donors: in the PBT paper's toy problem the two members tie at every step)
        ties = {m.index: self.random.random() for _, m in scored}
        scored.sort(key=lambda pair: (sign * pair[0], ties[pair[1].index]))
        count = math.ceil(len(scored) * self.settings.quantile)
        if count > len(scored) / 2:
            count = len(scored) // 2
        lower = [m for _, m in scored[len(scored) - count:]] if count else []
        if member in lower:
            donor = self.random.choice([m for _, m in scored[:count]])
            return SegmentPlan(member.index, self.explore(donor.params, space), donor.last_trial, donor.index,
                               exploited=True, start=donor.next_step, curve=dict(donor.curve))
        return SegmentPlan(member.index, dict(member.params), member.last_trial, member.index,
                           start=member.next_step)

    def explore(self, params: dict[str, Any], space: dict[str, Param]) -> dict[str, Any]:
        """Perturbed copies of ``params``: numbers times one of the factors (kept in the
        declared range), or resampled with the resample probability; choices resampled with
        that probability (they have no neighbours to move to)."""
        explored = {}
        rng, settings = self.random, self.settings
        for name, value in params.items():
            param = space.get(name)
            resample = rng.random() < settings.resample_probability
            if isinstance(param, ChoiceParam):
                explored[name] = rng.choice(param.labels) if resample else value
            elif isinstance(param, (FloatParam, IntParam)):
                explored[name] = self._perturb(param, value, resample)
            else:
                explored[name] = value  # not declared in this kernel yet: kept as it is
        return explored

    def _perturb(self, param: FloatParam | IntParam, value: float, resample: bool) -> float | int:
        rng = self.random
        low, high = param.low, param.high
        if resample:
            if param.log:
                new = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                new = rng.uniform(low, high)
        else:
            new = value * rng.choice(self.settings.factors)
        new = min(max(new, low), high)
        step = param.step
        if step:  # onto the declared grid
            new = low + round((new - low) / step) * step
            new = min(max(new, low), high)
        if isinstance(param, IntParam):
            new = int(round(new))
            if new == value and not resample:  # a small integer times 1.2 rounds back: move one step
                factor_up = new * max(self.settings.factors) > value
                new = min(max(value + (param.step if factor_up else -param.step), low), high)
            return int(new)
        return float(new)

    def exhausted(self) -> str | None:
        return "every member of the population finished its training" if self.all_finished() else None

    # -- a segment's life --
    def asked(self, study: optuna.Study, trial: optuna.Trial, number: int, plan: SegmentPlan) -> None:
        plan.number = number
        trial.set_user_attr(PBT_KEY, plan.attrs())
        if plan.params is not None:
            fix_params(study, trial, plan.params)

    def reported(self, plan: SegmentPlan, trial: optuna.Trial, value: float) -> bool | str:
        plan.reports += 1
        plan.last_value = value
        return SEGMENT_END if plan.reports >= self.settings.interval else False

    def should_stop(self, plan: SegmentPlan, trial: optuna.Trial) -> bool:
        return plan.reports >= self.settings.interval

    def checkpoint(self, plan: SegmentPlan, blob: bytes) -> None:
        plan.checkpoint = blob  # saved with the segment's result when it ends

    def restore(self, plan: SegmentPlan) -> bytes | None:
        return self.checkpoints.load(plan.from_trial) if plan.from_trial is not None else None

    def ended(self, plan: SegmentPlan, trial: FrozenTrial | None) -> None:
        """After the segment's trial was told (``trial`` None: it never got a trial)."""
        with self.lock:
            self.running.pop(plan.member, None)
            self.members[plan.member].running = False
            if trial is not None:
                self._record(plan, trial, keep_checkpoint=True)
            self._collect_garbage()

    def _record(self, plan: SegmentPlan, trial: FrozenTrial, keep_checkpoint: bool) -> None:
        start, end = _steps(trial, plan.start)
        self.lineage[trial.number] = LineageSegment(
            trial.number, plan.member, plan.parent, plan.from_trial, plan.exploited, start, end,
            dict(trial.params), trial.value if trial.state == TrialState.COMPLETE else None,
            trial.state.name.lower())
        if trial.state != TrialState.COMPLETE or plan.member >= len(self.members):
            return  # a failed segment: the member tries again from where it was
        member = self.members[plan.member]
        if not trial.intermediate_values and plan.from_trial is not None:
            # The member's loop had already ended (its training was a whole number of
            # intervals): this segment made no step. The member ends as it was; an exploit's
            # fresh values never trained anything, so they must not become its score's values.
            member.finished = True
            return
        if plan.exploited:  # its history is now the donor's, up to where it took over
            donor = plan.curve if plan.curve is not None else self.members[plan.parent].curve
            member.curve = {step: value for step, value in donor.items() if step < plan.start}
        member.curve.update(trial.intermediate_values)
        if keep_checkpoint and plan.checkpoint is not None:
            self.checkpoints.save(trial.number, plan.checkpoint)
        member.score = trial.value
        member.params = dict(trial.params)
        member.next_step = end + 1 if trial.intermediate_values else plan.start
        member.finished = plan.reports < self.settings.interval  # the cell's loop ended by itself
        if plan.checkpoint is not None or not keep_checkpoint:
            member.last_trial = trial.number
        elif plan.from_trial is not None:  # no checkpoint this time: the member keeps the one it had
            member.last_trial = plan.from_trial
        else:
            member.last_trial = trial.number
        self.frozen[plan.member] = trial

    def _collect_garbage(self) -> None:
        """Delete the checkpoints no member can return to: neither a member's latest nor the
        one a running segment continues from."""
        keep = {m.last_trial for m in self.members} | {p.from_trial for p in self.running.values()}
        for number in self.checkpoints.numbers() - keep:
            self.checkpoints.delete(number)

    # -- queries --
    def all_finished(self) -> bool:
        return all(m.finished for m in self.members)

    def describe(self) -> str:
        return self.settings.describe()

    def best_trial(self) -> FrozenTrial | None:
        """The latest complete segment of the member whose latest score is best."""
        scored = [(m.score, m.index) for m in self.members if m.score is not None and m.index in self.frozen]
        if not scored:
            return None
        best = max(scored) if self.maximize else min(scored)
        return self.frozen[best[1]]

    def schedule_of(self, number: int) -> list[LineageSegment]:
        """The segments that made trial ``number``'s state, first first: its own, the one it
        continued from, and so on back to the member that started it."""
        chain = []
        seen: set[int] = set()
        current: int | None = number
        while current is not None and current in self.lineage and current not in seen:
            seen.add(current)
            segment = self.lineage[current]
            chain.append(segment)
            current = segment.from_trial
        return chain[::-1]


def fix_params(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any]) -> None:
    """Give an asked trial fixed values, as ``study.enqueue_trial`` gives a queued one: a
    member's next segment. (Through the queue, a trial the user had enqueued could be taken
    instead.)"""
    study._storage.set_trial_system_attr(trial._trial_id, "fixed_params", params)
    trial._cached_frozen_trial.system_attrs["fixed_params"] = params
    trial._fixed_params = params
