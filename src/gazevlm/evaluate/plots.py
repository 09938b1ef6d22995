"""Figures of the evaluation (each returns a matplotlib Figure; the notebook only displays them)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def _long(scored: Mapping[tuple[str, str], pd.DataFrame], metric: str) -> pd.DataFrame:
    parts = [
        pd.DataFrame({"run": run, "task": task, metric: df[metric].to_numpy()})
        for (run, task), df in scored.items()
        if metric in df
    ]
    if not parts:
        raise KeyError(f"no scored predictions carry the column {metric!r}")
    return pd.concat(parts, ignore_index=True)


def metric_bars(records: Mapping[tuple[str, str], Mapping], metric: str = "semantic"):
    """Mean and 95% bootstrap interval per run (bars) and task (panels)."""
    tasks = sorted({t for _, t in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks, strict=False):
        runs = [r for r, t in records if t == task]
        est = [records[(r, task)].get(metric) or {} for r in runs]
        mean = np.array([e.get("mean") if e.get("mean") is not None else np.nan for e in est], dtype=float)
        lo = np.array([e.get("ci_low") if e.get("ci_low") is not None else np.nan for e in est], dtype=float)
        hi = np.array([e.get("ci_high") if e.get("ci_high") is not None else np.nan for e in est], dtype=float)
        ax.bar(runs, mean, color=sns.color_palette("deep", len(runs)))
        ax.errorbar(runs, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="k", capsize=4)
        ax.set_title(task)
        ax.set_ylabel(metric)
    fig.suptitle(f"{metric} of generated text (mean, 95% bootstrap CI)")
    fig.tight_layout()
    return fig


def score_distributions(scored: Mapping[tuple[str, str], pd.DataFrame], metric: str = "semantic"):
    """Per-window scores by task and run (box + points)."""
    data = _long(scored, metric)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.boxplot(data=data, x="task", y=metric, hue="run", ax=ax, showfliers=False)
    sns.stripplot(
        data=data, x="task", y=metric, hue="run", dodge=True, ax=ax, size=2.5, palette="dark:k", alpha=0.4, legend=False
    )
    ax.set_title(f"per-window {metric}")
    fig.tight_layout()
    return fig


def paired_differences(scored: Mapping[tuple[str, str], pd.DataFrame], a: str, b: str, metric: str = "semantic"):
    """Histogram of per-window differences a - b on the windows both runs scored, one panel per task."""
    tasks = sorted({t for r, t in scored if r == a and (b, t) in scored})
    if not tasks:
        raise KeyError(f"no task has predictions for both {a!r} and {b!r}")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        da = scored[(a, task)].set_index("window_id")[metric]
        db = scored[(b, task)].set_index("window_id")[metric].reindex(da.index)
        d = (da - db).dropna()
        ax.hist(d, bins=30, color="tab:blue", alpha=0.8)
        ax.axvline(0, color="k", lw=1)
        ax.axvline(d.mean(), color="tab:red", lw=2, label=f"mean {d.mean():+.3f}")
        ax.set_title(f"{task}: {a} − {b} ({len(d)} windows)")
        ax.set_xlabel(f"Δ {metric}")
        ax.legend()
    fig.tight_layout()
    return fig
