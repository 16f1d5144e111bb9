"""Metric definitions on the edge cases that silently change a study's numbers: a class absent
from the truth, from the predictions, or from both; UA vs macro-F1 when classes are absent;
CCC's population moments and its undefined cases. Every expectation is computed by hand in the
comment beside it (never by the library call the code makes).

Definitions pinned here (study/training/metrics.py):
- WA (accuracy) = correct / N.
- UA (uar) = mean recall over the classes PRESENT IN THE TRUTH (a class no utterance has has no
  recall; it is left out, not counted as 0).
- macro-F1 = mean F1 over ALL dataset classes; a class with no true and no predicted sample, or
  no true positive, scores F1 = 0 (so a split that lacks a class is penalised on macro-F1, not UA).
- CCC = 2 cov / (var x + var y + (mean x - mean y)^2) with population (ddof 0) moments; NaN when
  the denominator is 0 (both constant and equal).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.training.metrics import categorical_metrics, ccc, dimensional_metrics

ABC = ["a", "b", "c"]


def test_class_absent_from_the_truth():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 2])      # c predicted once, never true
    m = categorical_metrics(y, p, ABC)
    assert m["accuracy"] == pytest.approx(2 / 4)
    # a: tp 1 fp 0 fn 1 -> P 1, R 1/2, F1 2/3; b: tp 1 fp 1 fn 1 -> 1/2; c: tp 0 fp 1 -> 0
    assert (m["f1__a"], m["f1__b"], m["f1__c"]) == pytest.approx((2 / 3, 1 / 2, 0.0))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)    # 7/18: c counts, as 0
    assert m["uar"] == pytest.approx((1 / 2 + 1 / 2) / 2)             # c has no recall: left out
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]        # rows = true class


def test_class_absent_from_the_predictions():
    y = np.array([0, 1, 2, 2])
    p = np.array([0, 1, 1, 1])      # c never predicted
    m = categorical_metrics(y, p, ABC)
    assert m["accuracy"] == pytest.approx(2 / 4)
    # a: P 1 R 1 -> 1; b: tp 1 fp 2 fn 0 -> P 1/3 R 1 -> F1 2(1/3)/(4/3) = 1/2; c: R 0 -> 0
    assert (m["f1__a"], m["f1__b"], m["f1__c"]) == pytest.approx((1.0, 1 / 2, 0.0))
    assert m["macro_f1"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert m["uar"] == pytest.approx((1 + 1 + 0) / 3)                 # c is in the truth: recall 0
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 2, 0]]


def test_class_absent_from_both_counts_in_macro_f1_not_in_ua():
    y = np.array([0, 1, 1])
    p = np.array([0, 1, 1])         # perfect on a and b; c and d appear nowhere
    m = categorical_metrics(y, p, ["a", "b", "c", "d"])
    assert m["accuracy"] == 1.0 and m["uar"] == 1.0                   # recall 1 on a, b
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0 + 0) / 4)        # 0.5
    assert (m["f1__c"], m["f1__d"]) == (0.0, 0.0)
    assert m["confusion"] == [[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_ua_is_not_wa_on_imbalanced_truth():
    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    p = np.zeros(10, int)           # always the majority class
    m = categorical_metrics(y, p, ["a", "b"])
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["uar"] == pytest.approx((1 + 0) / 2)
    # a: P 8/10 R 1 -> F1 2(0.8)/(1.8) = 8/9; b: 0
    assert m["macro_f1"] == pytest.approx((8 / 9 + 0) / 2)
    assert list(m) == ["accuracy", "uar", "macro_f1", "confusion", "f1__a", "f1__b"]


def test_ccc_uses_population_moments():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])
    # mean x 2, mean y 7/3; cov = ((-1)(-4/3) + 0 + (1)(5/3)) / 3 = 1; var x = 2/3;
    # var y = (16/9 + 1/9 + 25/9) / 3 = 14/9; (2 - 7/3)^2 = 1/9 -> 2 / (21/9) = 6/7
    assert ccc(x, y) == pytest.approx(6 / 7)
    assert ccc(y, x) == pytest.approx(6 / 7)                          # symmetric
    # constant prediction: cov 0 -> 0 (denominator var y + shift^2 = 2/3 + 4 > 0)
    assert ccc(np.zeros(3), x) == 0.0
    assert math.isnan(ccc(np.ones(3), np.ones(3)))                    # 0 / 0
    assert ccc([0, 0, 1], [0, 0, 1]) == pytest.approx(1.0)            # lists are accepted


def test_dimensional_metrics_keys_and_mean():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 2.0, 4.0])
    pred = np.stack([x, y, np.zeros(3)], 1)
    target = np.stack([y, y, x], 1)
    m = dimensional_metrics(pred, target, ["arousal", "valence", "dominance"])
    assert list(m) == ["ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean"]
    assert (m["ccc_arousal"], m["ccc_valence"], m["ccc_dominance"]) == pytest.approx((6 / 7, 1.0, 0.0))
    assert m["ccc_mean"] == pytest.approx((6 / 7 + 1 + 0) / 3)
    undefined = dimensional_metrics(np.ones((3, 2)), np.stack([np.ones(3), x], 1), ["arousal", "valence"])
    assert math.isnan(undefined["ccc_arousal"]) and math.isnan(undefined["ccc_mean"])  # NaN propagates


def test_no_utterance_gives_nan_scores_not_an_error():
    """A condition no utterance takes part in (e.g. video_only on a split without video): every
    score NaN (sklearn refuses empty input), the confusion matrix all zeros."""
    import math

    import numpy as np

    from study.training.metrics import categorical_metrics

    out = categorical_metrics(np.array([], int), np.array([], int), ["a", "b"])
    assert all(math.isnan(out[k]) for k in ("uar", "accuracy", "macro_f1", "f1__a", "f1__b"))
    assert out["confusion"] == [[0, 0], [0, 0]]
