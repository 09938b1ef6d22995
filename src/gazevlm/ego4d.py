"""Readers for the Ego4D on-disk layout (as the Ego4D CLI downloads it), shared by the synthetic world and real data.

    <root>/v2/ego4d.json                      metadata (fps, resolution, frame count) per video
    <root>/v2/gaze/<uid>.csv                  eye tracking; manifest.csv / manifest.ver are not gaze
    <root>/v2/gaze/<uid>.mp4                  old (v1) downloads: the same CSV text with an .mp4 suffix
    <root>/v2/full_scale[.gaze]/<uid>.mp4     the video
    <root>/v2/annotations/narration.json      timestamped narrations

Policy for bad input: a problem with the whole root (no ego4d.json, no gaze folder, no narration file)
raises an `Ego4DError` subclass naming the path; a problem with one video (bad CSV, unreadable or short
video, missing metadata entry, gaze without video or the reverse) is a `Skip` the caller counts in its
report. The gaze y axis is flipped exactly once, in `gaze_per_frame` (Ego4D's origin is bottom-left).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa

EGO4D_VERSION = "v2"
GAZE_DIR = "gaze"
VIDEO_DIRS = ("full_scale", "full_scale.gaze")  # the CLI's folder first; some users keep the other
NARRATION_FILE = Path("annotations") / "narration.json"
METADATA_FILE = "ego4d.json"
MANIFEST_NAMES = ("manifest.csv", "manifest.ver")
NARRATION_PASSES = ("narration_pass_1", "narration_pass_2")

# The leading columns of an Ego4D gaze CSV, the ones that carry data (the synthetic world writes only
# these, leaving the rest empty), with the types the values have.
GAZE_DATA = pa.schema(
    [
        ("component_idx", pa.int64()),
        ("component_timestamp_s", pa.float64()),
        ("canonical_timestamp_s", pa.float64()),
        ("world_index", pa.int64()),
        ("confidence", pa.float64()),
        ("norm_pos_x", pa.float64()),
        ("norm_pos_y", pa.float64()),
    ]
)
# Every column of an Ego4D gaze CSV, in the order the files have them.
GAZE_COLUMNS = (
    *GAZE_DATA.names,
    "base_data",
    "gaze_point_3d_x",
    "gaze_point_3d_y",
    "gaze_point_3d_z",
    "eye_center0_3d_x",
    "eye_center0_3d_y",
    "eye_center0_3d_z",
    "eye_center1_3d_x",
    "eye_center1_3d_y",
    "eye_center1_3d_z",
    "gaze_normal0_x",
    "gaze_normal0_y",
    "gaze_normal0_z",
    "gaze_normal1_x",
    "gaze_normal1_y",
    "gaze_normal1_z",
)
# The columns that carry data and that we read; the others may be absent or empty.
GAZE_REQUIRED = ("canonical_timestamp_s", "confidence", "norm_pos_x", "norm_pos_y")
# norm_pos outside [0, 1] is a legitimate out-of-frame excursion; far outside this band it is garbage.
NORM_POS_BAND = (-1.0, 2.0)
# Decoders and metadata disagree by a frame or two on real Ego4D; more than this is a short video.
FRAME_COUNT_TOLERANCE = 2
FPS_RELATIVE_TOLERANCE = 0.01


class Ego4DError(ValueError):
    """Bad Ego4D-layout input; the message names the file and the problem."""


class LayoutError(Ego4DError):
    """The root itself is unusable (missing ego4d.json, gaze folder, ...)."""


class MetadataError(Ego4DError):
    """ego4d.json is unreadable or has no usable entry for a video."""


class GazeFileError(Ego4DError):
    """A gaze CSV is empty, malformed, or lacks required columns."""


class VideoFileError(Ego4DError):
    """A video is unreadable, disagrees with its metadata, or is shorter than it claims."""


class NarrationError(Ego4DError):
    """narration.json is missing or malformed."""


@dataclass(frozen=True)
class Skip:
    """One video left out of a stage, and why (always reported, never silent)."""

    uid: str
    file: str
    reason: str

    def as_dict(self) -> dict:
        return {"uid": self.uid, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class VideoMeta:
    """The parts of an ego4d.json `videos[]` entry the pipeline needs."""

    uid: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration_s: float
    has_gaze: bool | None = None


@dataclass(frozen=True)
class VideoProbe:
    """What OpenCV sees in a video file."""

    path: Path
    fps: float
    width: int
    height: int
    num_frames: int


@dataclass(frozen=True)
class VideoRecord:
    """A video with gaze, metadata and a readable file; `num_frames` is what can be decoded."""

    uid: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration_s: float
    video_path: Path
    gaze_path: Path


@dataclass
class Inventory:
    """Everything `discover` found under a root: usable videos, skipped ones, and notes on quirks."""

    root: Path
    videos: list[VideoRecord] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GazeStats:
    """How many rows of a gaze CSV were usable, and why the others were dropped."""

    rows: int
    used: int
    dropped_nan: int
    dropped_out_of_range: int
    t_first: float
    t_last: float
    dropped_truncated: int = 0  # a last row cut short (file truncated mid-row): its values may be partial

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def version_dir(root: str | Path, version: str = EGO4D_VERSION) -> Path:
    return Path(root) / version


# --- discovery ---------------------------------------------------------------------------------------


def _is_csv_text(path: Path) -> bool:
    """An old-suffix gaze file is CSV text whose header names the Ego4D gaze columns."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "canonical_timestamp_s" in text.splitlines()[0] if text else False


