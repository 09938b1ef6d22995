"""Paper-shaped tables, the ablation tables built from `dvc exp show --json`, and ablations.mk."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gazevlm import params as gparams
from gazevlm.evaluate import ablations as A
from gazevlm.evaluate import tables as T
from gazevlm.models.presets import BACKBONES

ROOT = Path(__file__).resolve().parents[1]


def est(mean, half=0.02):
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half}


RECORDS = {
    ("base", "future"): {"n": 30, "semantic": est(0.41)},
    ("gaze", "future"): {"n": 30, "semantic": est(0.52)},
    ("lambda0", "future"): {"n": 30, "semantic": est(0.43)},
    ("base", "activity"): {"n": 20, "semantic": est(0.60)},
    ("gaze", "activity"): {"n": 20, "semantic": est(0.61)},
    ("lambda0", "activity"): {"n": 20, "semantic": est(0.59)},
}
COMPARISONS = {
    "future": {
        "gaze_vs_base": {"semantic": {"diff": 0.11, "ci_low": 0.05, "ci_high": 0.17, "p_value": 0.0009, "n": 30}}
    },
    "activity": {
        "gaze_vs_base": {"semantic": {"diff": 0.01, "ci_low": -0.02, "ci_high": 0.04, "p_value": 0.41, "n": 20}}
    },
}


def test_table1_has_ours_and_the_paper_reference_group(tmp_path):
    num, disp = T.table1(RECORDS, COMPARISONS, backbone="openflamingo", label="openflamingo (tiny)")
    assert list(num["backbone"])[0] == "OpenFlamingo" and num.loc[0, "ours"] == "openflamingo (tiny)"
    assert len(num) == len(T.PAPER_TABLE1)  # every paper backbone listed for reference
    row = num.iloc[0]
    assert row["future_base"] == 0.41 and row["future_gaze"] == 0.52 and row["future_gain"] == 0.11
    assert row["future_p"] == 0.0009 and row["activity_n"] == 20
    assert row["paper_future_base"] == 0.6525 and row["paper_future_gaze"] == 0.7505
    assert row["paper_future_gain"] == pytest.approx(0.098)
    assert pd.isna(num.iloc[1]["future_base"]) and num.iloc[1]["paper_future_base"] == 0.6155
    cols = list(disp.columns)
    assert cols.index("ours: future base") < cols.index("ours: future gain") < cols.index("ours: activity base")
    assert all(c in cols for c in ("paper Ego4D: future base", "paper Ego4D: activity gain"))
    assert disp.loc[0, "ours: future gain"] == "+0.110 [+0.050, +0.170], p < 0.001"
    assert disp.loc[0, "ours: future base"] == "0.410 [0.390, 0.430]"
    assert disp.loc[1, "ours: future base"] == T.DASH
    paths = T.write_table(num, disp, tmp_path / "table1", "Table 1 shape.")
    md = (tmp_path / "table1.md").read_text()
    assert md.startswith("Table 1 shape.") and "| OpenFlamingo" in md and "0.7505" in md
    assert pd.read_csv(tmp_path / "table1.csv").shape == num.shape and len(paths) == 2


def test_table1_unknown_backbone_gets_its_own_row():
    num, _ = T.table1(RECORDS, COMPARISONS, backbone="mybackbone")
    assert num.loc[0, "backbone"] == "mybackbone" and pd.isna(num.loc[0, "paper_future_base"])
    assert len(num) == len(T.PAPER_TABLE1) + 1


def test_lambda_table_when_a_sweep_exists():
    P = gparams.Params()
    sweep = T.lambda_sweep(P.runs)
    assert sweep == {0.0: "lambda0", 100.0: "gaze"}
    assert T.lambda_sweep({"base": gparams.RunParams(), "gaze": gparams.RunParams(block=True, lam=100)}) == {}
    num, disp = T.lambda_table(RECORDS, sweep, backbone="openflamingo")
    assert num.loc[0, "future_lambda_0"] == 0.43 and num.loc[0, "future_lambda_100"] == 0.52
    assert num.loc[0, "paper_future_lambda_1000"] == 0.7354
    assert "ours: activity λ=100 (gaze)" in disp.columns and "paper Ego4D: future λ=0" in disp.columns


def test_metrics_comparisons_and_qualitative_tables():
    recs = {k: {**v, "teacher_forced_semantic": est(0.9), "n_empty_prediction": 0} for k, v in RECORDS.items()}
    num, disp = T.metrics_table(recs)
    assert len(num) == 6 and "teacher-forced argmax: semantic" in disp.columns
    num, disp = T.comparisons_table(COMPARISONS)
    assert num.loc[0, "semantic_p_value"] == 0.0009 and disp.loc[1, "comparison"] == "gaze − base"
    preds = {
        r: pd.DataFrame(
            {
                "window_id": ["w1", "w2", "w3"],
                "reference": ["a", "b", "c"],
                "prediction": [f"{r}1", f"{r}2", f"{r}3"],
                "semantic": [0.1, 0.2, 0.3],
            }
        )
        for r in ("base", "gaze")
    }
    q = T.qualitative(preds, n=2, runs=["base", "gaze"])
    assert list(q.columns[:4]) == ["window_id", "reference", "base", "gaze"] and len(q) == 2
    assert all(q["gaze"].str.startswith("gaze"))


# --- ablations from `dvc exp show --json` ---------------------------------------------------------


def node(name, params, metrics, error=None, ts="2026-01-01T00:00:00"):
    """One entry shaped like DVC 3.67's `exp show --json` output."""
    rev = f"{name or 'workspace'}-rev"
    return {
        "rev": rev,
        "name": name,
        "error": {"msg": error, "type": ""} if error else None,
        "data": {
            "rev": rev,
            "timestamp": ts,
            "params": {"params.yaml": {"data": params}},
            "metrics": {p: {"data": d} for p, d in metrics.items()},
            "deps": {},
            "outs": {},
            "meta": {},
        },
    }


