"""gazevlm export: a self-contained directory that loads without its project and predicts exactly as the
pipeline model does, byte-reproducible, with a model card built from the project's results; bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import gazevlm
from gazevlm import checkpoint, export, predict
from gazevlm.cli import main as cli_main
from gazevlm.models.text import encode_prompt
from gazevlm.trained import EXPORT_FORMAT, ModelDirError
from train_fixtures import TASK
from usage_fixtures import clip, copy_project, project, read_json, tiny_world  # noqa: F401  (fixtures)

EVAL = {
    "n": 12,
    "n_videos": 4,
    "n_seeds": 2,
    "seeds": [0, 1],
    "semantic": {"mean": 0.7199, "ci_low": 0.7031, "ci_high": 0.737, "n": 12, "n_videos": 4},
    "object_accuracy": {"mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n": 12, "n_videos": 4},
    "distinct_predictions": 0.25,
    "shuffled_frames": {"drop": {"semantic": {"diff": 0.0246, "ci_low": 0.0031, "ci_high": 0.0464, "p_value": 0.03}}},
    "chance": {"uniform_object_accuracy": 1 / 36},
    "per_seed": {"0": {"semantic": {"mean": 0.718, "ci_low": 0.698, "ci_high": 0.738}, "distinct_predictions": 0.3}},
}
ATTENTION = {
    "gaze": {
        "future": {
            "block": {"topk_overlap": {"mean": 0.552, "ci_low": 0.529, "ci_high": 0.574}},
            "perceiver": {"topk_overlap": {"mean": 0.403, "ci_low": 0.381, "ci_high": 0.424}},
        }
    }
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(project, tmp_path_factory):  # noqa: F811
    return export.export(project.model_dir(), tmp_path_factory.mktemp("exports") / "gaze-future")


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_export_is_self_contained_and_predicts_as_the_pipeline_model(project, exported, clip, tmp_path):  # noqa: F811
    source = project.model_dir()
    tokenizer = sorted(f"tokenizer/{p.name}" for p in (source / "tokenizer").iterdir())
    assert sorted(files(exported)) == ["README.md", "config.json", "model.safetensors", *tokenizer]
    assert all((exported / t).read_bytes() == (source / t).read_bytes() for t in tokenizer)
    config = read_json(exported / "config.json")
    assert (exported / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert config["weights_sha256"] == checkpoint.sha256_file(exported / "model.safetensors")
    assert config["params"]["extract"] == {
        "keyframe_fps": 1.0,
        "window_stride_s": 1.0,
        "future_observe_s": 5.0,
        "future_horizon_s": 2.0,
        "activity_observe_s": 3.0,
    }
    assert config["params"]["evaluate"] == {"max_new_tokens": 6, "num_beams": 1}
    assert config["export"]["format"] == EXPORT_FORMAT and config["export"]["source"] == "models/gaze/seed0/future"
    moved = shutil.copytree(exported, tmp_path / "far" / "away")  # no project anywhere above it
    a, b = gazevlm.load_model(source), gazevlm.load_model(moved)
    assert (a.source.kind, b.source.kind) == ("pipeline", "export") and b.source.project is None
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pixels = torch.rand(2, 5, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    prompt = encode_prompt(a.tokenizer, TASK, 5, 2)
    la = a.model(pixels, prompt["input_ids"], prompt["attention_mask"]).logits
    lb = b.model(pixels, prompt["input_ids"], prompt["attention_mask"]).logits
    assert torch.equal(la, lb)
    ra = predict.predict_video(clip, a, tmp_path / "a", overlay=True, show_progress=False)
    rb = predict.predict_video(clip, b, tmp_path / "b", overlay=True, show_progress=False)
    assert ra["predictions"] == rb["predictions"] and ra["windows"] == rb["windows"]
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()
    assert (tmp_path / "a" / "overlay.png").read_bytes() == (tmp_path / "b" / "overlay.png").read_bytes()


def test_export_repeats_byte_for_byte_and_replaces_only_an_export(project, exported, tmp_path):  # noqa: F811
    again = export.export(project.model_dir(), tmp_path / "gaze-future")
    assert files(again) == files(exported)
    # an export of the export, and an export over an earlier export, give the same bytes
    assert files(export.export(exported, tmp_path / "x" / "gaze-future")) == files(exported)
    (again / "stale.txt").write_text("from an older export")
    assert files(export.export(project.model_dir(), again)) == files(exported)


def test_model_card_reports_data_fingerprints_metrics_and_attention(project, tmp_path):  # noqa: F811
    model = copy_project(project, tmp_path / "p")
    root = tmp_path / "p"
    world = project.params().data.root
    lock = {
        "stages": {
            "extract": {"deps": [{"path": world, "md5": "aaa111.dir"}]},
            "train@gaze-0": {
                "deps": [{"path": "data/shards", "md5": "bbb222.dir"}],
                "outs": [{"path": "models/gaze/seed0", "md5": "ccc.dir"}],
            },
            "train@base-0": {
                "deps": [{"path": "data/shards", "md5": "other.dir"}],
                "outs": [{"path": "models/base/seed0", "md5": "ddd.dir"}],
            },
        }
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "metrics" / "eval").mkdir(parents=True)
    (root / "metrics" / "eval" / "gaze_future.json").write_text(json.dumps(EVAL))
    (root / "metrics" / "attention.json").write_text(json.dumps(ATTENTION))
    card = (export.export(model, tmp_path / "out") / "README.md").read_text()
    for line in (
        "# gazevlm model: run `gaze`, task `future`, seed 0",
        "reads 5 RGB keyframes of egocentric video (1 per second, 5 s) and predicts what happens in the 2 s",
        "gazevlm predict my_clip.mp4 --model out --overlay",
        "| backbone / preset | openflamingo / tiny (language model: opt) |",
        "| gaze loss | lambda 100, KL gaze_to_attention, reduction sum |",
        "centre-cropped to 128 px: 8 x 8 patches of 16 px",
        f"- root: `{world}` (v2), the synthetic world (gazevlm.sample)",
        "- fingerprint of the root (DVC md5, dvc.lock): `aaa111.dir`",
        "- fingerprint of the training shards (`data/shards`, dvc.lock): `bbb222.dir`",
        "| metric | seeds [0, 1] | seed 0 |",
        "| semantic | 0.720 [0.703, 0.737] | 0.718 [0.698, 0.738] |",
        "| object_accuracy | 0.100 [0.050, 0.150] | n/a |",
        "| distinct_predictions | 0.250 | 0.300 |",
        "semantic drop 0.025 [0.003, 0.046], p = 0.030",
        "Chance levels: uniform_object_accuracy 0.028.",
        "Measured on seed 0 of this run",
        "| gaze block | 0.552 [0.529, 0.574] | n/a |",
        "| backbone's own | 0.403 [0.381, 0.424] | n/a |",
        "- Trained on the synthetic world",
        "- The `tiny` preset is a small vision encoder",
    ):
        assert line in card, line
    config = read_json(tmp_path / "out" / "config.json")
    assert (
        config["export"]["evaluation"] == EVAL
        and config["export"]["attention"]["sources"] == ATTENTION["gaze"]["future"]
    )


def test_model_card_says_what_was_not_measured(exported):
    card = (exported / "README.md").read_text()
    assert "Not evaluated when exported (no metrics/eval file for this run and task)." in card
    assert "Not measured when exported (no metrics/attention.json entry)." in card
    assert "fingerprint of the root (DVC md5, dvc.lock): `not recorded`" in card


def test_bad_exports_are_refused_and_nothing_is_lost(project, exported, tmp_path):  # noqa: F811
    model = copy_project(project, tmp_path / "p")
    weights = model / checkpoint.WEIGHTS_FILE
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(checkpoint.CheckpointError, match=r"model\.safetensors: checksum .* corrupted or replaced"):
        export.export(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    weights.write_bytes(good)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="thesis: not empty and not an earlier output"):
        export.export(model, foreign)
    assert (foreign / "chapter1.tex").read_text() == "keep me"
    with pytest.raises(FileExistsError, match="holds a model that is not an export"):
        export.export(model, project.model_dir("base"))
    with pytest.raises(ValueError, match="inside the model directory"):
        export.export(model, model / "export")
    (model / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="tokenizer"):
        export.export(model, tmp_path / "out")
    outside = shutil.copytree(project.model_dir(), tmp_path / "loose" / "future")
    with pytest.raises(ModelDirError, match="outside its project"):
        export.export(outside, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_of_another_version_is_refused(exported, tmp_path):
    copy = shutil.copytree(exported, tmp_path / "old")
    config = read_json(copy / "config.json")
    config["export"]["format"] = "gazevlm-export/0"
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match=r"exported by another gazevlm version \(format 'gazevlm-export/0'"):
        gazevlm.load_model(copy)


def test_export_command_line(project, exported, tmp_path, capsys):  # noqa: F811
    assert cli_main(["export", str(project.model_dir().parent), str(tmp_path / "gaze-future"), "--task", TASK]) == 0
    assert "model card" in capsys.readouterr().out
    assert files(tmp_path / "gaze-future") == files(exported)
    assert cli_main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    assert (
        capsys.readouterr().err.strip() == f"gazevlm export: error: {tmp_path / 'nowhere'}: model directory not found"
    )


@pytest.mark.slow
def test_export_then_predict_as_commands(project, clip, tmp_path):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(Path(gazevlm.__file__).parents[1])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gazevlm", *args], capture_output=True, text=True, env=env, timeout=240
        )

    done = run("export", str(project.model_dir()), str(tmp_path / "exp"))
    assert done.returncode == 0, done.stderr
    for model, out in ((tmp_path / "exp", "a"), (project.model_dir(), "b")):
        done = run("predict", str(clip), "--model", str(model), "--out", str(tmp_path / out), "--no-progress")
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (tmp_path / "b" / "predictions.csv").read_bytes()
