"""Table 4 (gazevlm.zeroshot): models trained elsewhere evaluated, untrained, on an EGTEA-layout world."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from contextlib import chdir
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gazevlm import layout, sample_egtea, zeroshot
from gazevlm import params as gparams
from gazevlm import train as train_mod
from train_fixtures import ListSource, tiny_params

TINY = {
    "sample_egtea": {"videos": 3, "seconds": 8, "width": 128, "height": 96, "test_fraction": 0.67},
    "evaluate": {"bootstrap_samples": 50, "max_new_tokens": 6, "batch_size": 8},
}


def _est(mean: float) -> dict:
    return {"mean": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01, "n": 40, "n_videos": 8}


def test_table4_rows_put_ours_beside_the_papers_numbers():
    records = {
        (run, "future"): {"semantic": _est(m), "n": 40, "n_videos": 8, "n_seeds": 3}
        for run, m in (("base", 0.50), ("lambda0", 0.52), ("gaze", 0.55))
    }
    cmp = {"future": {"gaze_vs_base": {"semantic": {"diff": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.02}}}}
    home = ({("base", "future"): {"semantic": _est(0.70)}, ("gaze", "future"): {"semantic": _est(0.72)}}, {})
    num, disp = zeroshot.table4(
        (records, cmp), home, runs=["base", "lambda0", "gaze"], tasks=["future"], backbone="openflamingo"
    )
    assert num["row"].tolist() == ["base", "lambda0", "gaze", "gaze - base"]
    assert num["egtea semantic"].tolist() == [0.50, 0.52, 0.55, 0.05]
    assert num["egtea semantic p"].iloc[3] == 0.02 and num["n_videos"].iloc[0] == 8
    assert num["in-domain semantic"].iloc[[0, 2]].tolist() == [0.70, 0.72] and math.isnan(num["in-domain semantic"][1])
    assert num["paper egtea"].iloc[[0, 2]].tolist() == [0.6501, 0.7305] and math.isnan(num["paper egtea"][1])
    assert num["paper egtea"].iloc[3] == pytest.approx(0.0804) and num["paper ego4d"].iloc[3] == pytest.approx(0.098)
    row = disp.iloc[3]
    assert row["ours: EGTEA zero-shot"] == "+0.050 [+0.010, +0.090], p = 0.020"
    assert row["paper EGTEA zero-shot (OpenFlamingo)"] == "+0.0804 (no CI given)"
    assert disp.iloc[0]["windows / videos / seeds"] == "40 / 8 / 3" and disp.iloc[0]["ours: in-domain test"] == (
        "0.700 [0.690, 0.710]"
    )
    # a backbone the paper has no row for, and no in-domain run yet: dashes, never made-up numbers
    num, disp = zeroshot.table4((records, cmp), None, runs=["base", "gaze"], tasks=["future"], backbone="other")
    assert num["paper egtea"].isna().all() and (disp["ours: in-domain test"] == "—").all()


def _train_tiny_models(repo: Path, params: gparams.Params) -> None:
    with chdir(repo):  # DVCLive must not find the project's own DVC repository
        for run in params.runs:
            train_mod.train(
                params,
                run,
                "future",
                seed=0,
                out_dir=repo / layout.run_dir(run, "future", 0),
                live_dir=repo / "live" / run,
                data=ListSource(),
                device="cpu",
                progress=False,
            )


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow  # the command writes the world's videos with a process pool, as `make ablation-table4` does
@pytest.mark.timeout(600)
def test_zero_shot_end_to_end_on_a_tiny_egtea_world(tmp_path):
    """sample_egtea -> extract -> annotate -> heatmaps in the workdir, then the trained models evaluated there
    through the command's entry point: the models are not retrained and the default pipeline's data untouched."""
    trained = tiny_params(epochs=1, seeds=[0])
    trained = gparams.from_dict(
        {
            **gparams.to_dict(trained),
            "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
        }
    )
    raw = gparams.to_dict(trained)
    for section, values in TINY.items():
        raw[section] = {**raw[section], **values}
    # the committed default's future targets: on EGTEA (no narration file) they come from the action labels
    raw["annotate"] = {**raw["annotate"], "future_targets": "narrations"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _train_tiny_models(tmp_path, trained)
    models_before = _digests(tmp_path / "models")
    with chdir(tmp_path):
        assert zeroshot.main(["--params", "params.yaml", "--out", "reports/ablations"]) == 0
    assert _digests(tmp_path / "models") == models_before  # zero-shot: nothing trained
    assert not (tmp_path / layout.EXTRACT_DIR).exists() and not (tmp_path / layout.SHARDS_DIR).exists()
    work = tmp_path / "data" / "zeroshot" / "egtea"
    assert list((work / layout.SHARDS_DIR / "future").glob("test-*.tar"))
    assert (work / "metrics" / "eval" / "gaze_future.json").is_file()
    assert (tmp_path / "data" / "egtea_sample" / sample_egtea.MARKER).is_file()
    num = pd.read_csv(tmp_path / "reports" / "ablations" / "table4.csv")
    assert num["row"].tolist() == ["base", "gaze", "gaze - base"]
    assert num["n_videos"].iloc[0] == 2 and num["n_seeds"].iloc[0] == 1 and num["n"].iloc[0] > 0
    assert num["egtea semantic"].between(-1, 1).all() and num["in-domain semantic"].isna().all()
    md = (tmp_path / "reports" / "ablations" / "table4.md").read_text()
    assert "zero-shot on EGTEA Gaze+" in md and "synthetic EGTEA-layout world" in md and "2 sessions" in md
    predictions = pd.read_parquet(work / layout.PREDICTIONS_DIR / "gaze" / "future" / "seed0.parquet")
    assert predictions["reference"].str.startswith("the camera wearer ").all()
    assert json.loads((work / "reports" / "annotate.json").read_text())["future_targets"] == "narrations"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_the_make_target_updates_the_default_run_then_runs_the_zero_shot_command():
    root = Path(__file__).resolve().parents[1]
    lines = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-n",
            "-f",
            str(root / "ablations.mk"),
            "ablation-table4",
            "DVC=dvc",
            "ABL_PYTHON=python",
        ],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert lines == [
        "dvc repro evaluate",
        "python -m gazevlm.zeroshot --params params.yaml --out reports/ablations",
    ]
    assert (
        "ablation-table4"
        in subprocess.run(
            ["make", "-n", "-p", "-f", str(root / "ablations.mk"), "ablations"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        .stdout.split("ABLATION_TARGETS := ")[1]
        .splitlines()[0]
    )
