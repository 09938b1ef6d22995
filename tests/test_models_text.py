"""The word-level tokenizer and the OpenFlamingo-style prompts."""

from __future__ import annotations

import pytest
import torch

from gazevlm.models.text import IGNORE_INDEX, TASK_PROMPTS, decode_generated, encode_prompt, encode_train
from gazevlm.models.tokenizer import (
    EOC,
    IMAGE,
    build_tokenizer,
    build_word_tokenizer,
    load_tokenizer,
    save_tokenizer,
    special_token_ids,
    vocabulary_fingerprint,
)
from model_fixtures import CAPTIONS, tokenizer


def test_word_tokenizer_is_small_lowercase_and_keeps_special_tokens():
    tok = tokenizer()
    assert len(tok) < 60
    assert tok.tokenize(f"{IMAGE}Pick up the RED cup{EOC}") == [IMAGE, "pick", "up", "the", "red", "cup", EOC]
    assert tok.convert_ids_to_tokens(tok("a zebra")["input_ids"]) == ["<unk>", "<unk>"]
    ids = special_token_ids(tok)
    assert len(set(ids[k] for k in ("media_token_id", "eoc_token_id", "pad_token_id", "eos_token_id"))) == 4
    for prompt in TASK_PROMPTS.values():  # the prompts are always in the vocabulary
        assert tok.unk_token_id not in tok(prompt)["input_ids"]


def test_tiny_preset_builds_its_tokenizer_from_the_captions():
    from model_fixtures import params

    tok = build_tokenizer(params(), CAPTIONS)
    assert tok.get_vocab() == tokenizer().get_vocab()


def test_tokenizer_save_load_round_trip(tmp_path):
    tok = tokenizer()
    save_tokenizer(tok, tmp_path)
    back = load_tokenizer(tmp_path)
    assert back.get_vocab() == tok.get_vocab()
    assert vocabulary_fingerprint(back) == vocabulary_fingerprint(tok)
    assert vocabulary_fingerprint(build_word_tokenizer(CAPTIONS + ["a zebra"])) != vocabulary_fingerprint(tok)
    with pytest.raises(FileNotFoundError, match="no saved tokenizer"):
        load_tokenizer(tmp_path / "missing")


def test_train_encoding_masks_prompt_and_padding():
    tok = tokenizer()
    enc = encode_train(tok, ["pick up the red cup", "open the bottle"], "future", 5)
    ids, mask, labels = enc["input_ids"], enc["attention_mask"], enc["labels"]
    prompt_len = len(tok(f"{IMAGE}{TASK_PROMPTS['future']}")["input_ids"])
    assert ids[0, 0] == tok.convert_tokens_to_ids(IMAGE)
    assert (labels[:, :prompt_len] == IGNORE_INDEX).all()
    eoc = tok.convert_tokens_to_ids(EOC)
    assert tok.convert_ids_to_tokens(labels[0, prompt_len:].tolist()) == ["pick", "up", "the", "red", "cup", EOC]
    assert mask[1].sum() == prompt_len + 4 and (labels[1, prompt_len + 4 :] == IGNORE_INDEX).all()
    assert (ids[1, prompt_len + 4 :] == tok.pad_token_id).all() and ids[1, prompt_len + 3] == eoc
    short = encode_train(tok, ["pick up the red cup"], "future", 5, max_target_tokens=2)
    assert short["labels"][0, -1] == eoc and (short["labels"][0] != IGNORE_INDEX).sum() == 3


def test_train_encoder_tokenises_each_text_once_with_encode_trains_tensors():
    """The training loop's TrainEncoder: the same tensors as encode_train, batch after batch."""
    from gazevlm.models.text import TrainEncoder

    tok = tokenizer()
    encoder = TrainEncoder(tok, "future")
    batches = [
        ["pick up the red cup", "open the bottle"],
        ["open the bottle", "put down the cup", "pick up the red cup"],
    ]
    for texts in batches + batches:
        got, expected = encoder(texts, 5), encode_train(tok, texts, "future", 5)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    assert len(encoder._targets) == 3
    with pytest.raises(TypeError, match="one string"):
        encoder("pick up the cup", 5)


def test_prompt_is_answer_free_and_the_same_for_the_whole_batch():
    tok = tokenizer()
    p = encode_prompt(tok, "activity", 3, batch=4)
    assert p["input_ids"].shape[0] == 4 and (p["input_ids"] == p["input_ids"][0]).all()
    train = encode_train(tok, ["open the bottle"], "activity", 3)
    assert torch.equal(train["input_ids"][0, : p["input_ids"].shape[1]], p["input_ids"][0])
    with pytest.raises(KeyError, match="unknown task"):
        encode_prompt(tok, "cooking", 3, 1)
    with pytest.raises(ValueError, match="n_frames"):
        encode_train(tok, ["x"], "future", 0)
    with pytest.raises(TypeError, match="one string"):
        encode_train(tok, "pick up the cup", "future", 5)


def test_decode_generated_stops_at_end_of_chunk():
    tok = tokenizer()
    ids = tok(f"put the knife {EOC} the cup")["input_ids"]
    pad = tok.pad_token_id
    out = decode_generated(tok, torch.tensor([ids, ids[:2] + [pad] * (len(ids) - 2)]))
    assert out == ["put the knife", "put the"]
