"""Pretraining the tiny preset's vision encoder on the world itself, CLIP-style, before it is frozen.

The paper's frozen encoder is a pretrained CLIP; the tiny preset's counterpart is its small ViT
trained here by contrast between keyframes and their captions, on the TRAIN videos only (never val or
test) and never with gaze: a keyframe's embedding must pick its own caption out of the batch. The
image side pools the ViT's patch tokens with a learned attention query, so the patch tokens (what
the gaze block and the resampler read) are what learns to carry objects and actions; the text side is
a bag of word embeddings (the captions of the synthetic world come from a closed grammar). Both heads
are thrown away: only the ViT's weights are kept, in models/encoder/vision.safetensors, and loaded
by gazevlm.models for the tiny preset (real presets keep their public weights).

Captions describe what the wearer just did (the narration nearest the keyframe), so the encoder
learns what objects and recent actions look like, not where the wearer will look next.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gazevlm import atomic, layout, numerics
from gazevlm.params import Params

ENCODER_DIR = layout.MODELS_DIR / "encoder"
WEIGHTS_FILE = "vision.safetensors"
REPORT_FILE = layout.REPORTS_DIR / "pretrain.json"


@dataclass
class KeyframeSet:
    frames: torch.Tensor  # (N, 3, H, W) uint8, the model's resize + crop
    captions: list[str]
    uids: list[str]


def train_keyframes(
    task: str = "activity",
    shards_root: Path = layout.SHARDS_DIR,
    captions_path: Path = layout.ANNOTATE_DIR / "captions.parquet",
) -> KeyframeSet:
    """Every captioned keyframe of the train split (each once), from the heatmap stage's shards."""
    from gazevlm import shards

    table = layout.read_table(captions_path, layout.CAPTIONS, ["keyframe_id", "caption"])
    caption_of = dict(zip(table["keyframe_id"], table["caption"], strict=False))
    seen: dict[str, tuple[np.ndarray, str]] = {}
    for s in shards.iter_samples((task, "train"), with_gaze=False, root=shards_root):
        for kid, frame in zip(s["meta"]["keyframe_ids"], s["frames"], strict=False):
            text = caption_of.get(kid)
            if kid not in seen and isinstance(text, str) and text:
                seen[kid] = (frame, str(s["meta"]["uid"]))
    if not seen:
        raise ValueError(
            f"{shards_root / task}: no captioned train keyframe to pretrain on (captions from {captions_path})"
        )
    ids = sorted(seen)
    frames = torch.from_numpy(np.stack([seen[k][0] for k in ids])).permute(0, 3, 1, 2).contiguous()
    return KeyframeSet(frames, [caption_of[k] for k in ids], [seen[k][1] for k in ids])


class ContrastiveHeads(nn.Module):
    """Token-wise image-text similarity (FILIP-style): a caption matches a keyframe when each of its
    words finds a patch like it. score(I, T) = mean over T's words of max over I's patches of
    cos(patch, word). Each patch token must then carry what its part of the frame shows, the very
    tokens the gaze block and the resampler read; no image-level pooling can shortcut it."""

    def __init__(self, dim: int, vocab: int, embed: int = 64):
        super().__init__()
        self.patch = nn.Linear(dim, embed)
        self.words = nn.Embedding(vocab, embed)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def scores(self, tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, P, D), ids/mask (B, W) -> (B images, B texts) similarity."""
        patches = nn.functional.normalize(self.patch(tokens), dim=-1)  # (B, P, E)
        words = nn.functional.normalize(self.words(ids), dim=-1)  # (B, W, E)
        sim = torch.einsum("ipe,twe->itwp", patches, words).amax(-1)  # (B, B, W)
        m = mask.float()[None]
        return (sim * m).sum(-1) / m.sum(-1)


def _word_ids(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Content words of each caption as padded ids and a mask; words every caption shares carry no
    contrast and are left out."""
    rows = [sorted(set(c.replace(",", " ").split())) for c in captions]
    common = set.intersection(*map(set, rows)) if rows else set()
    vocab: dict[str, int] = {}
    rows = [
        [vocab.setdefault(w, len(vocab)) for w in r if w not in common] or [vocab.setdefault("<none>", len(vocab))]
        for r in rows
    ]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), True
    return ids, mask, len(vocab)


