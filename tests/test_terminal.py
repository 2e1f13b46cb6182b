"""Without a widget frontend: terminal IPython runs the same cell and prints text progress."""

from __future__ import annotations

import subprocess
import sys


def test_terminal_ipython_prints_progress_and_the_final_table(tmp_path):
    script = tmp_path / "session.ipy"
    script.write_text(
        "%load_ext hpt_jupyter\n"
        "get_ipython().run_cell('''%%tune -n 12 --seed 0 --direction maximize\n"
        "lr = tune.float(1e-4, 1e-1, log=True)\n"
        "import time; time.sleep(0.01)\n"
        "-abs(lr - 0.01)\n"
        "''')\n"
        "%tune wait\n"
        "print('LR', lr)\n"
    )
    result = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", str(script)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Tuning 'lr-" in out and "running 12 trials in the background" in out
    assert "finished: budget reached (12 trials)" in out and "Top 5 trials:" in out
    assert "Injected lr=" in out
    injected = float(out.split("LR ")[1].split()[0])
    table_best = out.split("Top 5 trials:")[1].splitlines()[2].split()
    assert abs(injected - float(table_best[2])) <= 1e-4 * injected  # the table shows 5 significant digits


def test_terminal_ipython_prints_the_scheduler_and_the_best_members_schedule(tmp_path):
    script = tmp_path / "session.ipy"
    script.write_text(
        "%load_ext hpt_jupyter\n"
        "get_ipython().run_cell('''%%tune -n 24 --seed 0 --direction maximize --storage memory --name pop"
        " --scheduler pbt --population 3 --interval 4\n"
        "h0 = tune.float(0, 1)\n"
        "h1 = tune.float(0, 1)\n"
        "state = tune.restore() or {\"theta\": [0.9, 0.9], \"step\": 0}\n"
        "t0, t1 = state[\"theta\"]\n"
        "step = state[\"step\"]\n"
        "for _ in range(1000):\n"
        "    t0, t1 = t0 - 0.02 * h0 * t0, t1 - 0.02 * h1 * t1\n"
        "    step += 1\n"
        "    q = 1.2 - (t0 ** 2 + t1 ** 2)\n"
        "    tune.checkpoint({\"theta\": [t0, t1], \"step\": step})\n"
        "    tune.report(q, step)\n"
        "q\n"
        "''')\n"
        "%tune wait\n"
        "print('SCHEDULE', [(e['start'], e['end'], e['member']) for e in tune.last.best_schedule])\n"
    )
    result = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", str(script)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    start_line = next(line for line in out.splitlines() if line.startswith("Tuning 'pop'"))
    assert "· PBT · population 3 · every 4 steps ·" in start_line
    schedule = eval(out.split("SCHEDULE ")[1].splitlines()[0])  # noqa: S307 - our own repr of tuples
    assert len(schedule) >= 2
    table = out.split("Best member's schedule (")[1]
    assert out.index("Top 5 trials:") < out.index("Best member's schedule (")  # after the top trials
    lines = table.splitlines()
    assert lines[1].split() == ["steps", "member", "h0", "h1", "value"]
    rows = [line.split() for line in lines[2:] if line.startswith("  ") and "-" in line.split()[0]]
    # One row per stretch of the schedule: together they cover its steps in order, and the
    # last row is the best member's latest segment.
    assert rows[0][0].split("-")[0] == str(schedule[0][0])
    assert rows[-1][0] == f"{schedule[-1][0]}-{schedule[-1][1]}" and rows[-1][1] == str(schedule[-1][2])
    if "rows not shown" not in lines[0]:
        starts = [int(r[0].split("-")[0]) for r in rows]
        assert starts == sorted(starts) and len(rows) <= len(schedule)


def test_the_start_line_names_the_pruner_and_the_progress_counts_pruned_trials():
    import io

    from hpt_jupyter import start, tune
    from hpt_jupyter.views.text import TextReporter

    def reporting():
        x = tune.float(0, 1, name="x")
        for step in range(3):
            tune.report(x, step)
        return x

    run = start(reporting, n_trials=20, storage="memory", report=False, name="pruny", seed=0,
                pruner="threshold(upper=0.5)", launch=False)
    stream = io.StringIO()
    TextReporter(run, stream=stream)
    run.start().wait()
    out = stream.getvalue()
    assert run.n_pruned > 0
    assert out.startswith("Tuning 'pruny' · ") and "· pruner threshold(upper=0.5) ·" in out.splitlines()[0]
    assert f"{run.n_pruned} pruned" in out
    assert "Best member's schedule" not in out  # not a PBT run
