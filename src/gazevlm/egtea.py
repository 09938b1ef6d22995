"""Readers for the EGTEA Gaze+ release as users unpack it (README "Real EGTEA Gaze+").

    <root>/videos/<session>.mp4             a whole cooking session, 24 fps, 640 x 480 (raw_videos/ or
                                            session_videos/ are accepted too)
    <root>/gaze_data/<session>.txt          the session's eye tracking, an SMI BeGaze text export
    <root>/action_annotation/verb_idx.txt, noun_idx.txt, action_idx.txt     "<name> <index>" per line, 1-based
    <root>/action_annotation/{train,test}_split<k>.txt                      "<clip> <action> <verb> <noun>"

BeGaze text: a header of `##` lines (how many differs between BeGaze versions; a "Calibration Area:
<w> <h>" line, when present, is the gaze camera's frame, else EGTEA's 1280 x 960; "Number of Samples:"
is not always right), one tab-separated line of column names, then one row per sample (or `MSG` rows):
a point of regard (`B POR X [px]`, else the left or right eye's) in the gaze camera's pixels, origin
top-left, a `Frame` column (the video frame of the sample, an `hh:mm:ss:ff` timecode at 24 fps, or a
plain frame number in older exports) and an event column (`Fixation`, `Saccade`, `Blink`, or `-` for
unknown; `B Event Info`, `Category Binocular` or their left / right eye versions).

Clip names: <session>-<start ms>-<end ms>-F<start frame>-F<end frame>, frames of the session video
(e.g. P02-R04-ContinentalBreakfast-544830-552337-F013057-F013275); the frames are used, the
milliseconds may disagree with them by a few frames.

Policy for bad input, as in gazevlm.ego4d: a problem with the whole root (no gaze_data/ or
action_annotation/, a missing or malformed index or split file) raises an `EgteaError` subclass naming
the file; a problem with one session (unreadable BeGaze file, video, no gaze) is a `Skip` the caller
counts; a bad line of a split file is a counted skip. The gaze camera's pixels become the video's
pixels exactly once, in `gaze_per_frame` (no y flip: both origins are top-left).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gazevlm.ego4d import Inventory, Skip, VideoFileError, VideoRecord, probe_video

FPS = 24.0  # EGTEA's video frame rate, and the base of its BeGaze timecodes
GAZE_FRAME = (1280, 960)  # the gaze camera's frame when the header does not state its calibration area
GAZE_DIR = "gaze_data"
VIDEO_DIRS = ("videos", "raw_videos", "session_videos")  # the first present copy of a session is used
ANNOTATION_DIR = "action_annotation"
INDEX_FILES = {"verb": "verb_idx.txt", "noun": "noun_idx.txt", "action": "action_idx.txt"}
SPLIT_NAMES = ("train", "test")
FPS_RELATIVE_TOLERANCE = 0.01
SAMPLE_TYPE = "SMP"  # BeGaze's sample rows; MSG rows carry messages
EVENTS = {"fixation": "fixation", "saccade": "saccade", "blink": "blink"}  # anything else is unknown
EVENT_COLUMNS = tuple(f"{e} Event Info" for e in "BLR") + tuple(f"Category {s}" for s in ("Binocular", "Left", "Right"))
POR_PREFIXES = ("B", "L", "R")  # binocular first, then either eye
COORD_BAND = (-1.0, 2.0)  # points this far outside the gaze frame (in frame widths) are garbage
_TIMECODE = re.compile(r"^(\d+):(\d{2}):(\d{2}):(\d{2})$")
_CLIP = re.compile(r"^(?P<session>.+)-(?P<t0>\d+)-(?P<t1>\d+)-F(?P<f0>\d+)-F(?P<f1>\d+)$")


class EgteaError(ValueError):
    """Bad EGTEA-layout input; the message names the file and the problem."""


class LayoutError(EgteaError):
    """The root itself is unusable (no gaze_data/ or action_annotation/ folder)."""


class GazeFileError(EgteaError):
    """A BeGaze text export is empty, malformed, or lacks the columns read."""


class AnnotationError(EgteaError):
    """An index or split file of action_annotation/ is missing or malformed."""


# --- discovery -----------------------------------------------------------------------------------------


def find_videos(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Session videos keyed by session name from videos/ (preferred), raw_videos/, session_videos/."""
    videos: dict[str, Path] = {}
    notes: list[str] = []
    for name in VIDEO_DIRS:
        for path in sorted((root / name).glob("*.mp4")) if (root / name).is_dir() else []:
            if path.stem in videos:
                notes.append(f"{path}: duplicate of {videos[path.stem]}, which is used")
            else:
                videos[path.stem] = path
    if not any((root / name).is_dir() for name in VIDEO_DIRS):
        notes.append(f"{root}: none of {', '.join(VIDEO_DIRS)} exists; every session video is missing")
    return videos, notes


