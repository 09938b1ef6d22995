"""The `attention` stage: model attention vs held-out human gaze on the test split, for every run.

run(params) reads the test shards and each run's trained model, extracts per-frame attention (gaze block
and Perceiver), scores it against gaze with the metrics of saliency.py and writes:
  data/attention/index.json, frames/<task>.npz, <run>_<task>.npz   (the explorer's only inputs)
  metrics/attention.json        run -> task -> source -> metric -> {mean, ci_low, ci_high, n_frames,
                                n_windows}, plus last_frame_topk_overlap and chance_topk
  reports/attention/overlap.csv the DVC plot: one row per task/run/source with its top-k overlap
  reports/figures/attention/    overlays_<task>.png, metric_distributions.png, alignment_vs_semantic.png
  reports/attention.json        this report
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from gazevlm import atomic, layout
from gazevlm.attention import extract, figures, outputs, saliency, summary, testset
from gazevlm.params import Params

METRICS_FILE = layout.METRICS_DIR / "attention.json"
PLOT_FILE = layout.REPORTS_DIR / "attention" / "overlap.csv"
FIGURES = layout.FIGURES_DIR / "attention"
REPORT_FILE = layout.REPORTS_DIR / "attention.json"
PREDICTION_COLUMNS = ("window_id", "prediction", "reference", "semantic")

# (params, run, task) -> (model, prompt_fn or None to take input_ids from the batch)
ModelLoader = Callable[[Params, str, str], tuple[torch.nn.Module, "extract.PromptFn | None"]]
BatchSource = Callable[[Params, str], Iterable[dict]]


def read_predictions(path: Path) -> pd.DataFrame | None:
    """The evaluation stage's predictions for one run and task, or None when the file is absent."""
    if not path.exists():
        return None
    df = layout.read_table(path, layout.PREDICTIONS, PREDICTION_COLUMNS)
    if df["window_id"].duplicated().any():
        raise ValueError(f"{path}: window_id repeats, e.g. {df.loc[df['window_id'].duplicated(), 'window_id'].iloc[0]}")
    return df.set_index("window_id")


def score_run(
    run: str,
    task: str,
    frames: outputs.TaskFrames,
    window_ids: list[str],
    maps: dict[str, np.ndarray],
    predictions: pd.DataFrame | None,
    topk: int,
    support_threshold: float,
) -> tuple[outputs.RunAttention, dict]:
    """Join a run's attention to the test gaze by window id and score every valid frame."""
    if len(set(window_ids)) != len(window_ids):
        raise ValueError(f"run {run!r}, task {task!r}: the loader yielded a window twice")
    known = set(frames.window_ids.tolist())
    unknown = [w for w in window_ids if w not in known]
    if unknown:
        raise ValueError(
            f"run {run!r}, task {task!r}: {len(unknown)} window(s) not in the test shards, e.g. {unknown[0]!r}"
        )
    p = frames.grid[0] * frames.grid[1]
    for source, m in maps.items():
        if m.shape[1:] != (frames.n_frames, p):
            raise ValueError(
                f"run {run!r}, task {task!r}: {source} attention is {m.shape[1:]} per window, "
                f"the shards have T={frames.n_frames} frames of {frames.grid} patches"
            )
    rows = np.array([frames.row(w) for w in window_ids], dtype=np.int64)
    gaze, valid = frames.gaze[rows], frames.valid[rows]
    metrics = {}
    for source, m in maps.items():
        per = saliency.frame_metrics(m.reshape(-1, p), gaze.reshape(-1, p), topk, support_threshold)
        metrics[source] = {name: np.where(valid.reshape(-1), v, np.nan).reshape(valid.shape) for name, v in per.items()}
    n = len(window_ids)
    pred, ref, sem = np.full(n, "", dtype=object), np.full(n, "", dtype=object), np.full(n, np.nan)
    missing_pred = n
    if predictions is not None:
        hit = np.array([w in predictions.index for w in window_ids], dtype=bool)
        if hit.any():
            sel = predictions.loc[[w for w, h in zip(window_ids, hit, strict=False) if h]]
            pred[hit] = sel["prediction"].astype(str).to_numpy()
            ref[hit] = sel["reference"].astype(str).to_numpy()
            sem[hit] = sel["semantic"].astype(float).to_numpy()
        missing_pred = int((~hit).sum())
    result = outputs.RunAttention(
        run=run,
        task=task,
        window_ids=np.array(window_ids, dtype=str),
        maps=maps,
        metrics=metrics,
        prediction=pred.astype(str),
        reference=ref.astype(str),
        semantic=sem,
        topk=topk,
        support_threshold=support_threshold,
    )
    counts = {
        "windows": n,
        "windows_without_attention": int(len(frames.window_ids) - n),
        "frames_scored": int(valid.sum()),
        "frames_without_gaze": int((~valid).sum()),
        "windows_without_prediction": missing_pred,
        "sources": sorted(maps),
    }
    return result, counts


def summarise(r: outputs.RunAttention, n_resamples: int, seed: int) -> dict:
    """source -> metric -> mean with 95% video-bootstrap interval; plus last-frame top-k and chance."""
    out = {}
    uids = [layout.window_uid(w, r.task) for w in r.window_ids]
    for source in r.sources:
        m = r.metrics[source]
        entry = {name: summary.metric_entry(m[name], uids, n_resamples, seed) for name in saliency.METRICS}
        entry["last_frame_topk_overlap"] = summary.metric_entry(m["topk_overlap"][:, -1], uids, n_resamples, seed)
        entry["chance_topk"] = summary.metric_entry(m["chance_topk"], uids, n_resamples, seed)
        out[source] = entry
    return out


