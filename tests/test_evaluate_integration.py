"""predict.py against the real pieces: a tiny GazeVLM from gazevlm.models, the real prompt codec and a
test shard read back through gazevlm.shards (random weights, so only the plumbing is checked)."""

import cv2
import numpy as np
import pytest
import torch

from evaluate_fixtures import ANSWERS
from gazevlm import layout, shards
from gazevlm import params as gparams
from gazevlm.evaluate import predict as P
from gazevlm.geometry import vision_geometry
from gazevlm.models import BACKBONES, build_model
from gazevlm.models.tokenizer import build_word_tokenizer


def write_test_shard(root, task="future", n=3, frames=5):
    size, patch = vision_geometry("tiny")
    grid = size // patch
    writer = shards.ShardSetWriter(layout.shard_pattern(task, "test", root), max_samples=2)
    rng = np.random.default_rng(0)
    for i in range(n):
        jpegs = [
            cv2.imencode(".jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))[1].tobytes()
            for _ in range(frames)
        ]
        wid = layout.window_id(task, f"vid{i}", i * 30)
        meta = {
            "window_id": wid,
            "uid": f"vid{i}",
            "task": task,
            "split": "test",
            "frames": list(range(frames)),
            "timestamps": list(range(frames)),
            "keyframe_ids": [f"k{j}" for j in range(frames)],
            "target_text": ANSWERS[i],
        }
        writer.write(
            shards.encode_sample(
                wid,
                jpegs,
                np.full((frames, grid, grid), 1 / grid**2),
                np.ones(frames, bool),
                np.zeros((frames, 8, 8)),
                meta,
            )
        )
    writer.close()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_predict_with_the_real_model_codec_and_loader(tmp_path, backbone, run="gaze"):
    write_test_shard(tmp_path)
    params = gparams.with_overrides(
        gparams.Params(), evaluate={"batch_size": 2}, model={"backbone": backbone, "vision_weights": None}
    )
    tok = build_word_tokenizer(ANSWERS)
    torch.manual_seed(0)
    model = build_model(params, run, tok).eval()
    batches = list(P.test_batches(params, "future", root=tmp_path))
    assert [len(b["window_id"]) for b in batches] == [2, 1] and "gaze_target" not in batches[0]
    df = P.predict(model, tok, batches, "future", max_new_tokens=5)
    assert sorted(df["window_id"]) == [layout.window_id("future", f"vid{i}", i * 30) for i in range(3)]
    assert df["reference"].tolist() == ANSWERS[:3] and df["uid"].tolist() == ["vid0", "vid1", "vid2"]
    assert all(isinstance(t, str) and len(t.split()) <= 5 for t in df["prediction"])
    assert all(isinstance(t, str) for t in df["teacher_forced_prediction"])
    # prompts carry no answer: the generated text does not depend on the reference
    swapped = [{**b, "text": ["zzz"] * len(b["text"])} for b in batches]
    again = P.predict(model, tok, swapped, "future", max_new_tokens=5, teacher_forcing=False)
    assert again["prediction"].tolist() == df["prediction"].tolist()
