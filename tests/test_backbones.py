"""The five backbones behind one GazeVLM interface (issue 9).

Tiny presets (random weights, built offline) train, generate and reload through the real code paths; the
real presets' code paths load shrunk copies of the public checkpoints from a weights directory laid out
as the user's download would be (same architectures and geometry, smaller widths and depths).
"""

from __future__ import annotations

import json
from contextlib import chdir

import pytest
import torch

from gazevlm import train as train_mod
from gazevlm.checkpoint import load_trained
from gazevlm.models import BACKBONES, PRESETS, build_model, get_preset
from gazevlm.models.presets import FLAMINGO_BACKBONES, PROJECTOR_BACKBONES
from gazevlm.models.text import encode_prompt, encode_train
from gazevlm.models.tokenizer import IMAGE, build_tokenizer
from model_fixtures import CAPTIONS, batch, build, params, prompt, tokenizer, write_open_clip_dir
from train_fixtures import TASK, ListSource, collate, read_tsv_metrics, run_in_process

NEW = ("lavila", "internvl", "llava_next")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_base_and_gaze_differ_only_by_the_block(backbone):
    base = build("base", backbone=backbone, open_gates=False)
    gaze = build("gaze", backbone=backbone, open_gates=False)
    assert base.backbone.gaze_block is None and gaze.backbone.gaze_block is not None
    gaze_state = {k: v for k, v in gaze.state_dict().items() if not k.startswith("backbone.gaze_block.")}
    base_state = base.state_dict()
    assert gaze_state.keys() == base_state.keys()
    assert all(torch.equal(gaze_state[k], base_state[k]) for k in base_state)
    assert gaze.config["backbone"] == backbone and gaze.config["preset"] == "tiny"


@pytest.mark.parametrize("backbone", BACKBONES)
def test_greedy_generation_follows_the_full_forward_and_reads_the_frames(backbone):
    model = build("gaze", backbone=backbone)  # flamingo gates opened so the frames reach the text
    pixels, _ = batch(model, b=2, t=3)
    p = prompt(2, t=3)
    gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=4)
    assert gen.shape[0] == 2 and 1 <= gen.shape[1] <= 4
    for row in range(2):
        ids = p["input_ids"][row : row + 1]
        for token in gen[row].tolist():
            logits = model(pixels[row : row + 1], ids, torch.ones_like(ids)).logits[0, -1]
            logits[model.backbone.media_token_id] = -torch.inf  # generation never emits <image>
            assert int(logits.argmax()) == token  # cached generation == one full forward per token
            if token == model.backbone.eoc_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    first = model(pixels, p["input_ids"], p["attention_mask"]).logits[:, -1]
    assert not torch.allclose(first[0], first[1])  # different frames, different next-token distribution


@pytest.mark.parametrize("backbone", BACKBONES)
def test_generation_never_emits_the_media_token(backbone):
    model = build("gaze", backbone=backbone)
    lm = model.backbone.lang_encoder if hasattr(model.backbone, "lang_encoder") else model.backbone.vlm
    media_id = model.backbone.media_token_id

    def favour_media(module, args, out):
        out = out.clone()
        out[..., media_id] += 1e4
        return out

    pixels, _ = batch(model, b=2, t=2)
    p = prompt(2, t=2)
    hook = lm.get_output_embeddings().register_forward_hook(favour_media)
    try:
        assert int(model(pixels, p["input_ids"], p["attention_mask"]).logits[0, -1].argmax()) == media_id
        for beams in (1, 2):
            gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=3, num_beams=beams)
            assert gen.numel() and (gen != media_id).all()
    finally:
        hook.remove()


@pytest.mark.parametrize("backbone", PROJECTOR_BACKBONES)
@pytest.mark.parametrize("output", ["pooled", "reweighted", "attended"])
def test_projector_backbone_puts_each_frame_into_the_lm_input(backbone, output):
    model = build("gaze", backbone=backbone, block_output=output)
    bb = model.backbone
    assert bb.vlm.config.text_config._attn_implementation != "eager"  # the gaze loss never needs eager LLM attention
    pixels, enc = batch(model, b=2, t=3)
    media = bb.media_embeddings(model._vision_x(pixels, None))
    # 8 x 8 patches -> 4 x 4 LM tokens per frame, + the block's pooled token when it makes one
    assert media.shape[:2] == (2, 3 * (16 + (output != "reweighted")))
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    assert out.logits.shape[:2] == enc["input_ids"].shape and out.attention.shape == (2, 3, 64)
    changed = pixels.clone()
    changed[0, 1] = torch.rand_like(changed[0, 1])
    again = model(changed, enc["input_ids"], enc["attention_mask"], enc["labels"]).logits
    assert not torch.allclose(again[0], out.logits[0]) and torch.allclose(again[1], out.logits[1], atol=1e-6)
    # the loss is the LM's next-token cross-entropy on the target tokens only
    labels = enc["labels"]
    ref = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize("backbone", PROJECTOR_BACKBONES)
