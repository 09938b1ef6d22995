"""Heatmap aggregation throughput: video-seconds processed per wall-second at 1088 x 1080.

Real data has keyframes at 1 fps, so one video-second costs one keyframe's aggregation over the
delta window (6 earlier frames at 200 ms / 30 fps): realtime = 1 s / (time per keyframe). Frames
are synthetic (a textured scene panning 3 px/frame right and 2 px/frame down, the gaze fixating a
point of it), generated here; nothing is read from disk except in the decode measurement.

    python bench/bench_heatmaps.py [--keyframes 6] [--json reports/bench_heatmaps.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gazevlm.heatmaps.aggregate import Aggregator, GazeTrack, Timings, window_frames
from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.flow import FlowBackendError, make_backend
from gazevlm.heatmaps.targets import patch_target_from_points, resize_heatmap
from gazevlm.video_frames import read_frames

WIDTH, HEIGHT, FPS = 1088, 1080, 30
VELOCITY = (3, 2)


def scene_frames(n: int, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mx, my = VELOCITY[0] * n + 8, VELOCITY[1] * n + 8
    h, w = height + 2 * my, width + 2 * mx
    coarse = cv2.resize(rng.random((h // 16, w // 16, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    scene = coarse + 2.0 * fine
    scene = ((scene - scene.min()) / (scene.max() - scene.min()) * 255).astype(np.uint8)
    return [
        np.ascontiguousarray(
            scene[
                my - k * VELOCITY[1] : my - k * VELOCITY[1] + height,
                mx - k * VELOCITY[0] : mx - k * VELOCITY[0] + width,
            ]
        )
        for k in range(n)
    ]


def bench_one(
    backend_name: str, n_prev: int, scale: float, keyframes: int, frames: list[np.ndarray], width: int, height: int
) -> dict:
    timings = Timings()
    agg = Aggregator(make_backend(backend_name), scale, eps_px=20, eta=0.6, occlusion_filter=True, timings=timings)
    n = len(frames)
    f = np.arange(n)
    track = GazeTrack(
        f,
        width / 2 - 40 + VELOCITY[0] * (f - n / 2),
        height / 2 + VELOCITY[1] * (f - n / 2),
        np.ones(n, bool),
        width,
        height,
    )
    geom = CropGeometry.for_frame(width, height, 224)
    errors = []
    # warm-up (allocations, OpenCV thread pool), not timed
    key = n - 1
    agg.aggregate(track, key, n_prev, {i: agg.prepare(frames[i]) for i in window_frames(key, n_prev)})
    timings.seconds.clear()
    start, cpu_start = time.perf_counter(), time.process_time()
    for k in range(keyframes):
        key = n - 1 - k
        prepared = {i: agg.prepare(frames[i]) for i in window_frames(key, n_prev)}
        out = agg.aggregate(track, key, n_prev, prepared)
        errors.append(np.abs(out.points - np.array(track.point(key))).max())
        # as the stage does: Gaussians evaluated through the frame's resize + crop, then the stored 64 x 64
        with timings.section("gaussians"):
            pt = patch_target_from_points(out.points, geom, 20.0, 16, 1e-6)
        with timings.section("targets"):
            resize_heatmap(pt.heatmap, 64)
    wall = (time.perf_counter() - start) / keyframes
    cpu = (time.process_time() - cpu_start) / keyframes
    per = {k: v / keyframes for k, v in timings.seconds.items()}
    return {
        "backend": backend_name,
        "n_prev": n_prev,
        "flow_scale": scale,
        "width": width,
        "height": height,
        "ms_per_keyframe": 1e3 * wall,
        "realtime_x": 1.0 / wall,
        "cpu_ms_per_keyframe": 1e3 * cpu,
        "split_ms": {k: round(1e3 * v, 2) for k, v in sorted(per.items())},
        "max_point_error_px": float(max(errors)),
    }


def bench_decode(seconds: int = 2) -> dict:
    """Sequential decode of an mp4v video at 1088 x 1080, retrieving 7 of every 30 frames."""
    frames = scene_frames(seconds * FPS, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
        for fr in frames:
            writer.write(fr)
        writer.release()
        wanted = [k * FPS + 15 - j for k in range(seconds) for j in range(7)]
        start = time.perf_counter()
        got = sum(1 for _ in read_frames(path, wanted))
        wall = time.perf_counter() - start
    return {
        "codec": "mp4v",
        "frames_decoded": seconds * FPS,
        "frames_retrieved": got,
        "ms_per_video_second": 1e3 * wall / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keyframes", type=int, default=6, help="keyframes timed per configuration")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    print(
        f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at start; frames {WIDTH}x{HEIGHT}; {args.keyframes} keyframes per row"
    )
    print(
        "realtime = video-seconds per wall-second at 1 keyframe/s; cpu ms = process CPU time per keyframe "
        "(all threads); err px = largest distance of a moved point from the truth"
    )
    frames = scene_frames(12 + args.keyframes + 2)
    rows = []
    configs = [
        ("dis", 6, 0.5),
        ("farneback", 6, 0.5),
        ("raft", 6, 0.5),
        ("raft_small", 6, 0.5),
        ("dis", 12, 0.5),
        ("farneback", 12, 0.5),
        ("dis", 6, 0.25),
        ("dis", 6, 1.0),
        ("farneback", 6, 0.25),
    ]
    for name, n_prev, scale in configs:
        try:
            rows.append(bench_one(name, n_prev, scale, args.keyframes, frames, WIDTH, HEIGHT))
        except FlowBackendError as err:
            print(f"# {name}: skipped ({str(err).split(';')[0]})")
    small = scene_frames(12 + args.keyframes + 2, width=544, height=540)
    rows.append(bench_one("dis", 6, 1.0, args.keyframes, small, 544, 540))
    head = (
        f"{'backend':<11}{'frames':>7}{'scale':>7}{'native':>11}{'ms/kf':>9}{'realtime':>10}{'cpu ms':>8}"
        f"{'err px':>8}  split (wall ms)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        split = ", ".join(f"{k} {v:.1f}" for k, v in r["split_ms"].items())
        print(
            f"{r['backend']:<11}{r['n_prev']:>7}{r['flow_scale']:>7}{r['width']:>6}x{r['height']:<4}"
            f"{r['ms_per_keyframe']:>9.1f}{r['realtime_x']:>9.1f}x{r['cpu_ms_per_keyframe']:>8.0f}"
            f"{r['max_point_error_px']:>8.2f}  {split}"
        )
    dec = bench_decode()
    print(
        f"decode (mp4v, sequential grab, 7 of 30 frames retrieved): {dec['ms_per_video_second']:.0f} ms per "
        f"video-second -> {1e3 / dec['ms_per_video_second']:.1f}x realtime on its own"
    )
    default = rows[0]
    total = default["ms_per_keyframe"] + dec["ms_per_video_second"]
    print(
        f"default (dis, 6 frames, scale 0.5) incl. decode: {total:.0f} ms per video-second -> "
        f"{1e3 / total:.1f}x realtime"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "decode": dec}, indent=2) + "\n")


if __name__ == "__main__":
    main()
