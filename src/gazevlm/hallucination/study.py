"""Which predictions the reviewer rates: a seeded sample of test windows, every rated run on each, one
shuffled (blinded) order.

The windows are drawn from the test windows every rated run was scored on (the evaluate stage's
data/predictions/<run>/<task>/seed<N>.parquet), `hallucination.windows` of them with
`hallucination.sample_seed`; the same generator then shuffles the (window, run) items. The windows do not
depend on which runs are rated, and the same params and predictions give the same sample and order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gazevlm import layout
from gazevlm.hallucination.ratings import prediction_hash
from gazevlm.params import Params

PREDICTION_COLUMNS = ("window_id", "uid", "prediction", "reference")  # in the order the rating app shows them


@dataclass(frozen=True)
class Item:
    """One thing to rate: a run's prediction for a window (the run is never shown to the reviewer)."""

    window_id: str
    uid: str
    run: str
    prediction: str
    reference: str
    prediction_hash: str


@dataclass(frozen=True)
class Sample:
    task: str
    seed: int  # the training seed whose predictions are rated
    sample_seed: int
    window_ids: tuple[str, ...]  # the drawn windows, sorted
    items: tuple[Item, ...]  # in the blinded order


def rated_seed(params: Params) -> int:
    h = params.hallucination
    return params.train.seeds[0] if h.seed is None else h.seed


def not_applicable(params: Params) -> str | None:
    """Why these params cannot have the study (a task, run or seed the pipeline does not evaluate), or None."""
    h = params.hallucination
    if h.task not in params.train.tasks:
        return f"hallucination.task {h.task!r} is not evaluated (train.tasks = {list(params.train.tasks)})"
    missing = [r for r in h.runs if r not in params.runs]
    if missing:
        return f"hallucination.runs {missing} are not under `runs` (have {sorted(params.runs)})"
    if rated_seed(params) not in params.train.seeds:
        return f"hallucination.seed {h.seed} is not trained (train.seeds = {list(params.train.seeds)})"
    return None


def load_predictions(params: Params, root: Path = Path(".")) -> dict[str, pd.DataFrame]:
    """Per rated run, its test predictions (PREDICTION_COLUMNS plus prediction_hash) for the rated seed."""
    h = params.hallucination
    out = {}
    for run in h.runs:
        path = layout.predictions_file(run, h.task, rated_seed(params), root)
        df = layout.read_table(path, layout.PREDICTIONS, PREDICTION_COLUMNS)[list(PREDICTION_COLUMNS)].copy()
        df["prediction"] = df["prediction"].fillna("").astype(str)
        df["reference"] = df["reference"].fillna("").astype(str)
        if df["window_id"].duplicated().any():
            raise ValueError(f"{path}: window {df['window_id'][df['window_id'].duplicated()].iloc[0]!r} appears twice")
        df["prediction_hash"] = [prediction_hash(t) for t in df["prediction"]]
        out[run] = df
    return out


def _common_windows(predictions: dict[str, pd.DataFrame], task: str) -> list[str]:
    runs = list(predictions)
    first = set(predictions[runs[0]]["window_id"])
    for run in runs[1:]:
        other = set(predictions[run]["window_id"])
        if other != first:
            only = sorted(first ^ other)
            raise ValueError(
                f"task {task!r}: runs {runs[0]!r} and {run!r} have predictions for different test "
                f"windows ({len(only)} differ, e.g. {only[0]!r}): rerun the evaluate stage"
            )
    if not first:
        raise ValueError(f"task {task!r}: the predictions hold no test window")
    return sorted(first)


def draw_sample(params: Params, predictions: dict[str, pd.DataFrame]) -> Sample:
    """The windows to rate and the blinded order of the (window, run) items (see the module docstring)."""
    h = params.hallucination
    windows = _common_windows(predictions, h.task)
    rng = np.random.default_rng(h.sample_seed)
    picked = sorted(windows[i] for i in rng.choice(len(windows), size=min(h.windows, len(windows)), replace=False))
    rows = {run: df.set_index("window_id") for run, df in predictions.items()}
    items = [
        Item(
            w,
            str(rows[run].at[w, "uid"]),
            run,
            rows[run].at[w, "prediction"],
            rows[run].at[w, "reference"],
            rows[run].at[w, "prediction_hash"],
        )
        for w in picked
        for run in h.runs
    ]
    order = rng.permutation(len(items))
    return Sample(h.task, rated_seed(params), h.sample_seed, tuple(picked), tuple(items[i] for i in order))
