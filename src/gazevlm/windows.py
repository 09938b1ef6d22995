"""Keyframes, observation windows for both tasks, and the video-level train/val/test split.

Every keyframe and window carries absolute frame indices of its source video and their timestamps
(frame files sorted as strings, "10.jpg" before "2.jpg", once paired frames with the wrong captions):
nothing downstream may rely on file order. Windows:

- future:   observe `future_observe_s` of keyframes (5 at 1 fps); targets are the keyframes in
            (t_last, t_last + future_horizon_s], t_last = time of the last observed keyframe.
            t_start = first observed keyframe's time, t_end = t_last + future_horizon_s.
- activity: observe `activity_observe_s` of keyframes (3 at 1 fps); targets are the observed
            keyframes themselves. t_start / t_end = first / last observed keyframe's time.

Consecutive windows start `window_stride_s` apart. The split is by video, never by window (overlapping
windows of one video in train and test would be near-duplicates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gazevlm.layout import SPLITS, TASKS, WINDOWS, keyframe_id, window_id
from gazevlm.params import ExtractParams

SKIP_NO_TARGET = "no target keyframe: the horizon runs past the end of the video"
SKIP_SHORT_VIDEO = "video has fewer keyframes than one observation window"


def keyframe_indices(num_frames: int, fps: float, keyframe_fps: float) -> np.ndarray:
    """Absolute frame indices of the keyframes: the frame nearest each multiple of 1 / keyframe_fps."""
    if keyframe_fps <= 0 or fps <= 0:
        raise ValueError(f"keyframe_fps ({keyframe_fps}) and fps ({fps}) must be positive")
    step = fps / keyframe_fps
    frames = np.round(np.arange(int(np.ceil(num_frames / step)) + 1) * step).astype(np.int64)
    return np.unique(frames[frames < num_frames])


def keyframes_for_video(uid: str, num_frames: int, fps: float, keyframe_fps: float) -> pd.DataFrame:
    """keyframe_id, uid, frame, t for one video, in time order."""
    frames = keyframe_indices(num_frames, fps, keyframe_fps)
    return pd.DataFrame(
        {
            "keyframe_id": [keyframe_id(uid, int(f)) for f in frames],
            "uid": uid,
            "frame": frames,
            "t": frames / float(fps),
        }
    )


@dataclass(frozen=True)
class WindowSpec:
    task: str
    observe: int  # keyframes observed
    stride: int  # keyframes between window starts
    horizon_s: float | None  # future task: targets within this many seconds after the last observed one


def window_specs(ep: ExtractParams) -> dict[str, WindowSpec]:
    def count(seconds: float, what: str) -> int:
        n = int(round(seconds * ep.keyframe_fps))
        if n < 1:
            raise ValueError(f"params.extract.{what} = {seconds} s is less than one keyframe at {ep.keyframe_fps} fps")
        return n

    stride = count(ep.window_stride_s, "window_stride_s")
    if ep.future_horizon_s <= 0:
        raise ValueError(f"params.extract.future_horizon_s = {ep.future_horizon_s} must be positive")
    return {
        "future": WindowSpec(
            "future", count(ep.future_observe_s, "future_observe_s"), stride, float(ep.future_horizon_s)
        ),
        "activity": WindowSpec("activity", count(ep.activity_observe_s, "activity_observe_s"), stride, None),
    }


def windows_for_video(keyframes: pd.DataFrame, spec: WindowSpec) -> tuple[list[dict], Counter]:
    """Windows of one video (keyframes of that video, any order) and the count of skipped ones by reason."""
    kf = keyframes.sort_values("frame", kind="stable")
    uid = str(kf.uid.iloc[0]) if len(kf) else ""
    frames = kf.frame.to_numpy(dtype=np.int64)
    times = kf.t.to_numpy(dtype=float)
    ids = kf.keyframe_id.to_numpy()
    skipped: Counter = Counter()
    out: list[dict] = []
    if len(kf) < spec.observe:
        skipped[SKIP_SHORT_VIDEO] += 1
        return out, skipped
    for s in range(0, len(kf) - spec.observe + 1, spec.stride):
        obs = slice(s, s + spec.observe)
        t_last = times[s + spec.observe - 1]
        if spec.horizon_s is None:
            tgt = np.arange(s, s + spec.observe)
            t_end = t_last
        else:
            # a small tolerance so that a keyframe exactly at t_last + horizon is included
            tgt = np.flatnonzero((times > t_last + 1e-9) & (times <= t_last + spec.horizon_s + 1e-6))
            t_end = t_last + spec.horizon_s
            if len(tgt) == 0:
                skipped[SKIP_NO_TARGET] += 1
                continue
        out.append(
            {
                "window_id": window_id(spec.task, uid, int(frames[s])),
                "task": spec.task,
                "uid": uid,
                "obs_frames": [int(f) for f in frames[obs]],
                "obs_keyframe_ids": [str(i) for i in ids[obs]],
                "target_frames": [int(f) for f in frames[tgt]],
                "target_keyframe_ids": [str(i) for i in ids[tgt]],
                "t_start": float(times[s]),
                "t_end": float(t_end),
            }
        )
    return out, skipped


def build_windows(
    keyframes: pd.DataFrame, ep: ExtractParams, splits: Mapping[str, str]
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Windows of both tasks for every video in `splits`; skipped-window counts per task and reason."""
    specs = window_specs(ep)
    rows: list[dict] = []
    skipped: dict[str, dict[str, int]] = {}
    for task in TASKS:
        counter: Counter = Counter()
        for uid, kf in keyframes.groupby("uid", sort=True):
            if uid not in splits:
                continue
            made, skip = windows_for_video(kf, specs[task])
            for w in made:
                w["split"] = splits[uid]
            rows += made
            counter.update(skip)
        skipped[task] = dict(sorted(counter.items()))
    table = pd.DataFrame(rows, columns=WINDOWS.names)
    return table, skipped


