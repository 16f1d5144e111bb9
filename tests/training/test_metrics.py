"""Metrics against hand-computed values and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from study.training.metrics import categorical_metrics, ccc, dimensional_metrics


def test_categorical_hand_computed():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    m = categorical_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # per class F1: a: P=1 R=2/3 -> 0.8; b: P=1/2 R=1/2 -> 0.5; c: P=1/2 R=1 -> 2/3
    assert m["f1__a"] == pytest.approx(0.8)
    assert m["f1__b"] == pytest.approx(0.5)
    assert m["f1__c"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_macro_f1_matches_sklearn_with_absent_class():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 3, 200)
    m = categorical_metrics(y, p, ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, labels=[0, 1, 2, 3], average="macro",
                                                   zero_division=0))
    assert m["f1__d"] == 0.0


def test_ccc():
    x = np.array([-1.5, -0.5, 0.5, 1.5])           # zero mean: ccc(x, -x) = -1
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)
    # shifted by 1: 2*cov / (var x + var y + 1) = 2*1.25 / (1.25 + 1.25 + 1)
    assert ccc(x, x + 1) == pytest.approx(2.5 / 3.5)
    assert ccc(2 * x + 3, 2 * (x + 1) + 3) == pytest.approx(ccc(x, x + 1))   # same affine map
    m = dimensional_metrics(np.stack([x, x, -x], 1), np.stack([x, x, x], 1),
                            ["arousal", "valence", "dominance"])
    assert m["ccc_mean"] == pytest.approx(1 / 3)
