"""Statistics of the report: intervals of a mean, paired comparisons and their multiple-comparison
correction. scipy and statsmodels do the statistics; this module only chooses and labels them.

- An interval of a mean over n runs (seeds, folds x seeds) is Student-t below BCA_MIN_N runs and
  scipy's BCa bootstrap from BCA_MIN_N on; every Interval carries its method and n, and a caller
  prints both (`Interval.text`). With n < 2 there is no interval (lo = hi = NaN).
- A paired comparison of a and b is a paired t-test (scipy.stats.ttest_rel) on the differences,
  with the Student-t interval of the mean difference and Cohen's d_z (mean difference / sd of the
  differences) as its effect size.
- A table of comparisons is corrected together (`adjust`: statsmodels' multipletests, Holm by
  default, Benjamini-Hochberg on request).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
BCA_MIN_N = 30  # from this many runs on, BCa bootstrap; below it, Student-t
BCA_RESAMPLES = 4999
CORRECTIONS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}  # statsmodels name -> printed name
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """Mean of n values with its confidence interval; `method` names how it was computed."""

    mean: float
    sd: float  # sample standard deviation (ddof 1); NaN for n < 2
    lo: float
    hi: float
    n: int
    method: str  # "Student-t" | "BCa bootstrap" | "none (n < 2)"
    level: float = LEVEL

    def text(self, digits: int = 4) -> str:
        """e.g. "0.6120 ± 0.0110, 95% Student-t [0.6059, 0.6181], n=15"."""
        if self.n == 0:
            return "no runs"
        f = f"{{:.{digits}f}}"
        if self.n < 2:
            return f"{f.format(self.mean)}, n=1 (no interval)"
        return (f"{f.format(self.mean)} ± {f.format(self.sd)}, {self.level:.0%} {self.method} "
                f"[{f.format(self.lo)}, {f.format(self.hi)}], n={self.n}")


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def interval(values, level: float = LEVEL, seed: int = 0) -> Interval:
    """Interval of the mean of the finite values: Student-t (scipy.stats.t.interval) for
    2 <= n < BCA_MIN_N, BCa bootstrap (scipy.stats.bootstrap, seeded) for n >= BCA_MIN_N."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, "none (n < 2)", level)
    m = float(x.mean())
    if n < 2:
        return Interval(m, math.nan, math.nan, math.nan, 1, "none (n < 2)", level)
    sd = float(x.std(ddof=1))
    if sd == 0:  # every value equal: the interval is the point (scipy would return NaN)
        return Interval(m, 0.0, m, m, n, "Student-t" if n < BCA_MIN_N else "BCa bootstrap", level)
    if n < BCA_MIN_N:
        lo, hi = stats.t.interval(level, n - 1, loc=m, scale=stats.sem(x))
        return Interval(m, sd, float(lo), float(hi), n, "Student-t", level)
    ci = stats.bootstrap((x,), np.mean, confidence_level=level, method="BCa", n_resamples=BCA_RESAMPLES,
                         rng=np.random.default_rng(seed)).confidence_interval
    return Interval(m, sd, float(ci.low), float(ci.high), n, "BCa bootstrap", level)


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) Student-t interval of the mean; lo = hi = mean for a single value (curves)."""
    x = _finite(values)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if len(x) < 2 or float(x.std(ddof=1)) == 0:
        return (m, m, m)
    lo, hi = stats.t.interval(level, len(x) - 1, loc=m, scale=stats.sem(x))
    return (m, float(lo), float(hi))


@dataclass(frozen=True)
class Paired:
    """Paired comparison of a and b: the interval of the mean difference a - b, Cohen's d_z and
    the two-sided p-value of the paired t-test."""

    diff: Interval
    d_z: float  # mean difference / sd of the differences; NaN for n < 2, 0 when every difference is 0
    p_value: float  # NaN for n < 2
    test: str

    @property
    def n(self) -> int:
        return self.diff.n


def paired(a, b, level: float = LEVEL) -> Paired:
    """a and b are aligned (same fold and seed at each position); pairs with a NaN are dropped."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = interval(a - b, level)
    if d.n < 2:
        return Paired(d, math.nan, math.nan, "none (fewer than 2 pairs)")
    if d.sd == 0:
        if d.mean == 0:
            return Paired(d, 0.0, 1.0, "paired t-test (every difference zero)")
        return Paired(d, math.copysign(math.inf, d.mean), 0.0, "paired t-test (constant difference)")
    return Paired(d, d.mean / d.sd, float(stats.ttest_rel(a, b).pvalue), "paired t-test")


def adjust(p_values, method: str = "holm", alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p-values, rejected at alpha) of one family of tests, through statsmodels'
    multipletests; NaN p-values (no test) stay NaN / False and do not count in the family."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: choose one of {', '.join(CORRECTIONS)}")
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    adj, rej = np.full(len(p), math.nan), np.zeros(len(p), dtype=bool)
    ok = np.isfinite(p)
    if ok.any():
        r, a, _, _ = multipletests(p[ok], alpha=alpha, method=method)
        adj[ok], rej[ok] = a, r
    return adj, rej