def runs_metrics(gaze_sem, rouge=0.3):
    out = {}
    for run, bonus in (("base", 0.0), ("lambda0", 0.01), ("gaze", None)):
        for task in ("future", "activity"):
            sem = gaze_sem if bonus is None else 0.4 + bonus
            out[f"metrics/eval/{run}_{task}.json"] = {"n": 30, "semantic": est(sem), "rouge_l": est(rouge)}
    return out


def exp_show(*exps):
    baseline = node("main", {"runs": {"gaze": {"lambda": 100}}}, runs_metrics(0.5))
    baseline["experiments"] = [{"revs": [e]} for e in exps]
    workspace = node(None, {}, {})
    workspace["rev"] = workspace["data"]["rev"] = "workspace"
    return [workspace, baseline]


def test_ablation_table_from_experiments(tmp_path):
    def params(agg, s):
        return {"heatmaps": {"aggregate": agg, "sigma_px": s}, "runs": {"gaze": {"lambda": 100}}}

    data = exp_show(
        node("t9-single-s20", params(False, 20), runs_metrics(0.45)),
        node("t9-agg-s20", params(True, 20), runs_metrics(0.55)),
        node("t9-agg-s50", params(True, 50), {}, error="Experiment run failed"),
    )
    path = tmp_path / "show.json"
    path.write_text(json.dumps(data))
    exps = A.parse_exp_show(data)
    assert {"t9-single-s20", "t9-agg-s20", "t9-agg-s50", "main", "workspace"} <= set(exps)
    num, disp, missing = A.ablation_table(
        A.ABLATIONS["table9"], exps, ["t9-single-s20", "t9-agg-s20", "t9-agg-s50", "t9-x"]
    )
    assert missing == ["t9-agg-s50", "t9-x"]
    assert num.loc[0, "gaze future semantic"] == 0.45 and num.loc[1, "gaze future semantic"] == 0.55
    assert num.loc[0, "paper gaze future semantic"] == 0.6211  # (aggregate False, sigma 20)
    assert num.loc[1, "paper gaze future rouge_l"] == 0.5173  # (True, 20)
    assert "Experiment run failed" in disp.loc[2, "experiment"] and "not run" in disp.loc[3, "experiment"]
    written = A.build("table9", path, ["t9-single-s20", "t9-agg-s20", "t9-agg-s50"], tmp_path / "abl")
    assert "Missing experiments: t9-agg-s50" in written[-1].read_text()
    assert A.main(["table9", str(path), "t9-single-s20", "--out", str(tmp_path / "abl")]) == 0
    with pytest.raises(ValueError, match="none of the experiments"):
        A.build("table9", path, ["nope"], tmp_path / "abl")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not readable"):
        A.build("table9", bad, ["t9-agg-s20"], tmp_path / "abl")


def test_ablation_table_by_run_and_bool_number_matching():
    data = exp_show(node("t14-runs", {"runs": {"base": {}, "lambda0": {}, "gaze": {}}}, runs_metrics(0.5)))
    num, disp, missing = A.ablation_table(A.ABLATIONS["table14"], A.parse_exp_show(data), ["t14-runs"])
    assert not missing and list(num["run"]) == ["base", "lambda0", "gaze"]
    assert list(num["future semantic"]) == pytest.approx([0.4, 0.41, 0.5])
    assert list(num["paper future semantic"]) == [0.6525, 0.6701, 0.7505]
    assert A._same(True, True) and not A._same(True, 1) and A._same(0, 0.0)


