"""The attention metrics file's entry for one per-frame metric: its mean with a 95% interval.

Frames of one window share a scene and windows of one video overlap, so the estimate is the
evaluation's one cluster bootstrap over videos (gazevlm.evaluate.stats.mean_ci, the frame-pooled mean
of the resampled videos' scored frames); this module only adds the window count and writes "no value"
as None (the attention report's format).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gazevlm.evaluate import stats


def metric_entry(values: np.ndarray, uids: Sequence[str], n_resamples: int, seed: int) -> dict:
    """stats.mean_ci of (N windows, T frames) values (NaN = not scored) as a metrics-file entry.

    uids: (N,) the video of each window; windows of one video are resampled together.
    Returns {mean, ci_low, ci_high, n_frames, n_windows, n_videos} over the scored frames, windows
    and videos; mean is None without any scored frame and the interval is None with fewer than two
    scored videos."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    uids = np.asarray(uids, dtype=object).reshape(-1)
    if values.ndim != 2 or uids.shape[0] != values.shape[0]:
        raise ValueError(
            f"metric_entry: {uids.shape[0]} video uids for values of shape {values.shape} (one uid per window)"
        )
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
