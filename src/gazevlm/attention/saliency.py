"""Attention-vs-gaze metrics on the patch grid, implemented once for the whole project.

Every function takes an attention map `a` and a gaze map `g` of shape (N, P) (N frames, P patches;
any leading shape is flattened to N) and returns one value per frame, shape (N,). Both maps are
L1-normalised here, so raw attention weights or unnormalised heatmaps are accepted. A frame whose
gaze map has no mass (gaze missing) or contains a negative or non-finite value gets NaN for every
metric: callers mask such frames, they are never scored as zero.

Definitions (the paper only defines the first; the others follow the MIT saliency benchmark, adapted
to a patch grid where the "fixation map" is the binary gaze support below):

support(g, t)   S = {i : g_i > t * max_j g_j}, the patches holding at least a share t of the peak
                gaze mass (params `attention.support_threshold`, strict >). It is the "human gaze
                distribution's support above a threshold" of the paper's top-k measure and doubles
                as the binary fixation map of NSS and AUC-Judd.
topk_overlap    |top_k(a) ∩ S| / k: the share of the k most-attended patches that fall in S.
                top_k sorts by attention, descending; ties go to the lower patch index (stable, so
                a uniform map deterministically picks the first k patches). In [0, 1].
chance_topk     |S| / P: the expected top-k overlap of k patches drawn at random, for reference.
kl              KL(g || a) = sum_i g_i (log(g_i + eps) - log(a_i + eps)), natural log, eps = 1e-8;
                the same direction as the training loss's default; 0 iff a == g.
cc              Pearson correlation of a and g over the patches; 0 when either map is constant
                (a flat map carries no spatial information, so no correlation).
nss             mean over S of (a - mean(a)) / std(a) (population std, ddof = 0); 0 for a constant a.
sim             sum_i min(a_i, g_i) (histogram intersection) in [0, 1]; 1 iff a == g.
auc_judd        ROC area with S as positives and the other patches as negatives, thresholds at the
                attention values of the positives only (Judd et al. 2009): at threshold v,
                TP = #{i in S: a_i >= v} / |S|, FP = #{i not in S: a_i >= v} / (P - |S|); the points
                (0, 0), ..., (1, 1) are joined by the trapezoid rule. Ties count as detected (no
                random jitter, so it is deterministic; a constant map scores exactly 0.5). NaN when
                S covers every patch (no negatives).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

METRICS = ("topk_overlap", "kl", "cc", "nss", "sim", "auc_judd")
KL_EPS = 1e-8


def _as_frames(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError(f"{name}: expected (..., P) maps, got a scalar")
    return x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x


def _pair(a: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, g) normalised to sum 1 per frame, and the mask of frames where the metrics are defined."""
    a, g = _as_frames(a, "attention"), _as_frames(g, "gaze")
    if a.shape != g.shape:
        raise ValueError(f"attention {a.shape} and gaze {g.shape} maps differ in shape")
    ok = (
        np.isfinite(a).all(1)
        & np.isfinite(g).all(1)
        & (a >= 0).all(1)
        & (g >= 0).all(1)
        & (a.sum(1) > 0)
        & (g.sum(1) > 0)
    )
    a = np.where(ok[:, None], a, 1.0)
    g = np.where(ok[:, None], g, 1.0)
    return a / a.sum(1, keepdims=True), g / g.sum(1, keepdims=True), ok


def support(gaze: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean (N, P) gaze support: patches with more than `threshold` times the frame's peak mass."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"support threshold must be in [0, 1), got {threshold}")
    g = _as_frames(gaze, "gaze")
    return g > threshold * g.max(1, keepdims=True)


def _nan_where_undefined(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok, values, np.nan)


def topk_indices(attention: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of the k most-attended patches, ties to the lower index."""
    a = _as_frames(attention, "attention")
    if not 1 <= k <= a.shape[1]:
        raise ValueError(f"top-k needs 1 <= k <= {a.shape[1]} patches, got k={k}")
    return np.argsort(-a, axis=1, kind="stable")[:, :k]


def topk_overlap(attention: np.ndarray, gaze: np.ndarray, k: int, threshold: float) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    top = topk_indices(a, k)
    inside = np.take_along_axis(support(g, threshold), top, axis=1)
    return _nan_where_undefined(inside.sum(1) / k, ok)


def chance_topk(gaze: np.ndarray, threshold: float) -> np.ndarray:
    g = _as_frames(gaze, "gaze")
    ok = np.isfinite(g).all(1) & (g >= 0).all(1) & (g.sum(1) > 0)
    return _nan_where_undefined(support(np.where(ok[:, None], g, 1.0), threshold).mean(1), ok)


def kl(attention: np.ndarray, gaze: np.ndarray, eps: float = KL_EPS) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    return _nan_where_undefined((g * (np.log(g + eps) - np.log(a + eps))).sum(1), ok)


def cc(attention: np.ndarray, gaze: np.ndarray) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    da, dg = a - a.mean(1, keepdims=True), g - g.mean(1, keepdims=True)
    denom = np.sqrt((da**2).sum(1) * (dg**2).sum(1))
    safe = np.where(denom > 0, denom, 1.0)
    return _nan_where_undefined(np.where(denom > 0, (da * dg).sum(1) / safe, 0.0), ok)


def nss(attention: np.ndarray, gaze: np.ndarray, threshold: float) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    std = a.std(1, keepdims=True)
    z = np.where(std > 0, (a - a.mean(1, keepdims=True)) / np.where(std > 0, std, 1.0), 0.0)
    s = support(g, threshold)
    return _nan_where_undefined((z * s).sum(1) / s.sum(1), ok)


def sim(attention: np.ndarray, gaze: np.ndarray) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    return _nan_where_undefined(np.minimum(a, g).sum(1), ok)


def auc_judd(attention: np.ndarray, gaze: np.ndarray, threshold: float) -> np.ndarray:
    a, g, ok = _pair(attention, gaze)
    s = support(g, threshold)
    out = np.full(len(a), np.nan)
    for i in np.flatnonzero(ok):
        pos, n_pos = a[i, s[i]], s[i].sum()
        neg = a[i, ~s[i]]
        if len(neg) == 0:
            continue
        thresholds = np.sort(pos)[::-1]
        # counts of positives / negatives at or above each threshold, via sorted search
        tp = (n_pos - np.searchsorted(np.sort(pos), thresholds, side="left")) / n_pos
        fp = (len(neg) - np.searchsorted(np.sort(neg), thresholds, side="left")) / len(neg)
        x = np.concatenate([[0.0], fp, [1.0]])
        y = np.concatenate([[0.0], tp, [1.0]])
        out[i] = np.trapezoid(y, x)
    return out


def frame_metrics(attention: np.ndarray, gaze: np.ndarray, k: int, threshold: float) -> dict[str, np.ndarray]:
    """All METRICS plus `chance_topk` for (N, P) maps, each an (N,) float array (NaN = undefined)."""
    fns: dict[str, Callable[[], np.ndarray]] = {
        "topk_overlap": lambda: topk_overlap(attention, gaze, k, threshold),
        "kl": lambda: kl(attention, gaze),
        "cc": lambda: cc(attention, gaze),
        "nss": lambda: nss(attention, gaze, threshold),
        "sim": lambda: sim(attention, gaze),
        "auc_judd": lambda: auc_judd(attention, gaze, threshold),
        "chance_topk": lambda: chance_topk(gaze, threshold),
    }
    return {name: fn() for name, fn in fns.items()}
