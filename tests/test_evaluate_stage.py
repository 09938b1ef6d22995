"""The evaluate stage end to end with stand-in models and loader: files, metrics, paired tests, tables."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from evaluate_fixtures import StandInModel, encode_prompt, encode_train, make_batches, make_tokenizer
from gazevlm import params as gparams
from gazevlm.evaluate import predict as P
from gazevlm.evaluate import stage

ROOT = Path(__file__).resolve().parents[1]
CODEC = P.TextCodec(encode_prompt=encode_prompt, encode_train=encode_train)
N = 12
WRONG = {"base": {0, 1, 2, 3}, "lambda0": {0, 1, 2}, "gaze": set()}   # clips each run gets wrong


def small_params(**evaluate):
    p = gparams.Params()
    return gparams.with_overrides(p, evaluate={"bootstrap_samples": 200, "batch_size": 5, **evaluate})


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def loader(n=N):
    return lambda params, task: make_batches(n, task=task, batch_size=params.evaluate.batch_size)


def models(tok):
    return lambda run, task: (StandInModel(tok, wrong=WRONG[run], echo=run == "gaze"), tok)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("eval")
    report = stage.run(small_params(), root=root, load_model=models(tok), batches=loader(), codec=CODEC)
    return root, report


def test_outputs_exist(evaluated):
    root, report = evaluated
    for run in ("base", "lambda0", "gaze"):
        for task in ("future", "activity"):
            df = pd.read_parquet(root / f"data/predictions/{run}/{task}.parquet")
            assert len(df) == N and df["window_id"].is_unique
            assert {"window_id", "prediction", "reference", "semantic", "rouge_l", "bleu4", "cider",
                    "teacher_forced_prediction", "teacher_forced_semantic"} <= set(df.columns)
            rec = json.loads((root / f"metrics/eval/{run}_{task}.json").read_text())
            assert rec["n"] == N
            for m in ("semantic", "rouge_l", "bleu4", "cider", "teacher_forced_semantic"):
                assert set(rec[m]) == {"mean", "ci_low", "ci_high"}
    for name in ("table1", "table2", "metrics", "comparisons"):
        assert (root / f"reports/tables/{name}.md").exists() and (root / f"reports/tables/{name}.csv").exists()
    assert json.loads((root / "reports/evaluate.json").read_text())["stage"] == "evaluate"
    assert report["generation"]["decoding"] == "greedy"


def test_scores_reflect_the_known_answers(evaluated):
    root, _ = evaluated
    gaze = pd.read_parquet(root / "data/predictions/gaze/future.parquet")
    base = pd.read_parquet(root / "data/predictions/base/future.parquet")
    assert (gaze["prediction"] == gaze["reference"]).all()
    assert gaze["semantic"].min() > 0.999 and gaze["rouge_l"].min() == pytest.approx(1.0)
    wrong = base["prediction"] != base["reference"]
    assert wrong.sum() == 8                      # clips 0-3 of every 6 are wrong
    assert (base.loc[wrong, "semantic"] < 0.9).all()
    # teacher forcing is perfect for the stand-in, so it is the same for both runs (and says nothing)
    assert base["teacher_forced_semantic"].min() > 0.999


def test_paired_comparisons(evaluated):
    root, _ = evaluated
    comp = json.loads((root / "metrics/eval/comparisons.json").read_text())
    assert set(comp) == {"future", "activity"}
    assert set(comp["future"]) == {"gaze_vs_base", "lambda0_vs_base", "gaze_vs_lambda0"}
    g = comp["future"]["gaze_vs_base"]["semantic"]
    assert g["diff"] > 0.1 and g["ci_low"] > 0 and g["p_value"] < 0.05 and g["n"] == N
    tf = comp["future"]["gaze_vs_base"]["teacher_forced_semantic"]
    assert tf["diff"] == pytest.approx(0, abs=1e-6) and tf["p_value"] == pytest.approx(1.0)


def test_table1_markdown(evaluated):
    root, _ = evaluated
    md = (root / "reports/tables/table1.md").read_text()
    assert "GENERATED" in md and "paper Ego4D: future base" in md and "0.7505" in md
    num = pd.read_csv(root / "reports/tables/table1.csv")
    assert num.loc[0, "backbone"] == "OpenFlamingo" and num.loc[0, "future_gain"] > 0.1


def test_empty_references_are_skipped_and_counted(tmp_path, tok):
    def batches(params, task):
        bs = make_batches(6, task=task, batch_size=6)
        bs[0]["text"][2] = "#C"
        return bs

    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    report = stage.run(p, root=tmp_path, load_model=models(tok), batches=batches, codec=CODEC)
    assert report["skipped_empty_reference"]["gaze/future"] == 1
    assert report["metrics"]["gaze/future"]["n"] == 5


def test_runs_on_different_windows_are_refused(tmp_path, tok):
    calls = {"n": 0}

    def batches(params, task):
        calls["n"] += 1
        return make_batches(6 if calls["n"] == 1 else 5, task=task)

    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    with pytest.raises(ValueError, match="scored on different windows"):
        stage.run(p, root=tmp_path, load_model=models(tok), batches=batches, codec=CODEC)


def test_empty_test_split_is_an_error(tmp_path, tok):
    p = gparams.with_overrides(small_params(), train={"tasks": ("future",)})
    with pytest.raises(ValueError, match="yielded no windows"):
        stage.run(p, root=tmp_path, load_model=models(tok), batches=lambda params, task: [], codec=CODEC)


def test_notebook_is_clean_and_parameterised():
    nb = nbformat.read(ROOT / "notebooks/05_evaluate.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert code[0].source.strip() == 'params_file = "params.yaml"'
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    src = "\n".join(c.source for c in code)
    assert "stage.run(P)" in src and "params.load(params_file)" in src
