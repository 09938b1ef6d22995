"""Small shared fixtures for the model and loss tests: a word tokenizer, tiny models, batches, and a
scaled-down copy of the paper preset's weights directory (same architectures, shrunk shapes)."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from gazevlm import params as P
from gazevlm.models import build_model, get_preset
from gazevlm.models.text import encode_prompt, encode_train
from gazevlm.models.tokenizer import build_word_tokenizer

CAPTIONS = [
    "pick up the red cup",
    "put the knife on the plate",
    "cut the green tomato with the knife",
    "open the blue bottle",
    "put the spoon in the yellow bowl",
    "pick up the plate then put it down",
]


@functools.cache
def tokenizer():
    return build_word_tokenizer(CAPTIONS)


def params(**model) -> P.Params:
    """Default params with `model` overrides; the tiny vision encoder is the preset's random one
    (model.vision_weights None) unless a test names a file: no pretrain stage has run in a test, and
    models/encoder/ of the working tree must not leak into one."""
    return P.with_overrides(P.from_dict({}), model={"vision_weights": None, **model})


def tiny_preset(**changes):
    return dataclasses.replace(get_preset("tiny"), **changes)


def build(run: str = "gaze", seed: int = 0, preset=None, open_gates: bool = True, **model):
    """A tiny model; gates opened so that vision actually changes the logits (they start at 0)."""
    torch.manual_seed(seed)
    m = build_model(params(**model), run, tokenizer(), preset=preset)
    if open_gates:
        set_gates(m, 0.8)
    return m.eval()


def set_gates(model, value: float) -> None:
    """Open the gated cross-attention (Flamingo-style backbones; projector backbones have no gates)."""
    if not hasattr(model.backbone, "lang_encoder"):
        return
    for layer in model.backbone.lang_encoder.gated_cross_attn_layers:
        if layer is not None:
            layer.attn_gate.data.fill_(value)
            layer.ff_gate.data.fill_(value)


def batch(model, b: int = 3, t: int = 3, seed: int = 1, task: str = "future"):
    g = torch.Generator().manual_seed(seed)
    s = model.image_size
    pixels = torch.rand(b, t, 3, s, s, generator=g)
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(b)]
    return pixels, encode_train(tokenizer(), texts, task, t)


def prompt(b: int, t: int = 3, task: str = "future"):
    return encode_prompt(tokenizer(), task, t, b)


def write_open_clip_dir(
    directory: Path, model: str, geometry: tuple[int, int], *, layers: int, width: int, head_width: int, seed: int
) -> None:
    """An open_clip `local-dir:` directory (config + safetensors) of `model`'s architecture, vision tower
    shrunk to `layers` x `width`, text tower to almost nothing; random weights from `seed`."""
    import open_clip

    cfg = open_clip.get_model_config(model)
    assert (cfg["vision_cfg"]["image_size"], cfg["vision_cfg"]["patch_size"]) == geometry
    cfg["vision_cfg"].update(layers=layers, width=width, head_width=head_width)
    cfg["text_cfg"].update(layers=1, width=32, heads=1, vocab_size=64)
    cfg["embed_dim"] = 32
    cfg["quick_gelu"] = True  # OpenAI weights were trained with QuickGELU
    directory.mkdir(parents=True)
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    clip = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(directory / "open_clip_model.safetensors"))


def write_scaled_paper_weights(root: Path) -> Path:
    """<root>/clip (open_clip local-dir: ViT-L-14's config with shrunk sizes + safetensors weights) and
    <root>/opt-1.3b (an OPT saved with save_pretrained, shrunk, with the word tokenizer): the layout
    presets.PAPER reads from params.model.weights_dir."""
    from transformers import OPTConfig, OPTForCausalLM

    write_open_clip_dir(root / "clip", "ViT-L-14", (224, 14), layers=2, width=64, head_width=32, seed=123)

    tok = tokenizer()
    lm_dir = root / "opt-1.3b"
    # facebook/opt-1.3b: hidden 2048, 24 layers, 32 heads, ffn 8192; same architecture, shrunk
    lm = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tok) + 5,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=256,
            word_embed_proj_dim=64,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
    )
    lm.save_pretrained(str(lm_dir))
    tok.save_pretrained(str(lm_dir))
    return root
