"""Where every stage writes, and the columns of the tables that pass between stages.

Paths are relative to the repository root (dvc.yaml runs every stage from there). The tables are
parquet; lists are parquet list columns. Identifiers are strings built by the functions below so that
every stage spells them the same way, and every frame reference is an absolute frame index of the
source video (never a file order).

Every table's columns and types are declared once below as pyarrow schemas (VIDEOS, GAZE_FRAMES,
KEYFRAMES, WINDOWS, CAPTIONS, TARGETS, HEATMAP_KEYFRAMES, PREDICTIONS): the stage that writes a table
passes its schema to the parquet writer and every reader checks a file against it with read_table.

videos.parquet       one row per kept video; split in SPLITS
gaze_frames.parquet  one row per video frame; x/y in pixels, origin top-left (y flipped once, when
                     the Ego4D CSV is read); label in GAZE_LABELS; valid = label in {fixation, saccade}
keyframes.parquet    path: JPEG at native resolution, relative to the repository root
windows.parquet      obs_* / target_*: the window's observed and target keyframes (lists)
captions.parquet     one row per keyframe a window uses (annotate stage)
targets.parquet      one row per window: its text target, or dropped with a drop_reason
data/heatmaps/keyframes.parquet  one row per keyframe the heatmaps stage aggregated gaze for
data/predictions/<run>/<task>/seed<N>.parquet  one row per scored test window (evaluate stage)

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

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

# --- table schemas ----------------------------------------------------------------------------------
# Text is large_string where pandas writes the table (its str dtype becomes large_string) and string
# where annotate builds the arrow table itself: the types below are exactly what each writer has always
# written, so declaring them changed no byte of any output. read_table accepts either string type.

_TEXT = pa.large_string()
_TEXTS = pa.list_(pa.string())
_INTS = pa.list_(pa.int64())
_FLOATS = pa.list_(pa.float64())

VIDEOS = pa.schema(
    [
        ("uid", _TEXT),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("split", _TEXT),
        ("video_path", _TEXT),
        ("gaze_path", _TEXT),
    ]
)
GAZE_FRAMES = pa.schema(
    [
        ("uid", _TEXT),
        ("frame", pa.int64()),
        ("t", pa.float64()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("confidence", pa.float64()),
        ("label", _TEXT),
        ("valid", pa.bool_()),
    ]
)
KEYFRAMES = pa.schema(
    [
        ("keyframe_id", _TEXT),
        ("uid", _TEXT),
        ("frame", pa.int64()),
        ("t", pa.float64()),
        ("split", _TEXT),
        ("path", _TEXT),
    ]
)
WINDOWS = pa.schema(
    [
        ("window_id", _TEXT),
        ("task", _TEXT),
        ("uid", _TEXT),
        ("split", _TEXT),
        ("obs_frames", _INTS),
        ("obs_keyframe_ids", _TEXTS),
        ("target_frames", _INTS),
        ("target_keyframe_ids", _TEXTS),
        ("t_start", pa.float64()),
        ("t_end", pa.float64()),
    ]
)
CAPTIONS = pa.schema(
    [
        ("keyframe_id", pa.string()),
        ("uid", pa.string()),
        ("frame", pa.int64()),
        ("t", pa.float64()),
        ("caption", pa.string()),
        ("source", pa.string()),
        ("flags", _TEXTS),
        ("flagged", pa.bool_()),
    ]
)
TARGETS = pa.schema(
    [
        ("window_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("target_text", pa.string()),
        ("n_frames", pa.int64()),
        ("n_flagged", pa.int64()),
        ("dropped", pa.bool_()),
        ("drop_reason", pa.string()),
    ]
)
# Per keyframe: the source frames aggregated (src_frames), each one's status and inconsistent share, the
# raw gaze point of each (gaze_x/y, NaN without one) and where flow moved it to the keyframe (moved_x/y).
HEATMAP_KEYFRAMES = pa.schema(
    [
        ("keyframe_id", _TEXT),
        ("uid", _TEXT),
        ("frame", pa.int64()),
        ("t", pa.float64()),
        ("split", _TEXT),
        ("valid", pa.bool_()),
        ("reason", _TEXT),
        ("n_points", pa.int64()),
        ("visible_mass", pa.float64()),
        ("src_frames", _INTS),
        ("status", _TEXTS),
        ("inconsistent", _FLOATS),
        ("gaze_x", _FLOATS),
        ("gaze_y", _FLOATS),
        ("moved_x", _FLOATS),
        ("moved_y", _FLOATS),
    ]
)
# Every column a predictions file may have, in the order the evaluate stage adds them. The first four
# are always there; the scores depend on the run: teacher_forced_* only when teacher forcing produced
# text, the grounding scores (object_accuracy, action_f1, verb_accuracy) only on the synthetic world.
_SCORES = ("semantic", "rouge_l", "bleu4", "cider", "object_accuracy", "action_f1", "verb_accuracy")
PREDICTIONS = pa.schema(
    [
        *[(c, _TEXT) for c in ("window_id", "uid", "reference", "prediction", "teacher_forced_prediction")],
        *[(c, _TEXT) for c in ("reference_norm", "prediction_norm", "shuffled_prediction")],
        *[(c, pa.float64()) for c in _SCORES],
        *[(f"shuffled_{c}", pa.float64()) for c in ("semantic", "rouge_l", *_SCORES[4:])],
        *[(f"teacher_forced_{c}", pa.float64()) for c in _SCORES[:4]],
    ]
)
PREDICTION_COLUMNS = ("window_id", "uid", "reference", "prediction")

# CSV outputs: the columns in file order, typed as pandas reads them back.
# reports/attention/overlap.csv (attention stage, a DVC plot): series = task/run/source
OVERLAP = pa.schema(
    [
        ("series", _TEXT),
        ("topk_overlap", pa.float64()),
        ("last_frame_topk_overlap", pa.float64()),
        ("chance_topk", pa.float64()),
    ]
)
# predictions.csv of `python -m gazevlm.predict` (one video): keyframe lists as space-separated values
VIDEO_PREDICTIONS_CSV = pa.schema(
    [
        ("window", pa.int64()),
        ("window_id", _TEXT),
        ("t_start", pa.float64()),
        ("t_end", pa.float64()),
        ("keyframe_frames", _TEXT),
        ("keyframe_times", _TEXT),
        ("horizon_in_video", pa.bool_()),
        ("prediction", _TEXT),
    ]
)


def schema_of(schema: pa.Schema, columns: Sequence[str], where: object = "a table") -> pa.Schema:
    """The fields of `schema` named in `columns`, in that order (a writer's or reader's subset)."""
    unknown = [c for c in columns if schema.get_field_index(c) < 0]
    if unknown:
        raise ValueError(f"{where}: column(s) {unknown} not in the contract {schema.names} (gazevlm.layout)")
    return pa.schema([schema.field(c) for c in columns])


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    # pandas writes large_string, a hand-built arrow table string: both read back as the same text
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    if any(f(a) for f in text) and any(f(b) for f in text):
        return True
    lists = (pa.types.is_list, pa.types.is_large_list)
    if any(f(a) for f in lists) and any(f(b) for f in lists):
        return _same_kind(a.value_type, b.value_type)
    return a == b


def check_schema(found: pa.Schema, contract: pa.Schema, where: object) -> None:
    """Raise a ValueError naming `where` and each column of `contract` that `found` lacks or types
    differently (string and large_string count as one type, as do list and large_list)."""
    missing = [f.name for f in contract if found.get_field_index(f.name) < 0]
    wrong = [
        f"{f.name} is {found.field(f.name).type}, not {f.type}"
        for f in contract
        if f.name not in missing and not _same_kind(found.field(f.name).type, f.type)
    ]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing} (has {found.names}; contract in gazevlm.layout)")
    if wrong:
        raise ValueError(f"{where}: wrong column type(s): {'; '.join(wrong)} (contract in gazevlm.layout)")


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


def read_table(path: Path, schema: pa.Schema, columns: Sequence[str] | None = None):
    """A stage's input parquet table (a pandas DataFrame, every column of the file), checked against its
    schema (above), or only the `columns` of it the reader uses: a missing file is a FileNotFoundError, a
    missing or mistyped column a ValueError, each naming the file."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found (run the earlier stages first)")
    contract = schema if columns is None else schema_of(schema, columns, path)
    check_schema(pq.read_schema(path), contract, path)
    return pd.read_parquet(path)


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