def test_table1_has_a_row_per_backbone_beside_that_backbones_paper_row():
    gain = {"diff": 0.02, "ci_low": 0.01, "ci_high": 0.03, "p_value": 0.004}
    with_gain = {
        **runs_metrics(0.52),
        "metrics/eval/comparisons.json": {"future": {"gaze_vs_base": {"semantic": gain}}},
    }
    data = exp_show(
        node("t1-internvl", {"model": {"backbone": "internvl"}}, with_gain),
        node("t1-llava_next", {"model": {"backbone": "llava_next"}}, runs_metrics(0.48)),
    )
    num, disp, missing = A.ablation_table(
        A.ABLATIONS["table1"], A.parse_exp_show(data), ["t1-internvl", "t1-llava_next", "t1-lavila"]
    )
    assert missing == ["t1-lavila"] and list(num["model.backbone"][:2]) == ["internvl", "llava_next"]
    assert list(num["gaze future semantic"][:2]) == [0.52, 0.48] and num.loc[0, "base activity semantic"] == 0.4
    # InternVL and OpenLLaVA rows of the paper's Table 1
    assert num.loc[0, "paper base future semantic"] == 0.6323 and num.loc[0, "paper gaze activity semantic"] == 0.7404
    assert num.loc[1, "paper gaze future semantic"] == 0.6771
    assert "paper Ego4D (same backbone): gaze future semantic" in disp.columns
    assert set(A.ABLATIONS["table1"].paper) == {(b,) for b in BACKBONES}
    assert num.loc[0, "gain future semantic"] == 0.02 and num.loc[0, "gain future semantic p"] == 0.004
    assert disp.loc[0, "ours: gaze - base future semantic"] == "+0.020 [+0.010, +0.030], p = 0.004"
    assert disp.loc[1, "ours: gaze - base future semantic"] == "—"  # no comparisons.json


def test_gaze_input_tables_give_each_run_its_gain_over_base_beside_the_paper():
    metrics = runs_metrics(0.5)
    metrics["metrics/eval/gaze_text_future.json"] = {"n": 30, "semantic": est(0.45), "rouge_l": est(0.35)}
    gain = {"diff": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.02}
    metrics["metrics/eval/comparisons.json"] = {"future": {"gaze_text_vs_base": {"semantic": gain}}}
    runs = {"base": {}, "lambda0": {}, "gaze": {}, "gaze_text": {"gaze_text": True}}
    data = exp_show(node("t13-runs", {"runs": runs}, metrics))
    num, disp, missing = A.ablation_table(A.ABLATIONS["table13"], A.parse_exp_show(data), ["t13-runs"])
    assert not missing and list(num["run"]) == ["base", "gaze_text", "gaze"]  # lambda0 is not in Table 13
    assert list(num["future semantic"]) == pytest.approx([0.4, 0.45, 0.5])
    assert list(num["paper future semantic"]) == [0.6525, 0.7021, 0.7505]
    assert num.loc[1, "gain future semantic"] == 0.05 and np.isnan(num.loc[0, "gain future semantic"])
    assert disp.loc[1, "ours: run - base future semantic"] == "+0.050 [+0.010, +0.090], p = 0.020"
    # Table 18 by the observed seconds of the activity window, Table 20 by the future targets
    one = node("t18-one-frame", {"extract": {"activity_observe_s": 1}}, runs_metrics(0.5))
    num, _, _ = A.ablation_table(A.ABLATIONS["table18"], A.parse_exp_show(exp_show(one)), ["t18-one-frame"])
    assert num.loc[0, "paper base activity semantic"] == 0.6897 and num.loc[0, "paper gaze activity rouge_l"] == 0.4611
    coarse = node("t20-narrations", {"annotate": {"future_targets": "narrations"}}, runs_metrics(0.5))
    num, _, _ = A.ablation_table(A.ABLATIONS["table20"], A.parse_exp_show(exp_show(coarse)), ["t20-narrations"])
    assert num.loc[0, "paper gaze future semantic"] == 0.7621 and num.loc[0, "paper base future rouge_l"] == 0.4982


