"""gazevlm predict: windows as extract cuts them, pixels as the shards hold them, generation as evaluate
runs it, the overlay, the command line, and each bad input (video, model directory, output directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from gazevlm import checkpoint, ego4d, layout, overlay, params, predict, video_input, windows
from gazevlm.attention.extract import attention_maps, prompt_for
from gazevlm.cli import main as cli_main
from gazevlm.evaluate.predict import predict as evaluate_predict
from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.frames import encode_jpeg, read_image
from gazevlm.shards import collate, decode_sample, encode_sample
from gazevlm.trained import ModelDirError, load_model
from train_fixtures import TASK
from usage_fixtures import (  # noqa: F401  (fixtures)
    MAX_NEW_TOKENS,
    clip,
    copy_project,
    pipeline_pixels,
    project,
    read_json,
    read_video_frames,
    tiny_world,
    write_clip,
)

SIZE = 128  # the tiny preset's input
OBSERVE, HORIZON = 5, 2.0  # params.extract defaults: 5 keyframes at 1 fps, 2 s ahead


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gaze(project):  # noqa: F811
    return load_model(project.model_dir("gaze"))


@pytest.fixture(scope="module")
def predicted(gaze, clip, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("predicted") / "out"
    return out, predict.predict_video(clip, gaze, out, overlay=True, show_progress=False)


def batch_of(rows: list[dict], pixels: dict[int, np.ndarray]) -> dict:
    samples = [
        {
            "frames": np.stack([pixels[f] for f in r["keyframe_frames"]]),
            "text": "",
            "window_id": r["window_id"],
            "meta": {},
        }
        for r in rows
    ]
    return collate(samples, with_gaze=False)


def test_windows_and_pixels_are_the_extract_stages(project, gaze, tmp_path):  # noqa: F811
    """A video of the pipeline: the windows extract kept, the tail it dropped, and the pixels of its shards."""
    ex = project.root / layout.EXTRACT_DIR
    videos, kf, win = (pd.read_parquet(ex / f"{n}.parquet") for n in ("videos", "keyframes", "windows"))
    video = videos.iloc[0]
    kf = kf[kf.uid == video.uid].sort_values("frame")
    rows = predict.predict_video(video.video_path, gaze, tmp_path / "out", show_progress=False)["predictions"]
    expected = win[(win.uid == video.uid) & (win.task == TASK)].sort_values("t_start")
    inside = [r for r in rows if r["horizon_in_video"]]
    assert [r["window_id"] for r in inside] == expected.window_id.tolist() and len(inside) >= 2
    assert [r["keyframe_frames"] for r in inside] == [list(f) for f in expected.obs_frames]
    assert [(r["t_start"], r["t_end"]) for r in inside] == list(zip(expected.t_start, expected.t_end, strict=True))
    times = dict(zip(kf.frame, kf.t, strict=True))
    assert all(r["keyframe_times"] == [times[f] for f in r["keyframe_frames"]] for r in rows)
    # every start extract could use (1 keyframe stride); the rest have no keyframe within their horizon
    assert len(rows) == len(kf) - OBSERVE + 1
    for r in rows[len(inside) :]:
        last = r["keyframe_times"][-1]
        assert not r["horizon_in_video"] and r["t_end"] == last + HORIZON
        assert not any(last < t <= last + HORIZON for t in kf.t)
    # pixels: extract's keyframe JPEGs through the heatmaps stage's crop, written and read as a shard sample
    w = expected.iloc[0]
    geometry = CropGeometry.for_frame(int(video.width), int(video.height), SIZE)
    paths = kf.set_index("frame").loc[list(w.obs_frames), "path"]
    jpegs = [encode_jpeg(geometry.apply(read_image(project.root / p))) for p in paths]
    n = len(jpegs)
    meta = {"frames": [int(f) for f in w.obs_frames], "target_text": ""}
    raw = encode_sample(w.window_id, jpegs, np.zeros((n, 8, 8)), np.zeros(n, bool), np.zeros((n, 4, 4)), meta)
    shard = decode_sample(raw, with_gaze=False)["frames"]
    ours = video_input.keyframe_pixels(video_input.open_video(video.video_path), list(w.obs_frames), SIZE)
    np.testing.assert_array_equal(np.stack([ours[int(f)] for f in w.obs_frames]), shard)


def test_predictions_are_the_evaluate_stages_on_the_same_frames(gaze, clip, predicted):  # noqa: F811
    """A clip wider than tall (the crop cuts its sides): the pixels of the pipeline's steps, and the texts of
    the evaluate stage's generation on them."""
    out, record = predicted
    rows = record["predictions"]
    frames = sorted({f for r in rows for f in r["keyframe_frames"]})
    expected = pipeline_pixels(clip, frames, SIZE)
    ours = video_input.keyframe_pixels(video_input.open_video(clip), frames, SIZE)
    assert sorted(ours) == frames
    for f in frames:
        np.testing.assert_array_equal(ours[f], expected[f])
    df = evaluate_predict(
        gaze.model,
        gaze.tokenizer,
        [batch_of(rows, expected)],
        TASK,
        max_new_tokens=MAX_NEW_TOKENS,
        teacher_forcing=False,
    )
    assert [r["prediction"] for r in rows] == df["prediction"].tolist()
    csv = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert csv["prediction"].tolist() == df["prediction"].tolist()


