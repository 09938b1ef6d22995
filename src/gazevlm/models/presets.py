"""Model presets: what the vision encoder, the language model and the Flamingo glue look like.

tiny   fully offline: a small open_clip VisionTransformer and a small OPT, both from configs with
       random weights (seeded by the caller); trains on a CPU in the default pipeline.
paper  the authors' OpenFlamingo: CLIP ViT-L/14 (OpenAI weights, frozen) + OPT-1.3B, cross-attention in
       every LM layer, open_flamingo's default Perceiver. Loaded by name from the Hugging Face hub, or
       from `params.model.weights_dir` laid out as
           <weights_dir>/clip/       open_clip_config.json + weights   (hf download timm/vit_large_patch14_clip_224.openai)
           <weights_dir>/opt-1.3b/   config, weights and tokenizer     (hf download facebook/opt-1.3b)
       Both go through the same calls (open_clip.create_model, AutoModelForCausalLM.from_pretrained);
       only the name differs. Nothing here downloads unless the paper preset is built without weights_dir.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .compat import SUPPORTED_LM_FAMILIES
from .geometry import vision_geometry


@dataclass(frozen=True)
class Preset:
    name: str
    # tiny: keyword arguments of open_clip.transformer.VisionTransformer; paper: where the weights are
    vision: dict[str, Any]
    # tiny: {"family": opt|llama|gpt_neox, hidden, layers, heads, ffn, max_positions}; paper: names/dirs
    lm: dict[str, Any]
    perceiver: dict[str, int] = field(default_factory=lambda: {"depth": 6, "heads": 8, "dim_head": 64,
                                                                "num_latents": 64})
    xattn_every: int = 1
    # heads/dim_head of the gated cross-attention; None keeps open_flamingo's defaults (8 x 64)
    xattn: dict[str, int] | None = None
    block_heads: int = 8
    block_ff_mult: int = 2  # feed-forward width of each gaze block layer (0: attention only)
    max_frames: int = 8
    # the tiny LM starts from random weights so it must be trained; the paper's OPT stays frozen except
    # its input embeddings (OpenFlamingo's recipe: the new <image>/<|endofchunk|> rows must be learned)
    train_lm: bool = False

    @property
    def geometry(self) -> tuple[int, int]:
        return vision_geometry(self.name)


TINY = Preset(
    name="tiny",
    vision={"width": 128, "layers": 2, "heads": 4, "mlp_ratio": 2.0},
    lm={"family": "opt", "hidden": 128, "layers": 2, "heads": 4, "ffn": 256, "max_positions": 256},
    perceiver={"depth": 2, "heads": 4, "dim_head": 32, "num_latents": 16},
    xattn_every=1,
    xattn={"heads": 4, "dim_head": 32},
    block_heads=4,
    # attention-only block layers ("two attention layers"): a feed-forward would cost ~3% of a tiny step
    block_ff_mult=0,
    max_frames=8,
    train_lm=True,
)

PAPER = Preset(
    name="paper",
    vision={"hub": "hf-hub:timm/vit_large_patch14_clip_224.openai", "local": "clip"},
    lm={"hub": "facebook/opt-1.3b", "local": "opt-1.3b"},
    xattn_every=1,
    block_heads=8,
    # 2 layers with a 3x feed-forward + the query projection at width 1024 = 22.0M parameters, the
    # paper's 966M - 944M for "the two extra blocks"
    block_ff_mult=3,
    max_frames=8,
    train_lm=False,
)

PRESETS = {"tiny": TINY, "paper": PAPER}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"params.model.preset: unknown preset {name!r} (have {sorted(PRESETS)})") from None


def build_vision_encoder(preset: Preset, weights_dir: str | None = None) -> SimpleNamespace:
    """The vision tower, wrapped as open_flamingo's Flamingo expects it (an object with `.visual`)."""
    image_size, patch_size = preset.geometry
    if "hub" not in preset.vision:
        from open_clip.transformer import VisionTransformer

        v = preset.vision
        visual = VisionTransformer(image_size=image_size, patch_size=patch_size, width=v["width"],
                                   layers=v["layers"], heads=v["heads"], mlp_ratio=v["mlp_ratio"],
                                   output_dim=v["width"], output_tokens=True)
    else:
        import open_clip

        name = f"local-dir:{_local(weights_dir, preset.vision['local'])}" if weights_dir else preset.vision["hub"]
        visual = open_clip.create_model(name).visual  # the text tower is dropped with the CLIP wrapper
        visual.output_tokens = True
        got = (visual.image_size[0], visual.patch_size[0])
        if got != (image_size, patch_size):
            raise ValueError(f"{name}: vision encoder has image/patch size {got}, preset {preset.name!r} "
                             f"expects {(image_size, patch_size)} (gazevlm.models.geometry)")
    if getattr(visual, "final_ln_after_pool", False):
        # the gaze block relies on the patch tokens leaving the encoder through its final LayerNorm
        raise ValueError("vision encoder applies ln_post after pooling only: patch tokens are not normalised")
    return SimpleNamespace(visual=visual)


def build_language_model(preset: Preset, vocab_size: int, special_ids: dict[str, int],
                         weights_dir: str | None = None) -> nn.Module:
    """The causal LM, with an embedding row per token of the tokenizer."""
    if "hub" not in preset.lm:
        lm = tiny_language_model(vocab_size=vocab_size, **preset.lm, **special_ids)
    else:
        from transformers import AutoModelForCausalLM

        name = str(_local(weights_dir, preset.lm["local"])) if weights_dir else preset.lm["hub"]
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        lm.resize_token_embeddings(vocab_size)
        lm.config.pad_token_id = special_ids["pad_token_id"]
    lm.generation_config.pad_token_id = special_ids["pad_token_id"]
    return lm


def tiny_language_model(family: str, vocab_size: int, hidden: int, layers: int, heads: int, ffn: int,
                        max_positions: int, pad_token_id: int, eos_token_id: int, bos_token_id: int) -> nn.Module:
    """A small randomly initialised causal LM of one of the supported families (no dropout)."""
    ids = dict(pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    if family == "opt":
        from transformers import OPTConfig, OPTForCausalLM

        return OPTForCausalLM(OPTConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            ffn_dim=ffn, word_embed_proj_dim=hidden, max_position_embeddings=max_positions,
            dropout=0.0, attention_dropout=0.0, layerdrop=0.0, **ids))
    if family == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=heads, intermediate_size=ffn, max_position_embeddings=max_positions,
            tie_word_embeddings=True, **ids))
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        return GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ffn, max_position_embeddings=max_positions, hidden_dropout=0.0,
            attention_dropout=0.0, **ids))
    raise ValueError(f"tiny language model: unknown family {family!r} (have {SUPPORTED_LM_FAMILIES})")


def _local(weights_dir: str | Path, sub: str) -> Path:
    path = Path(weights_dir) / sub
    if not path.is_dir():
        raise FileNotFoundError(f"params.model.weights_dir: {path} does not exist (expected the layout in "
                                f"gazevlm.models.presets)")
    return path
