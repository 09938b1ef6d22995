"""Is the model ever starved? Shard reader samples/s over training samples/s, tiny preset.

The reader is the training loop's own: `gazevlm.shards.make_loader` with the train split's settings
(shuffle, gaze entries decoded, train.batch_size, train.shuffle_buffer, train.num_workers), one full
pass over the split per timed sample. The trainer is bench_model's copy of gazevlm.train.step's step (gaze run,
vision features cached as in every epoch after the first). The two alternate, pass / steps, so that
load from other processes falls on both alike.

Shards: by default written here, in a temporary directory, with the heatmap stage's writer
(`encode_sample`, `ShardSetWriter`) in the layout of the future task (5 frames of 64 x 64 JPEG at
quality 95, 8 x 8 targets, 64 x 64 heatmaps), and a second copy written with an integer tar mtime
(the proposed ShardSetWriter fix: no PAX header per member), both read in the same interleaved run
(before / after); `--shards data/shards` reads the pipeline's shards instead.

    python -m bench.bench_loader [--repeats 7] [--shards DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import webdataset as wds

from bench import DEFAULT_THREADS, Figure, Summary, fmt_spread, goal_at_least, interleaved, quiet, set_threads
from bench.bench_model import Trainer, clock_for, make_batch, make_setup, process_group, target_texts
from gazevlm import layout
from gazevlm import params as params_mod
from gazevlm.geometry import patch_grid, vision_geometry
from gazevlm.shards import ShardSetWriter, encode_sample, make_loader, manifest_path, write_manifest

GOAL = 10.0
MODULE = "python -m bench.bench_loader"
TASK, SPLIT = "future", "train"


def write_shards(
    root: Path,
    n_samples: int = 256,
    frames: int = 5,
    per_shard: int = 128,
    seed: int = 0,
    preset: str = "tiny",
    integer_mtime: bool = False,
) -> list[str]:
    """A train split of `n_samples` windows under root, as the heatmap stage lays it out.

    integer_mtime: write through webdataset's ShardWriter with mtime=0 instead of the stage's
    ShardSetWriter (mtime=0.0): a float mtime makes tarfile add a PAX header to every member, which
    the reader then parses (the "after" of the proposed fix; the bytes are otherwise the same)."""
    size, grid = vision_geometry(preset)[0], patch_grid(preset)
    rng = np.random.default_rng(seed)
    pattern = layout.shard_pattern(TASK, SPLIT, root)
    if integer_mtime:
        Path(pattern).parent.mkdir(parents=True, exist_ok=True)
        files: list[str] = []
        writer: Any = wds.ShardWriter(pattern, maxcount=per_shard, verbose=0, encoder=False, mtime=0, post=files.append)
    else:
        writer = ShardSetWriter(pattern, per_shard)
    texts = target_texts(n_samples, seed)
    for i in range(n_samples):
        # smooth images, so the JPEGs are about the size of real frames (noise would compress badly)
        jpegs = []
        for _ in range(frames):
            img = cv2.resize(
                rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC
            )
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            jpegs.append(buf.tobytes())
        target = rng.random((frames, grid, grid)).astype(np.float32)
        target /= target.sum(axis=(1, 2), keepdims=True)
        wid = f"{TASK}_bench{i:05d}_{i:07d}"
        meta = {
            "window_id": wid,
            "frames": list(range(0, 30 * frames, 30)),
            "target_text": texts[i],
            "task": TASK,
            "split": SPLIT,
            "grid": grid,
            "image_size": size,
        }
        writer.write(
            encode_sample(
                wid, jpegs, target, np.ones(frames, bool), rng.random((frames, 64, 64)).astype(np.float16), meta
            )
        )
    if integer_mtime:
        writer.close()
        write_manifest(manifest_path(files[0]), files)  # readers refuse a split without one
        return files
    return writer.close()


def reader_pass(root: Path, batch_size: int, shuffle_buffer: int, num_workers: int, seed: int, epoch: int) -> int:
    loader = make_loader(
        (TASK, SPLIT),
        batch_size=batch_size,
        with_gaze=True,
        shuffle=True,
        seed=seed,
        epoch=epoch,
        shuffle_buffer=shuffle_buffer,
        num_workers=num_workers,
        drop_last=True,
        root=root,
    )
    return sum(len(b["window_id"]) for b in loader)


def measure(sources: dict[str, Path], params_file: str, repeats: int, threads: int, command: str) -> list[Figure]:
    """One figure per shard source: its reader pass, alternated with training steps on as many samples."""
    set_threads(threads)
    params = params_mod.load(params_file)
    tp = params.train
    counts = {
        name: reader_pass(root, tp.batch_size, tp.shuffle_buffer, tp.num_workers, tp.seeds[0], 0)
        for name, root in sources.items()
    }
    for name, n in counts.items():
        if n == 0:
            raise ValueError(f"{sources[name]}: no full batch of {tp.batch_size} samples in {TASK}/{SPLIT}")
    first = next(iter(sources.values()))
    frames = next(iter(make_loader((TASK, SPLIT), batch_size=1, with_gaze=True, shuffle=False, root=first)))[
        "pixels"
    ].shape[1]
    setup = make_setup("tiny", params, frames, tp.batch_size)
    batch = make_batch(setup)
    steps = 8
    epochs = iter(range(1, 1_000_000))
    fns: dict[str, Any] = {
        name: (
            lambda root=root: reader_pass(
                root, tp.batch_size, tp.shuffle_buffer, tp.num_workers, tp.seeds[0], next(epochs)
            )
        )
        for name, root in sources.items()
    }
    with process_group() as ctx:
        trainer = Trainer(setup, "gaze", ctx)
        fns["train"] = lambda: [trainer.step(batch) for _ in range(steps)]
        cpu: dict[str, list[float]] = {}
        wall = interleaved(fns, repeats, warmup=1, cpu=cpu)
    clock = clock_for(threads)
    times = cpu if clock == "cpu" else wall
    train = [steps * tp.batch_size / t for t in times["train"]]
    tr = Summary.of(train)
    figures = []
    for name in sources:
        reader = [counts[name] / t for t in times[name]]
        rd = Summary.of(reader)
        ratio = Summary.of([a / b for a, b in zip(reader, train, strict=False)])
        by_wall = Summary.of(
            [(counts[name] / a) / (steps * tp.batch_size / b) for a, b in zip(wall[name], wall["train"], strict=False)]
        )
        goal, met = goal_at_least(ratio.median, GOAL)
        figures.append(
            Figure(
                "data",
                f"shard reader / training samples/s, tiny, {name}",
                ratio.median,
                "x",
                fmt_spread(ratio, 1),
                goal,
                met,
                command,
                f"reader {rd.median:.0f} samples/s (IQR {rd.q1:.0f}-{rd.q3:.0f}; {counts[name]} samples, batch "
                f"{tp.batch_size}, num_workers {tp.num_workers}); training {tr.median:.1f} samples/s (IQR "
                f"{tr.q1:.1f}-{tr.q3:.1f}; gaze run, {frames} frames, {threads} thread(s)); {clock} time; the same "
                f"ratio by wall time {by_wall.median:.1f}x (IQR {by_wall.q1:.1f}-{by_wall.q3:.1f})",
                {
                    "clock": clock,
                    "reader_wall_s": wall[name],
                    "train_wall_s": wall["train"],
                    "reader_cpu_s": cpu[name],
                    "train_cpu_s": cpu["train"],
                    "samples": counts[name],
                },
            )
        )
    return figures


def run(
    params_file: str = "params.yaml",
    repeats: int = 7,
    threads: int = DEFAULT_THREADS,
    shards: str | None = None,
    n_samples: int = 256,
) -> list[Figure]:
    command = f"{MODULE} --repeats {repeats} --threads {threads}"
    if shards:
        return measure(
            {f"{shards}/{TASK}": Path(shards)}, params_file, repeats, threads, f"{command} --shards {shards}"
        )
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        stage, fixed = Path(tmp) / "stage", Path(tmp) / "int-mtime"
        write_shards(stage, n_samples)
        write_shards(fixed, n_samples, integer_mtime=True)
        return measure(
            {"generated shards, stage writer": stage, "generated shards, integer mtime (proposed fix)": fixed},
            params_file,
            repeats,
            threads,
            command,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    ap.add_argument("--shards", default=None, help="read this shards root instead of generated shards")
    args = ap.parse_args(argv)
    quiet()
    for f in run(args.params, args.repeats, args.threads, args.shards):
        print(f"{f.name}: {f.value:.1f} {f.unit} ({f.spread}) goal {f.goal}  {f.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
