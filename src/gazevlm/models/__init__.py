"""Gaze-regularised VLMs over five backbones: build_model is the one way stages get a model.

    model = build_model(params, run, tokenizer)        # run: a name under `runs` in params.yaml
    out = model(pixels, input_ids, attention_mask, labels)   # out.loss (CE), out.logits, out.attention
    ids = model.generate(pixels, input_ids, attention_mask, max_new_tokens)

params.model.backbone picks the backbone (openflamingo, openflamingo_noperceiver, lavila, internvl,
llava_next) and params.model.preset its size (tiny for all, or a real preset: see presets.py); the gaze
block is the same module in every one. Gaze never enters the model: it meets out.attention only in
gazevlm.losses.gaze_kl.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from open_flamingo.src.helpers import PerceiverResampler
from transformers import PreTrainedTokenizerBase

from ..params import ModelParams, Params
from .compat import SUPPORTED_LM_FAMILIES, adapt_language_model, lm_family
from .flamingo import FrameTokens, GazeFlamingo
from .gaze_block import GazeBlock
from .presets import (BACKBONES, FLAMINGO_BACKBONES, PRESETS, Preset, build_language_model, build_vision_encoder,
                      get_preset, pretrained_source, tiny_lm_config)
from .projector_vlm import build_projector_vlm
from .vlm import GazeVLM, GazeVLMOutput
from .tokenizer import build_tokenizer, special_token_ids, vocabulary_fingerprint

CONFIG_FILE = "model_config.json"
CONFIG_FORMAT = 1

__all__ = ["build_model", "build_tokenizer", "GazeVLM", "GazeVLMOutput", "Preset", "PRESETS", "get_preset", "CONFIG_FILE",
           "save_model_config", "check_model_config", "load_vision_weights", "SUPPORTED_LM_FAMILIES", "BACKBONES"]


def block_patch_layers(model: ModelParams, preset: Preset) -> int:
    """The gaze block's trainable layers over the patches: params.model.block_patch_layers, or the preset's."""
    return preset.block_patch_layers if model.block_patch_layers is None else model.block_patch_layers


def build_model(params: Params, run: str, tokenizer: PreTrainedTokenizerBase, *,
                preset: Preset | None = None) -> GazeVLM:
    """The model for a named run. Seed torch before calling: weights of the tiny preset are random.

    The gaze block is built on a forked RNG, so the backbone's weights and the RNG state after this
    call are the same with and without the block: base and gaze runs differ only in the block.
    `preset` overrides params.model.preset (tests use scaled-down copies of the paper preset).
    """
    m = params.model
    preset = preset or get_preset(m.preset, m.backbone)
    if m.backbone not in preset.backbones:
        raise ValueError(f"preset {preset.name!r} is for backbone(s) {preset.backbones}, not {m.backbone!r}")
    run_params = params.run(run)
    patch_layers = block_patch_layers(m, preset)
    ids = special_token_ids(tokenizer)
    if m.backbone in FLAMINGO_BACKBONES:
        backbone, vis_dim, lm = _build_flamingo(m.backbone, preset, tokenizer, ids, m.weights_dir)
        load_vision_weights(backbone.vision_encoder, preset, m.vision_weights)
    else:
        backbone, vis_dim, lm = _build_projector(m.backbone, preset, tokenizer, ids, m.weights_dir)
    if run_params.block:
        with torch.random.fork_rng(devices=[]):
            backbone.gaze_block = GazeBlock(vis_dim, layers=m.block_layers, heads=preset.block_heads,
                                            query=m.query, output=m.block_output, head_reduce=m.head_reduce,
                                            patch_layers=patch_layers,
                                            ff_mult=preset.block_ff_mult,
                                            norm_patches=m.backbone not in FLAMINGO_BACKBONES)
    backbone.set_trainable(preset.train_lm, params.train.freeze_vision)

    image_size, patch_size = preset.geometry
    block = bool(run_params.block)
    config = {
        "format": CONFIG_FORMAT,
        "preset": preset.name,
        "backbone": m.backbone,
        "block": block,
        "query": m.query if block else None,
        "block_output": m.block_output if block else None,
        "block_layers": m.block_layers if block else None,
        "block_patch_layers": patch_layers if block else None,
        "head_reduce": m.head_reduce if block else None,
        "norm_patches": (m.backbone not in FLAMINGO_BACKBONES) if block else None,
        "block_heads": preset.block_heads if block else None,
        "block_ff_mult": preset.block_ff_mult if block else None,
        "lm_family": lm_family(lm),
        "pixel_mean": list(preset.pixel_mean),
        "pixel_std": list(preset.pixel_std),
        "vocab": len(tokenizer),
        "vocab_sha1": vocabulary_fingerprint(tokenizer),
        "geometry": {"image_size": image_size, "patch_size": patch_size},
        "vision_dim": vis_dim,
        "max_frames": preset.max_frames,
    }
    return GazeVLM(backbone, config, pad_token_id=ids["pad_token_id"])


def _build_flamingo(backbone: str, preset: Preset, tokenizer: PreTrainedTokenizerBase, ids: dict[str, int],
                    weights_dir: str | None) -> tuple[GazeFlamingo, int, torch.nn.Module]:
    """openflamingo (Perceiver), openflamingo_noperceiver (all tokens to cross-attention), lavila (one
    attention-pooling layer, GPT-2): a vision encoder and a causal LM joined by gated cross-attention."""
    vision = build_vision_encoder(preset, weights_dir)
    lm = build_language_model(preset, len(tokenizer), {k: ids[k] for k in ("pad_token_id", "eos_token_id",
                                                                          "bos_token_id")}, weights_dir)
    adapt_language_model(lm)
    vis_dim = vision.visual.transformer.width
    if backbone == "openflamingo_noperceiver":
        resampler = FrameTokens(vis_dim, preset.max_frames)
    else:
        resampler = PerceiverResampler(dim=vis_dim, max_num_frames=preset.max_frames, **preset.perceiver)
    flamingo = GazeFlamingo(vision, lm, ids["eoc_token_id"], ids["media_token_id"], vis_dim, resampler=resampler,
                            cross_attn_every_n_layers=preset.xattn_every, xattn=preset.xattn)
    if preset.xattn_gate_init:
        for layer in flamingo.lang_encoder.gated_cross_attn_layers:
            if layer is not None:
                with torch.no_grad():
                    layer.attn_gate.fill_(preset.xattn_gate_init)
                    layer.ff_gate.fill_(preset.xattn_gate_init)
    return flamingo, vis_dim, lm


def load_vision_weights(encoder: torch.nn.Module, preset: Preset, path: str | Path | None) -> bool:
    """The pipeline's pretrained tiny vision encoder (gazevlm.pretrain), when the preset takes one and
    params.model.vision_weights names it; real presets keep their public weights. Returns whether it loaded."""
    if path is None or not preset.pretrainable_vision:
        return False
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained vision encoder (params.model.vision_weights); run the "
                                "pretrain stage (`dvc repro pretrain`) or set model.vision_weights: null")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}: unreadable vision weights ({err})") from None
    visual = encoder.visual if hasattr(encoder, "visual") else encoder
    # checked before loading, so that nothing is half-loaded and a file of other sizes (an encoder
    # pretrained for an older preset) is named as such rather than by load_state_dict's size mismatch
    expected = visual.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    resized = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or resized:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in resized[:3]]
        raise ValueError(f"{path}: vision weights do not fit preset {preset.name!r} (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, other shapes {shapes}); rerun the pretrain stage")
    visual.load_state_dict(state, strict=True)
    return True


def _build_projector(backbone: str, preset: Preset, tokenizer: PreTrainedTokenizerBase, ids: dict[str, int],
                     weights_dir: str | None):
    """internvl / llava_next: the transformers model class, tiny from configs or pretrained by name."""
    image_size, patch_size = preset.geometry
    tiny = "hub" not in preset.lm
    text_config = None
    if tiny:
        text_config = tiny_lm_config(vocab_size=len(tokenizer), **preset.lm,
                                     **{k: ids[k] for k in ("pad_token_id", "eos_token_id", "bos_token_id")})
    name = None if tiny else pretrained_source(preset, "lm", weights_dir)
    vlm = build_projector_vlm(backbone, vision=preset.vision, text_config=text_config, name_or_dir=name,
                              image_size=image_size, patch_size=patch_size, vocab_size=len(tokenizer),
                              special_ids=ids, pool=preset.pool)
    return vlm, vlm.vision_dim, vlm.language_model


def save_model_config(model: GazeVLM, directory: str | Path) -> Path:
    path = Path(directory) / CONFIG_FILE
    path.write_text(json.dumps(model.config, indent=2, sort_keys=True) + "\n")
    return path


def check_model_config(saved: dict[str, Any] | str | Path, model: GazeVLM) -> None:
    """Raise a clear error if a checkpoint's model config (dict, or its directory/file) differs from the
    model it is about to be loaded into."""
    source = "checkpoint"
    if not isinstance(saved, dict):
        path = Path(saved)
        path = path / CONFIG_FILE if path.is_dir() else path
        source = str(path)
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: model config missing (the checkpoint has no {CONFIG_FILE})") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: model config is not valid JSON ({err})") from None
    keys = sorted(set(saved) | set(model.config))
    diff = {k: (saved.get(k), model.config.get(k)) for k in keys if saved.get(k) != model.config.get(k)}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{source}: checkpoint does not match this model ({lines})")
