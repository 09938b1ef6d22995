"""The attention stage end to end on generated shards with stand-in models, and its bad inputs."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds

import attention_fixtures as F
from gazevlm import layout, params
from gazevlm.attention import extract, outputs, render, stage, testset


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_stage")
    report = F.build_stage_outputs(root, skip_predictions=(("base", "activity"),), bad_gaze=((1, 2),))
    return root, report


def test_outputs_and_report(built):
    root, report = built
    index = outputs.read_index(root / layout.ATTENTION_DIR)
    assert set(index["tasks"]) == {"future", "activity"} and index["topk"] == 10
    for task in ("future", "activity"):
        assert (root / "data/attention/frames" / f"{task}.npz").exists()
        for run in ("base", "gaze"):
            assert (root / "data/attention" / f"{run}_{task}.npz").exists()
    for name in (
        "overlays_future.png",
        "overlays_activity.png",
        "metric_distributions.png",
        "alignment_vs_semantic.png",
    ):
        assert (root / "reports/figures/attention" / name).stat().st_size > 5000, name
    assert F.read_json(root / "reports/attention.json") == report
    assert report["tasks"]["future"]["runs"]["base"]["sources"] == ["perceiver"]
    assert report["tasks"]["future"]["runs"]["gaze"]["sources"] == ["block", "perceiver"]


def test_metrics_separate_aligned_from_unaligned_runs(built):
    root, _ = built
    metrics = F.read_json(root / "metrics/attention.json")
    for task in ("future", "activity"):
        base = metrics["base"][task]["perceiver"]
        gaze = metrics["gaze"][task]["block"]
        assert "block" not in metrics["base"][task]
        # the stand-in gaze run attends to the 3x3 support exactly: 9 of its top-10 patches are in it
        assert gaze["topk_overlap"]["mean"] == pytest.approx(0.9)
        assert gaze["last_frame_topk_overlap"]["mean"] == pytest.approx(0.9)
        assert base["topk_overlap"]["mean"] == pytest.approx(0.0)
        assert gaze["cc"]["mean"] > 0.5 > base["cc"]["mean"]
        assert gaze["auc_judd"]["mean"] > 0.95 and base["auc_judd"]["mean"] < 0.2
        assert gaze["kl"]["mean"] < base["kl"]["mean"] and gaze["sim"]["mean"] > base["sim"]["mean"]
        assert gaze["chance_topk"]["mean"] == pytest.approx(9 / 64)
        for m in gaze.values():
            assert set(m) == {"mean", "ci_low", "ci_high", "n_frames", "n_windows", "n_videos"}
            assert m["n_windows"] == 6 and m["n_videos"] == 2  # the fixture's windows come from 2 videos
    plot = pd.read_csv(root / "reports/attention/overlap.csv")
    assert list(plot.columns) == ["series", "topk_overlap", "last_frame_topk_overlap", "chance_topk"]
    assert set(plot["series"]) == {
        f"{t}/{r}" for t in ("future", "activity") for r in ("base/perceiver", "gaze/block", "gaze/perceiver")
    }


def test_missing_gaze_is_masked_and_bad_gaze_counted(built):
    root, report = built
    future = report["tasks"]["future"]
    # window 0 frame 0 has no gaze; window 1 frame 2 claims gaze but its target is empty
    assert future["frames_bad_gaze"] == 1
    assert future["frames_with_gaze"] == future["frames"] - 2
    assert future["runs"]["gaze"]["frames_scored"] == future["frames"] - 2
    r = outputs.read_run_attention(root / "data/attention/gaze_future.npz")
    frames = outputs.read_task_frames(root / "data/attention/frames/future.npz")
    row0, row1 = [int(np.flatnonzero(r.window_ids == frames.window_ids[i])[0]) for i in (0, 1)]
    for values in r.metrics["block"].values():
        assert np.isnan(values[row0, 0]) and np.isnan(values[row1, 2])
        assert np.isfinite(values[row0, 1])
    assert activity_count(report) == 17


def activity_count(report):
    return report["tasks"]["activity"]["runs"]["gaze"]["frames_scored"]


def test_missing_predictions_are_counted(built):
    root, report = built
    assert report["predictions_missing"] == ["data/predictions/base/activity/seed0.parquet"]
    assert report["tasks"]["activity"]["runs"]["base"]["windows_without_prediction"] == 6
    base = outputs.read_run_attention(root / "data/attention/base_activity.npz")
    assert np.isnan(base.semantic).all() and (base.prediction == "").all()
    gaze = outputs.read_run_attention(root / "data/attention/gaze_activity.npz")
    assert np.isfinite(gaze.semantic).all() and gaze.prediction[0].startswith("gaze says")


def test_frames_file_keeps_the_shard_jpegs(built):
    root, _ = built
    frames = outputs.read_task_frames(root / "data/attention/frames/activity.npz")
    assert frames.gaze.shape == (6, 3, 64) and frames.grid == (8, 8)
    img = render.decode_jpeg(frames.jpeg(2, 1))
    assert img.shape == (128, 128, 3)
    np.testing.assert_allclose(frames.gaze[frames.valid].sum(-1), 1.0, rtol=1e-5)
    # the bright object sits where the gaze target peaks
    r, c = np.unravel_index(frames.gaze[2, 1].argmax(), frames.grid)
    assert img[r * F.PATCH + F.PATCH // 2, c * F.PATCH + F.PATCH // 2].mean() > 150


def test_frame_and_window_tables(built):
    root, _ = built
    table = outputs.frame_table(root / "data/attention")
    assert len(table) == 2 * (28 + 17) + (28 + 17)  # gaze: block + perceiver, base: perceiver
    windows = outputs.window_table(table)
    assert len(windows) == 3 * 12


# --- bad inputs --------------------------------------------------------------------------------------


def test_no_shards_names_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="future/test-"):
        testset.read_test_windows("future", tmp_path / "shards")


def test_shard_sample_without_target_names_file_and_key(tmp_path):
    path = tmp_path / "shards" / "future" / "test-000000.tar"
    path.parent.mkdir(parents=True)
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "future_x_0000000", "valid.npy": np.ones(5, bool), "json": {"frames": [0]}})
    with pytest.raises(ValueError, match=r"test-000000.tar.*future_x_0000000.*target.npy"):
        testset.read_test_windows("future", tmp_path / "shards")


@pytest.fixture
def small_frames(tmp_path):
    F.write_shards(tmp_path, "activity", n_windows=3)
    frames, _ = testset.read_test_windows("activity", tmp_path / layout.SHARDS_DIR)
    return frames


def test_score_run_rejects_foreign_or_misshapen_attention(small_frames):
    ids = small_frames.window_ids.tolist()
    good = {"perceiver": np.full((3, 3, 64), 1 / 64, np.float32)}
    result, counts = stage.score_run("r", "activity", small_frames, ids, good, None, 10, 0.01)
    assert counts["windows_without_prediction"] == 3 and counts["windows_without_attention"] == 0
    partial, counts = stage.score_run(
        "r", "activity", small_frames, ids[:2], {"perceiver": good["perceiver"][:2]}, None, 10, 0.01
    )
    assert counts["windows_without_attention"] == 1
    with pytest.raises(ValueError, match="not in the test shards"):
        stage.score_run("r", "activity", small_frames, ["elsewhere", *ids[1:]], good, None, 10, 0.01)
    with pytest.raises(ValueError, match="twice"):
        stage.score_run("r", "activity", small_frames, [ids[0]] * 3, good, None, 10, 0.01)
    with pytest.raises(ValueError, match="patches"):
        stage.score_run("r", "activity", small_frames, ids, {"perceiver": np.ones((3, 3, 49))}, None, 10, 0.01)


def test_predictions_file_checks(tmp_path):
    path = tmp_path / "p.parquet"
    assert stage.read_predictions(path) is None
    pd.DataFrame({"window_id": ["a"], "prediction": ["x"]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"p.parquet.*reference"):
        stage.read_predictions(path)
    pd.DataFrame(
        {"window_id": ["a", "a"], "prediction": ["x", "y"], "reference": ["r", "r"], "semantic": [0.1, 0.2]}
    ).to_parquet(path)
    with pytest.raises(ValueError, match="repeats"):
        stage.read_predictions(path)


class Fixed(torch.nn.Module):
    def __init__(self, attention, perceiver):
        super().__init__()
        self.out = SimpleNamespace(attention=attention, perceiver_attention=perceiver)

    def forward(self, pixels, input_ids, attention_mask, return_perceiver_attention=False):
        return self.out


def one_batch(b=2, t=3):
    return {
        "pixels": torch.zeros(b, t, 3, 128, 128),
        "input_ids": torch.zeros(b, 2, dtype=torch.long),
        "window_id": [f"w{i}" for i in range(b)],
    }


def test_extract_validates_model_output():
    ok = torch.full((2, 3, 64), 2.0)
    maps = extract.attention_maps(Fixed(ok, None), one_batch())
    assert set(maps) == {"block"} and np.allclose(maps["block"].sum(-1), 1.0)  # renormalised
    with pytest.raises(ValueError, match=r"perceiver_attention.*\(B=2, T=3, P\)"):
        extract.attention_maps(Fixed(None, torch.ones(2, 64)), one_batch())
    with pytest.raises(ValueError, match="negative or non-finite"):
        extract.attention_maps(Fixed(-ok, None), one_batch())
    with pytest.raises(ValueError, match="sums to 0"):
        extract.attention_maps(Fixed(torch.zeros(2, 3, 64), None), one_batch())
    with pytest.raises(KeyError, match="prompt_fn"):
        extract.attention_maps(Fixed(ok, None), {"pixels": torch.zeros(2, 3, 3, 64, 64)})


def test_collect_attention_restores_mode_and_checks_sources():
    model = F.StandIn(block=True, follow=True).train()
    ids, maps = extract.collect_attention(model, [one_batch(), one_batch(1)])
    assert ids == ["w0", "w1", "w0"] and maps["block"].shape == (3, 3, 64) and model.training

    class Flaky(F.StandIn):
        calls = 0

        def forward(self, *args, **kwargs):
            Flaky.calls += 1
            out = super().forward(*args, **kwargs)
            return SimpleNamespace(
                attention=out.attention if Flaky.calls == 1 else None, perceiver_attention=out.perceiver_attention
            )

    with pytest.raises(ValueError, match="sources"):
        extract.collect_attention(Flaky(True, True), [one_batch(), one_batch()])


def test_missing_checkpoint_is_named(tmp_path):
    with contextlib.chdir(tmp_path), pytest.raises(FileNotFoundError, match="models/gaze/seed0/future"):
        extract.load_run_model(F.fixture_params(), "gaze", "future")


def test_overlay_modes():
    frame = np.zeros((64, 64, 3), np.uint8)
    att = np.zeros((8, 8))
    att[2, 3] = 1.0
    heat = np.zeros((16, 16))
    heat[10, 10] = 1.0
    support = np.zeros((8, 8), bool)
    support[5, 5] = True
    pics = {
        m: render.overlay(frame, mode=m, attention=att, gaze_heatmap=heat, gaze_support=support, width=128)
        for m in render.MODES
    }
    assert all(p.shape == (128, 128, 3) for p in pics.values())
    assert len({p.tobytes() for p in pics.values()}) == 4
    assert pics["frame"].max() == 0
    assert pics["attention"][2 * 16 + 8, 3 * 16 + 8].sum() > pics["attention"][100, 10].sum()
    assert pics["gaze"][5 * 16 + 8, 5 * 16 + 8, 1] > 0  # green tint/outline at the gaze
    with pytest.raises(ValueError, match="overlay mode"):
        render.overlay(frame, mode="heat")
    assert render.decode_jpeg(F.jpeg(np.full((8, 8, 3), 200, np.uint8))).shape == (8, 8, 3)
    assert io.BytesIO(render.to_png(pics["both"])).read(4) == b"\x89PNG"


def test_the_analysed_seed_is_the_first_trained_unless_named(tmp_path):
    p = params.with_overrides(F.fixture_params(), train={"seeds": [3, 1]})
    assert extract.analysed_seed(p) == 3
    p1 = params.with_overrides(p, attention={"seed": 1})
    assert extract.analysed_seed(p1) == 1
    with contextlib.chdir(tmp_path), pytest.raises(FileNotFoundError, match="models/gaze/seed1/future"):
        extract.load_run_model(p1, "gaze", "future")
    with pytest.raises(ValueError, match="not one of train.seeds"):
        extract.analysed_seed(params.with_overrides(p, attention={"seed": 7}))


def test_the_stage_and_the_explorer_analyse_the_named_seed(tmp_path):
    """attention.seed = 1 of train.seeds [0, 1]: the stage reads seed 1's predictions (only those exist
    here) and records the seed for the explorer, which names it."""
    from gazevlm.widgets import Explorer

    p = params.with_overrides(F.fixture_params(tasks=("future",), seed=1), train={"seeds": [0, 1]})
    report = F.build_stage_outputs(tmp_path, p)
    assert report["predictions_missing"] == []
    assert not (tmp_path / layout.predictions_file("gaze", "future", 0)).exists()
    index = outputs.read_index(tmp_path / layout.ATTENTION_DIR)
    assert index["seed"] == 1
    r = outputs.read_run_attention(tmp_path / "data/attention/gaze_future.npz")
    assert all(text.startswith("gaze says cup") for text in r.prediction)  # seed 1's texts were joined
    app = Explorer(tmp_path / layout.ATTENTION_DIR, width=64)
    assert "models of training seed 1" in app.info.value
