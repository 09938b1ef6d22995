"""The heatmaps stage: per keyframe gaze heatmaps and patch targets, windows written as shards.

run(params) reads data/extract/{videos,gaze_frames,keyframes,windows}.parquet and
data/annotate/targets.parquet, computes every observed keyframe's heatmap once (aggregated with
flow, or single-point), and writes the windows not dropped by annotation to
data/shards/<task>/<split>-NNNNNN.tar with a manifest per split, plus data/heatmaps/keyframes.parquet
(per keyframe: the fate of every frame considered, for analysis), reports/heatmaps.json (results)
and reports/heatmaps_timings.json (speed).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gazevlm import atomic, layout
from gazevlm.geometry import vision_geometry
from gazevlm.heatmaps import aggregate as agg_mod
from gazevlm.heatmaps.aggregate import Aggregation, Aggregator, GazeTrack, Timings, single_point
from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.flow import make_backend
from gazevlm.heatmaps.frames import ImageError, encode_jpeg, read_image
from gazevlm.heatmaps.targets import patch_target_from_points, resize_heatmap
from gazevlm.params import HeatmapParams, Params, with_overrides
from gazevlm.shards import PooledWriter, ShardSetWriter, encode_sample, even_shard_size
from gazevlm.video_frames import read_frames

HEATMAPS_DIR = Path("data/heatmaps")
KEYFRAMES_TABLE = HEATMAPS_DIR / "keyframes.parquet"
REPORT_PATH = layout.REPORTS_DIR / "heatmaps.json"  # results: a DVC metrics file
TIMINGS_PATH = layout.REPORTS_DIR / "heatmaps_timings.json"  # speed: an uncached out, not a metric
# Windows held back per (task, split) before writing, so shards mix videos (bounded memory).
WRITE_POOL = 4096

# Each input table, its contract and the columns of it this stage uses.
REQUIRED_COLUMNS = {
    layout.EXTRACT_DIR / "videos.parquet": (layout.VIDEOS, ["uid", "fps", "width", "height", "split", "video_path"]),
    layout.EXTRACT_DIR / "gaze_frames.parquet": (layout.GAZE_FRAMES, ["uid", "frame", "x", "y", "label", "valid"]),
    layout.EXTRACT_DIR / "keyframes.parquet": (layout.KEYFRAMES, ["keyframe_id", "uid", "frame", "t", "split", "path"]),
    layout.EXTRACT_DIR / "windows.parquet": (
        layout.WINDOWS,
        ["window_id", "task", "uid", "split", "obs_frames", "obs_keyframe_ids"],
    ),
    layout.ANNOTATE_DIR / "targets.parquet": (layout.TARGETS, ["window_id", "task", "split", "target_text", "dropped"]),
}


class HeatmapInputError(ValueError):
    """An input table, video or image breaks the contract in gazevlm.layout."""


@dataclass
class KeyframeResult:
    keyframe_id: str
    valid: bool
    reason: str  # ok | no_valid_gaze | outside_crop
    jpeg: bytes  # the frame after the preset's resize + centre crop
    target: np.ndarray  # (grid, grid) float32
    heatmap: np.ndarray  # (S, S) float16


def check_params(hp: HeatmapParams) -> None:
    """Ranges and choices of the heatmaps section: gazevlm.params checks them (the one place)."""
    with_overrides(Params(), heatmaps=asdict(hp))  # raises ParamsError naming the key


def read_table(path: Path, schema: pa.Schema, columns: list[str]) -> pd.DataFrame:
    try:
        return layout.read_table(path, schema, columns)
    except FileNotFoundError:
        raise HeatmapInputError(f"{path}: input table not found (run the earlier stages first)") from None
    except ValueError as err:
        raise HeatmapInputError(str(err)) from None


def n_previous_frames(delta_ms: float, fps: float) -> int:
    """Earlier frames aggregated onto a keyframe: 200 ms at 30 fps -> 6 (the paper's count)."""
    return int(round(delta_ms / 1000.0 * fps))


def keyframe_heatmap(
    aggregation: Aggregation, geometry: CropGeometry, grid: int, hp: HeatmapParams, timings: Timings
) -> tuple[bool, str, np.ndarray, np.ndarray, float]:
    """(valid, reason, target (grid, grid), heatmap (S, S) float16, visible mass) for one keyframe."""
    s = hp.heatmap_size
    if not aggregation.valid:
        return False, "no_valid_gaze", np.zeros((grid, grid), np.float32), np.zeros((s, s), np.float16), 0.0
    with timings.section("gaussians"):
        pt = patch_target_from_points(aggregation.points, geometry, hp.sigma_px, grid, hp.target_eps)
    with timings.section("targets"):
        small = resize_heatmap(pt.heatmap, s).astype(np.float16)
    return pt.valid, "ok" if pt.valid else "outside_crop", pt.target, small, pt.visible_mass


def _timed(iterator: Iterator[Any], timings: Timings, name: str) -> Iterator[Any]:
    while True:
        with timings.section(name):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


def aggregate_video(
    video: pd.Series, keyframes: pd.DataFrame, track: GazeTrack, aggregator: Aggregator, n_prev: int, timings: Timings
) -> tuple[dict[str, Aggregation], set[str]]:
    """Aggregations for a video's keyframes from one sequential pass over the needed frames.
    Returns them and the keyframes whose own frame the video did not deliver (short video)."""
    kfs = keyframes.sort_values("frame")
    need_video: dict[str, list[int]] = {}
    for kid, frame in zip(kfs["keyframe_id"], kfs["frame"], strict=False):
        earlier = [tau for tau in agg_mod.window_frames(int(frame), n_prev)[:-1] if track.point(tau) is not None]
        if earlier:  # no earlier valid point: nothing to move, the video is not needed for this one
            need_video[kid] = earlier + [int(frame)]
    out: dict[str, Aggregation] = {}
    short: set[str] = set()
    frame_of = dict(zip(kfs["keyframe_id"], kfs["frame"].astype(int), strict=False))
    for kid in kfs["keyframe_id"]:
        if kid not in need_video:
            out[kid] = aggregator.aggregate(track, frame_of[kid], n_prev, {})
    if not need_video:
        return out, short
    pending = sorted(need_video, key=lambda k: frame_of[k])
    wanted = sorted({f for frames in need_video.values() for f in frames})
    buffer: dict[int, Any] = {}
    expected = (int(video["height"]), int(video["width"]))

    def finish(kid: str) -> None:
        if frame_of[kid] not in buffer:
            short.add(kid)
        out[kid] = aggregator.aggregate(track, frame_of[kid], n_prev, buffer)

    for index, frame in _timed(read_frames(video["video_path"], wanted), timings, "decode"):
        if frame.shape[:2] != expected:
            raise HeatmapInputError(
                f"{video['video_path']}: frames are {frame.shape[1]}x{frame.shape[0]} but "
                f"videos.parquet says {expected[1]}x{expected[0]} (gaze is in those pixels)"
            )
        buffer[index] = aggregator.prepare(frame)
        while pending and frame_of[pending[0]] <= index:
            finish(pending.pop(0))
            low = frame_of[pending[0]] - n_prev if pending else index + 1
            for f in [f for f in buffer if f < low]:
                del buffer[f]
    for kid in pending:  # the video ended before these keyframes
        finish(kid)
    return out, short


def _record(
    kf: pd.Series,
    video: pd.Series,
    aggregation: Aggregation,
    track: GazeTrack,
    valid: bool,
    reason: str,
    visible: float,
) -> dict[str, Any]:
    raw = [track.point(f) or (float("nan"), float("nan")) for f in aggregation.frames]
    return {
        "keyframe_id": kf["keyframe_id"],
        "uid": kf["uid"],
        "frame": int(kf["frame"]),
        "t": float(kf["t"]),
        "split": video["split"],
        "valid": bool(valid),
        "reason": reason,
        "n_points": int(len(aggregation.points)),
        "visible_mass": float(visible),
        "src_frames": [int(f) for f in aggregation.frames],
        "status": list(aggregation.status),
        "inconsistent": [float(v) for v in aggregation.inconsistent],
        "gaze_x": [float(p[0]) for p in raw],
        "gaze_y": [float(p[1]) for p in raw],
        "moved_x": [float(p[0]) for p in aggregation.moved],
        "moved_y": [float(p[1]) for p in aggregation.moved],
    }


def _gaze_counts(gaze: pd.DataFrame, videos: pd.DataFrame) -> dict[str, Any]:
    merged = gaze.merge(videos[["uid", "split"]], on="uid", how="left")
    out: dict[str, Any] = {}
    for split, part in merged.groupby("split", sort=True):
        valid = part["valid"].fillna(False).astype(bool)
        out[str(split)] = {
            "frames": int(len(part)),
            "valid": int(valid.sum()),
            "invalid": int((~valid).sum()),
            "by_label": {str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()},
        }
    return out


def _encode(item: tuple[str, list[KeyframeResult], dict[str, Any]]) -> dict[str, Any]:
    window_id, res, meta = item
    return encode_sample(
        window_id,
        [r.jpeg for r in res],
        np.stack([r.target for r in res]),
        np.array([r.valid for r in res]),
        np.stack([r.heatmap for r in res]),
        meta,
    )


def _duration_s(video: pd.Series) -> float:
    if "duration_s" in video.index and pd.notna(video["duration_s"]):
        return float(video["duration_s"])
    if "num_frames" in video.index and pd.notna(video["num_frames"]):
        return float(video["num_frames"]) / float(video["fps"])
    return 0.0


@dataclass
class Inputs:
    """The stage's input tables, checked against the layout contract."""

    videos: dict[str, pd.Series]  # uid -> row of videos.parquet
    gaze: pd.DataFrame
    keyframes: pd.DataFrame  # only the keyframes some kept window observes
    windows: pd.DataFrame  # windows not dropped by annotation, with target_text


def load_inputs() -> Inputs:
    t = {path.name.split(".")[0]: read_table(path, *contract) for path, contract in REQUIRED_COLUMNS.items()}
    targets, windows = t["targets"], t["windows"]
    kept = targets[~targets["dropped"].astype(bool)][["window_id", "split", "target_text"]]
    unknown = sorted(set(kept["window_id"]) - set(windows["window_id"]))
    if unknown:
        raise HeatmapInputError(
            f"{layout.ANNOTATE_DIR / 'targets.parquet'}: {len(unknown)} window(s) not in "
            f"windows.parquet, e.g. {unknown[:3]}"
        )
    win = windows.merge(kept, on="window_id", how="inner", suffixes=("", "_target"))
    bad_split = win[win["split"] != win["split_target"]]
    if len(bad_split):
        raise HeatmapInputError(
            f"targets.parquet and windows.parquet disagree on the split of {list(bad_split['window_id'][:3])}"
        )
    needed = {k for ids in win["obs_keyframe_ids"] for k in ids}
    keyframes = t["keyframes"][t["keyframes"]["keyframe_id"].isin(needed)]
    missing = sorted(needed - set(keyframes["keyframe_id"]))
    if missing:
        raise HeatmapInputError(f"windows.parquet observes keyframe(s) not in keyframes.parquet, e.g. {missing[:3]}")
    videos = {row["uid"]: row for _, row in t["videos"].iterrows()}
    no_video = sorted(set(keyframes["uid"]) - set(videos))
    if no_video:
        raise HeatmapInputError(f"videos.parquet has no row for uid(s) {no_video[:3]}")
    return Inputs(videos, t["gaze_frames"], keyframes, win)


class _Tally:
    """Everything the report counts."""

    def __init__(self) -> None:
        self.earlier: Counter[str] = Counter()  # fate of earlier frames' points
        self.keyframes: dict[str, Counter[str]] = defaultdict(Counter)
        self.skipped_windows: Counter[str] = Counter()
        self.skipped_examples: list[str] = []
        self.written: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        # windows written without a single valid gaze frame (they weigh nothing in the gaze loss)
        self.no_gaze_windows: dict[str, Counter[str]] = defaultdict(Counter)
        self.records: list[dict[str, Any]] = []  # rows of keyframes.parquet

    def add_video(self, other: _Tally) -> None:
        """Add what one video's keyframe_results counted (in video order: records keep the serial order)."""
        self.earlier.update(other.earlier)
        for split, counts in other.keyframes.items():
            self.keyframes[split].update(counts)
        self.skipped_examples += other.skipped_examples
        self.records += other.records


def keyframe_results(
    video: pd.Series,
    kfs: pd.DataFrame,
    track: GazeTrack,
    aggregations: dict[str, Aggregation],
    short: set[str],
    geometry: CropGeometry,
    grid: int,
    hp: HeatmapParams,
    timings: Timings,
    tally: _Tally,
) -> dict[str, KeyframeResult | str]:
    """Per keyframe of one video: its result, or the reason it cannot be used (a counted skip)."""
    split = str(video["split"])
    results: dict[str, KeyframeResult | str] = {}
    for _, kf in kfs.iterrows():
        kid = kf["keyframe_id"]
        aggregation = aggregations[kid]
        if hp.aggregate:
            tally.earlier.update(aggregation.status[:-1])  # the last one is the keyframe itself
        if kid in short:
            results[kid] = "video_frames_short"
            tally.keyframes[split]["video_frames_short"] += 1
            continue
        try:
            with timings.section("images"):
                image = read_image(kf["path"])
                if image.shape[:2] != (geometry.height, geometry.width):
                    raise HeatmapInputError(
                        f"{kf['path']}: keyframe image is {image.shape[1]}x{image.shape[0]} "
                        f"but the video is {geometry.width}x{geometry.height}"
                    )
                jpeg = encode_jpeg(geometry.apply(image))
        except ImageError as err:
            results[kid] = "keyframe_image_unreadable"
            tally.keyframes[split]["keyframe_image_unreadable"] += 1
            tally.skipped_examples.append(str(err))
            continue
        valid, reason, target, heat, visible = keyframe_heatmap(aggregation, geometry, grid, hp, timings)
        tally.keyframes[split]["computed"] += 1
        tally.keyframes[split]["valid" if valid else reason] += 1
        results[kid] = KeyframeResult(kid, valid, reason, jpeg, target, heat)
        tally.records.append(_record(kf, video, aggregation, track, valid, reason, visible))
    return results


def window_meta(
    w: pd.Series, video: pd.Series, by_id: pd.DataFrame, results: list[KeyframeResult], image_size: int, grid: int
) -> dict[str, Any]:
    """The sample's json: absolute frame indices and timestamps, never a file order (string-sorted
    file names put "10.jpg" before "2.jpg").
    `by_id`: the video's keyframes indexed by keyframe_id."""
    ids = list(w["obs_keyframe_ids"])
    frames = [int(f) for f in w["obs_frames"]]
    if [int(by_id.loc[k, "frame"]) for k in ids] != frames:
        raise HeatmapInputError(
            f"windows.parquet: {w['window_id']} obs_frames {frames} do not match its "
            f"keyframes' frames {[int(by_id.loc[k, 'frame']) for k in ids]}"
        )
    meta = {
        "window_id": w["window_id"],
        "uid": w["uid"],
        "task": w["task"],
        "split": w["split"],
        "frames": frames,
        "timestamps": [float(by_id.loc[k, "t"]) for k in ids],
        "keyframe_ids": ids,
        "target_text": w["target_text"],
        "fps": float(video["fps"]),
        "native_size": [int(video["width"]), int(video["height"])],
        "image_size": image_size,
        "grid": grid,
        "valid": [r.valid for r in results],
    }
    for extra in ("target_frames", "target_keyframe_ids"):
        if extra in w.index:
            meta[extra] = [v.item() if hasattr(v, "item") else v for v in w[extra]]
    for extra in ("t_start", "t_end"):
        if extra in w.index:
            meta[extra] = float(w[extra])
    return meta


def _open_writers(win: pd.DataFrame, hp: HeatmapParams, shards_root: Path) -> dict[tuple[str, str], PooledWriter]:
    writers = {}
    for (task, split), n in sorted(win.groupby(["task", "split"]).size().items()):
        per_shard = even_shard_size(int(n), hp.shard_max_samples)
        writers[(task, split)] = PooledWriter(
            ShardSetWriter(layout.shard_pattern(task, split, shards_root), per_shard),
            WRITE_POOL,
            random.Random(f"{hp.seed}:{task}:{split}"),
            _encode,
        )
    return writers


def at_width(hp: HeatmapParams, width: int) -> HeatmapParams:
    """hp with sigma_px and eps_px in pixels of a frame `width` wide (they are given at hp.reference_width):
    what stays fixed is the gaze blob's and the flow tolerance's size relative to the frame."""
    scale = width / hp.reference_width
    return dataclasses.replace(hp, sigma_px=hp.sigma_px * scale, eps_px=hp.eps_px * scale)


def _video_results(
    uid: str,
    inputs: Inputs,
    gaze_by_uid: dict,
    kfs: pd.DataFrame,
    aggregator: Aggregator | None,
    image_size: int,
    grid: int,
    hp: HeatmapParams,
    timings: Timings,
    tally: _Tally,
) -> dict:
    """Every keyframe result of one video (see keyframe_results)."""
    video = inputs.videos[uid]
    width, height = int(video["width"]), int(video["height"])
    hp = at_width(hp, width)
    geometry = CropGeometry.for_frame(width, height, image_size)
    try:
        track = GazeTrack.from_table(gaze_by_uid.get(uid, inputs.gaze.iloc[:0]), width, height)
    except ValueError as err:
        raise HeatmapInputError(f"{layout.EXTRACT_DIR / 'gaze_frames.parquet'}: uid {uid}: {err}") from err
    short: set[str] = set()
    if aggregator is not None:
        n_prev = n_previous_frames(hp.delta_ms, float(video["fps"]))
        aggregator.eps_px = hp.eps_px
        aggregations, short = aggregate_video(video, kfs, track, aggregator, n_prev, timings)
    else:
        aggregations = {
            kid: single_point(track, int(f)) for kid, f in zip(kfs["keyframe_id"], kfs["frame"], strict=False)
        }
    return keyframe_results(video, kfs, track, aggregations, short, geometry, grid, hp, timings, tally)


def _write_windows(
    windows: pd.DataFrame,
    video: pd.Series,
    kfs: pd.DataFrame,
    results: dict,
    writers: dict,
    image_size: int,
    grid: int,
    tally: _Tally,
) -> None:
    by_id = kfs.set_index("keyframe_id")
    for _, w in windows.sort_values("window_id").iterrows():
        res = [results[k] for k in w["obs_keyframe_ids"]]
        bad = [r for r in res if isinstance(r, str)]
        if bad:
            tally.skipped_windows[bad[0]] += 1
            continue
        meta = window_meta(w, video, by_id, res, image_size, grid)
        writers[(w["task"], w["split"])].add((w["window_id"], res, meta))
        cell = tally.written[w["task"]].setdefault(w["split"], {"windows": 0, "frames_without_gaze": 0})
        cell["windows"] += 1
        cell["frames_without_gaze"] += sum(not r.valid for r in res)
        if not any(r.valid for r in res):  # written, masked out of the gaze loss (no valid frame): counted
            tally.no_gaze_windows[w["task"]][w["split"]] += 1


MAX_WORKERS = 4  # each worker holds the input tables and one flow backend
VIDEOS_PER_WORKER = 8  # starting a worker costs about as much as a few videos' heatmaps


def _worker_count(hp: HeatmapParams, workers: int | None, n_videos: int) -> int:
    if hp.aggregate and hp.flow.startswith("raft"):
        return 1  # RAFT is a torch model: one copy, on its own device
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS, n_videos // VIDEOS_PER_WORKER)
    return max(1, workers)


class _VideoWork:
    """Everything one video's heatmaps need, built once per process (the stage's, or a worker's)."""

    def __init__(self, params: Params, inputs: Inputs | None = None) -> None:
        self.hp = hp = params.heatmaps
        self.inputs = load_inputs() if inputs is None else inputs
        self.image_size, patch = vision_geometry(params.model.preset)
        self.grid = self.image_size // patch
        self.aggregator = None
        if hp.aggregate:
            self.aggregator = Aggregator(
                make_backend(hp.flow, hp.raft_weights), hp.flow_scale, hp.eps_px, hp.eta, hp.occlusion_filter
            )
        self.gaze_by_uid = dict(iter(self.inputs.gaze.groupby("uid", sort=False)))
        self.kfs_by_uid = dict(iter(self.inputs.keyframes.groupby("uid", sort=False)))

    def __call__(self, uid: str) -> tuple[str, dict, _Tally, dict[str, float]]:
        """(uid, keyframe results, what they counted, seconds per section) of one video."""
        timings, tally = Timings(), _Tally()
        if self.aggregator is not None:
            self.aggregator.timings = timings
        results = _video_results(
            uid,
            self.inputs,
            self.gaze_by_uid,
            self.kfs_by_uid[uid],
            self.aggregator,
            self.image_size,
            self.grid,
            self.hp,
            timings,
            tally,
        )
        return uid, results, tally, dict(timings.seconds)


_WORK: _VideoWork | None = None  # a worker process's (set by _start_worker)


def _start_worker(params: Params) -> None:
    global _WORK
    import cv2

    cv2.setNumThreads(1)  # the workers share the cores
    _WORK = _VideoWork(params)


def _in_worker(uid: str) -> tuple[str, dict, _Tally, dict[str, float]]:
    return _WORK(uid)


def _each_video(
    params: Params, inputs: Inputs, uids: list[str], workers: int
) -> Iterator[tuple[str, dict, _Tally, dict[str, float]]]:
    """Every video's (uid, results, tally, seconds), in the order of `uids` whatever the workers."""
    if workers <= 1 or len(uids) <= 1:
        yield from map(_VideoWork(params, inputs), uids)
        return
    import multiprocessing

    # spawn: a fork would copy OpenCV's thread pool mid-use; each worker reads the input tables itself
    pool = ProcessPoolExecutor(
        min(workers, len(uids)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(params,),
    )
    try:
        yield from pool.map(_in_worker, uids)
    finally:  # on an error here (a bad input in some video), the videos not started are not waited for
        pool.shutdown(wait=True, cancel_futures=True)


def run(params: Params, workers: int | None = None) -> dict[str, Any]:
    """Compute heatmaps and patch targets, write shards; returns reports/heatmaps.json plus the timings
    (written apart, to reports/heatmaps_timings.json: timings are not results for `dvc metrics diff`).

    data/shards and data/heatmaps are written into staged directories swapped in only on success. The
    videos' heatmaps are computed in `workers` processes (None: one per core, at most MAX_WORKERS, one
    per VIDEOS_PER_WORKER videos) and written here in a fixed order: the outputs are the same bytes for
    any number."""
    hp = params.heatmaps
    check_params(hp)
    start = time.perf_counter()
    timings = Timings()
    with timings.section("read_inputs"):
        inputs = load_inputs()
    image_size, patch = vision_geometry(params.model.preset)
    grid = image_size // patch
    tally = _Tally()
    kfs_by_uid = dict(iter(inputs.keyframes.groupby("uid", sort=False)))
    win_by_uid = dict(iter(inputs.windows.groupby("uid", sort=False)))
    uids = sorted(kfs_by_uid)
    random.Random(hp.seed).shuffle(uids)  # interleave videos in the shards (with the write pools)
    video_seconds = sum(_duration_s(inputs.videos[uid]) for uid in uids)
    with layout.staged_dir(layout.SHARDS_DIR) as shards_root, layout.staged_dir(HEATMAPS_DIR) as heatmaps_dir:
        writers = _open_writers(inputs.windows, hp, shards_root)
        loop_start = time.perf_counter()
        for uid, results, counted, seconds in _each_video(params, inputs, uids, _worker_count(hp, workers, len(uids))):
            tally.add_video(counted)
            timings.add(seconds)
            with timings.section("write"):
                _write_windows(
                    win_by_uid[uid], inputs.videos[uid], kfs_by_uid[uid], results, writers, image_size, grid, tally
                )
        loop_seconds = time.perf_counter() - loop_start
        with timings.section("write"):
            for (task, split), writer in writers.items():
                files = writer.close()
                tally.written[task].setdefault(split, {"windows": 0, "frames_without_gaze": 0})["shards"] = len(files)
        keyframes = pd.DataFrame.from_records(tally.records, columns=layout.HEATMAP_KEYFRAMES.names)
        keyframes.to_parquet(heatmaps_dir / KEYFRAMES_TABLE.name, index=False, schema=layout.HEATMAP_KEYFRAMES)
    report = _report(params, inputs, tally, image_size, grid)
    speed = {
        "timings_s": {**timings.as_dict(), "total": round(time.perf_counter() - start, 3)},
        "video_seconds": round(video_seconds, 2),
        "realtime_factor": round(video_seconds / loop_seconds, 2) if loop_seconds > 0 and video_seconds else None,
    }
    atomic.write_json(REPORT_PATH, report, sort_keys=True)
    atomic.write_json(TIMINGS_PATH, speed, sort_keys=True)
    return {**report, **speed}


def _report(params: Params, inputs: Inputs, tally: _Tally, image_size: int, grid: int) -> dict[str, Any]:
    """What the stage computed (results only: the same inputs give the same report)."""
    hp = params.heatmaps
    valid_points = [r["n_points"] for r in tally.records if r["valid"]]
    return {
        "params": asdict(hp),
        "preset": params.model.preset,
        "image_size": image_size,
        "grid": grid,
        "gaze_frames": _gaze_counts(inputs.gaze, pd.DataFrame(list(inputs.videos.values()))),
        "keyframes": {s: dict(sorted(c.items())) for s, c in sorted(tally.keyframes.items())},
        "earlier_frames": {s: int(tally.earlier.get(s, 0)) for s in agg_mod.FRAME_STATUSES},
        "occluded_frames_dropped": int(tally.earlier.get(agg_mod.OCCLUDED, 0)),
        "mean_points_per_valid_keyframe": float(np.mean(valid_points)) if valid_points else 0.0,
        "windows_written": {k: dict(sorted(v.items())) for k, v in sorted(tally.written.items())},
        "windows_without_gaze": {k: dict(sorted(v.items())) for k, v in sorted(tally.no_gaze_windows.items())},
        "windows_skipped": dict(sorted(tally.skipped_windows.items())),
        "skipped_examples": tally.skipped_examples[:10],
    }
