"""Paper-shaped tables from our metrics, with the paper's Ego4D numbers beside them for reference.

Each builder returns two frames with the same rows: `numbers` (plain floats, written as CSV) and
`display` (formatted strings "mean [ci_low, ci_high]", written as Markdown). Our cells come from the
metrics JSON written by the stage (one dict per run and task, see stage.metrics_record) and from
comparisons.json; paper cells are the published numbers (Pani & Yang, NeurIPS 2025) and never mixed with ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gazevlm import atomic
from gazevlm.layout import TASKS

PAPER_SOURCE = "Pani & Yang, NeurIPS 2025 (arXiv 2510.21356), Ego4D"

# Table 1: semantic score, base vs gaze-regularised (lambda = 100).
PAPER_TABLE1 = {
    "OpenFlamingo": {"future": (0.6525, 0.7505), "activity": (0.7176, 0.7848)},
    "Modified OpenFlamingo": {"future": (0.6155, 0.7200), "activity": (0.6677, 0.7300)},
    "LaViLa narrator": {"future": (0.6030, 0.6924), "activity": (0.6576, 0.7268)},
    "InternVL": {"future": (0.6323, 0.7318), "activity": (0.6831, 0.7404)},
    "OpenLLaVA": {"future": (0.5872, 0.6771), "activity": (0.6539, 0.7027)},
}
# Table 2: semantic score per lambda (0, 100, 1000).
PAPER_TABLE2 = {
    "OpenFlamingo": {
        "future": {0: 0.6317, 100: 0.7505, 1000: 0.7354},
        "activity": {0: 0.6917, 100: 0.7848, 1000: 0.7721},
    },
    "Modified OpenFlamingo": {
        "future": {0: 0.6032, 100: 0.7200, 1000: 0.7072},
        "activity": {0: 0.6603, 100: 0.7300, 1000: 0.7194},
    },
    "LaViLa narrator": {
        "future": {0: 0.6033, 100: 0.6924, 1000: 0.6765},
        "activity": {0: 0.6310, 100: 0.7268, 1000: 0.7123},
    },
    "InternVL": {"future": {0: 0.6342, 100: 0.7318, 1000: 0.7190}, "activity": {0: 0.6867, 100: 0.7404, 1000: 0.7287}},
    "OpenLLaVA": {"future": {0: 0.5882, 100: 0.6771, 1000: 0.6628}, "activity": {0: 0.6523, 100: 0.7027, 1000: 0.6895}},
}
# Our backbone names -> the paper's row names.
PAPER_BACKBONE = {
    "openflamingo": "OpenFlamingo",
    "openflamingo_noperceiver": "Modified OpenFlamingo",
    "lavila": "LaViLa narrator",
    "internvl": "InternVL",
    "llava_next": "OpenLLaVA",
}

DASH = "—"


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def fmt_value(x, digits: int = 3) -> str:
    x = _nan(x)
    return DASH if math.isnan(x) else f"{x:.{digits}f}"


def fmt_estimate(est: Mapping | None, digits: int = 3) -> str:
    """'0.652 [0.610, 0.690]' from {'mean', 'ci_low', 'ci_high'}."""
    if not est or math.isnan(_nan(est.get("mean"))):
        return DASH
    lo, hi = _nan(est.get("ci_low")), _nan(est.get("ci_high"))
    ci = "" if math.isnan(lo) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{_nan(est['mean']):.{digits}f}{ci}"


def fmt_p(p) -> str:
    p = _nan(p)
    if math.isnan(p):
        return "p = " + DASH
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_gain(cmp: Mapping | None, digits: int = 3) -> str:
    """'+0.098 [0.051, 0.140], p = 0.002' from a comparison record."""
    if not cmp or math.isnan(_nan(cmp.get("diff"))):
        return DASH
    lo, hi = _nan(cmp.get("ci_low")), _nan(cmp.get("ci_high"))
    ci = "" if math.isnan(lo) else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"{_nan(cmp['diff']):+.{digits}f}{ci}, {fmt_p(cmp.get('p_value'))}"


def to_markdown(display: pd.DataFrame, caption: str = "") -> str:
    body = display.to_markdown(index=False)
    return (caption.strip() + "\n\n" if caption else "") + body + "\n"


def write_table(
    numbers: pd.DataFrame,
    display: pd.DataFrame,
    stem: Path,
    caption: str = "",
    extra: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]] = (),
) -> list[Path]:
    """Write <stem>.csv (numbers) and <stem>.md (caption + formatted table); return the paths. Each of
    `extra` ((caption, numbers, display)) follows in the Markdown and gets <stem>_<k>.csv."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic.write_text(csv, numbers.to_csv(index=False))
    text = to_markdown(display, caption)
    paths = [csv, md]
    for k, (cap, num, disp) in enumerate(extra, start=2):
        extra_csv = stem.with_name(f"{stem.name}_{k}.csv")
        atomic.write_text(extra_csv, num.to_csv(index=False))
        paths.append(extra_csv)
        text += "\n" + to_markdown(disp, cap)
    atomic.write_text(md, text)
    return paths


