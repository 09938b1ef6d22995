"""The evaluate stage end to end with stand-in models and loader: files, metrics, paired tests, tables."""

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from evaluate_fixtures import ANSWERS, StandInModel, encode_prompt, encode_train, make_batches, make_tokenizer
from gazevlm import params as gparams
from gazevlm.evaluate import controls, stage, stats
from gazevlm.evaluate import predict as P

ROOT = Path(__file__).resolve().parents[1]
CODEC = P.TextCodec(encode_prompt=encode_prompt, encode_train=encode_train)
N = 12
WRONG = {"base": {0, 1, 2, 3}, "lambda0": {0, 1, 2}, "gaze": set()}  # clips each run gets wrong


def small_params(**evaluate):
    p = gparams.Params()
    return gparams.with_overrides(p, evaluate={"bootstrap_samples": 200, "batch_size": 5, **evaluate})


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def loader(n=N):
    return lambda params, task: make_batches(n, task=task, batch_size=params.evaluate.batch_size)


SEEDS = (0, 1, 2)


def models(tok, blind=()):
    """Stand-ins that read their frames (the answer is coded in the pixels), except the `blind` runs,
    which say the same thing whatever they see."""

    def load(run, task, seed):
        wrong = set(range(len(ANSWERS))) if run in blind else WRONG[run]
        return StandInModel(tok, wrong=wrong, echo=run == "gaze"), tok

    return load


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("eval")
    report = stage.run(
        small_params(), root=root, load_model=models(tok), batches=loader(), codec=CODEC, synthetic=False
    )
    return root, report


def predictions(root, run, task, seed=0):
    return pd.read_parquet(root / f"data/predictions/{run}/{task}/seed{seed}.parquet")


