"""Tiny generated inputs for the attention stage and the explorer: test shards in layout.py's format,
stand-in models with the real model's interface, predictions, and a helper that runs the whole stage."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from PIL import Image

from gazevlm import layout, params, shards

GRID = 8  # 8 x 8 patches like the tiny preset
PATCH = 16  # 128 px frames like the tiny preset (128 px, 16 px patches)
HEAT = 16  # stored heatmap resolution
FRAMES = {"future": 5, "activity": 3}


def gaze_cells(n_windows: int, n_frames: int, seed: int) -> np.ndarray:
    """(N, T, 2) patch (row, col) the person looks at; kept off the border so the support is a 3x3 block."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, GRID - 1, size=(n_windows, n_frames, 2))


def patch_target(row: int, col: int) -> np.ndarray:
    """A peaked patch distribution: 3x3 block around (row, col), centre heavier, tiny eps elsewhere."""
    g = np.full((GRID, GRID), 1e-6, np.float32)
    g[row - 1 : row + 2, col - 1 : col + 2] = 0.05
    g[row, col] = 0.6
    return g / g.sum()


def frame_image(row: int, col: int, rng: np.random.Generator) -> np.ndarray:
    """A dark textured frame with one bright object on the gazed patch."""
    img = rng.integers(10, 60, size=(GRID * PATCH, GRID * PATCH, 3)).astype(np.uint8)
    img[row * PATCH : (row + 1) * PATCH, col * PATCH : (col + 1) * PATCH] = (240, 220, 40)
    return img


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_shards(
    root: Path,
    task: str,
    n_windows: int = 6,
    seed: int = 0,
    invalid: tuple[tuple[int, int], ...] = ((0, 0),),
    bad_gaze: tuple[tuple[int, int], ...] = (),
) -> list[str]:
    """Test shards for one task under root/data/shards; `invalid` (window, frame) pairs lack gaze;
    `bad_gaze` pairs claim valid gaze but carry an all-zero target (a broken upstream stage)."""
    n_frames = FRAMES[task]
    cells = gaze_cells(n_windows, n_frames, seed)
    rng = np.random.default_rng(seed + 1)
    out = root / layout.shard_pattern(task, "test")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    files: list[str] = []
    with wds.ShardWriter(str(out), maxcount=4, verbose=0, post=files.append) as sink:
        for w in range(n_windows):
            wid = layout.window_id(task, f"vid{w % 2}", 30 * w)
            ids.append(wid)
            target = np.stack([patch_target(*cells[w, t]) for t in range(n_frames)])
            valid = np.ones(n_frames, bool)
            for iw, it in invalid:
                if iw == w:
                    valid[it] = False
                    target[it] = 0.0
            for iw, it in bad_gaze:
                if iw == w:
                    target[it] = 0.0
            heat = np.zeros((n_frames, HEAT, HEAT), np.float16)
            for t in range(n_frames):
                r, c = cells[w, t] * HEAT // GRID + HEAT // GRID // 2
                yy, xx = np.mgrid[:HEAT, :HEAT]
                heat[t] = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 4.0) if valid[t] else 0
            sample = {
                "__key__": wid,
                "target.npy": target,
                "valid.npy": valid,
                "heatmap.npy": heat,
                "json": {
                    "window_id": wid,
                    "uid": f"vid{w % 2}",
                    "task": task,
                    "split": "test",
                    "frames": [30 * w + 30 * t for t in range(n_frames)],
                    "timestamps": [w + t * 1.0 for t in range(n_frames)],
                    "keyframe_ids": [],
                    "target_text": f"pick up cup {w}",
                },
            }
            for t in range(n_frames):
                sample[f"f{t}.jpg"] = jpeg(frame_image(*cells[w, t], rng))
            sink.write(sample)
    shards.write_manifest(shards.manifest_path(files[0]), files)  # as the heatmaps stage does
    return ids