def check_video(path: Path) -> tuple[float, int, int, int]:
    """(fps, width, height, frames) of a session video; raises VideoFileError unless it runs at 24 fps,
    the rate BeGaze's timecodes and the clip names count frames in."""
    probe = probe_video(path)
    if abs(probe.fps - FPS) > FPS_RELATIVE_TOLERANCE * FPS:
        raise VideoFileError(
            f"{path}: {probe.fps:g} fps, but EGTEA's timecodes and clip names count {FPS:g} "
            "frames per second (use the released videos, not a re-encoded copy)"
        )
    if probe.num_frames < 1:
        raise VideoFileError(f"{path}: OpenCV reports no frames")
    return FPS, probe.width, probe.height, probe.num_frames


def discover(root: str | Path) -> Inventory:
    """Pair BeGaze files and session videos under an EGTEA root (the session list comes from the gaze
    file stems). Raises LayoutError if gaze_data/ or action_annotation/ is missing; a session without a
    video, without gaze, or with a bad video is a skip."""
    root = Path(root)
    for name in (GAZE_DIR, ANNOTATION_DIR):
        if not (root / name).is_dir():
            raise LayoutError(
                f"{root / name}: folder not found (is data.root an EGTEA Gaze+ download with "
                f"{GAZE_DIR}/ and {ANNOTATION_DIR}/?)"
            )
    inv = Inventory(root=root)
    gaze = {p.stem: p for p in sorted((root / GAZE_DIR).glob("*.txt"))}
    videos, inv.notes = find_videos(root)
    for other in sorted(p for p in (root / GAZE_DIR).iterdir() if p.suffix != ".txt"):
        inv.notes.append(f"{other}: ignored (not a BeGaze .txt export)")
    for session, gaze_path in sorted(gaze.items()):
        video = videos.get(session)
        if video is None:
            inv.skipped.append(
                Skip(
                    session,
                    str(gaze_path),
                    "BeGaze file without a session video in " + " or ".join(f"{root / d}/" for d in VIDEO_DIRS),
                )
            )
            continue
        try:
            fps, width, height, frames = check_video(video)
        except VideoFileError as err:
            inv.skipped.append(Skip(session, str(video), str(err)))
            continue
        inv.videos.append(VideoRecord(session, fps, width, height, frames, frames / fps, video, gaze_path))
    for session, video in sorted(videos.items()):
        if session not in gaze:
            inv.skipped.append(Skip(session, str(video), f"session video without a BeGaze file in {root / GAZE_DIR}/"))
    return inv


# --- BeGaze text exports ---------------------------------------------------------------------------------


@dataclass
class BeGazeStats:
    """What reading one BeGaze export kept and dropped, and what its header said."""

    header_lines: int
    rows: int = 0
    samples: int = 0
    messages: int = 0
    dropped_truncated: int = 0  # a last row cut short (file truncated mid-row)
    dropped_out_of_range: int = 0  # a fixation or saccade point far outside the gaze frame
    dropped_after_video: int = 0  # samples on frames past the video's end (set by gaze_per_frame)
    header_samples: int | None = None  # "## Number of Samples:" (not always right)
    gaze_frame: tuple[int, int] = GAZE_FRAME
    events: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**self.__dict__, "gaze_frame": list(self.gaze_frame)}


