"""Early stopping (pruners, --patience) and population-based training, through the API and a
real kernel."""

from __future__ import annotations

import os
import time
import warnings

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpt_jupyter import start, tune
from hpt_jupyter.core.pbt import PBT_KEY
from hpt_jupyter.errors import TuneError

optuna.logging.set_verbosity(optuna.logging.WARNING)

STEPS = 10


def curve(x: float, step: int) -> float:
    """Minimised: a good trial (x < 0.5) improves with every step, a bad one gets worse."""
    return x + (x - 0.5) * 0.1 * step


def reporting_objective():
    x = tune.float(0, 1)
    for step in range(STEPS):
        tune.report(curve(x, step), step)
    return curve(x, STEPS - 1)


# Settings that let each rule decide within a dozen trials of ten steps.
PRUNERS = ["median(n_startup_trials=3)", "percentile(percentile=50, n_startup_trials=3)",
           "sha(min_resource=1, reduction_factor=2)", "hyperband(min_resource=1, max_resource=10, reduction_factor=2)",
           "threshold(upper=0.8)", "patient(patience=2)", "wilcoxon(p_threshold=0.1, n_startup_steps=2)"]
GOOD, BAD = [0.3, 0.2, 0.4, 0.1, 0.35, 0.25], [0.95, 0.97, 0.9, 0.99, 0.92]


@pytest.mark.parametrize("spec", PRUNERS)
def test_each_pruner_prunes_a_bad_trial_and_keeps_the_best(spec):
    run = start(reporting_objective, n_trials=len(GOOD) + len(BAD) + 1, storage="memory", report=False,
                name=spec, pruner=spec, sampler="random", seed=0, launch=False)
    for x in [*GOOD, BAD[0], 0.01, *BAD[1:]]:
        run.study.enqueue_trial({"x": x})
    run.start().wait()
    states = {t.params["x"]: t for t in run.trials(states=None)}
    best = states[0.01]
    assert best.state == TrialState.COMPLETE and len(best.intermediate_values) == STEPS, spec
    pruned_bad = [x for x in BAD if states[x].state == TrialState.PRUNED]
    assert pruned_bad, (spec, {x: t.state.name for x, t in states.items()})
    for x in pruned_bad:  # ended early, at the step the pruner said so
        assert max(states[x].intermediate_values) < STEPS - 1 or spec.startswith("wilcoxon"), spec
    assert run.n_pruned == sum(t.state == TrialState.PRUNED for t in states.values())
    assert f"pruner {spec.split('(')[0]}" in run.scheduler_text()


BARE = {
    "median": lambda: optuna.pruners.MedianPruner(),
    "percentile(percentile=40)": lambda: optuna.pruners.PercentilePruner(40),
    "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband(max_resource=10)": lambda: optuna.pruners.HyperbandPruner(max_resource=10),
    "threshold(upper=0.8)": lambda: optuna.pruners.ThresholdPruner(upper=0.8),
    "patient(patience=2)": lambda: optuna.pruners.PatientPruner(None, patience=2),
    "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(),
}


