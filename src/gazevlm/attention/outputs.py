"""The attention stage's on-disk outputs, written by the stage and read by figures and the explorer.

data/attention/
  index.json             tasks -> {frames file, runs -> run file}, topk, support_threshold, sources
  frames/<task>.npz      per test window: observed keyframes (the shard's JPEG bytes, unchanged),
                         the patch gaze distribution, gaze validity, the full heatmap, frame indices
  <run>_<task>.npz       per window: attention maps per source (N, T, P), per-frame metrics per source
                         (N, T; NaN where gaze is missing), predicted / reference text, semantic score

Everything is plain numpy arrays (strings as fixed-width unicode), so np.load never needs pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gazevlm import atomic, layout
from gazevlm.attention.saliency import METRICS

# block = the gaze block's last-layer attention (runs with the block); perceiver = the Perceiver
# Resampler's latent-to-patch attention (every run), so base and gaze runs compare like for like.
SOURCES = ("block", "perceiver")
FRAME_METRICS = METRICS + ("chance_topk",)
INDEX_NAME = "index.json"


def run_file(run: str, task: str, root: Path = layout.ATTENTION_DIR) -> Path:
    return Path(root) / f"{run}_{task}.npz"


def frames_file(task: str, root: Path = layout.ATTENTION_DIR) -> Path:
    return Path(root) / "frames" / f"{task}.npz"


def index_file(root: Path = layout.ATTENTION_DIR) -> Path:
    return Path(root) / INDEX_NAME


@dataclass
class TaskFrames:
    """What the test split shows for one task: the same for every run."""

    task: str
    window_ids: np.ndarray  # (N,) str
    uids: np.ndarray  # (N,) str
    frame_index: np.ndarray  # (N, T) int, absolute frame indices in the source video
    timestamps: np.ndarray  # (N, T) float seconds
    gaze: np.ndarray  # (N, T, P) float32 patch gaze distribution, rows of invalid frames 0
    valid: np.ndarray  # (N, T) bool: gaze present and with mass
    grid: tuple[int, int]  # (gh, gw), P = gh * gw
    heatmaps: np.ndarray  # (N, T, S, S) float16 full heatmap (analysis only)
    jpeg_buffer: np.ndarray  # (total_bytes,) uint8, all JPEGs concatenated
    jpeg_offsets: np.ndarray  # (N * T + 1,) int64
    _rows: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows = {w: i for i, w in enumerate(self.window_ids.tolist())}

    @property
    def n_frames(self) -> int:
        return int(self.valid.shape[1])

    def row(self, window_id: str) -> int:
        try:
            return self._rows[window_id]
        except KeyError:
            raise KeyError(f"window {window_id!r} is not in the {self.task} test frames") from None

    def jpeg(self, row: int, t: int) -> bytes:
        i = row * self.n_frames + t
        return self.jpeg_buffer[self.jpeg_offsets[i] : self.jpeg_offsets[i + 1]].tobytes()


def pack_jpegs(jpegs: list[list[bytes]]) -> tuple[np.ndarray, np.ndarray]:
    flat = [b for window in jpegs for b in window]
    offsets = np.zeros(len(flat) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in flat])
    buffer = np.frombuffer(b"".join(flat), dtype=np.uint8) if flat else np.zeros(0, np.uint8)
    return buffer, offsets


def write_task_frames(path: Path, f: TaskFrames) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        task=np.array(f.task),
        window_ids=f.window_ids.astype(str),
        uids=f.uids.astype(str),
        frame_index=f.frame_index,
        timestamps=f.timestamps,
        gaze=f.gaze.astype(np.float32),
        valid=f.valid,
        grid=np.array(f.grid),
        heatmaps=f.heatmaps.astype(np.float16),
        jpeg_buffer=f.jpeg_buffer,
        jpeg_offsets=f.jpeg_offsets,
    )


def read_task_frames(path: Path) -> TaskFrames:
    with np.load(path, allow_pickle=False) as z:
        return TaskFrames(
            task=str(z["task"]),
            window_ids=z["window_ids"],
            uids=z["uids"],
            frame_index=z["frame_index"],
            timestamps=z["timestamps"],
            gaze=z["gaze"],
            valid=z["valid"],
            grid=tuple(int(v) for v in z["grid"]),
            heatmaps=z["heatmaps"],
            jpeg_buffer=z["jpeg_buffer"],
            jpeg_offsets=z["jpeg_offsets"],
        )


@dataclass
class RunAttention:
    """One run's attention on one task's test windows, with the per-frame metrics."""

    run: str
    task: str
    window_ids: np.ndarray  # (N,) str, a subset of the task's frames windows
    maps: dict[str, np.ndarray]  # source -> (N, T, P) float32, rows sum to 1
    metrics: dict[str, dict[str, np.ndarray]]  # source -> metric -> (N, T) float32, NaN = not scored
    prediction: np.ndarray  # (N,) str ("" when the window has no prediction)
    reference: np.ndarray  # (N,) str
    semantic: np.ndarray  # (N,) float, NaN when the window has no prediction
    topk: int
    support_threshold: float

    @property
    def sources(self) -> list[str]:
        return [s for s in SOURCES if s in self.maps]

    def primary_source(self) -> str:
        """The attention the run's method is about: the gaze block where it exists, else the Perceiver."""
        return self.sources[0]


