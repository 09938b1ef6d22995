"""The world ceiling: how much of a task's target the frames carry, with and without the gaze loss.

A small classifier trained on the heatmap stage's shards bounds what any VLM can show on the same
data: patch embedding + one transformer layer per frame, the product's gaze block (global query) over
each frame's patches, one temporal layer over the frames' pooled tokens, and a head that names the
first object of the window's reference (colour x kind, the synthetic world's closed vocabulary;
gazevlm.evaluate.grounding). lambda 0 trains it from the label alone; lambda > 0 adds the gaze KL on
the block's attention, exactly as the VLM runs do. Gaze is never an input.

Two front ends: `scratch` learns the patch embedding from the label (end to end); `pretrained` reads
the frozen encoder every tiny run reads (params model.vision_weights, the pretrain stage's output,
trained on the train videos' keyframes and captions, never on gaze) through a trainable linear map:
what the VLMs' frames carry, measured without the burden of writing text. `make ceiling` writes
reports/ceiling.{json,md} (lambdas 0 1.5625 10):

    python -m gazevlm.ceiling --tasks future activity --encoders pretrained scratch --out reports/ceiling

(lambda 1.5625 with this KL, summed over patches, is the VLM runs' lambda 100 with their KL averaged
over the 64 patches.)

It answers, for a user of real data too: is the effect even possible here, at this data size? On real
Ego4D the label needs the closed vocabulary, so this is a synthetic-world diagnostic.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from gazevlm import layout
from gazevlm.evaluate.grounding import COLOURS, KINDS, first_object, parse_events
from gazevlm.params import Params
from gazevlm.params import load as load_params

N_CLASSES = len(COLOURS) * len(KINDS)


@dataclass
class Split:
    frames: torch.Tensor  # (N, T, 3, H, W) uint8
    target: torch.Tensor  # (N, T, P) float32 patch gaze distribution
    valid: torch.Tensor  # (N, T) bool
    label: torch.Tensor  # (N,) long: first object of the reference, -1 when the text names none
    uid: list[str]
    verb: list[str] = field(default_factory=list)  # the reference's first verb ("" when none): where gaze helps
    features: torch.Tensor | None = None  # (N, T, P, D) float32: a frozen encoder's patch tokens, if encoded

    def inputs(self, idx: torch.Tensor | slice) -> torch.Tensor:
        """The classifier's input for some windows: the encoder's tokens, else pixels in [0, 1]."""
        if self.features is not None:
            return self.features[idx]
        return self.frames[idx].float() / 255.0


def label_of(text: str) -> int:
    obj = first_object(text)
    return -1 if obj is None else COLOURS.index(obj[0]) * len(KINDS) + KINDS.index(obj[1])


def load_split(task: str, split: str, root: str | Path = layout.SHARDS_DIR) -> Split:
    """Every sample of one (task, split) decoded into memory (the tiny geometry: a few hundred MB)."""
    from gazevlm import shards

    frames, target, valid, label, uid, verb = [], [], [], [], [], []
    for s in shards.iter_samples((task, split), with_gaze=True, root=root):
        frames.append(torch.from_numpy(s["frames"]).permute(0, 3, 1, 2))
        target.append(torch.from_numpy(s["target"]).flatten(1).float())
        valid.append(torch.from_numpy(s["valid"]).bool())
        label.append(label_of(s["text"]))
        uid.append(str(s["meta"].get("uid", "")))
        events = parse_events(s["text"])
        verb.append(events[0].verb if events else "")
    return Split(torch.stack(frames), torch.stack(target), torch.stack(valid), torch.tensor(label), uid, verb)


@torch.no_grad()
def encode(split: Split, params: Params, chunk: int = 64) -> Split:
    """split with `features`: the frozen vision encoder the tiny runs read (params model.vision_weights),
    applied to every frame exactly as the features stage applies it (the model's own encode_vision)."""
    from gazevlm.features import build_encoder_model

    weights = params.model.vision_weights
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no pretrained encoder (run the pretrain stage, or use --encoders scratch)")
    model = build_encoder_model(params)
    feats = [
        model.encode_vision(split.frames[i : i + chunk].float() / 255.0).float()
        for i in range(0, len(split.label), chunk)
    ]
    features = torch.cat(feats)
    if features.shape[2] != split.target.shape[-1]:
        raise ValueError(
            f"{weights}: the encoder gives {features.shape[2]} patches per frame, the gaze targets "
            f"{split.target.shape[-1]} (shards of another geometry?)"
        )
    return replace(split, features=features)


class CeilingNet(nn.Module):
    """frames -> class logits (B, N_CLASSES) and block attention (B, T, P). frames are pixels
    (B, T, 3, H, W) in [0, 1], or a frozen encoder's tokens (B, T, P, in_features) when in_features is set."""

    def __init__(
        self,
        image_size: int,
        patch: int,
        n_frames: int,
        dim: int = 64,
        heads: int = 4,
        in_features: int | None = None,
        free_path: bool = False,
        patch_layer: bool = True,
    ):
        super().__init__()
        from gazevlm.models.gaze_block import GazeBlock

        grid = image_size // patch
        # the encoder's tokens already know where they are; only a scratch embedding needs positions
        self.embed = nn.Conv2d(3, dim, patch, patch) if in_features is None else nn.Linear(in_features, dim)
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        # patch_layer False: the block reads the tokens through the linear map only, as the VLMs' block reads
        # their frozen encoder's (the gaze loss can then move where the query looks, not the features)
        self.spatial = (
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
            if patch_layer
            else nn.Identity()
        )
        self.norm = nn.LayerNorm(dim)
        self.block = GazeBlock(dim, layers=2, heads=heads, query="global", output="pooled_lm", ff_mult=0)
        # free_path: a second pooling of each frame's patches with its own query and no gaze loss, added to the
        # block's token, so the frames also reach the head around the block (as the VLM's Perceiver reads
        # every patch token beside the block's one); without it the block's view is the only way in
        self.free = nn.MultiheadAttention(dim, heads, batch_first=True) if free_path else None
        self.free_query = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if free_path else None
        self.frame_pos = nn.Parameter(torch.randn(n_frames, dim) * 0.02)
        self.temporal = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = frames.shape[:2]
        if isinstance(self.embed, nn.Linear):
            x = self.embed(frames.flatten(0, 1))
        else:
            x = self.embed(frames.flatten(0, 1) - 0.5).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.spatial(x)).view(b, t, x.shape[1], x.shape[2])
        out = self.block(x)
        tokens = out.tokens
        if self.free is not None:
            flat = x.flatten(0, 1)
            pooled, _ = self.free(self.free_query.expand(flat.shape[0], -1, -1), flat, flat, need_weights=False)
            tokens = tokens + pooled.view(b, t, -1)
        h = self.temporal(tokens + self.frame_pos[:t])
        return self.head(h[:, -1]), out.attention


