"""The whole DVC pipeline, end to end, on a shrunken world: every stage runs its notebook through
papermill exactly as `make repro` does, then a second `dvc repro` does nothing and `dvc status` is
clean. The default-sized run is what `make repro` measures; this one keeps the suite fast."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# the first test's timeout includes the module's `dvc repro` (3-4 min on 2 cores); each experiment 2-3 min
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

# 2 test videos: the shuffled-frames control gives each window a window of another video
SMALL = {
    "sample": {"videos": 8, "seconds": 10},
    "extract": {"split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "pretrain": {"steps": 5, "batch_size": 8},
    "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
    "train": {"tasks": ["future"], "seeds": [0], "epochs": 1, "batch_size": 8},
    "evaluate": {"bootstrap_samples": 100, "max_new_tokens": 8},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) and key != "runs" else value
    return out


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("clone") / "gazevlm"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the clone's dvc.lock (if any) describes the default-sized run: start this one afresh
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(_merge(params, SMALL), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    # what `make repro` runs after installing, with this test's venv (-o install: never reinstall)
    _run(["make", "-o", "install", "placeholder", f"VENV={sys.prefix}"], dest)
    _run(["dvc", "repro"], dest)
    return dest


def test_every_stage_produced_its_outputs(repo: Path):
    for nb in ("00_sample", "01_extract", "02_annotate", "03_heatmaps", "03b_pretrain", "04_train_base_seed0",
               "04_train_gaze_seed0", "05_evaluate", "06_attention"):
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


@pytest.mark.parametrize("backbone", ["openflamingo_noperceiver", "lavila", "internvl", "llava_next"])
def test_each_backbone_runs_base_and_gaze_as_a_dvc_experiment(repo: Path, backbone: str):
    """Issue 9's criterion: `dvc exp run -S model.backbone=<b>` trains, evaluates and analyses base and gaze
    at the tiny preset on CPU; the heatmap stage (which does not read the backbone) is not rerun."""
    name = f"e2e-{backbone}"
    out = _run(["dvc", "exp", "run", "-n", name, "-S", f"model.backbone={backbone}"], repo)
    assert "Running stage 'heatmaps'" not in out and "Running stage 'train@gaze-0'" in out
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo))
    exp = next(rev["data"] for base in shown for group in base.get("experiments") or []
               for rev in group["revs"] if rev.get("name") == name)
    assert exp["params"]["params.yaml"]["data"]["model"]["backbone"] == backbone
    for run in ("base", "gaze"):
        record = exp["metrics"][f"metrics/eval/{run}_future.json"]["data"]
        assert record["n"] > 0 and 0 <= record["semantic"]["mean"] <= 1
    attention = exp["metrics"]["metrics/attention.json"]["data"]
    assert {"block", "perceiver"} <= set(attention["gaze"]["future"]) and "perceiver" in attention["base"]["future"]
    config = json.loads((repo / "models" / "gaze" / "seed0" / "future" / "config.json").read_text())
    assert config["model_config"]["backbone"] == backbone
