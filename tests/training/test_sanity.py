"""Sanity flags (study/training/sanity.py) on hand-made predictions, and their results columns."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from study.runs.results import TrialRecord, trial_rows
from study.runs.spec import spec_from_dict
from study.training.sanity import chance_f1, chance_margin, degenerate, row_flag
from study.training.session import Session


def _onehot(classes: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[classes] * 4.0                # (N, K) logits


def test_chance_level_is_the_best_input_blind_macro_f1():
    balanced = np.repeat(np.arange(6), 10)
    assert chance_f1(balanced, 6) == pytest.approx(1 / 6)
    skewed = np.array([0] * 50 + [1] * 25 + [2] * 25)
    # uniform guessing 0.3238, prior guessing 1/3, always-majority 0.2222 -> 1/3
    assert chance_f1(skewed, 3) == pytest.approx(1 / 3)
    very = np.array([0] * 90 + [1] * 5 + [2] * 5)
    # uniform 0.2201, always-majority 2*.9/1.9/3 = 0.3158, prior guessing 1/K = 1/3
    assert chance_f1(very, 3) == pytest.approx(1 / 3)
    assert chance_margin(1 / 3, 600) == pytest.approx(2 * math.sqrt(2 / 9 / 600))


def test_each_categorical_flag_from_hand_made_predictions():
    label = np.repeat(np.arange(3), 200)                              # n = 600, chance 1/3
    threshold = 1 / 3 + chance_margin(1 / 3, 600)                     # 0.3718
    good = _onehot(label, 3)
    assert row_flag(good, "categorical", {"macro_f1": 1.0}, label, 3) is None
    nan = good.copy()
    nan[5, 1] = np.nan
    assert row_flag(nan, "categorical", {"macro_f1": 1.0}, label, 3) == "nan"
    inf = good.copy()
    inf[0, 0] = np.inf
    assert row_flag(inf, "categorical", {"macro_f1": 1.0}, label, 3) == "nan"
    one = _onehot(np.zeros(600, int), 3)
    assert row_flag(one, "categorical", {"macro_f1": 1 / 6}, label, 3) == "one_class"
    mixed = _onehot(np.roll(label, 7), 3)                             # several classes predicted
    assert row_flag(mixed, "categorical", {"macro_f1": threshold - 0.01}, label, 3) == "chance"
    assert row_flag(mixed, "categorical", {"macro_f1": threshold + 0.01}, label, 3) is None


def test_dimensional_flags():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((400, 3)).astype(np.float32)
    assert row_flag(target, "dimensional", {"ccc_mean": 0.9}) is None
    assert row_flag(np.zeros_like(target), "dimensional", {"ccc_mean": 0.0}) == "chance"
    assert row_flag(target, "dimensional", {"ccc_mean": 2 / 20 - 0.01}) == "chance"  # 2/sqrt(400)
    assert row_flag(target, "dimensional", {"ccc_mean": 2 / 20 + 0.01}) is None
    bad = target.copy()
    bad[3, 2] = np.nan
    assert row_flag(bad, "dimensional", {"ccc_mean": 0.9}) == "nan"


def test_session_metrics_flag_rows_and_blank_non_finite_scores():
    stub = SimpleNamespace(cfg=SimpleNamespace(task="categorical"),
                           ds=SimpleNamespace(classes=["a", "b", "c"]))
    label = np.repeat(np.arange(3), 10)
    target = np.eye(3, dtype=np.float32)[label]
    row = Session._metrics(stub, _onehot(label, 3), target, label)
    assert row["flag"] is None and row["macro_f1"] == 1.0
    pred = _onehot(label, 3)
    pred[0] = np.nan
    row = Session._metrics(stub, pred, target, label)
    assert row["flag"] == "nan" and math.isnan(row["macro_f1"]) and math.isnan(row["loss"])
    row = Session._metrics(stub, _onehot(np.full(30, 2), 3), target, label)
    assert row["flag"] == "one_class" and row["macro_f1"] == pytest.approx(1 / 6)


def test_trial_degenerate_looks_at_the_three_named_conditions():
    rows = [{"condition": "av", "flag": None}, {"condition": "audio_only", "flag": None},
            {"condition": "video_only", "flag": None}, {"condition": "miss_0.9", "flag": "chance"}]
    assert not degenerate(rows)
    rows[2]["flag"] = "one_class"
    assert degenerate(rows)


def test_results_rows_carry_flag_degenerate_normalize_and_unpaired_share():
    spec = spec_from_dict({"name": "t", "dataset": {"synth": {"scale": "tiny"}},
                           "spaces": ["optimisation"], "budget": {"trials_per_cell": 2}})
    flat = {"fusion": "vavl", "train_missing_rate": 0.5, "seed": 4, "normalize": True}
    rows = [{"condition": "av", "test_missing_rate": None, "macro_f1": 0.6, "flag": None},
            {"condition": "video_only", "test_missing_rate": None, "macro_f1": 0.17,
             "flag": "one_class"}]
    curves = pd.DataFrame({"epoch": [1, 2, 2, 3], "unpaired_share": [0.5, 0.6, 0.6, 0.7],
                           "train_loss": [1.0, 0.9, 0.9, 0.8], "time_total_s": [1, 2, 2, 3]})
    rec = TrialRecord("t1", flat, {"best_rows": json.dumps(rows), "finished": True,
                                   "normalize": True, "unpaired_share": 0.7}, None, curves)
    out = pd.DataFrame(trial_rows(rec, spec=spec, stage="search", trial_id="s-t1",
                                  parent_trial_id=None, searched=[]))
    assert out.flag.isna().tolist() == [True, False] and out.flag.iloc[1] == "one_class"
    assert out.degenerate.all()
    assert out.normalize.all() and out.unpaired_share.eq(0.6).all()  # mean over epochs 1..3
