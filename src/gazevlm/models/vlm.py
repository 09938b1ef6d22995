"""GazeVLM: the one model class every stage uses, over any backbone.

    out = model(pixels, input_ids, attention_mask, labels)   # out.loss (CE), out.logits, out.attention
    ids = model.generate(pixels, input_ids, attention_mask, max_new_tokens)

Pixels in [0, 1] in, the preset's normalisation inside, and no gaze argument anywhere. The backbone
(GazeFlamingo for openflamingo / openflamingo_noperceiver / lavila, GazeProjectorVLM for internvl /
llava_next) holds the optional gaze block and implements:
    encode_patches(normalised pixels (N, 3, H, W)) -> patch tokens (N, P, D), no CLS token
    __call__(vision_x, input_ids, attention_mask=, labels=) -> .loss, .logits (B, L, V); sets .gaze_attention
    generate_continuation(vision_x, input_ids, attention_mask, max_new_tokens, num_beams, pad_token_id)
    attention_probe(n_frames, n_patches, attention_mask, tokens_at_end) -> context with .attention
    fsdp_units(), set_trainable(train_lm, freeze_vision)
vision_x is one media item per window: pixels (B, 1, T, 3, H, W) or cached features (B, 1, T, P, D).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class GazeVLMOutput:
    loss: torch.Tensor | None           # token cross-entropy (None without labels)
    logits: torch.Tensor                # (B, L, vocab)
    attention: torch.Tensor | None      # (B, T, P) gaze block's last-layer attention; None without block
    perceiver_attention: torch.Tensor | None = None  # (B, T, P) backbone's own attention, on request


class GazeVLM(nn.Module):
    """The model every stage uses. Built by gazevlm.models.build_model."""

    def __init__(self, backbone: nn.Module, config: dict[str, Any], pad_token_id: int):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.pad_token_id = pad_token_id
        self.image_size = config["geometry"]["image_size"]
        patch = config["geometry"]["patch_size"]
        self.n_patches = (self.image_size // patch) ** 2
        self.register_buffer("pixel_mean", torch.tensor(config["pixel_mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config["pixel_std"]).view(1, 3, 1, 1), persistent=False)

    @property
    def vision_encoder(self) -> nn.Module:
        """The backbone's vision tower (frozen by default; the training loop keeps it out of FSDP)."""
        return self.backbone.vision_encoder

    # -- inputs --------------------------------------------------------------------------------------
    def _check_pixels(self, pixels: torch.Tensor) -> None:
        s = self.image_size
        if pixels.ndim != 5 or tuple(pixels.shape[2:]) != (3, s, s):
            raise ValueError(f"pixels must be (B, T, 3, {s}, {s}) for preset {self.config['preset']!r}, "
                             f"got {tuple(pixels.shape)}")
        if not pixels.is_floating_point():
            raise TypeError(f"pixels must be a float tensor in [0, 1], got {pixels.dtype}")
        lo, hi = torch.aminmax(pixels)
        if lo < 0 or hi > 1:
            raise ValueError(f"pixels must be in [0, 1] (the model normalises them), got range [{lo:.3g}, {hi:.3g}]")

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        self._check_pixels(pixels)
        b, t = pixels.shape[:2]
        x = pixels.flatten(0, 1).to(self.pixel_mean.dtype)
        return ((x - self.pixel_mean) / self.pixel_std).reshape(b, t, *x.shape[1:])

    def _vision_x(self, pixels: torch.Tensor | None, vision_features: torch.Tensor | None) -> torch.Tensor:
        if (pixels is None) == (vision_features is None):
            raise ValueError("give exactly one of pixels and vision_features")
        if vision_features is not None:
            if vision_features.ndim != 4 or vision_features.shape[2] != self.n_patches:
                raise ValueError(f"vision_features must be (B, T, {self.n_patches}, D) from encode_vision, "
                                 f"got {tuple(vision_features.shape)}")
            x = vision_features
        else:
            x = self._normalise(pixels)
        if x.shape[1] > self.config["max_frames"]:
            raise ValueError(f"{x.shape[1]} frames per window but the model was built for at most "
                             f"{self.config['max_frames']} (presets: max_frames)")
        return x.unsqueeze(1)  # one media item (the window) of T frames

    # -- public API ----------------------------------------------------------------------------------
    def encode_vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """Frozen encoder's patch features (B, T, P, D) for pixels (B, T, 3, H, W) in [0, 1] (cacheable)."""
        x = self._normalise(pixels)
        feats = self.backbone.encode_patches(x.flatten(0, 1))
        return feats.reshape(*x.shape[:2], *feats.shape[1:])

    def forward(self, pixels: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                return_perceiver_attention: bool = False) -> GazeVLMOutput:
        vision_x = self._vision_x(pixels, vision_features)
        n_frames = vision_x.shape[2]
        probe = (self.backbone.attention_probe(n_frames, self.n_patches, attention_mask,
                                               tokens_at_end=self.config["block_output"] == "pooled_lm")
                 if return_perceiver_attention else nullcontext())
        self.backbone.gaze_attention = None
        try:
            with probe:
                out = self.backbone(vision_x, input_ids, attention_mask=attention_mask, labels=labels)
            attention = self.backbone.gaze_attention
        finally:
            self.backbone.gaze_attention = None
        if attention is not None:
            attention = attention[:, 0]  # the window's one media item
        return GazeVLMOutput(loss=out.loss, logits=out.logits, attention=attention,
                             perceiver_attention=probe.attention if return_perceiver_attention else None)

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: int, num_beams: int = 1,
                 vision_features: torch.Tensor | None = None) -> torch.LongTensor:
        """Greedy (or beam) continuation of the prompt; returns the new token ids only (B, <= max_new_tokens),
        padded with pad after <|endofchunk|>. It never contains <image> (the window is the one media item)."""
        vision_x = self._vision_x(pixels, vision_features)
        try:
            return self.backbone.generate_continuation(vision_x, input_ids, attention_mask, max_new_tokens,
                                                       num_beams, self.pad_token_id)
        finally:
            self.backbone.gaze_attention = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def fsdp_units(self) -> list[nn.Module]:
        """Submodules to pass to fully_shard one by one before the root (vision encoder, resampler or
        projector, gaze block, each LM layer); frozen and trainable parameters may share a unit."""
        return self.backbone.fsdp_units()
