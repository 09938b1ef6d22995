"""Model presets: what the vision encoder, the language model and the glue look like, per backbone.

tiny   fully offline, for every backbone: a small vision transformer and a small causal LM built from
       configs with random weights (seeded by the caller); trains on a CPU in the default pipeline.
       The LM family follows the backbone's real LM (OPT for OpenFlamingo, GPT-2 for LaViLa, Qwen2 for
       InternVL, Llama for LLaVA-NeXT), so the tiny model runs the same code paths as the real one.
Real presets load public weights by name from the Hugging Face hub on the user's machine, or from
`params.model.weights_dir/<local>` with the same files (e.g. `hf download <hub id> --local-dir ...`);
both go through the same calls, only the name differs. Nothing downloads unless a real preset is built
without weights_dir.
  paper                 the authors' OpenFlamingo: CLIP ViT-L/14 (OpenAI, frozen) + OPT-1.3B, cross-attention
                        in every LM layer, open_flamingo's default Perceiver (backbones openflamingo and
                        openflamingo_noperceiver). <weights_dir>/clip (open_clip_config.json + weights,
                        timm/vit_large_patch14_clip_224.openai) and <weights_dir>/opt-1.3b.
  lavila-gpt2-xl        LaViLa's narrator design: CLIP ViT-L/14 at 336 px per frame + GPT-2 XL through gated
                        cross-attention every 3rd layer, 256 pooled visual queries. <weights_dir>/clip-336,
                        <weights_dir>/gpt2-xl. LaViLa's own checkpoint is not in a transformers format.
  internvl2_5-1b        InternVL 2.5-1B (InternViT-300M at 448 px + Qwen2.5-0.5B) in the transformers format.
                        OpenGVLab publishes it only in its remote-code format: convert OpenGVLab/InternVL2_5-1B
                        with transformers' models/internvl/convert_internvl_weights_to_hf.py (in the
                        transformers source, not the wheel) into <weights_dir>/internvl2_5-1b.
  internvl3-1b          InternVL3-1B, the nearest transformers-format checkpoint on the hub (same InternViT-300M
                        at 448 px + Qwen2.5-0.5B design): OpenGVLab/InternVL3-1B-hf, loads by name.
  llava-next-vicuna-7b  LLaVA-NeXT with Vicuna-7B (the paper's OpenLLaVA), transformers format; frames
                        use the base 336-px view, 2 x 2 pooled as in LLaVA-NeXT-Video.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .compat import SUPPORTED_LM_FAMILIES
from ..geometry import vision_geometry

FLAMINGO_BACKBONES = ("openflamingo", "openflamingo_noperceiver", "lavila")
PROJECTOR_BACKBONES = ("internvl", "llava_next")
BACKBONES = FLAMINGO_BACKBONES + PROJECTOR_BACKBONES
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    name: str
    backbones: tuple[str, ...]   # the backbones this preset can build
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
    # trainable transformer layers over each frame's patches first in the gaze block, unless
    # params.model.block_patch_layers says otherwise: 0 for real presets (the paper's block reads a 24-layer
    # CLIP's tokens as they are)
    block_patch_layers: int = 0
    max_frames: int = 8
    # the tiny LM starts from random weights so it must be trained; the paper's OPT stays frozen except
    # its input embeddings (OpenFlamingo's recipe: the new <image>/<|endofchunk|> rows must be learned)
    train_lm: bool = False
    # the vision encoder's pixel normalisation (CLIP's OpenAI statistics, or ImageNet's for InternViT)
    pixel_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    pixel_std: tuple[float, float, float] = OPENAI_CLIP_STD
    # projector backbones: average-pool the patch grid by this stride before the projector (LLaVA-NeXT-Video)
    pool: int = 1
    # tanh gates of the gated cross-attention at initialisation: open_flamingo's 0 (the pretrained LM starts
    # exactly as it was) for real presets; open for the tiny preset, whose LM is trained from scratch and
    # which otherwise learns to ignore the frames before the gates open (session 1: gates ~0.005 after 450
    # steps, one caption per task)
    xattn_gate_init: float = 0.0
    # the tiny preset's vision encoder may come pretrained from the pipeline (gazevlm.pretrain)
    pretrainable_vision: bool = False
    # tiny encoder: patch tokens attend within this window of patches (0: global attention, as CLIP)
    vision_window: int = 0

    @property
    def geometry(self) -> tuple[int, int]:
        return vision_geometry(self.name)


# Sized for one CPU core per run (gazevlm.pretrain, bench): width 64 everywhere. At 128 the same world
# cost 3x the time per step (the Perceiver's keys and values over 5 x 64 patch tokens and the LM's
# feed-forwards dominate) for no better grounding at the default budget.
TINY = Preset(
    name="tiny",
    backbones=("openflamingo", "openflamingo_noperceiver"),
    vision={"width": 64, "layers": 2, "heads": 4, "mlp_ratio": 2.0},
    lm={"family": "opt", "hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "max_positions": 256},
    perceiver={"depth": 1, "heads": 2, "dim_head": 32, "num_latents": 16},
    xattn_every=1,
    xattn={"heads": 2, "dim_head": 32},
    block_heads=2,
    # attention-only block layers ("two attention layers"): a feed-forward would cost ~3% of a tiny step
    block_ff_mult=0,
    # the tiny encoder has two local layers: without trainable layers over its patches the gaze loss only
    # moved where the block looked, and the future-object gain stayed within noise (validation split, 3
    # seeds: +0.009 with none, +0.032 with one, +0.045 with two; README "Where the gaze gain is lost")
    block_patch_layers=2,
    max_frames=8,
    train_lm=True,
    xattn_gate_init=1.0,
    pretrainable_vision=True,
    vision_window=3,
)

# The other backbones' tiny presets differ from TINY only where their real design does.
TINY_BY_BACKBONE = {
    **{b: TINY for b in TINY.backbones},
    # LaViLa: GPT-2 decoder; one attention-pooling layer over all frames' tokens (its 256 queries, scaled
    # down) instead of the 6-layer Perceiver
    "lavila": dataclasses.replace(
        TINY, backbones=("lavila",),
        lm={"family": "gpt2", "hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "max_positions": 256},
        perceiver={"depth": 1, "heads": 2, "dim_head": 32, "num_latents": 32}),
    # InternVL: InternViT (ImageNet normalisation, 2 x 2 pixel shuffle) + Qwen2; 16 LM tokens per frame
    "internvl": dataclasses.replace(
        TINY, backbones=("internvl",), perceiver={}, xattn=None, pretrainable_vision=False,
        lm={"family": "qwen2", "hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "max_positions": 512},
        pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD),
    # LLaVA-NeXT: CLIP ViT + Llama; frames 2 x 2 average-pooled before the projector: 16 LM tokens per frame
    "llava_next": dataclasses.replace(
        TINY, backbones=("llava_next",), perceiver={}, xattn=None, pretrainable_vision=False,
        lm={"family": "llama", "hidden": 64, "layers": 2, "heads": 2, "ffn": 128, "max_positions": 512},
        pool=2),
}

PAPER = Preset(
    name="paper",
    backbones=("openflamingo", "openflamingo_noperceiver"),
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

LAVILA = Preset(
    name="lavila-gpt2-xl",
    backbones=("lavila",),
    vision={"hub": "hf-hub:timm/vit_large_patch14_clip_336.openai", "local": "clip-336"},
    lm={"hub": "openai-community/gpt2-xl", "local": "gpt2-xl"},
    perceiver={"depth": 1, "heads": 8, "dim_head": 64, "num_latents": 256},
    xattn_every=3,
    block_heads=8,
    block_ff_mult=3,
    max_frames=8,
    train_lm=False,
)

# InternVL and LLaVA-NeXT are one transformers model each: vision and lm name the same checkpoint
INTERNVL = Preset(
    name="internvl2_5-1b",
    backbones=("internvl",),
    # no transformers-format copy on the hub: weights_dir only (see the module docstring)
    vision={"hub": None, "local": "internvl2_5-1b"},
    lm={"hub": None, "local": "internvl2_5-1b"},
    perceiver={}, xattn=None,
    block_heads=16,   # InternViT-300M width 1024
    block_ff_mult=3,
    max_frames=8,
    train_lm=False,
    pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
)

LLAVA_NEXT = Preset(
    name="llava-next-vicuna-7b",
    backbones=("llava_next",),
    vision={"hub": "llava-hf/llava-v1.6-vicuna-7b-hf", "local": "llava-next-vicuna-7b"},
    lm={"hub": "llava-hf/llava-v1.6-vicuna-7b-hf", "local": "llava-next-vicuna-7b"},
    perceiver={}, xattn=None,
    block_heads=16,   # CLIP ViT-L/14-336 width 1024
    block_ff_mult=3,
    max_frames=8,
    train_lm=False,
    pool=2,
)

INTERNVL3 = dataclasses.replace(INTERNVL, name="internvl3-1b",
                                vision={"hub": "OpenGVLab/InternVL3-1B-hf", "local": "internvl3-1b"},
                                lm={"hub": "OpenGVLab/InternVL3-1B-hf", "local": "internvl3-1b"})

PRESETS = {p.name: p for p in (TINY, PAPER, LAVILA, INTERNVL, INTERNVL3, LLAVA_NEXT)}


def get_preset(name: str, backbone: str = "openflamingo") -> Preset:
    """The preset `name` for `backbone` (`tiny` exists for every backbone)."""
    if backbone not in BACKBONES:
        raise ValueError(f"params.model.backbone: {backbone!r} is not one of {BACKBONES}")
    if name == "tiny":
        return TINY_BY_BACKBONE[backbone]
    try:
        preset = PRESETS[name]
    except KeyError:
        raise KeyError(f"params.model.preset: unknown preset {name!r} (have {sorted(PRESETS)})") from None
    if backbone not in preset.backbones:
        fitting = sorted(p.name for p in PRESETS.values() if backbone in p.backbones) + ["tiny"]
        raise ValueError(f"params.model.preset: preset {name!r} is for backbone(s) {preset.backbones}, not "
                         f"{backbone!r} (its presets: {fitting})")
    return preset


def build_vision_encoder(preset: Preset, weights_dir: str | None = None) -> SimpleNamespace:
    """The vision tower, wrapped as open_flamingo's Flamingo expects it (an object with `.visual`)."""
    image_size, patch_size = preset.geometry
    if "hub" not in preset.vision:
        from open_clip.transformer import VisionTransformer

        from .local_vit import LocalVisionTransformer

        v = preset.vision
        kwargs = dict(image_size=image_size, patch_size=patch_size, width=v["width"], layers=v["layers"],
                      heads=v["heads"], mlp_ratio=v["mlp_ratio"], output_dim=v["width"], output_tokens=True)
        visual = (LocalVisionTransformer(**kwargs, window=preset.vision_window) if preset.vision_window
                  else VisionTransformer(**kwargs))
    else:
        import open_clip

        name = f"local-dir:{weights_path(weights_dir, preset.vision['local'])}" if weights_dir else preset.vision["hub"]
        visual = open_clip.create_model(name).visual  # the text tower is dropped with the CLIP wrapper
        visual.output_tokens = True
        got = (visual.image_size[0], visual.patch_size[0])
        if got != (image_size, patch_size):
            raise ValueError(f"{name}: vision encoder has image/patch size {got}, preset {preset.name!r} "
                             f"expects {(image_size, patch_size)} (gazevlm.geometry)")
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

        name = pretrained_source(preset, "lm", weights_dir)
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        lm.resize_token_embeddings(vocab_size)
        lm.config.pad_token_id = special_ids["pad_token_id"]
    lm.generation_config.pad_token_id = special_ids["pad_token_id"]
    return lm


