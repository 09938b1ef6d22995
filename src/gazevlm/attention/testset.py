"""The test split's frames and held-out gaze, read straight from the shards (layout.py's contract).

Gaze is used here for analysis only. The JPEGs are kept as the shard stores them (already resized and
cropped like the model input), so the explorer shows exactly what the model saw.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from gazevlm import layout
from gazevlm.attention.outputs import TaskFrames, pack_jpegs

REQUIRED = ("target.npy", "valid.npy", "heatmap.npy", "json")


def _npy(sample: dict, key: str, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(sample[key]), allow_pickle=False)
    except Exception as err:  # a truncated or foreign file: say which one
        raise ValueError(f"{where}: cannot read {key}: {err}") from err


def read_test_windows(task: str, shards_root: Path = layout.SHARDS_DIR) -> tuple[TaskFrames, dict]:
    """All test windows of `task` and counts of what was repaired: (frames, {"frames_bad_gaze": n}).

    A frame flagged valid whose gaze target has no mass, a negative or a non-finite value is marked
    invalid (not scored) and counted, never scored against a made-up distribution.
    """
    files = layout.shard_files(task, "test", shards_root)
    if not files:
        raise FileNotFoundError(
            f"no test shards for task {task!r}: nothing matches "
            f"{layout.shard_pattern(task, 'test', shards_root).replace('%06d', '*')}"
        )
    ids, uids, frame_idx, stamps, targets, valids, heatmaps, jpegs = [], [], [], [], [], [], [], []
    bad_gaze = 0
    for sample in wds.WebDataset(files, shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        where = f"{sample.get('__url__', files)} sample {key}"
        missing = [k for k in REQUIRED if k not in sample]
        if missing:
            raise ValueError(f"{where}: missing {missing} (shards need {list(REQUIRED)} and f0.jpg...)")
        target = _npy(sample, "target.npy", where).astype(np.float32)
        valid = _npy(sample, "valid.npy", where).astype(bool)
        heat = _npy(sample, "heatmap.npy", where)
        meta = json.loads(sample["json"])
        n = target.shape[0]
        if target.ndim != 3 or valid.shape != (n,) or heat.ndim != 3 or heat.shape[0] != n:
            raise ValueError(
                f"{where}: inconsistent shapes target {target.shape}, valid {valid.shape}, heatmap {heat.shape}"
            )
        frames = [sample.get(f"f{t}.jpg") for t in range(n)]
        if any(f is None for f in frames):
            raise ValueError(f"{where}: expected keyframes f0.jpg..f{n - 1}.jpg, some are missing")
        if targets and (target.shape != targets[0].shape or heat.shape != heatmaps[0].shape):
            raise ValueError(
                f"{where}: target {target.shape} / heatmap {heat.shape} differ from the first "
                f"window's {targets[0].shape} / {heatmaps[0].shape}; one task needs one geometry"
            )
        flat = target.reshape(n, -1)
        usable = np.isfinite(flat).all(1) & (flat >= 0).all(1) & (flat.sum(1) > 0)
        bad_gaze += int((valid & ~usable).sum())
        valid &= usable
        flat = np.where(valid[:, None], flat, 0.0)
        flat = flat / np.where(valid, flat.sum(1), 1.0)[:, None]
        ids.append(key)
        uids.append(str(meta.get("uid", "")))
        frame_idx.append(np.asarray(meta.get("frames", [-1] * n), dtype=np.int64))
        stamps.append(np.asarray(meta.get("timestamps", [np.nan] * n), dtype=np.float64))
        if frame_idx[-1].shape != (n,) or stamps[-1].shape != (n,):
            raise ValueError(f"{where}: json frames/timestamps do not list one entry per keyframe ({n})")
        targets.append(flat.reshape(target.shape))
        valids.append(valid)
        heatmaps.append(heat.astype(np.float16))
        jpegs.append(frames)
    if not ids:
        raise ValueError(f"test shards for task {task!r} hold no samples: {files}")
    if len(set(ids)) != len(ids):
        dup = sorted({w for w in ids if ids.count(w) > 1})[:5]
        raise ValueError(f"test shards for task {task!r} repeat window ids, e.g. {dup}")
    gh, gw = targets[0].shape[1:]
    buffer, offsets = pack_jpegs(jpegs)
    frames = TaskFrames(
        task=task,
        window_ids=np.array(ids),
        uids=np.array(uids),
        frame_index=np.stack(frame_idx),
        timestamps=np.stack(stamps),
        gaze=np.stack(targets).reshape(len(ids), -1, gh * gw),
        valid=np.stack(valids),
        grid=(int(gh), int(gw)),
        heatmaps=np.stack(heatmaps),
        jpeg_buffer=buffer,
        jpeg_offsets=offsets,
    )
    return frames, {"frames_bad_gaze": bad_gaze}