def test_each_lm_token_is_made_of_a_2x2_block_of_patches(backbone):
    model = build("base", backbone=backbone)
    blocks = model.backbone.token_patches(64)
    assert blocks.shape == (16, 4) and sorted(blocks.flatten().tolist()) == list(range(64))
    for row in blocks.tolist():
        r, c = zip(*(divmod(i, 8) for i in row), strict=False)
        assert max(r) - min(r) == 1 and max(c) - min(c) == 1 and min(r) % 2 == 0 and min(c) % 2 == 0


@pytest.mark.parametrize("backbone", PROJECTOR_BACKBONES)
def test_backbone_attention_probe_equals_the_llms_eager_attention(backbone):
    model = build("base", backbone=backbone)
    pixels, _ = batch(model, b=2, t=2)
    p = prompt(2, t=2)
    probed = model(pixels, p["input_ids"], p["attention_mask"], return_perceiver_attention=True).perceiver_attention
    assert probed.shape == (2, 2, 64)
    torch.testing.assert_close(probed.sum(-1), torch.ones(2, 2))
    bb = model.backbone
    bb.vlm.set_attn_implementation("eager")
    with torch.no_grad():
        media = bb.media_embeddings(model._vision_x(pixels, None))
        embeds, mask, where = bb._splice(media, p["input_ids"], p["attention_mask"])
        att = bb.vlm(inputs_embeds=embeds, attention_mask=mask, output_attentions=True).attentions[-1].mean(1)
    n = media.shape[1]
    blocks = bb.token_patches(64)
    for i, m in enumerate(where.tolist()):
        on_media = att[i, m + n :, m : m + n].mean(0).reshape(2, 16)
        expected = torch.zeros(2, 64)
        for k, patches in enumerate(blocks.tolist()):
            expected[:, patches] += on_media[:, k : k + 1] / 4
        expected /= expected.sum(-1, keepdim=True)
        torch.testing.assert_close(probed[i], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backbone", NEW)
def test_tiny_backbone_trains_reloads_and_generates(backbone, tmp_path):
    torch.set_num_threads(1)
    with chdir(tmp_path):
        summary = run_in_process(
            threads=1,
            result_path=None,
            source={},
            train_kwargs={
                "run": "gaze",
                "task": TASK,
                "out_dir": tmp_path / "models",
                "live_dir": tmp_path / "live",
                "model": {"backbone": backbone},
            },
        )
    assert summary["steps"] == 6
    curves = read_tsv_metrics(tmp_path / "live")
    kl = [v for _, v in curves["plots/metrics/train/kl.tsv"]]
    assert all(v > 0 for v in kl)
    cfg = json.loads((tmp_path / "models" / "config.json").read_text())
    assert cfg["params"]["model"]["backbone"] == backbone
    model, tok = load_trained(tmp_path / "models")
    assert model.config["backbone"] == backbone
    api = train_mod.model_api()
    step = train_mod.StepConfig(
        task=TASK,
        lam=100.0,
        kl_direction="gaze_to_attention",
        kl_reduction="sum",
        kl_eps=1e-8,
        device=torch.device("cpu"),
    )
    val = collate(ListSource().split["val"])
    with torch.no_grad():
        _, ce, kl_val = train_mod.forward_losses(model, val, tok, api, step, cache=None)
    assert ce.item() == pytest.approx(summary["best"]["val_ce"], rel=1e-4)
    assert kl_val.item() == pytest.approx(summary["best"]["val_kl"], rel=1e-4)
    pr = encode_prompt(tok, TASK, val["pixels"].shape[1], val["pixels"].shape[0])
    assert model.generate(val["pixels"], pr["input_ids"], pr["attention_mask"], max_new_tokens=3).shape[0] == 4


def test_presets_are_tied_to_their_backbones():
    assert {b: get_preset("tiny", b).lm["family"] for b in BACKBONES} == {
        "openflamingo": "opt",
        "openflamingo_noperceiver": "opt",
        "lavila": "gpt2",
        "internvl": "qwen2",
        "llava_next": "llama",
    }
    with pytest.raises(ValueError, match=r"'paper' is for backbone.*not 'internvl'.*internvl2_5-1b"):
        get_preset("paper", "internvl")
    with pytest.raises(ValueError, match="backbone: 'blip' is not one of"):
        get_preset("tiny", "blip")
    with pytest.raises(ValueError, match="model.backbone = 'blip': expected one of"):  # gazevlm.params
        build_model(params(backbone="blip"), "gaze", tokenizer())
    assert PRESETS["llava-next-vicuna-7b"].lm["hub"] == "llava-hf/llava-v1.6-vicuna-7b-hf"
    assert PRESETS["internvl3-1b"].lm["hub"] == "OpenGVLab/InternVL3-1B-hf"
    assert PRESETS["lavila-gpt2-xl"].lm["hub"] == "openai-community/gpt2-xl"
    assert PRESETS["lavila-gpt2-xl"].xattn_every == 3 and PRESETS["lavila-gpt2-xl"].perceiver["num_latents"] == 256


def test_internvl2_5_without_a_weights_dir_says_how_to_get_it():
    with pytest.raises(ValueError, match="no checkpoint on the hub.*weights_dir.*internvl2_5-1b/"):
        build_tokenizer(params(backbone="internvl", preset="internvl2_5-1b"), texts=[])


# --- real presets from a weights directory (shrunk copies) -------------------------------------------


def _save_tiny_vlm(kind: str, directory, image_size: int, patch_size: int):
    from transformers import AutoModelForImageTextToText

    from gazevlm.models.presets import tiny_lm_config
    from gazevlm.models.projector_vlm import tiny_vlm_config

    tok = tokenizer()
    family = {"internvl": "qwen2", "llava_next": "llama"}[kind]
    text = tiny_lm_config(
        family,
        vocab_size=len(tok) + 3,
        hidden=32,
        layers=2,
        heads=2,
        ffn=64,
        max_positions=1024,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    cfg = tiny_vlm_config(
        kind,
        {"width": 32, "layers": 2, "heads": 2, "mlp_ratio": 2.0},
        text,
        image_size,
        patch_size,
        media_token_id=len(tok) + 1,
    )
    torch.manual_seed(5)
    AutoModelForImageTextToText.from_config(cfg).save_pretrained(str(directory))
    tok.save_pretrained(str(directory))


def _save_lavila(root):
    from transformers import GPT2Config, GPT2LMHeadModel

    write_open_clip_dir(root / "clip-336", "ViT-L-14-336", (336, 14), layers=1, width=32, head_width=16, seed=7)
    tok = tokenizer()
    # GPT-2 XL is 48 layers of width 1600; 3 layers keep one cross-attention at every 3rd layer
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok) + 3,
            n_embd=32,
            n_layer=3,
            n_head=2,
            n_positions=128,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).save_pretrained(str(root / "gpt2-xl"))
    tok.save_pretrained(str(root / "gpt2-xl"))