def contrastive_loss(logits: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same caption is a positive (duplicates are common:
    consecutive keyframes and other videos share captions); same (B, B) bool."""
    target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.t(), target))


def pretrain_encoder(
    encoder: nn.Module, data: KeyframeSet, normalise, *, steps: int, batch_size: int, lr: float, seed: int
) -> dict[str, Any]:
    """Train `encoder` (open_clip VisionTransformer with output_tokens) in place; returns the curve."""
    ids, mask, vocab = _word_ids(data.captions)
    heads = ContrastiveHeads(encoder.transformer.width, vocab)
    params = [p for p in encoder.parameters()] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    caption_code = torch.tensor(pd.factorize(pd.Series(data.captions))[0])
    encoder.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(ids), generator=gen)[:batch_size]
        tokens = encoder(normalise(data.frames[idx].float() / 255.0))[1]
        logits = heads.logit_scale.exp().clamp(max=100) * heads.scores(tokens, ids[idx], mask[idx])
        same = caption_code[idx][:, None] == caption_code[idx][None, :]
        loss = contrastive_loss(logits, same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    curve = [(i + 1, float(np.mean(losses[max(0, i - 9) : i + 1]))) for i in range(9, len(losses), 10)]
    return {
        "loss_first_20": float(np.mean(losses[:20])) if losses else None,
        "loss_last_20": float(np.mean(losses[-20:])) if losses else None,
        "steps": steps,
        "batch_size": batch_size,
        "keyframes": len(ids),
        "videos": len(set(data.uids)),
        "vocab": vocab,
        "curve": curve,
    }


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Stage `pretrain`: pretrain the tiny vision encoder; write models/encoder/ and reports/pretrain.json.

    With a real preset (or pretrain.enabled false) nothing is trained and models/encoder/ holds only
    info.json saying so; gazevlm.models then builds the encoder as before (public weights, or the
    tiny preset's random initialisation)."""
    from safetensors.torch import save_file

    from gazevlm.models import presets

    pp = params.pretrain
    root = Path(root)
    preset = presets.get_preset(params.model.preset, params.model.backbone)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "preset": preset.name,
        "backbone": params.model.backbone,
        "pretrained": bool(pp.enabled and preset.pretrainable_vision),
    }
    with layout.staged_dir(root / ENCODER_DIR) as out_dir:
        if report["pretrained"]:
            torch.manual_seed(pp.seed)
            visual = presets.build_vision_encoder(preset).visual
            data = train_keyframes(
                shards_root=root / layout.SHARDS_DIR, captions_path=root / layout.ANNOTATE_DIR / "captions.parquet"
            )
            mean = torch.tensor(preset.pixel_mean).view(1, 3, 1, 1)
            std = torch.tensor(preset.pixel_std).view(1, 3, 1, 1)
            # a fixed thread count, not every core: the gradients' sums are split by thread (numerics)
            threads = torch.get_num_threads()
            torch.set_num_threads(numerics.STAGE_THREADS)
            try:
                report.update(
                    pretrain_encoder(
                        visual,
                        data,
                        lambda x: (x - mean) / std,
                        steps=pp.steps,
                        batch_size=pp.batch_size,
                        lr=pp.lr,
                        seed=pp.seed,
                    )
                )
            finally:
                torch.set_num_threads(threads)
            save_file(
                {k: v.contiguous() for k, v in sorted(visual.state_dict().items())},
                str(out_dir / WEIGHTS_FILE),
                metadata={"preset": preset.name},
            )
            report["sha256"] = file_sha256(out_dir / WEIGHTS_FILE)
        else:
            report["reason"] = (
                "pretrain.enabled is false"
                if not pp.enabled
                else f"preset {preset.name!r} keeps its own encoder weights"
            )
        (out_dir / "info.json").write_text(
            json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2) + "\n"
        )
    # results only: the DVC metrics of two identical runs must not differ (the time is in the return value)
    atomic.write_json(root / REPORT_FILE, {k: v for k, v in report.items() if k != "curve"})
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def plot_curve(report: dict[str, Any]):
    """The contrastive loss over the pretraining steps (nothing to show when nothing was trained)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 2.6))
    curve = report.get("curve") or []
    if curve:
        sns.lineplot(x=[c[0] for c in curve], y=[c[1] for c in curve], ax=ax)
        ax.axhline(np.log(report.get("batch_size", 64)), ls=":", c="0.5", label="chance (log batch)")
        ax.legend(fontsize=7)
    ax.set(
        xlabel="step",
        ylabel="contrastive loss",
        title=f"encoder pretraining ({report.get('keyframes', 0)} train keyframes, {report.get('videos', 0)} videos)"
        if curve
        else report.get("reason", ""),
    )
    fig.tight_layout()
    return fig