def test_patch_layers_ablation_shows_object_accuracy_and_its_gains():
    def node_with(layers, gaze_obj):
        metrics = {
            f"metrics/eval/{run}_future.json": {"n": 30, "object_accuracy": {"mean": obj}, "semantic": {"mean": 0.7}}
            for run, obj in (("base", 0.2), ("gaze", gaze_obj))
        }
        cmp = {"n_videos": 6, "diff": gaze_obj - 0.2, "ci_low": 0.0, "ci_high": 0.1, "p_value": 0.01}
        metrics["metrics/eval/comparisons.json"] = {
            "future": {"gaze_vs_base": {"object_accuracy": cmp, "semantic": cmp}}
        }
        return node(f"pl-{layers}", {"model": {"block_patch_layers": layers}}, metrics)

    data = exp_show(node_with(0, 0.21), node_with(2, 0.26))
    num, disp, missing = A.ablation_table(A.ABLATIONS["patch_layers"], A.parse_exp_show(data), ["pl-0", "pl-2"])
    assert not missing and list(num["model.block_patch_layers"]) == [0, 2]
    assert list(num["gaze future object_accuracy"]) == pytest.approx([0.21, 0.26])
    assert "+0.060" in " ".join(disp.astype(str).values.ravel())


def _dry_run(target: str) -> list[str]:
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "-f", str(ROOT / "ablations.mk"), target, "DVC=dvc", "PYTHON=python"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.splitlines()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
@pytest.mark.parametrize("table", sorted(A.ABLATIONS))
def test_ablations_mk_queues_what_the_table_reads(table):
    lines = _dry_run(f"ablation-{table}")
    queued = [re.search(r"-n (\S+)", line).group(1) for line in lines if "exp run --queue" in line]
    assert queued and any("exp run --run-all" in line for line in lines)
    build = [line for line in lines if "gazevlm.evaluate.ablations" in line]
    assert len(build) == 1
    args = build[0].split("gazevlm.evaluate.ablations ")[1].split(" --out")[0].split()
    assert args[0] == table and args[2:] == queued
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = [kv for line in lines for kv in re.findall(r"-S (\S+)=", line)]
    for key in overrides:  # every override names an existing param, or adds a run (`++runs.<new>.<switch>`)
        value = raw
        parts = key.split(".")
        if key.startswith("++"):
            assert (
                parts[0] == "++runs" and parts[1] not in raw["runs"] and parts[2] in (*gparams.GAZE_INPUTS, "block")
            ), key
            continue
        for part in parts:
            value = value[part]
    assert set(A.ABLATIONS[table].vary) <= set(overrides)
    assert set(A.ABLATIONS[table].runs) <= {k.split(".")[1] for k in overrides if k.startswith("++")} | set(raw["runs"])


# --- Table 1 with what it measured (issue 13, item 6) ----------------------------------------------


def grounded_record(sem, obj, f1, distinct, drop, p_drop):
    """A metrics/eval record as the stage writes it: 30 windows of 6 videos, 3 seeds, synthetic world."""
    return {
        "n": 30,
        "n_videos": 6,
        "n_seeds": 3,
        "semantic": est(sem),
        "object_accuracy": est(obj),
        "action_f1": est(f1),
        "distinct_predictions": distinct,
        "shuffled_frames": {
            "drop": {"object_accuracy": {"diff": drop, "ci_low": drop - 0.1, "ci_high": drop + 0.1, "p_value": p_drop}}
        },
        "chance": {"majority_object_accuracy": 0.1, "majority_action_f1": 0.05, "uniform_object_accuracy": 1 / 36},
    }


def gain(diff, p):
    return {"diff": diff, "ci_low": diff - 0.05, "ci_high": diff + 0.05, "p_value": p, "n": 30, "n_videos": 6}


