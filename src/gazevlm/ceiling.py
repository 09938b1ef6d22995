"""The world ceiling: how much of a task's target the frames carry, with and without the gaze loss.

A small classifier trained end to end on the heatmap stage's shards bounds what any VLM can show on
the same data: patch embedding + one transformer layer per frame, the product's gaze block (global
query) over each frame's patches, one temporal layer over the frames' pooled tokens, and a head that
names the first object of the window's reference (colour x kind, the synthetic world's closed
vocabulary; gazevlm.evaluate.grounding). lambda 0 trains it from the label alone; lambda > 0 adds the
gaze KL on the block's attention, exactly as the VLM runs do. Gaze is never an input.

    python -m gazevlm.ceiling --task future --steps 500 --seeds 0 1 2 --lambdas 0 10

It answers, for a user of real data too: is the effect even possible here, at this data size? On real
Ego4D the label needs the closed vocabulary, so this is a synthetic-world diagnostic.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from gazevlm import layout
from gazevlm.evaluate.grounding import COLOURS, KINDS, first_object

N_CLASSES = len(COLOURS) * len(KINDS)


@dataclass
class Split:
    frames: torch.Tensor  # (N, T, 3, H, W) uint8
    target: torch.Tensor  # (N, T, P) float32 patch gaze distribution
    valid: torch.Tensor  # (N, T) bool
    label: torch.Tensor  # (N,) long: first object of the reference, -1 when the text names none
    uid: list[str]


def label_of(text: str) -> int:
    obj = first_object(text)
    return -1 if obj is None else COLOURS.index(obj[0]) * len(KINDS) + KINDS.index(obj[1])


def load_split(task: str, split: str, root: str | Path = layout.SHARDS_DIR) -> Split:
    """Every sample of one (task, split) decoded into memory (the tiny geometry: a few hundred MB)."""
    from gazevlm import shards

    frames, target, valid, label, uid = [], [], [], [], []
    for s in shards.iter_samples((task, split), with_gaze=True, root=root):
        frames.append(torch.from_numpy(s["frames"]).permute(0, 3, 1, 2))
        target.append(torch.from_numpy(s["target"]).flatten(1).float())
        valid.append(torch.from_numpy(s["valid"]).bool())
        label.append(label_of(s["text"]))
        uid.append(str(s["meta"].get("uid", "")))
    return Split(torch.stack(frames), torch.stack(target), torch.stack(valid), torch.tensor(label), uid)


class CeilingNet(nn.Module):
    """Pixels (B, T, 3, H, W) in [0, 1] -> class logits (B, N_CLASSES) and block attention (B, T, P)."""

    def __init__(self, image_size: int, patch: int, n_frames: int, dim: int = 64, heads: int = 4):
        super().__init__()
        from gazevlm.models.gaze_block import GazeBlock

        grid = image_size // patch
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.spatial = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(dim)
        self.block = GazeBlock(dim, layers=2, heads=heads, query="global", output="pooled_lm", ff_mult=0)
        self.frame_pos = nn.Parameter(torch.randn(n_frames, dim) * 0.02)
        self.temporal = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = pixels.shape[:2]
        x = self.embed(pixels.flatten(0, 1) - 0.5).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.spatial(x)).view(b, t, x.shape[1], x.shape[2])
        out = self.block(x)
        h = self.temporal(out.tokens + self.frame_pos[:t])
        return self.head(h[:, -1]), out.attention


@dataclass(frozen=True)
class CeilingResult:
    task: str
    lam: float
    seed: int
    steps: int
    train_windows: int
    test_windows: int
    test_videos: int
    object_accuracy: float
    last_frame_top3_overlap: float
    seconds: float


def _top3_overlap(attention: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> float:
    """Share of the attention's top-3 patches among the gaze's top-3, last frame, valid frames only."""
    a = attention[:, -1].topk(3, dim=-1).indices
    g = target[:, -1].topk(3, dim=-1).indices
    hit = (a.unsqueeze(-1) == g.unsqueeze(-2)).any(-1).float().mean(-1)
    keep = valid[:, -1]
    return float(hit[keep].mean()) if keep.any() else float("nan")


def train_one(
    train: Split,
    test: Split,
    *,
    task: str,
    lam: float,
    seed: int,
    steps: int = 500,
    batch_size: int = 32,
    lr: float = 1e-3,
) -> CeilingResult:
    """Train the classifier once (lambda, seed) and score the held-out split."""
    from gazevlm.losses import gaze_kl

    t0 = time.perf_counter()
    keep = train.label >= 0
    idx_all = torch.nonzero(keep).flatten()
    torch.manual_seed(seed)
    grid = math.isqrt(train.target.shape[-1])  # the gaze targets' patch grid fixes the patch size
    net = CeilingNet(train.frames.shape[-1], train.frames.shape[-1] // grid, train.frames.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = idx_all[torch.randint(len(idx_all), (batch_size,), generator=gen)]
        logits, attention = net(train.frames[idx].float() / 255.0)
        loss = nn.functional.cross_entropy(logits, train.label[idx])
        if lam:
            loss = loss + lam * gaze_kl(attention, train.target[idx], train.valid[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    preds, atts = [], []
    with torch.no_grad():
        for i in range(0, len(test.label), 128):
            logits, attention = net(test.frames[i : i + 128].float() / 255.0)
            preds.append(logits.argmax(-1))
            atts.append(attention)
    pred, attention = torch.cat(preds), torch.cat(atts)
    acc = float((pred == test.label)[test.label >= 0].float().mean())
    return CeilingResult(
        task,
        lam,
        seed,
        steps,
        int(keep.sum()),
        len(test.label),
        len(set(test.uid)),
        acc,
        _top3_overlap(attention, test.target, test.valid),
        round(time.perf_counter() - t0, 1),
    )


def measure(
    task: str,
    *,
    lambdas: Sequence[float] = (0.0, 10.0),
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 500,
    root: str | Path = layout.SHARDS_DIR,
    threads: int = 1,
    held_out: str = "val",
) -> list[CeilingResult]:
    """Every (lambda, seed); scored on the validation split by default (a diagnostic never looks at test)."""
    torch.set_num_threads(threads)
    train, test = load_split(task, "train", root), load_split(task, held_out, root)
    return [train_one(train, test, task=task, lam=lam, seed=seed, steps=steps) for lam in lambdas for seed in seeds]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gazevlm.ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="future", choices=layout.TASKS)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 10.0])
    ap.add_argument("--shards", default=str(layout.SHARDS_DIR))
    ap.add_argument("--held-out", default="val", choices=("val", "test"), help="split scored (default val)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    results = measure(
        args.task, lambdas=args.lambdas, seeds=args.seeds, steps=args.steps, root=args.shards, held_out=args.held_out
    )
    for r in results:
        print(
            f"{r.task} lambda {r.lam:g} seed {r.seed}: object accuracy {r.object_accuracy:.3f}, last-frame "
            f"top-3 overlap {r.last_frame_top3_overlap:.2f} ({r.train_windows} train / {r.test_windows} held-out "
            f"windows, {r.test_videos} held-out videos, {r.seconds:.0f} s)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
