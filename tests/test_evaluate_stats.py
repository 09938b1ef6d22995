"""Bootstrap intervals and the paired test on cases whose answer is known."""
import numpy as np
import pytest

from gazevlm.evaluate import stats


def test_bootstrap_interval_matches_normal_theory():
    x = np.random.default_rng(3).normal(0.6, 0.2, 400)
    est = stats.mean_ci(x, n_resamples=2000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert est.mean == pytest.approx(x.mean())
    assert est.ci_low < est.mean < est.ci_high
    assert (est.ci_high - est.ci_low) / 2 == pytest.approx(half, rel=0.15)
    assert est.n == 400


def test_bootstrap_is_seeded():
    x = np.random.default_rng(0).random(50)
    assert stats.mean_ci(x, seed=1) == stats.mean_ci(x, seed=1)
    assert stats.mean_ci(x, seed=1) != stats.mean_ci(x, seed=2)


def test_degenerate_samples():
    assert stats.mean_ci([0.5] * 10).as_dict() == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 10}
    one = stats.mean_ci([0.3])
    assert one.mean == 0.3 and np.isnan(one.ci_low) and one.n == 1
    assert stats.mean_ci([]).n == 0
    with pytest.raises(ValueError, match="NaN"):
        stats.mean_ci([0.1, float("nan")])


def test_identical_runs_give_p_one():
    x = np.random.default_rng(1).random(60)
    c = stats.paired_test(x, x)
    assert c.diff == 0 and c.ci_low == 0 and c.ci_high == 0 and c.p_value == pytest.approx(1.0)


def test_constant_shift_gives_p_near_zero():
    x = np.random.default_rng(2).random(60)
    c = stats.paired_test(x + 0.05, x, n_resamples=1000)
    assert c.diff == pytest.approx(0.05)
    assert c.ci_low == pytest.approx(0.05) and c.ci_high == pytest.approx(0.05)
    assert c.p_value < 0.01
    assert stats.paired_test(x, x + 0.05).diff == pytest.approx(-0.05)


def test_pairing_matters():
    """Large between-window spread, small consistent gain: the paired test sees it, means alone would not."""
    rng = np.random.default_rng(4)
    base = rng.random(40)
    gaze = base + 0.02 + rng.normal(0, 0.005, 40)
    c = stats.paired_test(gaze, base)
    assert c.p_value < 0.01 and c.ci_low > 0
    # the independent intervals overlap heavily
    a, b = stats.mean_ci(gaze), stats.mean_ci(base)
    assert a.ci_low < b.ci_high


def test_noise_only_difference_is_not_significant():
    rng = np.random.default_rng(5)
    base = rng.random(80)
    other = base + rng.normal(0, 0.05, 80)
    other -= (other - base).mean()          # true mean difference exactly 0
    c = stats.paired_test(other, base)
    assert c.p_value > 0.5 and c.ci_low < 0 < c.ci_high


def test_paired_test_needs_same_windows():
    with pytest.raises(ValueError, match="same windows"):
        stats.paired_test([0.1, 0.2], [0.1])
