"""Gaze as a model input, the baselines of Tables 13 (gaze_text) and 15 (gaze_overlay): the run switches,
the prompt's coordinates, the overlay's pixels, and the guard that keeps gaze out of every other run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gazevlm import gaze_inputs as G
from gazevlm import params
from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.targets import patch_target_from_points, resize_heatmap
from gazevlm.models import text
from gazevlm.models.tokenizer import UNK, build_word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ["the camera wearer picks up the red cup", "the camera wearer opens the blue bottle"]


def one_hot(b: int, t: int, size: int, cells: dict[tuple[int, int], tuple[int, int]]) -> torch.Tensor:
    """(B, T, S, S) heatmaps with all mass on cell (row, col) of the given (b, t)."""
    heat = torch.zeros(b, t, size, size)
    for (i, j), (row, col) in cells.items():
        heat[i, j, row, col] = 1.0
    return heat


# --- the run switches (params) ------------------------------------------------------------------------


def test_switches_are_off_by_default_and_only_named_ones_take_gaze():
    p = params.load(ROOT / "params.yaml")
    assert all(not run.gaze_inputs for run in p.runs.values())
    # future targets: the paper's captions in code, the horizon's narrations on the synthetic default (README)
    assert params.Params().annotate.future_targets == "captions" and p.annotate.future_targets == "narrations"
    # the runs without gaze inputs are described (and fingerprinted) exactly as before the switches existed
    assert params.to_dict(p)["runs"]["gaze"] == {"block": True, "lambda": 100.0}
    q = params.with_overrides(
        p, runs={"gaze_text": {"gaze_text": True}, "both": {"gaze_text": True, "gaze_overlay": True}}
    )
    assert q.run("gaze_text").gaze_inputs == ("gaze_text",) and not q.run("gaze_text").block
    assert q.run("both").gaze_inputs == ("gaze_text", "gaze_overlay")
    assert params.run_switches(q.run("gaze_text")) == {"block": False, "lambda": 0.0, "gaze_text": True}
    assert params.from_dict(params.to_dict(q)) == q


def test_the_ablation_overrides_parse_as_dvc_writes_them(tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(path, ["++runs.gaze_overlay.gaze_overlay=true", "annotate.future_targets=narrations"])
    p = params.load(path)
    assert p.run("gaze_overlay").gaze_inputs == ("gaze_overlay",) and p.annotate.future_targets == "narrations"
    assert [r for r, run in p.runs.items() if run.gaze_inputs] == ["gaze_overlay"]


@pytest.mark.parametrize(
    "yaml_text,key,allowed",
    [
        ('runs:\n  t: {gaze_text: "yes"}\n', "runs.t.gaze_text = 'yes'", "expected true or false"),
        ("runs:\n  t: {gaze_overlay: 1}\n", "runs.t.gaze_overlay = 1", "expected true or false"),
        ("runs:\n  t: {gaze_txt: true}\n", r"unknown key\(s\) \['gaze_txt'\] in `runs.t`", ""),
        ("annotate:\n  future_targets: narration\n", "annotate.future_targets = 'narration'", "expected one of"),
    ],
)
def test_bad_switches_name_the_key(tmp_path, yaml_text, key, allowed):
    f = tmp_path / "params.yaml"
    f.write_text(yaml_text)
    with pytest.raises(params.ParamsError, match=rf"{key}.*{allowed}"):
        params.load(f)


# --- Table 13: the prompt's coordinates ----------------------------------------------------------------


def test_prompt_text_with_gaze_coordinates_is_exact():
    assert text.prompt_text("future") == "<image>what happens next:"  # unchanged without gaze
    points = [(0.42, 0.61), None, (0.4, 0.575), (0.0, 1.0)]
    assert text.gaze_text(points) == "gaze: (0.42, 0.61); none; (0.40, 0.57); (0.00, 1.00)"
    assert text.prompt_text("activity", points) == (
        "<image>gaze: (0.42, 0.61); none; (0.40, 0.57); (0.00, 1.00). what is happening:"
    )
    for bad in ([], [(1.2, 0.5)], [(-0.01, 0.5)], "none"):
        with pytest.raises(ValueError):
            text.gaze_text(bad)


def test_gaze_points_are_the_heatmap_peak_in_the_cropped_frame():
    heat = one_hot(2, 3, 64, {(0, 0): (39, 26), (0, 2): (0, 63), (1, 0): (5, 5), (1, 1): (10, 10), (1, 2): (1, 2)})
    valid = torch.tensor([[True, True, True], [False, True, True]])
    pts = G.heatmap_points(heat, valid)
    assert pts[0][0] == (26.5 / 64, 39.5 / 64) and pts[0][2] == (63.5 / 64, 0.5 / 64)
    assert pts[0][1] is None  # valid, but an empty heatmap
    assert pts[1][0] is None  # invalid frame: its heatmap is ignored
    assert text.gaze_text(pts[0]) == "gaze: (0.41, 0.62); none; (0.99, 0.01)"
    with pytest.raises(ValueError, match="B, T, S, S"):
        G.heatmap_points(heat[0], valid)


def test_gaze_point_matches_the_native_point_after_the_frames_resize_and_crop():
    """A native gaze point through the heatmap stage's own pipeline (Gaussian, resize + centre crop, stored
    at heatmap_size): the prompt's coordinates are that point in the cropped frame, to one heatmap cell."""
    geometry = CropGeometry.for_frame(320, 240, 128)  # wider than tall: 40 px cut off each side
    native = np.array([[200.0, 60.0]])
    target = patch_target_from_points(native, geometry, 8.0, 8, 1e-6)
    stored = torch.from_numpy(resize_heatmap(target.heatmap, 64).astype(np.float16))
    ((x, y),) = G.heatmap_points(stored[None, None], torch.tensor([[target.valid]]))[0]
    cx, cy = geometry.to_crop(native[0, 0], native[0, 1])
    assert abs(x - cx / 128) <= 1 / 64 and abs(y - cy / 128) <= 1 / 64


