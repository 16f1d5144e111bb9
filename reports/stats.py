"""Small statistics helpers: confidence intervals and paired tests (numpy + scipy)."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _degenerate(values) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Finite values, and the (mean, lo, hi) answer when there are fewer than two of them."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return x, (math.nan, math.nan, math.nan)
    m = float(x.mean())
    return x, ((m, m, m) if len(x) < 2 else None)


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) Student-t interval of the mean; lo = hi = mean for a single value."""
    x, done = _degenerate(values)
    if done:
        return done
    m = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return (m, m - half, m + half)


def bootstrap_ci(values, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap interval of the mean (deterministic for a seed)."""
    x, done = _degenerate(values)
    if done:
        return done
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))  # (n_boot, n)
    means = x[idx].mean(axis=1)
    a = (1 - level) / 2
    return (float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def paired_test(a, b, seed: int = 0) -> dict:
    """Paired comparison of a and b (same seeds, same order): mean of a - b, bootstrap CI, p-value."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    out = {"n": int(len(d)), "mean_diff": math.nan, "ci_lo": math.nan, "ci_hi": math.nan,
           "p_value": math.nan, "test": "none"}
    if len(d) == 0:
        return out
    out["mean_diff"], out["ci_lo"], out["ci_hi"] = bootstrap_ci(d, seed=seed)
    if len(d) < 2:
        return out
    if np.allclose(d, 0):
        return {**out, "p_value": 1.0, "test": "all differences zero"}
    return {**out, "p_value": float(stats.wilcoxon(d).pvalue), "test": "Wilcoxon signed-rank"}
