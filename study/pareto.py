"""Pareto fronts by non-dominated sorting: the one implementation behind top-k selection
(study/runs/selection.py), MO-ASHA's promotions (study/runs/schedulers.py) and the report's
front (reports/gather.py). A leaf: numpy only.

Points are (N, M) arrays with larger better in every column (a caller signs a `min` objective
as -value); NaN counts as worse than any number. Point i dominates j when it is at least as good
in every column and better in one; equal points do not dominate each other (both stay on the
same front)."""

from __future__ import annotations

import numpy as np


def _clean(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"points must be (N, M), got shape {p.shape}")
    return np.where(np.isnan(p), -np.inf, p)


def dominates(points: np.ndarray) -> np.ndarray:
    """(N, N) bool: [i, j] when point i dominates point j."""
    p = _clean(points)
    ge = (p[:, None, :] >= p[None, :, :]).all(-1)  # (N, N): i at least as good as j everywhere
    gt = (p[:, None, :] > p[None, :, :]).any(-1)   # (N, N): i better than j somewhere
    return ge & gt


def fronts(points: np.ndarray) -> list[np.ndarray]:
    """Indices of the points by front, best first (front 0: dominated by none)."""
    dom = dominates(points)
    dominated_by = dom.sum(0)  # (N,): how many points dominate each
    out, left = [], np.ones(len(dom), bool)
    while left.any():
        front = np.flatnonzero(left & (dominated_by == 0))
        out.append(front)
        left[front] = False
        dominated_by = dominated_by - dom[front].sum(0)
    return out


def ranks(points: np.ndarray) -> np.ndarray:
    """(N,) int: each point's front index (0 = the Pareto front)."""
    out = np.zeros(len(points), dtype=int)
    for k, front in enumerate(fronts(points)):
        out[front] = k
    return out


def on_front(points: np.ndarray) -> np.ndarray:
    """(N,) bool: the points no other point dominates."""
    return ~dominates(points).any(0)
