"""Means with 95% intervals for per-frame attention metrics, resampling test videos.

Frames of one window share a scene and windows of one video overlap, so the interval comes from the
evaluation's cluster bootstrap over videos (gazevlm.evaluate.stats.mean_ci): the frame-pooled mean
of the resampled videos' scored frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gazevlm.evaluate import stats


def mean_ci(values: np.ndarray, uids: Sequence[str], n_resamples: int, seed: int) -> dict:
    """Frame-pooled mean of (N windows, T frames) values (NaN = not scored) with a video-bootstrap CI.

    uids: (N,) the video of each window; windows of one video are resampled together.
    Returns {mean, ci_low, ci_high, n_frames, n_windows, n_videos} over the scored frames, windows
    and videos; mean is None without any scored frame and the interval is None with fewer than two
    scored videos."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    uids = np.asarray(uids, dtype=object).reshape(-1)
    if values.ndim != 2 or uids.shape[0] != values.shape[0]:
        raise ValueError(f"mean_ci: {uids.shape[0]} video uids for values of shape {values.shape} (one uid per window)")
    keep = np.isfinite(values).any(1)
    est = stats.mean_ci(values[keep], uids[keep], n_resamples=n_resamples, seed=seed, allow_nan=True)
    out = {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "n_frames": est.n,
        "n_windows": int(keep.sum()),
        "n_videos": est.n_videos,
    }
    if est.n:
        out["mean"] = est.mean
        if est.n_videos >= 2:
            out["ci_low"], out["ci_high"] = est.ci_low, est.ci_high
    return out
