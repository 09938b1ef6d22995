"""InternVL and LLaVA-NeXT through their transformers classes, with the gaze block before the projector.

GazeProjectorVLM wraps InternVLForConditionalGeneration or LlavaNextForConditionalGeneration and uses
their own parts: the vision tower (the same feature layer as the model's get_image_features), the
multi-modal projector (InternVL: after its 2 x 2 pixel shuffle; LLaVA-NeXT: after an average pool of the
patch grid, as LLaVA-NeXT-Video does for frames), the language model and head. A window's frames go
through tower -> gaze block -> projector one by one, and their tokens (frame after frame, plus the
block's pooled token per frame when it has one) replace the text's single <image> token in the input
embeddings. The model class then runs on `inputs_embeds`, so the LLM keeps whatever attention
implementation it was loaded with (SDPA, flash): the regularised attention is the gaze block's own.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .probe import LMTextProbe

KINDS = ("internvl", "llava_next")


class GazeProjectorVLM(nn.Module):
    def __init__(self, vlm: nn.Module, kind: str, media_token_id: int, eoc_token_id: int, pool: int = 1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"projector backbone: unknown kind {kind!r} (have {KINDS})")
        cfg = vlm.config
        layer = cfg.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"{kind}: vision_feature_layer {layer!r}: only a single layer is supported")
        if cfg.vision_feature_select_strategy != "default":
            raise ValueError(f"{kind}: vision_feature_select_strategy {cfg.vision_feature_select_strategy!r}: "
                             f"the gaze block needs patch tokens without CLS ('default')")
        if pool < 1:
            raise ValueError(f"{kind}: pool must be >= 1, got {pool}")
        self.vlm, self.kind, self.pool = vlm, kind, pool
        self.feature_layer = layer
        self.media_token_id, self.eoc_token_id = media_token_id, eoc_token_id
        self.gaze_block: nn.Module | None = None
        self.gaze_attention: torch.Tensor | None = None
        self.last_splice: tuple | None = None  # (media positions, media tokens, mask) for LMTextProbe

    # -- parts of the transformers model ---------------------------------------------------------------
    @property
    def vision_encoder(self) -> nn.Module:
        return self.vlm.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self.vlm.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.vlm.model.language_model

    @property
    def vision_dim(self) -> int:
        return self.vlm.config.vision_config.hidden_size

    def vision_trainable(self) -> bool:
        return any(p.requires_grad for p in self.vision_encoder.parameters())

    # -- vision ------------------------------------------------------------------------------------------
    def encode_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (N, 3, H, W) -> the tower's patch tokens at the model's feature layer (N, P, D)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vision_trainable()):
            if self.feature_layer == -1:
                feats = self.vision_encoder(pixel_values=pixels).last_hidden_state
            else:
                feats = self.vision_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[
                    self.feature_layer]
        return feats[:, 1:]

    def _project_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """(N, P, D) patch tokens of a square grid -> (N, K, H_lm) LM tokens."""
        n, p, d = grid.shape
        side = int(round(p ** 0.5))
        if side * side != p:
            raise ValueError(f"{self.kind}: {p} patch tokens do not form a square grid")
        x = grid.reshape(n, side, side, d)
        if self.kind == "internvl":
            x = self.vlm.model.pixel_shuffle(x, scale_factor=self.vlm.config.downsample_ratio)
        elif self.pool > 1:
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), self.pool).permute(0, 2, 3, 1)
        return self.projector(x.reshape(n, -1, x.shape[-1]))

    def token_patches(self, n_patches: int) -> torch.Tensor:
        """(K, r) long: the r patches each of a frame's K grid tokens is made from (row-major indices)."""
        side = int(round(n_patches ** 0.5))
        index = torch.arange(n_patches, dtype=torch.float64).reshape(1, side, side, 1)
        if self.kind == "internvl":  # a pure permutation of the grid: follow the patch indices through it
            moved = self.vlm.model.pixel_shuffle(index, scale_factor=self.vlm.config.downsample_ratio)
            return moved.reshape(-1, moved.shape[-1]).round().long()
        if self.pool > 1:
            blocks = F.unfold(index.permute(0, 3, 1, 2), kernel_size=self.pool, stride=self.pool)
            return blocks[0].t().round().long()
        return torch.arange(n_patches).unsqueeze(1)

    def _project_token(self, token: torch.Tensor) -> torch.Tensor:
        """(N, D) one pooled token per frame -> (N, 1, H_lm). InternVL's projector reads 2 x 2 patches
        stacked on channels; the pooled token stands for such a block filled with itself."""
        if self.kind == "internvl":
            reps = round(1 / self.vlm.config.downsample_ratio) ** 2
            token = token.repeat(1, reps)
        return self.projector(token[:, None])

    def media_embeddings(self, vision_x: torch.Tensor) -> torch.Tensor:
        """vision_x pixels (B, 1, T, 3, H, W) or features (B, 1, T, P, D) -> (B, T * K, H_lm) LM tokens."""
        if vision_x.ndim == 6:
            b, m, t = vision_x.shape[:3]
            feats = self.encode_patches(vision_x.flatten(0, 2))
        elif vision_x.ndim == 5:
            b, m, t = vision_x.shape[:3]
            feats = vision_x.flatten(0, 2)
        else:
            raise ValueError(f"vision_x must be pixels (b, 1, F, c, h, w) or features (b, 1, F, P, D), "
                             f"got shape {tuple(vision_x.shape)}")
        if m != 1:
            raise ValueError(f"{self.kind}: one media item (the window) per sample, got {m}")
        p, d = feats.shape[1:]
        feats = feats.reshape(b, t, p, d)
        pooled = None
        if self.gaze_block is not None:
            out = self.gaze_block(feats)
            self.gaze_attention = out.attention[:, None]  # (B, 1, T, P), computed once for the loss
            grid = out.features[:, :, :p]
            # "pooled" appends the token to the frame's patches, "pooled_lm" returns it apart: both reach
            # the LM as one extra token after the frame's tokens (there is no Perceiver in between)
            pooled = out.tokens if out.tokens is not None else (
                out.features[:, :, p] if out.features.shape[2] > p else None)
        else:
            grid = feats
        tokens = self._project_grid(grid.reshape(b * t, p, d))
        if pooled is not None:
            tokens = torch.cat([tokens, self._project_token(pooled.reshape(b * t, d))], dim=1)
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])

    # -- text -----------------------------------------------------------------------------------------------
    def _media_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_media = input_ids == self.media_token_id
        counts = is_media.sum(dim=1)
        if (counts != 1).any():
            raise ValueError(f"{self.kind}: every sequence needs exactly one <image> token (the window), "
                             f"got counts {counts.tolist()}")
        return is_media.int().argmax(dim=1)

    def _splice(self, media: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input embeddings and mask with each row's <image> token replaced by its window's N media tokens."""
        where = self._media_positions(input_ids)
        text = self.vlm.get_input_embeddings()(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        n = media.shape[1]
        rows, masks = [], []
        for i, m in enumerate(where.tolist()):
            rows.append(torch.cat([text[i, :m], media[i].to(text.dtype), text[i, m + 1:]]))
            masks.append(torch.cat([attention_mask[i, :m], attention_mask.new_ones(n), attention_mask[i, m + 1:]]))
        return torch.stack(rows), torch.stack(masks), where

    def forward(self, vision_x: torch.Tensor, lang_x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SimpleNamespace:
        """Logits on the text positions only (B, L, V), as if the window were the one <image> token; the
        loss is the LM's next-token cross-entropy on the labelled text tokens."""
        media = self.media_embeddings(vision_x)
        embeds, mask, where = self._splice(media, lang_x, attention_mask)
        n = media.shape[1]
        self.last_splice = (where, n, mask)
        try:
            logits = self.vlm(inputs_embeds=embeds, attention_mask=mask).logits
        finally:
            self.last_splice = None
        # the text token after <image> is predicted from the last media token's position
        text_logits = torch.stack([torch.cat([logits[i, :m], logits[i, m + n - 1:]])
                                   for i, m in enumerate(where.tolist())])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(text_logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return SimpleNamespace(loss=loss, logits=text_logits)

    def generate_continuation(self, vision_x: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              max_new_tokens: int, num_beams: int, pad_token_id: int) -> torch.LongTensor:
        embeds, mask, _ = self._splice(self.media_embeddings(vision_x), input_ids, attention_mask)
        # from inputs_embeds alone, generate returns the new tokens only; never <image> (the window is the
        # one media item: a continuation with another could not be spliced, _media_positions refuses it)
        return self.vlm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 num_beams=num_beams, do_sample=False, pad_token_id=pad_token_id,
                                 eos_token_id=self.eoc_token_id, suppress_tokens=[self.media_token_id])

    # -- training / sharding ------------------------------------------------------------------------------
    def attention_probe(self, n_frames: int, n_patches: int, attention_mask: torch.Tensor,
                        tokens_at_end: bool) -> LMTextProbe:
        return LMTextProbe(self, n_frames, n_patches, self.token_patches(n_patches))

    def fsdp_units(self) -> list[nn.Module]:
        units = [self.vision_encoder, self.projector]
        if self.gaze_block is not None:
            units.append(self.gaze_block)
        return units + list(self.language_model.layers)

    def set_trainable(self, train_lm: bool, freeze_vision: bool) -> None:
        """Projector and gaze block train; the LM fully (tiny) or only its input embeddings (the new
        <image>/<|endofchunk|> rows)."""
        self.requires_grad_(False)
        self.projector.requires_grad_(True)
        if train_lm:
            self.language_model.requires_grad_(True)
            self.vlm.lm_head.requires_grad_(True)
        else:
            self.vlm.get_input_embeddings().requires_grad_(True)
        if self.gaze_block is not None:
            self.gaze_block.requires_grad_(True)
        if not freeze_vision:
            self.vision_encoder.requires_grad_(True)


def tiny_vlm_config(kind: str, vision: dict[str, Any], text_config: Any, image_size: int, patch_size: int,
                    media_token_id: int) -> Any:
    """The transformers config of a small InternVL / LLaVA-NeXT (random weights, built offline)."""
    common = dict(hidden_size=vision["width"], num_hidden_layers=vision["layers"],
                  num_attention_heads=vision["heads"], intermediate_size=int(vision["width"] * vision["mlp_ratio"]))
    if kind == "internvl":
        from transformers import InternVLConfig, InternVLVisionConfig

        vcfg = InternVLVisionConfig(image_size=[image_size, image_size], patch_size=[patch_size, patch_size],
                                    **common)
        return InternVLConfig(vision_config=vcfg, text_config=text_config, image_token_id=media_token_id,
                              image_seq_length=(image_size // patch_size) ** 2 // 4,
                              tie_word_embeddings=text_config.tie_word_embeddings)
    from transformers import CLIPVisionConfig, LlavaNextConfig

    vcfg = CLIPVisionConfig(image_size=image_size, patch_size=patch_size, **common)
    return LlavaNextConfig(vision_config=vcfg, text_config=text_config, image_token_index=media_token_id,
                           image_grid_pinpoints=[[image_size, image_size]],
                           image_seq_length=(image_size // patch_size) ** 2,
                           tie_word_embeddings=text_config.tie_word_embeddings)


def build_projector_vlm(kind: str, *, vision: dict[str, Any], text_config: Any | None, name_or_dir: str | None,
                        image_size: int, patch_size: int, vocab_size: int, special_ids: dict[str, int],
                        pool: int) -> GazeProjectorVLM:
    """A tiny model from configs (text_config given) or pretrained weights by hub id / local dir."""
    from transformers import AutoModelForImageTextToText

    if name_or_dir is None:
        vlm = AutoModelForImageTextToText.from_config(
            tiny_vlm_config(kind, vision, text_config, image_size, patch_size, special_ids["media_token_id"]))
    else:
        vlm = AutoModelForImageTextToText.from_pretrained(name_or_dir, dtype=torch.float32)
        want = {"internvl": "internvl", "llava_next": "llava_next"}[kind]
        if vlm.config.model_type != want:
            raise ValueError(f"{name_or_dir}: model type {vlm.config.model_type!r}, backbone {kind!r} needs {want!r}")
        vision_cfg = vlm.config.vision_config
        got = (_first(vision_cfg.image_size), _first(vision_cfg.patch_size))
        if got != (image_size, patch_size):
            raise ValueError(f"{name_or_dir}: vision tower has image/patch size {got}, the preset expects "
                             f"{(image_size, patch_size)} (gazevlm.geometry)")
        vlm.resize_token_embeddings(vocab_size)
    vlm.config.text_config.pad_token_id = special_ids["pad_token_id"]
    vlm.generation_config.pad_token_id = special_ids["pad_token_id"]
    return GazeProjectorVLM(vlm, kind, special_ids["media_token_id"], special_ids["eoc_token_id"], pool=pool)


def _first(value: Any) -> int:
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)
