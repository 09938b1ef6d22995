"""The hallucination stage: the reviewer's ratings -> the hallucination rate per run, with a 95% video-bootstrap
interval, and each later run compared with the first (paired by window, sign flips over videos), beside the
paper's 0.205 (base) vs 0.14 (gaze) on 200 Ego4D samples.

Which ratings count: those of hallucination.task, the rated training seed and the rated runs (others are
counted as `other`) whose prediction_hash is the current prediction's (else `stale`: the models changed
since); of several ratings of one item the latest (in file order) wins (the others are `superseded`);
malformed rows are skipped and listed with their line. With no rating left the stage writes "not rated
yet" and no number; with a task, run or seed the pipeline does not evaluate, "not applicable" and why.

Outputs: metrics/hallucination.json (DVC metrics), reports/hallucination.md and .csv (the table).
Statistics come from gazevlm.evaluate.stats (the same procedure as the evaluate stage's tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from gazevlm import atomic, layout
from gazevlm.evaluate import stats, tables
from gazevlm.hallucination import ratings, study
from gazevlm.params import Params

PAPER_RATE = {"base": 0.205, "gaze": 0.14}  # the paper's rates, judged by a person on 200 samples
PAPER_SAMPLES = 200
METRICS_FILE = layout.METRICS_DIR / "hallucination.json"
REPORT_MD = layout.REPORTS_DIR / "hallucination.md"
REPORT_CSV = layout.REPORTS_DIR / "hallucination.csv"
NOT_RATED = "not rated yet"
NOT_APPLICABLE = "not applicable"
MAX_LISTED = 20  # malformed lines named in the report (all are counted)


def current_ratings(
    table: ratings.RatingsTable, params: Params, predictions: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The ratings that count (one per run and window, with its video uid) and the counts of the rest."""
    h = params.hallucination
    rows = table.rows
    mine = (rows["task"] == h.task) & (rows["seed"] == study.rated_seed(params)) & rows["run"].isin(h.runs)
    now = pd.concat([df[["window_id", "uid", "prediction_hash"]].assign(run=run) for run, df in predictions.items()])
    merged = rows[mine].merge(now, on=["run", "window_id"], how="left", suffixes=("", "_now"))
    fresh = merged[merged["prediction_hash"] == merged["prediction_hash_now"]].sort_values("line")
    latest = fresh.drop_duplicates(["run", "window_id"], keep="last").reset_index(drop=True)
    counts = {
        "rows": int(len(rows)),
        "used": int(len(latest)),
        "superseded": int(len(fresh) - len(latest)),
        "stale": int(len(merged) - len(fresh)),
        "other": int((~mine).sum()),
        "malformed": len(table.skipped),
    }
    return latest, counts


def rates(latest: pd.DataFrame, params: Params) -> tuple[dict, dict]:
    """Per run the rate (stats.Estimate as a dict), and "<run>_vs_<first>" paired comparisons."""
    ev, runs = params.evaluate, list(params.hallucination.runs)
    by_run = {run: latest[latest["run"] == run] for run in runs}
    out = {}
    for run, r in by_run.items():
        values = r["hallucinated"].astype(float).to_numpy()
        out[run] = stats.mean_ci(values, r["uid"].tolist(), n_resamples=ev.bootstrap_samples, seed=ev.seed).as_dict()
    comparisons = {}
    first = by_run[runs[0]][["window_id", "uid", "hallucinated"]]
    for run in runs[1:]:
        pair = by_run[run][["window_id", "hallucinated"]].merge(first, on="window_id", suffixes=("", "_first"))
        cmp = stats.paired_test(
            pair["hallucinated"].astype(float),
            pair["hallucinated_first"].astype(float),
            pair["uid"].tolist(),
            n_resamples=ev.bootstrap_samples,
            seed=ev.seed,
        )
        comparisons[f"{run}_vs_{runs[0]}"] = cmp.as_dict()
    return out, comparisons


def summarise(
    table: ratings.RatingsTable, params: Params, predictions: dict[str, pd.DataFrame], sample: study.Sample
) -> dict:
    """The stage's result (metrics/hallucination.json): status, sample, counts, rates, comparisons."""
    latest, counts = current_ratings(table, params, predictions)
    in_sample = {(it.run, it.window_id) for it in sample.items}
    rated = sum((r, w) in in_sample for r, w in zip(latest["run"], latest["window_id"], strict=True))
    status = NOT_RATED if latest.empty else ("complete" if rated == len(in_sample) else "partial")
    result: dict[str, Any] = {
        "status": status,
        "task": sample.task,
        "seed": sample.seed,
        "runs": list(params.hallucination.runs),
        "sample": {
            "windows": len(sample.window_ids),
            "items": len(sample.items),
            "rated_items": rated,
            "sample_seed": sample.sample_seed,
        },
        "ratings": counts,
    }
    if status != NOT_RATED:
        result["rate"], result["comparisons"] = rates(latest, params)
    return result