def test_outputs_exist(evaluated):
    root, report = evaluated
    for run in ("base", "lambda0", "gaze"):
        for task in ("future", "activity"):
            for seed in SEEDS:
                df = predictions(root, run, task, seed)
                assert len(df) == N and df["window_id"].is_unique
                assert {
                    "window_id",
                    "uid",
                    "prediction",
                    "reference",
                    "semantic",
                    "rouge_l",
                    "bleu4",
                    "cider",
                    "teacher_forced_prediction",
                    "teacher_forced_semantic",
                    "shuffled_prediction",
                    "shuffled_semantic",
                } <= set(df.columns)
            rec = json.loads((root / f"metrics/eval/{run}_{task}.json").read_text())
            assert rec["n"] == N and rec["n_videos"] == N // 3 and rec["n_seeds"] == 3 and rec["seeds"] == [0, 1, 2]
            for m in ("semantic", "rouge_l", "bleu4", "cider", "teacher_forced_semantic"):
                assert set(rec[m]) == {"mean", "ci_low", "ci_high", "n", "n_videos"}
                assert rec[m]["n_videos"] == N // 3
            assert set(rec["per_seed"]) == {"0", "1", "2"}
            assert "object_accuracy" not in rec and "chance" not in rec  # not the synthetic world
    for name in ("table1", "table1_seeds", "table2", "metrics", "comparisons"):
        assert (root / f"reports/tables/{name}.md").exists() and (root / f"reports/tables/{name}.csv").exists()
    assert json.loads((root / "reports/evaluate.json").read_text())["stage"] == "evaluate"
    assert report["generation"]["decoding"] == "greedy"
    assert report["metrics"]["gaze/future"] == {"n": N, "n_videos": N // 3, "n_seeds": 3, "distinct_predictions": 0.5}


def test_scores_reflect_the_known_answers(evaluated):
    root, _ = evaluated
    gaze = predictions(root, "gaze", "future")
    base = predictions(root, "base", "future")
    assert (gaze["prediction"] == gaze["reference"]).all()
    assert gaze["semantic"].min() > 0.999 and gaze["rouge_l"].min() == pytest.approx(1.0)
    wrong = base["prediction"] != base["reference"]
    assert wrong.sum() == 8  # clips 0-3 of every 6 are wrong
    assert (base.loc[wrong, "semantic"] < 0.9).all()
    # teacher forcing is perfect for the stand-in, so it is the same for both runs (and says nothing)
    assert base["teacher_forced_semantic"].min() > 0.999


def test_shuffled_predictions_are_what_the_model_says_on_the_other_videos_frames(evaluated, tok):
    """The stage reuses the generation of window d(i) as window i's shuffled-frames prediction; that is
    exact only if generating on d(i)'s frames again gives the same text: check with a real second pass."""
    root, _ = evaluated
    df = predictions(root, "gaze", "future")
    batches = make_batches(N, task="future", batch_size=N)
    order = {w: i for i, w in enumerate(batches[0]["window_id"])}
    d = controls.derangement(df["uid"])
    pixels = batches[0]["pixels"][[order[w] for w in df["window_id"].to_numpy()[d]]]
    regen = P.predict(
        StandInModel(tok, echo=True), tok, [{**batches[0], "pixels": pixels}], "future", max_new_tokens=24, codec=CODEC
    )
    assert df["shuffled_prediction"].tolist() == regen["prediction"].tolist()
    assert (df["uid"].to_numpy() != df["uid"].to_numpy()[d]).all()


def test_a_model_that_reads_its_frames_drops_under_shuffled_frames(evaluated):
    root, _ = evaluated
    rec = json.loads((root / "metrics/eval/gaze_future.json").read_text())
    drop = rec["shuffled_frames"]["drop"]["semantic"]
    assert drop["diff"] > 0.1 and drop["n_videos"] == N // 3
    assert rec["shuffled_frames"]["semantic"]["mean"] < rec["semantic"]["mean"]
    assert rec["distinct_predictions"] == pytest.approx(len(ANSWERS) / N)


def test_a_frame_blind_model_shows_no_drop_and_one_caption(tmp_path, tok):
    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    stage.run(p, root=tmp_path, load_model=models(tok, blind=("base",)), batches=loader(), codec=CODEC, synthetic=False)
    rec = json.loads((tmp_path / "metrics/eval/base_future.json").read_text())
    assert rec["distinct_predictions"] == pytest.approx(1 / N)
    drop = rec["shuffled_frames"]["drop"]["semantic"]
    assert drop["diff"] == pytest.approx(0.0, abs=1e-9) and drop["p_value"] == pytest.approx(1.0)


def test_paired_comparisons(evaluated):
    root, _ = evaluated
    comp = json.loads((root / "metrics/eval/comparisons.json").read_text())
    assert set(comp) == {"future", "activity"}
    assert set(comp["future"]) == {"gaze_vs_base", "lambda0_vs_base", "gaze_vs_lambda0"}
    g = comp["future"]["gaze_vs_base"]["semantic"]
    # 4 videos, all with a positive mean difference: the sign-flip test cannot go below 2 / 2^4
    assert g["diff"] > 0.1 and g["ci_low"] > 0 and g["n"] == N and g["n_videos"] == N // 3
    assert g["p_value"] == pytest.approx(2 / 2 ** (N // 3))
    tf = comp["future"]["gaze_vs_base"]["teacher_forced_semantic"]
    assert tf["diff"] == pytest.approx(0, abs=1e-6) and tf["p_value"] == pytest.approx(1.0)
    per_seed = json.loads((root / "metrics/eval/comparisons_per_seed.json").read_text())
    assert set(per_seed) == {"0", "1", "2"}
    assert per_seed["1"]["future"]["gaze_vs_base"]["semantic"]["diff"] == pytest.approx(g["diff"])


def test_seeds_are_pooled_per_window_before_the_video_test(tmp_path, tok):
    """base is wrong on clips 0-3 with seed 0 only: pooled, each window scores the mean over its seeds."""

    def load(run, task, seed):
        return StandInModel(tok, wrong=WRONG["base"] if (run == "base" and seed == 0) else set()), tok

    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    stage.run(p, root=tmp_path, load_model=load, batches=loader(), codec=CODEC, synthetic=False)
    per = [predictions(tmp_path, "base", "future", s).set_index("window_id")["rouge_l"] for s in SEEDS]
    expected = (per[0] + per[1] + per[2]) / 3
    rec = json.loads((tmp_path / "metrics/eval/base_future.json").read_text())
    assert rec["rouge_l"]["mean"] == pytest.approx(expected.mean())
    assert rec["per_seed"]["1"]["rouge_l"]["mean"] == pytest.approx(1.0)
    comp = json.loads((tmp_path / "metrics/eval/comparisons.json").read_text())["future"]["gaze_vs_base"]["rouge_l"]
    assert comp["diff"] == pytest.approx(1.0 - expected.mean())
    # the test runs over the 4 videos on the per-window seed means, not over 3 x 12 seed-windows
    uids = predictions(tmp_path, "base", "future").set_index("window_id").loc[expected.index, "uid"]
    ref = stats.paired_test([1.0] * N, expected.to_numpy(), uids.tolist(), n_resamples=200, seed=0)
    assert (comp["n"], comp["n_videos"]) == (N, N // 3)
    assert comp["p_value"] == pytest.approx(ref.p_value) and comp["ci_low"] == pytest.approx(ref.ci_low)


def test_grounding_metrics_and_chance_on_the_synthetic_world(tmp_path, tok):
    targets = pd.DataFrame(
        {
            "window_id": [f"future_t{i}" for i in range(5)],
            "task": "future",
            "split": "train",
            "target_text": [ANSWERS[0]] * 3 + [ANSWERS[2]] * 2,
            "dropped": False,
        }
    )
    (tmp_path / "data/annotate").mkdir(parents=True)
    targets.to_parquet(tmp_path / "data/annotate/targets.parquet")
    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    stage.run(p, root=tmp_path, load_model=models(tok), batches=loader(), codec=CODEC, synthetic=True)
    rec = json.loads((tmp_path / "metrics/eval/gaze_future.json").read_text())
    # answers 0 (red cup) and 2 (blue bottle) name an object the grammar knows; the rest name none
    assert rec["object_accuracy"]["mean"] == pytest.approx(4 / N)
    assert rec["shuffled_frames"]["object_accuracy"]["mean"] == pytest.approx(0.0)
    # the majority train target (red cup) is right on the 2 red-cup test windows of 12
    assert rec["chance"]["majority_object_accuracy"] == pytest.approx(2 / N)
    assert rec["chance"]["uniform_object_accuracy"] == pytest.approx(1 / 36)
    base = json.loads((tmp_path / "metrics/eval/base_future.json").read_text())
    assert base["object_accuracy"]["mean"] < rec["object_accuracy"]["mean"]
    md = (tmp_path / "reports/tables/table1.md").read_text()
    assert "object acc." in md and "action F1" in md and "chance" in md
    # the comparisons hold the grounding metrics too (same structure as the paper's metrics)
    comp = json.loads((tmp_path / "metrics/eval/comparisons.json").read_text())["future"]["gaze_vs_base"]
    assert {"semantic", "object_accuracy", "action_f1", "verb_accuracy"} <= set(comp)
    gain = rec["object_accuracy"]["mean"] - base["object_accuracy"]["mean"]
    assert comp["object_accuracy"]["diff"] == pytest.approx(gain)
    assert comp["action_f1"]["n_videos"] == N // 3
    assert {"object_accuracy", "action_f1"} <= set(rec["per_seed"]["0"]) and rec["synthetic_diagnostics"] is True


def test_table1_markdown(evaluated):
    root, _ = evaluated
    md = (root / "reports/tables/table1.md").read_text()
    assert "GENERATED" in md and "paper Ego4D: future base" in md and "0.7505" in md
    assert "videos" in md and "seeds" in md
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in md.splitlines()
        if line.startswith("| future") or line.startswith("| activity")
    }
    for task in ("future", "activity"):
        for run in ("base", "lambda0", "gaze"):  # each run: mean [CI], distinct predictions, drop, counts
            assert re.search(r"\| \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", rows[(task, run)]), rows[(task, run)]
            assert f"| {N} / {N // 3} / 3 " in rows[(task, run)]
            assert re.search(r"\| [+-]\d\.\d{3} \[.*\], p = ", rows[(task, run)])  # shuffled-frames drop
        for pair in ("gaze − base", "lambda0 − base", "gaze − lambda0"):
            row = rows[(task, pair)]
            assert re.search(r"\| [+-]\d\.\d{3} \[.*\], p [=<] ", row) and "/ pooled" in row
    header = next(line for line in md.splitlines() if line.startswith("| task"))
    assert "distinct predictions" in header and "drop under shuffled frames (semantic)" in header
    assert "windows / videos / seeds" in header
    # the paper's numbers only in their own, labelled column group
    paper_header = next(line for line in md.splitlines() if line.startswith("| backbone"))
    assert [c.strip() for c in paper_header.strip("|").split("|") if "paper" in c] == [
        f"paper Ego4D: {t} {c}" for t in ("future", "activity") for c in ("base", "gaze", "gain")
    ]
    assert "0.7505" not in "\n".join(rows.values())
    seeds = pd.read_csv(root / "reports/tables/table1_seeds.csv")
    rows_per_seed = ("base", "lambda0", "gaze", "gaze_vs_base", "lambda0_vs_base", "gaze_vs_lambda0")
    assert sorted(set(zip(seeds["seed"], seeds["row"], strict=True))) == sorted(
        (s, r) for s in SEEDS for r in rows_per_seed
    )
    runs = pd.read_csv(root / "reports/tables/table1.csv")
    assert {"task", "row", "n", "n_videos", "n_seeds"} <= set(runs.columns)
    assert set(runs.loc[runs["task"] == "future", "row"]) >= {"base", "lambda0", "gaze"}
    paper = pd.read_csv(root / "reports/tables/table1_2.csv")  # the paper's shape, after ours
    assert paper.loc[0, "backbone"] == "OpenFlamingo" and paper.loc[0, "future_gain"] > 0.1


def test_the_synthetic_world_is_told_by_its_metadata(tmp_path):
    p = gparams.with_overrides(gparams.Params(), data={"root": "world"})
    meta = tmp_path / "world" / p.data.version / "ego4d.json"
    assert not stage.is_synthetic(p, tmp_path)  # no metadata: not the synthetic world
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"version": "v2", "videos": []}))  # a real download's ego4d.json
    assert not stage.is_synthetic(p, tmp_path)
    meta.write_text("{not json")
    assert not stage.is_synthetic(p, tmp_path)
    meta.write_text(json.dumps({"version": "v2", "synthetic": {"generator": "gazevlm.synthetic"}}))
    assert stage.is_synthetic(p, tmp_path)
    assert stage.grounded_metrics(True) == ("object_accuracy", "action_f1", "verb_accuracy")
    assert stage.grounded_metrics(False) == ()


