"""Small generated data and params for the training tests (real tiny preset, tiny data)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from gazevlm import layout, params
from gazevlm.geometry import patch_grid, vision_geometry

TASK = "future"
FRAMES = 2
COLOURS = ("red", "blue", "green", "yellow")
THINGS = ("cup", "bowl", "knife", "plate")
VERBS = ("pick", "cut", "open", "wash")


def tiny_params(model: dict[str, Any] | None = None, **train: Any) -> params.Params:
    """Tiny-preset params: global batch 4, 2 epochs, short warmup, seeds 0 and 1 (0 trains unless a seed is
    given); override any train key (and model keys, e.g. the backbone, through `model`). The vision encoder
    is the preset's random one (model.vision_weights None: no pretrain stage has run in a test)."""
    base = {
        "tasks": [TASK],
        "seeds": [0, 1],
        "batch_size": 4,
        "grad_accum": 1,
        "lr": 1e-3,
        "weight_decay": 0.01,
        "warmup_steps": 2,
        "schedule": "cosine",
        "epochs": 2,
        "grad_clip": 1.0,
        "cache_vision_features": True,
        "freeze_vision": True,
        "num_workers": 0,
        "shuffle_buffer": 8,
        "checkpoint_every_steps": 0,
        "select_on": "ce",
        # the KL itself (params.yaml trains with mean, KL / patches): with lambda 100 the gaze term
        # dominates the gradients (global norm ~45 at step 1 vs ~3), a strong check of the gaze block in
        # the 1-rank vs 2-rank comparisons, whose tolerances were measured with it
        "kl_reduction": "sum",
    }
    base.update(train)
    return params.from_dict({"model": {"preset": "tiny", "vision_weights": None, **(model or {})}, "train": base})


def make_samples(n: int, seed: int, split: str, all_valid_but_last: bool = True) -> list[dict[str, Any]]:
    """Windows with random frames, a gaze distribution per frame and a 4-word target text.

    Every sample has the same number of valid frames and of target tokens, so a mean over one
    micro-batch of 4 equals the mean of two micro-batches of 2 (1-rank vs 2-rank comparisons)."""
    size = vision_geometry("tiny")[0]
    grid = patch_grid("tiny")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        target = rng.random((FRAMES, grid, grid)).astype(np.float32) ** 4
        target /= target.sum(axis=(1, 2), keepdims=True)
        valid = np.ones(FRAMES, bool)
        if all_valid_but_last:
            valid[-1] = False
        text = f"{VERBS[i % 4]} the {COLOURS[(i // 4) % 4]} {THINGS[(i * 7) % 4]}"
        out.append(
            {
                "window_id": f"{TASK}_{split}{seed:02d}v{i:03d}_{i:07d}",
                "frames": (rng.random((FRAMES, size, size, 3)) * 255).astype(np.uint8),
                "target": target,
                "valid": valid,
                "text": text,
            }
        )
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixels": torch.from_numpy(np.stack([s["frames"] for s in samples])).permute(0, 1, 4, 2, 3).float() / 255,
        "gaze_target": torch.from_numpy(np.stack([s["target"] for s in samples])),
        "gaze_valid": torch.from_numpy(np.stack([s["valid"] for s in samples])),
        "text": [s["text"] for s in samples],
        "window_id": [s["window_id"] for s in samples],
        "meta": [{} for _ in samples],
    }


class ListSource:
    """In-memory DataSource in which global batch s is the same samples whatever the world size:
    rank r of W takes slice r of every global micro-round (the real loader splits whole shards)."""

    def __init__(self, n_train: int = 12, n_val: int = 4, seed: int = 0):
        self.split = {"train": make_samples(n_train, seed, "train"), "val": make_samples(n_val, seed + 1, "val")}

    def train_texts(self) -> list[str]:
        return [s["text"] for s in self.split["train"]]

    def num_samples(self, split: str) -> int:
        return len(self.split[split])

    def batches(
        self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int, shuffle: bool, seed: int
    ) -> Iterator[dict[str, Any]]:
        items = list(self.split[split])
        if shuffle:
            random.Random(seed * 1000 + epoch).shuffle(items)
        round_size = batch_size * world_size
        for start in range(0, len(items) - round_size + 1, round_size):
            yield collate(items[start + rank * batch_size : start + (rank + 1) * batch_size])


