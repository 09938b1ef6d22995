"""The features stage: each distinct frame encoded once, bit-identical to encoding on the fly in training,
evaluate and attention; used only for its own encoder and shards; inconsistent files named."""

from __future__ import annotations

import json
from contextlib import chdir
from pathlib import Path

import pytest
import torch

from feature_fixtures import SPLITS, WORDS, write_encoder, write_world
from gazevlm import features, layout
from gazevlm import params as gparams
from gazevlm import train as train_mod
from gazevlm.evaluate import predict as P
from gazevlm.models import build_model
from gazevlm.models.text import encode_prompt
from gazevlm.models.tokenizer import build_word_tokenizer
from gazevlm.train.data import MemorySource
from train_fixtures import FRAMES, TASK, tiny_params


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def world(tmp_path):
    write_world(tmp_path)
    params = tiny_params(model={"vision_weights": str(write_encoder(tmp_path / "vision.safetensors"))})
    report = features.run(params, root=tmp_path)
    return tmp_path, params, report


def model_for(params, run: str = "gaze", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(params, run, build_word_tokenizer(WORDS)).eval()


def test_each_frame_is_encoded_once_and_equals_the_encoder_on_the_fly(world):
    root, params, report = world
    assert report["computed"] and report["splits"] == {f"{TASK}/{s}": n for s, n in SPLITS.items()}
    assert report["frames"] == sum(n + FRAMES - 1 for n in SPLITS.values()) < report["frame_refs"]
    assert "seconds" not in json.loads((root / features.REPORT_FILE).read_text())  # results only
    model = model_for(params, seed=7)  # another seed, the same (file) encoder
    found, why = features.open_shared(
        model, [(TASK, s) for s in SPLITS], shards_root=root / layout.SHARDS_DIR, root=root / layout.FEATURES_DIR
    )
    assert found is not None, why
    source = MemorySource(TASK, root / layout.SHARDS_DIR)
    for split in SPLITS:
        ids, feats = found.window_features(TASK, split)
        assert ids == source._split(split)["window_id"]
        with torch.no_grad():  # the training cache's own call, a chunk of windows at a time
            expected = torch.cat([model.encode_vision(c.float().div_(255.0)) for c in source.frames(split).split(4)])
        assert feats.dtype == torch.float32 and torch.equal(feats, expected), split


@pytest.mark.parametrize("in_memory", [True, False])
def test_training_on_shared_features_gives_the_same_bytes(world, in_memory):
    root, params, _ = world
    params = tiny_params(model={"vision_weights": params.model.vision_weights}, in_memory=in_memory)
    out = {}
    with chdir(root):
        for name, feats in (("shared", layout.FEATURES_DIR), ("encoded", Path("nowhere"))):
            out[name] = train_mod.train(
                params,
                "gaze",
                TASK,
                out_dir=Path(name),
                live_dir=Path(f"live-{name}"),
                features_root=feats,
                device="cpu",
                progress=False,
            )
    shared, encoded = out["shared"], out["encoded"]
    assert shared["vision_features"] == {"source": str(layout.FEATURES_DIR)}
    assert encoded["vision_features"]["source"] == "encoded here"
    assert "has not run" in encoded["vision_features"]["reason"]
    assert shared["vision_cache"]["loaded"] == SPLITS["train"] + SPLITS["val"] and shared["vision_cache"]["misses"] == 0
    assert shared["best"] == encoded["best"] and shared["last"]["loss"] == encoded["last"]["loss"]
    assert (root / "shared/model.safetensors").read_bytes() == (root / "encoded/model.safetensors").read_bytes()


def test_feature_batches_give_the_outputs_of_pixel_batches(world):
    """evaluate and attention: same generations, logits and attention maps, bit for bit (the features are
    laid out in memory as the tower returns them)."""
    root, params, _ = world
    params = gparams.with_overrides(params, evaluate={"batch_size": 2})
    model = model_for(params)
    tok = build_word_tokenizer(WORDS)
    pixels = lambda task: P.test_batches(params, task, root / layout.SHARDS_DIR)  # noqa: E731
    test_batches = features.TestBatches(
        pixels, params.evaluate.batch_size, shards_root=root / layout.SHARDS_DIR, root=root / layout.FEATURES_DIR
    )
    got, how = test_batches(model, TASK)
    assert how.startswith("shared")
    for fb, pb in zip(got, pixels(TASK), strict=True):
        assert fb["window_id"] == pb["window_id"] and fb["text"] == pb["text"] and fb["meta"] == pb["meta"]
        prompt = encode_prompt(tok, TASK, FRAMES, len(fb["window_id"]))
        with torch.no_grad():
            a = model(
                None,
                prompt["input_ids"],
                prompt["attention_mask"],
                vision_features=fb["vision_features"],
                return_perceiver_attention=True,
            )
            b = model(pb["pixels"], prompt["input_ids"], prompt["attention_mask"], return_perceiver_attention=True)
        for name in ("logits", "attention", "perceiver_attention"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    with_features = P.predict(model, tok, got, TASK, max_new_tokens=4)
    with_pixels = P.predict(model, tok, pixels(TASK), TASK, max_new_tokens=4)
    assert with_features.equals(with_pixels)


def test_features_of_another_encoder_or_other_shards_are_not_used(world, tmp_path_factory):
    root, params, _ = world
    where = {"shards_root": root / layout.SHARDS_DIR, "root": root / layout.FEATURES_DIR}
    other = tiny_params(model={"vision_weights": str(write_encoder(root / "other.safetensors", seed=4))})
    found, why = features.open_shared(model_for(other), [(TASK, "train")], **where)
    assert found is None and "another vision encoder" in why
    # the test shards rewritten (another world): their manifest is not the one the features were read from
    other_root = tmp_path_factory.mktemp("other")
    write_world(other_root, seed=1)
    found, why = features.open_shared(
        model_for(params), [(TASK, "test")], shards_root=other_root / layout.SHARDS_DIR, root=root / layout.FEATURES_DIR
    )
    assert found is None and f"other {TASK}/test shards" in why
    # a random (per-seed) encoder: nothing is computed, and the stage says why
    report = features.run(tiny_params(), root=other_root)
    assert not report["computed"] and "random initialisation" in report["reason"]
    assert not (other_root / layout.FEATURES_DIR / features.TABLE_FILE).exists()
    found, why = features.open_shared(
        model_for(tiny_params()),
        [(TASK, "train")],
        shards_root=other_root / layout.SHARDS_DIR,
        root=other_root / layout.FEATURES_DIR,
    )
    assert found is None and "not computed" in why


def test_inconsistent_features_fail_naming_the_file(world):
    root, params, _ = world
    model = model_for(params)
    fdir = root / layout.FEATURES_DIR
    where = {"shards_root": root / layout.SHARDS_DIR, "root": fdir}
    index = features.index_path(TASK, "test", fdir)
    saved = json.loads(index.read_text())
    # a window of the shards missing from an index whose manifest matches
    index.write_text(json.dumps({**saved, "window_ids": saved["window_ids"][1:], "rows": saved["rows"][1:]}))
    found, _ = features.open_shared(model, [(TASK, "test")], **where)
    with pytest.raises(features.FeatureError, match=rf"{index}: window .* is not indexed"):
        list(features.feature_batches(found, TASK, "test", 2, root / layout.SHARDS_DIR))
    index.write_text(json.dumps({**saved, "rows": [[10**6] * FRAMES] * len(saved["rows"])}))
    with pytest.raises(features.FeatureError, match=rf"{index}: rows outside"):
        features.open_shared(model, [(TASK, "test")], **where)
    index.unlink()
    with pytest.raises(features.FeatureError, match=rf"{index}: missing"):
        features.open_shared(model, [(TASK, "test")], **where)
    table = fdir / features.TABLE_FILE
    table.write_bytes(table.read_bytes()[:-1000])  # cut short
    with pytest.raises(features.FeatureError, match=rf"{table}"):
        features.open_shared(model, [(TASK, "train")], **where)