def test_word_tokenizer_of_a_gaze_text_run_knows_every_coordinate():
    tok = build_word_tokenizer(CAPTIONS + text.gaze_vocabulary())
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = [None if rng.random() < 0.3 else tuple(rng.integers(0, 101, 2) / 100) for _ in range(5)]
        ids = tok(text.prompt_text("future", points))["input_ids"]
        assert tok.convert_tokens_to_ids(UNK) not in ids, text.prompt_text("future", points)
    plain = build_word_tokenizer(CAPTIONS)  # every other run's vocabulary is the captions' alone
    assert "none" not in plain.get_vocab() and "gaze" not in plain.get_vocab()


def test_encoding_with_gaze_puts_each_windows_points_in_its_prompt_and_the_loss_on_the_target_only():
    tok = build_word_tokenizer(CAPTIONS + text.gaze_vocabulary())
    gaze = [[(0.42, 0.61), None], [None, None]]
    enc = text.encode_train(tok, CAPTIONS, "future", 2, gaze=gaze)
    for row, g, caption in zip(range(2), gaze, CAPTIONS, strict=True):
        prompt = tok(text.prompt_text("future", g))["input_ids"]
        assert enc["input_ids"][row, : len(prompt)].tolist() == prompt
        assert (enc["labels"][row, : len(prompt)] == text.IGNORE_INDEX).all()
        answer = enc["labels"][row][enc["labels"][row] != text.IGNORE_INDEX]
        assert tok.decode(answer[:-1]) == caption
    same = text.encode_prompt(tok, "future", 2, 2, gaze=[[None, (0.1, 0.2)], [(0.3, 0.4), None]])
    assert same["input_ids"].shape[0] == 2 and same["attention_mask"].all()
    with pytest.raises(ValueError, match="equal length"):
        text.encode_prompt(tok, "future", 2, 2, gaze=gaze)
    with pytest.raises(ValueError, match="2 windows of 3 frames"):
        text.encode_train(tok, CAPTIONS, "future", 3, gaze=gaze)


# --- Table 15: the overlay's pixels --------------------------------------------------------------------