# --- Table 1 with what it measured: every run, the controls, the gains ---------------------------------

RUN_COLUMNS = {
    "semantic": "semantic",
    "object_accuracy": "object acc.",
    "action_f1": "action F1",
    "verb_accuracy": "verb acc.",
}


def _counts(rec: Mapping) -> str:
    return f"{rec.get('n', DASH)} / {rec.get('n_videos', DASH)} / {rec.get('n_seeds', DASH)}"


def _run_row(task: str, run: str, rec: Mapping, metrics: Sequence[str]) -> tuple[dict, dict]:
    num: dict = {
        "task": task,
        "row": run,
        "n": rec.get("n"),
        "n_videos": rec.get("n_videos"),
        "n_seeds": rec.get("n_seeds"),
    }
    disp: dict = {"task": task, "run / comparison": run}
    for m in metrics:
        est = rec.get(m) or {}
        num[m], num[m + "_ci_low"], num[m + "_ci_high"] = (_nan(est.get(k)) for k in ("mean", "ci_low", "ci_high"))
        disp[RUN_COLUMNS.get(m, m)] = fmt_estimate(est)
    num["distinct_predictions"] = _nan(rec.get("distinct_predictions"))
    disp["distinct predictions"] = fmt_value(rec.get("distinct_predictions"), 2)
    drop_metric = "object_accuracy" if "object_accuracy" in metrics else "semantic"
    drop = (rec.get("shuffled_frames") or {}).get("drop", {}).get(drop_metric)
    num[f"shuffled_drop_{drop_metric}"] = _nan((drop or {}).get("diff"))
    num[f"shuffled_drop_{drop_metric}_p"] = _nan((drop or {}).get("p_value"))
    disp[f"drop under shuffled frames ({RUN_COLUMNS.get(drop_metric, drop_metric)})"] = fmt_gain(drop)
    disp["windows / videos / seeds"] = _counts(rec)
    return num, disp


