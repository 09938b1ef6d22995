"""gazevlm.video_frames.read_frames: the one frame iterator of the extract and heatmap stages and the figures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ego4d_fixtures import write_video
from gazevlm import ego4d, sample
from gazevlm.video_frames import read_frames


def brightness(frame: np.ndarray) -> float:
    return float(frame.mean())


def test_yields_the_wanted_frames_once_in_order_by_absolute_index(tmp_path):
    video = write_video(tmp_path / "v.mp4", 20)
    got = list(read_frames(video, [12, 3, 3, 0]))
    assert [i for i, _ in got] == [0, 3, 12]
    # frame i was written with brightness 7 i: indices are counted, not guessed (mp4v is lossy: +-3)
    assert [brightness(f) for _, f in got] == [pytest.approx(7 * i, abs=3) for i in (0, 3, 12)]
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for _, f in got)
    assert list(read_frames(video, [])) == []


def test_lenient_stops_at_the_end_and_strict_names_the_missing_frame(tmp_path):
    video = write_video(tmp_path / "v.mp4", 10)
    assert [i for i, _ in read_frames(video, [2, 9, 10, 15])] == [2, 9]
    with pytest.raises(ego4d.VideoFileError, match=r"v.mp4: decoding stopped after 10 frames; keyframe 10"):
        list(read_frames(video, [2, 10], strict=True))


def test_missing_or_unreadable_video_is_a_video_file_error(tmp_path):
    with pytest.raises(ego4d.VideoFileError, match=r"nope.mp4: video file not found"):
        list(read_frames(tmp_path / "nope.mp4", [0]))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ego4d.VideoFileError, match=r"junk.mp4: OpenCV cannot open the video"):
        list(read_frames(tmp_path / "junk.mp4", [0]))


def test_the_sample_figures_read_rgb_through_it(tmp_path):
    video = write_video(tmp_path / "v.mp4", 5)
    bgr = dict(read_frames(video, [1, 4]))
    rgb = sample.read_frames(video, [4, 1])
    assert sorted(rgb) == [1, 4]
    assert all(np.array_equal(rgb[i], cv2.cvtColor(bgr[i], cv2.COLOR_BGR2RGB)) for i in (1, 4))
    with pytest.raises(ego4d.VideoFileError, match="keyframe 9"):
        sample.read_frames(video, [9])
