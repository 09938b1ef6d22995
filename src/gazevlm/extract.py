"""Stage `extract`: from an Ego4D-layout root (synthetic or real) or an EGTEA Gaze+ root
(params.data.format) to per-frame gaze, keyframes, windows and the video-level split (tables and columns
as in gazevlm.layout, the same for both formats).

Bad input: a missing ego4d.json or gaze folder (EGTEA: gaze_data/, action_annotation/ or a split file),
no usable video at all, or a split that leaves train or test without a video is an error (an empty val
split is a WARNING note in the report); a single bad video (gaze file, video file, metadata entry, split
assignment) is skipped and listed with its reason in reports/extract.json, and none of its rows or
frames is written. The outputs are written into a staged directory swapped in on success only, so a
failed run keeps the last good data/extract.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gazevlm import atomic, ego4d, egtea, layout, video_frames, windows
from gazevlm.layout import EXTRACT_DIR, GAZE_LABELS, REPORTS_DIR, SPLITS, TASKS
from gazevlm.params import ExtractParams, Params

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
# The tables the stage writes (data/extract/<name>.parquet), each with its contract in gazevlm.layout.
TABLES = {
    "videos": layout.VIDEOS,
    "gaze_frames": layout.GAZE_FRAMES,
    "keyframes": layout.KEYFRAMES,
    "windows": layout.WINDOWS,
}


def frame_path(uid: str, frame: int, root: Path = EXTRACT_DIR) -> Path:
    """Where a keyframe's JPEG goes (native resolution, named by absolute frame index)."""
    return root / "frames" / uid / f"{frame:07d}.jpg"


def write_keyframes(
    video: Path, frames: Sequence[int], uid: str, width: int, height: int, root: Path = EXTRACT_DIR
) -> list[str]:
    """Decode the video in order (video_frames.read_frames, strict) and write the given frames as JPEGs;
    raises VideoFileError if a keyframe cannot be decoded."""
    out_dir = frame_path(uid, 0, root).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    try:
        for index, image in video_frames.read_frames(video, frames, strict=True):
            if image.shape[:2] != (height, width):
                raise ego4d.VideoFileError(
                    f"{video}: frame {index} is {image.shape[1]}x{image.shape[0]}, expected {width}x{height}"
                )
            path = frame_path(uid, index, root)
            if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise OSError(f"{path}: could not write the keyframe JPEG")
            paths.append(str(path))
    except ego4d.VideoFileError:
        shutil.rmtree(out_dir, ignore_errors=True)  # no partial frame folder for a skipped video
        raise
    return paths


