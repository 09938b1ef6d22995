"""The pretrain stage: the tiny vision encoder learns from TRAIN keyframes and captions only, its weights
load into the model, the run is reproducible, and real presets / a disabled stage train nothing."""

import json
from pathlib import Path

import cv2
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gazevlm import layout, numerics, pretrain
from gazevlm import params as gparams
from gazevlm.geometry import patch_grid, vision_geometry
from gazevlm.models import load_vision_weights, presets
from gazevlm.shards import ShardSetWriter, encode_sample

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (0, 0, 220), "blue": (220, 0, 0)}  # BGR for cv2
FRAMES = 3


def frame(colour: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    size = vision_geometry("tiny")[0]
    img = np.full((size, size, 3), 90, np.uint8)
    r, c = rng.integers(0, size - 32, 2)
    img[r : r + 32, c : c + 32] = COLOURS[colour]
    return cv2.imencode(".jpg", img)[1].tobytes()


def write_world(root: Path, n_train: int = 16, val_caption: str = "the camera wearer opens the green bottle") -> None:
    """Activity shards (train: red cups and blue bowls; val: one caption that must never be read) and
    the annotate stage's captions table."""
    grid = patch_grid("tiny")
    captions = []
    for split, n in (("train", n_train), ("val", 4)):
        writer = ShardSetWriter(layout.shard_pattern("activity", split, root / layout.SHARDS_DIR), 8)
        for w in range(n):
            colour = ("red", "blue")[w % 2]
            text = (
                val_caption
                if split == "val"
                else f"the camera wearer picks up the {colour} {'cup' if colour == 'red' else 'bowl'}"
            )
            kids = [f"{split}{w}_{t}" for t in range(FRAMES)]
            captions += [{"keyframe_id": k, "caption": text} for k in kids]
            meta = {
                "window_id": f"activity_{split}{w}_{w:07d}",
                "uid": f"{split}-vid{w // 4}",
                "task": "activity",
                "split": split,
                "frames": list(range(FRAMES)),
                "timestamps": [float(t) for t in range(FRAMES)],
                "keyframe_ids": kids,
                "target_text": text,
            }
            writer.write(
                encode_sample(
                    meta["window_id"],
                    [frame(colour, 10 * w + t) for t in range(FRAMES)],
                    np.full((FRAMES, grid, grid), 1.0 / grid**2, np.float32),
                    np.ones(FRAMES, bool),
                    np.zeros((FRAMES, 8, 8), np.float16),
                    meta,
                )
            )
        writer.close()
    (root / layout.ANNOTATE_DIR).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(captions).to_parquet(root / layout.ANNOTATE_DIR / "captions.parquet")


def small(**pretrain_):
    return gparams.with_overrides(gparams.Params(), pretrain={"steps": 40, "batch_size": 8, "lr": 3e-3, **pretrain_})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    write_world(root)
    return root, pretrain.run(small(), root=root)


def test_only_train_keyframes_with_captions_are_used(pretrained):
    root, _ = pretrained
    data = pretrain.train_keyframes(
        shards_root=root / layout.SHARDS_DIR, captions_path=root / layout.ANNOTATE_DIR / "captions.parquet"
    )
    assert len(data.captions) == 16 * FRAMES  # every train keyframe once, no val one
    assert not any("green bottle" in c for c in data.captions)
    assert set(data.uids) == {f"train-vid{i}" for i in range(4)}
    assert data.frames.dtype == torch.uint8 and data.frames.shape[1:] == (3, 128, 128)


def test_the_encoder_learns_and_its_weights_load_into_the_model(pretrained):
    root, report = pretrained
    assert report["pretrained"] and report["keyframes"] == 16 * FRAMES and report["videos"] == 4
    assert report["loss_last_20"] < report["loss_first_20"]
    path = root / pretrain.ENCODER_DIR / pretrain.WEIGHTS_FILE
    saved = load_file(str(path))
    preset = presets.get_preset("tiny", "openflamingo")
    torch.manual_seed(123)  # another initialisation: loading must overwrite all of it
    encoder = presets.build_vision_encoder(preset)
    assert load_vision_weights(encoder, preset, path)
    state = encoder.visual.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    info = json.loads((root / pretrain.ENCODER_DIR / "info.json").read_text())
    assert info["sha256"] == pretrain.file_sha256(path)


def test_same_params_same_bytes_and_no_timing_in_the_metrics(pretrained, tmp_path):
    root, report = pretrained
    write_world(tmp_path)
    again = pretrain.run(small(), root=tmp_path)
    assert again["sha256"] == report["sha256"]
    assert (tmp_path / pretrain.REPORT_FILE).read_text() == (root / pretrain.REPORT_FILE).read_text()
    assert "seconds" not in json.loads((root / pretrain.REPORT_FILE).read_text())
    other = pretrain.run(small(seed=1), root=tmp_path)
    assert other["sha256"] != report["sha256"]


def test_the_bytes_do_not_depend_on_the_machines_core_count(pretrained, tmp_path):
    """torch's default is one thread per core, and the gradients' sums are split by thread: the stage
    trains with numerics.STAGE_THREADS whatever the caller's count."""
    root, report = pretrained
    write_world(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if numerics.STAGE_THREADS != 1 else 3)
    try:
        again = pretrain.run(small(), root=tmp_path)
        assert torch.get_num_threads() == (1 if numerics.STAGE_THREADS != 1 else 3)  # given back
    finally:
        torch.set_num_threads(threads)
    assert again["sha256"] == report["sha256"]


def test_disabled_or_real_preset_trains_nothing(tmp_path):
    report = pretrain.run(small(enabled=False), root=tmp_path)
    assert not report["pretrained"] and "enabled" in report["reason"]
    assert not (tmp_path / pretrain.ENCODER_DIR / pretrain.WEIGHTS_FILE).exists()
    assert json.loads((tmp_path / pretrain.ENCODER_DIR / "info.json").read_text())["pretrained"] is False
    assert not presets.get_preset("paper", "openflamingo").pretrainable_vision


def test_no_captioned_train_keyframe_is_an_error_naming_the_shards(tmp_path):
    write_world(tmp_path)
    pd.DataFrame({"keyframe_id": ["nothing"], "caption": ["x"]}).to_parquet(
        tmp_path / layout.ANNOTATE_DIR / "captions.parquet"
    )
    with pytest.raises(ValueError, match="no captioned train keyframe"):
        pretrain.run(small(), root=tmp_path)
    assert not (tmp_path / pretrain.ENCODER_DIR / pretrain.WEIGHTS_FILE).exists()


def test_notebook_is_clean_and_parameterised():
    nb = nbformat.read(ROOT / "notebooks/03b_pretrain.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "pretrain.run(P)" in "\n".join(c.source for c in code)
