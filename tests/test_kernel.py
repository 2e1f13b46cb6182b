"""%%tune through a real IPython kernel, driven over ZMQ as a notebook frontend drives it."""

from __future__ import annotations

import re

import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from kernel import Kernel

optuna.logging.set_verbosity(optuna.logging.WARNING)

SLOW_CELL = """%%tune -n {n} --storage memory --seed 0 --name slow --sampler random
a = tune.float(0, 1)
k = tune.choice(["x", "y"])
import time; time.sleep({sleep})
a if k == "x" else a / 2
"""


def test_cells_run_during_a_study_unless_they_use_a_tuned_name(kernel):
    tune_cell = kernel.run(SLOW_CELL.format(n=12, sleep=0.15))
    assert tune_cell.error is None, tune_cell.error_text
    free = kernel.run("print(1 + 1, tune.last.state, tune.last.n_finished)")
    two, state, finished = free.stdout.split()
    assert (two, state) == ("2", "running") and int(finished) < 12
    assert "Waiting" not in free.stdout

    uses = kernel.run("print('VALUES', a, k)")
    waited = " ".join(r.get("text/plain", "") for r in uses.results)  # a line updated when the wait ends
    assert "Waiting for 'slow'" in waited and "because this cell uses a, k" in waited
    a, k = uses.stdout.split("VALUES ")[1].split()
    best = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.best_params)")
    assert best[:2] == ("finished", 12)
    assert (float(a), k) == (best[2]["a"], best[2]["k"])
    # The live view is the tune cell's dashboard, kept up to date after the cell returned.
    header = next(h for h in kernel.html_widgets(tune_cell.msg_id, 1.0) if "sampler" in h)
    assert "12/12 trials" in header and "finished" in header
    assert not any(m["msg_type"] == "comm_open" for m in kernel.outputs[uses.msg_id])


def test_nothing_is_injected_while_another_cell_executes(kernel):
    assert kernel.run(SLOW_CELL.format(n=8, sleep=0.1)).error is None
    # This cell does not use the tuned names, so it runs at once; the study ends during it.
    busy = kernel.run("import time\nbefore = 'a' in globals()\ntime.sleep(2)\n"
                      "print(before, 'a' in globals(), tune.last.state)")
    assert busy.stdout.splitlines()[0].split() == ["False", "False", "finished"]
    # Injected after the busy cell's body, before the next cell: its message ends the busy cell.
    assert "Injected a=" in busy.stdout.splitlines()[-1]
    assert kernel.run("print('a' in globals())").stdout.split()[-1] == "True"


def test_run_object_results_wait_but_controls_do_not(kernel):
    assert kernel.run(SLOW_CELL.format(n=100, sleep=0.1)).error is None
    control = kernel.run("tune.last.pause(); print(tune.last.state)")
    assert "Waiting" not in control.stdout and control.stdout.split()[-1] == "paused"
    kernel.run("tune.last.resume(); tune.last.extend(1)")
    stop = kernel.run("%tune stop")
    assert "Stopping 'slow'" in stop.stdout and "Waiting" not in stop.stdout
    result = kernel.run("print(repr(tune.last.best_params))")  # a result: waits for the stop to land
    assert kernel.value("tune.last.state") == "stopped"
    assert eval(result.stdout.strip().splitlines()[-1]) == kernel.value("tune.last.best_params")
    assert kernel.value("tune.last.n_finished") < 101


def test_list_shows_stored_studies_and_creates_no_store(kernel, tmp_path):
    assert "No studies" in kernel.run("%tune list").stdout
    assert not (tmp_path / "hpt_studies.journal").exists()
    kernel.run("%%tune -n 2 --name stored-one --quiet\nx = tune.float(0, 1)\nx")
    kernel.run("%tune wait")
    kernel.kill_and_restart()
    kernel.run("%load_ext hpt_jupyter")
    listing = kernel.run("%tune list").stdout
    assert "stored-one" in listing and "stored" in listing