@pytest.mark.parametrize("spec", list(BARE))
def test_a_seeded_study_prunes_exactly_what_bare_optuna_prunes(spec):
    def ours():
        x, y = tune.float(0, 1), tune.float(0, 1, name="y")
        for step in range(STEPS):
            tune.report(curve(x, step) + 0.1 * y, step)
        return curve(x, STEPS - 1) + 0.1 * y

    def bare(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        for step in range(STEPS):
            trial.report(curve(x, step) + 0.1 * y, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return curve(x, STEPS - 1) + 0.1 * y

    # Hyperband puts a trial in a bracket by a hash of the study's name: the same name for both.
    run = start(ours, n_trials=30, storage="memory", report=False, name="same", pruner=spec, sampler="tpe",
                seed=3).wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name="same", sampler=optuna.samplers.TPESampler(seed=3),
                                    pruner=BARE[spec]())
        study.optimize(bare, n_trials=30)
    got = [(t.state, t.params, max(t.intermediate_values)) for t in run.trials(states=None)]
    expected = [(t.state, t.params, max(t.intermediate_values)) for t in study.trials]
    assert got == expected
    assert any(state == TrialState.PRUNED for state, _, _ in got) or spec.startswith("threshold"), spec


def test_tune_report_from_a_process_worker_prunes():
    def objective():
        x = tune.float(0, 1)
        for step in range(6):
            tune.report(x + step * 0.2, step)  # above 1.0 from some step on
        return x

    run = start(objective, n_trials=6, jobs=2, backend="process", storage="memory", report=False,
                name="process-prune", pruner="threshold(upper=1.0)").wait()
    trials = run.trials(states=None)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 6, run.status()
    for trial in trials:  # each ended at its first report above 1.0
        first_above = min(s for s in range(6) if trial.params["x"] + s * 0.2 > 1.0)
        assert max(trial.intermediate_values) == first_above
    assert run.n_pruned == 6 and "6 pruned" in run.progress()


def test_bad_pruner_settings_are_one_message_before_any_trial():
    cases = {
        "hyperband(foo=1)": "no setting called 'foo'; its settings are: min_resource, max_resource",
        "sha(reduction_factor=1)": "reduction_factor",
        "threshold": "give lower=, upper= or both",
        "median(": "cannot be read",
        "asha": "is not one I know; choose one of: none, median, percentile, sha, hyperband",
        "median(3)": "name each setting",
    }
    for spec, message in cases.items():
        with pytest.raises(TuneError) as raised:
            start(reporting_objective, storage="memory", report=False, name="bad", pruner=spec)
        assert message in str(raised.value), (spec, str(raised.value))
    assert "bad" not in tune.runs


def test_patience_ends_a_study_that_stopped_improving():
    values = iter([5.0, 3.0, 4.0, 2.0] + [2.5] * 20)

    def objective():
        tune.float(0, 1, name="x")
        return next(values)

    run = start(objective, n_trials=24, storage="memory", report=False, name="patience", patience=4).wait()
    assert run.n_complete == 8  # the best (2.0) at the 4th, then 4 trials without improvement
    assert run.reason == "no improvement in 4 complete trials (--patience 4)"
    run.extend(3)  # +N starts counting again
    assert run.wait().n_complete == 11


def test_patience_with_several_objectives_counts_new_pareto_points():
    values = iter([(1.0, 5.0), (5.0, 1.0), (2.0, 2.0)] + [(3.0, 3.0)] * 20)

    def objective():
        tune.float(0, 1, name="x")
        return next(values)

    run = start(objective, n_trials=20, direction=["minimize", "minimize"], storage="memory", report=False,
                name="patience-mo", patience=3).wait()
    assert run.n_complete == 6 and "--patience 3" in run.reason


# --- population-based training ---------------------------------------------------------------

RESTORED: dict[int, int | None] = {}  # segment trial -> the trial whose state it restored


def toy():
    """The PBT paper's toy problem: Q = 1.2 - (θ0² + θ1²), by gradient ascent on the surrogate
    1.2 - (h0 θ0² + h1 θ1²)."""
    h0, h1 = tune.float(0, 1, name="h0"), tune.float(0, 1, name="h1")
    state = tune.restore()
    RESTORED[tune.trial.number] = state["made_by"] if state else None
    state = state or {"theta": (0.9, 0.9), "step": 0}
    (t0, t1), step = state["theta"], state["step"]
    q = 1.2 - (t0 ** 2 + t1 ** 2)
    for _ in range(200):
        t0, t1 = t0 - 0.02 * h0 * t0, t1 - 0.02 * h1 * t1
        q = 1.2 - (t0 ** 2 + t1 ** 2)
        tune.checkpoint({"theta": (t0, t1), "step": step + 1, "made_by": tune.trial.number})
        tune.report(q, step)
        step += 1
    return q


def _check_lineage(run, population: int) -> list:
    lineage = run.lineage()
    by_number = {s.number: s for s in lineage}
    exploited = [s for s in lineage if s.exploited]
    for segment in lineage:
        assert 0 <= segment.member < population
        if segment.from_trial is None:  # a new member starts at step 0
            assert segment.start == 0 and segment.parent is None
            continue
        donor = by_number[segment.from_trial]
        assert donor.member == segment.parent
        assert segment.start == donor.end + 1, segment  # it went on from the donor's state
        if not segment.exploited:
            assert segment.parent == segment.member and segment.params == donor.params
    return exploited


def test_pbt_exploits_better_members_checkpoints_and_explores_inside_the_ranges():
    RESTORED.clear()
    run = start(toy, n_trials=36, storage="memory", report=False, name="pbt", direction="maximize", seed=1,
                scheduler="pbt(quantile=0.34, resample_probability=0.2)", population=3, interval=4).wait()
    assert run.n_complete == 36, run.status()
    exploited = _check_lineage(run, 3)
    assert exploited, "no member ever cloned another"
    lineage = {s.number: s for s in run.lineage()}
    for segment in exploited:
        donor = lineage[segment.from_trial]
        assert RESTORED[segment.number] == donor.number  # its state was replaced by the donor's checkpoint
        own_before = max((s for s in lineage.values() if s.member == segment.member and s.number < segment.number
                          and s.state == "complete"), key=lambda s: s.number)
        assert donor.value >= own_before.value  # cloned a better member
        assert segment.params != donor.params  # explored
        assert all(0 <= value <= 1 for value in segment.params.values())  # inside the declared ranges
    schedule = run.best_schedule
    assert schedule[-1]["trial"] == run.best_trial.number and schedule[0]["start"] == 0
    assert [s["start"] for s in schedule] == sorted(s["start"] for s in schedule)
    first = max(s.value for s in lineage.values() if s.from_trial is None)
    assert run.best_value > first  # training went on: the best member is past where members started
    assert run.best_params == {"h0": schedule[-1]["h0"], "h1": schedule[-1]["h1"]}


def ends_after_thirty_steps():
    lr, alpha = tune.float(1e-4, 1.0, log=True, name="lr"), tune.float(1e-6, 1e-1, log=True, name="alpha")
    state = tune.restore()
    step, q = state if state is not None else (0, 0.0)
    while step < 30:
        step += 1
        q += lr * (1 - q) - alpha
        tune.checkpoint((step, q))
        tune.report(q, step)
    return q


def test_a_member_whose_training_ends_on_an_interval_keeps_the_values_that_trained_it():
    # 30 steps, every 5: each member's last segment finds its loop already ended and makes no
    # step. Such a segment (an exploit's among them, with freshly perturbed values) must not be
    # the best: the best is the segment whose values trained the best model.
    run = start(ends_after_thirty_steps, n_trials=40, direction="maximize", seed=0, storage="memory", report=False,
                name="pbt-ends", scheduler="pbt", population=4, interval=5).wait()
    assert "every member of the population finished" in run.reason
    stubs = [s for s in run.lineage() if s.from_trial is not None and s.start == s.end]
    assert stubs and any(s.exploited for s in stubs)  # the case: exploits that made no step
    best = run.best_trial
    assert best.intermediate_values and max(best.intermediate_values) == 30  # it trained, to the end
    assert best.number not in {s.number for s in stubs}
    assert run.best_value == max(t.value for t in run.trials())
    assert run.best_params == best.params and run.best_schedule[-1]["trial"] == best.number


def test_pbt_explore_perturbs_by_the_factors_or_resamples():
    from hpt_jupyter.core.pbt import PBTSettings, PopulationScheduler, MemoryCheckpoints
    from hpt_jupyter.core.space import make_choice, make_float, make_int

    space = {"lr": make_float("lr", 1e-4, 1e-1, True, None), "layers": make_int("layers", 1, 8, False, 1),
             "act": make_choice("act", ["relu", "tanh", "gelu"])}
    scheduler = PopulationScheduler(PBTSettings(resample_probability=0.3), True, MemoryCheckpoints(), seed=0)
    params = {"lr": 0.01, "layers": 4, "act": "relu"}
    perturbed = resampled = 0
    for _ in range(300):
        new = scheduler.explore(params, space)
        assert 1e-4 <= new["lr"] <= 1e-1 and 1 <= new["layers"] <= 8 and new["act"] in ("relu", "tanh", "gelu")
        if any(abs(new["lr"] - params["lr"] * f) < 1e-12 for f in (0.8, 1.2)):
            perturbed += 1
        else:
            resampled += 1
        assert new["layers"] != 4 or new["act"] != "relu" or new["lr"] != params["lr"]
    assert 0.55 < perturbed / 300 < 0.85 and resampled  # about 1 - 0.3 of the numbers are perturbed


def test_pbt_on_worker_processes_ships_checkpoints_both_ways():
    def toy():  # defined here: a worker gets it by value (this test module is not importable there)
        h0, h1 = tune.float(0, 1, name="h0"), tune.float(0, 1, name="h1")
        state = tune.restore() or {"theta": (0.9, 0.9), "step": 0}
        (t0, t1), step = state["theta"], state["step"]
        q = 1.2 - (t0 ** 2 + t1 ** 2)
        for _ in range(200):
            time.sleep(0.05)  # the second worker starts while the first trains: both get segments
            t0, t1 = t0 - 0.02 * h0 * t0, t1 - 0.02 * h1 * t1
            q = 1.2 - (t0 ** 2 + t1 ** 2)
            tune.checkpoint({"theta": (t0, t1), "step": step + 1})
            tune.report(q, step)
            step += 1
        return q

    run = start(toy, n_trials=16, jobs=2, backend="process", storage="memory", report=False, name="pbt-process",
                direction="maximize", seed=0, scheduler="pbt", population=2, interval=4).wait()
    assert run.n_complete == 16, (run.status(), run.failures)
    exploited = _check_lineage(run, 2)  # every continuing segment started from its donor's step
    assert exploited


def test_checkpoints_no_member_can_return_to_are_deleted(tmp_path):
    counts = []
    run = start(toy, n_trials=24, jobs=2, storage="pbt.journal", directory=str(tmp_path), report=False,
                name="gc", direction="maximize", seed=2, scheduler="pbt", population=3, interval=3, launch=False)
    folder = tmp_path / "hpt_checkpoints" / "gc"
    run.subscribe(lambda e: counts.append(len(os.listdir(folder))) if e.kind == "trial_finished" else None)
    run.start().wait()
    assert run.n_complete == 24
    assert max(counts) <= 3 + 2  # at most: each member's latest, and what the running segments continue from
    latest = {}
    for segment in run.lineage():
        latest[segment.member] = segment.number
    assert {int(name.split(".")[0]) for name in os.listdir(folder)} == set(latest.values())


def test_pbt_refuses_what_it_cannot_do():
    for options, message in [
        (dict(pruner="median"), "drop --pruner"),
        (dict(direction=["maximize", "minimize"]), "one --direction"),
        (dict(population=1), "--population must be a whole number >= 2"),
        (dict(interval=0), "--interval must be"),
        (dict(scheduler="pbt(quantile=0.9)"), "quantile must be in (0, 0.5]"),
        (dict(scheduler="pbt(speed=2)"), "no setting called 'speed'"),
        (dict(scheduler="asha"), "--scheduler 'asha' is not one I know"),
    ]:
        settings = {"scheduler": "pbt", **options}
        with pytest.raises(TuneError) as raised:
            start(toy, storage="memory", report=False, name="refused", **settings)
        assert message in str(raised.value), (options, str(raised.value))
    with pytest.raises(TuneError, match="settings of --scheduler pbt"):
        start(toy, storage="memory", report=False, name="refused", population=3)
    run = start(toy, n_trials=4, storage="memory", report=False, name="no-steer", scheduler="pbt", population=2,
                interval=2, direction="maximize").wait()
    for steer in (lambda: run.narrow(h0=(0.1, 0.5)), lambda: run.enqueue({"h0": 0.5}), run.reset):
        with pytest.raises(TuneError, match="Population-based training explores"):
            steer()


def test_without_pbt_checkpoint_keeps_nothing_and_restore_gives_none():
    seen = []

    def objective():
        x = tune.float(0, 1)
        seen.append(tune.restore())
        tune.checkpoint({"big": object()})  # not even pickled
        tune.report(x, 0)
        return x

    run = start(objective, n_trials=3, storage="memory", report=False, name="plain").wait()
    assert run.n_complete == 3 and seen == [None] * 3
    with pytest.raises(TuneError, match="best_schedule exists for population-based training"):
        run.best_schedule


# --- through a kernel -------------------------------------------------------------------------

PBT_CELL = ("%%tune -n 24 --name pbt-crash --direction maximize --seed 0 --scheduler pbt --population 2 "
            "--interval 3 {mode}\n") + """h0 = tune.float(0, 1, name="h0")
h1 = tune.float(0, 1, name="h1")
import time
state = tune.restore() or {{"theta": (0.9, 0.9), "step": 0}}
(t0, t1), step = state["theta"], state["step"]
for _ in range(200):
    time.sleep(0.03)
    t0, t1 = t0 - 0.02 * h0 * t0, t1 - 0.02 * h1 * t1
    q = 1.2 - (t0 ** 2 + t1 ** 2)
    tune.checkpoint({{"theta": (t0, t1), "step": step + 1}})
    tune.report(q, step)
    step += 1
q
"""


def test_a_pbt_study_killed_with_its_kernel_resumes_from_its_checkpoints(kernel, tmp_path):
    assert kernel.run(PBT_CELL.format(mode="")).error is None
    store = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        trials = optuna.load_study(study_name="pbt-crash", storage=store).trials
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 5 and trials[-1].state == TrialState.RUNNING:
            break
        time.sleep(0.05)
    kernel.kill_and_restart()
    before = optuna.load_study(study_name="pbt-crash", storage=store).trials
    complete = [t for t in before if t.state == TrialState.COMPLETE]
    assert len(complete) >= 5
    latest = {}  # member -> its latest complete segment
    for trial in complete:
        latest[trial.user_attrs[PBT_KEY]["member"]] = trial
    folder = tmp_path / "hpt_checkpoints" / "pbt-crash"
    assert {t.number for t in latest.values()} <= {int(n.split(".")[0]) for n in os.listdir(folder)}

    assert kernel.run("%load_ext hpt_jupyter").error is None
    reply = kernel.run(PBT_CELL.format(mode="--resume"))
    assert reply.error is None, reply.error_text
    assert kernel.run("%tune wait").error is None
    after = optuna.load_study(study_name="pbt-crash", storage=store).trials
    assert len(after) == 24 and not [t for t in after if t.state == TrialState.RUNNING]
    resumed = [t for t in after if t.number >= len(before)]
    assert resumed[0].user_attrs[PBT_KEY]["from_trial"] is not None  # not a new member: the population went on
    went_on = 0
    for trial in resumed:
        info = trial.user_attrs[PBT_KEY]
        if info["from_trial"] is None or info["from_trial"] >= len(before):
            continue
        donor = after[info["from_trial"]]  # a segment from before the kill: a member's latest checkpoint
        assert donor.number == latest[info["parent"]].number
        assert min(trial.intermediate_values) == max(donor.intermediate_values) + 1  # from its checkpoint
        went_on += 1
    assert went_on >= 1
    assert {t.user_attrs[PBT_KEY]["member"] for t in resumed} == {0, 1}
    best = kernel.value("tune.last.best_schedule[-1]")
    assert kernel.value("(h0, h1)") == (best["h0"], best["h1"])  # the best member's final values injected
    header = next(h for h in kernel.html_widgets(reply.msg_id) if "sampler" in h)
    assert "PBT · population 2 · every 3 steps" in header


def test_magic_options_and_their_mistakes(kernel):
    page = "\n".join(kernel.run("%%tune?").pages)
    for option in ("--pruner", "--scheduler", "--population", "--interval", "--patience", "hyperband"):
        assert option in page, option
    for cell, message in [
        ('%%tune --pruner "hyperband(foo=1)" --storage memory\nx = tune.float(0, 1)\nx', "no setting called 'foo'"),
        ("%%tune --population 3 --storage memory\nx = tune.float(0, 1)\nx", "add --scheduler pbt"),
        ("%%tune --scheduler pbt --pruner median --storage memory\nx = tune.float(0, 1)\nx", "drop --pruner"),
        ("%%tune --patience 0 --storage memory\nx = tune.float(0, 1)\nx", "--patience must be a positive"),
    ]:
        reply = kernel.run(cell)
        assert reply.error is not None and reply.error["ename"] == "UsageError", cell
        assert message in reply.error["evalue"], (cell, reply.error["evalue"])
        assert "Traceback" not in reply.error_text
    assert kernel.value("len(tune.runs)") == 0
    reply = kernel.run('%%tune -n 12 --storage memory --seed 0 --name hb --pruner "hyperband(max_resource=8)"\n'
                       "x = tune.float(0, 1)\nfor s in range(8):\n    tune.report(x * (8 - s), s)\nx")
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait hb")
    assert kernel.value("tune.runs['hb'].n_pruned") > 0
    header = next(h for h in kernel.html_widgets(reply.msg_id) if "sampler" in h)
    assert "pruner hyperband(max_resource=8)" in header


def test_pruning_and_pbt_checkpoints_on_a_dask_cluster():
    import distributed  # the test extra installs it: no skip
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  processes=True) as cluster, distributed.Client(cluster) as client:
        def pruned():
            x = tune.float(0, 1)
            for step in range(6):
                tune.report(x + step * 0.2, step)
            return x

        run = start(pruned, n_trials=4, jobs=2, backend="dask", cluster=client, storage="memory", report=False,
                    name="dask-prune", pruner="threshold(upper=1.0)").wait()
        assert run.n_pruned == 4, run.status()

        def toy():
            h0, h1 = tune.float(0, 1, name="h0"), tune.float(0, 1, name="h1")
            state = tune.restore() or {"theta": (0.9, 0.9), "step": 0}
            (t0, t1), step = state["theta"], state["step"]
            q = 1.2 - (t0 ** 2 + t1 ** 2)
            for _ in range(200):
                time.sleep(0.02)
                t0, t1 = t0 - 0.02 * h0 * t0, t1 - 0.02 * h1 * t1
                q = 1.2 - (t0 ** 2 + t1 ** 2)
                tune.checkpoint({"theta": (t0, t1), "step": step + 1})
                tune.report(q, step)
                step += 1
            return q

        run = start(toy, n_trials=12, jobs=2, backend="dask", cluster=client, storage="memory", report=False,
                    name="dask-pbt", direction="maximize", seed=0, scheduler="pbt", population=2, interval=3).wait()
        assert run.n_complete == 12, (run.status(), run.failures)
        _check_lineage(run, 2)  # every continuing segment started where its checkpoint ended
        assert any(s.from_trial is not None for s in run.lineage())


