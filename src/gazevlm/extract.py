"""Stage `extract`: from an Ego4D-layout root (synthetic or real) to per-frame gaze, keyframes, windows
and the video-level split (tables and columns as in gazevlm.layout).

Bad input: a missing ego4d.json or gaze folder, or no usable video at all, is an error; a single bad
video (CSV, video file, metadata entry, split assignment) is skipped and listed with its reason in
reports/extract.json, and none of its rows or frames is written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from gazevlm import ego4d, windows
from gazevlm.layout import EXTRACT_DIR, GAZE_LABELS, REPORTS_DIR, SPLITS, TASKS
from gazevlm.params import Params

JPEG_QUALITY = 95
VIDEO_COLUMNS = ("uid", "fps", "width", "height", "num_frames", "duration_s", "split", "video_path", "gaze_path")
GAZE_FRAME_COLUMNS = ("uid", "frame", "t", "x", "y", "confidence", "label", "valid")
KEYFRAME_COLUMNS = ("keyframe_id", "uid", "frame", "t", "split", "path")


def frame_path(uid: str, frame: int, root: Path = EXTRACT_DIR) -> Path:
    """Where a keyframe's JPEG goes (native resolution, named by absolute frame index)."""
    return root / "frames" / uid / f"{frame:07d}.jpg"


