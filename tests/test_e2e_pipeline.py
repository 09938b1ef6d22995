"""The whole DVC pipeline, end to end, on a shrunken world: every stage runs its notebook through
papermill exactly as `make repro` does, then a second `dvc repro` does nothing and `dvc status` is
clean. The default-sized run is what `make repro` measures; this one keeps the suite fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_fixtures import run as _run

# the first test's timeout includes the module's `dvc repro` (3-4 min on 2 cores); each experiment 2-3 min
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# the one backbone `make test` runs as an experiment: the projector family, the furthest from the default's
# gated cross-attention; `make test-all` runs all four
BACKBONES = [
    *(pytest.param(b, marks=pytest.mark.every_variant) for b in ("openflamingo_noperceiver", "lavila", "internvl")),
    "llava_next",
]


@pytest.fixture(scope="module")
def repo(small_pipeline) -> Path:
    return small_pipeline


def test_every_stage_produced_its_outputs(repo: Path):
    for nb in (
        "00_sample",
        "01_extract",
        "02_annotate",
        "03_heatmaps",
        "03b_pretrain",
        "04_train_base_seed0",
        "04_train_gaze_seed0",
        "05_evaluate",
        "06_attention",
    ):
        assert (repo / "reports" / "notebooks" / f"{nb}.ipynb").exists(), nb
    assert (repo / "models" / "encoder" / "vision.safetensors").exists()
    assert (repo / "models" / "gaze" / "seed0" / "future" / "model.safetensors").exists()
    table = (repo / "reports" / "tables" / "table1.md").read_text()
    assert "gaze" in table.lower() and "object acc." in table
    record = json.loads((repo / "metrics" / "eval" / "gaze_future.json").read_text())
    assert record["n_videos"] == 2 and record["n_seeds"] == 1
    assert {"object_accuracy", "action_f1", "shuffled_frames", "distinct_predictions", "chance"} <= set(record)
    attention = json.loads((repo / "metrics" / "attention.json").read_text())
    assert {"base", "gaze"} <= set(attention)


def test_metrics_are_visible_to_dvc(repo: Path):
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo))
    text = json.dumps(shown)
    assert "metrics/eval" in text and "semantic" in text and "metrics/attention.json" in text
    assert "object_accuracy" in text and "shuffled_frames" in text and "n_videos" in text


def test_second_repro_does_nothing_and_status_is_clean(repo: Path):
    out = _run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    status = _run(["dvc", "status"], repo)
    assert "up to date" in status, status


@pytest.mark.parametrize("backbone", BACKBONES)
def test_each_backbone_runs_base_and_gaze_as_a_dvc_experiment(repo: Path, backbone: str):
    """Issue 9's criterion: `dvc exp run -S model.backbone=<b>` trains, evaluates and analyses base and gaze
    at the tiny preset on CPU; the heatmap stage (which does not read the backbone) is not rerun."""
    name = f"e2e-{backbone}"
    out = _run(
        ["dvc", "exp", "run", "-n", name, "-S", f"model.backbone={backbone}", "-S", "train.tasks=[future]"], repo
    )
    assert "Running stage 'heatmaps'" not in out and "Running stage 'train@gaze-0'" in out
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo))
    exp = next(
        rev["data"]
        for base in shown
        for group in base.get("experiments") or []
        for rev in group["revs"]
        if rev.get("name") == name
    )
    assert exp["params"]["params.yaml"]["data"]["model"]["backbone"] == backbone
    for run in ("base", "gaze"):
        record = exp["metrics"][f"metrics/eval/{run}_future.json"]["data"]
        assert record["n"] > 0 and 0 <= record["semantic"]["mean"] <= 1
    attention = exp["metrics"]["metrics/attention.json"]["data"]
    assert {"block", "perceiver"} <= set(attention["gaze"]["future"]) and "perceiver" in attention["base"]["future"]
    config = json.loads((repo / "models" / "gaze" / "seed0" / "future" / "config.json").read_text())
    assert config["model_config"]["backbone"] == backbone