@dataclass(frozen=True)
class CeilingResult:
    task: str
    encoder: str
    lam: float
    seed: int
    steps: int
    train_windows: int
    test_windows: int
    test_videos: int
    object_accuracy: float
    last_frame_top3_overlap: float
    seconds: float
    # object accuracy and windows by the reference's first verb: a pick's object is not in the hand yet
    by_first_verb: dict[str, dict[str, float]] = field(default_factory=dict)
    hits: list[int] = field(default_factory=list)  # per scored held-out window (reference names an object)
    chance: float = float("nan")  # always naming the most frequent train first object, on the same windows
    # always naming the held-out split's own most frequent first object: no constant answer does better
    best_constant: float = float("nan")
    # the head's way to the frames: "block" alone, "block+patches" (free_path), or "block-no-patch-layer"
    # (no trainable layer over the patches before the block)
    reads: str = "block"


def chance_level(train: Split, test: Split) -> tuple[float, float]:
    """Held-out object accuracy of always answering the most frequent first object of the train split,
    and of the held-out split itself (an oracle constant: the strictest prior-only level)."""
    known = train.label[train.label >= 0]
    scored = test.label[test.label >= 0]
    if not len(known) or not len(scored):
        return float("nan"), float("nan")
    best = float(torch.bincount(scored).max()) / len(scored)
    return float((scored == torch.mode(known).values).float().mean()), best


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
    free_path: bool = False,
    patch_layer: bool = True,
) -> CeilingResult:
    """Train the classifier once (lambda, seed) and score the held-out split."""
    from gazevlm.losses import gaze_kl

    t0 = time.perf_counter()
    keep = train.label >= 0
    idx_all = torch.nonzero(keep).flatten()
    torch.manual_seed(seed)
    grid = math.isqrt(train.target.shape[-1])  # the gaze targets' patch grid fixes the patch size
    in_features = None if train.features is None else train.features.shape[-1]
    net = CeilingNet(
        train.frames.shape[-1],
        train.frames.shape[-1] // grid,
        train.frames.shape[1],
        in_features=in_features,
        free_path=free_path,
        patch_layer=patch_layer,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = idx_all[torch.randint(len(idx_all), (batch_size,), generator=gen)]
        logits, attention = net(train.inputs(idx))
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
            logits, attention = net(test.inputs(slice(i, i + 128)))
            preds.append(logits.argmax(-1))
            atts.append(attention)
    pred, attention = torch.cat(preds), torch.cat(atts)
    hit = pred == test.label
    acc = float(hit[test.label >= 0].float().mean())
    by_verb = {}
    for v in sorted(set(test.verb)):
        rows = torch.tensor([x == v for x in test.verb]) & (test.label >= 0)
        if rows.any():
            by_verb[v or "none"] = {
                "windows": int(rows.sum()),
                "object_accuracy": round(float(hit[rows].float().mean()), 4),
            }
    return CeilingResult(
        task,
        "scratch" if train.features is None else "pretrained",
        lam,
        seed,
        steps,
        int(keep.sum()),
        len(test.label),
        len(set(test.uid)),
        acc,
        _top3_overlap(attention, test.target, test.valid),
        round(time.perf_counter() - t0, 1),
        by_verb,
        hit[test.label >= 0].int().tolist(),
        *chance_level(train, test),
        "block+patches" if free_path else "block" if patch_layer else "block-no-patch-layer",
    )


def measure(
    task: str,
    *,
    lambdas: Sequence[float] = (0.0, 10.0),
    seeds: Sequence[int] = (0, 1, 2),
    steps: Sequence[int] = (500,),
    reads: Sequence[str] = ("block",),
    root: str | Path = layout.SHARDS_DIR,
    threads: int = 1,
    held_out: str = "val",
    params: Params | None = None,
) -> tuple[list[CeilingResult], list[str]]:
    """Every (steps, reads, lambda, seed) on splits loaded (and encoded) once; scored on the validation split
    by default (a diagnostic never looks at test). With params, the classifier reads their frozen pretrained
    encoder instead of learning an embedding. Also returns the video of each scored held-out window."""
    torch.set_num_threads(threads)
    train, test = load_split(task, "train", root), load_split(task, held_out, root)
    if params is not None:
        train, test = encode(train, params), encode(test, params)
    results = [
        train_one(
            train,
            test,
            task=task,
            lam=lam,
            seed=seed,
            steps=n,
            free_path=how == "block+patches",
            patch_layer=how != "block-no-patch-layer",
        )
        for n in steps
        for how in reads
        for lam in lambdas
        for seed in seeds
    ]
    return results, [u for u, label in zip(test.uid, test.label.tolist(), strict=True) if label >= 0]


def _record(result: CeilingResult) -> dict:
    """A result as JSON: its per-window hits as one string of 0s and 1s (hundreds of windows per run)."""
    return {**asdict(result), "hits": "".join(str(h) for h in result.hits)}


def summarise(results: Sequence[CeilingResult], uids: Mapping[str, Sequence[str]]) -> dict[str, list[dict]]:
    """Per (task, encoder, steps, lambda) the seeds' object accuracy; per lambda > 0 its gain over
    lambda 0 on the same windows (seed mean per window), with a video-level interval and paired p.
    uids: per task, the video of each scored held-out window, in the results' `hits` order."""
    from gazevlm.evaluate.stats import paired_test, seed_mean

    groups: dict[tuple, list[CeilingResult]] = {}
    for r in results:
        groups.setdefault((r.task, r.encoder, r.reads, r.steps, r.lam), []).append(r)
    runs, gains = [], []
    for (task, encoder, reads, steps, lam), rs in sorted(groups.items()):
        accs = [r.object_accuracy for r in rs]
        picks = [r.by_first_verb.get("pick", {}).get("object_accuracy", float("nan")) for r in rs]
        runs.append(
            {
                "task": task,
                "encoder": encoder,
                "reads": reads,
                "steps": steps,
                "lam": lam,
                "seeds": [r.seed for r in rs],
                "object_accuracy": sum(accs) / len(accs),
                "min": min(accs),
                "max": max(accs),
                "pick_object_accuracy": sum(picks) / len(picks),
                "chance": rs[0].chance,
                "best_constant": rs[0].best_constant,
                "last_frame_top3_overlap": sum(r.last_frame_top3_overlap for r in rs) / len(rs),
            }
        )
        base = groups.get((task, encoder, reads, steps, 0.0))
        if lam and base:
            common = sorted({r.seed for r in rs} & {r.seed for r in base})
            if common:
                hits = {r.seed: r.hits for r in rs}
                base_hits = {r.seed: r.hits for r in base}
                cmp = paired_test(
                    seed_mean([hits[s] for s in common]), seed_mean([base_hits[s] for s in common]), list(uids[task])
                )
                gains.append(
                    {
                        "task": task,
                        "encoder": encoder,
                        "reads": reads,
                        "steps": steps,
                        "lam": lam,
                        "seeds": common,
                        **asdict(cmp),
                    }
                )
    return {"runs": runs, "gains": gains}


def to_markdown(summary: dict[str, list[dict]], held_out: str) -> str:
    """The summary as the report's tables (no timings: the same runs give the same bytes)."""
    from gazevlm.evaluate.tables import fmt_gain

    lines = [
        f"World ceiling (python -m gazevlm.ceiling): object accuracy of a small classifier on the {held_out} split, "
        "mean [min, max] over seeds; `pick`: windows whose reference starts with a pick (its object is not in "
        "the hand yet); chance: always naming the most frequent first object of the train split; best constant: "
        "of the held-out split itself (an oracle; no constant answer does better). Gains: lambda vs 0 on the "
        "same windows (seed mean per window), 95% bootstrap CI over videos, p from sign flips of per-video "
        "differences.",
        "",
        "| task | encoder | reads | steps | lambda | seeds | object acc. | pick windows | chance | best constant "
        "| last-frame top-3 overlap with gaze |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        lines.append(
            f"| {r['task']} | {r['encoder']} | {r['reads']} | {r['steps']} | {r['lam']:g} | {len(r['seeds'])} | "
            f"{r['object_accuracy']:.3f} [{r['min']:.3f}, {r['max']:.3f}] | {r['pick_object_accuracy']:.3f} | "
            f"{r['chance']:.3f} | {r['best_constant']:.3f} | {r['last_frame_top3_overlap']:.2f} |"
        )
    lines += [
        "",
        "| task | encoder | reads | steps | lambda vs 0 | object acc. gain | videos / seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in summary["gains"]:
        lines.append(
            f"| {g['task']} | {g['encoder']} | {g['reads']} | {g['steps']} | {g['lam']:g} | {fmt_gain(g)} | "
            f"{g['n_videos']} / {len(g['seeds'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gazevlm.ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["future"], choices=layout.TASKS)
    ap.add_argument("--steps", type=int, nargs="+", default=[500])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 10.0])
    ap.add_argument("--shards", default=str(layout.SHARDS_DIR))
    ap.add_argument("--held-out", default="val", choices=("val", "test"), help="split scored (default val)")
    ap.add_argument(
        "--encoders",
        nargs="+",
        default=["scratch"],
        choices=("scratch", "pretrained"),
        help="scratch: learn the patch embedding; pretrained: the frozen encoder of --params' model.vision_weights",
    )
    ap.add_argument("--params", default="params.yaml", help="read for --encoders pretrained")
    ap.add_argument(
        "--reads",
        nargs="+",
        default=["block"],
        choices=("block", "block+patches", "block-no-patch-layer"),
        help="block: the head sees the frames only through the gaze block; block+patches: also through a free "
        "pooling; block-no-patch-layer: through the block, with no trainable layer over the patches before it",
    )
    ap.add_argument("--out", default=None, help="write <out>.json (every run, per-window hits) and <out>.md")
    args = ap.parse_args(argv)
    results: list[CeilingResult] = []
    uids: dict[str, list[str]] = {}
    for task in args.tasks:
        for encoder in args.encoders:
            got, uids[task] = measure(
                task,
                lambdas=args.lambdas,
                seeds=args.seeds,
                steps=args.steps,
                reads=args.reads,
                root=args.shards,
                held_out=args.held_out,
                params=load_params(args.params) if encoder == "pretrained" else None,
            )
            for r in got:
                print(
                    f"{r.task} {r.encoder} reads {r.reads} {r.steps} steps lambda {r.lam:g} seed {r.seed}: "
                    f"object accuracy {r.object_accuracy:.3f}, last-frame top-3 overlap "
                    f"{r.last_frame_top3_overlap:.2f} ({r.train_windows} train / {r.test_windows} held-out "
                    f"windows, {r.test_videos} held-out videos, {r.seconds:.0f} s)",
                    flush=True,
                )
            results += got
    summary = summarise(results, uids)
    if args.out:
        from gazevlm import atomic

        command = "python -m gazevlm.ceiling " + " ".join(argv if argv is not None else sys.argv[1:])
        record = {"command": command, "held_out": args.held_out, **summary, "results": [_record(r) for r in results]}
        atomic.write_json(f"{args.out}.json", atomic.json_safe(record))
        atomic.write_text(f"{args.out}.md", to_markdown(summary, args.held_out))
    print(to_markdown(summary, args.held_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
