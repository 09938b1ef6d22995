"""The extraction against the real (tiny, random) GazeVLM, fed by the real test loader: the contract
between gazevlm.models / gazevlm.shards and the attention stage."""

from __future__ import annotations

import numpy as np
import torch

import attention_fixtures as F
from gazevlm import layout, params, shards
from gazevlm.attention import extract, stage, testset
from gazevlm.models import build_model
from gazevlm.models.tokenizer import build_word_tokenizer


def test_real_model_attention_through_the_stage_path(tmp_path):
    F.write_shards(tmp_path, "future", n_windows=3)
    frames, _ = testset.read_test_windows("future", tmp_path / layout.SHARDS_DIR)
    tokenizer = build_word_tokenizer(["pick up the cup", "put the cup down"])
    p = params.from_dict({"model": {"vision_weights": None}})  # random tower: no pretrain stage here
    for run, sources in (("base", ["perceiver"]), ("gaze", ["block", "perceiver"])):
        torch.manual_seed(0)
        model = build_model(p, run, tokenizer)
        loader = shards.make_loader(
            ("future", "test"), batch_size=2, with_gaze=False, shuffle=False, root=tmp_path / layout.SHARDS_DIR
        )
        ids, maps = extract.collect_attention(model, loader, extract.prompt_for(tokenizer, "future"))
        assert sorted(maps) == sources and sorted(ids) == sorted(frames.window_ids.tolist())
        for m in maps.values():
            assert m.shape == (3, 5, 64) and np.allclose(m.sum(-1), 1.0, atol=1e-5)
        result, counts = stage.score_run(run, "future", frames, ids, maps, None, 10, 0.01)
        assert counts["frames_scored"] == int(frames.valid.sum())
        overlap = result.metrics[result.primary_source()]["topk_overlap"]
        assert np.isfinite(overlap[frames.valid]).all()
