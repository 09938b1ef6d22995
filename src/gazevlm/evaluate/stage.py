"""The evaluate stage: generate on the test split for every run, task and seed; score; compare; tabulate.

Outputs (paths relative to the repository root):
  data/predictions/<run>/<task>/seed<N>.parquet  one row per test window: window_id, uid, reference,
                            prediction, teacher_forced_prediction, shuffled_prediction (the text the
                            model generated for another video's frames, see controls.py), the
                            normalised texts and every per-window score (shuffled_* for the shuffle)
  metrics/eval/<run>_<task>.json   DVC metrics: per metric the mean over seeds with a 95% video-bootstrap
                            CI, n windows, n_videos, n_seeds; distinct_predictions; shuffled_frames
                            (scores and the drop); chance levels; per_seed
  metrics/eval/comparisons.json    {task: {a_vs_b: {metric: paired test pooled over seeds}}}: per window
                            the seed-mean score, per video the mean difference, sign flips over videos
  metrics/eval/comparisons_per_seed.json   the same per seed
  reports/tables/{table1,table1_seeds,table2,metrics,comparisons}.{md,csv}
  reports/evaluate.json     the stage report

The grounding metrics (object_accuracy, action_f1, verb_accuracy) and their chance levels exist only
when params.data.root is the synthetic world (its captions have a closed vocabulary).

Every run is tested on frames alone, except the gaze-input baselines (runs with gaze_text or
gaze_overlay, Tables 13 and 15): they alone get the test gaze, as they were trained, through their own
reader (predict.gaze_input_batches), and each is compared with `base` and with `gaze`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gazevlm import atomic, ego4d, layout
from gazevlm.evaluate import controls, generation, grounding, stats, tables
from gazevlm.evaluate import metrics as M
from gazevlm.evaluate import predict as P
from gazevlm.params import Params, run_switches

EVAL_METRICS_DIR = layout.METRICS_DIR / "eval"
# (a, b): "a_vs_b" is the mean of a - b. Pairs whose runs are not both in params.runs are skipped.
COMPARISONS = (("gaze", "base"), ("lambda0", "base"), ("gaze", "lambda0"))
TF = "teacher_forced_"
SHUF = "shuffled_"
TEXT_METRICS = M.METRICS
SHUFFLED_METRICS = ("semantic", "rouge_l")


def metrics_path(run: str, task: str, root: Path = Path(".")) -> Path:
    return root / EVAL_METRICS_DIR / f"{run}_{task}.json"


def write_json(obj: Any, path: Path) -> Path:
    return atomic.write_json(path, atomic.json_safe(obj), indent=2)


def is_synthetic(params: Params, root: Path = Path(".")) -> bool:
    """Whether params.data.root is the synthetic world (its ego4d.json names its generator)."""
    path = ego4d.version_dir(root / params.data.root, params.data.version) / ego4d.METADATA_FILE
    try:
        return json.loads(path.read_text()).get("synthetic") is not None
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def grounded_metrics(synthetic: bool) -> tuple[str, ...]:
    return grounding.GROUNDING_METRICS if synthetic else ()


# --- one run, task and seed ---------------------------------------------------------------------------


def score_predictions(df: pd.DataFrame, params: Params, synthetic: bool) -> pd.DataFrame:
    """Per-window scores of generated, teacher-forced and shuffled-frames texts of one run, task, seed.

    Windows whose reference is empty after normalisation cannot be scored; they are dropped (the
    caller counts them)."""
    ev = params.evaluate
    df = df.drop(index=df.index[M.check_references(df["reference"].tolist())]).reset_index(drop=True)
    if df.empty:
        return df
    df["reference_norm"] = [M.normalize(t) for t in df["reference"]]
    df["prediction_norm"] = [M.normalize(t) for t in df["prediction"]]
    df["shuffled_prediction"] = df["prediction"].to_numpy()[controls.derangement(df["uid"])]
    sources = [("", "prediction"), (SHUF, "shuffled_prediction")]
    if df["teacher_forced_prediction"].notna().any():
        sources.append((TF, "teacher_forced_prediction"))
    refs = df["reference"].tolist()
    for prefix, column in sources:
        texts = df[column].fillna("").tolist()
        names = SHUFFLED_METRICS if prefix == SHUF else TEXT_METRICS
        scored = M.score_texts(texts, refs, semantic_model=ev.semantic_model, batch_size=ev.batch_size, metrics=names)
        for name in names:
            df[prefix + name] = scored.per_pair[name].to_numpy()
        if synthetic and prefix != TF:
            for name, values in grounding.score_grounding(texts, refs).items():
                df[prefix + name] = values
    return df


def _estimate(values, uids, params: Params) -> dict:
    ev = params.evaluate
    return stats.mean_ci(values, uids, n_resamples=ev.bootstrap_samples, seed=ev.seed).as_dict()


def _compare(a, b, uids, params: Params) -> dict:
    ev = params.evaluate
    return stats.paired_test(a, b, uids, n_resamples=ev.bootstrap_samples, seed=ev.seed).as_dict()


def score_names(df: pd.DataFrame, synthetic: bool) -> list[str]:
    names = [m for m in (*TEXT_METRICS, *grounded_metrics(synthetic)) if m in df]
    return names + [TF + m for m in TEXT_METRICS if TF + m in df]


def shuffled_names(synthetic: bool) -> list[str]:
    return [*SHUFFLED_METRICS, *grounded_metrics(synthetic)]


def summarise(df: pd.DataFrame, params: Params, synthetic: bool) -> dict:
    """Estimates of one table of per-window scores (one seed, or the seed-mean of several)."""
    uids = df["uid"].tolist()
    out: dict = {name: _estimate(df[name], uids, params) for name in score_names(df, synthetic)}
    shuffled = {name: _estimate(df[SHUF + name], uids, params) for name in shuffled_names(synthetic)}
    shuffled["drop"] = {name: _compare(df[name], df[SHUF + name], uids, params) for name in shuffled_names(synthetic)}
    out["shuffled_frames"] = shuffled
    return out


# --- pooling over seeds ---------------------------------------------------------------------------------


def seed_mean_table(per_seed: Mapping[int, pd.DataFrame], synthetic: bool) -> pd.DataFrame:
    """Per window, the mean over seeds of every score (all seeds must cover the same windows)."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]].set_index("window_id")
    for s in seeds[1:]:
        if set(per_seed[s]["window_id"]) != set(first.index):
            raise ValueError(f"seed {s} was scored on other test windows than seed {seeds[0]}")
    cols = score_names(first, synthetic) + [SHUF + n for n in shuffled_names(synthetic)]
    out = first[["uid"]].copy()
    for col in cols:
        out[col] = stats.seed_mean([per_seed[s].set_index("window_id").loc[first.index, col] for s in seeds])
    return out.reset_index()