def run(params: Params, root: Path = Path(".")) -> dict:
    """Read the ratings and the rated predictions under root; write the metrics and the report; return the result."""
    root = Path(root)
    h = params.hallucination
    table = ratings.read_ratings(root / h.ratings_file)
    why = study.not_applicable(params)
    if why:
        result = {
            "status": NOT_APPLICABLE,
            "reason": why,
            "task": h.task,
            "runs": list(h.runs),
            "ratings": {"rows": int(len(table.rows)), "malformed": len(table.skipped)},
        }
    else:
        predictions = study.load_predictions(params, root)
        result = summarise(table, params, predictions, study.draw_sample(params, predictions))
    # NaN (an interval over fewer than 2 videos) is written as null
    atomic.write_json(root / METRICS_FILE, atomic.json_safe(result))
    numbers, display = report_tables(result)
    atomic.write_text(root / REPORT_CSV, numbers.to_csv(index=False))
    atomic.write_text(root / REPORT_MD, report_markdown(result, display, h.ratings_file, table.skipped_messages()))
    return result


# --- the report ------------------------------------------------------------------------------------------------


def _paper_diff(run: str, first: str) -> float | None:
    return round(PAPER_RATE[run] - PAPER_RATE[first], 3) if run in PAPER_RATE and first in PAPER_RATE else None


def report_tables(result: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, display): a row per run (rate) and per comparison (difference), the paper's value beside."""
    runs, rated = result["runs"], "rate" in result
    empty = result["status"] if not rated else tables.DASH
    numbers, display = [], []
    for run in runs:
        est = result.get("rate", {}).get(run, {})
        numbers.append(
            {
                "row": run,
                "rate": est.get("mean"),
                "ci_low": est.get("ci_low"),
                "ci_high": est.get("ci_high"),
                "p_value": None,
                "n": est.get("n", 0),
                "n_videos": est.get("n_videos", 0),
                "paper": PAPER_RATE.get(run),
            }
        )
        display.append(
            {
                "run": run,
                "hallucination rate [95% CI]": tables.fmt_estimate(est) if rated else empty,
                "windows (videos)": f"{est.get('n', 0)} ({est.get('n_videos', 0)})",
                f"paper (Ego4D, {PAPER_SAMPLES} samples)": tables.fmt_value(PAPER_RATE.get(run)),
            }
        )
    for run in runs[1:]:
        key, paper = f"{run}_vs_{runs[0]}", _paper_diff(run, runs[0])
        cmp = result.get("comparisons", {}).get(key, {})
        numbers.append(
            {
                "row": key,
                "rate": cmp.get("diff"),
                "ci_low": cmp.get("ci_low"),
                "ci_high": cmp.get("ci_high"),
                "p_value": cmp.get("p_value"),
                "n": cmp.get("n", 0),
                "n_videos": cmp.get("n_videos", 0),
                "paper": paper,
            }
        )
        display.append(
            {
                "run": f"{run} − {runs[0]}",
                "hallucination rate [95% CI]": tables.fmt_gain(cmp) if rated else empty,
                "windows (videos)": f"{cmp.get('n', 0)} ({cmp.get('n_videos', 0)}) paired",
                f"paper (Ego4D, {PAPER_SAMPLES} samples)": "—" if paper is None else f"{paper:+.3f}",
            }
        )
    return pd.DataFrame(numbers), pd.DataFrame(display)


def _counts_text(result: dict, ratings_file: str) -> str:
    c = result["ratings"]
    if result["status"] == NOT_APPLICABLE:
        return f"`{ratings_file}`: {c['rows']} rating row(s), {c['malformed']} malformed line(s)."
    return (
        f"`{ratings_file}`: {c['rows']} rating row(s); {c['used']} used; {c['superseded']} superseded (the "
        f"latest rating of an item wins); {c['stale']} stale (the rated text is not the current prediction: "
        f"the models changed); {c['other']} of another task, seed or run; {c['malformed']} malformed line(s)."
    )


def report_markdown(result: dict, display: pd.DataFrame, ratings_file: str, malformed: list[str]) -> str:
    status = result["status"]
    if status == NOT_APPLICABLE:
        head = f"Status: **{status}**: {result['reason']}."
    else:
        s = result["sample"]
        head = (
            f"Status: **{status}**: {s['rated_items']} of {s['items']} items rated ({s['windows']} test windows "
            f"of task `{result['task']}` x {len(result['runs'])} runs, predictions of training seed "
            f"{result['seed']}, drawn and shuffled with seed {s['sample_seed']}). Rate them blind in "
            "`notebooks/rate_hallucinations.ipynb`."
        )
    caption = (
        "Share of rated predictions a person judged hallucinated, mean [95% video-bootstrap CI]; differences "
        "paired by window, p from sign flips of per-video mean differences (gazevlm.evaluate.stats). The "
        "paper's column is its Ego4D study, for reference only (other data, other model size)."
    )
    lines = [
        "# Hallucination rate, judged by a person",
        "",
        head,
        "",
        caption,
        "",
        display.to_markdown(index=False, disable_numparse=True),  # keep 0.140 as written
        "",
        _counts_text(result, ratings_file),
    ]
    if malformed:
        more = f" ... and {len(malformed) - MAX_LISTED} more" if len(malformed) > MAX_LISTED else ""
        lines += ["", "Malformed lines (skipped):", *[f"- {m}" for m in malformed[:MAX_LISTED]], more]
    return "\n".join(lines).rstrip() + "\n"
