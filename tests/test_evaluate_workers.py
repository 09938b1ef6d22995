"""The evaluate stage on trained checkpoints: generating in worker processes from the features stage's
vision features writes the bytes that generating here from pixels writes."""

from __future__ import annotations

import shutil
from contextlib import chdir
from pathlib import Path

import pytest
import torch

from feature_fixtures import write_encoder, write_world
from gazevlm import features, layout
from gazevlm import params as gparams
from gazevlm import train as train_mod
from gazevlm.evaluate import stage
from train_fixtures import TASK, tiny_params

OUTPUTS = (layout.PREDICTIONS_DIR, layout.METRICS_DIR, layout.TABLES_DIR)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for d in OUTPUTS for p in sorted((root / d).rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_worker_processes_and_shared_features_write_the_same_bytes(tmp_path, monkeypatch):
    write_world(tmp_path)
    encoder = str(write_encoder(tmp_path / "vision.safetensors"))
    params = gparams.with_overrides(
        tiny_params(model={"vision_weights": encoder}, epochs=1, seeds=[0]),
        evaluate={"batch_size": 2, "max_new_tokens": 4, "bootstrap_samples": 50},
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with chdir(tmp_path):
            for run in params.runs:
                for seed in params.train.seeds:
                    train_mod.train(params, run, TASK, seed=seed, device="cpu", progress=False)
    finally:
        torch.set_num_threads(before)
    # the old way: one process, pixels (no features stage output)
    reference = stage.run(gparams.with_overrides(params, evaluate={"workers": 1}), root=tmp_path, synthetic=False)
    expected = _files(tmp_path)
    assert reference["workers"] == 1
    assert all(v.startswith("encoded on the fly") for v in reference["vision_inputs"].values())
    for d in OUTPUTS:
        shutil.rmtree(tmp_path / d)
    features.run(params, root=tmp_path)
    seen: list[int] = []  # intra-op threads of each scoring: 1 while workers generate, all once they are done
    score_one = stage.score_one
    monkeypatch.setattr(stage, "score_one", lambda *a: (seen.append(torch.get_num_threads()), score_one(*a))[1])
    torch.set_num_threads(2)
    try:
        report = stage.run(gparams.with_overrides(params, evaluate={"workers": 2}), root=tmp_path, synthetic=False)
        assert seen[-1] == 2 == torch.get_num_threads() and len(seen) == 3
    finally:
        torch.set_num_threads(before)
    assert report["workers"] == 2 and len(report["vision_inputs"]) == len(params.runs) == 3
    assert all(v.startswith("shared") for v in report["vision_inputs"].values()), report["vision_inputs"]
    got = _files(tmp_path)
    assert sorted(got) == sorted(expected) and len(got) > 10
    assert [name for name in got if got[name] != expected[name]] == []