def run_record(
    per_seed: Mapping[int, pd.DataFrame], params: Params, synthetic: bool, chance: dict, skipped: int
) -> dict:
    """metrics/eval/<run>_<task>.json: pooled estimates, controls, chance levels, per-seed estimates."""
    pooled = seed_mean_table(per_seed, synthetic)
    record: dict = {
        "n": int(len(pooled)),
        "n_videos": int(pooled["uid"].nunique()),
        "n_seeds": len(per_seed),
        "seeds": sorted(per_seed),
        "n_skipped_empty_reference": skipped,
        "synthetic_diagnostics": synthetic,
    }
    record.update(summarise(pooled, params, synthetic))
    distinct = {s: controls.distinct_share(df["prediction_norm"].tolist()) for s, df in per_seed.items()}
    record["distinct_predictions"] = float(np.mean(list(distinct.values())))
    record["n_empty_prediction"] = int(sum((df["prediction_norm"] == "").sum() for df in per_seed.values()))
    record["mean_prediction_words"] = float(
        np.mean([df["prediction_norm"].str.split().str.len().mean() for df in per_seed.values()])
    )
    record["mean_reference_words"] = float(
        pooled.merge(next(iter(per_seed.values()))[["window_id", "reference_norm"]], on="window_id")["reference_norm"]
        .str.split()
        .str.len()
        .mean()
    )
    if synthetic:
        record["chance"] = chance
    record["per_seed"] = {
        str(s): {**summarise(df, params, synthetic), "distinct_predictions": distinct[s]}
        for s, df in sorted(per_seed.items())
    }
    return record


def comparison_pairs(params: Params) -> tuple[tuple[str, str], ...]:
    """COMPARISONS, plus each gaze-input baseline against base (does gaze as input help?) and the gaze
    run against it (does the loss beat giving the model the gaze?)."""
    extra = [pair for name, run in params.runs.items() if run.gaze_inputs for pair in ((name, "base"), ("gaze", name))]
    return COMPARISONS + tuple(extra)


