"""Figures of the attention stage; each helper returns a matplotlib Figure (the stage saves them, the
notebook shows them)."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from scipy import stats

from gazevlm.attention import render
from gazevlm.attention.outputs import SOURCES, RunAttention, TaskFrames
from gazevlm.attention.saliency import METRICS, support

METRIC_LABELS = {
    "topk_overlap": "top-k overlap",
    "kl": "KL(gaze || attention)",
    "cc": "CC",
    "nss": "NSS",
    "sim": "SIM",
    "auc_judd": "AUC (Judd)",
    "chance_topk": "chance top-k",
}


def pick_windows(frames: TaskFrames, n: int) -> list[str]:
    """n windows whose last frame has gaze, spread evenly over the test windows (deterministic)."""
    candidates = [w for w, v in zip(frames.window_ids.tolist(), frames.valid[:, -1], strict=False) if v]
    if len(candidates) <= n:
        return candidates
    return [candidates[i] for i in np.linspace(0, len(candidates) - 1, n).round().astype(int)]


def overlay_grid(
    frames: TaskFrames,
    runs: list[RunAttention],
    window_ids: list[str],
    support_threshold: float,
    frame: int = -1,
    width: int = 192,
) -> Figure:
    """Rows: windows; columns: the frame with human gaze, then each run's attention (its primary source)
    with the gaze support outlined, side by side."""
    t = frame % frames.n_frames
    gh, gw = frames.grid
    cols = 1 + len(runs)
    fig, axes = plt.subplots(
        max(1, len(window_ids)), cols, figsize=(2.3 * cols, 2.75 * max(1, len(window_ids))), squeeze=False
    )
    for r, wid in enumerate(window_ids):
        i = frames.row(wid)
        image = render.decode_jpeg(frames.jpeg(i, t))
        gaze_support = support(frames.gaze[i, t][None], support_threshold)[0].reshape(gh, gw)
        axes[r, 0].imshow(
            render.overlay(
                image,
                mode="gaze",
                gaze_heatmap=frames.heatmaps[i, t].astype(np.float32),
                gaze_support=gaze_support,
                width=width,
            )
        )
        axes[r, 0].set_title("human gaze", fontsize=8)
        axes[r, 0].set_ylabel(f"{wid}\nframe {t}", fontsize=6)
        for c, ra in enumerate(runs, start=1):
            ax = axes[r, c]
            rows = np.flatnonzero(ra.window_ids == wid)
            if not len(rows) or not ra.sources:
                ax.text(0.5, 0.5, "no attention", ha="center", va="center", transform=ax.transAxes)
                continue
            source = ra.primary_source()
            att = ra.maps[source][rows[0], t].reshape(gh, gw)
            ax.imshow(
                render.overlay(
                    image,
                    mode="both",
                    attention=att,
                    gaze_heatmap=frames.heatmaps[i, t].astype(np.float32),
                    gaze_support=gaze_support,
                    width=width,
                )
            )
            overlap = ra.metrics[source]["topk_overlap"][rows[0], t]
            ax.set_title(f"{ra.run} ({source})\ntop-{ra.topk} {overlap:.2f}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{frames.task}: gaze (green, support outlined) vs attention", fontsize=9)
    fig.tight_layout()
    return fig


def metric_distributions(frame_df: pd.DataFrame) -> Figure:
    """Per-frame metric distributions per run and source (rows: tasks, columns: metrics)."""
    long = frame_df.melt(id_vars=["run", "task", "source"], value_vars=list(METRICS), var_name="metric")
    long["metric"] = long["metric"].map(METRIC_LABELS)
    if long.empty:
        fig = plt.figure(figsize=(4, 2))
        fig.text(0.5, 0.5, "no scored frames", ha="center")
        return fig
    hue_order = [s for s in SOURCES if s in set(long["source"])]
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert` to boxplot
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        grid = sns.catplot(
            data=long,
            x="run",
            y="value",
            hue="source",
            hue_order=hue_order,
            col="metric",
            row="task",
            kind="box",
            sharey=False,
            height=2.3,
            aspect=0.9,
            fliersize=1,
            linewidth=0.7,
            col_order=[METRIC_LABELS[m] for m in METRICS],
        )
    grid.set_titles("{row_name} | {col_name}", size=8)
    grid.set_axis_labels("", "")
    for ax in grid.axes.flat:
        ax.tick_params(labelsize=7)
    return grid.figure


def primary_rows(window_df: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows of its primary source: the gaze block where the run has one, else the Perceiver."""
    has_block = window_df.groupby("run")["source"].agg(lambda s: "block" in set(s))
    keep = window_df["source"] == np.where(window_df["run"].map(has_block), "block", "perceiver")
    return window_df[keep]


def alignment_vs_semantic(window_df: pd.DataFrame, metric: str = "topk_overlap") -> Figure:
    """Per window: attention-gaze alignment (mean over scored frames) against the semantic score."""
    df = primary_rows(window_df).dropna(subset=[metric, "semantic"])
    tasks = sorted(df["task"].unique()) or ["(none)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        sub = df[df["task"] == task]
        if sub.empty:
            ax.text(0.5, 0.5, "no windows with predictions", ha="center", va="center", transform=ax.transAxes)
            continue
        for run, part in sub.groupby("run", sort=False):
            varied = len(part) > 2 and part[metric].nunique() > 1 and part["semantic"].nunique() > 1
            rho = stats.spearmanr(part[metric], part["semantic"]).statistic if varied else np.nan
            label = f"{run} ({part['source'].iloc[0]}) rho={rho:.2f}"
            sns.regplot(
                data=part,
                x=metric,
                y="semantic",
                ax=ax,
                ci=None,
                label=label,
                truncate=True,
                scatter_kws={"s": 12, "alpha": 0.6},
                line_kws={"linewidth": 1},
            )
        ax.set_title(task, fontsize=9)
        ax.set_xlabel(f"window mean {METRIC_LABELS.get(metric, metric)}")
        ax.set_ylabel("semantic score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
