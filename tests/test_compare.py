"""Comparing studies (``hpt_jupyter.compare`` / ``%tune compare``): the histories of best so far,
the side-by-side table and the spaces' differences, in process and from a real kernel's widgets."""

from __future__ import annotations

import html
import math
import re

import bqplot
import numpy as np
import optuna
import pytest

from hpt_jupyter import TuneError, compare, start, tune
from test_dashboard import _decoded_widgets, _figure_marks

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base():
    x = tune.float(0, 1)
    n = tune.int(1, 9)
    kind = tune.choice(["a", "b"])
    return (x - 0.3) ** 2 + n / 10 + (kind == "b")


def wider():  # x's range widened, n stepped, kind's options changed, a knob added
    x = tune.float(0, 2)
    n = tune.int(1, 9, step=2)
    kind = tune.choice(["a", "c"])
    lr = tune.float(1e-3, 1, log=True)
    return (x - 0.3) ** 2 + n / 10 + (kind == "c") + lr


def floaty():  # x on a log scale, n a float
    x = tune.float(0.01, 1, log=True)
    n = tune.float(1, 9)
    kind = tune.choice(["a", "b"])
    return (x - 0.3) ** 2 + n / 10 + (kind == "b")


def run(objective, name, storage, n=8, **options):
    return start(objective, n_trials=n, storage=storage, name=name, report=False, sampler="random", seed=0,
                 **options).wait()


def running_best(values, maximize=False):
    """The best so far after each value, computed here from the trials' own values."""
    best, out = None, []
    for v in values:
        best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return out


def test_spaces_that_differ_are_listed_and_each_study_is_found_by_any_of_its_names(tmp_path):
    journal, url = str(tmp_path / "a.journal"), f"sqlite:///{tmp_path / 'b.db'}"
    run(base, "A", journal)
    wide = run(wider, "B", url)
    run(floaty, "C", "memory")
    # by NAME@STORE (and not a run of this kernel: one of the same name in another store)
    run(base, "A", "memory", n=2)
    comparison = compare(f"A@{journal}", wide, "C")  # by a Run, and by the plain name of a kernel run
    assert comparison.labels == ["A", "B", "C"]
    assert comparison.differences == [
        "x: range [0, 1] in A; [0, 2] in B; [0.01, 1] in C",
        "x: scale linear in A, B; log in C",
        "n: kind int in A, B; float in C",
        "n: step 1 in A; 2 in B",
        "kind: options ['a', 'b'] in A, C; ['a', 'c'] in B",
        "lr: only in B",
    ]
    assert comparison.direction_note == ""

    frame = comparison.to_frame()
    assert list(frame.columns) == ["A", "B", "C"]
    stored = optuna.load_study(study_name="A", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal))).trials
    assert len(stored) == 8 and frame.loc["trials", "A"] == 8  # the journal's 8, not memory's 2
    for label, trials in (("A", stored), ("B", wide.study.trials), ("C", tune.runs["C"].study.trials)):
        best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: (t.value, t.number))
        assert frame.loc["best value", label] == best.value and frame.loc["best trial", label] == best.number
        assert comparison.best[label] == (best.value, best.params)
        for knob in ("x", "n", "kind"):
            assert frame.loc[knob, label] == best.params[knob]
    assert frame.loc["lr", "A"] == frame.loc["lr", "C"] == "—"
    assert frame.loc["lr", "B"] == comparison.best["B"][1]["lr"]
    assert frame.loc["store", "A"] == journal and frame.loc["store", "B"].endswith("b.db")
    assert frame.loc["direction"].tolist() == ["minimize"] * 3

    text = repr(comparison)
    assert "where the spaces differ:" in text and "  lr: only in B" in text
    assert text.count("—") == 2  # lr in A and C

    same = compare("C", run(floaty, "C2", "memory", n=3))
    assert same.differences == [] and "same space" in repr(same)
    assert "<b>Same space</b>" in same.differences_html()


def constrained():
    x = tune.float(0, 1)
    tune.constraint(0.5 - x)  # feasible when x >= 0.5: the small (better) values break it
    return x


def upward():
    x = tune.float(0, 1)
    return x


def test_best_so_far_counts_only_feasible_trials_in_each_studys_own_direction(tmp_path):
    url = f"sqlite:///{tmp_path / 'both.db'}"
    run(constrained, "lo", url, n=16)
    run(upward, "hi", url, n=12, direction="maximize")
    tune.runs.clear()  # read back from the store named by storage=, as another kernel would
    comparison = compare("lo", "hi", storage=url)
    assert comparison.direction_note == ("Directions differ (lo: minimize, hi: maximize): each line is the best so "
                                         "far in its study's own direction.")

    for label, maximize, feasible in (("lo", False, lambda t: t.params["x"] >= 0.5), ("hi", True, lambda t: True)):
        trials = optuna.load_study(study_name=label, storage=url).trials
        kept = [t for t in trials if t.state.name == "COMPLETE" and feasible(t)]
        started = min(t.datetime_start for t in trials)
        history = comparison.histories[label]
        assert [n for n, _, _ in history] == [t.number for t in kept]
        assert [v for _, _, v in history] == running_best([t.value for t in kept], maximize)
        assert [s for _, s, _ in history] == pytest.approx(
            [(t.datetime_complete - started).total_seconds() for t in kept])
        best = [v for _, _, v in history]
        assert best == sorted(best, reverse=not maximize)  # monotone
        timed = comparison.by_time[label]
        assert [s for s, _ in timed] == sorted(s for s, _ in timed)
        assert timed[-1][1] == best[-1] == comparison.best[label][0]

    lo = optuna.load_study(study_name="lo", storage=url).trials
    infeasible = [t for t in lo if t.params["x"] < 0.5]
    # the check has teeth: an infeasible trial scored better than the best feasible one
    assert infeasible and min(t.value for t in infeasible) < comparison.best["lo"][0]
    frame = comparison.to_frame()
    assert frame.loc["infeasible", "lo"] == len(infeasible) and frame.loc["infeasible", "hi"] == 0
    assert frame.loc["complete", "lo"] == 16

    widget = comparison.widget  # the chart: one step line per study, by trial and by time
    assert isinstance(comparison.y_axis.scale, bqplot.LinearScale)  # values within a decade
    for label, line in comparison.lines.items():
        assert line.y.tolist() == [v for _, _, v in comparison.histories[label]]
        assert line.x.tolist() == [n for n, _, _ in comparison.histories[label]]
    comparison.x_choice.value = "time"
    for label, line in comparison.lines.items():
        assert line.x.tolist() == [s for s, _ in comparison.by_time[label]]
    assert comparison.x_axis.label.startswith("seconds")
    assert "each study's own direction" in comparison.y_axis.label
    assert "hpt-directions" in widget.children[0].value