def write_run_attention(path: Path, r: RunAttention) -> None:
    arrays = {
        "run": np.array(r.run),
        "task": np.array(r.task),
        "window_ids": r.window_ids.astype(str),
        "prediction": r.prediction.astype(str),
        "reference": r.reference.astype(str),
        "semantic": r.semantic.astype(np.float64),
        "topk": np.array(r.topk),
        "support_threshold": np.array(r.support_threshold),
    }
    for source, m in r.maps.items():
        arrays[f"attention__{source}"] = m.astype(np.float32)
        for name, values in r.metrics[source].items():
            arrays[f"metric__{source}__{name}"] = values.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def read_run_attention(path: Path) -> RunAttention:
    with np.load(path, allow_pickle=False) as z:
        maps = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("attention__")}
        metrics: dict[str, dict[str, np.ndarray]] = {s: {} for s in maps}
        for k in z.files:
            if k.startswith("metric__"):
                _, source, name = k.split("__", 2)
                metrics[source][name] = z[k]
        return RunAttention(
            run=str(z["run"]),
            task=str(z["task"]),
            window_ids=z["window_ids"],
            maps=maps,
            metrics=metrics,
            prediction=z["prediction"],
            reference=z["reference"],
            semantic=z["semantic"],
            topk=int(z["topk"]),
            support_threshold=float(z["support_threshold"]),
        )


def write_index(
    root: Path, runs_by_task: dict[str, list[str]], topk: int, support_threshold: float, seed: int = 0
) -> dict:
    """index.json: what the explorer shows. seed: the training seed whose models were analysed."""
    index = {
        "topk": topk,
        "support_threshold": support_threshold,
        "seed": int(seed),
        "sources": list(SOURCES),
        "tasks": {
            task: {
                "frames": str(frames_file(task, Path(".")).as_posix()),
                "runs": {run: run_file(run, task, Path(".")).name for run in runs},
            }
            for task, runs in runs_by_task.items()
        },
    }
    atomic.write_json(index_file(root), index, trailing_newline=False)
    return index


def read_index(root: Path) -> dict:
    path = index_file(root)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no attention stage outputs here (run the `attention` stage)") from None


def load_task(root: Path, task: str) -> tuple[TaskFrames, list[RunAttention]]:
    """A task's frames and every run's attention, in the index's run order."""
    root = Path(root)
    entry = read_index(root)["tasks"][task]
    return (
        read_task_frames(root / entry["frames"]),
        [read_run_attention(root / name) for name in entry["runs"].values()],
    )


def metrics_table(metrics: dict) -> pd.DataFrame:
    """metrics/attention.json as rows: run, task, source, metric, mean, ci_low, ci_high, n_frames, n_windows."""
    rows = [
        {"run": run, "task": task, "source": source, "metric": metric, **values}
        for run, tasks in metrics.items()
        for task, sources in tasks.items()
        for source, per in sources.items()
        for metric, values in per.items()
    ]
    return pd.DataFrame(rows)


def frame_table(root: Path = layout.ATTENTION_DIR) -> pd.DataFrame:
    """Long table of every scored frame: run, task, source, window_id, frame, is_last, metrics, semantic."""
    root = Path(root)
    index = read_index(root)
    parts = []
    for task, entry in index["tasks"].items():
        for run, name in entry["runs"].items():
            r = read_run_attention(root / name)
            if not r.sources:
                continue
            n, t = next(iter(r.maps.values())).shape[:2]
            for source in r.sources:
                cols = {m: r.metrics[source][m].reshape(-1) for m in FRAME_METRICS}
                df = pd.DataFrame(
                    {
                        "run": run,
                        "task": task,
                        "source": source,
                        "window_id": np.repeat(r.window_ids, t),
                        "frame": np.tile(np.arange(t), n),
                        "is_last": np.tile(np.arange(t) == t - 1, n),
                        "semantic": np.repeat(r.semantic, t),
                        **cols,
                    }
                )
                parts.append(df[np.isfinite(df["topk_overlap"])])
    cols = ["run", "task", "source", "window_id", "frame", "is_last", "semantic", *FRAME_METRICS]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def window_table(frames: pd.DataFrame) -> pd.DataFrame:
    """Per-window means over the scored frames (from frame_table), with the window's semantic score."""
    keys = ["run", "task", "source", "window_id"]
    agg = frames.groupby(keys, sort=False)[list(FRAME_METRICS)].mean()
    sem = frames.groupby(keys, sort=False)["semantic"].first()
    return agg.join(sem).reset_index()
