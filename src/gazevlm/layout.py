"""Where every stage writes, and the columns of the tables that pass between stages.

Paths are relative to the repository root (dvc.yaml runs every stage from there). The tables are
parquet; lists are parquet list columns. Identifiers are strings built by the functions below so that
every stage spells them the same way, and every frame reference is an absolute frame index of the
source video (never a file order).

videos.parquet       uid, fps, width, height, num_frames, duration_s, split, video_path, gaze_path
gaze_frames.parquet  uid, frame, t, x, y, confidence, label, valid
                     one row per video frame; x/y in pixels, origin top-left (y flipped once, when
                     the Ego4D CSV is read); label in GAZE_LABELS; valid = label in {fixation, saccade}
keyframes.parquet    keyframe_id, uid, frame, t, split, path  (path: JPEG at native resolution,
                     relative to the repository root)
windows.parquet      window_id, task, uid, split, obs_frames, obs_keyframe_ids, target_frames,
                     target_keyframe_ids, t_start, t_end
captions.parquet     keyframe_id, uid, frame, t, caption, source, flags, flagged
targets.parquet      window_id, task, split, target_text, n_frames, n_flagged, dropped, drop_reason

Shards (WebDataset, one set per task and split: data/shards/<task>/<split>-NNNNNN.tar, listed with
their sample counts, sizes and sha256 in data/shards/<task>/<split>.manifest.json), one sample
per window, key = window_id:
  f0.jpg ... f{T-1}.jpg   observed keyframes after the model preset's resize + centre crop
  target.npy              (T, gh, gw) float32 patch gaze distribution (rows of invalid frames are 0)
  valid.npy               (T,) bool, False where the keyframe has no valid gaze point
  heatmap.npy             (T, S, S) float16 full heatmap after the same resize/crop (analysis only)
  json                    window_id, uid, task, split, frames, timestamps, keyframe_ids, target_text

Vision features (stage features, gazevlm.features): data/features/frames.npy (K, P, D) float32, one row
per distinct frame of the shards, encoded by the frozen encoder; data/features/<task>/<split>.json the
window ids in shard order with the rows of each window's frames; data/features/info.json the encoder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

GAZE_LABELS = ("fixation", "saccade", "out_of_frame", "untracked")
TASKS = ("future", "activity")
SPLITS = ("train", "val", "test")

EXTRACT_DIR = Path("data/extract")
ANNOTATE_DIR = Path("data/annotate")
SHARDS_DIR = Path("data/shards")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
PREDICTIONS_DIR = Path("data/predictions")
ATTENTION_DIR = Path("data/attention")
METRICS_DIR = Path("metrics")
REPORTS_DIR = Path("reports")
TABLES_DIR = REPORTS_DIR / "tables"
FIGURES_DIR = REPORTS_DIR / "figures"


def keyframe_id(uid: str, frame: int) -> str:
    return f"{uid}_{frame:07d}"


def window_id(task: str, uid: str, first_frame: int) -> str:
    return f"{task}_{uid}_{first_frame:07d}"


def window_uid(window_id: str, task: str) -> str:
    """The video uid inside a window id built by window_id(task, uid, first_frame)."""
    prefix = f"{task}_"
    if not window_id.startswith(prefix) or len(window_id) < len(prefix) + 9 or window_id[-8] != "_":
        raise ValueError(f"{window_id!r} is not a window id of task {task!r} (<task>_<uid>_<frame:07d>)")
    return window_id[len(prefix) : -8]


def shard_pattern(task: str, split: str, root: Path = SHARDS_DIR) -> str:
    """The printf-style pattern webdataset.ShardWriter writes to."""
    return str(root / task / f"{split}-%06d.tar")


def shard_files(task: str, split: str, root: Path = SHARDS_DIR) -> list[str]:
    return sorted(str(p) for p in (root / task).glob(f"{split}-*.tar"))


def shard_manifest(task: str, split: str, root: Path = SHARDS_DIR) -> Path:
    """The split's manifest, written with its shards: samples, bytes and sha256 per shard."""
    return root / task / f"{split}.manifest.json"


def seed_dir(seed: int) -> str:
    return f"seed{int(seed)}"


def predictions_file(run: str, task: str, seed: int, root: Path = Path(".")) -> Path:
    """One seed's test predictions: data/predictions/<run>/<task>/seed<N>.parquet (evaluate stage)."""
    return Path(root) / PREDICTIONS_DIR / run / task / f"{seed_dir(seed)}.parquet"


def run_dir(run: str, task: str, seed: int, root: Path = MODELS_DIR) -> Path:
    """One trained model: models/<run>/seed<N>/<task>/ (one training stage per run and seed)."""
    return Path(root) / run / seed_dir(seed) / task


def read_table(path: Path, columns):
    """A stage's input parquet table (a pandas DataFrame), checked against its column contract (above):
    a missing file is a FileNotFoundError, a missing column a ValueError, each naming the file."""
    import pandas as pd

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found (run the earlier stages first)")
    table = pd.read_parquet(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(table.columns)}; contract in gazevlm.layout)")
    return table


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh, empty sibling of `final` to write a stage's output directory into. On success it
    replaces `final` (the previous output is moved aside, then deleted); on any error it is deleted
    and `final`, the last good run's output, is left exactly as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # what a killed run left (one run writes a stage's outputs at a time: DVC locks the repository)
    for stale in [*final.parent.glob(f".{final.name}.tmp-*"), *final.parent.glob(f".{final.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
