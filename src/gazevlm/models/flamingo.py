"""GazeVLM: open_flamingo's Flamingo over a window of frames, with the optional gaze block.

GazeFlamingo subclasses open_flamingo's Flamingo and overrides only `_encode_vision_x`: a window is one
media item of F frames (Flamingo's stock method allows F = 1 only); the frozen encoder's patch tokens
go through the gaze block (if any) and then the Perceiver (open_flamingo's PerceiverResampler with
frame embeddings) or, for the "modified OpenFlamingo", straight to the gated cross-attention.
Flamingo's own forward/generate do the rest. GazeVLM is the public module: pixels in [0, 1] in,
CLIP normalisation inside, and no gaze argument anywhere.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_flamingo.src.flamingo import Flamingo
from open_flamingo.src.helpers import GatedCrossAttentionBlock
from torch import nn

from .probe import BackboneAttentionProbe

BACKBONES = ("openflamingo", "openflamingo_noperceiver")


class FrameTokens(nn.Module):
    """Stands in for the Perceiver in the modified OpenFlamingo: all visual tokens of all frames go to
    cross-attention, each with a learned embedding of its frame so the LM can tell frames apart."""

    def __init__(self, dim: int, max_num_frames: int):
        super().__init__()
        self.frame_embs = nn.Parameter(torch.randn(max_num_frames, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, T_img, F, v, d) -> (b, T_img, F * v, d)"""
        b, m, f, v, d = x.shape
        if f > self.frame_embs.shape[0]:
            raise ValueError(f"{f} frames per window but the model was built for at most {self.frame_embs.shape[0]}")
        return (x + self.frame_embs[:f, None]).reshape(b, m, f * v, d)


class GazeFlamingo(Flamingo):
    """Flamingo whose media are windows of frames, with an optional gaze block before the resampler."""

    def __init__(self, vision_encoder: Any, lang_encoder: nn.Module, eoc_token_id: int, media_token_id: int,
                 vis_dim: int, *, resampler: nn.Module, cross_attn_every_n_layers: int = 1,
                 xattn: dict[str, int] | None = None):
        super().__init__(vision_encoder, lang_encoder, eoc_token_id, media_token_id, vis_dim,
                         cross_attn_every_n_layers=cross_attn_every_n_layers)
        self.perceiver = resampler
        if xattn is not None:  # smaller cross-attention than open_flamingo's default 8 x 64 (tiny preset)
            lm = self.lang_encoder
            lm.gated_cross_attn_layers = nn.ModuleList(
                GatedCrossAttentionBlock(dim=self.lang_dim, dim_visual=vis_dim, heads=xattn["heads"],
                                         dim_head=xattn["dim_head"]) if layer is not None else None
                for layer in lm.gated_cross_attn_layers)
            lm.init_flamingo_layers(gradient_checkpointing=False)
        self.gaze_block: nn.Module | None = None
        self.gaze_attention: torch.Tensor | None = None

    def vision_trainable(self) -> bool:
        return any(p.requires_grad for p in self.vision_encoder.parameters())

    def encode_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels (N, 3, H, W) -> the encoder's patch tokens (N, P, D), no CLS token."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vision_trainable()):
            return self.vision_encoder(pixels)[1]

    def _encode_vision_x(self, vision_x: torch.Tensor) -> None:
        """vision_x: normalised pixels (b, T_img, F, c, h, w) or cached patch features (b, T_img, F, P, D)."""
        if vision_x.ndim == 6:
            b, m, f = vision_x.shape[:3]
            feats = self.encode_patches(vision_x.flatten(0, 2))
            feats = feats.reshape(b, m, f, *feats.shape[1:])
        elif vision_x.ndim == 5:
            feats = vision_x
        else:
            raise ValueError(f"vision_x must be pixels (b, T_img, F, c, h, w) or features (b, T_img, F, P, D), "
                             f"got shape {tuple(vision_x.shape)}")
        b, m, f, p, d = feats.shape
        tokens = None
        if self.gaze_block is not None:
            out = self.gaze_block(feats.reshape(b * m, f, p, d))
            feats = out.features.reshape(b, m, f, out.features.shape[2], d)
            tokens = out.tokens
            # computed once; GazeVLM hands it to the loss
            self.gaze_attention = out.attention.reshape(b, m, f, p)
        vis_x = self.perceiver(feats)
        if tokens is not None:  # "pooled_lm": one token per frame after the Perceiver's latents
            vis_x = torch.cat([vis_x, tokens.reshape(b, m, f, d)], dim=2)
        for layer in self.lang_encoder._get_decoder_layers():
            layer.condition_vis_x(vis_x)