def split_videos(
    uids: Sequence[str], fractions: Mapping[str, float], seed: int, explicit: Mapping[str, Sequence[str]] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Assign each video to train / val / test.

    With `explicit` ({split: [uid, ...]}, from params.extract.split_uids) the lists decide; videos in no
    list are returned as unassigned (the caller skips and reports them). Otherwise the sorted uids are
    shuffled with `seed` and cut by `fractions` (largest remainder); with at least as many videos as
    splits of positive fraction, every such split gets at least one video.
    Returns ({uid: split}, unassigned uids).
    """
    uids = sorted(set(uids))
    if explicit:
        unknown = sorted(set(explicit) - set(SPLITS))
        if unknown:
            raise ValueError(f"params.extract.split_uids: unknown split(s) {unknown} (use {list(SPLITS)})")
        assignment: dict[str, str] = {}
        for split in SPLITS:
            for uid in explicit.get(split, []) or []:
                if uid in assignment and assignment[uid] != split:
                    raise ValueError(f"params.extract.split_uids: video {uid} is in both {assignment[uid]} and {split}")
                assignment[uid] = split
        present = {u: s for u, s in assignment.items() if u in uids}
        return present, [u for u in uids if u not in assignment]
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ValueError(f"params.extract.split_fractions: unknown split(s) {unknown} (use {list(SPLITS)})")
    f = np.array([float(fractions.get(s, 0.0)) for s in SPLITS])
    if (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(f"params.extract.split_fractions {dict(fractions)} must be non-negative and sum to 1")
    n = len(uids)
    raw = f * n
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    positive = np.flatnonzero(f > 0)
    if n >= len(positive):
        for i in positive:
            while counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    labels = np.repeat(np.array(SPLITS), counts)
    return {uids[j]: str(labels[k]) for k, j in enumerate(order)}, []


class SplitError(ValueError):
    """The video-level split leaves the train or test split without a video."""


def check_split(
    assignment: Mapping[str, str],
    fractions: Mapping[str, float],
    explicit: Mapping[str, Sequence[str]] | None = None,
    source: str | None = None,
) -> list[str]:
    """Raise SplitError if train or test has no video; return notes (an empty val split: training
    then has no validation set). Messages name the fractions (or split_uids, or the `source` of an
    explicit split other than params, e.g. EGTEA's split files) and the video count."""
    counts = {s: sum(1 for v in assignment.values() if v == s) for s in SPLITS}
    if explicit and source and source != "params.extract.split_uids":
        how = source
    else:
        how = (
            f"params.extract.split_uids {dict(explicit)}"
            if explicit
            else f"params.extract.split_fractions {dict(fractions)}"
        )
    shown = " / ".join(f"{s} {counts[s]}" for s in SPLITS)
    empty = [s for s in ("train", "test") if counts[s] == 0]
    if empty:
        what = f"the {empty[0]} split is" if len(empty) == 1 else "the train and test splits are"
        raise SplitError(
            f"{how} split {len(assignment)} usable video(s) into {shown}: {what} empty (add videos or change the split)"
        )
    if counts["val"] == 0:
        return [
            f"WARNING: {how} split {len(assignment)} usable video(s) into {shown}: the val split is empty, "
            "so training has no validation set (and stops with 'validation split is empty')"
        ]
    return []