@dataclass
class _Videos:
    """What reading the videos produced: the kept ones, their tables, and what was skipped or noted."""

    kept: list[ego4d.VideoRecord] = field(default_factory=list)
    gaze: dict[str, pd.DataFrame] = field(default_factory=dict)
    keyframes: dict[str, pd.DataFrame] = field(default_factory=dict)
    per_video: dict[str, dict] = field(default_factory=dict)
    skipped: list[ego4d.Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """One on-disk format: its inventory, its per-video gaze reader (gaze per frame, the report's gaze
    stats, notes; raising one of `gaze_errors` for a bad file) and its split (None: by fractions)."""

    inventory: ego4d.Inventory
    read_gaze: Callable[[ego4d.VideoRecord], tuple[pd.DataFrame, dict, list[str]]]
    gaze_errors: tuple[type[Exception], ...]
    split_uids: dict[str, list[str]] | None = None
    split_source: str = "params.extract.split_uids"
    notes: tuple[str, ...] = ()


def ego4d_source(params: Params) -> Source:
    """Ego4D: gaze CSVs labelled by the GLC convention, the split by fractions unless split_uids lists it."""
    ep = params.extract

    def read_gaze(rec: ego4d.VideoRecord) -> tuple[pd.DataFrame, dict, list[str]]:
        samples, stats = ego4d.read_gaze_csv(rec.gaze_path)
        gf = ego4d.gaze_per_frame(
            samples,
            fps=rec.fps,
            width=rec.width,
            height=rec.height,
            num_frames=rec.num_frames,
            confidence_min=ep.confidence_min,
            max_gap_s=ep.max_gap_s,
            saccade_px=ep.saccade_px,
        )
        notes = [f"{rec.gaze_path}: last row cut short (truncated file?), dropped"] if stats.dropped_truncated else []
        return gf, stats.as_dict(), notes

    return Source(
        ego4d.discover(params.data.root, params.data.version),
        read_gaze,
        (ego4d.GazeFileError,),
        params.extract.split_uids or None,
    )


def egtea_source(params: Params) -> Source:
    """EGTEA Gaze+: sessions go to train or test as the official split files say (params.extract.split_uids,
    when given, decides instead); BeGaze's own event types label fixations and saccades."""
    root, k = params.data.root, params.data.egtea_split
    inv = egtea.discover(root)
    if params.extract.split_uids:
        return Source(inv, egtea.read_gaze_frames, (egtea.GazeFileError,), params.extract.split_uids)
    actions, _ = egtea.read_actions(root, k)
    split, notes = egtea.session_split(actions)
    files = " / ".join(str(egtea.split_path(root, s, k)) for s in egtea.SPLIT_NAMES)
    return Source(inv, egtea.read_gaze_frames, (egtea.GazeFileError,), split, files, tuple(notes))


SOURCES: dict[str, Callable[[Params], Source]] = {"ego4d": ego4d_source, "egtea": egtea_source}


def _read_videos(src: Source, ep: ExtractParams, out: Path) -> _Videos:
    """Gaze per frame and keyframe JPEGs (written under `out`) of every video; bad ones skipped."""
    res = _Videos(skipped=list(src.inventory.skipped))
    for rec in src.inventory.videos:
        try:
            gf, gaze_stats, gaze_notes = src.read_gaze(rec)
        except src.gaze_errors as err:
            res.skipped.append(ego4d.Skip(rec.uid, str(rec.gaze_path), str(err)))
            continue
        kf = windows.keyframes_for_video(rec.uid, rec.num_frames, rec.fps, ep.keyframe_fps)
        try:
            write_keyframes(rec.video_path, kf.frame.tolist(), rec.uid, rec.width, rec.height, root=out)
        except ego4d.VideoFileError as err:
            res.skipped.append(ego4d.Skip(rec.uid, str(rec.video_path), str(err)))
            continue
        # the table names where the frames will be once the staged directory is swapped in
        kf["path"] = [str(frame_path(rec.uid, int(f))) for f in kf.frame]
        if not gf.valid.any():
            res.notes.append(
                f"{rec.uid}: no frame has in-frame gaze ({rec.gaze_path}); its windows are kept "
                "without gaze targets (no gaze loss on them)"
            )
        res.notes += gaze_notes
        gf.insert(0, "uid", rec.uid)
        res.gaze[rec.uid], res.keyframes[rec.uid] = gf, kf
        res.kept.append(rec)
        counts = gf.label.value_counts()
        labels = {name: int(counts.get(name, 0)) for name in GAZE_LABELS}
        res.per_video[rec.uid] = {
            "frames": rec.num_frames,
            "keyframes": len(kf),
            "gaze": {**gaze_stats, "labels": labels},
        }
    return res


def _split(res: _Videos, ep: ExtractParams, src: Source, out: Path) -> dict[str, str]:
    """The video-level split of the kept videos; unlisted ones skipped; an empty train/test is an error."""
    root = src.inventory.root
    assignment, unassigned = windows.split_videos(
        [r.uid for r in res.kept], ep.split_fractions, ep.split_seed, src.split_uids
    )
    where = "params.yaml" if src.split_source == "params.extract.split_uids" else src.split_source
    for uid in unassigned:
        res.skipped.append(ego4d.Skip(uid, where, f"not listed in {src.split_source}"))
        shutil.rmtree(frame_path(uid, 0, out).parent, ignore_errors=True)
    res.kept = [r for r in res.kept if r.uid in assignment]
    if not res.kept:
        reasons = "; ".join(f"{s.uid}: {s.reason}" for s in res.skipped) or "no gaze file found"
        raise ego4d.Ego4DError(f"{root}: no usable video ({reasons})")
    for note in windows.check_split(assignment, ep.split_fractions, src.split_uids, source=src.split_source):
        log.warning("extract: %s", note)
        res.notes.append(note)
    return assignment


def _tables(res: _Videos, assignment: dict[str, str]) -> dict[str, pd.DataFrame]:
    kept = res.kept
    videos = pd.DataFrame(
        [
            {
                "uid": r.uid,
                "fps": float(r.fps),
                "width": r.width,
                "height": r.height,
                "num_frames": r.num_frames,
                "duration_s": float(r.duration_s),
                "split": assignment[r.uid],
                "video_path": str(r.video_path),
                "gaze_path": str(r.gaze_path),
            }
            for r in kept
        ],
        columns=layout.VIDEOS.names,
    )
    gaze_frames = pd.concat([res.gaze[r.uid] for r in kept], ignore_index=True)[layout.GAZE_FRAMES.names]
    keyframes = pd.concat([res.keyframes[r.uid] for r in kept], ignore_index=True)
    keyframes["split"] = keyframes.uid.map(assignment)
    keyframes = keyframes[layout.KEYFRAMES.names]
    return {"videos": videos, "gaze_frames": gaze_frames, "keyframes": keyframes}


def run(params: Params) -> dict:
    """Read params.data.root (in params.data.format), write data/extract/{videos,gaze_frames,keyframes,
    windows}.parquet and the keyframe JPEGs, and reports/extract.json; return the report.

    Everything is written into a staged directory that replaces data/extract only when the stage
    succeeds: a failing run (every video bad, an empty split) leaves the last good output intact."""
    ep = params.extract
    src = SOURCES[params.data.format](params)
    with layout.staged_dir(EXTRACT_DIR) as out:
        res = _read_videos(src, ep, out)
        res.notes += src.notes
        assignment = _split(res, ep, src, out)
        t = _tables(res, assignment)
        win, win_skipped = windows.build_windows(t["keyframes"], ep, assignment)
        tables = {**t, "windows": win}
        for name, schema in TABLES.items():
            tables[name].to_parquet(out / f"{name}.parquet", index=False, schema=schema)
    report = _report(src.inventory, res, assignment, t, win, win_skipped)
    if params.data.format != "ego4d":  # the Ego4D report keeps its keys (a DVC metrics file)
        report = {"format": params.data.format, **report}
    REPORTS_DIR.mkdir(parents=True, exist_ok=True)
    atomic.write_json(REPORTS_DIR / "extract.json", report, trailing_newline=False)
    return report


def _report(
    inv: ego4d.Inventory,
    res: _Videos,
    assignment: dict[str, str],
    t: dict[str, pd.DataFrame],
    win: pd.DataFrame,
    win_skipped: dict,
) -> dict:
    videos, keyframes, gaze_frames = t["videos"], t["keyframes"], t["gaze_frames"]
    for uid in assignment:
        res.per_video[uid]["split"] = assignment[uid]
        res.per_video[uid]["windows"] = {k: int(((win.uid == uid) & (win.task == k)).sum()) for k in TASKS}
    return {
        "root": str(inv.root),
        "videos": {"used": len(res.kept), "skipped": len(res.skipped)},
        "skipped_videos": [s.as_dict() for s in sorted(res.skipped, key=lambda s: (s.uid, s.file))],
        "notes": inv.notes + res.notes,
        "splits": {
            s: {
                "videos": int((videos.split == s).sum()),
                "keyframes": int((keyframes.split == s).sum()),
                "windows": {k: int(((win.split == s) & (win.task == k)).sum()) for k in TASKS},
            }
            for s in SPLITS
        },
        "windows": {k: {"made": int((win.task == k).sum()), "skipped": win_skipped[k]} for k in TASKS},
        "gaze_labels": {name: int((gaze_frames.label == name).sum()) for name in GAZE_LABELS},
        "per_video": {uid: res.per_video[uid] for uid in sorted(assignment)},
    }


# --- figures -----------------------------------------------------------------------------------------

LABEL_COLOURS = {"fixation": "#2ca02c", "saccade": "#ff7f0e", "out_of_frame": "#d62728", "untracked": "#7f7f7f"}


def plot_keyframes_with_gaze(
    keyframes: pd.DataFrame, gaze_frames: pd.DataFrame, n: int = 8, uid: str | None = None, start: int = 0
):
    """n consecutive keyframes of one video with the per-frame gaze point drawn on them (for
    inspection only: nothing drawn here reaches the model)."""
    import matplotlib.pyplot as plt

    uid = uid or str(sorted(keyframes.uid.unique())[0])
    kf = keyframes[keyframes.uid == uid].sort_values("frame").iloc[start : start + n]
    gaze = gaze_frames[gaze_frames.uid == uid].set_index("frame")
    cols = min(4, max(1, len(kf)))
    rows = int(np.ceil(len(kf) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, kf.itertuples(), strict=False):  # more axes than keyframes
        image = cv2.imread(str(row.path))
        if image is None:
            raise FileNotFoundError(f"{row.path}: keyframe JPEG missing")
        ax.imshow(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        g = gaze.loc[row.frame]
        if np.isfinite(g.x):
            h, w = image.shape[:2]
            ax.plot(
                np.clip(g.x, 0, w - 1),
                np.clip(g.y, 0, h - 1),
                "o",
                ms=14,
                mfc="none",
                mec=LABEL_COLOURS[g.label],
                mew=2,
            )
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
    sns.countplot(
        data=data,
        x="label",
        hue="split",
        order=list(GAZE_LABELS),
        hue_order=[s for s in SPLITS if s in set(data.split)],
        ax=ax,
    )
    ax.set_title("per-frame gaze labels (GLC convention)", fontsize=9)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def plot_window_counts(windows_table: pd.DataFrame):
    """Windows per task and split."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 3))
    sns.countplot(
        data=windows_table,
        x="task",
        hue="split",
        order=list(TASKS),
        hue_order=[s for s in SPLITS if s in set(windows_table.split)],
        ax=ax,
    )
    ax.set_title("windows per task and split", fontsize=9)
    fig.tight_layout()
    return fig
