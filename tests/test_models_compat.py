"""open_flamingo 2.0.1 on transformers 5.23: the compatibility layer, per supported LM family."""

from __future__ import annotations

import pytest
import torch
from open_flamingo.src.flamingo import Flamingo
from open_flamingo.src.flamingo_lm import FlamingoLMMixin
from open_flamingo.src.utils import extend_instance

from gazevlm.models.compat import SUPPORTED_LM_FAMILIES, CompatFlamingoLayer, adapt_language_model
from gazevlm.models.presets import build_vision_encoder, tiny_language_model
from gazevlm.models.tokenizer import special_token_ids
from model_fixtures import batch, build, prompt, tiny_preset, tokenizer

LM_SHAPE = {"hidden": 64, "layers": 2, "heads": 4, "ffn": 128, "max_positions": 64}


def _lm(family: str):
    ids = special_token_ids(tokenizer())
    return tiny_language_model(
        family,
        vocab_size=len(tokenizer()),
        **LM_SHAPE,
        pad_token_id=ids["pad_token_id"],
        eos_token_id=ids["eos_token_id"],
        bos_token_id=ids["bos_token_id"],
    )


@pytest.mark.parametrize("family", SUPPORTED_LM_FAMILIES)
def test_family_forward_and_cached_generation_match_full_recomputation(family):
    preset = tiny_preset(lm={"family": family, **LM_SHAPE})
    model = build("gaze", preset=preset)
    assert model.config["lm_family"] == family
    pixels, enc = batch(model, b=2, t=2)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    assert torch.isfinite(out.loss)
    p = prompt(2, t=2)
    start = p["input_ids"].shape[1]
    # Flamingo.generate (KV cache, media cached after the first step) vs one full forward per token; <image>
    # suppressed as GazeVLM.generate does (a generated one means another media chunk: cached and full differ)
    res = model.backbone.generate(
        model._vision_x(pixels, None),
        p["input_ids"],
        attention_mask=p["attention_mask"],
        max_new_tokens=4,
        min_new_tokens=4,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=model.pad_token_id,
        suppress_tokens=[model.backbone.media_token_id],
    )
    assert (res.sequences[:, start:] != model.backbone.media_token_id).all()
    assert len(res.logits) == 4
    for i, step_logits in enumerate(res.logits):
        prefix = res.sequences[:, : start + i]
        full = model(pixels, prefix, torch.ones_like(prefix)).logits[:, -1]
        torch.testing.assert_close(step_logits, full, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(full[0], full[1])  # the two windows' frames differ: vision is used
    gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=4)
    assert gen.shape[0] == 2 and gen.shape[1] <= 4
    beams = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=3, num_beams=2)
    assert beams.shape[0] == 2


def test_stock_mixin_breaks_generate_on_transformers_5_which_is_why_compat_exists():
    """Finding 1: transformers 5 calls forward without attention_mask during generate."""
    tok = tokenizer()
    ids = special_token_ids(tok)
    lm = _lm("opt")
    extend_instance(lm, FlamingoLMMixin)
    lm.set_decoder_layers_attr_name("model.decoder.layers")
    preset = tiny_preset()
    size = preset.geometry[0]
    stock = Flamingo(
        build_vision_encoder(preset), lm, ids["eoc_token_id"], ids["media_token_id"], vis_dim=preset.vision["width"]
    )
    p = prompt(1, t=1)
    vision_x = torch.zeros(1, 1, 1, 3, size, size)
    with pytest.raises(TypeError, match="attention_mask"):
        stock.generate(vision_x, p["input_ids"], attention_mask=p["attention_mask"], max_new_tokens=2)


def test_compat_layer_passes_positional_arguments_to_the_decoder_layer():
    """Finding 2: FlamingoLayer dropped positional arguments after the hidden states."""
    seen = {}

    class Decoder(torch.nn.Module):
        def forward(self, x, mask, position_ids=None, **kwargs):
            seen.update(mask=mask, position_ids=position_ids, kwargs=kwargs)
            return x + 1

    layer = CompatFlamingoLayer(None, Decoder())
    out = layer(torch.zeros(2), "MASK", position_ids="POS", use_cache=False)
    assert torch.equal(out, torch.ones(2))
    assert seen == {"mask": "MASK", "position_ids": "POS", "kwargs": {"use_cache": False}}


def test_unconditioned_cross_attention_layer_fails_clearly():
    model = build("gaze")
    layer = model.backbone.lang_encoder._get_decoder_layers()[0]
    with pytest.raises(ValueError, match="condition vis_x"):
        layer(torch.zeros(1, 3, 128))


def test_unsupported_family_is_refused():
    from transformers import BloomConfig, BloomForCausalLM

    lm = BloomForCausalLM(BloomConfig(hidden_size=32, n_layer=1, n_head=2, vocab_size=20))
    with pytest.raises(ValueError, match="bloom.*not supported"):
        adapt_language_model(lm)