def overlap_rows(metrics: dict) -> pd.DataFrame:
    """The DVC plot's table: series = task/run/source, with top-k overlap (all and last frame) and chance."""
    rows = []
    for run, tasks in metrics.items():
        for task, sources in tasks.items():
            for source, m in sources.items():
                rows.append(
                    {
                        "series": f"{task}/{run}/{source}",
                        "topk_overlap": m["topk_overlap"]["mean"],
                        "last_frame_topk_overlap": m["last_frame_topk_overlap"]["mean"],
                        "chance_topk": m["chance_topk"]["mean"],
                    }
                )
    return pd.DataFrame(rows, columns=layout.OVERLAP.names)


def _save(fig: plt.Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def write_figures(params: Params, root: Path = layout.ATTENTION_DIR, out_dir: Path = FIGURES) -> list[str]:
    """Draw every figure from the stage outputs under `root` and save them under `out_dir`."""
    index = outputs.read_index(root)
    written = []
    for task in index["tasks"]:
        frames, runs = outputs.load_task(root, task)
        wids = figures.pick_windows(frames, params.attention.overlay_windows)
        written.append(
            _save(
                figures.overlay_grid(frames, runs, wids, index["support_threshold"]), out_dir / f"overlays_{task}.png"
            )
        )
    frame_df = outputs.frame_table(root)
    written.append(_save(figures.metric_distributions(frame_df), out_dir / "metric_distributions.png"))
    written.append(
        _save(figures.alignment_vs_semantic(outputs.window_table(frame_df)), out_dir / "alignment_vs_semantic.png")
    )
    return written


def paper_comparison(metrics: dict) -> dict:
    """task -> run -> {source: mean top-k overlap}, beside the paper's 0.42 (base) -> 0.68 (gaze)."""
    out: dict = {}
    for run, tasks in metrics.items():
        for task, sources in tasks.items():
            out.setdefault(task, {})[run] = {s: m["topk_overlap"]["mean"] for s, m in sources.items()}
    return out


def analysed_runs(params: Params) -> tuple[list[str], dict[str, str]]:
    """(runs to analyse, {skipped run: why}). The gaze-input baselines (gaze_text / gaze_overlay) are
    skipped: their model is shown the gaze, so how well its attention finds the gaze says nothing about
    learning where to look, and this stage feeds every model frames and the plain prompt only."""
    skipped = {
        name: f"takes gaze as input ({', '.join(r.gaze_inputs)})" for name, r in params.runs.items() if r.gaze_inputs
    }
    return [name for name in params.runs if name not in skipped], skipped


def run(params: Params, *, load_model: ModelLoader | None = None, batches: BatchSource | None = None) -> dict:
    """The stage. load_model / batches default to the trained checkpoints and the test loader (the
    features stage's vision features where they fit the model, else pixels)."""
    from gazevlm import features

    start = time.time()
    load_model = load_model or extract.load_run_model
    if batches is None:
        test_batches = features.TestBatches(
            lambda task_: extract.test_batches(params, task_), params.evaluate.batch_size
        )
    else:
        test_batches = lambda model_, task_: (batches(params, task_), "given")  # noqa: E731
    cfg = params.attention
    root = layout.ATTENTION_DIR
    runs, skipped = analysed_runs(params)
    report: dict = {
        "stage": "attention",
        "topk": cfg.topk,
        "support_threshold": cfg.support_threshold,
        "runs": runs,
        "tasks": {},
        "predictions_missing": [],
    }
    if skipped:
        report["skipped_runs"] = skipped
    metrics: dict = {run: {} for run in runs}
    runs_by_task: dict[str, list[str]] = {}
    for task in params.train.tasks:
        frames, repaired = testset.read_test_windows(task)
        outputs.write_task_frames(outputs.frames_file(task, root), frames)
        task_report = {
            "windows": len(frames.window_ids),
            "frames": int(frames.valid.size),
            "frames_with_gaze": int(frames.valid.sum()),
            **repaired,
            "runs": {},
        }
        for run_name in runs:
            torch.manual_seed(extract.analysed_seed(params))
            model, prompt_fn = load_model(params, run_name, task)
            task_batches, task_report.setdefault("vision_inputs", {})[run_name] = test_batches(model, task)
            ids, maps = extract.collect_attention(model, task_batches, prompt_fn)
            del model
            pred_path = layout.predictions_file(run_name, task, extract.analysed_seed(params))
            predictions = read_predictions(pred_path)
            if predictions is None:
                report["predictions_missing"].append(str(pred_path))
            result, counts = score_run(run_name, task, frames, ids, maps, predictions, cfg.topk, cfg.support_threshold)
            outputs.write_run_attention(outputs.run_file(run_name, task, root), result)
            metrics[run_name][task] = summarise(result, params.evaluate.bootstrap_samples, params.evaluate.seed)
            task_report["runs"][run_name] = counts
        runs_by_task[task] = list(runs)
        report["tasks"][task] = task_report
    outputs.write_index(root, runs_by_task, cfg.topk, cfg.support_threshold, extract.analysed_seed(params))

    atomic.write_json(METRICS_FILE, metrics, trailing_newline=False)
    atomic.write_text(PLOT_FILE, overlap_rows(metrics).to_csv(index=False, float_format="%.6g"))
    report["figures"] = write_figures(params, root)
    report["paper_comparison"] = {
        "paper_topk_overlap": {"base": 0.42, "gaze": 0.68},
        "measured": paper_comparison(metrics),
    }
    report["outputs"] = [str(outputs.index_file(root)), str(METRICS_FILE), str(PLOT_FILE)]
    report["seconds"] = round(time.time() - start, 2)
    atomic.write_json(REPORT_FILE, report, trailing_newline=False)
    return report
