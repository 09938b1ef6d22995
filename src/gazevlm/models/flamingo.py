"""The gated-cross-attention backbones: open_flamingo's Flamingo over a window of frames.

GazeFlamingo subclasses open_flamingo's Flamingo and overrides only `_encode_vision_x`: a window is one
media item of F frames (Flamingo's stock method allows F = 1 only); the frozen encoder's patch tokens
go through the gaze block (if any) and then the resampler: open_flamingo's PerceiverResampler with frame
embeddings (openflamingo; a single pooling layer for lavila) or, for the "modified OpenFlamingo",
nothing (FrameTokens) on the way to the gated cross-attention. Flamingo's own forward/generate do the
rest. It implements the backbone interface GazeVLM (vlm.py) drives.
"""
from __future__ import annotations

from typing import Any

import torch
from open_flamingo.src.flamingo import Flamingo
from open_flamingo.src.helpers import GatedCrossAttentionBlock
from torch import nn

from .probe import BackboneAttentionProbe

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

    # -- the backbone interface (vlm.py) ---------------------------------------------------------------
    def generate_continuation(self, vision_x: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              max_new_tokens: int, num_beams: int, pad_token_id: int) -> torch.LongTensor:
        try:
            # never <image>: the window is the one media item; a generated one would open a media chunk
            # that has no frames (the full forward attends to nothing there, the cached one to the window)
            out = self.generate(vision_x, input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                num_beams=num_beams, do_sample=False, pad_token_id=pad_token_id,
                                suppress_tokens=[self.media_token_id])
        finally:  # a failed generate must not leave media cached for the next forward
            self.uncache_media()
        return out[:, input_ids.shape[1]:]

    def attention_probe(self, n_frames: int, n_patches: int, attention_mask: torch.Tensor,
                        tokens_at_end: bool) -> BackboneAttentionProbe:
        return BackboneAttentionProbe(self, n_frames, n_patches, attention_mask, tokens_at_end=tokens_at_end)

    def fsdp_units(self) -> list[nn.Module]:
        units = [self.vision_encoder, self.perceiver]
        if self.gaze_block is not None:
            units.append(self.gaze_block)
        return units + list(self.lang_encoder._get_decoder_layers())

    def set_trainable(self, train_lm: bool, freeze_vision: bool) -> None:
        """Perceiver, cross-attention and gaze block train; the LM fully (tiny) or only its embeddings."""
        self.requires_grad_(False)
        self.perceiver.requires_grad_(True)
        lm = self.lang_encoder
        lm.gated_cross_attn_layers.requires_grad_(True)
        if train_lm:
            lm.requires_grad_(True)
        else:  # the new <image>/<|endofchunk|> rows must be learned (OpenFlamingo's recipe)
            lm.get_input_embeddings().requires_grad_(True)
        if self.gaze_block is not None:
            self.gaze_block.requires_grad_(True)
        if not freeze_vision:
            self.vision_encoder.requires_grad_(True)
