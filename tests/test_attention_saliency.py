"""Saliency metrics: hand-made maps with known values, and cross-checks against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from gazevlm.attention import saliency as S
from gazevlm.attention import summary
from gazevlm.evaluate import stats as evaluate_stats


def maps(seed: int, n: int = 20, p: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.gamma(0.5, size=(n, p)) + 1e-3  # strictly positive, distinct values (no ties)
    g = rng.gamma(0.3, size=(n, p)) + 1e-3
    return a / a.sum(1, keepdims=True), g / g.sum(1, keepdims=True)


# --- hand-made maps ---------------------------------------------------------------------------------


def test_support_is_share_of_peak():
    g = np.array([[0.5, 0.2, 0.005, 0.295]])
    assert S.support(g, 0.01).tolist() == [[True, True, False, True]]  # 0.005 = exactly 1% of 0.5: not above
    assert S.support(g, 0.5).tolist() == [[True, False, False, True]]  # above 0.25


def test_topk_overlap_known_value():
    a = np.array([[0.4, 0.3, 0.2, 0.1, 0.0, 0.0]])  # top-3 = patches 0, 1, 2
    g = np.array([[0.0, 0.5, 0.5, 0.0, 0.0, 0.0]])  # support = patches 1, 2
    assert S.topk_overlap(a, g, k=3, threshold=0.01)[0] == pytest.approx(2 / 3)
    assert S.topk_overlap(a, g, k=1, threshold=0.01)[0] == 0.0
    assert S.chance_topk(g, 0.01)[0] == pytest.approx(2 / 6)


def test_topk_ties_go_to_lower_index():
    a = np.ones((1, 6))
    g = np.array([[1, 1, 0, 0, 0, 0.0]])
    assert S.topk_indices(a, 2).tolist() == [[0, 1]]
    assert S.topk_overlap(a, g, k=2, threshold=0.5)[0] == 1.0


def test_kl_known_value_and_zero_for_equal_maps():
    g = np.array([[0.5, 0.5]])
    a = np.array([[0.25, 0.75]])
    assert S.kl(a, g)[0] == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), abs=1e-6)
    assert S.kl(g, g)[0] == pytest.approx(0.0, abs=1e-9)
    # unnormalised input is normalised first
    assert S.kl(4 * a, 10 * g)[0] == pytest.approx(S.kl(a, g)[0])


def test_cc_nss_sim_known_values():
    g = np.array([[0.0, 0.0, 0.0, 1.0]])
    a = np.array([[0.0, 0.0, 0.0, 4.0]])
    assert S.cc(a, g)[0] == pytest.approx(1.0)
    assert S.cc(a[:, ::-1].copy(), g)[0] == pytest.approx(-1 / 3)
    assert S.nss(a, g, 0.01)[0] == pytest.approx(np.sqrt(3))  # z of the peak: (1 - 0.25) / sqrt(0.1875)
    assert S.sim(a, g)[0] == pytest.approx(1.0)
    assert S.sim(a[:, ::-1].copy(), g)[0] == pytest.approx(0.0)
    flat = np.ones((1, 4))
    assert S.cc(flat, g)[0] == 0.0 and S.nss(flat, g, 0.01)[0] == 0.0


def test_auc_judd_known_values():
    g = np.array([[0, 0, 1, 1.0]])
    assert S.auc_judd(np.array([[0.1, 0.2, 0.3, 0.4]]), g, 0.5)[0] == pytest.approx(1.0)
    assert S.auc_judd(np.ones((1, 4)), g, 0.5)[0] == pytest.approx(0.5)
    # one fixation ranked 2nd of 4: points (0,0), (1/3, 1), (1,1) -> 1 - 1/6
    assert S.auc_judd(np.array([[0.4, 0.3, 0.2, 0.1]]), np.array([[0, 1, 0, 0.0]]), 0.5)[0] == pytest.approx(5 / 6)
    assert np.isnan(S.auc_judd(np.ones((1, 4)), np.ones((1, 4)), 0.5)[0])  # support covers every patch


def test_undefined_frames_are_nan_not_zero():
    a, g = maps(0, n=3)
    g[1] = 0.0  # gaze missing
    g[2, 0] = -1.0  # corrupt
    out = S.frame_metrics(a, g, k=10, threshold=0.01)
    assert set(out) == set(S.METRICS) | {"chance_topk"}
    for name, values in out.items():
        assert np.isfinite(values[0]), name
        assert np.isnan(values[1]) and np.isnan(values[2]), name


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: S.kl(np.ones((2, 4)), np.ones((2, 5))), "differ in shape"),
        (lambda: S.topk_overlap(np.ones((1, 4)), np.ones((1, 4)), 5, 0.01), "1 <= k <= 4"),
        (lambda: S.support(np.ones((1, 4)), 1.0), r"\[0, 1\)"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- cross-checks against independent implementations ----------------------------------------------


def test_kl_matches_scipy_entropy():
    a, g = maps(1)
    expected = np.array([stats.entropy(gi, ai) for ai, gi in zip(a, g, strict=False)])
    np.testing.assert_allclose(S.kl(a, g, eps=0.0), expected, rtol=1e-10)
    np.testing.assert_allclose(S.kl(a, g), expected, atol=1e-4)  # the default eps barely moves it


def test_cc_matches_numpy_corrcoef():
    a, g = maps(2)
    expected = np.array([np.corrcoef(ai, gi)[0, 1] for ai, gi in zip(a, g, strict=False)])
    np.testing.assert_allclose(S.cc(a, g), expected, rtol=1e-10)


def test_nss_matches_scipy_zscore():
    a, g = maps(3)
    expected = np.array([stats.zscore(ai)[gi > 0.01 * gi.max()].mean() for ai, gi in zip(a, g, strict=False)])
    np.testing.assert_allclose(S.nss(a, g, 0.01), expected, rtol=1e-10)


def test_sim_matches_total_variation():
    a, g = maps(4)
    np.testing.assert_allclose(S.sim(a, g), 1 - 0.5 * np.abs(a - g).sum(1), rtol=1e-10)


def test_topk_overlap_matches_set_intersection():
    a, g = maps(5)
    for ai, gi, value in zip(a, g, S.topk_overlap(a, g, 10, 0.2), strict=False):
        top = set(sorted(range(len(ai)), key=lambda i: -ai[i])[:10])
        sup = {i for i, v in enumerate(gi) if v > 0.2 * max(gi)}
        assert value == len(top & sup) / 10


def _judd_reference(a: np.ndarray, fix: np.ndarray) -> float:
    """Judd's recipe written as a plain loop over thresholds (all patches above a fixation's value)."""
    thresholds = sorted(a[fix], reverse=True)
    xs, ys = [0.0], [0.0]
    for th in thresholds:
        above = a >= th
        ys.append((above & fix).sum() / fix.sum())
        xs.append((above & ~fix).sum() / (~fix).sum())
    xs.append(1.0)
    ys.append(1.0)
    return sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))


def test_auc_judd_matches_loop_and_sklearn():
    a, g = maps(6)
    ours = S.auc_judd(a, g, 0.3)
    fix = S.support(g, 0.3)
    for ai, fi, value in zip(a, fix, ours, strict=False):
        assert value == pytest.approx(_judd_reference(ai, fi), abs=1e-12)
        # Without ties Judd's curve is the exact ROC curve with its horizontal steps replaced by
        # diagonals, which adds half of (negatives scored at or above the lowest fixation) / fixations.
        exact = roc_auc_score(fi.astype(int), ai)
        fp_last = (ai[~fi] >= ai[fi].min()).mean()
        assert value == pytest.approx(exact + fp_last / (2 * fi.sum()), abs=1e-12)


# --- intervals ---------------------------------------------------------------------------------------


def test_metric_entry_pools_frames_and_resamples_videos():
    values = np.array([[1.0, 1.0, np.nan], [0.0, np.nan, np.nan], [0.5, 0.5, 0.5]])
    out = summary.metric_entry(values, ["a", "b", "c"], n_resamples=500, seed=0)
    assert out["mean"] == pytest.approx(3.5 / 6) and out["n_frames"] == 6 and out["n_windows"] == 3
    assert out["n_videos"] == 3
    assert 0.0 <= out["ci_low"] <= out["mean"] <= out["ci_high"] <= 1.0
    assert summary.metric_entry(values, ["a", "b", "c"], 500, 0) == out  # seeded
    assert summary.metric_entry(np.full((2, 2), np.nan), ["a", "b"], 500, 0)["mean"] is None
    one = summary.metric_entry(np.array([[0.3, 0.5], [0.1, 0.1]]), ["a", "a"], 500, 0)
    assert one["mean"] == pytest.approx(0.25) and one["ci_low"] is None  # one video: no interval
    assert one["n_windows"] == 2 and one["n_videos"] == 1
    with pytest.raises(ValueError, match="one uid per window"):
        summary.metric_entry(values, ["a", "b"], 500, 0)


def test_metric_entry_is_the_evaluation_mean_ci_bit_for_bit():
    # one bootstrap for the whole project: the entry only renames and counts, it never re-estimates
    rng = np.random.default_rng(7)
    values = rng.random((30, 4))
    values[rng.random((30, 4)) < 0.4] = np.nan
    values[:5] = np.nan  # windows without a scored frame (video u0 keeps others)
    uids = [f"u{i % 6}" for i in range(30)]
    est = evaluate_stats.mean_ci(values, uids, n_resamples=300, seed=4, allow_nan=True)
    entry = summary.metric_entry(values, uids, 300, 4)
    assert (entry["mean"], entry["ci_low"], entry["ci_high"]) == (est.mean, est.ci_low, est.ci_high)
    scored_windows = int(np.isfinite(values).any(axis=1).sum())
    assert scored_windows < 25  # some of the other windows have no scored frame either
    assert (entry["n_frames"], entry["n_videos"], entry["n_windows"]) == (est.n, est.n_videos, scored_windows)


def test_metric_entry_interval_moves_whole_videos():
    # two videos of two identical windows: resampling videos can only give pooled means 0, 1/2, 1
    # (each with probability >= 1/4, so the 95% percentile interval is [0, 1]); resampling the four
    # windows independently would also give 1/4 and 3/4 and a narrower interval.
    values = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    out = summary.metric_entry(values, ["a", "a", "b", "b"], n_resamples=2000, seed=1)
    assert out["mean"] == pytest.approx(0.5) and out["n_videos"] == 2
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(0.0), pytest.approx(1.0))