def compare_runs(
    pooled: Mapping[tuple[str, str], pd.DataFrame], params: Params, names: list[str], pairs=COMPARISONS
) -> dict:
    """{task: {"a_vs_b": {metric: Comparison dict}}} for every pair of runs present, paired by window,
    tested over videos."""
    out: dict = {}
    for task in sorted({t for _, t in pooled}):
        out[task] = {}
        for a, b in pairs:
            if (a, task) not in pooled or (b, task) not in pooled:
                continue
            da, db = pooled[(a, task)].set_index("window_id"), pooled[(b, task)].set_index("window_id")
            if set(da.index) != set(db.index):
                only = sorted(set(da.index) ^ set(db.index))
                raise ValueError(
                    f"task {task!r}: runs {a!r} and {b!r} were scored on different windows "
                    f"({len(only)} differ, e.g. {only[0]!r}); their predictions must come from the "
                    f"same test split"
                )
            db = db.loc[da.index]
            uids = da["uid"].tolist()
            out[task][f"{a}_vs_{b}"] = {m: _compare(da[m], db[m], uids, params) for m in names if m in da and m in db}
    return out


def chance_levels(params: Params, task: str, test_references: list[str], root: Path) -> dict:
    """What a frame-blind model scores: the most frequent train target for every window, and a uniform guess."""
    targets = layout.read_table(
        root / layout.ANNOTATE_DIR / "targets.parquet",
        layout.TARGETS,
        ("window_id", "task", "split", "target_text", "dropped"),
    )
    train = targets[(targets["task"] == task) & (targets["split"] == "train") & ~targets["dropped"]]
    return grounding.prior_baseline(train["target_text"].dropna().tolist(), test_references)


# --- the stage ------------------------------------------------------------------------------------------


def evaluate_one(
    model, tokenizer, batches: Iterable, task: str, params: Params, synthetic: bool, codec: P.TextCodec | None
) -> tuple[pd.DataFrame, int]:
    ev = params.evaluate
    df = P.predict(
        model, tokenizer, batches, task, max_new_tokens=ev.max_new_tokens, num_beams=ev.num_beams, codec=codec
    )
    if df.empty:
        raise ValueError(f"task {task!r}: the test split yielded no windows")
    return score_one(df, params, synthetic)


def score_one(df: pd.DataFrame, params: Params, synthetic: bool) -> tuple[pd.DataFrame, int]:
    """(scored predictions, windows skipped for an empty reference) of one run, task and seed."""
    n = len(df)
    df = score_predictions(df, params, synthetic)
    return df, n - len(df)


