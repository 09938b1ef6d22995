"""The evaluate stage: generate on the test split for every run and task, score, compare, tabulate.

Outputs (paths relative to the repository root):
  data/predictions/<run>/<task>.parquet   one row per test window: window_id, uid, reference, prediction,
                                          teacher_forced_prediction, the normalised texts, the per-window
                                          scores and the teacher_forced_* scores
  metrics/eval/<run>_<task>.json          DVC metrics: mean and 95% bootstrap CI per metric, n, counts
  metrics/eval/comparisons.json           paired tests between runs on the same windows, per task
  reports/tables/{table1,table2,metrics,comparisons}.{md,csv}   (table2 only when a lambda sweep exists)
  reports/evaluate.json                   the stage report
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch

from gazevlm import layout
from gazevlm.evaluate import metrics as M
from gazevlm.evaluate import predict as P
from gazevlm.evaluate import stats, tables
from gazevlm.params import Params

EVAL_METRICS_DIR = layout.METRICS_DIR / "eval"
# (a, b): "a_vs_b" is the mean of a - b. Pairs whose runs are not both in params.runs are skipped.
COMPARISONS = (("gaze", "base"), ("lambda0", "base"), ("gaze", "lambda0"))
TF = "teacher_forced_"


def predictions_path(run: str, task: str, root: Path = Path(".")) -> Path:
    return root / layout.PREDICTIONS_DIR / run / f"{task}.parquet"


def metrics_path(run: str, task: str, root: Path = Path(".")) -> Path:
    return root / EVAL_METRICS_DIR / f"{run}_{task}.json"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN -> null (DVC and strict JSON readers reject NaN)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")
    return path


def score_predictions(df: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, dict]:
    """Score generated and teacher-forced texts of one run and task.

    Windows whose reference is empty after normalisation cannot be scored; they are dropped and
    counted (n_skipped_empty_reference). Returns the scored table and its metrics record."""
    ev = params.evaluate
    skipped = M.check_references(df["reference"].tolist())
    df = df.drop(index=df.index[skipped]).reset_index(drop=True)
    df["reference_norm"] = [M.normalize(t) for t in df["reference"]]
    df["prediction_norm"] = [M.normalize(t) for t in df["prediction"]]
    record: dict = {"n": int(len(df)), "n_skipped_empty_reference": len(skipped),
                    "n_empty_prediction": int((df["prediction_norm"] == "").sum())}
    sources = [("", "prediction")]
    if df["teacher_forced_prediction"].notna().any():
        sources.append((TF, "teacher_forced_prediction"))
    for prefix, column in sources:
        scored = M.score_texts(df[column].fillna("").tolist(), df["reference"].tolist(),
                               semantic_model=ev.semantic_model, batch_size=ev.batch_size)
        for name in M.METRICS:
            df[prefix + name] = scored.per_pair[name].to_numpy()
            record[prefix + name] = stats.mean_ci(df[prefix + name], n_resamples=ev.bootstrap_samples,
                                                  seed=ev.seed).as_dict()
            record[prefix + name].pop("n")
        record[prefix + "bleu4_corpus"] = scored.corpus["bleu4_corpus"]
    if len(sources) > 1:
        record[TF + "n_empty_prediction"] = int((df["teacher_forced_prediction"].fillna("").map(M.normalize) == "").sum())
    record["mean_prediction_words"] = float(df["prediction_norm"].str.split().str.len().mean()) if len(df) else float("nan")
    record["mean_reference_words"] = float(df["reference_norm"].str.split().str.len().mean()) if len(df) else float("nan")
    return df, record


def compare_runs(scored: Mapping[tuple[str, str], pd.DataFrame], params: Params,
                 pairs=COMPARISONS) -> dict:
    """{task: {"a_vs_b": {metric: Comparison dict}}} for every pair of runs present, paired by window."""
    ev = params.evaluate
    out: dict = {}
    tasks = sorted({t for _, t in scored})
    for task in tasks:
        out[task] = {}
        for a, b in pairs:
            if (a, task) not in scored or (b, task) not in scored:
                continue
            da = scored[(a, task)].set_index("window_id")
            db = scored[(b, task)].set_index("window_id")
            if set(da.index) != set(db.index):
                only = sorted(set(da.index) ^ set(db.index))
                raise ValueError(f"task {task!r}: runs {a!r} and {b!r} were scored on different windows "
                                 f"({len(only)} differ, e.g. {only[0]!r}); {predictions_path(a, task)} and "
                                 f"{predictions_path(b, task)} must come from the same test split")
            db = db.loc[da.index]
            out[task][f"{a}_vs_{b}"] = {
                prefix + m: stats.paired_test(da[prefix + m], db[prefix + m], n_resamples=ev.bootstrap_samples,
                                              seed=ev.seed).as_dict()
                for prefix in ("", TF) for m in M.METRICS if prefix + m in da and prefix + m in db}
    return out


def backbone_label(params: Params) -> str:
    return f"{params.model.backbone} ({params.model.preset} preset, data {params.data.root})"


def build_tables(params: Params, records: Mapping[tuple[str, str], dict], comparisons: Mapping,
                 root: Path = Path(".")) -> dict[str, list[str]]:
    """Write Table 1, Table 2 (when a lambda sweep exists), the all-metrics and comparisons tables."""
    out_dir = root / layout.TABLES_DIR
    written: dict[str, list[str]] = {}
    tasks = list(params.train.tasks)
    label = backbone_label(params)
    n = {t: records.get(("gaze", t), records.get(("base", t), {})).get("n") for t in tasks}
    what = ("Semantic score (cosine of all-MiniLM-L6-v2 embeddings of prediction and reference) of text "
            f"GENERATED from the frames alone on the test split (greedy unless evaluate.num_beams > 1); n windows: {n}. "
            "Ours: mean [95% bootstrap CI]; gain = gaze − base on the same windows [95% paired bootstrap CI], "
            "p from a paired sign-flip permutation test. Paper columns: Ego4D numbers copied from "
            f"{tables.PAPER_SOURCE}, for reference only (other data, other model size).")
    if ("base", tasks[0]) in records and ("gaze", tasks[0]) in records:
        num, disp = tables.table1(records, comparisons, backbone=params.model.backbone, label=label, tasks=tasks)
        written["table1"] = [str(p) for p in tables.write_table(num, disp, out_dir / "table1", "Table 1 shape. " + what)]
    sweep = tables.lambda_sweep(params.runs)
    if sweep:
        num, disp = tables.lambda_table(records, sweep, backbone=params.model.backbone, label=label, tasks=tasks)
        cap = ("Table 2 shape (lambda sweep over the runs with the gaze block). " + what.split(" Ours:")[0]
               + " Ours: mean [95% bootstrap CI]. Paper columns for reference.")
        written["table2"] = [str(p) for p in tables.write_table(num, disp, out_dir / "table2", cap)]
    num, disp = tables.metrics_table(records)
    written["metrics"] = [str(p) for p in tables.write_table(
        num, disp, out_dir / "metrics",
        "All scores per run and task: generated text (the real scores) and, labelled, the teacher-forced argmax "
        "score (the authors' protocol: next-token argmax given the reference prefix; not a generation score).")]
    num, disp = tables.comparisons_table(comparisons)
    written["comparisons"] = [str(p) for p in tables.write_table(
        num, disp, out_dir / "comparisons",
        "Paired comparisons on the same test windows: mean(a − b) [95% paired bootstrap CI], permutation p.")]
    return written


def run(params: Params, *, root: Path = Path("."),
        load_model: Callable[[str, str], tuple[Any, Any]] | None = None,
        batches: Callable[[Params, str], Iterable[Mapping[str, Any]]] | None = None,
        codec: P.TextCodec | None = None) -> dict:
    """Evaluate every run of params.runs on every task of train.tasks; write outputs; return the report.

    load_model(run, task) -> (model, tokenizer) and batches(params, task) default to the trained
    checkpoints under models/ and the test shards; tests pass stand-ins."""
    root = Path(root)
    load_model = load_model or (lambda run_, task_: P.load_trained(run_, task_, root / layout.MODELS_DIR, params))
    batches = batches or (lambda params_, task_: P.test_batches(params_, task_, root / layout.SHARDS_DIR))
    ev = params.evaluate
    torch.manual_seed(ev.seed)
    t0 = time.time()
    scored: dict[tuple[str, str], pd.DataFrame] = {}
    records: dict[tuple[str, str], dict] = {}
    outputs: list[str] = []
    timings: dict[str, float] = {}
    for task in params.train.tasks:
        for run_name in params.runs:
            t = time.time()
            model, tokenizer = load_model(run_name, task)
            df = P.predict(model, tokenizer, batches(params, task), task, max_new_tokens=ev.max_new_tokens,
                           num_beams=ev.num_beams, codec=codec)
            del model
            if df.empty:
                raise ValueError(f"task {task!r}, run {run_name!r}: the test split yielded no windows")
            df, record = score_predictions(df, params)
            scored[(run_name, task)], records[(run_name, task)] = df, record
            path = predictions_path(run_name, task, root)
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(path, index=False)
            outputs += [str(path), str(write_json(record, metrics_path(run_name, task, root)))]
            timings[f"{run_name}/{task}"] = round(time.time() - t, 2)
    comparisons = compare_runs(scored, params)
    outputs.append(str(write_json(comparisons, root / EVAL_METRICS_DIR / "comparisons.json")))
    tables_written = build_tables(params, records, comparisons, root)
    report = {
        "stage": "evaluate",
        "generation": {"max_new_tokens": ev.max_new_tokens, "num_beams": ev.num_beams,
                       "decoding": "greedy" if ev.num_beams == 1 else f"beam search ({ev.num_beams} beams)",
                       "prompt": "answer-free task prompt; frames only (no gaze, no reference text)"},
        "semantic_model": ev.semantic_model,
        "bootstrap_samples": ev.bootstrap_samples,
        "seed": ev.seed,
        "runs": {name: {"block": r.block, "lambda": r.lam} for name, r in params.runs.items()},
        "metrics": {f"{r}/{t}": rec for (r, t), rec in records.items()},
        "comparisons": comparisons,
        "skipped_empty_reference": {f"{r}/{t}": rec["n_skipped_empty_reference"] for (r, t), rec in records.items()},
        "tables": tables_written,
        "outputs": outputs,
        "seconds": {"total": round(time.time() - t0, 2), **timings},
    }
    write_json(report, root / layout.REPORTS_DIR / "evaluate.json")
    return report


def load_predictions(params: Params, root: Path = Path(".")) -> dict[tuple[str, str], pd.DataFrame]:
    """The scored predictions written by `run`, keyed by (run, task)."""
    out = {}
    for task in params.train.tasks:
        for run_name in params.runs:
            path = predictions_path(run_name, task, root)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no predictions; run the evaluate stage first")
            out[(run_name, task)] = pd.read_parquet(path)
    return out


def load_records(params: Params, root: Path = Path(".")) -> tuple[dict[tuple[str, str], dict], dict]:
    """(metrics records keyed by (run, task), comparisons) as written by `run`."""
    records = {}
    for task in params.train.tasks:
        for run_name in params.runs:
            records[(run_name, task)] = json.loads(metrics_path(run_name, task, root).read_text())
    comparisons = json.loads((root / EVAL_METRICS_DIR / "comparisons.json").read_text())
    return records, comparisons
