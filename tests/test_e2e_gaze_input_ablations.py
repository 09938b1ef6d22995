"""`make ablation-table13|15|18|20` in a scratch clone on a shrunken world: each queues its DVC experiments,
runs them and writes reports/ablations/<table>.md|csv beside the paper's numbers (issue 17). The
default-sized tables are the lead's to run; these check that every target works end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline_fixtures import clone, run

# the first test's timeout includes the clone's `dvc repro` (4-5 min on 2 cores, both tasks)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

SMALL = {
    "sample": {"videos": 8, "seconds": 10},
    "extract": {"split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "pretrain": {"steps": 5, "batch_size": 8},
    "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
    "train": {"tasks": ["future", "activity"], "seeds": [0], "epochs": 1, "batch_size": 8},
    "evaluate": {"bootstrap_samples": 100, "max_new_tokens": 8},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = clone(tmp_path_factory.mktemp("clone") / "gazevlm", SMALL)
    run(["dvc", "repro"], dest)
    return dest


def ablation(repo: Path, table: str) -> tuple[pd.DataFrame, dict, str]:
    """Run the make target; (its csv, {experiment name: exp show data}, make's output)."""
    out = run(["make", "-f", "ablations.mk", f"ablation-{table}", "DVC=dvc", "ABL_PYTHON=python"], repo)
    assert (repo / "reports" / "ablations" / f"{table}.md").exists()
    shown = json.loads((repo / "reports" / "ablations" / f"{table}.exp.json").read_text())
    exps = {
        rev["name"]: rev["data"]
        for base in shown
        for group in base.get("experiments") or []
        for rev in group["revs"]
        if rev.get("name")
    }
    return pd.read_csv(repo / "reports" / "ablations" / f"{table}.csv"), exps, out


def metric(exp: dict, path: str) -> dict:
    return exp["metrics"][path]["data"]


@pytest.mark.parametrize("table,run_name", [("table13", "gaze_text"), ("table15", "gaze_overlay")])
def test_gaze_input_baseline_table(repo: Path, table: str, run_name: str):
    csv, exps, _ = ablation(repo, table)
    exp = exps[f"t{table[5:]}-runs"]
    assert list(csv["run"]) == ["base", run_name, "gaze"]
    assert csv["future semantic"].notna().all() and csv["future rouge_l"].notna().all()
    assert not math.isnan(csv.loc[1, "gain future semantic"])
    assert exp["params"]["params.yaml"]["data"]["runs"][run_name] == {run_name: True}
    comparisons = metric(exp, "metrics/eval/comparisons.json")["future"]
    assert {f"{run_name}_vs_base", f"gaze_vs_{run_name}", "gaze_vs_base"} <= set(comparisons)
    assert run_name not in metric(exp, "metrics/attention.json")  # the attention stage skips it
    assert (repo / "reports" / "ablations" / f"{table}.md").read_text().count("paper Ego4D OpenFlamingo") >= 1


def test_single_static_frame_activity_table(repo: Path):
    csv, exps, _ = ablation(repo, "table18")
    assert list(csv["extract.activity_observe_s"]) == [1, 3]
    assert csv["base activity semantic"].notna().all() and csv["gaze activity semantic"].notna().all()
    one, three = (metric(exps[n], "reports/extract.json") for n in ("t18-one-frame", "t18-three-frames"))
    keyframes = sum(s["keyframes"] for s in one["splits"].values())
    videos = sum(s["videos"] for s in one["splits"].values())
    assert one["windows"]["activity"]["made"] == keyframes  # one window per keyframe: 1 frame each
    assert three["windows"]["activity"]["made"] == keyframes - 2 * videos  # 3-frame windows
    assert one["windows"]["future"] == three["windows"]["future"]


def test_coarse_future_targets_table(repo: Path):
    csv, exps, _ = ablation(repo, "table20")
    assert list(csv["annotate.future_targets"]) == ["narrations", "captions"]
    assert csv["base future semantic"].notna().all() and csv["gaze future semantic"].notna().all()
    coarse, fine = (metric(exps[n], "reports/annotate.json") for n in ("t20-narrations", "t20-captions"))
    assert coarse["future_targets"] == "narrations" and "future_targets" not in fine
    assert coarse["windows"]["by_task"]["activity"] == fine["windows"]["by_task"]["activity"]
