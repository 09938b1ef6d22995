"""Video-level bootstrap intervals and the sign-flip paired test, on cases whose answer is known.

References are independent of the code under test: scipy.stats.bootstrap / permutation_test called
directly on per-video values, hand enumeration of all 2^V sign flips, and hand arithmetic."""

import itertools

import numpy as np
import pytest
from scipy import stats as sstats

from gazevlm.evaluate import stats


def videos(values, windows):
    """Per-window values and video labels: video v has `windows[v]` windows, all equal to values[v]."""
    windows = [windows] * len(values) if np.isscalar(windows) else windows
    x = np.concatenate([np.full(n, v, dtype=float) for v, n in zip(values, windows, strict=False)])
    g = np.concatenate([[f"vid{i}"] * n for i, n in enumerate(windows)])
    return x, g


def sign_flip_p(per_video_diffs):
    """Exact two-sided sign-flip p by enumerating every sign pattern (identity included)."""
    d = np.asarray(per_video_diffs, dtype=float)
    obs = d.mean()
    null = np.array([np.mean(d * s) for s in itertools.product((1, -1), repeat=d.size)])
    eps = 1e-12
    return min(1.0, 2 * min(np.mean(null >= obs - eps), np.mean(null <= obs + eps)))


# --- mean_ci ----------------------------------------------------------------------------------------------


def test_interval_on_equal_videos_matches_scipy_bootstrap_of_the_video_values():
    per_video = np.array([0.1, 0.5, 0.3, 0.9, 0.7, 0.2, 0.4, 0.8])
    x, g = videos(per_video, 5)
    est = stats.mean_ci(x, g, n_resamples=2000, seed=3)
    ref = sstats.bootstrap(
        (per_video,),
        np.mean,
        n_resamples=2000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(3),
    )
    assert est.mean == pytest.approx(per_video.mean())
    assert est.ci_low == pytest.approx(ref.confidence_interval.low)
    assert est.ci_high == pytest.approx(ref.confidence_interval.high)


def test_estimate_records_windows_and_videos():
    x, g = videos([0.2, 0.4, 0.6], [2, 3, 5])
    est = stats.mean_ci(x, g)
    assert (est.n, est.n_videos) == (10, 3)
    assert set(est.as_dict()) == {"mean", "ci_low", "ci_high", "n", "n_videos"}


def test_mean_is_pooled_over_windows_not_over_videos():
    x, g = videos([0.0, 1.0], [1, 3])  # one window at 0, three at 1
    assert stats.mean_ci(x, g).mean == pytest.approx(0.75)  # not (0 + 1) / 2


def test_more_windows_per_video_do_not_narrow_the_interval():
    per_video = np.random.default_rng(0).random(10)
    few = stats.mean_ci(*videos(per_video, 2), n_resamples=2000, seed=1)
    many = stats.mean_ci(*videos(per_video, 50), n_resamples=2000, seed=1)
    assert (many.ci_low, many.ci_high) == pytest.approx((few.ci_low, few.ci_high))
    windows = stats.mean_ci(videos(per_video, 50)[0], n_resamples=2000, seed=1)  # windows as independent
    assert windows.n_videos == 500
    assert windows.ci_high - windows.ci_low < 0.3 * (many.ci_high - many.ci_low)


def test_without_groups_every_window_is_its_own_video_and_matches_scipy():
    x = np.random.default_rng(3).normal(0.6, 0.2, 200)
    est = stats.mean_ci(x, n_resamples=1000, seed=5)
    ref = sstats.bootstrap((x,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(5))
    assert (est.n, est.n_videos) == (200, 200)
    assert (est.ci_low, est.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_interval_is_seeded():
    x, g = videos(np.random.default_rng(0).random(12), 3)
    assert stats.mean_ci(x, g, seed=1) == stats.mean_ci(x, g, seed=1)
    assert stats.mean_ci(x, g, seed=1) != stats.mean_ci(x, g, seed=2)


def test_videos_that_agree_give_a_point_interval():
    x, g = videos([0.5, 0.5, 0.5], [1, 4, 2])
    assert stats.mean_ci(x, g).as_dict() == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 7, "n_videos": 3}


def test_one_video_has_a_mean_but_no_interval():
    est = stats.mean_ci([0.2, 0.4, 0.9], ["v", "v", "v"])
    assert est.mean == pytest.approx(0.5) and (est.n, est.n_videos) == (3, 1)
    assert np.isnan(est.ci_low) and np.isnan(est.ci_high)
    single = stats.mean_ci([0.3])
    assert single.mean == 0.3 and np.isnan(single.ci_low) and (single.n, single.n_videos) == (1, 1)


def test_no_values_give_nan_and_zero_counts():
    est = stats.mean_ci([])
    assert np.isnan(est.mean) and (est.n, est.n_videos) == (0, 0)


def test_nan_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="NaN"):
        stats.mean_ci([0.1, float("nan")])


