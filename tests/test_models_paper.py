"""The paper preset's code path (open_clip ViT-L-14 + OPT from a weights directory), on shrunk shapes.

The weights directory is laid out exactly as a user's copy of timm/vit_large_patch14_clip_224.openai and
facebook/opt-1.3b would be; only widths and depths are smaller, so nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
from open_flamingo.src.helpers import PerceiverResampler

from gazevlm.models import PRESETS, build_model, check_model_config
from gazevlm.models.text import encode_prompt, encode_train
from gazevlm.models.tokenizer import IMAGE, build_tokenizer
from model_fixtures import CAPTIONS, build, params, write_scaled_paper_weights


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = write_scaled_paper_weights(tmp_path_factory.mktemp("weights"))
    # vision_weights names no file: a real preset keeps its public tower and never reads it
    p = params(preset="paper", weights_dir=str(root), vision_weights=str(root / "no-such-encoder.safetensors"))
    tok = build_tokenizer(p, texts=["ignored: the paper preset uses the LM's tokenizer"])
    torch.manual_seed(0)
    model = build_model(p, "gaze", tok)
    return model.eval(), tok, root


def test_paper_preset_names_the_authors_weights():
    assert PRESETS["paper"].vision["hub"] == "hf-hub:timm/vit_large_patch14_clip_224.openai"
    assert PRESETS["paper"].lm["hub"] == "facebook/opt-1.3b"
    assert PRESETS["paper"].xattn_every == 1 and PRESETS["paper"].xattn is None  # open_flamingo defaults


def test_paper_path_loads_the_weights_from_the_directory(paper):
    model, tok, root = paper
    assert tok.name_or_path == str(root / "opt-1.3b") and IMAGE in tok.get_vocab()
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(root / "clip" / "open_clip_model.safetensors"))
    visual = model.backbone.vision_encoder
    torch.testing.assert_close(visual.conv1.weight, saved["visual.conv1.weight"])
    lm_ref = AutoModelForCausalLM.from_pretrained(str(root / "opt-1.3b"))
    ours = model.backbone.lang_encoder.old_decoder_blocks[1].fc1.weight
    torch.testing.assert_close(ours, lm_ref.model.decoder.layers[1].fc1.weight)
    assert model.config["preset"] == "paper" and model.config["geometry"] == {"image_size": 224, "patch_size": 14}
    assert model.n_patches == 256


def test_paper_recipe_freezes_vision_and_lm_but_trains_glue_block_and_embeddings(paper):
    model, _, _ = paper
    f = model.backbone
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not any(id(p) in trainable for p in f.vision_encoder.parameters())
    assert not any(id(p) in trainable for block in f.lang_encoder.old_decoder_blocks for p in block.parameters())
    assert id(f.lang_encoder.get_input_embeddings().weight) in trainable
    for module in (f.perceiver, f.gaze_block, f.lang_encoder.gated_cross_attn_layers):
        assert all(id(p) in trainable for p in module.parameters())
    assert isinstance(f.perceiver, PerceiverResampler) and len(f.perceiver.layers) == 6
    assert f.perceiver.latents.shape[0] == 64
    assert all(layer is not None for layer in f.lang_encoder.gated_cross_attn_layers)  # every layer


def test_paper_path_trains_and_generates(paper):
    model, tok, _ = paper
    pixels = torch.rand(2, 2, 3, 224, 224)
    enc = encode_train(tok, CAPTIONS[:2], "activity", 2)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    assert out.attention.shape == (2, 2, 256)
    out.loss.backward()
    assert model.backbone.gaze_block.query_proj.weight.grad is not None
    model.zero_grad(set_to_none=True)
    p = encode_prompt(tok, "activity", 2, 2)
    gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=3)
    assert gen.shape[0] == 2 and gen.shape[1] <= 3


def test_tiny_checkpoint_is_refused_by_the_paper_model(paper):
    model, _, _ = paper
    with pytest.raises(ValueError, match="preset: checkpoint 'tiny' vs model 'paper'"):
        check_model_config(build("gaze").config, model)


def test_missing_weights_directory_is_named(tmp_path):
    (tmp_path / "clip").mkdir()
    with pytest.raises(FileNotFoundError, match="opt-1.3b"):
        from gazevlm.models.presets import build_language_model

        build_language_model(PRESETS["paper"], 10, {"pad_token_id": 0}, weights_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing" / "clip")):
        from gazevlm.models.presets import build_vision_encoder

        build_vision_encoder(PRESETS["paper"], weights_dir=str(tmp_path / "nothing"))