REAL = {  # backbone -> (preset, writer of <weights_dir>, image size, patches per frame)
    "lavila": ("lavila-gpt2-xl", _save_lavila, 336, 576),
    "internvl": ("internvl2_5-1b", lambda r: _save_tiny_vlm("internvl", r / "internvl2_5-1b", 448, 14), 448, 1024),
    "llava_next": (
        "llava-next-vicuna-7b",
        lambda r: _save_tiny_vlm("llava_next", r / "llava-next-vicuna-7b", 336, 14),
        336,
        576,
    ),
}


@pytest.mark.parametrize("backbone", NEW)
def test_real_preset_loads_from_the_weights_directory_and_keeps_the_recipe(backbone, tmp_path):
    preset, write, size, n_patches = REAL[backbone]
    write(tmp_path)
    p = params(backbone=backbone, preset=preset, weights_dir=str(tmp_path))
    tok = build_tokenizer(p, texts=["ignored: a real preset uses its LM's tokenizer"])
    assert IMAGE in tok.get_vocab()
    torch.manual_seed(0)
    model = build_model(p, "gaze", tok)
    assert model.config["geometry"]["image_size"] == size and model.n_patches == n_patches
    bb = model.backbone
    trainable = {id(q) for q in model.trainable_parameters()}
    assert not any(id(q) in trainable for q in bb.vision_encoder.parameters())
    assert all(id(q) in trainable for q in bb.gaze_block.parameters())
    if backbone in FLAMINGO_BACKBONES:
        assert sum(layer is not None for layer in bb.lang_encoder.gated_cross_attn_layers) == 1  # every 3rd of 3
        assert len(bb.perceiver.layers) == 1 and bb.perceiver.latents.shape[0] == 256
        frozen_lm = bb.lang_encoder.old_decoder_blocks
    else:
        assert all(id(q) in trainable for q in bb.projector.parameters())
        frozen_lm = bb.language_model.layers
        assert model.config["pixel_mean"] == list(get_preset(preset, backbone).pixel_mean)
    assert not any(id(q) in trainable for q in frozen_lm.parameters())
    pixels = torch.rand(1, 2, 3, size, size)
    enc = encode_train(tok, CAPTIONS[:1], "activity", 2)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    assert out.attention.shape == (1, 2, n_patches)
    out.loss.backward()
    assert bb.gaze_block.query_proj.weight.grad is not None
    pr = encode_prompt(tok, "activity", 2, 1)
    assert model.generate(pixels, pr["input_ids"], pr["attention_mask"], max_new_tokens=2).shape[0] == 1


def test_real_preset_with_the_wrong_geometry_is_refused(tmp_path):
    _save_tiny_vlm("llava_next", tmp_path / "llava-next-vicuna-7b", 224, 14)
    p = params(backbone="llava_next", preset="llava-next-vicuna-7b", weights_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"image/patch size \(224, 14\).*expects \(336, 14\)"):
        build_model(p, "gaze", build_tokenizer(p, texts=[]))