def test_allowed_nan_frames_are_unscored_and_all_nan_videos_drop_out():
    nan = float("nan")
    frames = np.array(
        [
            [0.2, nan],
            [0.4, 0.6],  # video a: 3 scored frames, mean 0.4
            [nan, nan],  # video b: nothing scored
            [1.0, nan],
        ]
    )  # video c: 1 scored frame
    est = stats.mean_ci(frames, ["a", "a", "b", "c"], allow_nan=True)
    assert (est.n, est.n_videos) == (4, 2)
    assert est.mean == pytest.approx((0.2 + 0.4 + 0.6 + 1.0) / 4)
    assert est.ci_low >= 0.4 - 1e-12 and est.ci_high <= 1.0 + 1e-12
    empty = stats.mean_ci([[nan, nan]], allow_nan=True)
    assert np.isnan(empty.mean) and empty.n == 0


def test_infinite_values_are_refused():
    with pytest.raises(ValueError, match="infinite"):
        stats.mean_ci([0.1, float("inf")])
    with pytest.raises(ValueError, match="infinite"):
        stats.paired_test([0.1, float("inf")], [0.1, 0.2])


def test_group_labels_must_cover_every_window():
    with pytest.raises(ValueError, match="3 group labels for 2"):
        stats.mean_ci([0.1, 0.2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="no group"):
        stats.mean_ci([0.1, 0.2], ["a", None])
    with pytest.raises(ValueError, match="no group"):
        stats.mean_ci([0.1, 0.2], np.array(["a", np.float32("nan")], dtype=object))


# --- paired_test --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_videos", [2, 3, 5, 8])
def test_all_positive_videos_give_the_exact_p_two_over_two_to_the_v(n_videos):
    d = np.linspace(0.05, 0.3, n_videos)
    a, g = videos(0.5 + d, 4)
    b = np.full_like(a, 0.5)
    c = stats.paired_test(a, b, g, n_resamples=1000)
    assert 2**n_videos <= 1000
    assert c.p_value == pytest.approx(2 / 2**n_videos)
    assert c.n_videos == n_videos and c.n == 4 * n_videos


def test_p_matches_hand_enumeration_and_scipy_on_mixed_signs():
    per_video = np.array([0.3, 0.1, -0.05, 0.2, -0.15, 0.25])
    rng = np.random.default_rng(7)
    b, g = videos(rng.random(6), [3, 1, 4, 2, 2, 5])
    # within a video the windows differ but their mean difference is per_video[v]
    noise = rng.normal(0, 0.01, b.size)
    for v in np.unique(g):
        noise[g == v] -= noise[g == v].mean()
    a = b + videos(per_video, [3, 1, 4, 2, 2, 5])[0] + noise
    c = stats.paired_test(a, b, g, n_resamples=1000)
    xv = np.array([a[g == v].mean() for v in sorted(set(g))])
    yv = np.array([b[g == v].mean() for v in sorted(set(g))])
    ref = sstats.permutation_test(
        (xv, yv),
        lambda u, w, axis=-1: np.mean(u - w, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=1000,
        alternative="two-sided",
    )
    assert c.p_value == pytest.approx(sign_flip_p(per_video))
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.diff == pytest.approx((a - b).mean())  # pooled over windows
    assert (c.mean_a, c.mean_b) == pytest.approx((a.mean(), b.mean()))


def test_windows_of_one_video_are_not_independent_evidence():
    """2 videos x 50 windows with a large gain: only 4 sign patterns exist, so p = 0.5; counting the
    100 windows as independent would make the same gain look overwhelming."""
    a, g = videos([1.0, 0.9], 50)
    b = np.zeros_like(a)
    by_video = stats.paired_test(a, b, g)
    assert by_video.p_value >= 0.5 and by_video.n_videos == 2 and by_video.n == 100
    by_window = stats.paired_test(a, b)
    assert by_window.p_value < 0.01 and by_window.n_videos == 100


def test_difference_interval_is_the_video_bootstrap_of_the_differences():
    per_video = np.array([0.02, 0.08, -0.01, 0.05, 0.03, 0.06, 0.0, 0.04])
    b, g = videos(np.random.default_rng(2).random(8), 6)
    a = b + videos(per_video, 6)[0]
    c = stats.paired_test(a, b, g, n_resamples=2000, seed=4)
    ref = sstats.bootstrap((per_video,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(4))
    assert c.diff == pytest.approx(per_video.mean())
    assert (c.ci_low, c.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_identical_runs_give_p_one_and_a_zero_interval():
    x, g = videos(np.random.default_rng(1).random(6), 5)
    c = stats.paired_test(x, x, g)
    assert c.diff == 0 and c.ci_low == 0 and c.ci_high == 0 and c.p_value == 1.0


def test_constant_shift_without_groups_is_significant():
    x = np.random.default_rng(2).random(60)
    c = stats.paired_test(x + 0.05, x, n_resamples=1000)
    assert c.diff == pytest.approx(0.05)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.05, 0.05))
    assert c.p_value == pytest.approx(2 / 1001)  # randomised: (0 + 1) / (1000 + 1), two-sided
    assert stats.paired_test(x, x + 0.05).diff == pytest.approx(-0.05)


def test_noise_only_difference_is_not_significant():
    rng = np.random.default_rng(5)
    base = rng.random(80)
    other = base + rng.normal(0, 0.05, 80)
    other -= (other - base).mean()  # true mean difference exactly 0
    c = stats.paired_test(other, base)
    assert c.p_value > 0.5 and c.ci_low < 0 < c.ci_high


def test_one_video_has_a_difference_but_no_test():
    c = stats.paired_test([0.5, 0.7], [0.1, 0.1], ["v", "v"])
    assert c.diff == pytest.approx(0.5) and (c.n, c.n_videos) == (2, 1)
    assert np.isnan(c.p_value) and np.isnan(c.ci_low) and np.isnan(c.ci_high)


def test_empty_runs_give_nan():
    c = stats.paired_test([], [])
    assert (c.n, c.n_videos) == (0, 0) and np.isnan(c.diff) and np.isnan(c.p_value)


def test_paired_test_is_seeded():
    rng = np.random.default_rng(9)
    a, b, g = rng.random(60), rng.random(60), np.repeat(np.arange(15), 4)  # 2^15 > n_resamples: randomised
    assert stats.paired_test(a, b, g, seed=1) == stats.paired_test(a, b, g, seed=1)
    assert stats.paired_test(a, b, g, seed=1).p_value != stats.paired_test(a, b, g, seed=2).p_value


def test_paired_test_needs_the_same_windows_and_one_value_each():
    with pytest.raises(ValueError, match="same windows"):
        stats.paired_test([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        stats.paired_test([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="one value per observation"):
        stats.paired_test([[0.1, 0.2], [0.3, 0.4]], [[0.1, 0.2], [0.3, 0.4]])


def test_comparison_records_its_test():
    c = stats.paired_test([0.2, 0.4], [0.1, 0.1], ["a", "b"])
    d = c.as_dict()
    assert d["n_videos"] == 2 and d["test"] == stats.TEST and "per-video" in stats.TEST


# --- pooling seeds -------------------------------------------------------------------------------------------


def test_seed_mean_is_the_per_window_mean_over_seeds():
    out = stats.seed_mean([[0.0, 0.3, 1.0], [0.6, 0.3, 0.0], [0.3, 0.6, 0.5]])
    assert out == pytest.approx([0.3, 0.4, 0.5])


def test_seed_mean_refuses_no_seeds_or_misaligned_seeds():
    with pytest.raises(ValueError, match="no seeds"):
        stats.seed_mean([])
    with pytest.raises(ValueError, match="different observations"):
        stats.seed_mean([[0.1, 0.2], [0.1]])


def test_paired_test_on_seed_means_uses_per_video_seed_mean_differences():
    """3 videos (2, 1, 3 windows), 2 seeds per run. Hand arithmetic:
    run a seed-means per window: [0.5, 0.7 | 0.2 | 0.9, 0.8, 0.7]; run b: [0.3, 0.3 | 0.4 | 0.6, 0.6, 0.6]
    per window differences:       [0.2, 0.4 | -0.2 | 0.3, 0.2, 0.1]
    per video mean differences:    0.3, -0.2, 0.2   -> sign-flip means over the 8 patterns
    {0.7,0.3,0.3,-0.1,0.1,-0.3,-0.3,-0.7}/3; observed 0.3/3: P(T >= obs) = 3/8, so p = 0.75;
    pooled difference over the 6 windows = 1.0 / 6."""
    g = ["v1", "v1", "v2", "v3", "v3", "v3"]
    a = stats.seed_mean([[0.4, 0.8, 0.1, 1.0, 0.6, 0.7], [0.6, 0.6, 0.3, 0.8, 1.0, 0.7]])
    b = stats.seed_mean([[0.2, 0.4, 0.4, 0.5, 0.7, 0.6], [0.4, 0.2, 0.4, 0.7, 0.5, 0.6]])
    assert a == pytest.approx([0.5, 0.7, 0.2, 0.9, 0.8, 0.7])
    assert b == pytest.approx([0.3, 0.3, 0.4, 0.6, 0.6, 0.6])
    c = stats.paired_test(a, b, g)
    assert c.diff == pytest.approx(1.0 / 6)
    assert c.n == 6 and c.n_videos == 3
    assert c.p_value == pytest.approx(sign_flip_p([0.3, -0.2, 0.2])) == pytest.approx(0.75)


def test_seed_means_with_three_agreeing_videos():
    """Per video, the seed-mean differences are +0.1, +0.2, +0.3 (one seed alone is mixed): p = 2 / 8."""
    g = ["a", "b", "c"]
    base = np.array([0.5, 0.5, 0.5])
    seeds_a = [base + [0.3, -0.1, 0.5], base + [-0.1, 0.5, 0.1]]
    c = stats.paired_test(stats.seed_mean(seeds_a), base, g)
    assert c.diff == pytest.approx(0.2) and c.p_value == pytest.approx(0.25)
    assert stats.paired_test(seeds_a[0], base, g).p_value == pytest.approx(sign_flip_p([0.3, -0.1, 0.5]))