def test_outputs_describe_every_window_and_repeat_byte_for_byte(gaze, clip, predicted, tmp_path):  # noqa: F811
    out, record = predicted
    assert read_json(out / "predictions.json") == record
    # 7 s at 30 fps: keyframes 0..6 s; windows start at 0, 1, 2 s; the last sees no keyframe within 2 s
    rows = record["predictions"]
    assert [r["keyframe_frames"] for r in rows] == [[30 * (s + i) for i in range(OBSERVE)] for s in range(3)]
    assert [r["keyframe_times"] for r in rows] == [[float(s + i) for i in range(OBSERVE)] for s in range(3)]
    assert [(r["t_start"], r["t_end"], r["horizon_in_video"]) for r in rows] == [
        (0.0, 6.0, True),
        (1.0, 7.0, True),
        (2.0, 8.0, False),
    ]
    assert [r["window_id"] for r in rows] == [f"future_my clip_{30 * s:07d}" for s in range(3)]
    assert record["video"] == {
        "path": str(clip),
        "uid": "my clip",
        "fps": 30.0,
        "width": 176,
        "height": 144,
        "num_frames": 210,
        "duration_s": 7.0,
    }
    assert record["model"]["run"] == "gaze" and record["model"]["kind"] == "pipeline"
    assert record["windows"] == {"keyframe_fps": 1.0, "observe_keyframes": 5, "stride_keyframes": 1, "horizon_s": 2.0}
    csv = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(csv.columns) == list(predict.CSV_COLUMNS)
    assert csv["keyframe_times"].tolist() == [" ".join(str(t) for t in r["keyframe_times"]) for r in rows]
    again = tmp_path / "again"
    predict.predict_video(clip, gaze, again, overlay=True, show_progress=False)
    for name in ("predictions.csv", "predictions.json", "overlay.png", "overlay.mp4"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_overlay_draws_the_gaze_blocks_attention_on_every_observed_frame(gaze, clip, predicted):  # noqa: F811
    out, record = predicted
    n = len(record["predictions"])
    assert record["attention_drawn"] == "block"
    frames, fps, size = read_video_frames(out / "overlay.mp4")
    assert frames == n * OBSERVE and fps == overlay.OVERLAY_FPS and size[0] == overlay.VIDEO_WIDTH
    sheet = np.asarray(Image.open(out / "overlay.png"))
    assert sheet.shape[1] == OBSERVE * overlay.SHEET_WIDTH and sheet.shape[0] > n * overlay.SHEET_WIDTH
    # the maps drawn are the block's attention of the model on these frames (the attention stage's extraction)
    rows = record["predictions"]
    pixels = video_input.keyframe_pixels(
        video_input.open_video(clip), sorted({f for r in rows for f in r["keyframe_frames"]}), SIZE
    )
    texts, maps, source = predict.generate(
        gaze, rows_as_windows(rows), pixels, with_attention=True, show_progress=False
    )
    expected = attention_maps(gaze.model, batch_of(rows, pixels), prompt_for(gaze.tokenizer, TASK))["block"]
    assert source == "block" and texts == [r["prediction"] for r in rows]
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    assert maps.shape == (n, OBSERVE, (SIZE // 16) ** 2)


def rows_as_windows(rows: list[dict]) -> list[dict]:
    """predictions.json rows back into the window dicts of video_input.cut_windows."""
    return [{"window_id": r["window_id"], "uid": "my clip", "obs_frames": r["keyframe_frames"]} for r in rows]


def test_a_model_without_block_gets_the_backbones_attention(project, clip, tmp_path):  # noqa: F811
    base = load_model(project.model_dir("base"))
    assert not base.has_block
    record = predict.predict_video(clip, base, tmp_path / "out", overlay=True, show_progress=False)
    assert record["attention_drawn"] == "backbone" and record["model"]["gaze_block"] is False
    assert read_video_frames(tmp_path / "out" / "overlay.mp4")[0] == 3 * OBSERVE
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 0


def test_stride_option_and_device(gaze, clip, tmp_path):  # noqa: F811
    rows = predict.predict_video(clip, gaze, tmp_path / "out", stride_s=2, show_progress=False)["predictions"]
    assert [r["t_start"] for r in rows] == [0.0, 2.0]
    with pytest.raises(params.ParamsError, match="window_stride_s"):
        predict.predict_video(clip, gaze, tmp_path / "bad", stride_s=0, show_progress=False)
    with pytest.raises(ValueError, match="less than one keyframe"):
        predict.predict_video(clip, gaze, tmp_path / "bad", stride_s=0.4, show_progress=False)
    assert predict.resolve_device("auto") in ("cpu", "cuda") and predict.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="not a torch device"):
        predict.resolve_device("gpu please")


# --- bad input: the video ---------------------------------------------------------------------------------


def test_missing_corrupt_and_too_short_videos_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.mp4: video file not found"):
        video_input.open_video(tmp_path / "nothing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ego4d.VideoFileError, match=r"bad\.mp4: OpenCV cannot open"):
        video_input.open_video(bad)
    short = video_input.open_video(write_clip(tmp_path / "short.mp4", 3))
    spec = windows.WindowSpec("future", OBSERVE, 1, HORIZON)
    with pytest.raises(
        video_input.VideoTooShortError,
        match=r"short\.mp4: 3\.00 s gives 3 keyframe\(s\) at 1 fps, "
        r"fewer than one future window observes \(5, 5 s\)",
    ):
        video_input.cut_windows(short, spec, 1.0)
    # exactly one window: kept, though extract would drop it (no keyframe after it)
    one = video_input.cut_windows(video_input.open_video(write_clip(tmp_path / "five.mp4", 5)), spec, 1.0)
    assert [(w["t_start"], w["horizon_in_video"]) for w in one] == [(0.0, False)]


def test_the_command_line_names_a_bad_video_in_one_line(project, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    for video, message in (
        (tmp_path / "nothing.mp4", "nothing.mp4: video file not found"),
        (bad, "bad.mp4: OpenCV cannot open the video"),
    ):
        assert cli_main(["predict", str(video), "--model", str(project.model_dir()), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("gazevlm predict: error: ") and message in err and "\n" not in err


def test_a_failed_run_keeps_the_last_output_and_a_foreign_directory_is_refused(
    gaze,
    clip,
    predicted,
    tmp_path,  # noqa: F811
    monkeypatch,
):
    out = tmp_path / "out"
    shutil.copytree(predicted[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(overlay, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        predict.predict_video(clip, gaze, out, overlay=True, show_progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staged leftovers
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"mine: not empty and not an earlier output"):
        predict.predict_video(clip, gaze, foreign, show_progress=False)
    assert (foreign / "thesis.tex").read_text() == "keep me"


# --- bad input: the model directory -------------------------------------------------------------------------


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_model_directory_forms(project, tmp_path):  # noqa: F811
    seed_dir = project.model_dir().parent
    assert load_model(seed_dir).task == TASK  # models/<run>/seed<N>: its one task
    with pytest.raises(ModelDirError, match=r"no model of task 'activity' \(it holds \['future'\]\)"):
        load_model(seed_dir, task="activity")
    with pytest.raises(ModelDirError, match="a model of task 'future', not 'activity'"):
        load_model(project.model_dir(), task="activity")
    model = copy_project(project, tmp_path)
    shutil.copytree(model, model.parent / "activity")
    edit_json(model.parent / "activity" / "config.json", lambda c: c.update(task="activity"))
    with pytest.raises(ModelDirError, match=r"holds models for tasks \['future', 'activity'\]; choose one with --task"):
        load_model(model.parent)
    with pytest.raises(ModelDirError, match="not a gazevlm model directory"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_model(tmp_path / "nowhere")


def test_a_model_from_another_version_or_project_state_is_refused(project, tmp_path):  # noqa: F811
    model = copy_project(project, tmp_path / "p")
    cfg = model / "config.json"
    original = cfg.read_text()
    edit_json(cfg, lambda c: c.update(format="gazevlm-checkpoint/0"))
    with pytest.raises(ModelDirError, match=r"config\.json: written by another gazevlm version"):
        load_model(model)
    cfg.write_text(original)
    edit_json(cfg, lambda c: c["model_config"].update(vision_dim=12345))
    with pytest.raises(checkpoint.CheckpointError, match="model_config differs from the model this code builds"):
        load_model(model)
    cfg.write_text(original)
    p = yaml.safe_load((tmp_path / "p" / "params.yaml").read_text())
    p["model"]["query"] = "frame"
    (tmp_path / "p" / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(ModelDirError, match=r"model\.query: checkpoint 'global' vs params\.yaml 'frame'"):
        load_model(model)
    p["model"]["query"] = "global"
    (tmp_path / "p" / "params.yaml").write_text(yaml.safe_dump(p))
    lock = {"stages": {"extract": {"params": {"params.yaml": {"extract": {"keyframe_fps": 1, "future_observe_s": 4}}}}}}
    (tmp_path / "p" / "dvc.lock").write_text(yaml.safe_dump(lock))
    with pytest.raises(ModelDirError, match=r"extract\.future_observe_s = 5\.0 but dvc\.lock records 4\.0"):
        load_model(model)
    lock["stages"]["extract"]["params"]["params.yaml"]["extract"]["future_observe_s"] = 5
    (tmp_path / "p" / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert load_model(model).task == TASK
    outside = tmp_path / "elsewhere" / "future"
    shutil.copytree(model, outside)
    with pytest.raises(ModelDirError, match="outside its project"):
        load_model(outside)


def test_corrupt_weights_are_refused(project, tmp_path):  # noqa: F811
    model = copy_project(project, tmp_path)
    weights = model / checkpoint.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        load_model(model)


# --- the command line ---------------------------------------------------------------------------------------


def test_console_script_is_declared():
    scripts = tomllib.loads(Path(__file__).parents[1].joinpath("pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"gazevlm": "gazevlm.cli:main"}


def test_command_line_in_process(project, clip, predicted, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cli"
    assert (
        cli_main(["predict", str(clip), "--model", str(project.model_dir()), "--out", str(out), "--no-progress"]) == 0
    )
    assert "3 window(s)" in capsys.readouterr().out
    assert (out / "predictions.csv").read_bytes() == (predicted[0] / "predictions.csv").read_bytes()


@pytest.mark.slow
def test_the_modules_run_as_commands(project, clip, tmp_path):  # noqa: F811
    env_src = str(Path(predict.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": env_src}
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazevlm.predict",
            str(clip),
            "--model",
            str(project.model_dir()),
            "--out",
            str(out),
            "--overlay",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert "windows" in done.stderr  # the progress bar (tqdm writes to stderr)
    assert read_video_frames(out / "overlay.mp4")[0] == 3 * OBSERVE
    bad = subprocess.run(
        [sys.executable, "-m", "gazevlm", "predict", str(tmp_path / "none.mp4"), "--model", str(project.model_dir())],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == f"gazevlm predict: error: {tmp_path / 'none.mp4'}: video file not found"
    light = subprocess.run(
        [sys.executable, "-c", "import sys, gazevlm; print('torch' in sys.modules, callable(gazevlm.load_model))"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert light.stdout.split() == ["False", "True"]
