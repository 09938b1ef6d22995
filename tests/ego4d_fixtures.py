"""Small Ego4D-layout fixtures: a tiny synthetic world and hand-written files for each quirk.

Import the pytest fixtures you need into a test module (`from ego4d_fixtures import tiny_world`).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gazevlm import ego4d, params, sample

TINY = {
    "videos": 3,
    "seconds": 8,
    "width": 128,
    "height": 128,
    "fps": 30,
    "gaze_hz": 200,
    "objects": 6,
    "cue": 1.0,
    "seed": 0,
}


def tiny_params(root: Path, **overrides) -> params.Params:
    """Params for the tiny world (3 videos x 8 s, 128 x 128) written under root, read from root."""
    p = params.from_dict({})
    return params.with_overrides(
        p, sample={**TINY, "root": str(root), **overrides}, data={"root": str(root), "version": ego4d.EGO4D_VERSION}
    )


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The tiny synthetic world, written once per test session. Treat it as read-only."""
    root = tmp_path_factory.mktemp("tiny_world")
    sample.write_world(tiny_params(root).sample)
    return root


def write_video(path: Path, frames: int, width: int = 32, height: int = 32, fps: float = 30) -> Path:
    """A small mp4v video whose frame i has brightness i (so frames can be told apart)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        writer.write(np.full((height, width, 3), (i * 7) % 256, np.uint8))
    writer.release()
    return path


def gaze_table(t, conf=None, nx=None, ny=None) -> pd.DataFrame:
    """An Ego4D gaze table with every column; unspecified data columns get plausible values."""
    t = np.asarray(t, dtype=float)
    n = len(t)
    table = pd.DataFrame({c: np.full(n, np.nan) for c in ego4d.GAZE_COLUMNS})
    table["component_idx"] = 0
    table["component_timestamp_s"] = t
    table["canonical_timestamp_s"] = t
    table["world_index"] = np.round(t * 30).astype(int)
    table["confidence"] = 0.95 if conf is None else conf
    table["norm_pos_x"] = 0.5 if nx is None else nx
    table["norm_pos_y"] = 0.5 if ny is None else ny
    return table


def write_gaze(path: Path, table: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def metadata_entry(uid: str, frames: int, width: int = 32, height: int = 32, fps: float = 30) -> dict:
    return {
        "video_uid": uid,
        "duration_sec": frames / fps,
        "has_gaze": True,
        "video_metadata": {
            "fps": fps,
            "num_frames": frames,
            "display_resolution_width": width,
            "display_resolution_height": height,
            "mp4_duration_sec": frames / fps,
        },
    }


def write_metadata(vdir: Path, entries: list[dict]) -> Path:
    vdir.mkdir(parents=True, exist_ok=True)
    path = vdir / ego4d.METADATA_FILE
    path.write_text(json.dumps({"version": "v2", "videos": entries}))
    return path


def make_root(root: Path, uids: list[str], frames: int = 65, video_dir: str = "full_scale") -> Path:
    """A minimal hand-written root: per uid a 32x32 video, a steady gaze CSV and an ego4d.json entry.
    Returns the version folder (<root>/v2)."""
    vdir = root / ego4d.EGO4D_VERSION
    t = np.arange(0, frames / 30, 0.005)
    for uid in uids:
        write_video(vdir / video_dir / f"{uid}.mp4", frames)
        write_gaze(vdir / "gaze" / f"{uid}.csv", gaze_table(t))
    write_metadata(vdir, [metadata_entry(uid, frames) for uid in uids])
    return vdir
