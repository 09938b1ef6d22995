"""The observed frames of the sampled test windows, from the test shards, ready to display.

Frames are what the models saw (after the preset's resize and crop), read without any gaze entry:
the reviewer never sees gaze. They stay decoded (small: the preset's input size) and are encoded as
lossless PNG only when shown, a few milliseconds per item instead of seconds for the whole sample.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gazevlm import layout, shards


@dataclass(frozen=True)
class WindowFrames:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, the observed frames in time order
    timestamps: tuple[float, ...]  # seconds into the video


def png(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def load_frames(task: str, window_ids: Iterable[str], root: Path = layout.SHARDS_DIR) -> dict[str, WindowFrames]:
    """The frames of every window in window_ids, from the test shards of `task` under root (manifest-checked).
    A window missing from the shards is an error naming them (predictions and shards of different runs)."""
    wanted = set(window_ids)
    out: dict[str, WindowFrames] = {}
    for sample in shards.iter_samples((task, "test"), with_gaze=False, root=root):
        wid = sample["window_id"]
        if wid in wanted:
            frames = sample["frames"]
            times = sample["meta"].get("timestamps") or [float("nan")] * len(frames)
            out[wid] = WindowFrames(frames, tuple(float(t) for t in times))
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(
            f"{Path(root) / task}: the test shards hold no window {missing[0]!r} ({len(missing)} of "
            f"{len(wanted)} sampled windows missing): predictions and shards come from different runs "
            "of the pipeline; rerun it"
        )
    return out