def run(
    params: Params,
    *,
    root: Path = Path("."),
    load_model: Callable[[str, str, int], tuple[Any, Any]] | None = None,
    batches: Callable[[Params, str], Iterable[Mapping[str, Any]]] | None = None,
    codec: P.TextCodec | None = None,
    synthetic: bool | None = None,
    gaze_batches: Callable[[Params, str, str], Iterable[Mapping[str, Any]]] | None = None,
) -> dict:
    """Evaluate every run of params.runs with every seed of train.seeds on every task; write the outputs.

    load_model(run, task, seed) -> (model, tokenizer) and batches(params, task) default to the trained
    checkpoints under models/ and the test shards (the features stage's vision features where they fit
    the model, else pixels), generated in evaluate.workers processes; gaze_batches(params, task, run), the
    test shards with the gaze a gaze-input baseline takes, is asked for those runs and no other. Tests pass
    stand-ins (run here)."""
    root = Path(root)
    synthetic = is_synthetic(params, root) if synthetic is None else synthetic
    ev = params.evaluate
    t0 = time.time()
    pooled: dict[tuple[str, str], pd.DataFrame] = {}
    scored: dict[tuple[str, str, int], pd.DataFrame] = {}
    records: dict[tuple[str, str], dict] = {}
    outputs: list[str] = []
    timings: dict[str, float] = {}
    skipped_total: dict[str, int] = {}
    inputs: dict[str, str] = {}
    with contextlib.closing(
        generation.generate_all(
            params, root, load_model=load_model, batches=batches, codec=codec, gaze_batches=gaze_batches
        )
    ) as generated:
        for task in params.train.tasks:
            chance: dict = {}
            for run_name in params.runs:
                per_seed: dict[int, pd.DataFrame] = {}
                skipped = 0
                for seed in params.train.seeds:
                    t = time.time()
                    got = next(generated)
                    assert got.job == generation.Job(run_name, task, int(seed)), (got.job, run_name, task, seed)
                    df, skipped = score_one(got.predictions, params, synthetic)
                    inputs[got.job.name] = got.vision_inputs
                    per_seed[seed] = scored[(run_name, task, seed)] = df
                    path = layout.predictions_file(run_name, task, seed, root)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    df.to_parquet(path, index=False, schema=layout.schema_of(layout.PREDICTIONS, df.columns, path))
                    outputs.append(str(path))
                    timings[got.job.name] = {"generate": got.seconds, "score": round(time.time() - t, 2)}
                if synthetic and not chance:
                    chance = chance_levels(params, task, per_seed[params.train.seeds[0]]["reference"].tolist(), root)
                records[(run_name, task)] = run_record(per_seed, params, synthetic, chance, skipped)
                skipped_total[f"{run_name}/{task}"] = skipped
                pooled[(run_name, task)] = seed_mean_table(per_seed, synthetic)
                outputs.append(str(write_json(records[(run_name, task)], metrics_path(run_name, task, root))))
    tables_written = write_comparisons(params, pooled, scored, records, synthetic, root, outputs)
    report = {
        "stage": "evaluate",
        "generation": {
            "max_new_tokens": ev.max_new_tokens,
            "num_beams": ev.num_beams,
            "decoding": "greedy" if ev.num_beams == 1 else f"beam search ({ev.num_beams} beams)",
            "prompt": "answer-free task prompt; frames only (no gaze, no reference text)",
        },
        "semantic_model": ev.semantic_model,
        "bootstrap_samples": ev.bootstrap_samples,
        "seed": ev.seed,
        "statistics": stats.TEST,
        "seeds": list(params.train.seeds),
        "synthetic_diagnostics": synthetic,
        "runs": {name: run_switches(r) for name, r in params.runs.items()},
        "skipped_empty_reference": skipped_total,
        "vision_inputs": inputs,
        "metrics": {
            f"{r}/{t}": {k: rec[k] for k in ("n", "n_videos", "n_seeds", "distinct_predictions")}
            for (r, t), rec in records.items()
        },
        "tables": tables_written,
        "outputs": outputs,
        "workers": ev.workers if generation.in_workers(load_model, batches, codec, gaze_batches) else 1,
        "seconds": {"total": round(time.time() - t0, 2), **timings},
    }
    note_gaze_inputs(report, params)
    write_json(report, root / layout.REPORTS_DIR / "evaluate.json")
    return report


def write_comparisons(
    params: Params,
    pooled: Mapping[tuple[str, str], pd.DataFrame],
    scored: Mapping[tuple[str, str, int], pd.DataFrame],
    records: Mapping[tuple[str, str], dict],
    synthetic: bool,
    root: Path,
    outputs: list[str],
) -> dict[str, list[str]]:
    """The run comparisons (pooled and per seed) and the tables; the files written go to `outputs`."""
    names = score_names(next(iter(pooled.values())), synthetic)
    pairs = comparison_pairs(params)
    comparisons = compare_runs(pooled, params, names, pairs)
    outputs.append(str(write_json(comparisons, root / EVAL_METRICS_DIR / "comparisons.json")))
    per_seed_cmp = {
        str(s): compare_runs({(r, t): df for (r, t, ss), df in scored.items() if ss == s}, params, names, pairs)
        for s in params.train.seeds
    }
    outputs.append(str(write_json(per_seed_cmp, root / EVAL_METRICS_DIR / "comparisons_per_seed.json")))
    return build_tables(params, records, comparisons, per_seed_cmp, synthetic, root)


def note_gaze_inputs(report: dict, params: Params) -> None:
    """Name the runs that were given the test gaze (the gaze-input baselines), if any, in the report."""
    gaze_runs = {name: list(r.gaze_inputs) for name, r in params.runs.items() if r.gaze_inputs}
    if gaze_runs:
        report["generation"]["gaze_inputs"] = {
            **gaze_runs,
            "note": "these runs alone were given the test gaze (prompt text / overlaid frames), as they were trained",
        }