def test_overlay_paints_the_heatmap_red_on_valid_frames_only():
    frames = torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8)
    frames[:, :, 1] = 100  # a green frame
    heat = torch.zeros(1, 2, 4, 4)
    heat[0, :, 1, 2] = 1.0  # peak in cell (row 1, col 2) of a 4 x 4 map
    out = G.overlay_frames(frames, heat, torch.tensor([[True, False]]))
    assert out.dtype == torch.uint8 and out.shape == frames.shape
    # the cell's centre (pixel row 6, col 10) is the bilinear peak: alpha = OVERLAY_ALPHA there
    a = G.OVERLAY_ALPHA
    assert out[0, 0, :, 6, 10].tolist() == [round(255 * a), round(100 * (1 - a)), 0]
    assert out[0, 0, :, 15, 0].tolist() == [0, 100, 0]  # far from the gaze: untouched
    assert torch.equal(out[0, 1], frames[0, 1])  # no valid gaze: no overlay at all
    assert torch.equal(G.overlay_frames(frames, torch.zeros_like(heat), torch.ones(1, 2, dtype=torch.bool)), frames)
    with pytest.raises(ValueError, match="uint8"):
        G.overlay_frames(frames.float(), heat, torch.ones(1, 2, dtype=torch.bool))


def test_streamed_float_pixels_and_in_memory_uint8_frames_get_the_same_overlay():
    rng = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8, generator=rng)
    heat = torch.rand(2, 3, 4, 4, generator=rng)
    valid = torch.tensor([[True, False, True], [True, True, False]])
    inputs = G.GazeInputs(overlay=True)
    mem = G.model_inputs(
        {"frames_u8": frames, "gaze_heatmap": heat, "gaze_valid": valid}, inputs, keep_loss_targets=True
    )
    streamed = G.model_inputs(
        {"pixels": frames.float() / 255, "gaze_heatmap": heat, "gaze_valid": valid}, inputs, keep_loss_targets=True
    )
    assert torch.equal(mem["frames_u8"].float().div_(255.0), streamed["pixels"])
    assert not torch.equal(mem["frames_u8"], frames)
    # a whole split is overlaid a chunk at a time: the same pixels as window by window
    many = torch.randint(0, 256, (G.OVERLAY_CHUNK + 5, 2, 3, 8, 8), dtype=torch.uint8, generator=rng)
    heat, valid = torch.rand(len(many), 2, 4, 4, generator=rng), torch.ones(len(many), 2, dtype=torch.bool)
    one_by_one = torch.cat(
        [G.overlay_frames(many[i : i + 1], heat[i : i + 1], valid[i : i + 1]) for i in range(len(many))]
    )
    assert torch.equal(G.overlay_frames(many, heat, valid), one_by_one)


def test_model_inputs_drop_every_gaze_array_from_test_batches():
    heat = one_hot(1, 2, 8, {(0, 0): (1, 1)})
    batch = {
        "pixels": torch.zeros(1, 2, 3, 8, 8),
        "gaze_heatmap": heat,
        "gaze_valid": torch.tensor([[True, False]]),
        "gaze_target": torch.ones(1, 2, 2, 2),
        "text": ["x"],
        "window_id": ["w"],
    }
    test = G.model_inputs(batch, G.GazeInputs(text=True), keep_loss_targets=False)
    assert not set(test) & set(G.GAZE_KEYS) and test["gaze_points"] == [[(1.5 / 8, 1.5 / 8), None]]
    assert torch.equal(test["pixels"], batch["pixels"])  # text only: the frames are untouched
    train = G.model_inputs(batch, G.GazeInputs(text=True), keep_loss_targets=True)
    assert "gaze_target" in train and "gaze_heatmap" not in train
    with pytest.raises(ValueError, match="takes no gaze"):
        G.model_inputs(batch, G.NONE, keep_loss_targets=False)
    with pytest.raises(KeyError, match="gaze_heatmap"):
        G.model_inputs(
            {k: v for k, v in batch.items() if k != "gaze_heatmap"}, G.GazeInputs(overlay=True), keep_loss_targets=False
        )
