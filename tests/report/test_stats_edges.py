"""reports/stats.py on its edges, every field checked (issue 26: the mutants that survived the
earlier tests): no run, one run, equal runs, a non-default level, None among the values, the BCa
bootstrap against an independent numpy BCa, and the paired / adjusted cases."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from reports import stats


def assert_nan(*values):
    for v in values:
        assert isinstance(v, float) and math.isnan(v), v


def test_no_run_and_one_run_carry_every_field():
    empty = stats.interval([], level=0.9)
    assert_nan(empty.mean, empty.sd, empty.lo, empty.hi)
    assert (empty.n, empty.method, empty.level) == (0, "none (n < 2)", 0.9)
    one = stats.interval([0.5, None, float("inf")], level=0.9)   # None and inf are not runs
    assert (one.mean, one.n, one.method, one.level) == (0.5, 1, "none (n < 2)", 0.9)
    assert_nan(one.sd, one.lo, one.hi)


def test_equal_runs_are_a_point_named_by_the_method_n_calls_for():
    for n, method in ((3, "Student-t"), (29, "Student-t"), (30, "BCa bootstrap")):
        iv = stats.interval([0.25] * n, level=0.9)
        assert (iv.mean, iv.sd, iv.lo, iv.hi, iv.n, iv.method, iv.level) == (0.25, 0.0, 0.25, 0.25, n, method, 0.9)


def test_student_t_at_90_percent_by_hand():
    iv = stats.interval([1, None, 2, 3], level=0.9)                # ints and None: read as floats
    # t(0.95, 2) = 2.919986; half width 2.919986 * 1 / sqrt(3) = 1.685854
    assert (iv.n, iv.method, iv.level, iv.sd) == (3, "Student-t", 0.9, 1.0)
    assert (iv.lo, iv.hi) == pytest.approx((2 - 1.685854, 2 + 1.685854), abs=1e-6)


def numpy_bca(x: np.ndarray, level: float, resamples: int = 200_000, seed: int = 7) -> tuple[float, float]:
    """Efron's BCa by hand: bias correction z0 from the bootstrap means, acceleration from the
    jackknife, adjusted percentiles of the bootstrap distribution."""
    nd = NormalDist()
    boot = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(1)
    z0 = nd.inv_cdf(float((boot < x.mean()).mean()))
    jack = np.array([np.delete(x, i).mean() for i in range(len(x))])
    d = jack.mean() - jack
    a = (d ** 3).sum() / (6 * (d ** 2).sum() ** 1.5)
    def at(q: float) -> float:
        z = nd.inv_cdf(q)
        return float(np.quantile(boot, nd.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return at((1 - level) / 2), at((1 + level) / 2)


def test_bca_matches_a_numpy_bca_and_is_pinned_at_its_seed_and_resamples():
    x = np.arange(1.0, 31.0)
    for level in (0.95, 0.9):
        iv = stats.interval(x, level=level)
        lo, hi = numpy_bca(x, level)
        assert (iv.lo, iv.hi) == pytest.approx((lo, hi), abs=0.25), level
        assert (iv.method, iv.level, iv.n) == ("BCa bootstrap", level, 30)
    wide, narrow = stats.interval(x), stats.interval(x, level=0.9)
    assert wide.lo < narrow.lo < narrow.hi < wide.hi
    # scipy's BCa with 4999 resamples drawn from default_rng(0): a regression pin (another seed
    # or resample count moves the bounds by about 0.05-0.2)
    assert (wide.lo, wide.hi) == pytest.approx((12.333333333333334, 18.442354208344838), abs=1e-9)
    assert stats.interval(x, seed=1) != wide


def test_paired_edges_carry_their_interval_and_level():
    few = stats.paired([1.0, float("nan")], [0.0, 1.0], level=0.9)
    assert few.diff.n == 1 and few.diff.mean == 1.0 and few.diff.level == 0.9
    assert_nan(few.d_z, few.p_value)
    zero = stats.paired([1, 2, None], [1, 2, 5])                      # the None pair is dropped
    assert (zero.d_z, zero.p_value, zero.test) == (0.0, 1.0, "paired t-test (every difference zero)")
    assert (zero.diff.n, zero.diff.mean) == (2, 0.0)
    assert stats.paired([1.0, 2.0, 3.0], [0.5, None, 2.5]).diff.n == 2        # a None in b too
    const = stats.paired([1.0, 2.0], [1.5, 2.5])
    assert (const.d_z, const.p_value, const.test) == (-math.inf, 0.0, "paired t-test (constant difference)")
    assert const.diff.mean == -0.5 and const.diff.n == 2
    # the level reaches the interval of the difference: t(0.95, 2) for d = (0.1, 0.2, 0.3)
    r = stats.paired([0.6, 0.7, 0.8], [0.5, 0.5, 0.5], level=0.9)
    assert r.diff.level == 0.9 and r.diff.hi - r.diff.mean == pytest.approx(2.919986 * 0.1 / math.sqrt(3), abs=1e-6)


def test_adjust_alpha_none_and_the_choices_named():
    # Holm on (0.03, 0.04): 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06 -> both 0.06
    adj, rej = stats.adjust([0.03, None, 0.04], alpha=0.1)
    assert adj[0] == pytest.approx(0.06) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.06)
    assert rej.dtype == bool and rej.tolist() == [True, False, True]
    assert stats.adjust([0.03, 0.04])[1].tolist() == [False, False]   # at the default 0.05
    with pytest.raises(ValueError, match=r"choose one of holm, fdr_bh"):
        stats.adjust([0.1], method="bonferroni")