def backbone_label(params: Params) -> str:
    return f"{params.model.backbone} ({params.model.preset} preset, data {params.data.root})"


def build_tables(
    params: Params,
    records: Mapping[tuple[str, str], dict],
    comparisons: Mapping,
    per_seed_cmp: Mapping,
    synthetic: bool,
    root: Path = Path("."),
) -> dict[str, list[str]]:
    """Write Table 1 (ours per run with controls, gains, the paper's numbers), its per-seed appendix,
    Table 2 (when a lambda sweep exists), the all-metrics and comparisons tables."""
    out_dir = root / layout.TABLES_DIR
    written: dict[str, list[str]] = {}
    tasks = list(params.train.tasks)
    label = backbone_label(params)
    runs = list(params.runs)
    metric_cols = ["semantic", *grounded_metrics(synthetic)]
    num, disp, caption = tables.table1_runs(
        records, comparisons, runs=runs, tasks=tasks, metrics=metric_cols, label=label
    )
    paper_num, paper_disp = tables.table1(
        records, comparisons, backbone=params.model.backbone, label=label, tasks=tasks
    )
    paper_caption = (
        "Paper shape (semantic score, base vs gaze, every paper backbone). Paper columns: Ego4D "
        f"numbers copied from {tables.PAPER_SOURCE}, for reference only (other data, other model size)."
    )
    written["table1"] = [
        str(p)
        for p in tables.write_table(
            num, disp, out_dir / "table1", caption, extra=[(paper_caption, paper_num, paper_disp)]
        )
    ]
    num, disp, caption = tables.table1_seeds(records, per_seed_cmp, runs=runs, tasks=tasks, metrics=metric_cols)
    written["table1_seeds"] = [str(p) for p in tables.write_table(num, disp, out_dir / "table1_seeds", caption)]
    sweep = tables.lambda_sweep(params.runs)
    if sweep:
        num, disp = tables.lambda_table(records, sweep, backbone=params.model.backbone, label=label, tasks=tasks)
        cap = (
            "Table 2 shape (lambda sweep over the runs with the gaze block): semantic score of generated text, "
            "mean over seeds [95% video-bootstrap CI]. Paper columns for reference."
        )
        written["table2"] = [str(p) for p in tables.write_table(num, disp, out_dir / "table2", cap)]
    names = [*TEXT_METRICS, *grounded_metrics(synthetic)]
    num, disp = tables.metrics_table(records, metric_names=names)
    written["metrics"] = [
        str(p)
        for p in tables.write_table(
            num,
            disp,
            out_dir / "metrics",
            "All scores per run and task (mean over seeds [95% video-bootstrap CI]): generated text (the real scores) "
            "and, labelled, the teacher-forced argmax score (the authors' protocol: next-token argmax given the "
            "reference prefix; not a generation score).",
        )
    ]
    num, disp = tables.comparisons_table(comparisons, metric_names=names)
    written["comparisons"] = [
        str(p)
        for p in tables.write_table(
            num,
            disp,
            out_dir / "comparisons",
            "Paired comparisons on the same test windows, pooled over seeds: mean(a − b) [95% video-bootstrap CI], "
            "p from sign flips of the per-video mean differences.",
        )
    ]
    return written


def load_predictions(
    params: Params, root: Path = Path("."), seed: int | None = None
) -> dict[tuple[str, str], pd.DataFrame]:
    """The scored predictions written by `run` for one seed (default the first), keyed by (run, task)."""
    seed = params.train.seeds[0] if seed is None else seed
    out = {}
    for task in params.train.tasks:
        for run_name in params.runs:
            path = layout.predictions_file(run_name, task, seed, root)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no predictions; run the evaluate stage first")
            out[(run_name, task)] = layout.read_table(path, layout.PREDICTIONS, layout.PREDICTION_COLUMNS)
    return out


def load_records(params: Params, root: Path = Path(".")) -> tuple[dict[tuple[str, str], dict], dict]:
    """(metrics records keyed by (run, task), comparisons) as written by `run`."""
    records = {}
    for task in params.train.tasks:
        for run_name in params.runs:
            records[(run_name, task)] = json.loads(metrics_path(run_name, task, root).read_text())
    comparisons = json.loads((root / EVAL_METRICS_DIR / "comparisons.json").read_text())
    return records, comparisons
