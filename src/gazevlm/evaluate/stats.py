"""Uncertainty of a run's mean score and paired comparisons between runs, seeded.

Intervals are percentile bootstraps over test windows (scipy.stats.bootstrap); the percentile method
stays defined when many windows tie (BLEU-4 is often exactly 0), where BCa breaks down. Two runs on
the same windows are compared on their per-window differences: a paired bootstrap interval of the
mean difference and a two-sided paired permutation (sign-flip) test (scipy.stats.permutation_test).
Windows are the resampling unit; windows of the same video are not independent, so the intervals are
somewhat optimistic, which is why the test split is cut by video and reported with its size.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sstats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Mean of (a - b) over paired windows, its bootstrap interval and the permutation p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    mean_a: float
    mean_b: float
    test: str = "paired sign-flip permutation, two-sided; percentile bootstrap CI"

    def as_dict(self) -> dict:
        return asdict(self)


def _as_1d(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(x).any():
        raise ValueError(f"{what}: {int(np.isnan(x).sum())} NaN value(s)")
    return x


def _percentile_ci(data: tuple, statistic, n_resamples: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        # a constant sample gives a degenerate bootstrap distribution; its interval is the constant
        warnings.simplefilter("ignore", category=sstats.DegenerateDataWarning)
        res = sstats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                               method="percentile", vectorized=True, paired=len(data) > 1,
                               rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def mean_ci(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0) -> Estimate:
    """Mean and 95% percentile-bootstrap interval; NaN interval below two values."""
    x = _as_1d(values, "mean_ci")
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size < 2:
        return Estimate(float(x[0]), float("nan"), float("nan"), 1)
    if np.all(x == x[0]):
        return Estimate(float(x[0]), float(x[0]), float(x[0]), int(x.size))
    low, high = _percentile_ci((x,), _mean, n_resamples, seed)
    return Estimate(float(x.mean()), low, high, int(x.size))


def paired_test(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 1000, seed: int = 0) -> Comparison:
    """Compare run a with run b on the same windows (element i of both is the same window)."""
    x, y = _as_1d(a, "paired_test a"), _as_1d(b, "paired_test b")
    if x.shape != y.shape:
        raise ValueError(f"paired_test: {x.size} vs {y.size} values; the runs must cover the same windows")
    n = int(x.size)
    if n == 0:
        nan = float("nan")
        return Comparison(nan, nan, nan, nan, 0, nan, nan)
    d = x - y
    diff = float(d.mean())
    if n < 2:
        return Comparison(diff, float("nan"), float("nan"), float("nan"), n, float(x.mean()), float(y.mean()))
    if np.all(d == d[0]):
        ci = (float(d[0]), float(d[0]))
    else:
        ci = _percentile_ci((d,), _mean, n_resamples, seed)

    def mean_diff(u, v, axis=-1):
        return np.mean(u - v, axis=axis)

    perm = sstats.permutation_test((x, y), mean_diff, permutation_type="samples", vectorized=True,
                                   n_resamples=n_resamples, alternative="two-sided",
                                   rng=np.random.default_rng(seed))
    return Comparison(diff, ci[0], ci[1], float(min(1.0, perm.pvalue)), n, float(x.mean()), float(y.mean()))
