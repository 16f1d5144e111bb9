"""study/pareto.py, the one non-dominated sorting (top-k, MO-ASHA, the report's front), on
points whose fronts are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from study import pareto

NAN = float("nan")


def test_ranks_by_hand():
    # a=(3,1) b=(1,3) front; c=(2,1) dominated by a only; d=(1,1) dominated by a, c;
    # e=(3,1) ties a (not dominated: equal is not better); f=(nan, 5) -> (-inf, 5): front (best on 2)
    v = np.array([[3, 1], [1, 3], [2, 1], [1, 1], [3, 1], [NAN, 5]], float)
    assert pareto.ranks(v).tolist() == [0, 0, 1, 2, 0, 0]
    chain = np.array([[4, 4], [3, 3], [2, 2], [1, 1]], float)  # one front each, counted by one
    assert pareto.ranks(chain).tolist() == [0, 1, 2, 3]
    assert pareto.ranks(np.array([[1.0], [2.0], [2.0], [NAN]])).tolist() == [1, 0, 0, 2]  # one objective
    assert pareto.ranks(np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])).tolist() == [0, 0, 1]


def test_fronts_by_hand():
    pts = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.0, 0.0], [1.0, 1.0]])
    assert [sorted(f.tolist()) for f in pareto.fronts(pts)] == [[0, 1, 2, 5], [3], [4]]
    assert pareto.fronts(np.zeros((0, 2))) == []


def test_on_front_keeps_equal_points_and_puts_nan_last():
    x = [0.9, 0.8, 0.7, 0.6, 0.9, 0.5]
    y = [0.1, 0.5, 0.5, 0.6, 0.1, 0.2]
    # (0.9,0.1) twice: neither dominates the other, both on the front; (0.7,0.5) < (0.8,0.5),
    # (0.5,0.2) < (0.8,0.5)
    assert pareto.on_front(np.column_stack([x, y])).tolist() == [True, True, False, True, True, False]
    # a NaN is worse than any number: (nan, 1) is beaten by (0, 1), not on the front
    assert pareto.on_front(np.array([[NAN, 1.0], [0.0, 1.0]])).tolist() == [False, True]
    # a min objective is signed by the caller: minimising loss, (loss 0.2, f1 0.5) beats (0.3, 0.5)
    pts = np.array([[0.2, 0.5], [0.3, 0.5]]) * np.array([-1.0, 1.0])
    assert pareto.on_front(pts).tolist() == [True, False]


def test_dominates_matrix_and_shape_check():
    d = pareto.dominates(np.array([[2.0, 2.0], [1.0, 2.0], [2.0, 2.0]]))
    assert d.tolist() == [[False, True, False], [False, False, False], [False, True, False]]
    with pytest.raises(ValueError, match=r"\(N, M\)"):
        pareto.ranks(np.array([1.0, 2.0]))


def test_ranks_are_integers_and_integer_points_work():
    r = pareto.ranks(np.array([[1, 2], [0, 0]]))  # ints in, NaN handling needs floats inside
    assert r.dtype.kind == "i" and r.tolist() == [0, 1]