def test_pbt_compares_members_at_the_same_step():
    """A member that is behind is not worse for that alone: with scores that rise with training,
    a member clones only one that scores at least as well at the same step."""
    def objective():
        x = tune.float(0, 1)
        step = tune.restore() or 0
        while step < 40:
            step += 1
            tune.checkpoint(step)
            tune.report(step + 0.01 * x, step)
        return step + 0.01 * x

    # exploring keeps the values (factor 1, no resampling); member 2 is the best at every step, and
    # with one trial at a time it is the last of each round: the others are ahead of it
    run = start(objective, n_trials=60, direction="maximize", seed=0, storage="memory", report=False,
                name="same-step", scheduler="pbt(resample_probability=0.0, factors=(1.0,))", population=3,
                interval=2, launch=False)
    for x in (0.5, 0.0, 1.0):
        run.study.enqueue_trial({"x": x})
    run.start().wait()
    lineage = run.lineage()
    exploits = [s for s in lineage if s.exploited]
    assert exploits
    for segment in exploits:  # x is kept by exploring: the clone has the donor's x
        own = max((s for s in lineage if s.member == segment.member and s.number < segment.number),
                  key=lambda s: s.number)
        assert segment.params["x"] >= own.params["x"], (segment, own)  # never a worse member's
    assert {s.params["x"] for s in lineage[-3:]} == {1.0}  # the best spread to the whole population
