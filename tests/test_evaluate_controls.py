"""Controls: the cross-video derangement of the shuffled-frames control and the distinct-prediction share."""

import numpy as np
import pandas as pd
import pytest

from gazevlm.evaluate import controls


def random_layout(rng, n_videos, max_windows=7, interleave=True):
    """Video uids of the windows, videos with 1..max_windows windows, optionally interleaved."""
    counts = rng.integers(1, max_windows + 1, n_videos)
    uids = np.concatenate([[f"v{rng.integers(1_000_000):06d}_{k}"] * c for k, c in enumerate(counts)])
    return list(rng.permutation(uids)) if interleave else list(uids)


LAYOUTS = [
    ["a", "a", "b", "b"],  # 2 videos, equal
    ["a"] * 5 + ["b"],  # 2 videos, very unequal
    ["a", "b"] * 3,  # interleaved
    ["b", "c", "a", "c", "c", "a", "b", "b", "b"],
    *[
        random_layout(np.random.default_rng(s), n)
        for s, n in zip(range(12), [2, 2, 3, 3, 4, 5, 6, 8, 10, 2, 3, 20], strict=False)
    ],
]


@pytest.mark.parametrize("uids", LAYOUTS)
def test_no_window_keeps_a_window_of_its_own_video(uids):
    d = controls.derangement(uids)
    u = np.asarray(uids)
    assert d.shape == (len(uids),) and d.dtype.kind == "i"
    assert ((0 <= d) & (d < len(uids))).all()
    assert (u[d] != u).all()


@pytest.mark.parametrize("uids", LAYOUTS)
def test_every_video_takes_its_frames_from_one_other_video(uids):
    """Window i of video v receives a window of the video after v in sorted order."""
    u = np.asarray(uids)
    videos = sorted(set(uids))
    nxt = {v: videos[(k + 1) % len(videos)] for k, v in enumerate(videos)}
    d = controls.derangement(uids)
    assert all(u[d[i]] == nxt[u[i]] for i in range(len(u)))


@pytest.mark.parametrize("uids", LAYOUTS)
def test_derangement_is_deterministic(uids):
    assert controls.derangement(uids).tolist() == controls.derangement(list(uids)).tolist()


@pytest.mark.parametrize("uids", [lay for lay in LAYOUTS if len({lay.count(v) for v in set(lay)}) == 1])
def test_equal_window_counts_give_a_permutation(uids):
    d = controls.derangement(uids)
    assert sorted(d.tolist()) == list(range(len(uids)))


def test_the_kth_window_gets_the_kth_window_of_the_next_video_by_hand():
    #        0    1    2    3    4    5    6
    uids = ["b", "a", "a", "c", "b", "a", "b"]
    # a = [1, 2, 5] <- b = [0, 4, 6]; b = [0, 4, 6] <- c = [3] (k mod 1); c = [3] <- a = [1, 2, 5][0]
    expected = {1: 0, 2: 4, 5: 6, 0: 3, 4: 3, 6: 3, 3: 1}
    assert controls.derangement(uids).tolist() == [expected[i] for i in range(7)]


def test_unequal_counts_give_a_mapping_that_wraps_the_shorter_video():
    d = controls.derangement(["a"] * 5 + ["b"] * 2)
    assert d.tolist() == [5, 6, 5, 6, 5, 0, 1]


def test_uids_may_be_any_sequence_of_labels():
    s = pd.Series(["x", "y", "x", "y"], index=[10, 11, 12, 13])
    assert controls.derangement(s).tolist() == [1, 0, 3, 2]


@pytest.mark.parametrize("uids", [[], ["a"], ["a", "a", "a"]])
def test_fewer_than_two_videos_is_a_clear_error(uids):
    with pytest.raises(ValueError, match="at least two videos"):
        controls.derangement(uids)


def test_distinct_share_known_answers():
    assert controls.distinct_share(["a", "b", "c", "d"]) == 1.0
    assert controls.distinct_share(["same"] * 8) == pytest.approx(1 / 8)  # a language prior
    assert controls.distinct_share(["a", "a", "b"]) == pytest.approx(2 / 3)
    assert controls.distinct_share(["", "", "x", "y", "x"]) == pytest.approx(3 / 5)
    assert np.isnan(controls.distinct_share([]))