def test_empty_references_are_skipped_and_counted(tmp_path, tok):
    def batches(params, task):
        bs = make_batches(6, task=task, batch_size=6)
        bs[0]["text"][2] = "#C"
        return bs

    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    report = stage.run(p, root=tmp_path, load_model=models(tok), batches=batches, codec=CODEC, synthetic=False)
    assert report["skipped_empty_reference"]["gaze/future"] == 1
    assert report["metrics"]["gaze/future"]["n"] == 5


def test_runs_on_different_windows_are_refused(tmp_path, tok):
    calls = {"n": 0}

    def batches(params, task):
        calls["n"] += 1
        return make_batches(6 if calls["n"] <= len(SEEDS) else 5, task=task)  # base: 6 windows, lambda0: 5

    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    with pytest.raises(ValueError, match="scored on different windows"):
        stage.run(p, root=tmp_path, load_model=models(tok), batches=batches, codec=CODEC, synthetic=False)


def test_empty_test_split_is_an_error(tmp_path, tok):
    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    with pytest.raises(ValueError, match="yielded no windows"):
        stage.run(
            p, root=tmp_path, load_model=models(tok), batches=lambda params, task: [], codec=CODEC, synthetic=False
        )


def test_notebook_is_clean_and_parameterised():
    nb = nbformat.read(ROOT / "notebooks/05_evaluate.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[0].source.strip() == 'params_file = "params.yaml"'
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    src = "\n".join(c.source for c in code)
    assert "stage.run(P)" in src and "params.load(params_file)" in src