def test_table1_runs_shows_every_run_the_controls_the_gains_and_the_counts():
    metrics = ["semantic", "object_accuracy", "action_f1"]
    records = {
        ("base", "future"): grounded_record(0.60, 0.10, 0.08, 0.05, 0.00, 1.0),
        ("lambda0", "future"): grounded_record(0.61, 0.12, 0.09, 0.10, 0.01, 0.8),
        ("gaze", "future"): grounded_record(0.70, 0.40, 0.30, 0.60, 0.25, 0.031),
    }
    comparisons = {
        "future": {
            "gaze_vs_base": {m: gain(0.2, 0.0312) for m in metrics},
            "lambda0_vs_base": {m: gain(0.01, 0.75) for m in metrics},
        }
    }
    num, disp, caption = T.table1_runs(
        records, comparisons, runs=["base", "lambda0", "gaze"], tasks=["future"], metrics=metrics, label="tiny"
    )
    assert list(disp["run / comparison"]) == [
        "base",
        "lambda0",
        "gaze",
        "chance: the most frequent train target",
        "gaze − base",
        "lambda0 − base",
    ]
    # the grounding diagnostics sit beside the semantic score, each with its video-bootstrap interval
    cols = list(disp.columns)
    assert cols[2:5] == ["semantic", "object acc.", "action F1"]
    gaze = disp.iloc[2]
    assert gaze["semantic"] == "0.700 [0.680, 0.720]" and gaze["object acc."] == "0.400 [0.380, 0.420]"
    assert gaze["action F1"] == "0.300 [0.280, 0.320]"
    # the controls: distinct predictions and the shuffled-frames drop (with its video-level p)
    assert gaze["distinct predictions"] == "0.60"
    assert gaze["drop under shuffled frames (object acc.)"] == "+0.250 [+0.150, +0.350], p = 0.031"
    # windows / videos / seeds of each run; the gains pool the seeds
    assert gaze["windows / videos / seeds"] == "30 / 6 / 3"
    chance = disp.iloc[3]
    assert chance["object acc."] == "0.100" and chance["action F1"] == "0.050" and chance["semantic"] == T.DASH
    g = disp.iloc[4]
    assert g["semantic"] == "+0.200 [+0.150, +0.250], p = 0.031" and g["windows / videos / seeds"] == "30 / 6 / pooled"
    row = num[num["row"] == "gaze_vs_base"].iloc[0]
    assert row["object_accuracy_p"] == 0.0312 and row["n_videos"] == 6 and row["n"] == 30
    row = num[num["row"] == "gaze"].iloc[0]
    assert (row["n"], row["n_videos"], row["n_seeds"]) == (30, 6, 3)
    assert row["shuffled_drop_object_accuracy"] == 0.25 and row["shuffled_drop_object_accuracy_p"] == 0.031
    # the chance levels are stated, the uniform one from the record, not typed into the caption
    assert "chance = always answering the most frequent train target (uniform guess of the object: 1/36)" in caption
    records = {k: {**v, "chance": {**v["chance"], "uniform_object_accuracy": 1 / 20}} for k, v in records.items()}
    assert (
        "1/20)"
        in T.table1_runs(records, comparisons, runs=["gaze"], tasks=["future"], metrics=metrics, label="tiny")[2]
    )


def test_table1_runs_on_real_data_shows_the_semantic_drop_and_no_chance_row():
    rec = {
        "n": 30,
        "n_videos": 6,
        "n_seeds": 3,
        "semantic": est(0.6),
        "distinct_predictions": 0.5,
        "shuffled_frames": {"drop": {"semantic": {"diff": 0.1, "ci_low": 0.05, "ci_high": 0.15, "p_value": 0.03}}},
    }
    num, disp, caption = T.table1_runs(
        {("gaze", "future"): rec}, {}, runs=["gaze"], tasks=["future"], metrics=["semantic"], label="real"
    )
    assert list(disp["run / comparison"]) == ["gaze"] and "object acc." not in disp.columns
    assert disp.loc[0, "drop under shuffled frames (semantic)"] == "+0.100 [+0.050, +0.150], p = 0.030"
    assert "uniform guess" not in caption


def test_table1_seeds_has_every_seed_with_its_own_gains_and_counts():
    per_seed = {s: {"semantic": est(0.5 + 0.1 * int(s)), "distinct_predictions": 0.2} for s in ("0", "1", "2")}
    records = {(r, "future"): {"n": 30, "n_videos": 6, "n_seeds": 3, "per_seed": per_seed} for r in ("base", "gaze")}
    per_seed_cmp = {s: {"future": {"gaze_vs_base": {"semantic": gain(0.01 * (int(s) + 1), 0.5)}}} for s in per_seed}
    num, disp, caption = T.table1_seeds(
        records, per_seed_cmp, runs=["base", "gaze"], tasks=["future"], metrics=["semantic"]
    )
    assert list(disp.columns[:3]) == ["task", "seed", "run / comparison"]
    assert list(zip(num["seed"], num["row"], strict=True)) == [
        (s, r) for s in (0, 1, 2) for r in ("base", "gaze", "gaze_vs_base")
    ]
    assert list(disp.loc[disp["run / comparison"] == "gaze", "semantic"]) == [
        "0.500 [0.480, 0.520]",
        "0.600 [0.580, 0.620]",
        "0.700 [0.680, 0.720]",
    ]
    gains = disp[disp["run / comparison"] == "gaze − base"]
    assert list(gains["semantic"]) == [
        f"+{d:.3f} [{d - 0.05:+.3f}, {d + 0.05:+.3f}], p = 0.500" for d in (0.01, 0.02, 0.03)
    ]
    assert set(disp["windows / videos / seeds"]) == {"30 / 6 / 1"}
    assert "per seed" in caption
