"""The hallucination stage as DVC runs it (`dvc repro hallucination`, its notebook through papermill) in a scratch
repository holding the files the stage lists and fixture predictions: "not rated yet" from the committed
header-only ratings file; a new rating makes DVC rerun the stage, which reads the file and never writes it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hallucination_fixtures as RF
from gazevlm import params
from gazevlm.hallucination import ratings, stage, study

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _dvc(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    stage_spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["hallucination"]
    dest = tmp_path / "repo"
    for dep in [d for d in stage_spec["deps"] if "${" not in d and not d.startswith("data/")] + ["dvc.yaml"]:
        src = ROOT / dep
        if src.is_dir():
            shutil.copytree(src, dest / dep, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / dep)
    shutil.copytree(ROOT / "ratings", dest / "ratings")  # the committed, header-only file
    (dest / "reports" / "notebooks").mkdir(parents=True)  # a clone has it (reports/notebooks/.gitignore)
    p = RF.fixture_params(windows=8)
    RF.write_params(dest, p)
    RF.write_predictions(dest, RF.window_ids(4, 2))
    _dvc(["init", "--no-scm", "-q"], dest)
    return dest


def test_dvc_reruns_the_stage_when_a_rating_is_added_and_never_writes_the_file(repo: Path):
    _dvc(["repro", "--single-item", "hallucination"], repo)
    metrics = json.loads((repo / stage.METRICS_FILE).read_text())
    assert metrics["status"] == "not rated yet" and "rate" not in metrics
    assert "not rated yet" in (repo / stage.REPORT_MD).read_text()
    assert (repo / "reports" / "notebooks" / "07_hallucination.ipynb").exists()
    assert "Running stage" not in _dvc(["repro", "--single-item", "hallucination"], repo)

    p = params.load(repo / "params.yaml")
    item = study.draw_sample(p, study.load_predictions(p, repo)).items[0]
    path = repo / "ratings" / "hallucination.csv"
    ratings.append_rating(
        path,
        ratings.Rating(
            task="future",
            seed=0,
            run=item.run,
            window_id=item.window_id,
            hallucinated="yes",
            sample_seed=0,
            prediction_hash=item.prediction_hash,
        ),
    )
    rated = path.read_bytes()
    assert "Running stage 'hallucination'" in _dvc(["repro", "--single-item", "hallucination"], repo)
    assert path.read_bytes() == rated
    metrics = json.loads((repo / stage.METRICS_FILE).read_text())
    assert metrics["status"] == "partial" and metrics["rate"][item.run]["mean"] == 1.0
    assert metrics["sample"]["rated_items"] == 1
