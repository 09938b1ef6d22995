"""Means with 95% bootstrap intervals for per-frame metrics.

Frames of one window are not independent (same scene, same gaze), so the bootstrap resamples whole
windows (a cluster bootstrap) and recomputes the frame-pooled mean: sum of the valid frames' values
over the resampled windows divided by their number of valid frames.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def _pooled_mean(sums: np.ndarray, counts: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sum(sums, axis=axis) / np.sum(counts, axis=axis)


def mean_ci(values: np.ndarray, n_resamples: int, seed: int, level: float = 0.95) -> dict:
    """Frame-pooled mean of (N windows, T frames) values, NaN = not scored, with a window bootstrap CI.

    Returns {mean, ci_low, ci_high, n_frames, n_windows}; mean is None without any scored frame and
    the interval is None with fewer than two scored windows (no spread to resample).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    scored = np.isfinite(values)
    keep = scored.any(1)
    sums = np.where(scored, values, 0.0).sum(1)[keep]
    counts = scored.sum(1)[keep].astype(np.float64)
    out = {"mean": None, "ci_low": None, "ci_high": None,
           "n_frames": int(counts.sum()), "n_windows": int(keep.sum())}
    if counts.sum() == 0:
        return out
    out["mean"] = float(sums.sum() / counts.sum())
    if len(sums) < 2:
        return out
    if np.ptp(sums / counts) == 0:  # every window agrees: the interval is the point (scipy would warn)
        out["ci_low"] = out["ci_high"] = out["mean"]
        return out
    res = stats.bootstrap((sums, counts), _pooled_mean, paired=True, vectorized=True,
                          n_resamples=n_resamples, confidence_level=level, method="percentile",
                          rng=np.random.default_rng(seed))
    out["ci_low"], out["ci_high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return out
