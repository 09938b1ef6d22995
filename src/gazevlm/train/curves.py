"""Training curves of one run from its DVCLive logs (reports/train/<run>/seed<N>/<task>/plots/metrics/**.tsv)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from gazevlm.train.launch import TRAIN_REPORTS, report_dir

COLUMNS = ["run", "task", "split", "metric", "step", "value"]


def read_curves(run: str, tasks: Sequence[str], seed: int, root: str | Path = TRAIN_REPORTS) -> pd.DataFrame:
    """Long table: run, task, split (train | val), metric, step, value. Missing logs raise."""
    frames = []
    for task in tasks:
        metrics_dir = report_dir(run, task, seed, Path(root)) / "plots" / "metrics"
        files = sorted(metrics_dir.rglob("*.tsv"))
        if not files:
            raise FileNotFoundError(f"{metrics_dir}: no DVCLive curves (has {run}/{task} seed {seed} been trained?)")
        for tsv in files:
            df = pd.read_csv(tsv, sep="\t")
            if "step" not in df.columns or tsv.stem not in df.columns:
                raise ValueError(f"{tsv}: expected columns step and {tsv.stem}, got {list(df.columns)}")
            frames.append(
                pd.DataFrame(
                    {
                        "run": run,
                        "task": task,
                        "split": tsv.parent.name,
                        "metric": tsv.stem,
                        "step": df["step"].astype(int),
                        "value": df[tsv.stem].astype(float),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def plot_losses(curves: pd.DataFrame, metrics: Sequence[str] = ("loss", "ce", "kl")) -> plt.Figure:
    """Train (every step) and validation (every train.validate_every-th epoch and the last) losses, one
    column per metric, one row per task."""
    data = curves[curves["metric"].isin(metrics) & curves["split"].isin(["train", "val"])]
    present = [m for m in metrics if m in set(data["metric"])]
    grid = sns.relplot(
        data=data,
        x="step",
        y="value",
        hue="split",
        style="split",
        markers={"train": ".", "val": "o"},
        dashes=False,
        col="metric",
        col_order=present,
        row="task",
        kind="line",
        height=2.8,
        aspect=1.3,
        facet_kws={"sharey": False, "sharex": True},
    )
    grid.set_titles("{row_name} | {col_name}")
    grid.figure.suptitle(f"run {data['run'].iloc[0]}: training and validation losses", y=1.02)
    return grid.figure


def plot_optimizer(curves: pd.DataFrame) -> plt.Figure:
    """Learning rate, gradient norm (before clipping) and step time per optimizer step."""
    data = curves[(curves["split"] == "train") & curves["metric"].isin(["lr", "grad_norm", "step_time_s"])]
    grid = sns.relplot(
        data=data,
        x="step",
        y="value",
        hue="task",
        col="metric",
        col_order=["lr", "grad_norm", "step_time_s"],
        kind="line",
        height=2.6,
        aspect=1.3,
        facet_kws={"sharey": False},
    )
    grid.set_titles("{col_name}")
    return grid.figure


def summary_table(report: dict) -> pd.DataFrame:
    """One row per task of `gazevlm.train.launch.run`'s report: best epoch and validation losses, time."""
    rows = []
    for task, s in report["tasks"].items():
        best = s["best"]
        rows.append(
            {
                "task": task,
                "ranks": s["world_size"],
                "steps": s["steps"],
                "best_epoch": best["epoch"],
                f"best_val_{s['select_on']}": best["value"],
                "val_loss": best.get("val_loss"),
                "val_ce": best.get("val_ce"),
                "val_kl": best.get("val_kl"),
                "train_time_s": s["train_time_s"],
                "wall_time_s": s.get("wall_time_s"),
            }
        )
    return pd.DataFrame(rows).set_index("task")