@dataclass(frozen=True)
class _Columns:
    x: int
    y: int
    frame: int
    event: int
    kind: int | None
    n: int


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise GazeFileError(f"{path}: cannot read the BeGaze file: {err}") from err
    if b"\x00" in data[:4096]:
        raise GazeFileError(f"{path}: not a text file (BeGaze gaze data must be exported as text)")
    # BeGaze writes Latin-1 (degree signs, umlauts in subject names); it decodes any byte
    return data.decode("utf-8") if _is_utf8(data) else data.decode("latin-1")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _header(lines: list[str], path: Path) -> tuple[int, dict[str, str]]:
    """(index of the column-name line, {key: value} of the `##` header)."""
    fields: dict[str, str] = {}
    k = 0
    while k < len(lines) and (lines[k].startswith("##") or not lines[k].strip()):
        key, sep, value = lines[k].lstrip("#").partition(":")
        if sep:
            fields[key.strip()] = value.strip()
        k += 1
    if k == len(lines):
        raise GazeFileError(f"{path}: no column names after the ## header (empty or header-only export)")
    return k, fields


def _header_numbers(fields: dict[str, str], path: Path) -> tuple[tuple[int, int], int | None]:
    """The gaze camera's frame ("## Calibration Area: 1280 960", else EGTEA's) and the stated sample count."""
    frame = GAZE_FRAME
    if "Calibration Area" in fields:
        try:
            w, h = (int(v) for v in fields["Calibration Area"].split())
        except ValueError:
            raise GazeFileError(
                f"{path}: header line 'Calibration Area: {fields['Calibration Area']}' is not "
                "two integers (the gaze camera's width and height)"
            ) from None
        if w <= 0 or h <= 0:
            raise GazeFileError(f"{path}: calibration area {w} x {h} is not a frame size")
        frame = (w, h)
    stated = fields.get("Number of Samples", "").split()
    return frame, int(stated[0]) if stated and stated[0].isdigit() else None


def _columns(names: list[str], path: Path) -> _Columns:
    def find(options) -> int | None:
        return next((names.index(o) for o in options if o in names), None)

    x = y = None
    for eye in POR_PREFIXES:
        if f"{eye} POR X [px]" in names and f"{eye} POR Y [px]" in names:
            x, y = names.index(f"{eye} POR X [px]"), names.index(f"{eye} POR Y [px]")
            break
    frame, event = find(("Frame",)), find(EVENT_COLUMNS)
    missing = [
        what
        for what, i in (
            ("a point of regard (B/L/R POR X [px], POR Y [px])", x),
            ("Frame", frame),
            (f"an event column ({', '.join(EVENT_COLUMNS)})", event),
        )
        if i is None
    ]
    if missing:
        raise GazeFileError(
            f"{path}: BeGaze columns missing: {'; '.join(missing)} (the column line has "
            f"{names[:10]}{'...' if len(names) > 10 else ''})"
        )
    return _Columns(x, y, frame, event, find(("Type",)), len(names))


