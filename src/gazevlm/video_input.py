"""A video that is not in the pipeline, cut and preprocessed exactly as the pipeline cuts and preprocesses its own.

Windows come from the extract stage's code (gazevlm.windows: keyframes at the model's keyframe rate, the
model's observation length and stride). Keyframes go through the same steps as the pipeline's frames:
extract's JPEG (extract.write_keyframes), the preset's resize + centre crop (heatmaps.crop), the shard's JPEG
(heatmaps.frames.encode_jpeg), decoded as gazevlm.shards decodes it; so a video of the pipeline gets the very
pixels its shards hold.

For the future task the last windows of a clip have no keyframe of the video inside their horizon; the
extract stage drops them (nothing to compare with), here they are kept and marked
`horizon_in_video: false`: they say what comes after the clip.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gazevlm import ego4d, extract, windows
from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.frames import encode_jpeg, read_image


class VideoTooShortError(ValueError):
    """The video has fewer keyframes than one window of the model observes."""


@dataclass(frozen=True)
class Video:
    path: Path
    uid: str  # the file's stem: window ids are <task>_<uid>_<first frame>, as in the pipeline
    fps: float
    width: int
    height: int
    num_frames: int  # frames that decode (a container's frame count can be off)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def open_video(path: str | Path) -> Video:
    """Probe a video (ego4d.probe_video) and count the frames that decode; a missing, unreadable or
    rate-less file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    probe = ego4d.probe_video(path)
    if not probe.fps > 0:
        raise ego4d.VideoFileError(f"{path}: the video reports no frame rate ({probe.fps!r} fps)")
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return Video(path, path.stem, probe.fps, probe.width, probe.height, n)


def cut_windows(video: Video, spec: windows.WindowSpec, keyframe_fps: float) -> list[dict[str, Any]]:
    """The windows the extract stage would cut from the video (windows.windows_for_video), plus, for
    the future task, those it drops because their horizon runs past the video's end."""
    keyframes = windows.keyframes_for_video(video.uid, video.num_frames, video.fps, keyframe_fps)
    made, skipped = windows.windows_for_video(keyframes, spec)
    if skipped.get(windows.SKIP_SHORT_VIDEO):
        need = spec.observe / keyframe_fps
        raise VideoTooShortError(
            f"{video.path}: {video.duration_s:.2f} s gives {len(keyframes)} keyframe(s) at "
            f"{keyframe_fps:g} fps, fewer than one {spec.task} window observes ({spec.observe}, "
            f"{need:g} s)"
        )
    rows = [{**w, "horizon_in_video": True} for w in made]
    if spec.horizon_s is not None and skipped.get(windows.SKIP_NO_TARGET):
        kept = {w["window_id"] for w in made}
        every, _ = windows.windows_for_video(keyframes, dataclasses.replace(spec, horizon_s=None))
        rows += [
            {
                **w,
                "target_frames": [],
                "target_keyframe_ids": [],
                "t_end": w["t_end"] + spec.horizon_s,
                "horizon_in_video": False,
            }
            for w in every
            if w["window_id"] not in kept
        ]
    times = dict(zip(keyframes.frame.astype(int), keyframes.t.astype(float), strict=True))
    for w in rows:
        w["obs_times"] = [times[f] for f in w["obs_frames"]]
    return sorted(rows, key=lambda w: w["obs_frames"][0])


def keyframe_pixels(video: Video, frames: Sequence[int], image_size: int) -> dict[int, np.ndarray]:
    """frame index -> (S, S, 3) uint8 RGB, as a shard holds it: extract's keyframe JPEG (written by
    extract.write_keyframes into a temporary directory), the preset's resize + centre crop, the shard's
    JPEG, decoded as gazevlm.shards decodes it."""
    geometry = CropGeometry.for_frame(video.width, video.height, image_size)
    out: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="gazevlm-predict-") as tmp:
        paths = extract.write_keyframes(video.path, frames, video.uid, video.width, video.height, root=Path(tmp))
        for frame, path in zip(sorted(int(f) for f in frames), paths, strict=True):
            jpeg = encode_jpeg(geometry.apply(read_image(path)))
            out[frame] = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out