def tiny_lm_config(family: str, vocab_size: int, hidden: int, layers: int, heads: int, ffn: int,
                   max_positions: int, pad_token_id: int, eos_token_id: int, bos_token_id: int):
    """The transformers config of a small causal LM of `family` (no dropout)."""
    ids = dict(pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    if family == "opt":
        from transformers import OPTConfig

        return OPTConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, ffn_dim=ffn, word_embed_proj_dim=hidden,
                         max_position_embeddings=max_positions, dropout=0.0, attention_dropout=0.0,
                         layerdrop=0.0, **ids)
    if family in ("llama", "qwen2"):
        from transformers import LlamaConfig, Qwen2Config

        return (LlamaConfig if family == "llama" else Qwen2Config)(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=heads, intermediate_size=ffn, max_position_embeddings=max_positions,
            tie_word_embeddings=True, **ids)
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=max_positions,
                             hidden_dropout=0.0, attention_dropout=0.0, **ids)
    if family == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn,
                          n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    raise ValueError(f"tiny language model: unknown family {family!r} (have {SUPPORTED_LM_FAMILIES + ('qwen2',)})")


def tiny_language_model(family: str, **kwargs) -> nn.Module:
    """A small randomly initialised causal LM (arguments of tiny_lm_config)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(tiny_lm_config(family, **kwargs))


def pretrained_source(preset: Preset, part: str, weights_dir: str | None) -> str:
    """Where a real preset's `part` ("lm" or "vision") loads from: <weights_dir>/<local>, else its hub name."""
    spec = getattr(preset, part)
    if weights_dir:
        return str(weights_path(weights_dir, spec["local"]))
    if not spec.get("hub"):
        raise ValueError(f"preset {preset.name!r} has no checkpoint on the hub in a format transformers loads: "
                         f"set params.model.weights_dir to a directory holding {spec['local']}/ "
                         f"(see gazevlm.models.presets)")
    return spec["hub"]


def weights_path(weights_dir: str | Path, sub: str) -> Path:
    path = Path(weights_dir) / sub
    if not path.is_dir():
        raise FileNotFoundError(f"params.model.weights_dir: {path} does not exist (expected the layout in "
                                f"gazevlm.models.presets)")
    return path