def find_gaze_files(vdir: Path) -> tuple[dict[str, Path], list[Skip], list[str]]:
    """Gaze CSVs under <vdir>/gaze keyed by uid (the file stem); skips and notes for the rest."""
    gdir = vdir / GAZE_DIR
    if not gdir.is_dir():
        raise LayoutError(f"{gdir}: gaze folder not found (expected gaze/<video_uid>.csv files)")
    found: dict[str, Path] = {}
    skipped: list[Skip] = []
    notes: list[str] = []
    legacy: dict[str, Path] = {}
    for path in sorted(gdir.iterdir()):
        if path.name in MANIFEST_NAMES or not path.is_file():
            continue
        if path.suffix == ".csv":
            found[path.stem] = path
        elif path.suffix == ".mp4":
            if _is_csv_text(path):
                legacy[path.stem] = path
            else:
                skipped.append(
                    Skip(
                        path.stem,
                        str(path),
                        "gaze/ holds an .mp4 that is not CSV text "
                        "(gaze files must be CSV; old v1 downloads used an .mp4 suffix on CSV text)",
                    )
                )
        else:
            notes.append(f"{path}: ignored (not a gaze CSV)")
    for uid, path in legacy.items():
        if uid in found:
            notes.append(f"{path}: old .mp4-suffixed gaze CSV ignored, {found[uid].name} is used")
        else:
            found[uid] = path
            notes.append(f"{path}: gaze CSV with the old v1 .mp4 suffix, read as CSV")
    return found, skipped, notes


def find_videos(vdir: Path) -> tuple[dict[str, Path], list[str]]:
    """Videos keyed by uid from full_scale/ (preferred) and full_scale.gaze/."""
    videos: dict[str, Path] = {}
    notes: list[str] = []
    for name in VIDEO_DIRS:
        folder = vdir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.mp4")):
            if path.stem in videos:
                notes.append(f"{path}: duplicate of {videos[path.stem]}, which is used")
            else:
                videos[path.stem] = path
    if not any((vdir / name).is_dir() for name in VIDEO_DIRS):
        notes.append(f"{vdir}: neither {' nor '.join(VIDEO_DIRS)} exists; every video is missing")
    return videos, notes