def write_shards(root: Path, n_train: int = 12, n_val: int = 4, seed: int = 0, per_shard: int = 6) -> Path:
    """Shards in the heatmap stage's layout (gazevlm.layout), read back by gazevlm.shards.make_loader."""
    from gazevlm.shards import ShardSetWriter, encode_sample

    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1)):
        writer = ShardSetWriter(layout.shard_pattern(TASK, split, root), per_shard)
        for smp in make_samples(n, s, split):
            jpegs = [
                cv2.imencode(".jpg", f[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in smp["frames"]
            ]
            meta = {
                "window_id": smp["window_id"],
                "task": TASK,
                "split": split,
                "uid": "v",
                "frames": list(range(FRAMES)),
                "timestamps": [float(i) for i in range(FRAMES)],
                "keyframe_ids": [f"v_{i:07d}" for i in range(FRAMES)],
                "target_text": smp["text"],
            }
            heat = np.zeros((FRAMES, 8, 8), np.float16)
            writer.write(encode_sample(smp["window_id"], jpegs, smp["target"], smp["valid"], heat, meta))
        writer.close()
    return root


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def read_tsv_metrics(live_dir: Path, skip: tuple[str, ...] = ("step_time_s",)) -> dict[str, list[tuple[int, float]]]:
    """Every DVCLive curve as (step, value) rows, without wall-clock columns."""
    out = {}
    for tsv in sorted((Path(live_dir) / "plots" / "metrics").rglob("*.tsv")):
        if tsv.stem in skip:
            continue
        lines = tsv.read_text().splitlines()
        header = lines[0].split("\t")
        si, vi = header.index("step"), header.index(tsv.stem)
        out[str(tsv.relative_to(live_dir))] = [(int(r.split("\t")[si]), float(r.split("\t")[vi])) for r in lines[1:]]
    return out


# --- multi-process helpers (spawned children import this module by name) -----------------------------


def _rank_main(rank: int, world_size: int, port: int, threads: int, kwargs: dict, result_dir: str) -> None:
    import warnings

    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    # a sharded unit returning a view could lose its pre-backward all-gather: fail the rank, not warn
    warnings.filterwarnings("error", message=r"FSDP2-wrapped module .* returned a view tensor")
    run_in_process(threads=threads, result_path=Path(result_dir) / f"rank{rank}.json", **kwargs)


def run_in_process(
    *, threads: int, result_path: Path | None, train_kwargs: dict, source: dict | None, kill_at_step: int | None = None
) -> dict:
    """One rank's training; with kill_at_step the process SIGKILLs itself after that optimizer step."""
    import signal

    from gazevlm import train as train_mod

    train_kwargs = dict(train_kwargs)
    p = tiny_params(train_kwargs.pop("model", None), **train_kwargs.pop("train", {}))
    data = ListSource(**source) if source is not None else None

    def on_step(step: int, epoch: int) -> None:
        if kill_at_step is not None and step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup, no flush, mid-epoch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same in every process, so floating-point sums agree bit for bit
    try:
        summary = train_mod.train(p, progress=False, device="cpu", data=data, on_step=on_step, **train_kwargs)
    finally:
        torch.set_num_threads(before)
    if result_path is not None:
        Path(result_path).write_text(json.dumps(summary, default=str))
    return summary


def process_context():
    """A forkserver context whose server has imported torch and the model stack once: every child
    forks from it instead of re-importing (spawn) or inheriting autograd threads (fork)."""
    import multiprocessing
    import multiprocessing.forkserver

    multiprocessing.forkserver.set_forkserver_preload(
        ["train_fixtures", "gazevlm.train.trainer", "gazevlm.models", "gazevlm.losses", "gazevlm.shards", "dvclive"]
    )
    return multiprocessing.get_context("forkserver")


def spawn_ranks(world_size: int, kwargs: dict, result_dir: Path, threads: int = 1) -> list[dict]:
    """Run `world_size` ranks as separate processes (gloo, a free port on 127.0.0.1)."""
    import torch.multiprocessing as mp

    from gazevlm.distributed import free_port

    process_context()
    mp.start_processes(
        _rank_main,
        args=(world_size, free_port(), threads, kwargs, str(result_dir)),
        nprocs=world_size,
        join=True,
        start_method="forkserver",
    )
    return [json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(world_size)]


def train_until_killed(root: str, kill_at_step: int, train_kwargs: dict) -> None:
    """Child process body: train in `root` and SIGKILL itself after optimizer step `kill_at_step`."""
    os.chdir(root)
    run_in_process(threads=1, result_path=None, source=None, kill_at_step=kill_at_step, train_kwargs=train_kwargs)
