"""Gaze as a model input: the paper's baselines of Tables 13 and 15, and nothing else.

The method under study never shows gaze to the model (it is a training loss only). Two baselines do,
and only in the runs whose switches say so (params.RunParams.gaze_text / gaze_overlay):

- gaze_text (Table 13): each observed frame's gaze point becomes text in the prompt
  ("gaze: (0.42, 0.61); none; ...", gazevlm.models.text). The point is the peak of the frame's stored
  gaze heatmap (the shards' heatmap.npy: the same aggregated, cropped heatmap the loss's targets are
  pooled from), as (x, y) in [0, 1] of the cropped frame, x to the right, y down, at the heatmap's
  resolution (1 / heatmaps.heatmap_size); a frame without valid gaze is `none`.
- gaze_overlay (Table 15): each observed frame with its gaze heatmap painted over it in red.

Both are made from the shards' gaze entries at training time (gazevlm.train.data) and at test time
(evaluate.predict.gaze_input_batches), the same way, so the model is tested on what it was trained on.
The model's forward and generate still take no gaze argument: the gaze arrives as tokens or pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gazevlm.params import RunParams

# The overlay: frame * (1 - a) + red * a with a = OVERLAY_ALPHA * heatmap / its peak, so the gaze peak
# is clearly red and the frame stays visible everywhere (a fixed colour, no colormap to depend on).
OVERLAY_ALPHA = 0.6
OVERLAY_RGB = (255.0, 0.0, 0.0)
OVERLAY_CHUNK = 32  # windows overlaid at once
# Batch keys that carry gaze; a test batch loses all of them before it reaches a model.
GAZE_KEYS = ("gaze_target", "gaze_valid", "gaze_heatmap")


@dataclass(frozen=True)
class GazeInputs:
    """Which gaze inputs a run takes (both off for every run but the gaze-input baselines)."""

    text: bool = False
    overlay: bool = False

    @classmethod
    def of_run(cls, run: RunParams) -> GazeInputs:
        return cls(text=run.gaze_text, overlay=run.gaze_overlay)

    @property
    def any(self) -> bool:
        return self.text or self.overlay


NONE = GazeInputs()


def heatmap_points(heatmap: torch.Tensor, valid: torch.Tensor) -> list[list[tuple[float, float] | None]]:
    """The gaze point of each frame: the centre of its heatmap's peak cell, (x, y) in [0, 1].

    heatmap (B, T, S, S) (rows = y), valid (B, T) bool -> B lists of T points; None where the frame has
    no valid gaze (or an empty heatmap). Ties go to the first peak in row-major order (torch.argmax)."""
    if heatmap.dim() != 4 or heatmap.shape[-1] != heatmap.shape[-2] or valid.shape != heatmap.shape[:2]:
        raise ValueError(
            f"heatmap must be (B, T, S, S) with valid (B, T), got {tuple(heatmap.shape)} and {tuple(valid.shape)}"
        )
    size = heatmap.shape[-1]
    flat = heatmap.float().flatten(2)
    peak = flat.argmax(dim=2)
    usable = valid.bool() & (flat.amax(dim=2) > 0)
    xs = ((peak % size).double() + 0.5) / size
    ys = ((peak // size).double() + 0.5) / size
    return [
        [(float(xs[b, t]), float(ys[b, t])) if usable[b, t] else None for t in range(heatmap.shape[1])]
        for b in range(heatmap.shape[0])
    ]


def overlay_frames(frames: torch.Tensor, heatmap: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Frames with their gaze heatmap painted over them: uint8 (B, T, 3, H, W) -> uint8, same shape.

    heatmap (B, T, S, S) is the cropped frame's heatmap, resized bilinearly to H x W; frames without valid
    gaze are returned unchanged. Works on uint8 so that every reader (in-memory or streamed, train or
    test) produces the same pixels."""
    if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be uint8 (B, T, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    if heatmap.shape[:2] != frames.shape[:2] or valid.shape != frames.shape[:2]:
        raise ValueError(
            f"heatmap {tuple(heatmap.shape)} / valid {tuple(valid.shape)} do not match frames {tuple(frames.shape)}"
        )
    out = torch.empty_like(frames)
    # a few windows at a time: a whole split in float (the in-memory reader's ~1200 windows) would need GBs
    for start in range(0, frames.shape[0], OVERLAY_CHUNK):
        part = slice(start, start + OVERLAY_CHUNK)
        out[part] = _overlay(frames[part], heatmap[part], valid[part])
    return out


def _overlay(frames: torch.Tensor, heatmap: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    b, t, _, h, w = frames.shape
    heat = (
        F.interpolate(
            heatmap.float().reshape(b * t, 1, *heatmap.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False
        )
        .reshape(b, t, 1, h, w)
        .clamp_min(0)
    )
    peak = heat.amax(dim=(2, 3, 4), keepdim=True)
    alpha = torch.where(peak > 0, heat / peak.clamp_min(1e-12), torch.zeros_like(heat)) * OVERLAY_ALPHA
    alpha = alpha * valid.bool().reshape(b, t, 1, 1, 1)
    colour = torch.tensor(OVERLAY_RGB).reshape(1, 1, 3, 1, 1)
    out = frames.float() * (1 - alpha) + colour * alpha
    return out.round().clamp(0, 255).to(torch.uint8)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels decoded from uint8 (value / 255) back to the exact uint8 values."""
    return (pixels * 255.0).round().clamp(0, 255).to(torch.uint8)


def model_inputs(batch: Mapping[str, Any], inputs: GazeInputs, *, keep_loss_targets: bool) -> dict[str, Any]:
    """A batch read with its gaze heatmap (gaze_heatmap (B, T, S, S), gaze_valid (B, T)) turned into what a
    gaze-input run's model takes: overlaid frames (`pixels` float or `frames_u8`) and/or `gaze_points`.

    The heatmap is dropped; with keep_loss_targets=False (test batches) every gaze array is dropped, so
    only the overlaid pixels and the prompt's points leave this function."""
    if not inputs.any:
        raise ValueError("model_inputs: this run takes no gaze as input (its batches are read without gaze)")
    missing = [k for k in ("gaze_heatmap", "gaze_valid") if k not in batch]
    if missing:
        raise KeyError(f"a gaze-input run's batch needs {missing} (read the shards with their heatmaps)")
    heatmap, valid = batch["gaze_heatmap"], batch["gaze_valid"]
    out = {k: v for k, v in batch.items() if k != "gaze_heatmap" and (keep_loss_targets or k not in GAZE_KEYS)}
    if inputs.overlay:
        if "frames_u8" in batch:
            out["frames_u8"] = overlay_frames(batch["frames_u8"], heatmap, valid)
        else:
            out["pixels"] = overlay_frames(to_uint8(batch["pixels"]), heatmap, valid).float().div_(255.0)
    if inputs.text:
        out["gaze_points"] = heatmap_points(heatmap, valid)
    return out
