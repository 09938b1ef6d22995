"""Occlusion-aware temporal aggregation of gaze points onto a keyframe.

The points of the frames tau in [t - n, t] (n = round(delta * fps) earlier frames, plus t itself)
are moved onto keyframe t with the optical flow f(tau->t), sampled bilinearly at the gaze point.
With the occlusion filter on, an earlier frame whose forward/backward flow is inconsistent on more
than eta of its pixels is dropped (occlusion.py). Frames whose gaze is not valid never reach the
flow (nothing to move, and no flow is computed for them); points moved out of the frame are dropped.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gazevlm.heatmaps.flow import FlowBackend, sample_flow
from gazevlm.heatmaps.occlusion import consistency

# Per considered frame, why its point was or was not used.
USED = "used"
INVALID_GAZE = "invalid_gaze"  # label untracked / out_of_frame, no gaze row, or not finite
OCCLUDED = "occluded"  # failed the forward/backward consistency test
MOVED_OUT = "moved_out_of_frame"  # its point left the keyframe after the flow
FRAME_MISSING = "frame_missing"  # the video had no such frame (short video)
FRAME_STATUSES = (USED, INVALID_GAZE, OCCLUDED, MOVED_OUT, FRAME_MISSING)


class Timings:
    """Wall-clock seconds per named section, accumulated."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def add(self, seconds: dict[str, float]) -> None:
        """Add another Timings' seconds (a worker's)."""
        for name, value in seconds.items():
            self.seconds[name] += value

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in sorted(self.seconds.items())}


class GazeTrack:
    """One video's per-frame gaze, indexed by absolute frame number (never by row order)."""

    def __init__(
        self, frames: np.ndarray, x: np.ndarray, y: np.ndarray, valid: np.ndarray, width: int, height: int
    ) -> None:
        frames = np.asarray(frames, dtype=np.int64)
        if len(frames) and frames.min() < 0:
            raise ValueError("negative frame index in the gaze table")
        if len(np.unique(frames)) != len(frames):
            raise ValueError("the gaze table has more than one row for some frame")
        n = int(frames.max()) + 1 if len(frames) else 0
        self.width, self.height = int(width), int(height)
        self.x = np.full(n, np.nan)
        self.y = np.full(n, np.nan)
        self.valid = np.zeros(n, dtype=bool)
        self.x[frames] = np.asarray(x, dtype=np.float64)
        self.y[frames] = np.asarray(y, dtype=np.float64)
        self.valid[frames] = np.asarray(valid, dtype=bool)

    @classmethod
    def from_table(cls, table: pd.DataFrame, width: int, height: int) -> GazeTrack:
        return cls(
            table["frame"].to_numpy(),
            table["x"].to_numpy(),
            table["y"].to_numpy(),
            table["valid"].fillna(False).to_numpy(dtype=bool),
            width,
            height,
        )

    def point(self, frame: int) -> tuple[float, float] | None:
        """The frame's gaze point if it is valid, finite and inside the frame, else None."""
        if frame < 0 or frame >= len(self.valid) or not self.valid[frame]:
            return None
        x, y = self.x[frame], self.y[frame]
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < self.width and 0 <= y < self.height):
            return None
        return float(x), float(y)


@dataclass
class Aggregation:
    """The points that make a keyframe's heatmap and the fate of every frame considered."""

    keyframe: int
    points: np.ndarray  # (K, 2) x, y at the keyframe, native px
    frames: list[int] = field(default_factory=list)  # earlier frames then the keyframe
    status: list[str] = field(default_factory=list)
    inconsistent: list[float] = field(default_factory=list)  # NaN where not tested
    moved: list[tuple[float, float]] = field(default_factory=list)  # NaN where no point

    @property
    def valid(self) -> bool:
        return len(self.points) > 0

    def record(
        self,
        frame: int,
        status: str,
        inconsistent: float = float("nan"),
        moved: tuple[float, float] = (float("nan"), float("nan")),
    ) -> None:
        self.frames.append(frame)
        self.status.append(status)
        self.inconsistent.append(inconsistent)
        self.moved.append(moved)


def window_frames(keyframe: int, n_prev: int) -> list[int]:
    """Absolute frames considered for a keyframe: t - n_prev .. t (clipped at the video start)."""
    return list(range(max(0, keyframe - n_prev), keyframe + 1))


def single_point(track: GazeTrack, keyframe: int) -> Aggregation:
    """The keyframe's own point only (heatmaps.aggregate = false, the paper's Table 9 baseline)."""
    p = track.point(keyframe)
    agg = Aggregation(keyframe, np.array([p] if p else [], dtype=np.float64).reshape(-1, 2))
    if p:
        agg.record(keyframe, USED, moved=p)
    else:
        agg.record(keyframe, INVALID_GAZE)
    return agg


class Aggregator:
    """Moves earlier gaze points onto a keyframe with a flow backend, dropping occluded frames."""

    def __init__(
        self,
        backend: FlowBackend,
        flow_scale: float,
        eps_px: float,
        eta: float,
        occlusion_filter: bool,
        timings: Timings | None = None,
    ) -> None:
        if not 0 <= eta <= 1:
            raise ValueError(f"heatmaps.eta must be in [0, 1], got {eta}")
        self.backend = backend
        self.scale = flow_scale
        self.eps_px = eps_px
        self.eta = eta
        self.occlusion_filter = occlusion_filter
        self.timings = timings or Timings()

    def prepare(self, frame_bgr: np.ndarray) -> Any:
        with self.timings.section("prepare"):
            return self.backend.prepare(frame_bgr, self.scale)

    def aggregate(self, track: GazeTrack, keyframe: int, n_prev: int, prepared: Mapping[int, Any]) -> Aggregation:
        """`prepared` maps absolute frame -> backend.prepare(frame) for the keyframe and earlier frames."""
        agg = Aggregation(keyframe, np.zeros((0, 2)))
        points: list[tuple[float, float]] = []
        for tau in window_frames(keyframe, n_prev):
            p = track.point(tau)
            if p is None:
                agg.record(tau, INVALID_GAZE)
            elif tau == keyframe:
                agg.record(tau, USED, moved=p)
                points.append(p)
            elif tau not in prepared or keyframe not in prepared:
                agg.record(tau, FRAME_MISSING)
            else:
                status, frac, moved = self._move(p, prepared[tau], prepared[keyframe], track.width, track.height)
                agg.record(tau, status, frac, moved)
                if status == USED:
                    points.append(moved)
        agg.points = np.array(points, dtype=np.float64).reshape(-1, 2)
        return agg

    def _move(
        self, p: tuple[float, float], src: Any, dst: Any, width: int, height: int
    ) -> tuple[str, float, tuple[float, float]]:
        with self.timings.section("flow"):
            fw, bw = self.backend.flow_pair(src, dst, backward=self.occlusion_filter)
        with self.timings.section("warp"):
            h, w = fw.shape[:2]
            sx, sy = w / width, h / height
            frac = float("nan")
            if self.occlusion_filter:
                # eps is in native pixels; the flows are in flow-resolution pixels.
                check = consistency(fw, bw, self.eps_px * (sx + sy) / 2)
                frac = check.fraction
                if check.occluded(self.eta):
                    return OCCLUDED, frac, (float("nan"), float("nan"))
            d = sample_flow(fw, np.array([p[0] * sx - 0.5]), np.array([p[1] * sy - 0.5]))[0]
            moved = (p[0] + d[0] / sx, p[1] + d[1] / sy)
        if not (0 <= moved[0] < width and 0 <= moved[1] < height):
            return MOVED_OUT, frac, moved
        return USED, frac, moved