def test_values_spanning_decades_are_drawn_on_a_log_axis_and_a_study_without_a_complete_trial_has_no_line():
    def big():
        x = tune.float(0, 1)
        return 1000 + x

    def small():
        x = tune.float(0, 1)
        return 0.001 * (1 + x)

    def broken():
        tune.float(0, 1, name="x")
        raise ValueError("no score")

    run(big, "big", "memory", n=4)
    run(small, "small", "memory", n=4)
    run(broken, "broken", "memory", n=3, max_failures=2)
    comparison = compare("big", "small", "broken")
    assert comparison.histories["broken"] == [] and comparison.best["broken"] == (None, {})
    comparison.widget
    assert isinstance(comparison.y_axis.scale, bqplot.LogScale)
    assert list(comparison.lines) == ["big", "small"]
    text = repr(comparison)
    assert "broken: no complete trial" in text
    assert re.search(r"best value .*no complete trial", text)


def test_refusals_say_what_to_do_in_one_line(tmp_path):
    run(base, "A", "memory", n=3)
    with pytest.raises(TuneError, match=r"two studies or more \(got 1\)"):
        compare("A")

    def two():
        x = tune.float(0, 1)
        return x, 1 - x

    run(two, "mo", "memory", n=3, direction=["minimize", "minimize"])
    with pytest.raises(TuneError, match="'mo' has 2 objectives") as refused:
        compare("A", "mo")
    assert "\n" not in str(refused.value) and "Pareto front" in str(refused.value)
    with pytest.raises(TuneError, match="No study named 'nope'"):
        compare("A", "nope", storage=str(tmp_path / "empty.journal"))
    with pytest.raises(TuneError, match="named twice"):
        compare("A", "A")


def _table_cells(table: str) -> dict[str, list[str]]:
    """The comparison table's rows: label -> the cells' text."""
    rows = {}
    for row in re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", table):
        rows[html.unescape(row[0])] = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row[1])]
    return rows


def test_tune_compare_in_a_real_kernel_draws_each_best_so_far_and_the_table(kernel):
    for name, body in (("A", "x = tune.float(0, 1)\n(x - 0.3) ** 2\n"),
                       ("B", "x = tune.float(0, 2)\nn = tune.int(1, 3)\n(x - 0.3) ** 2 + n / 10\n")):
        cell = kernel.run(f"%%tune -n 6 --seed 0 --sampler random --name {name} --quiet\n{body}")
        assert cell.error is None, cell.error_text
    shown = kernel.run("%tune compare A B")  # waits for both, then shows the widget
    assert shown.error is None, shown.error_text
    values = {name: kernel.value(f"[t.value for t in tune.runs[{name!r}].trials()]") for name in "AB"}
    numbers = {name: kernel.value(f"[t.number for t in tune.runs[{name!r}].trials()]") for name in "AB"}
    assert all(len(v) == 6 for v in values.values())

    states = _decoded_widgets(kernel, shown.msg_id, 0.5)
    lines = [m for m in _figure_marks(states, "best so far") if m["_model_name"] == "LinesModel"]
    assert len(lines) == 2  # one line per study
    for mark, name in zip(lines, "AB"):
        assert mark["labels"] == [name]
        assert np.asarray(mark["y"]).tolist() == running_best(values[name])
        assert np.asarray(mark["x"]).tolist() == numbers[name]

    table = next(s["value"] for s in states.values() if "hpt-compare" in str(s.get("value", "")))
    rows = _table_cells(table)
    for column, name in enumerate("AB"):
        best = min(values[name])
        shown_value, shown_number = re.fullmatch(r"(\S+) \(#(\d+)\)", rows["best value"][column]).groups()
        assert math.isclose(float(shown_value), best, rel_tol=1e-5)
        assert int(shown_number) == numbers[name][values[name].index(best)]
        assert rows["trials"][column] == "6"
    assert rows["n"][0] == "—" and rows["n"][1] in {"1", "2", "3"}
    differences = next(s["value"] for s in states.values() if "hpt-differences" in str(s.get("value", "")))
    assert "x: range [0, 1] in A; [0, 2] in B" in html.unescape(differences)
    assert "n: only in B" in differences
    # the text beside the widget, for viewers without widgets
    plain = next(r["text/plain"] for r in shown.results if "application/vnd.jupyter.widget-view+json" in r)
    assert plain.startswith("Comparing A, B") and "n: only in B" in plain
