"""Generation and teacher forcing against a stand-in with the GazeVLM interface and known answers."""

import re

import pytest
import torch

from evaluate_fixtures import ANSWERS, WRONG, StandInModel, encode_prompt, encode_train, make_batches, make_tokenizer
from gazevlm import checkpoint, layout
from gazevlm.evaluate import predict as P

CODEC = P.TextCodec(encode_prompt=encode_prompt, encode_train=encode_train)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.mark.parametrize("echo", [False, True])
def test_predictions_are_the_decoded_continuation_only(tok, echo):
    model = StandInModel(tok, wrong={1}, echo=echo)
    df = P.predict(model, tok, make_batches(9, batch_size=4), "future", max_new_tokens=16, codec=CODEC)
    assert len(df) == 9 and df["window_id"].is_unique
    expected = [WRONG if i % len(ANSWERS) == 1 else ANSWERS[i % len(ANSWERS)] for i in range(9)]
    assert df["prediction"].tolist() == expected  # no prompt, nothing after eos
    assert df["reference"].tolist() == [ANSWERS[i % len(ANSWERS)] for i in range(9)]
    assert df["uid"].tolist()[:4] == ["vid0", "vid0", "vid0", "vid1"]
    assert [c["batch"] for c in model.calls] == [4, 4, 1]


def test_generation_settings_are_passed(tok):
    model = StandInModel(tok)
    df = P.predict(model, tok, make_batches(2), "future", max_new_tokens=3, num_beams=4, codec=CODEC)
    assert model.calls[0]["num_beams"] == 4 and model.calls[0]["max_new_tokens"] == 3
    assert df["prediction"].tolist() == [" ".join(ANSWERS[0].split()[:3]), " ".join(ANSWERS[1].split()[:3])]


def test_generate_takes_no_gaze(tok):
    """The call site hands generate exactly pixels, prompt ids, mask and decoding settings."""
    seen = {}

    class Spy(StandInModel):
        def generate(self, *args, **kwargs):
            seen["args"], seen["kwargs"] = len(args), set(kwargs)
            return super().generate(*args, **kwargs)

    P.predict(Spy(tok), tok, make_batches(1), "future", max_new_tokens=4, codec=CODEC)
    assert seen == {"args": 3, "kwargs": {"max_new_tokens", "num_beams"}}


def test_teacher_forced_prediction_is_labelled_and_separate(tok):
    model = StandInModel(tok, wrong=set(range(len(ANSWERS))))  # generation always wrong
    df = P.predict(model, tok, make_batches(4), "activity", max_new_tokens=16, codec=CODEC)
    assert (df["prediction"] == WRONG).all()
    # perfect next-token logits: teacher forcing reproduces the reference, which generation does not
    assert df["teacher_forced_prediction"].tolist() == df["reference"].tolist()
    off = P.predict(model, tok, make_batches(4), "activity", max_new_tokens=16, codec=CODEC, teacher_forcing=False)
    assert off["teacher_forced_prediction"].isna().all()


def test_teacher_forced_ids_use_shifted_logits():
    labels = torch.tensor([[-100, -100, 7, 8, -100]])
    logits = torch.zeros(1, 5, 10)
    logits[0, 1, 7] = logits[0, 2, 3] = 1.0  # position 1 predicts token 7, position 2 predicts 3
    assert P.teacher_forced_ids(logits, labels) == [[7, 3]]
    with pytest.raises(ValueError, match="not aligned"):
        P.teacher_forced_ids(torch.zeros(1, 4, 10), labels)


def test_continuation_strips_an_echoed_prompt_only():
    prompt = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert P.continuation(torch.tensor([[1, 2, 3, 9, 9], [1, 2, 3, 8, 0]]), prompt).tolist() == [[9, 9], [8, 0]]
    assert P.continuation(torch.tensor([[9, 9], [8, 0]]), prompt).tolist() == [[9, 9], [8, 0]]


def test_bad_batches_are_reported(tok):
    model = StandInModel(tok)
    batch = make_batches(2)[0]
    with pytest.raises(ValueError, match=r"pixels must be \(B, T, 3, H, W\)"):
        P.predict(model, tok, [{**batch, "pixels": batch["pixels"][:, 0]}], "future", max_new_tokens=4, codec=CODEC)
    with pytest.raises(ValueError, match="2 clips, 1 texts"):
        P.predict(model, tok, [{**batch, "text": batch["text"][:1]}], "future", max_new_tokens=4, codec=CODEC)
    with pytest.raises(ValueError, match="twice"):
        P.predict(model, tok, [batch, batch], "future", max_new_tokens=4, codec=CODEC)


def test_missing_checkpoint_names_the_directory(tmp_path):
    run_dir = layout.run_dir("gaze", "future", 1, tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{run_dir}: no trained model here")):
        checkpoint.load_trained(run_dir)