@dataclass
class GazeVLMOutput:
    loss: torch.Tensor | None           # token cross-entropy (None without labels)
    logits: torch.Tensor                # (B, L, vocab)
    attention: torch.Tensor | None      # (B, T, P) gaze block's last-layer attention; None without block
    perceiver_attention: torch.Tensor | None = None  # (B, T, P) backbone's own attention, on request


class GazeVLM(nn.Module):
    """The model every stage uses. Built by gazevlm.models.build_model."""

    def __init__(self, flamingo: GazeFlamingo, config: dict[str, Any], pad_token_id: int):
        super().__init__()
        self.flamingo = flamingo
        self.config = config
        self.pad_token_id = pad_token_id
        self.image_size = config["geometry"]["image_size"]
        patch = config["geometry"]["patch_size"]
        self.n_patches = (self.image_size // patch) ** 2
        self.register_buffer("pixel_mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)

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
        feats = self.flamingo.encode_patches(x.flatten(0, 1))
        return feats.reshape(*x.shape[:2], *feats.shape[1:])

    def forward(self, pixels: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, vision_features: torch.Tensor | None = None,
                return_perceiver_attention: bool = False) -> GazeVLMOutput:
        vision_x = self._vision_x(pixels, vision_features)
        n_frames = vision_x.shape[2]
        probe = (BackboneAttentionProbe(self.flamingo, n_frames, self.n_patches, attention_mask,
                                        tokens_at_end=self.config["block_output"] == "pooled_lm")
                 if return_perceiver_attention else nullcontext())
        self.flamingo.gaze_attention = None
        try:
            with probe:
                out = self.flamingo(vision_x, input_ids, attention_mask=attention_mask, labels=labels)
            attention = self.flamingo.gaze_attention
        finally:
            self.flamingo.gaze_attention = None
        if attention is not None:
            attention = attention[:, 0]  # the window's one media item
        return GazeVLMOutput(loss=out.loss, logits=out.logits, attention=attention,
                             perceiver_attention=probe.attention if return_perceiver_attention else None)

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: int, num_beams: int = 1,
                 vision_features: torch.Tensor | None = None) -> torch.LongTensor:
        """Greedy (or beam) continuation of the prompt; returns the new token ids only (B, <= max_new_tokens),
        padded with pad after <|endofchunk|>."""
        vision_x = self._vision_x(pixels, vision_features)
        try:
            out = self.flamingo.generate(vision_x, input_ids, attention_mask=attention_mask,
                                         max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                         pad_token_id=self.pad_token_id)
        finally:  # a failed generate must not leave media cached for the next forward
            self.flamingo.uncache_media()
            self.flamingo.gaze_attention = None
        return out[:, input_ids.shape[1]:]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def fsdp_units(self) -> list[nn.Module]:
        """Submodules to pass to fully_shard one by one before the root (each Flamingo layer holds its
        gated cross-attention and decoder layer); frozen and trainable parameters may share a unit."""
        f = self.flamingo
        units = [f.vision_encoder, f.perceiver]
        if f.gaze_block is not None:
            units.append(f.gaze_block)
        return units + list(f.lang_encoder._get_decoder_layers())