def read_metadata(vdir: Path) -> dict[str, VideoMeta]:
    """The `videos[]` entries of ego4d.json keyed by uid; raises if the file is missing or malformed."""
    path = vdir / METADATA_FILE
    if not path.is_file():
        raise LayoutError(f"{path}: ego4d.json not found (download it with `ego4d --metadata`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetadataError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(raw, dict) or not isinstance(raw.get("videos"), list):
        raise MetadataError(f"{path}: expected an object with a `videos` list")
    out: dict[str, VideoMeta] = {}
    for entry in raw["videos"]:
        uid = entry.get("video_uid") if isinstance(entry, dict) else None
        if not uid:
            continue
        vm = entry.get("video_metadata") or {}
        try:
            fps = float(vm["fps"])
            width = int(vm["display_resolution_width"])
            height = int(vm["display_resolution_height"])
            num_frames = int(vm["num_frames"])
        except (KeyError, TypeError, ValueError):
            continue  # an incomplete entry counts as missing; `discover` reports it per video
        duration = entry.get("duration_sec", vm.get("mp4_duration_sec"))
        out[uid] = VideoMeta(
            uid,
            fps,
            width,
            height,
            num_frames,
            float(duration) if duration is not None else num_frames / fps,
            entry.get("has_gaze"),
        )
    return out


def probe_video(path: str | Path) -> VideoProbe:
    """Open a video with OpenCV and decode its first frame; raises VideoFileError if it cannot."""
    path = Path(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoFileError(f"{path}: OpenCV cannot open the video (corrupt or unsupported)")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoFileError(f"{path}: no frame could be decoded (corrupt video)")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        return VideoProbe(path, fps, int(frame.shape[1]), int(frame.shape[0]), n)
    finally:
        cap.release()


def check_video(meta: VideoMeta, probe: VideoProbe) -> int:
    """Frames usable in the video, after checking it against ego4d.json; raises VideoFileError."""
    if (probe.width, probe.height) != (meta.width, meta.height):
        raise VideoFileError(
            f"{probe.path}: resolution {probe.width}x{probe.height} but ego4d.json says {meta.width}x{meta.height}"
        )
    if probe.fps <= 0 or abs(probe.fps - meta.fps) > FPS_RELATIVE_TOLERANCE * meta.fps:
        raise VideoFileError(f"{probe.path}: {probe.fps:g} fps but ego4d.json says {meta.fps:g}")
    if probe.num_frames < meta.num_frames - FRAME_COUNT_TOLERANCE:
        raise VideoFileError(
            f"{probe.path}: video shorter than its metadata ({probe.num_frames} frames, "
            f"ego4d.json says {meta.num_frames})"
        )
    return min(probe.num_frames, meta.num_frames)


def discover(root: str | Path, version: str = EGO4D_VERSION) -> Inventory:
    """Pair gaze CSVs, videos and metadata under an Ego4D-layout root; the video list comes from the
    gaze CSV stems. Raises LayoutError if ego4d.json or gaze/ is missing; per-video problems are skips."""
    vdir = version_dir(root, version)
    if not vdir.is_dir():
        raise LayoutError(f"{vdir}: Ego4D version folder not found (is data.root / data.version right?)")
    inv = Inventory(root=vdir)
    metadata = read_metadata(vdir)
    gaze, gaze_skips, gaze_notes = find_gaze_files(vdir)
    videos, video_notes = find_videos(vdir)
    inv.skipped += gaze_skips
    inv.notes += gaze_notes + video_notes
    for uid, gaze_path in sorted(gaze.items()):
        video_path = videos.get(uid)
        if video_path is None:
            inv.skipped.append(
                Skip(
                    uid,
                    str(gaze_path),
                    "gaze CSV without a video in " + " or ".join(f"{vdir / d}/" for d in VIDEO_DIRS),
                )
            )
            continue
        meta = metadata.get(uid)
        if meta is None:
            inv.skipped.append(
                Skip(
                    uid,
                    str(vdir / METADATA_FILE),
                    "no usable entry in ego4d.json (video_uid with video_metadata fps, resolution and num_frames)",
                )
            )
            continue
        if meta.has_gaze is False:
            inv.notes.append(
                f"{uid}: ego4d.json says has_gaze=false but a gaze CSV exists; using it "
                "(has_gaze was wrong in old metadata)"
            )
        try:
            num_frames = check_video(meta, probe_video(video_path))
        except VideoFileError as err:
            inv.skipped.append(Skip(uid, str(video_path), str(err)))
            continue
        inv.videos.append(
            VideoRecord(uid, meta.fps, meta.width, meta.height, num_frames, meta.duration_s, video_path, gaze_path)
        )
    for uid, video_path in sorted(videos.items()):
        if uid not in gaze and not any(s.uid == uid for s in inv.skipped):
            inv.skipped.append(Skip(uid, str(video_path), f"video without a gaze CSV in {vdir / GAZE_DIR}/"))
    return inv


# --- gaze --------------------------------------------------------------------------------------------


def last_row_is_cut(path: Path, columns: list[str], tail_bytes: int = 1 << 16) -> bool:
    """True when the file's last data row was cut short: fewer fields than the header, or (no final
    newline) a full row whose last field is a column we read, which may then hold a partial number."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - tail_bytes))
        tail = fh.read()
    lines = [line for line in tail.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        return False
    fields = next(csv.reader([lines[-1]]))
    if len(fields) < len(columns):
        return True
    return not tail.endswith((b"\n", b"\r")) and columns[len(fields) - 1] in GAZE_REQUIRED


def read_gaze_csv(path: str | Path) -> tuple[pd.DataFrame, GazeStats]:
    """Samples (t, confidence, norm_x, norm_y; sorted by t) of one Ego4D gaze CSV, and counts of the
    rows dropped (a last row cut short; NaN: tracking loss; out of range: garbage values)."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError as err:
        raise GazeFileError(f"{path}: empty gaze CSV (no header, no samples)") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise GazeFileError(f"{path}: not a readable CSV: {err}") from err
    missing = [c for c in GAZE_REQUIRED if c not in raw.columns]
    if missing:
        raise GazeFileError(f"{path}: missing gaze column(s) {missing} (have {list(raw.columns)[:8]}...)")
    truncated = int(len(raw) > 0 and last_row_is_cut(path, list(raw.columns)))
    if truncated:
        raw = raw.iloc[:-1]  # "0.51" of a cut "0.5123" would otherwise be kept as a real value
    if raw.empty:
        raise GazeFileError(f"{path}: gaze CSV has a header but no samples")
    cols = {}
    for name in GAZE_REQUIRED:
        values = pd.to_numeric(raw[name], errors="coerce")
        garbage = values.isna() & raw[name].notna()
        if garbage.any():
            row = int(np.flatnonzero(garbage.to_numpy())[0])
            raise GazeFileError(
                f"{path}: non-numeric value {raw[name].iloc[row]!r} in column {name} (data row {row + 1})"
            )
        cols[name] = values.to_numpy(dtype=np.float64)
    t = cols["canonical_timestamp_s"]
    conf = cols["confidence"]
    nx, ny = cols["norm_pos_x"], cols["norm_pos_y"]
    finite = np.isfinite(t) & np.isfinite(conf) & np.isfinite(nx) & np.isfinite(ny)
    lo, hi = NORM_POS_BAND
    in_range = (t >= 0) & (conf >= 0) & (conf <= 1) & (nx >= lo) & (nx <= hi) & (ny >= lo) & (ny <= hi)
    keep = finite & in_range
    if not keep.any():
        raise GazeFileError(
            f"{path}: no usable gaze sample among {len(raw)} rows "
            f"({int((~finite).sum())} with NaN, {int((finite & ~in_range).sum())} out of range)"
        )
    samples = pd.DataFrame({"t": t[keep], "confidence": conf[keep], "norm_x": nx[keep], "norm_y": ny[keep]})
    samples = samples.sort_values("t", kind="stable", ignore_index=True)
    stats = GazeStats(
        rows=len(raw) + truncated,
        used=int(keep.sum()),
        dropped_nan=int((~finite).sum()),
        dropped_out_of_range=int((finite & ~in_range).sum()),
        t_first=float(samples.t.iloc[0]),
        t_last=float(samples.t.iloc[-1]),
        dropped_truncated=truncated,
    )
    return samples, stats


def gaze_per_frame(
    samples: pd.DataFrame,
    *,
    fps: float,
    width: int,
    height: int,
    num_frames: int,
    confidence_min: float,
    max_gap_s: float,
    saccade_px: float,
) -> pd.DataFrame:
    """One row per video frame: frame, t, x, y (pixels, origin top-left), confidence, label, valid.

    Frame i (t = i / fps) takes the nearest sample in time among those with confidence >= confidence_min
    (blinks are low-confidence); if that sample is more than max_gap_s away the frame is `untracked`.
    Otherwise it is `out_of_frame` if the point lies outside the image, `saccade` if it moved more than
    saccade_px since the previous frame's point, else `fixation` (the GLC convention).
    """
    frames = np.arange(num_frames, dtype=np.int64)
    ft = frames / float(fps)
    good = samples["confidence"].to_numpy() >= confidence_min
    ts = samples["t"].to_numpy()[good]
    n = len(ts)
    x = np.full(num_frames, np.nan)
    y = np.full(num_frames, np.nan)
    conf = np.full(num_frames, np.nan)
    if n:
        right = np.clip(np.searchsorted(ts, ft), 0, n - 1)
        left = np.clip(right - 1, 0, n - 1)
        nearest = np.where(np.abs(ts[left] - ft) <= np.abs(ts[right] - ft), left, right)
        tracked = np.abs(ts[nearest] - ft) <= max_gap_s
        pick = nearest[tracked]
        x[tracked] = samples["norm_x"].to_numpy()[good][pick] * width
        # The one place the Ego4D bottom-left origin becomes the image's top-left origin.
        y[tracked] = (1.0 - samples["norm_y"].to_numpy()[good][pick]) * height
        conf[tracked] = samples["confidence"].to_numpy()[good][pick]
    tracked = np.isfinite(x)
    inside = tracked & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    moved = np.zeros(num_frames, dtype=bool)
    if num_frames > 1:
        step = np.hypot(np.diff(x), np.diff(y))  # NaN where either frame is untracked
        moved[1:] = np.nan_to_num(step, nan=0.0) > saccade_px
    label = np.where(~tracked, "untracked", np.where(~inside, "out_of_frame", np.where(moved, "saccade", "fixation")))
    return pd.DataFrame(
        {"frame": frames, "t": ft, "x": x, "y": y, "confidence": conf, "label": label.astype(object), "valid": inside}
    )


# --- narrations --------------------------------------------------------------------------------------


def read_narrations(root: str | Path, version: str = EGO4D_VERSION) -> pd.DataFrame:
    """Every narration of narration.json: uid, pass, timestamp_sec, timestamp_frame, text,
    annotation_uid (sorted by uid, pass, time). Raises NarrationError if the file is missing or malformed."""
    path = version_dir(root, version) / NARRATION_FILE
    if not path.is_file():
        raise NarrationError(f"{path}: narration file not found (download it with `ego4d --datasets annotations`)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NarrationError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise NarrationError(f"{path}: expected an object keyed by video_uid")
    rows = []
    for uid, entry in raw.items():
        if not isinstance(entry, dict):
            raise NarrationError(f"{path}: entry for {uid} is not an object")
        for pass_name in NARRATION_PASSES:
            block = entry.get(pass_name)
            if block is None:
                continue
            items = block.get("narrations") if isinstance(block, dict) else None
            if not isinstance(items, list):
                raise NarrationError(f"{path}: {uid}.{pass_name} has no `narrations` list")
            for item in items:
                try:
                    rows.append(
                        (
                            uid,
                            pass_name,
                            float(item["timestamp_sec"]),
                            int(item["timestamp_frame"]),
                            str(item["narration_text"]),
                            str(item.get("annotation_uid", "")),
                        )
                    )
                except (KeyError, TypeError, ValueError) as err:
                    raise NarrationError(f"{path}: malformed narration in {uid}.{pass_name}: {item!r}") from err
    table = pd.DataFrame(rows, columns=["uid", "pass", "timestamp_sec", "timestamp_frame", "text", "annotation_uid"])
    return table.sort_values(["uid", "pass", "timestamp_sec"], kind="stable", ignore_index=True)
