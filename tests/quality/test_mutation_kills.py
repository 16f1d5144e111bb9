"""Tests written against mutation-testing survivors (scripts/mutation.sh, docs/testing.md):
selection's checkpoint fallback and the `selection` note of study.json, each with
values worked out by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from study.runs.selection import checkpoint_selection, selection_note

NAN = float("nan")


def _spec(*objectives, top_k=3, seeds=(0, 1), primary="macro_f1"):
    objs = [SimpleNamespace(condition=c, metric=m, mode=mode, key=f"{c}_{m}") for c, m, mode in objectives]
    return SimpleNamespace(objectives=objs, primary_metric=primary, top_k=top_k, seeds=list(seeds),
                           budget=SimpleNamespace(trials_per_cell=4), searcher=SimpleNamespace(kind="tpe"),
                           spaces=[], fixed={})


def test_checkpoint_falls_back_to_av_primary_max():
    assert checkpoint_selection(_spec(("worst_single", "loss", "min"))) == ("worst_single", "loss", "min")
    # a condition evaluated only once per trial, or a metric not tracked every epoch: av, primary, max
    assert checkpoint_selection(_spec(("robustness_noise_audio", "macro_f1", "max"))) == ("av", "macro_f1", "max")
    assert checkpoint_selection(_spec(("av", "f1__anger", "min"))) == ("av", "macro_f1", "max")
    assert checkpoint_selection(_spec(("noise_audio_0db", "loss", "min"), primary="ccc_mean")) == (
        "av", "ccc_mean", "max")


def test_selection_note_in_full():
    one = selection_note(_spec(("av", "macro_f1", "max")))
    assert one == {
        "split": "dev",
        "top_k": {"k": 3, "rule": "first_objective", "objectives": ["av_macro_f1"],
                  "text": "top 3 per cell on search/dev by av_macro_f1 (max); ties by configuration"},
        "checkpoint": {"condition": "av", "metric": "macro_f1", "mode": "max",
                       "text": "best dev epoch by av macro_f1 (max)"},
        "seeds": {"search": [2], "rerun": [0, 1],
                  "text": "rerun seeds are fresh: the search trials use seeds above every rerun seed"},
        "data_conditions": {"searched": [], "opt_in": False},
    }
    two = selection_note(_spec(("worst_single", "loss", "min"), ("av", "macro_f1", "max"), top_k=2))
    assert two["top_k"] == {
        "k": 2, "rule": "pareto_then_first", "objectives": ["worst_single_loss", "av_macro_f1"],
        "text": "top 2 per cell on search/dev: Pareto rank over worst_single_loss (min), av_macro_f1 (max), "
                "then worst_single_loss (min); ties by configuration"}
    assert two["checkpoint"]["text"] == "best dev epoch by worst_single loss (min)"


# ----------------------------------------------------------------------------- reports' statistics


def test_t_interval_by_hand():
    import pytest

    from reports.stats import interval, t_interval

    # [1, 2, 3]: mean 2, sd 1, sem 1/sqrt(3), t(0.975, 2) = 4.302653 -> half-width 2.484138
    m, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (m, lo, hi) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # [1, 3] (a NaN dropped): sd sqrt(2), sem 1, t(0.975, 1) = 12.706205
    assert t_interval([NAN, 1.0, 3.0]) == pytest.approx((2.0, 2 - 12.706205, 2 + 12.706205), abs=1e-6)
    assert t_interval([5.0]) == (5.0, 5.0, 5.0) and t_interval([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(np.isnan(t_interval([NAN])))
    assert interval([]).text() == "no runs"
    assert interval([3.0]).text() == "3.0000, n=1 (no interval)"
    assert interval([1.0, 3.0]).text() == "2.0000 ± 1.4142, 95% Student-t [-10.7062, 14.7062], n=2"


def test_paired_and_adjust_by_hand():
    import pytest

    from reports.stats import adjust, paired

    # differences 2, 3, 4: mean 3, sd 1, d_z 3; t = 3 sqrt(3), df 2: p = 1 - t / sqrt(2 + t^2)
    p = paired([3.0, 5.0, 7.0, NAN], [1.0, 2.0, 3.0, 0.0])
    assert p.n == 3 and p.d_z == pytest.approx(3.0) and p.p_value == pytest.approx(1 - 27 ** 0.5 / 29 ** 0.5)
    assert paired([1.0, 2.0], [1.0, 2.0]).p_value == 1.0 and paired([2.0, 3.0], [1.0, 2.0]).d_z == float("inf")
    # Holm on 0.01, 0.04, 0.03: 0.03, then max(0.03, 2 * 0.03) = 0.06, then max(0.06, 0.04)
    adj, rej = adjust([0.01, 0.04, 0.03, NAN])
    assert adj[:3].tolist() == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adj[3])
    assert rej.tolist() == [True, False, False, False]
    # Benjamini-Hochberg: 3 * 0.01 / 1, min(3 * 0.03 / 2, 0.04), 3 * 0.04 / 3
    adj, _ = adjust([0.01, 0.04, 0.03], "fdr_bh")
    assert adj.tolist() == pytest.approx([0.03, 0.04, 0.04])


# ----------------------------------------------------------------------------- normalisation


def test_relative_floor_centres_a_tiny_dimension_only():
    from study.data.normalize import _stream_stats

    # stds 100, 0.005, 0.02: floor = 1e-4 * 100 = 0.01, so only the 0.005 dimension is centred
    s = _stream_stats([np.array([[-100.0, -0.005, -0.02], [100.0, 0.005, 0.02]])])
    assert s.std.tolist() == [100.0, 0.005, 0.02] and s.scale.tolist() == [100.0, 1.0, 0.02]
    # a std exactly at the floor (0.01 = 1e-4 * 100) is only centred too: scaling needs std > floor
    s = _stream_stats([np.array([[-100.0, -0.01], [100.0, 0.01]])])
    assert s.std.tolist() == [100.0, 0.01] and s.scale.tolist() == [100.0, 1.0]


# ----------------------------------------------------------------------------- conditions (study/vocab.py)


def test_condition_names_and_areas_by_hand():
    from study.vocab import area_name, condition_name, is_area, miss_name, parse_condition

    assert [miss_name(r) for r in (0.0, 0.3, 0.25)] == ["miss_0.0", "miss_0.3", "miss_0.25"]
    assert condition_name("noise_audio", 10.0) == "noise_audio_10db" and condition_name("async", 200) == "async_200ms"
    assert parse_condition("miss_0.3").level == 0.3 and parse_condition("noise_video_0db").family == "noise_video"
    assert [is_area(x) for x in ("robustness", "robustness_drop_audio", "robustnessX", "av", 3, None)] == [
        True, True, False, False, False, False]
    assert (area_name("miss"), area_name("gap_video")) == ("robustness", "robustness_gap_video")


def test_robustness_area_over_a_range_not_starting_at_zero():
    import math

    import pytest

    from study.data.protocol import robustness

    # levels 0.2, 0.8, 0.4 (unordered): trapezoids 0.2 * (1 + 0.5) / 2 + 0.4 * 0.5 = 0.35, over 0.6
    assert robustness([0.2, 0.8, 0.4], [1.0, 0.5, 0.5]) == pytest.approx(0.35 / 0.6)
    assert math.isnan(robustness([], [])) and math.isnan(robustness([0.5], [1.0]))
    assert math.isnan(robustness([0.1, 0.3], [1.0, float("nan")]))