def write_keyframes(video: Path, frames: Sequence[int], uid: str, width: int, height: int,
                    root: Path = EXTRACT_DIR) -> list[str]:
    """Decode the video in order and write the given frames as JPEGs; raises VideoFileError if a
    keyframe cannot be decoded. Reading in order (grab) instead of seeking keeps indices exact."""
    wanted = sorted(int(f) for f in frames)
    out_dir = frame_path(uid, 0, root).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    paths: list[str] = []
    try:
        if not cap.isOpened():
            raise ego4d.VideoFileError(f"{video}: OpenCV cannot open the video")
        index, k = 0, 0
        while k < len(wanted):
            if not cap.grab():
                raise ego4d.VideoFileError(f"{video}: decoding stopped after {index} frames; keyframe "
                                           f"{wanted[k]} is missing (video shorter than its metadata?)")
            if index == wanted[k]:
                ok, image = cap.retrieve()
                if not ok or image is None:
                    raise ego4d.VideoFileError(f"{video}: frame {index} could not be decoded")
                if image.shape[:2] != (height, width):
                    raise ego4d.VideoFileError(f"{video}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                                               f"expected {width}x{height}")
                path = frame_path(uid, index, root)
                if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise OSError(f"{path}: could not write the keyframe JPEG")
                paths.append(str(path))
                k += 1
            index += 1
    except ego4d.VideoFileError:
        shutil.rmtree(out_dir, ignore_errors=True)  # no partial frame folder for a skipped video
        raise
    finally:
        cap.release()
    return paths


def run(params: Params) -> dict:
    """Read params.data.root, write data/extract/{videos,gaze_frames,keyframes,windows}.parquet and the
    keyframe JPEGs, and reports/extract.json; return the report."""
    ep = params.extract
    inv = ego4d.discover(params.data.root, params.data.version)
    skipped = list(inv.skipped)
    if (EXTRACT_DIR / "frames").exists():
        shutil.rmtree(EXTRACT_DIR / "frames")  # frames of videos from an earlier run must not linger
    EXTRACT_DIR.mkdir(parents=True, exist_ok=True)
    kept: list[ego4d.VideoRecord] = []
    gaze_tables: dict[str, pd.DataFrame] = {}
    kf_tables: dict[str, pd.DataFrame] = {}
    per_video: dict[str, dict] = {}
    for rec in inv.videos:
        try:
            samples, stats = ego4d.read_gaze_csv(rec.gaze_path)
        except ego4d.GazeFileError as err:
            skipped.append(ego4d.Skip(rec.uid, str(rec.gaze_path), str(err)))
            continue
        gf = ego4d.gaze_per_frame(samples, fps=rec.fps, width=rec.width, height=rec.height,
                                  num_frames=rec.num_frames, confidence_min=ep.confidence_min,
                                  max_gap_s=ep.max_gap_s, saccade_px=ep.saccade_px)
        kf = windows.keyframes_for_video(rec.uid, rec.num_frames, rec.fps, ep.keyframe_fps)
        try:
            kf["path"] = write_keyframes(rec.video_path, kf.frame.tolist(), rec.uid, rec.width, rec.height)
        except ego4d.VideoFileError as err:
            skipped.append(ego4d.Skip(rec.uid, str(rec.video_path), str(err)))
            continue
        gf.insert(0, "uid", rec.uid)
        gaze_tables[rec.uid] = gf
        kf_tables[rec.uid] = kf
        kept.append(rec)
        counts = gf.label.value_counts()
        labels = {name: int(counts.get(name, 0)) for name in GAZE_LABELS}
        per_video[rec.uid] = {"frames": rec.num_frames, "keyframes": len(kf),
                              "gaze": {**stats.as_dict(), "labels": labels}}
    assignment, unassigned = windows.split_videos([r.uid for r in kept], ep.split_fractions, ep.split_seed,
                                                  ep.split_uids or None)
    for uid in unassigned:
        skipped.append(ego4d.Skip(uid, "params.yaml", "not listed in params.extract.split_uids"))
        shutil.rmtree(frame_path(uid, 0).parent, ignore_errors=True)
    kept = [r for r in kept if r.uid in assignment]
    if not kept:
        reasons = "; ".join(f"{s.uid}: {s.reason}" for s in skipped) or "no gaze CSV found"
        raise ego4d.Ego4DError(f"{inv.root}: no usable video ({reasons})")

    videos = pd.DataFrame([{"uid": r.uid, "fps": float(r.fps), "width": r.width, "height": r.height,
                            "num_frames": r.num_frames, "duration_s": float(r.duration_s),
                            "split": assignment[r.uid], "video_path": str(r.video_path),
                            "gaze_path": str(r.gaze_path)} for r in kept], columns=list(VIDEO_COLUMNS))
    gaze_frames = pd.concat([gaze_tables[r.uid] for r in kept], ignore_index=True)[list(GAZE_FRAME_COLUMNS)]
    keyframes = pd.concat([kf_tables[r.uid] for r in kept], ignore_index=True)
    keyframes["split"] = keyframes.uid.map(assignment)
    keyframes = keyframes[list(KEYFRAME_COLUMNS)]
    win, win_skipped = windows.build_windows(keyframes, ep, assignment)

    videos.to_parquet(EXTRACT_DIR / "videos.parquet", index=False)
    gaze_frames.to_parquet(EXTRACT_DIR / "gaze_frames.parquet", index=False)
    keyframes.to_parquet(EXTRACT_DIR / "keyframes.parquet", index=False)
    win.to_parquet(EXTRACT_DIR / "windows.parquet", index=False)

    for uid in assignment:
        per_video[uid]["split"] = assignment[uid]
        per_video[uid]["windows"] = {t: int(((win.uid == uid) & (win.task == t)).sum()) for t in TASKS}
    report = {
        "root": str(inv.root),
        "videos": {"used": len(kept), "skipped": len(skipped)},
        "skipped_videos": [s.as_dict() for s in sorted(skipped, key=lambda s: (s.uid, s.file))],
        "notes": inv.notes,
        "splits": {s: {"videos": int((videos.split == s).sum()),
                       "keyframes": int((keyframes.split == s).sum()),
                       "windows": {t: int(((win.split == s) & (win.task == t)).sum()) for t in TASKS}}
                   for s in SPLITS},
        "windows": {t: {"made": int((win.task == t).sum()), "skipped": win_skipped[t]} for t in TASKS},
        "gaze_labels": {name: int((gaze_frames.label == name).sum()) for name in GAZE_LABELS},
        "per_video": {uid: per_video[uid] for uid in sorted(assignment)},
    }
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    (REPORTS_DIR / "extract.json").write_text(json.dumps(report, indent=2))
    return report


# --- figures -----------------------------------------------------------------------------------------

LABEL_COLOURS = {"fixation": "#2ca02c", "saccade": "#ff7f0e", "out_of_frame": "#d62728", "untracked": "#7f7f7f"}


def plot_keyframes_with_gaze(keyframes: pd.DataFrame, gaze_frames: pd.DataFrame, n: int = 8,
                             uid: str | None = None, start: int = 0):
    """n consecutive keyframes of one video with the per-frame gaze point drawn on them (for
    inspection only: nothing drawn here reaches the model)."""
    import matplotlib.pyplot as plt

    uid = uid or str(sorted(keyframes.uid.unique())[0])
    kf = keyframes[keyframes.uid == uid].sort_values("frame").iloc[start:start + n]
    gaze = gaze_frames[gaze_frames.uid == uid].set_index("frame")
    cols = min(4, max(1, len(kf)))
    rows = int(np.ceil(len(kf) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, kf.itertuples()):
        image = cv2.imread(str(row.path))
        if image is None:
            raise FileNotFoundError(f"{row.path}: keyframe JPEG missing")
        ax.imshow(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        g = gaze.loc[row.frame]
        if np.isfinite(g.x):
            h, w = image.shape[:2]
            ax.plot(np.clip(g.x, 0, w - 1), np.clip(g.y, 0, h - 1), "o", ms=14, mfc="none",
                    mec=LABEL_COLOURS[g.label], mew=2)
        ax.set_title(f"frame {row.frame} (t={row.t:.1f}s)\n{g.label}", fontsize=8)
    fig.suptitle(f"{uid}: keyframes with the per-frame gaze point", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gaze_labels(gaze_frames: pd.DataFrame, videos: pd.DataFrame):
    """Count of per-frame gaze labels, per split."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = gaze_frames[["uid", "label"]].merge(videos[["uid", "split"]], on="uid")
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.countplot(data=data, x="label", hue="split", order=list(GAZE_LABELS),
                  hue_order=[s for s in SPLITS if s in set(data.split)], ax=ax)
    ax.set_title("per-frame gaze labels (GLC convention)", fontsize=9)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_window_counts(windows_table: pd.DataFrame):
    """Windows per task and split."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 3))
    sns.countplot(data=windows_table, x="task", hue="split", order=list(TASKS),
                  hue_order=[s for s in SPLITS if s in set(windows_table.split)], ax=ax)
    ax.set_title("windows per task and split", fontsize=9)
    fig.tight_layout()
    return fig
