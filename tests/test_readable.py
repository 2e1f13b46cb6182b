"""The choices that make charts and tables readable: ticks, labels, ranges, formats."""

from __future__ import annotations

import math

from hpt_jupyter.views.readable import (ColumnFormat, duration, linear_ticks, log_ticks, number, ranks,
                                        robust_range, tick_labels)


def test_log_axes_tick_at_decades_with_compact_labels_of_one_style():
    ticks = log_ticks(1e-5, 1e-1)
    assert ticks == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert list(tick_labels(ticks).values()) == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1"]
    many = log_ticks(1e-12, 1e3, max_ticks=6)
    assert len(many) <= 6 and all(math.log10(t) == round(math.log10(t)) for t in many)


def test_short_log_ranges_tick_at_1_2_5_steps():
    assert log_ticks(16, 512) == [20, 50, 100, 200, 500]
    assert tick_labels(log_ticks(16, 512)) == {"20": "20", "50": "50", "100": "100", "200": "200", "500": "500"}
    assert log_ticks(1e-4, 1e-3) == [1e-4, 2e-4, 5e-4, 1e-3]
    assert len(log_ticks(0.3, 0.9)) >= 3  # under a decade: linear steps inside it


def test_tick_label_keys_are_how_javascript_prints_the_values():
    # bqplot looks a tick's label up by String(value): positional from 1e-6, exponent below
    assert set(tick_labels([1e-5, 2e-5])) == {"0.00001", "0.00002"}
    assert set(tick_labels([1e-7])) == {"1e-7"}
    assert set(tick_labels([3.0, 0.25])) == {"3", "0.25"}
    ticks = log_ticks(2e-5, 5e-4)
    assert ticks[:2] == [2e-5, 5e-5]  # no float noise (2.0000000000000002e-05) in a key
    assert set(tick_labels(ticks)) == {"0.00002", "0.00005", "0.0001", "0.0002", "0.0005"}


def test_integer_axes_tick_at_whole_numbers():
    assert linear_ticks(0, 1.5, 8, integer=True) == [0, 1]
    assert linear_ticks(0, 29, 8, integer=True) == [0, 5, 10, 15, 20, 25]
    assert all(t == int(t) for t in linear_ticks(3, 997, 10, integer=True))
    assert linear_ticks(0.1, 0.99, 6) == [0.2, 0.4, 0.6, 0.8]


def test_one_outlier_does_not_stretch_the_robust_range_but_the_best_stays_in_it():
    scores = [0.95, 0.96, 0.97, 0.955, 0.965, 0.958, 0.962, 0.952, 0.968, 0.961, 0.1]  # one diverged
    low, high = robust_range(scores, keep=[0.97])
    assert 0.1 < low < 0.95 and high >= 0.97
    assert robust_range([0.1 * i for i in range(12)]) is None  # nothing outside: every point
    assert robust_range([0.95, 0.96, 0.97, 0.955, 0.1]) is None  # a handful of scores: every one matters
    assert robust_range(scores, keep=[0.05]) is None  # the best (minimising) is the outlier: all shown


def test_ranks_spread_colours_however_far_an_outlier_lies():
    assert ranks([0.99, 0.98, -100.0], higher_is_better=True) == [1.0, 0.5, 0.0]
    assert ranks([3.0, 1.0, 2.0], higher_is_better=False) == [0.0, 1.0, 0.5]


def test_durations_and_numbers_read_like_a_person_writes_them():
    assert [duration(0.798026), duration(12.34), duration(72), duration(3725)] == \
        ["0.80 s", "12.3 s", "1 min 12 s", "1 h 2 min"]
    assert duration(None) == ""
    assert [number(0.9997512), number(1e-5), number(120.0)] == ["0.9998", "1e-5", "120"]


def test_a_column_keeps_one_format():
    small = ColumnFormat([1e-6, 0.00376658, 1.35317e-06])
    assert [small(v) for v in (1e-6, 0.00376658, 1.35317e-06)] == ["1.000e-6", "3.767e-3", "1.353e-6"]
    plain = ColumnFormat([0.9975, 0.5, 0.12345])
    assert [plain(v) for v in (0.9975, 0.5, 0.12345)] == ["0.9975", "0.5000", "0.1235"]
    assert plain("rbf") == "rbf" and plain(None) == "" and plain(3) == "3"
