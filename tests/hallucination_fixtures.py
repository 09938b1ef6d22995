"""Tiny inputs for the hallucination study: params, the evaluate stage's predictions (texts that never name
a run), a repository root with test shards and params.yaml, and hand-made ratings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

import attention_fixtures as AF
from gazevlm import layout, params
from gazevlm.hallucination import ratings

RUNS = ("base", "gaze")
PHRASES = (
    "the camera wearer picks up the red cup",
    "the camera wearer opens the green bottle",
    "the camera wearer puts the spoon in the bowl",
    "the camera wearer closes the white box",
    "the camera wearer takes the knife, then the plate",
)


def fixture_params(windows: int = 4, tasks=("future",), **hallucination) -> params.Params:
    return params.from_dict(
        {
            "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
            "train": {"tasks": list(tasks), "seeds": [0]},
            "evaluate": {"bootstrap_samples": 200, "seed": 0},
            "hallucination": {"windows": windows, **hallucination},
        }
    )


def prediction_text(run: str, i: int) -> str:
    return PHRASES[(i + 2 * RUNS.index(run)) % len(PHRASES)] + f" ({i})"


def write_predictions(
    root: Path, window_ids: list[str], task: str = "future", seed: int = 0, runs=RUNS
) -> dict[str, Path]:
    """The evaluate stage's predictions files for `runs` (its columns that the study reads, and a score)."""
    out = {}
    for run in runs:
        path = layout.predictions_file(run, task, seed, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "window_id": window_ids,
                "uid": [layout.window_uid(w, task) for w in window_ids],
                "reference": [f"the camera wearer picks up cup {i}" for i in range(len(window_ids))],
                "prediction": [prediction_text(run, i) for i in range(len(window_ids))],
                "semantic": 0.5,
            }
        ).to_parquet(path, index=False)
        out[run] = path
    return out


def write_params(root: Path, p: params.Params) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(params.to_dict(p))), sort_keys=False))
    return path


def build_root(root: Path, n_windows: int = 6, windows: int = 4, **hallucination) -> params.Params:
    """A repository root: test shards (future), both runs' predictions, params.yaml; no ratings file."""
    p = fixture_params(windows=windows, **hallucination)
    ids = AF.write_shards(root, "future", n_windows=n_windows, seed=0)
    write_predictions(root, ids)
    write_params(root, p)
    return p


def window_ids(n_videos: int, per_video: int, task: str = "future") -> list[str]:
    return [layout.window_id(task, f"video{v}", 30 * k) for v in range(n_videos) for k in range(per_video)]


def rating(
    run: str, window_id: str, hallucinated: bool, text: str, seed: int = 0, task: str = "future", note: str = ""
) -> ratings.Rating:
    return ratings.Rating(
        task=task,
        seed=seed,
        run=run,
        window_id=window_id,
        hallucinated="yes" if hallucinated else "no",
        sample_seed=0,
        prediction_hash=ratings.prediction_hash(text),
        note=note,
        rater="tester",
    )