def test_load_ext_puts_tune_in_the_namespace_and_unload_takes_it_away(tmp_path):
    fresh = Kernel(str(tmp_path))
    try:
        assert fresh.run("%load_ext hpt_jupyter").error is None
        fresh.run("%%tune -n 3 --storage memory --quiet --name plain\nx = tune.float(0, 1)\nx")
        reply = fresh.run("print(sorted(tune.runs), tune.last.best_params['x'] >= 0)")
        assert reply.error is None and reply.stdout.strip().endswith("['plain'] True"), reply.error_text
        assert fresh.run("%unload_ext hpt_jupyter").error is None
        gone = fresh.run("tune.last")  # (a bare `tune` would be automagic for %tune)
        assert gone.error and gone.error["ename"] == "NameError"
    finally:
        fresh.shutdown()


def test_load_ext_leaves_a_users_own_tune_alone(tmp_path):
    fresh = Kernel(str(tmp_path))
    try:
        loaded = fresh.run("tune = 'my radio'\n%load_ext hpt_jupyter")
        assert loaded.error is None and "`tune` is already defined here" in loaded.stdout
        assert fresh.value("tune") == "my radio"
        # %%tune cells still get hpt_jupyter's tune.
        fresh.run("%%tune -n 2 --storage memory --quiet --name mine\nx = tune.float(0, 1)\nx\n")
        fresh.run("%tune wait")
        assert fresh.value("__import__('hpt_jupyter').tune.last.n_complete") == 2
        fresh.run("%unload_ext hpt_jupyter")
        assert fresh.value("tune") == "my radio"
    finally:
        fresh.shutdown()


def test_line_magics(kernel):
    tune_cell = kernel.run(SLOW_CELL.format(n=6, sleep=0.01))
    assert tune_cell.error is None
    waited = kernel.run("%tune wait\nprint('VALUE_OF_A', a)")
    assert waited.error is None and "Injected a=" in kernel.later_output(tune_cell.msg_id).stdout + waited.stdout
    assert float(waited.stdout.split("VALUE_OF_A ")[1]) == kernel.value("tune.last.best_params['a']")
    status = kernel.run("%tune status slow")
    assert "slow: finished" in status.stdout and "Top 5 trials:" in status.stdout
    listing = kernel.run("%tune list")
    assert "slow" in listing.stdout and "finished" in listing.stdout
    kernel.run("%tune more 3 slow\n%tune wait slow")
    assert kernel.value("tune.last.n_finished") == 9
    for command, message in [("%tune", "needs a command"), ("%tune frobnicate", "unknown command"),
                             ("%tune status nope", "No study named 'nope'"), ("%tune more x", "positive")]:
        reply = kernel.run(command)
        assert reply.error and reply.error["ename"] == "UsageError" and message in reply.error["evalue"]


def test_ipython_syntax_prints_and_multiple_objectives_in_a_tune_cell(kernel):
    reply = kernel.run(
        "%%tune -n 6 --storage memory --seed 0 --direction maximize minimize --name mo\n"
        "x = tune.float(0, 1)\n"
        "files = !echo shell-works\n"
        "doubled = %time x * 2\n"
        "print('trial says', files[0], round(doubled, 3))\n"
        "x, doubled\n"
    )
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait mo")
    later = kernel.later_output(reply.msg_id)
    assert later.stdout.count("trial says shell-works") == 6  # prints from trials land under the tune cell
    assert kernel.value("(tune.last.sampler_name, tune.last.n_complete, len(tune.last.best_value))") == ("auto", 6, 2)
    assert kernel.value("tune.last.sampler_text()").startswith("auto: gp")  # numeric two-objective space


def test_rerunning_a_cell_whose_study_still_runs_says_so(kernel):
    assert kernel.run(SLOW_CELL.format(n=50, sleep=0.1)).error is None
    again = kernel.run(SLOW_CELL.format(n=50, sleep=0.1))
    assert again.error["ename"] == "UsageError"
    assert "The study 'slow' is still running" in again.error["evalue"] and "%tune stop slow" in again.error["evalue"]
    kernel.run("%tune stop")


def test_help_shows_every_option_and_a_worked_example(kernel):
    page = "\n".join(kernel.run("%%tune?").pages)
    for option in ("--n-trials", "--timeout", "--direction", "--sampler", "--seed", "--name", "--storage",
                   "--resume", "--fresh", "--target", "--max-failures", "--refit", "--no-inject", "--quiet",
                   "%tune list", "%tune wait"):
        assert option in page, option
    assert "Example:" in page and "cross_val_score(model, X, y, cv=3).mean()" in page