def batches(root: Path, task: str, batch_size: int = 4):
    """What the real test loader yields, enough for extraction: pixels (B, T, 3, H, W), prompt, ids."""
    files = layout.shard_files(task, "test", root / layout.SHARDS_DIR)
    buf: list[dict] = []

    def emit(items: list[dict]) -> dict:
        pixels = torch.stack(
            [
                torch.stack(
                    [
                        torch.from_numpy(np.array(Image.open(io.BytesIO(s[f"f{t}.jpg"])))).permute(2, 0, 1).float()
                        / 255
                        for t in range(FRAMES[task])
                    ]
                )
                for s in items
            ]
        )
        return {
            "pixels": pixels,
            "input_ids": torch.zeros(len(items), 4, dtype=torch.long),
            "attention_mask": torch.ones(len(items), 4, dtype=torch.long),
            "window_id": [s["__key__"] for s in items],
        }

    for sample in wds.WebDataset(files, shardshuffle=False, empty_check=False):
        buf.append(sample)
        if len(buf) == batch_size:
            yield emit(buf)
            buf = []
    if buf:
        yield emit(buf)


class StandIn(torch.nn.Module):
    """The model's attention interface. follow=True attends to bright patches (where the fixtures'
    gaze is); follow=False prefers dark ones. block=False returns no block attention (base run)."""

    def __init__(self, block: bool, follow: bool):
        super().__init__()
        self.block, self.follow = block, follow
        self.sharpness = torch.nn.Parameter(torch.tensor(8.0))

    def forward(self, pixels, input_ids, attention_mask, return_perceiver_attention=False):
        b, t = pixels.shape[:2]
        patches = torch.nn.functional.avg_pool2d(pixels.flatten(0, 1).mean(1, keepdim=True), PATCH)
        # smoothing over the 3x3 neighbourhood spreads the object's pull onto its neighbours, like gaze
        near = torch.nn.functional.avg_pool2d(patches, 3, stride=1, padding=1, count_include_pad=False)
        bright = (near + 0.1 * patches).reshape(b, t, -1)
        sign = 1.0 if self.follow else -1.0
        att = torch.softmax(sign * self.sharpness * bright, dim=-1)
        perceiver = torch.softmax(0.5 * sign * self.sharpness * bright, dim=-1)
        return SimpleNamespace(
            attention=att if self.block else None, perceiver_attention=perceiver if return_perceiver_attention else None
        )


def fixture_params(tasks=("future", "activity"), **attention) -> params.Params:
    p = params.from_dict(
        {
            "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
            "train": {"tasks": list(tasks)},
            "evaluate": {"bootstrap_samples": 200},
            "attention": {"overlay_windows": 2, **attention},
        }
    )
    return p


def write_predictions(
    root: Path, run: str, task: str, window_ids: list[str], seed: int = 0, train_seed: int = 0
) -> None:
    """The evaluate stage's predictions of the models of `train_seed` (seed: the fake scores' RNG)."""
    rng = np.random.default_rng(seed)
    path = layout.predictions_file(run, task, train_seed, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "window_id": window_ids,
            "prediction": [f"{run} says cup {i}" for i in range(len(window_ids))],
            "reference": [f"pick up cup {i}" for i in range(len(window_ids))],
            "semantic": rng.uniform(0.3, 0.9, len(window_ids)),
        }
    ).to_parquet(path)


def load_model(p: params.Params, run: str, task: str) -> tuple[torch.nn.Module, None]:
    return StandIn(block=p.run(run).block, follow=p.run(run).block), None


def build_stage_outputs(
    root: Path,
    p: params.Params | None = None,
    n_windows: int = 6,
    skip_predictions: tuple[tuple[str, str], ...] = (),
    bad_gaze: tuple[tuple[int, int], ...] = (),
) -> dict:
    """Write shards and predictions under root and run the attention stage there with stand-ins.
    skip_predictions: (run, task) pairs left without a predictions file."""
    from gazevlm.attention import extract, stage

    p = p or fixture_params()
    for k, task in enumerate(p.train.tasks):
        ids = write_shards(root, task, n_windows=n_windows, seed=k, bad_gaze=bad_gaze if k == 0 else ())
        for i, run in enumerate(p.runs):
            if (run, task) not in skip_predictions:  # only the analysed seed's: the stage must read those
                write_predictions(root, run, task, ids, seed=10 * k + i, train_seed=extract.analysed_seed(p))
    with contextlib.chdir(root):
        return stage.run(p, load_model=load_model, batches=lambda pp, task: batches(Path("."), task))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
