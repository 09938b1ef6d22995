"""A tiny world with a fixed (file) vision encoder, for the tests of shared vision features."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

from gazevlm import layout, shards
from gazevlm.geometry import patch_grid, vision_geometry
from gazevlm.models import presets
from train_fixtures import FRAMES, TASK

WORDS = ("pick the red cup", "open the blue bowl", "cut the green knife", "wash the yellow plate")
SPLITS = {"train": 12, "val": 4, "test": 5}


def write_world(root: Path, seed: int = 0) -> None:
    """Shards of every split, windows sliding one keyframe over a video (so windows share frames, as
    the real ones do)."""
    size, grid = vision_geometry("tiny")[0], patch_grid("tiny")
    rng = np.random.default_rng(seed)
    for split, n in SPLITS.items():
        video = [
            cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))[1].tobytes()
            for _ in range(n + FRAMES)
        ]
        writer = shards.ShardSetWriter(layout.shard_pattern(TASK, split, root / layout.SHARDS_DIR), 5)
        for i in range(n):
            wid = layout.window_id(TASK, f"{split}v", i)
            target = rng.random((FRAMES, grid, grid)).astype(np.float32)
            meta = {
                "window_id": wid,
                "uid": f"{split}v{i % 2}",
                "task": TASK,
                "split": split,
                "frames": list(range(i, i + FRAMES)),
                "timestamps": [float(t) for t in range(FRAMES)],
                "keyframe_ids": [f"k{i + t}" for t in range(FRAMES)],
                "target_text": WORDS[i % 4],
            }
            writer.write(
                shards.encode_sample(
                    wid,
                    video[i : i + FRAMES],
                    target / target.sum((1, 2), keepdims=True),
                    np.ones(FRAMES, bool),
                    np.zeros((FRAMES, 8, 8), np.float16),
                    meta,
                )
            )
        writer.close()


def write_encoder(path: Path, seed: int = 3) -> Path:
    torch.manual_seed(seed)
    visual = presets.build_vision_encoder(presets.get_preset("tiny", "openflamingo")).visual
    save_file({k: v.contiguous() for k, v in visual.state_dict().items()}, str(path))
    return path