def test_interrupting_a_waiting_cell_stops_the_study_and_injects_the_best_so_far(kernel):
    assert kernel.run(SLOW_CELL.format(n=200, sleep=0.1)).error is None
    msg_id = kernel.client.execute("print('VALUES', a, k)")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            "Waiting for" in m["content"].get("data", {}).get("text/plain", "") for m in kernel.outputs[msg_id]):
        kernel._drain(None, 0.2)
    time.sleep(0.5)
    kernel.manager.interrupt_kernel()
    reply = kernel.finish(msg_id, 60)
    assert reply.error is None, reply.error_text  # the cell went on with the best so far
    assert "Interrupted: stopping 'slow'" in reply.stdout and "Injected a=" in reply.stdout
    a, k = reply.stdout.split("VALUES ")[1].split()
    state, finished, best = kernel.value("(tune.last.state, tune.last.n_finished, tune.last.best_params)")
    assert state == "stopped" and 0 < finished < 200
    assert (float(a), k) == (best["a"], best["k"])


BAD_CELLS = [
    ("%%tune -n 0\nx = tune.float(0, 1)\nx", "-n/--n-trials must be a positive whole number, got 0"),
    ("%%tune -n many\nx = tune.float(0, 1)\nx", "invalid int value: 'many'"),
    ("%%tune --sampler foo\nx = tune.float(0, 1)\nx", "invalid choice: 'foo'"),
    ("%%tune --direction up\nx = tune.float(0, 1)\nx", "--direction 'up' is not one of"),
    ("%%tune --bogus\nx = tune.float(0, 1)\nx", "unrecognized arguments: --bogus"),
    ("%%tune --resume --fresh\nx = tune.float(0, 1)\nx", "not allowed with argument"),
    ("%%tune --storage nowhere\nx = tune.float(0, 1)\nx", "not a store I know"),
    ("%%tune --storage sub/dir/s.journal\nx = tune.float(0, 1)\nx", "does not exist"),
    ("%%tune --max-failures -1\nx = tune.float(0, 1)\nx", "--max-failures"),
    ("%%tune --direction maximize minimize --target 1\nx = tune.float(0, 1)\nx, x", "one objective only"),
    ("%%tune\nx = tune.float(1, 0)\nx", "Line 2: tune.float for 'x': the range is inverted"),
    ("%%tune\nx = tune.float(0.5, 0.5)\nx", "is empty"),
    ("%%tune\nx = tune.float(0, 1, log=True)\nx", "low must be > 0 on a log scale"),
    ("%%tune\nx = tune.choice([])\nx", "the list of options is empty"),
    ("%%tune\nx = tune.float(0, 1)\ny = x", "no final expression"),
    ("%%tune\nx = tune.float(0, 1)\nx = tune.int(1, 3)\nx", "Line 3: the name 'x' is already declared on line 2"),
    ("%%tune\nprint(tune.float(0, 1))\n1", "cannot tell what to call"),
    ("%%tune\nfor i in range(2):\n    u = tune.int(1, 3)\nu", "inside a loop"),
    ("%%tune\nx = (\n", "syntax error"),
    ("%%tune --stop soon\nx = tune.float(0, 1)\nx", "--stop 'soon' is not a rule I know"),
    ("%%tune --stop auto --direction minimize maximize\nx = tune.float(0, 1)\nx, x", "--stop auto weighs one score"),
]


def test_each_bad_input_gets_one_clear_message_and_no_trial_runs(kernel):
    for cell, message in BAD_CELLS:
        reply = kernel.run(cell)
        assert reply.error is not None, cell
        assert reply.error["ename"] == "UsageError", (cell, reply.error_text)
        assert message in reply.error["evalue"], (cell, reply.error["evalue"])
        assert reply.stderr.strip() == f"UsageError: {reply.error['evalue']}", cell  # one line, no traceback
        assert "hpt_jupyter" not in reply.error_text and "Traceback" not in reply.error_text, cell
    assert kernel.value("len(tune.runs)") == 0