def table1_runs(
    records: Mapping[tuple[str, str], Mapping],
    comparisons: Mapping[str, Mapping],
    *,
    runs: Sequence[str],
    tasks: Sequence[str],
    metrics: Sequence[str],
    label: str,
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Per task: a row per run (means over seeds with video-bootstrap CIs, distinct predictions, the
    shuffled-frames drop, counts), a chance row (synthetic world), then the gains between runs."""
    rows_num, rows_disp = [], []
    uniform = None
    for task in tasks:
        for run in runs:
            rec = records.get((run, task))
            if rec is not None:
                n, d = _run_row(task, run, rec, metrics)
                rows_num.append(n)
                rows_disp.append(d)
        chance = next((r.get("chance") for (r_, t), r in records.items() if t == task and r.get("chance")), None)
        if chance:
            uniform = uniform or chance.get("uniform_object_accuracy")
            num = {"task": task, "row": "chance (most frequent train target)"}
            disp = {"task": task, "run / comparison": "chance: the most frequent train target"}
            for m in metrics:
                num[m] = _nan(chance.get(f"majority_{m}"))
                disp[RUN_COLUMNS.get(m, m)] = fmt_value(chance.get(f"majority_{m}"))
            rows_num.append(num)
            rows_disp.append(disp)
        for pair, per_metric in (comparisons.get(task) or {}).items():
            num = {"task": task, "row": pair}
            disp = {"task": task, "run / comparison": pair.replace("_vs_", " − ")}
            for m in metrics:
                c = per_metric.get(m) or {}
                num[m], num[m + "_ci_low"], num[m + "_ci_high"], num[m + "_p"] = (
                    _nan(c.get(k)) for k in ("diff", "ci_low", "ci_high", "p_value")
                )
                disp[RUN_COLUMNS.get(m, m)] = fmt_gain(c)
                num["n"], num["n_videos"] = c.get("n", num.get("n")), c.get("n_videos", num.get("n_videos"))
            disp["windows / videos / seeds"] = f"{num.get('n', DASH)} / {num.get('n_videos', DASH)} / pooled"
            rows_num.append(num)
            rows_disp.append(disp)
    # the uniform guess comes from the world's vocabulary (colours x kinds), never a number typed here
    guess = f" (uniform guess of the object: 1/{round(1 / uniform)})" if uniform else ""
    caption = (
        f"Table 1, {label}: text GENERATED from the frames alone on the test split (no gaze). Per run the "
        "mean over seeds of each window's score [95% bootstrap CI resampling test videos]; gains a − b on the "
        "same windows [video-bootstrap CI], p from sign flips of the per-video mean differences (seed-mean "
        "per window). Object acc. / action F1 / verb acc. are synthetic-world diagnostics from the world's "
        "closed vocabulary (first object named right; F1 of (verb, colour, kind) triples; first verb), "
        f"absent on real data; chance = always answering the most frequent train target{guess}. Shuffled "
        "frames: each window gets the frames of a window of another video; a model that reads its frames "
        "drops, one that does not stays."
    )
    return pd.DataFrame(rows_num), pd.DataFrame(rows_disp).fillna(""), caption


def table1_seeds(
    records: Mapping[tuple[str, str], Mapping],
    per_seed_cmp: Mapping[str, Mapping],
    *,
    runs: Sequence[str],
    tasks: Sequence[str],
    metrics: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Appendix: every seed on its own (run rows and the gaze − base gain per seed)."""
    rows_num, rows_disp = [], []
    for task in tasks:
        seeds = sorted(
            {s for (r, t), rec in records.items() if t == task for s in (rec.get("per_seed") or {})}, key=int
        )
        for seed in seeds:
            for run in runs:
                rec = ((records.get((run, task)) or {}).get("per_seed") or {}).get(seed)
                if rec is None:
                    continue
                num, disp = _run_row(
                    task,
                    run,
                    {
                        **rec,
                        "n": records[(run, task)].get("n"),
                        "n_videos": records[(run, task)].get("n_videos"),
                        "n_seeds": 1,
                    },
                    metrics,
                )
                num["seed"], disp["seed"] = int(seed), seed
                rows_num.append(num)
                rows_disp.append(disp)
            for pair, per_metric in ((per_seed_cmp.get(seed) or {}).get(task) or {}).items():
                num = {"task": task, "row": pair, "seed": int(seed)}
                disp = {"task": task, "run / comparison": pair.replace("_vs_", " − "), "seed": seed}
                for m in metrics:
                    c = per_metric.get(m) or {}
                    num[m], num[m + "_p"] = _nan(c.get("diff")), _nan(c.get("p_value"))
                    disp[RUN_COLUMNS.get(m, m)] = fmt_gain(c)
                    num["n"], num["n_videos"] = c.get("n", num.get("n")), c.get("n_videos", num.get("n_videos"))
                disp["windows / videos / seeds"] = f"{num.get('n', DASH)} / {num.get('n_videos', DASH)} / 1"
                rows_num.append(num)
                rows_disp.append(disp)
    caption = (
        "Table 1 per seed (appendix): each seed's model on its own, same statistics as Table 1 "
        "(video-bootstrap CIs, sign flips over videos)."
    )
    display = pd.DataFrame(rows_disp).fillna("")
    if "seed" in display:
        display = display[["task", "seed"] + [c for c in display.columns if c not in ("task", "seed")]]
    return pd.DataFrame(rows_num), display, caption


# --- Table 1 ------------------------------------------------------------------------------------------


def table1(
    metrics: Mapping[tuple[str, str], Mapping],
    comparisons: Mapping[str, Mapping],
    *,
    backbone: str,
    label: str | None = None,
    metric: str = "semantic",
    base_run: str = "base",
    gaze_run: str = "gaze",
    tasks: Sequence[str] = TASKS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = backbone. Ours: <task> base / gaze / gain (mean [CI], gain with paired CI and p).
    Paper (Ego4D): the same columns from the paper's Table 1 (semantic score only), every paper backbone
    listed so the reference is complete; our row sits on the paper row of the same backbone."""
    paper_name = PAPER_BACKBONE.get(backbone)
    ours_label = label or backbone
    rows_num, rows_disp = [], []
    paper_rows = list(PAPER_TABLE1)
    if paper_name is None:
        paper_rows = [None] + paper_rows
    for paper_row in paper_rows:
        is_ours = paper_row == paper_name
        num: dict = {"backbone": paper_row or ours_label, "ours": ours_label if is_ours else ""}
        disp: dict = {"backbone": paper_row or ours_label, "ours (this repo)": ours_label if is_ours else ""}
        for task in tasks:
            b = metrics.get((base_run, task), {}).get(metric) if is_ours else None
            g = metrics.get((gaze_run, task), {}).get(metric) if is_ours else None
            c = comparisons.get(task, {}).get(f"{gaze_run}_vs_{base_run}", {}).get(metric) if is_ours else None
            n = metrics.get((gaze_run, task), {}).get("n") if is_ours else None
            for col, est in (("base", b), ("gaze", g)):
                num[f"{task}_{col}"] = _nan((est or {}).get("mean"))
                num[f"{task}_{col}_ci_low"] = _nan((est or {}).get("ci_low"))
                num[f"{task}_{col}_ci_high"] = _nan((est or {}).get("ci_high"))
                disp[f"ours: {task} base" if col == "base" else f"ours: {task} gaze"] = fmt_estimate(est)
            num[f"{task}_gain"] = _nan((c or {}).get("diff"))
            num[f"{task}_gain_ci_low"] = _nan((c or {}).get("ci_low"))
            num[f"{task}_gain_ci_high"] = _nan((c or {}).get("ci_high"))
            num[f"{task}_p"] = _nan((c or {}).get("p_value"))
            num[f"{task}_n"] = _nan(n)
            disp[f"ours: {task} gain"] = fmt_gain(c)
        for task in tasks:
            pb, pg = PAPER_TABLE1.get(paper_row, {}).get(task, (None, None)) if metric == "semantic" else (None, None)
            num[f"paper_{task}_base"], num[f"paper_{task}_gaze"] = _nan(pb), _nan(pg)
            num[f"paper_{task}_gain"] = _nan(None if pb is None else pg - pb)
            disp[f"paper Ego4D: {task} base"] = fmt_value(pb, 4)
            disp[f"paper Ego4D: {task} gaze"] = fmt_value(pg, 4)
            disp[f"paper Ego4D: {task} gain"] = DASH if pb is None else f"{pg - pb:+.4f}"
        rows_num.append(num)
        rows_disp.append(disp)
    numbers, display = pd.DataFrame(rows_num), pd.DataFrame(rows_disp)
    # our row first: it is the measurement, the others are reference
    order = np.argsort([0 if r else 1 for r in numbers["ours"]], kind="stable")
    return numbers.iloc[order].reset_index(drop=True), display.iloc[order].reset_index(drop=True)


# --- Table 2 (lambda sweep) ---------------------------------------------------------------------------


def lambda_sweep(runs: Mapping[str, object]) -> dict[float, str]:
    """{lambda: run name} over runs with the gaze block; a sweep needs two or more distinct lambdas.
    When two block runs share a lambda, the one named first in params.yaml represents it."""
    out: dict[float, str] = {}
    for name, r in runs.items():
        if getattr(r, "block", False):
            out.setdefault(float(r.lam), name)
    return dict(sorted(out.items())) if len(out) >= 2 else {}


def lambda_table(
    metrics: Mapping[tuple[str, str], Mapping],
    sweep: Mapping[float, str],
    *,
    backbone: str,
    label: str | None = None,
    metric: str = "semantic",
    tasks: Sequence[str] = TASKS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2's shape: rows = backbone; columns = <task> lambda=<l> for each lambda of the sweep, then the
    paper's values at lambda 0 / 100 / 1000 in a separate group."""
    paper_name = PAPER_BACKBONE.get(backbone)
    ours_label = label or backbone
    rows_num, rows_disp = [], []
    for paper_row in ([None] if paper_name is None else []) + list(PAPER_TABLE2):
        is_ours = paper_row == paper_name
        num: dict = {"backbone": paper_row or ours_label, "ours": ours_label if is_ours else ""}
        disp: dict = {"backbone": paper_row or ours_label, "ours (this repo)": ours_label if is_ours else ""}
        for task in tasks:
            for lam, run in sweep.items():
                est = metrics.get((run, task), {}).get(metric) if is_ours else None
                key = f"{task}_lambda_{lam:g}"
                num[key] = _nan((est or {}).get("mean"))
                num[key + "_ci_low"] = _nan((est or {}).get("ci_low"))
                num[key + "_ci_high"] = _nan((est or {}).get("ci_high"))
                disp[f"ours: {task} λ={lam:g} ({run})"] = fmt_estimate(est)
        for task in tasks:
            for lam in (0, 100, 1000):
                v = PAPER_TABLE2.get(paper_row, {}).get(task, {}).get(lam) if metric == "semantic" else None
                num[f"paper_{task}_lambda_{lam}"] = _nan(v)
                disp[f"paper Ego4D: {task} λ={lam}"] = fmt_value(v, 4)
        rows_num.append(num)
        rows_disp.append(disp)
    numbers, display = pd.DataFrame(rows_num), pd.DataFrame(rows_disp)
    order = np.argsort([0 if r else 1 for r in numbers["ours"]], kind="stable")
    return numbers.iloc[order].reset_index(drop=True), display.iloc[order].reset_index(drop=True)


# --- all metrics per run and task ---------------------------------------------------------------------


def metrics_table(
    metrics: Mapping[tuple[str, str], Mapping], metric_names: Sequence[str] = ("semantic", "rouge_l", "bleu4", "cider")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = task x run; every metric on generated text, then the teacher-forced ones (labelled)."""
    rows_num, rows_disp = [], []
    for (run, task), rec in sorted(metrics.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        num = {"task": task, "run": run, "n": rec.get("n"), "empty_predictions": rec.get("n_empty_prediction")}
        disp = {"task": task, "run": run, "n": rec.get("n"), "empty predictions": rec.get("n_empty_prediction")}
        for prefix, title in (("", "generated"), ("teacher_forced_", "teacher-forced argmax")):
            for m in metric_names:
                est = rec.get(prefix + m)
                num[prefix + m] = _nan((est or {}).get("mean"))
                num[prefix + m + "_ci_low"] = _nan((est or {}).get("ci_low"))
                num[prefix + m + "_ci_high"] = _nan((est or {}).get("ci_high"))
                disp[f"{title}: {m}"] = fmt_estimate(est)
        num["bleu4_corpus"] = _nan(rec.get("bleu4_corpus"))
        disp["generated: corpus BLEU-4"] = fmt_value(rec.get("bleu4_corpus"))
        rows_num.append(num)
        rows_disp.append(disp)
    return pd.DataFrame(rows_num), pd.DataFrame(rows_disp)


def comparisons_table(
    comparisons: Mapping[str, Mapping], metric_names: Sequence[str] = ("semantic", "rouge_l", "bleu4", "cider")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows = task x pair (a_vs_b); per metric the mean difference a - b with CI and p."""
    rows_num, rows_disp = [], []
    for task, pairs in comparisons.items():
        for pair, per_metric in pairs.items():
            num: dict = {"task": task, "comparison": pair}
            disp: dict = {"task": task, "comparison": pair.replace("_vs_", " − ")}
            for m in metric_names:
                c = per_metric.get(m) or {}
                num["n"] = disp["n"] = c.get("n", num.get("n"))
                num["n_videos"] = disp["videos"] = c.get("n_videos", num.get("n_videos"))
                for k in ("diff", "ci_low", "ci_high", "p_value"):
                    num[f"{m}_{k}"] = _nan(c.get(k))
                disp[m] = fmt_gain(c)
            rows_num.append(num)
            rows_disp.append(disp)
    return pd.DataFrame(rows_num), pd.DataFrame(rows_disp)


def qualitative(
    predictions: Mapping[str, pd.DataFrame], *, n: int = 8, seed: int = 0, runs: Sequence[str] | None = None
) -> pd.DataFrame:
    """Sample windows with the reference and each run's generated text side by side."""
    runs = list(runs or predictions)
    missing = [r for r in runs if r not in predictions]
    if missing:
        raise KeyError(f"qualitative: no predictions for run(s) {missing}")
    common = set(predictions[runs[0]]["window_id"])
    for r in runs[1:]:
        common &= set(predictions[r]["window_id"])
    ids = sorted(common)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False)) if ids else []
    chosen = [ids[i] for i in pick]
    ref = predictions[runs[0]].set_index("window_id")["reference"]
    out = pd.DataFrame({"window_id": chosen, "reference": [ref[w] for w in chosen]})
    by_run = {r: predictions[r].set_index("window_id") for r in runs}
    for r in runs:
        out[r] = [by_run[r].at[w, "prediction"] for w in chosen]
    for r in runs:
        if "semantic" in by_run[r]:
            out[f"{r} semantic"] = [round(float(by_run[r].at[w, "semantic"]), 3) for w in chosen]
    return out
