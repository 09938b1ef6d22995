"""Small generated inputs for the heatmap stage and shard tests (no real data, a few KB each).

The scene is a smooth random texture seen through a window that pans by a whole number of pixels per
frame, so the true optical flow is a known translation. The wearer fixates a point of the scene for a
second at a time, so the gaze moves with the scene: after flow aggregation every earlier point should land on the
keyframe's own point. Frames are deliberately non-square (160 x 112) to catch swapped axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gazevlm import layout
from gazevlm.shards import ShardSetWriter, encode_sample

WIDTH, HEIGHT, FPS = 160, 112, 30
VELOCITY = (2, 1)  # scene content moves +2 px in x and +1 px in y per frame


def texture(height: int, width: int, seed: int, blur: float = 1.5) -> np.ndarray:
    """BGR uint8 texture with structure at several scales (trackable by DIS/Farneback)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for scale, weight in ((4, 1.0), (12, 0.7)):
        small = rng.random((height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        out += (
            weight
            * cv2.resize(small, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)[
                scale : scale + height, scale : scale + width
            ]
        )
    out += 0.3 * rng.random((height, width, 3)).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), blur)
    out = (out - out.min()) / (out.max() - out.min())
    return (out * 255).astype(np.uint8)


def panning_frames(
    n: int, seed: int, width: int = WIDTH, height: int = HEIGHT, velocity: tuple[int, int] = VELOCITY
) -> list[np.ndarray]:
    """Frame k shows the scene shifted by k * velocity (content moves right/down for positive v)."""
    vx, vy = velocity
    margin_x, margin_y = abs(vx) * n + 8, abs(vy) * n + 8
    scene = texture(height + 2 * margin_y, width + 2 * margin_x, seed)
    frames = []
    for k in range(n):
        x0, y0 = margin_x - k * vx, margin_y - k * vy
        frames.append(np.ascontiguousarray(scene[y0 : y0 + height, x0 : x0 + width]))
    return frames


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = FPS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "mp4v writer unavailable"
    for f in frames:
        writer.write(f)
    writer.release()


def make_world(
    root: Path,
    *,
    seconds: int = 3,
    occlude: dict[str, list[int]] | None = None,
    invalid: dict[str, list[int]] | None = None,
    dropped: Sequence[str] = (),
) -> dict:
    """Write data/extract/*.parquet, videos, keyframe JPEGs and data/annotate/targets.parquet under root.

    Three videos (train/val/test), keyframes at frames 10, 40, 70 (1 fps); `occlude` turns the
    listed frames upside down (no pixel where the flow expects it: a majorly occluded frame);
    `invalid` marks frames' gaze untracked. Windows: one future window of 3 keyframes and two
    activity windows of 2 per video."""
    occlude = occlude or {}
    invalid = invalid or {}
    n = seconds * FPS
    uids = {"vid_a": "train", "vid_b": "val", "vid_c": "test"}
    videos, gaze, keyframes, windows, targets = [], [], [], [], []
    for i, (uid, split) in enumerate(uids.items()):
        frames = panning_frames(n, seed=10 + i)
        for f in occlude.get(uid, []):
            frames[f] = np.ascontiguousarray(frames[f][::-1, ::-1])  # nothing where it should be
        video_path = Path("data/sample/videos") / f"{uid}.mp4"
        write_video(root / video_path, frames)
        videos.append(
            {
                "uid": uid,
                "fps": float(FPS),
                "width": WIDTH,
                "height": HEIGHT,
                "num_frames": n,
                "duration_s": n / FPS,
                "split": split,
                "video_path": str(video_path),
                "gaze_path": "",
            }
        )
        for f in range(n):
            # a new scene point is fixated every second (frames 0, 30, 60); it then moves with the scene
            seg = f // FPS
            start = np.array([30.0 + 20 * seg + 5 * i, 20.0 + 10 * seg])
            x, y = start + (f - FPS * seg) * np.array(VELOCITY, float)
            label = "untracked" if f in invalid.get(uid, []) else "fixation"
            gaze.append(
                {
                    "uid": uid,
                    "frame": f,
                    "t": f / FPS,
                    "x": x if label == "fixation" else np.nan,
                    "y": y if label == "fixation" else np.nan,
                    "confidence": 1.0,
                    "label": label,
                    "valid": label == "fixation",
                }
            )
        kids = []
        for f in (10, 40, 70):
            kid = layout.keyframe_id(uid, f)
            path = Path("data/extract/keyframes") / uid / f"{f:07d}.jpg"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / path), frames[f], [cv2.IMWRITE_JPEG_QUALITY, 95])
            keyframes.append(
                {"keyframe_id": kid, "uid": uid, "frame": f, "t": f / FPS, "split": split, "path": str(path)}
            )
            kids.append((kid, f))
        for task, members in (("future", [kids]), ("activity", [kids[:2], kids[1:]])):
            for m in members:
                wid = layout.window_id(task, uid, m[0][1])
                windows.append(
                    {
                        "window_id": wid,
                        "task": task,
                        "uid": uid,
                        "split": split,
                        "obs_frames": [f for _, f in m],
                        "obs_keyframe_ids": [k for k, _ in m],
                        "target_frames": [],
                        "target_keyframe_ids": [],
                        "t_start": m[0][1] / FPS,
                        "t_end": m[-1][1] / FPS,
                    }
                )
                targets.append(
                    {
                        "window_id": wid,
                        "task": task,
                        "split": split,
                        "target_text": f"{task} text for {wid}",
                        "n_frames": len(m),
                        "n_flagged": 0,
                        "dropped": wid in dropped,
                        "drop_reason": "qc" if wid in dropped else "",
                    }
                )
    extract = root / layout.EXTRACT_DIR
    extract.mkdir(parents=True, exist_ok=True)
    (root / layout.ANNOTATE_DIR).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(videos).to_parquet(extract / "videos.parquet")
    pd.DataFrame(gaze).to_parquet(extract / "gaze_frames.parquet")
    pd.DataFrame(keyframes).to_parquet(extract / "keyframes.parquet")
    pd.DataFrame(windows).to_parquet(extract / "windows.parquet")
    pd.DataFrame(targets).to_parquet(root / layout.ANNOTATE_DIR / "targets.parquet")
    return {"uids": uids, "windows": [w["window_id"] for w in windows], "num_frames": n}


def dummy_shards(
    directory: Path, n: int, per_shard: int, *, frames: int = 2, size: int = 16, grid: int = 4, prefix: str = "train"
) -> list[str]:
    """n tiny windows in shards of per_shard; window i has frame k filled with value (i + k) % 256."""
    writer = ShardSetWriter(str(directory / f"{prefix}-%06d.tar"), per_shard)
    for i in range(n):
        jpegs = []
        for k in range(frames):
            ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), (10 * i + 40 * k) % 256, np.uint8))
            jpegs.append(buf.tobytes())
        target = np.full((frames, grid, grid), 1.0 / grid**2, np.float32)
        valid = np.array([k % 2 == 0 for k in range(frames)])
        target[~valid] = 0
        heat = np.zeros((frames, 8, 8), np.float16)
        meta = {
            "window_id": f"w{i:04d}",
            "frames": [100 * i + 30 * k for k in range(frames)],
            "target_text": f"text {i}",
            "uid": "u",
            "task": "future",
            "split": prefix,
        }
        writer.write(encode_sample(f"w{i:04d}", jpegs, target, valid, heat, meta))
    return writer.close()