def test_gp_sampler_gives_exactly_optunas_gp_trials(kernel):
    cell = ("%%tune -n 14 --sampler gp --seed 4 --storage memory --name gp\n"
            "a = tune.float(-3, 3)\nb = tune.int(1, 10)\nc = tune.choice(['x', 'y'])\n"
            "(a - 1) ** 2 + b + (c == 'y')\n")
    assert kernel.run(cell).error is None
    kernel.run("%tune wait gp")
    ours = kernel.value("[t.params for t in tune.runs['gp'].study.trials]")
    bare = kernel.value(
        "(lambda s: (s.optimize(lambda t: (t.suggest_float('a', -3, 3) - 1) ** 2 + t.suggest_int('b', 1, 10)"
        " + (t.suggest_categorical('c', ['x', 'y']) == 'y'), n_trials=14), [t.params for t in s.trials])[1])"
        "(__import__('optuna').create_study(sampler=__import__('optuna').samplers.GPSampler(seed=4)))"
    )
    assert len(ours) == 14 and ours == bare


def test_auto_sampler_and_auto_stop_say_what_they_do(kernel):
    kernel.run("from sklearn.datasets import load_wine\nfrom sklearn.linear_model import LogisticRegression\n"
               "from sklearn.model_selection import cross_val_score\nfrom sklearn.pipeline import make_pipeline\n"
               "from sklearn.preprocessing import StandardScaler\nX, y = load_wine(return_X_y=True)")
    reply = kernel.run(
        "%%tune -n 80 --direction maximize --sampler auto --stop auto --seed 0 --storage memory --name wine\n"
        "C = tune.float(1e-4, 1e2, log=True)\n"
        "scores = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500)), X, y, cv=5)\n"
        "tune.cv_scores(scores)\n"
        "scores.mean()\n")
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait wine")
    status = kernel.run("%tune status wine").stdout
    assert re.search(r"auto: (gp|tpe) \(1 numeric knob, \d+ trials: gp \d+% / tpe \d+%", status), status
    assert "stop auto" in status, status
    assert "more trials are unlikely to pay" in status and "cross-validation folds" in status, status
    assert kernel.value("tune.last.n_finished") < 80
    board = kernel.widgets(reply.msg_id, 1.0).values()
    header = next(s["value"] for s in board if s.get("_model_name") == "HTMLModel" and "sampler" in s["value"])
    # ended: which samplers auto chose and for how many trials, not what it would run next
    assert "auto chose" in header and "gp for" in header and "auto: gp (" not in header
    assert "stop auto" in header and "more trials are unlikely to pay" in header


def test_a_mistake_in_computed_arguments_stops_the_study_at_the_first_trial(kernel):
    kernel.run("low = 5")
    reply = kernel.run("%%tune -n 10 --storage memory\nx = tune.float(low, 1)\nx\n")
    assert reply.error is None
    later = kernel.run("%tune wait")
    assert kernel.value("tune.last.state") == "failed"
    assert kernel.value("tune.last.n_finished") == 1
    assert "the range is inverted" in kernel.value("tune.last.reason")


def test_failing_trial_traceback_points_at_the_cells_own_line(kernel):
    reply = kernel.run(
        "%%tune -n 10 --sampler random --seed 0 --storage memory --max-failures 0 --name f\n"
        "x = tune.float(0, 1)\n"
        "if x > 0.5:\n"
        "    raise ValueError(f'x too big: {x:.2f}')\n"
        "x\n"
    )
    assert reply.error is None
    kernel.run("%tune wait")
    failed = kernel.value("[n for n, _ in tune.last.failures]")
    assert failed
    text = kernel.value(f"tune.last.failure({failed[0]})")
    assert ", line 4, in <tune cell>" in text  # line 1 is %%tune
    assert "raise ValueError(f'x too big: {x:.2f}')" in text and "ValueError: x too big" in text
    assert "hpt_jupyter" not in text
    board = kernel.widgets(reply.msg_id, 1.0).values()
    header = next(s["value"] for s in board if s.get("_model_name") == "HTMLModel" and "sampler" in s["value"])
    assert f"{len(failed)} failed" in header
    picker = next(s for s in board if s.get("_model_name") == "DropdownModel" and "failed trials" in str(s))
    assert f"traceback of #{failed[0]}" in picker["_options_labels"]