def parse_timecode(value: str) -> int:
    """The frame index of an `hh:mm:ss:ff` timecode at 24 fps, or of a plain frame number; ValueError
    for anything else (a timecode whose frame field reaches 24 counts at another rate)."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    m = _TIMECODE.match(value)
    if not m:
        raise ValueError(f"{value!r} is neither an hh:mm:ss:ff timecode nor a frame number")
    h, mi, s, f = (int(g) for g in m.groups())
    if mi >= 60 or s >= 60 or f >= FPS:
        raise ValueError(
            f"timecode {value!r} is not a valid {FPS:g} fps timecode (minutes and seconds < 60, frames < {FPS:g})"
        )
    return int(((h * 60 + mi) * 60 + s) * FPS) + f


def event_kind(value: str) -> str:
    return EVENTS.get(value.strip().lower(), "unknown")


def _is_cut(fields: list[str], cols: _Columns) -> bool:
    """A last line without its newline was cut mid-row when it is short or its event is half a word."""
    if len(fields) < cols.n:
        return True
    return (
        cols.event == cols.n - 1 and event_kind(fields[cols.event]) == "unknown" and fields[cols.event].strip() != "-"
    )


def _point(x: str, y: str, strict: bool) -> tuple[float, float]:
    """A fixation's or saccade's point must be numbers; a blink's or unknown's is never read (it may be `-`)."""
    try:
        return float(x), float(y)
    except ValueError:
        if strict:
            raise
        return float("nan"), float("nan")


def read_begaze(path: str | Path) -> tuple[pd.DataFrame, BeGazeStats]:
    """Samples of one BeGaze export: frame (video frame index), x, y (gaze camera pixels, origin top-left),
    event (fixation | saccade | blink | unknown), in file order; and what was kept and dropped. Raises
    GazeFileError naming the file (and line) for an unreadable or malformed export."""
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    start, fields = _header(lines, path)
    gaze_frame, stated = _header_numbers(fields, path)
    cols = _columns([c.strip() for c in lines[start].split("\t")], path)
    stats = BeGazeStats(header_lines=start, header_samples=stated, gaze_frame=gaze_frame)
    rows: list[tuple[int, float, float, str]] = []
    last = max((k for k in range(start + 1, len(lines)) if lines[k].strip()), default=-1)
    for k in range(start + 1, len(lines)):
        if not lines[k].strip():
            continue
        stats.rows += 1
        values = lines[k].split("\t")
        if cols.kind is not None and len(values) > cols.kind and values[cols.kind].strip() != SAMPLE_TYPE:
            stats.messages += 1
            continue
        if k == last and not text.endswith(("\n", "\r")) and _is_cut(values, cols):
            stats.dropped_truncated += 1
            continue
        if len(values) < cols.n:
            raise GazeFileError(f"{path}: line {k + 1} has {len(values)} fields, the column line {cols.n}")
        event = event_kind(values[cols.event])
        try:
            frame = parse_timecode(values[cols.frame])
            x, y = _point(values[cols.x], values[cols.y], strict=event in ("fixation", "saccade"))
        except ValueError as err:
            raise GazeFileError(f"{path}: line {k + 1}: {err}") from None
        rows.append((frame, x, y, event))
    samples = pd.DataFrame(rows, columns=["frame", "x", "y", "event"])
    return _drop_garbage(samples, stats, path)


def _drop_garbage(samples: pd.DataFrame, stats: BeGazeStats, path: Path) -> tuple[pd.DataFrame, BeGazeStats]:
    """Fixation and saccade points far outside the gaze frame are garbage (blinks' points are never read)."""
    w, h = stats.gaze_frame
    lo, hi = COORD_BAND
    tracked = samples["event"].isin(("fixation", "saccade"))
    finite = np.isfinite(samples["x"]) & np.isfinite(samples["y"])
    inside = finite & samples["x"].between(lo * w, hi * w) & samples["y"].between(lo * h, hi * h)
    bad = tracked & ~inside
    stats.dropped_out_of_range = int(bad.sum())
    samples = samples[~bad].reset_index(drop=True)
    stats.samples = len(samples)
    stats.events = {e: int((samples["event"] == e).sum()) for e in ("fixation", "saccade", "blink", "unknown")}
    if not len(samples):
        raise GazeFileError(
            f"{path}: no usable gaze sample among {stats.rows} rows ({stats.messages} messages, "
            f"{stats.dropped_out_of_range} out of range, {stats.dropped_truncated} cut short)"
        )
    return samples, stats


def gaze_per_frame(
    samples: pd.DataFrame, stats: BeGazeStats, *, fps: float, width: int, height: int, num_frames: int
) -> pd.DataFrame:
    """One row per video frame, as gazevlm.ego4d.gaze_per_frame: frame, t, x, y (video pixels, origin
    top-left), confidence, label, valid.

    A frame's point is the mean of its fixation and saccade samples, scaled from the gaze camera's frame
    to the video's (the one place this happens); a frame without such a sample (none, or only blinks and
    unknowns) is `untracked`; outside the image it is `out_of_frame`; else `saccade` if BeGaze typed any
    of its samples a saccade, otherwise `fixation`. BeGaze gives no confidence: 1 where tracked."""
    gw, gh = stats.gaze_frame
    late = samples["frame"] >= num_frames
    stats.dropped_after_video = int(late.sum())
    tracked = samples[~late & samples["event"].isin(("fixation", "saccade"))]
    per = tracked.groupby("frame").agg(
        x=("x", "mean"), y=("y", "mean"), saccade=("event", lambda e: bool((e == "saccade").any()))
    )
    frames = np.arange(num_frames, dtype=np.int64)
    x = np.full(num_frames, np.nan)
    y = np.full(num_frames, np.nan)
    saccade = np.zeros(num_frames, dtype=bool)
    idx = per.index.to_numpy(dtype=np.int64)
    x[idx] = per["x"].to_numpy() * (width / gw)
    y[idx] = per["y"].to_numpy() * (height / gh)
    saccade[idx] = per["saccade"].to_numpy(dtype=bool)
    has = np.isfinite(x)
    inside = has & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    label = np.where(~has, "untracked", np.where(~inside, "out_of_frame", np.where(saccade, "saccade", "fixation")))
    return pd.DataFrame(
        {
            "frame": frames,
            "t": frames / float(fps),
            "x": x,
            "y": y,
            "confidence": np.where(has, 1.0, np.nan),
            "label": label.astype(object),
            "valid": inside,
        }
    )


def read_gaze_frames(rec: VideoRecord) -> tuple[pd.DataFrame, dict, list[str]]:
    """extract's per-video reader: (gaze per frame, stats for the report, notes). Raises GazeFileError."""
    samples, stats = read_begaze(rec.gaze_path)
    gf = gaze_per_frame(samples, stats, fps=rec.fps, width=rec.width, height=rec.height, num_frames=rec.num_frames)
    notes = []
    if stats.dropped_truncated:
        notes.append(f"{rec.gaze_path}: last row cut short (truncated file?), dropped")
    if stats.dropped_after_video:
        notes.append(f"{rec.gaze_path}: {stats.dropped_after_video} sample(s) after the video's last frame dropped")
    if stats.header_samples is not None and stats.header_samples != stats.rows - stats.messages:
        notes.append(
            f"{rec.gaze_path}: header says {stats.header_samples} samples, the file has "
            f"{stats.rows - stats.messages} (BeGaze's count is not always right; the rows are read)"
        )
    return gf, stats.as_dict(), notes


# --- action annotations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    name: str
    session: str
    start_ms: int
    end_ms: int
    start_frame: int
    end_frame: int


def parse_clip_name(name: str) -> Clip:
    """<session>-<start ms>-<end ms>-F<start frame>-F<end frame>; ValueError naming what is wrong."""
    m = _CLIP.match(name.strip())
    if not m:
        raise ValueError(f"clip name {name!r} is not <session>-<start ms>-<end ms>-F<start frame>-F<end frame>")
    t0, t1, f0, f1 = (int(m.group(g)) for g in ("t0", "t1", "f0", "f1"))
    if t1 < t0 or f1 < f0:
        raise ValueError(f"clip {name!r} ends before it starts")
    return Clip(name.strip(), m.group("session"), t0, t1, f0, f1)


def read_index(path: Path) -> dict[int, str]:
    """{index: name} of a "<name> <index>" file (names may contain spaces); raises AnnotationError."""
    if not path.is_file():
        raise AnnotationError(f"{path}: index file not found (part of EGTEA's action_annotation download)")
    out: dict[int, str] = {}
    for k, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, idx = line.strip().rpartition(" ")
        if not name or not idx.isdigit():
            raise AnnotationError(f"{path}: line {k} {line.strip()!r} is not '<name> <index>'")
        if int(idx) in out:
            raise AnnotationError(f"{path}: index {idx} appears twice (line {k})")
        out[int(idx)] = name.strip()
    if not out:
        raise AnnotationError(f"{path}: empty index file")
    return out


def split_path(root: str | Path, split: str, k: int) -> Path:
    return Path(root) / ANNOTATION_DIR / f"{split}_split{k}.txt"


def _label(tokens: list[str], index: dict[str, dict[int, str]]) -> tuple[str, str] | str:
    """(verb, noun) of a split line's tokens, or the reason it is skipped."""
    if len(tokens) >= 4:
        verb, noun = int(tokens[2]), int(tokens[3])
        if verb not in index["verb"] or noun not in index["noun"]:
            return "unknown verb or noun index"
        return index["verb"][verb], index["noun"][noun]
    # two-column split files name the action only: its name is "<Verb> <noun>"
    action = int(tokens[1])
    if action not in index["action"]:
        return "unknown action index"
    verb, _, noun = index["action"][action].partition(" ")
    return (verb, noun) if noun else "action name without a noun"


def read_actions(root: str | Path, k: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every labelled clip of split k's train and test files: session, clip, split, start_frame,
    end_frame, start_s, end_s, verb, noun, text (a #C narration, see action_sentence); and the counts
    of lines skipped by reason. Raises AnnotationError for a missing or malformed index or split file."""
    root = Path(root)
    index = {what: read_index(root / ANNOTATION_DIR / name) for what, name in INDEX_FILES.items()}
    rows, skipped = [], {}
    for split in SPLIT_NAMES:
        path = split_path(root, split, k)
        if not path.is_file():
            raise AnnotationError(f"{path}: split file not found (data.egtea_split = {k}; EGTEA ships splits 1-3)")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            tokens = line.split()
            if not tokens:
                continue
            reason = None
            try:
                clip = parse_clip_name(tokens[0])
                label = _label(tokens, index) if len(tokens) >= 2 else "no action index"
            except ValueError:
                reason = "malformed clip name or index"
            else:
                reason = label if isinstance(label, str) else None
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            rows.append(
                {
                    "session": clip.session,
                    "clip": clip.name,
                    "split": split,
                    "start_frame": clip.start_frame,
                    "end_frame": clip.end_frame,
                    "start_s": clip.start_frame / FPS,
                    "end_s": clip.end_frame / FPS,
                    "verb": label[0],
                    "noun": label[1],
                    "text": action_sentence(*label),
                }
            )
    table = pd.DataFrame(
        rows,
        columns=["session", "clip", "split", "start_frame", "end_frame", "start_s", "end_s", "verb", "noun", "text"],
    )
    return table.sort_values(["session", "start_frame", "clip"], kind="stable", ignore_index=True), skipped


def session_split(actions: pd.DataFrame) -> tuple[dict[str, list[str]], list[str]]:
    """({train: [...], test: [...]}, notes): a session goes where most of its clips are (ties: test); the
    split files list clips, and windows of one session must never straddle train and test."""
    out: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    notes = []
    for session, group in actions.groupby("session", sort=True):
        counts = group["split"].value_counts()
        n_train, n_test = int(counts.get("train", 0)), int(counts.get("test", 0))
        split = "train" if n_train > n_test else "test"
        if n_train and n_test:
            notes.append(
                f"{session}: clips in both split files ({n_train} train, {n_test} test); the whole "
                f"session goes to {split}"
            )
        out[split].append(str(session))
    return out, notes


# --- captions from labels --------------------------------------------------------------------------------


def third_person(verb: str) -> str:
    """take -> takes, wash -> washes, mix -> mixes, carry -> carries."""
    if re.search(r"(s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


def action_sentence(verb: str, noun: str) -> str:
    """An EGTEA label as an Ego4D-style narration: ("Take", "bowl") -> "#C C takes the bowl";
    ("Put", "condiment,bread") -> "#C C puts the condiment and the bread"; ("Divide/Pull Apart",
    "onion") -> "#C C divides the onion" (the first of alternative verbs)."""
    words = verb.replace("_", " ").split("/")[0].lower().split()
    if not words:
        words = ["handles"]
    else:
        words[0] = third_person(words[0])
    things = [f"the {n.replace('_', ' ').strip().lower()}" for n in noun.split(",") if n.strip()]
    objects = " and ".join([", ".join(things[:-1]), things[-1]]) if len(things) > 1 else "".join(things)
    return f"#C C {' '.join(words)} {objects}".strip()
