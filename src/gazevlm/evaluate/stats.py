"""Uncertainty of a run's mean score and paired comparisons between runs, at the level of videos.

Test windows overlap (stride 1 s, 5 s observed) and frames of one video share a scene, so windows are
not independent samples: the unit of resampling is the video (any `groups` label).
- mean_ci: the mean over all scored observations (windows, or frames of windows) with a 95% cluster
  bootstrap interval that resamples whole groups and recomputes the pooled mean
  (scipy.stats.bootstrap over the groups' (sum, count) pairs, percentile method: it stays defined
  when many values tie, e.g. BLEU-4 at exactly 0, where BCa breaks down).
- paired_test: the mean difference a - b over the same observations, its cluster bootstrap interval,
  and a two-sided sign-flip permutation test over the groups' mean differences
  (scipy.stats.permutation_test with paired samples; exact when 2^groups <= n_resamples).
Without `groups` every observation is its own group (the window-level procedure).
Every estimate records n (observations) and n_videos (groups) beside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sstats

CONFIDENCE = 0.95
TEST = "sign-flip permutation over per-video mean differences, two-sided; video bootstrap CI"


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_videos: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Mean of (a - b) over paired observations, its video-bootstrap interval and the sign-flip p."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_videos: int
    mean_a: float
    mean_b: float
    test: str = TEST

    def as_dict(self) -> dict:
        return asdict(self)


def _values(values: Sequence[float] | np.ndarray, what: str, allow_nan: bool) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{what}: expected (observations,) or (observations, frames) values, got {x.shape}")
    if not allow_nan and np.isnan(x).any():
        raise ValueError(f"{what}: {int(np.isnan(x).sum())} NaN value(s)")
    if np.isinf(x).any():  # not "unscored" (that is NaN): a broken score, never dropped silently
        raise ValueError(f"{what}: {int(np.isinf(x).sum())} infinite value(s)")
    return x


def _group_codes(groups: Sequence | None, n: int, what: str) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups, dtype=object).reshape(-1)
    if g.size != n:
        raise ValueError(f"{what}: {g.size} group labels for {n} observations")
    if any(v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)) for v in g):
        raise ValueError(f"{what}: an observation has no group (video) label")
    return np.unique(g.astype(str), return_inverse=True)[1]


def cluster_sums(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: the sum of its scored (non-NaN) values and their number; groups with none dropped."""
    scored = np.isfinite(values)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    sums = np.bincount(codes, weights=np.where(scored, values, 0.0).sum(1), minlength=n_groups)
    counts = np.bincount(codes, weights=scored.sum(1).astype(np.float64), minlength=n_groups)
    keep = counts > 0
    return sums[keep], counts[keep]


def _pooled_mean(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def _cluster_ci(sums: np.ndarray, counts: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float]:
    if len(sums) < 2:
        return float("nan"), float("nan")
    means = sums / counts
    if np.ptp(means) == 0:  # every group agrees: the interval is the point (scipy would warn)
        return float(means[0]), float(means[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=sstats.DegenerateDataWarning)
        res = sstats.bootstrap(
            (sums, counts),
            _pooled_mean,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    allow_nan: bool = False,
) -> Estimate:
    """Pooled mean of the scored values with a 95% bootstrap interval over groups (videos).

    values: (N,) or (N, T) (frames of windows; NaN = not scored, only with allow_nan); groups: (N,)
    labels, e.g. the video uid of each window. n counts scored values; NaN interval below 2 groups."""
    x = _values(values, "mean_ci", allow_nan)
    codes = _group_codes(groups, x.shape[0], "mean_ci")
    sums, counts = cluster_sums(x, codes)
    n = int(counts.sum())
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    low, high = _cluster_ci(sums, counts, n_resamples, seed)
    return Estimate(float(sums.sum() / n), low, high, n, int(len(sums)))


def paired_test(
    a: Sequence[float], b: Sequence[float], groups: Sequence | None = None, *, n_resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Compare run a with run b on the same observations (element i of both is the same window)."""
    xa, ya = _values(a, "paired_test a", False), _values(b, "paired_test b", False)
    if xa.shape[1] != 1 or ya.shape[1] != 1:  # [:, 0] would silently keep the first frame only
        raise ValueError(f"paired_test: expected one value per observation, got {xa.shape} and {ya.shape}")
    x, y = xa[:, 0], ya[:, 0]
    if x.shape != y.shape:
        raise ValueError(f"paired_test: {x.size} vs {y.size} values; the runs must cover the same windows")
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return Comparison(nan, nan, nan, nan, 0, 0, nan, nan)
    codes = _group_codes(groups, n, "paired_test")
    d = (x - y)[:, None]
    sums, counts = cluster_sums(d, codes)
    diff = float(d.mean())
    if len(sums) < 2:
        return Comparison(diff, nan, nan, nan, n, int(len(sums)), float(x.mean()), float(y.mean()))
    low, high = _cluster_ci(sums, counts, n_resamples, seed)
    xs, _ = cluster_sums(x[:, None], codes)
    ys, _ = cluster_sums(y[:, None], codes)
    xv, yv = xs / counts, ys / counts  # per-video means of each run

    def mean_diff(u, v, axis=-1):
        return np.mean(u - v, axis=axis)

    if np.all(xv == yv):
        p = 1.0
    else:
        perm = sstats.permutation_test(
            (xv, yv),
            mean_diff,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
        p = float(min(1.0, perm.pvalue))
    return Comparison(diff, low, high, p, n, int(len(sums)), float(x.mean()), float(y.mean()))


def seed_mean(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """Per-observation mean over seeds (each array aligned on the same observations)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in per_seed]
    if not arrays:
        raise ValueError("seed_mean: no seeds")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"seed_mean: seeds cover different observations {sorted(shapes)}")
    return np.mean(np.stack(arrays), axis=0)