def test_same_seed_same_trials_and_exactly_optunas_tpe(kernel):
    cell = ("%%tune -n 15 --sampler tpe --seed 3 --storage memory --name {name}\n"
            "a = tune.float(-3, 3)\nb = tune.int(1, 10)\nc = tune.choice(['x', 'y', 'z'])\n"
            "(a - 1) ** 2 + b + (c == 'y')\n")
    for name in ("s1", "s2"):
        assert kernel.run(cell.format(name=name) + f"\n").error is None
        kernel.run(f"%tune wait {name}")
    first = kernel.value("[t.params for t in tune.runs['s1'].study.trials]")
    second = kernel.value("[t.params for t in tune.runs['s2'].study.trials]")
    bare = kernel.value(
        "(lambda s: (s.optimize(lambda t: (t.suggest_float('a', -3, 3) - 1) ** 2 + t.suggest_int('b', 1, 10)"
        " + (t.suggest_categorical('c', ['x', 'y', 'z']) == 'y'), n_trials=15), [t.params for t in s.trials])[1])"
        "(__import__('optuna').create_study(sampler=__import__('optuna').samplers.TPESampler(seed=3)))"
    )
    assert len(first) == 15 and first == second == bare


def test_conditional_injection_and_refit(kernel):
    reply = kernel.run(
        "%%tune -n 25 --direction maximize --seed 1 --storage memory --refit\n"
        "C = tune.float(0.1, 10, log=True)\n"
        "kernel = tune.choice(['rbf', 'linear'])\n"
        "gamma = tune.float(1e-3, 1, log=True) if kernel != 'linear' else 'scale'\n"
        "model = ('model', C, kernel, gamma)\n"
        "(kernel == 'linear') * 10 - abs(C - 1)\n"
    )
    assert reply.error is None
    after = kernel.run("print(repr((C, kernel, gamma, model)))")
    # Injected after the tune cell if the study ended during it, else before this cell.
    assert "Refit: the cell ran once more" in kernel.later_output(reply.msg_id).stdout + after.stdout
    C, kern, gamma, model = eval(after.stdout.strip().splitlines()[-1])
    best = kernel.value("tune.last.best_params")
    assert kern == "linear" and gamma == "scale"  # exactly what the best trial's cell assigned
    assert (C, kern) == (best["C"], best["kernel"]) and model == ("model", C, "linear", "scale")


def test_no_inject_leaves_the_namespace_alone(kernel):
    kernel.run("%%tune -n 3 --storage memory --no-inject --quiet\nqq = tune.float(0, 1)\nqq")
    reply = kernel.run("%tune wait\nprint('qq' in globals())")
    assert reply.stdout.strip().splitlines() == ["False"]  # --quiet: nothing printed either


def test_kill_the_kernel_mid_study_and_resume(kernel, tmp_path):
    cell = ("%%tune -n 14 --name crash --seed 0 {mode}\n"
            "x = tune.float(0, 1)\nimport time; time.sleep(0.25)\nx\n")
    assert kernel.run(cell.format(mode="")).error is None
    store = JournalStorage(JournalFileBackend(str(tmp_path / "hpt_studies.journal")))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        trials = optuna.load_study(study_name="crash", storage=store).trials
        if sum(t.state == TrialState.COMPLETE for t in trials) >= 4 and trials[-1].state == TrialState.RUNNING:
            break
        time.sleep(0.05)
    kernel.kill_and_restart()
    before = optuna.load_study(study_name="crash", storage=store).trials
    completed = {t.number: (t.params, t.value) for t in before if t.state == TrialState.COMPLETE}
    interrupted = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(completed) >= 4 and len(interrupted) == 1

    assert kernel.run("%load_ext hpt_jupyter").error is None
    reply = kernel.run(cell.format(mode="--resume"))
    assert reply.error is None, reply.error_text
    kernel.run("%tune wait")
    header = next(h for h in kernel.html_widgets(reply.msg_id) if "sampler" in h)
    assert "resumed from" in header and f"trial {interrupted[0]} was cut off by a kernel restart" in header

    after = optuna.load_study(study_name="crash", storage=store).trials
    assert {t.number: (t.params, t.value) for t in after if t.number in completed} == completed
    cut = after[interrupted[0]]
    assert cut.state == TrialState.FAIL and "Interrupted" in cut.user_attrs["traceback"]
    assert len(after) == 14 and not [t for t in after if t.state == TrialState.RUNNING]
    assert kernel.value("tune.last.n_run") == 14 - len(before)
