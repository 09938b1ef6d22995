"""GazeVLM on the tiny preset: interface, gaze-free signatures, parity with open_flamingo, block variants."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re

import pytest
import torch
from open_flamingo.src.flamingo import Flamingo
from open_flamingo.src.helpers import PerceiverResampler

from gazevlm import params as P
from gazevlm.models import PRESETS, build_model, check_model_config, get_preset, load_vision_weights, save_model_config
from gazevlm.models.compat import adapt_language_model
from gazevlm.models.gaze_block import GazeAttentionLayer, GazeBlock
from gazevlm.models.presets import build_language_model, build_vision_encoder
from gazevlm.models.tokenizer import special_token_ids
from model_fixtures import batch, build, params, prompt, set_gates, tiny_preset, tokenizer


def test_forward_returns_ce_logits_and_a_distribution_per_frame():
    model = build("gaze")
    pixels, enc = batch(model, b=2, t=4)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (*enc["input_ids"].shape, len(tokenizer()))
    assert out.attention.shape == (2, 4, 64) and out.attention.dtype == torch.float32
    assert (out.attention >= 0).all()
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 4))
    assert out.perceiver_attention is None


def test_base_run_has_no_block_and_no_attention():
    model = build("base")
    pixels, enc = batch(model)
    assert model.backbone.gaze_block is None
    assert model(pixels, enc["input_ids"], enc["attention_mask"]).attention is None
    assert model.config["block"] is False and model.config["query"] is None


@pytest.mark.parametrize("method", ["forward", "generate"])
def test_gaze_cannot_enter_forward_or_generate(method):
    model = build("gaze")
    sig = inspect.signature(getattr(model, method))
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in sig.parameters.values())
    assert not any(w in name for name in sig.parameters for w in ("gaze", "heatmap", "target", "valid"))
    pixels, enc = batch(model)
    kwargs = dict(max_new_tokens=2) if method == "generate" else {}
    with pytest.raises(TypeError):
        getattr(model, method)(pixels, enc["input_ids"], enc["attention_mask"], gaze=torch.ones(3, 3, 64), **kwargs)


def test_vision_matters_once_gates_open_and_cached_features_equal_pixels():
    model = build("gaze")
    pixels, enc = batch(model)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    feats = model.encode_vision(pixels)
    assert feats.shape == (3, 3, 64, model.config["vision_dim"])
    cached = model(None, enc["input_ids"], enc["attention_mask"], enc["labels"], vision_features=feats)
    torch.testing.assert_close(cached.logits, out.logits)
    torch.testing.assert_close(cached.attention, out.attention)
    other = model(torch.rand_like(pixels), enc["input_ids"], enc["attention_mask"])
    assert not torch.allclose(other.logits, out.logits)


def _stock_flamingo(model):
    """open_flamingo's own Flamingo on fresh modules of the same shapes, loaded with `model`'s weights."""
    preset = tiny_preset()
    tok = tokenizer()
    ids = special_token_ids(tok)
    vision = build_vision_encoder(preset)
    lm = adapt_language_model(
        build_language_model(preset, len(tok), {k: ids[k] for k in ("pad_token_id", "eos_token_id", "bos_token_id")})
    )
    vis_dim = model.config["vision_dim"]
    stock = Flamingo(vision, lm, ids["eoc_token_id"], ids["media_token_id"], vis_dim=vis_dim)
    stock.perceiver = PerceiverResampler(dim=vis_dim, max_num_frames=preset.max_frames, **preset.perceiver)
    from open_flamingo.src.helpers import GatedCrossAttentionBlock

    lm.gated_cross_attn_layers = torch.nn.ModuleList(
        GatedCrossAttentionBlock(dim=stock.lang_dim, dim_visual=vis_dim, **preset.xattn) for _ in lm.old_decoder_blocks
    )
    lm.init_flamingo_layers(False)
    stock.load_state_dict(model.backbone.state_dict(), strict=True)
    return stock.eval()


def test_parity_with_open_flamingo_single_frame():
    model = build("base")
    stock = _stock_flamingo(model)
    pixels, enc = batch(model, b=3, t=1)
    ours = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    vision_x = model._normalise(pixels)[:, None]  # (B, 1, F=1, 3, H, W): the stock layout
    ref = stock(vision_x, enc["input_ids"], attention_mask=enc["attention_mask"], labels=enc["labels"])
    torch.testing.assert_close(ours.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(ours.loss, ref.loss, rtol=0, atol=0)
    p = prompt(3, t=1)
    gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=5)
    ref_gen = stock.generate(
        vision_x,
        p["input_ids"],
        attention_mask=p["attention_mask"],
        max_new_tokens=5,
        pad_token_id=tokenizer().pad_token_id,
        suppress_tokens=[stock.media_token_id],
    )  # as GazeVLM.generate: never <image>
    assert torch.equal(gen, ref_gen[:, p["input_ids"].shape[1] :])


def test_parity_with_open_flamingo_components_multi_frame():
    """F > 1 frames: stock vision encoder -> stock PerceiverResampler -> stock conditioned LM."""
    model = build("base")
    stock = _stock_flamingo(model)
    pixels, enc = batch(model, b=2, t=4)
    ours = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"])
    x = model._normalise(pixels)
    with torch.no_grad():
        tokens = stock.vision_encoder(x.flatten(0, 1))[1]
    vis = stock.perceiver(tokens.reshape(2, 1, 4, *tokens.shape[1:]))
    for layer in stock.lang_encoder._get_decoder_layers():
        layer.condition_vis_x(vis)
    stock._condition_media_locations(enc["input_ids"])
    ref = stock.lang_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=enc["labels"])
    stock.lang_encoder.clear_conditioned_layers()
    torch.testing.assert_close(ours.logits, ref.logits, rtol=0, atol=0)


def test_block_is_built_on_a_forked_rng_so_runs_differ_only_in_the_block():
    torch.manual_seed(5)
    base = build("base", seed=5, open_gates=False)
    after_base = torch.rand(3)
    gaze = build("gaze", seed=5, open_gates=False)
    after_gaze = torch.rand(3)
    assert torch.equal(after_base, after_gaze)
    gaze_state = {k: v for k, v in gaze.state_dict().items() if not k.startswith("backbone.gaze_block.")}
    base_state = base.state_dict()
    assert gaze_state.keys() == base_state.keys()
    assert all(torch.equal(gaze_state[k], base_state[k]) for k in base_state)


def test_global_query_sees_the_whole_sequence_frame_query_only_its_frame():
    for query, couples in (("global", True), ("frame", False)):
        model = build("gaze", query=query)
        pixels, enc = batch(model, b=1, t=3)
        a = model(pixels, enc["input_ids"], enc["attention_mask"]).attention
        changed = pixels.clone()
        changed[:, 0] = torch.rand_like(changed[:, 0])
        b = model(changed, enc["input_ids"], enc["attention_mask"]).attention
        assert not torch.allclose(a[:, 0], b[:, 0])
        assert (not torch.allclose(a[:, 1:], b[:, 1:])) == couples, query


def test_block_outputs_pooled_and_reweighted():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 32)
    torch.manual_seed(1)
    pooled = GazeBlock(32, heads=4, output="pooled")(x)
    assert pooled.features.shape == (2, 3, 17, 32) and torch.equal(pooled.features[:, :, :16], x)
    assert pooled.tokens is None
    torch.manual_seed(1)
    to_lm = GazeBlock(32, heads=4, output="pooled_lm")(x)
    assert to_lm.features is x and to_lm.tokens.shape == (2, 3, 32)
    torch.testing.assert_close(to_lm.tokens, torch.nn.functional.layer_norm(pooled.features[:, :, 16], (32,)))
    block = GazeBlock(32, heads=4, output="reweighted")
    reweighted, tokens, att = block(x)
    torch.testing.assert_close(reweighted, x * 16 * att.unsqueeze(-1))
    for layer in block.layers:  # a zero query gives uniform attention: the re-weighting is the identity
        torch.nn.init.zeros_(layer.to_q.weight)
    same, _, att = block(x)
    torch.testing.assert_close(att, torch.full_like(att, 1 / 16))
    torch.testing.assert_close(same, x)


def test_block_output_attended_is_only_what_the_attention_looked_at():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 32)
    block = GazeBlock(32, heads=4, output="attended")
    features, tokens, att = block(x)
    assert tokens is None and torch.equal(features[:, :, :16], x)
    torch.testing.assert_close(features[:, :, 16], (att.unsqueeze(-1) * x).sum(2))
    # the query's residual never leaves: the token moves with the query only through the attention
    last = block.layers[-1]
    assert last.attention_only and not hasattr(last, "to_v")
    with torch.no_grad():
        block.query_proj.bias.add_(5.0)
        for layer in block.layers:
            torch.nn.init.zeros_(layer.to_q.weight)
    features, _, att = block(x)
    torch.testing.assert_close(features[:, :, 16], x.mean(2))


def test_head_reduce_max_is_renormalised():
    torch.manual_seed(0)
    att = GazeBlock(32, heads=4, head_reduce="max")(torch.randn(2, 3, 16, 32)).attention
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 3))


@pytest.mark.parametrize("key,value", [("query", "frames"), ("block_output", "tokens"), ("head_reduce", "sum")])
def test_bad_block_params_are_named(key, value):
    with pytest.raises(ValueError, match=key):
        build("gaze", **{key: value})


def test_efficient_attention_equals_standard_multi_head_attention():
    """The layer never materialises keys/values; it must equal projections + softmax attention + FF."""
    torch.manual_seed(0)
    layer = GazeAttentionLayer(32, heads=4)
    x, q = torch.randn(6, 10, 32), torch.randn(6, 32)
    new_q, attn = layer(q, x)
    heads = lambda t: t.view(6, -1, 4, 8).transpose(1, 2)  # noqa: E731
    qq, k, v = heads(layer.to_q(layer.norm_query(q))[:, None]), heads(layer.to_k(x)), heads(layer.to_v(x))
    ref_attn = (qq @ k.transpose(-1, -2) * 8**-0.5).softmax(-1)
    ref_q = q + layer.to_out((ref_attn @ v).reshape(6, 32))
    ref_q = ref_q + layer.ff(ref_q)
    torch.testing.assert_close(attn, ref_attn.squeeze(2))
    torch.testing.assert_close(new_q, ref_q)


@pytest.mark.parametrize("backbone", ["openflamingo", "openflamingo_noperceiver"])
@pytest.mark.parametrize("block_output", ["pooled", "pooled_lm", "reweighted", "attended"])
def test_backbones_train_end_to_end(backbone, block_output):
    model = build("gaze", backbone=backbone, block_output=block_output).train()
    pixels, enc = batch(model, b=2, t=3)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"], return_perceiver_attention=True)
    (out.loss + out.attention[..., 0].sum()).backward()
    f = model.backbone
    assert all(p.grad is None for p in f.vision_encoder.parameters())  # frozen (params default)
    assert all(p.grad is not None for p in f.gaze_block.parameters())
    assert all(p.grad is not None for p in f.perceiver.parameters())
    assert out.perceiver_attention.shape == (2, 3, 64)
    torch.testing.assert_close(out.perceiver_attention.sum(-1), torch.ones(2, 3))


@pytest.mark.parametrize(
    "backbone,block_output,tokens",
    [
        ("openflamingo_noperceiver", "pooled", 3 * 65),
        ("openflamingo_noperceiver", "reweighted", 3 * 64),
        ("openflamingo_noperceiver", "pooled_lm", 3 * 64 + 3),
        ("openflamingo", "pooled_lm", 16 + 3),
        ("openflamingo", "pooled", 16),
        ("openflamingo_noperceiver", "attended", 3 * 65),
    ],
)
def test_visual_tokens_reaching_cross_attention(backbone, block_output, tokens):
    """no Perceiver: every patch token of every frame (+ pooled tokens); Perceiver: its 16 latents."""
    model = build("gaze", backbone=backbone, block_output=block_output)
    seen = {}
    layer = model.backbone.lang_encoder.gated_cross_attn_layers[0]
    layer.register_forward_hook(lambda mod, args, out: seen.update(media=args[1].shape))
    pixels, enc = batch(model, b=2, t=3)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], return_perceiver_attention=True)
    assert seen["media"] == (2, 1, tokens, model.config["vision_dim"])
    torch.testing.assert_close(out.perceiver_attention.sum(-1), torch.ones(2, 3))


def test_perceiver_attention_is_uniform_when_latents_ignore_content():
    model = build("base")
    last = model.backbone.perceiver.layers[-1][0]
    torch.nn.init.zeros_(last.to_q.weight)
    pixels, enc = batch(model, b=1, t=2)
    out = model(pixels, enc["input_ids"], enc["attention_mask"], return_perceiver_attention=True)
    torch.testing.assert_close(out.perceiver_attention, torch.full((1, 2, 64), 1 / 64))


def test_generate_returns_the_continuation_of_a_manual_greedy_decode():
    model = build("gaze")
    pixels, _ = batch(model, b=2, t=3)
    p = prompt(2)
    gen = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=6)
    ids, mask = p["input_ids"], p["attention_mask"]
    eoc = model.backbone.eoc_token_id
    for step in range(gen.shape[1]):
        logits = model(pixels, ids, mask).logits[:, -1]
        logits[:, model.backbone.media_token_id] = -torch.inf  # generate never emits <image>
        nxt = logits.argmax(-1)
        done = (ids[:, p["input_ids"].shape[1] :] == eoc).any(-1) if step else torch.zeros(2, dtype=torch.bool)
        nxt = torch.where(done, torch.full_like(nxt, model.pad_token_id), nxt)
        ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    assert torch.equal(gen, ids[:, p["input_ids"].shape[1] :])
    beams = model.generate(pixels, p["input_ids"], p["attention_mask"], max_new_tokens=4, num_beams=2)
    assert beams.shape[0] == 2 and beams.shape[1] <= 4
    # a forward after generate sees no stale cached media
    assert not model.backbone.lang_encoder._use_cached_vision_x


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda px: px[:, :, :, :32, :32], "pixels must be"),
        (lambda px: px * 255, r"\[0, 1\]"),
        (lambda px: px[0], "pixels must be"),
    ],
)
def test_bad_pixels_are_rejected(bad, match):
    model = build("gaze")
    pixels, enc = batch(model)
    with pytest.raises(ValueError, match=match):
        model(bad(pixels), enc["input_ids"], enc["attention_mask"])


def test_exactly_one_of_pixels_and_features():
    model = build("gaze")
    pixels, enc = batch(model)
    with pytest.raises(ValueError, match="exactly one"):
        model(pixels, enc["input_ids"], enc["attention_mask"], vision_features=model.encode_vision(pixels))
    with pytest.raises(ValueError, match="vision_features must be"):
        model(None, enc["input_ids"], enc["attention_mask"], vision_features=torch.zeros(3, 3, 10, 128))


def test_too_many_frames_fail_clearly():
    model = build("gaze", backbone="openflamingo_noperceiver")
    pixels, enc = batch(model, b=1, t=9)
    with pytest.raises(ValueError, match="at most 8"):
        model(pixels, enc["input_ids"], enc["attention_mask"])


def test_trainable_parameters_follow_the_recipe():
    model = build("gaze")
    trainable = {id(p) for p in model.trainable_parameters()}
    f = model.backbone
    assert not any(id(p) in trainable for p in f.vision_encoder.parameters())
    for module in (f.gaze_block, f.perceiver, f.lang_encoder):  # tiny LM is random: trained whole
        assert all(id(p) in trainable for p in module.parameters())
    units = model.fsdp_units()
    assert f.gaze_block in units and len(units) == 3 + len(f.lang_encoder.old_decoder_blocks)


def test_unfrozen_vision_encoder_is_trained():
    torch.manual_seed(0)
    model = build_model(P.with_overrides(params(), train={"freeze_vision": False}), "gaze", tokenizer())
    set_gates(model, 0.8)  # open whatever the preset's initial gates: vision must reach the loss
    pixels, enc = batch(model, b=1, t=2)
    model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"]).loss.backward()
    conv = model.backbone.vision_encoder.conv1.weight
    assert conv.requires_grad and conv.grad is not None and conv.grad.abs().sum() > 0


def test_model_config_round_trip_and_mismatch_messages(tmp_path):
    model = build("gaze")
    path = save_model_config(model, tmp_path)
    check_model_config(tmp_path, model)
    check_model_config(json.loads(path.read_text()), model)
    with pytest.raises(ValueError, match=r"block: checkpoint True vs model False"):
        check_model_config(tmp_path, build("base"))
    with pytest.raises(ValueError, match=r"query: checkpoint 'global' vs model 'frame'"):
        check_model_config(tmp_path, build("gaze", query="frame"))
    paper_like = {**model.config, "preset": "paper", "geometry": {"image_size": 224, "patch_size": 14}}
    with pytest.raises(ValueError, match="preset: checkpoint 'paper' vs model 'tiny'"):
        check_model_config(paper_like, model)
    path.write_text(path.read_text()[:20])
    with pytest.raises(ValueError, match="not valid JSON"):
        check_model_config(tmp_path, model)
    with pytest.raises(FileNotFoundError, match="model config missing"):
        check_model_config(tmp_path / "elsewhere", model)


def test_unknown_backbone_and_preset_are_named():
    with pytest.raises(ValueError, match="model.backbone = 'llava'"):
        build("gaze", backbone="llava")
    with pytest.raises(KeyError, match="params.model.preset"):
        build_model(params(preset="huge"), "gaze", tokenizer())


# --- the tiny preset's pretrained vision encoder (params.model.vision_weights, gazevlm.pretrain) ---------


def _save_tower(path, preset, seed: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous().clone() for k, v in build_vision_encoder(preset).visual.state_dict().items()}
    save_file(state, str(path))
    return state


@pytest.mark.parametrize("backbone", ["openflamingo", "openflamingo_noperceiver", "lavila"])
def test_tiny_preset_loads_the_vision_weights_it_is_given(backbone, tmp_path):
    preset = get_preset("tiny", backbone)
    assert preset.pretrainable_vision
    path = tmp_path / "vision.safetensors"
    saved = _save_tower(path, preset, seed=123)  # another seed than build's: loading must overwrite it all
    tower = build("gaze", backbone=backbone, vision_weights=str(path)).backbone.vision_encoder.state_dict()
    assert set(tower) == set(saved) and all(torch.equal(tower[k], saved[k]) for k in saved)
    random = build("gaze", backbone=backbone).backbone.vision_encoder.state_dict()  # vision_weights None
    assert not all(torch.equal(random[k], saved[k]) for k in saved)


def test_missing_vision_weights_name_the_file(tmp_path):
    path = tmp_path / "encoder" / "vision.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path)) + ".*pretrain stage.*vision_weights: null"):
        build("gaze", vision_weights=str(path))


def test_vision_weights_of_another_shape_or_damaged_are_named(tmp_path):
    tiny = get_preset("tiny")
    wide = tmp_path / "wide.safetensors"  # e.g. an encoder pretrained for an older, wider preset
    _save_tower(wide, dataclasses.replace(tiny, vision={**tiny.vision, "width": 2 * tiny.vision["width"]}), seed=1)
    encoder = build_vision_encoder(tiny)
    before = {k: v.clone() for k, v in encoder.visual.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=re.escape(str(wide)) + r": vision weights do not fit preset 'tiny'.*"
        r"conv1\.weight.*rerun the pretrain stage",
    ):
        load_vision_weights(encoder, tiny, wide)
    assert all(torch.equal(v, before[k]) for k, v in encoder.visual.state_dict().items())  # nothing half-loaded
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=re.escape(str(damaged)) + ": unreadable vision weights"):
        load_vision_weights(encoder, tiny, damaged)


def test_presets_without_a_pretrainable_tower_ignore_vision_weights(tmp_path):
    missing = tmp_path / "no-such-encoder.safetensors"  # the params default names a file these never read
    for name in ("paper", "lavila-gpt2-xl"):
        assert not PRESETS[name].pretrainable_vision
    assert not load_vision_weights(build_vision_encoder(get_preset("tiny")), PRESETS["paper"], missing)
    for backbone in ("internvl", "llava_next"):  # their towers are not open_clip's: pretrain does not make them
        assert not get_preset("tiny", backbone).pretrainable_vision
        assert build("base", backbone=backbone, vision_weights=str(missing)).config["backbone"] == backbone
    assert not load_vision_weights(build_vision_encoder(get_preset("tiny")), get_preset("tiny"), None)


def test_cross_attention_gates_start_at_the_presets_value():
    model = build("base", open_gates=False)
    gates = [
        g
        for layer in model.backbone.lang_encoder.gated_cross_attn_layers
        if layer is not None
        for g in (layer.attn_gate, layer.ff_gate)
    ]
    assert gates and all(float(g.detach()) == get_preset("tiny").xattn_gate_init == 1.0 for g in gates)
    assert PRESETS["paper"].xattn_gate_init == 0.0  # open_flamingo's: the pretrained LM starts unchanged


def test_block_patch_layers_adapt_the_patches_the_block_attends_over_and_passes_on():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 32)
    block = GazeBlock(32, heads=4, output="pooled", patch_layers=1)
    features, _, att = block(x)
    adapted = block.patch_layers[0](x.reshape(6, 16, 32)).view(2, 3, 16, 32)
    torch.testing.assert_close(features[:, :, :16], adapted)  # the Perceiver reads the adapted patches
    # the gaze loss reaches the patch layer: it shapes the features, not only where the query looks
    (att[..., 0].sum()).backward()
    assert all(p.grad is not None for p in block.patch_layers.parameters())
    assert len(GazeBlock(32, heads=4).patch_layers) == 0
    with pytest.raises(ValueError, match="block_patch_layers"):
        GazeBlock(32, heads=4, patch_layers=-1)
    model = build("gaze", block_patch_layers=1)
    assert model.config["block_patch_layers"] == 1 and len(model.backbone.gaze_block.patch_layers) == 1
    assert build("base", block_patch_layers=1).config["block_patch_layers"] is None


def test_block_patch_layers_default_to_the_presets_the_papers_block_for_real_presets():
    assert P.from_dict({}).model.block_patch_layers is None  # params.yaml's null: the preset decides
    assert get_preset("tiny").block_patch_layers == 2
    assert all(p.block_patch_layers == 0 for name, p in PRESETS.items() if name != "tiny")
    tiny = build("gaze")  # the preset's 2, recorded as the number the model was built with
    assert tiny.config["block_patch_layers"] == 2 and len(tiny.backbone.gaze_block.patch_layers) == 2
    # a real preset's shape (scaled down here) keeps the paper's block unless params ask for layers
    paper_like = tiny_preset(block_patch_layers=0)
    assert len(build("gaze", preset=paper_like).backbone.gaze_block.patch_layers) == 0
    assert len(build("gaze", preset=paper_like, block_patch_layers=1).backbone.gaze_block.patch_layers) == 1
    assert build("gaze", block_patch_layers=0).config["block_patch_layers"] == 0


def test_patch_layer_is_torchs_transformer_layer_in_values_gradients_and_initialisation():
    from gazevlm.models.gaze_block import PatchLayer

    torch.manual_seed(3)
    ours = PatchLayer(32, 4, 48)
    torch.manual_seed(3)
    ref = torch.nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, batch_first=True, norm_first=True)
    for (name, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # same init: old checkpoints load too
    with torch.no_grad():  # non-trivial biases and norms, so a wrong slice or order shows
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 16, 32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ValueError, match="masks"):  # a mask would be ignored by the lean forward: refused
        ours(x, src_key_padding_mask=torch.zeros(5, 16, dtype=torch.bool))
