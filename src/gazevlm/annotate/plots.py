"""Figures and tables for the annotate report (the notebook only displays them)."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from . import qc


def caption_length_figure(captions: pd.DataFrame) -> Figure:
    """Histogram of words per caption, split by whether QC flagged the caption."""
    df = captions[captions["caption"].notna()].copy()
    df["words"] = df["caption"].map(lambda c: len(qc.words(c)))
    df["QC"] = df["flagged"].map({True: "flagged", False: "clean"})
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    if len(df):
        sns.histplot(
            data=df, x="words", hue="QC", hue_order=["clean", "flagged"], multiple="stack", discrete=True, ax=ax
        )
    ax.set(xlabel="words per caption", ylabel="keyframes", title=f"Caption length ({len(df)} captions)")
    return fig


def flag_counts_figure(report: dict) -> Figure:
    """Bar chart of QC flags by kind and of dropped windows by reason."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    ax_flags, ax_drop = fig.subplots(1, 2)
    flags = pd.DataFrame(list(report["flags"].items()), columns=["flag", "keyframes"])
    sns.barplot(data=flags, x="flag", y="keyframes", ax=ax_flags, color="tab:orange")
    ax_flags.set(
        title=f"QC flags ({report['flagged_keyframes']} of {report['keyframes']['used_by_windows']} keyframes flagged)"
    )
    drops = pd.DataFrame(
        [("kept", report["windows"]["kept"])] + list(report["windows"]["dropped"].items()),
        columns=["outcome", "windows"],
    )
    sns.barplot(data=drops, x="outcome", y="windows", ax=ax_drop, color="tab:blue")
    ax_drop.set(title=f"Windows ({report['windows']['total']})")
    for ax, values in ((ax_flags, flags["keyframes"]), (ax_drop, drops["windows"])):
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_ylim(0, max(1, int(values.max()) if len(values) else 1) * 1.15)  # zero counts stay readable
        for container in ax.containers:
            ax.bar_label(container)
    return fig


def examples_table(targets: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """A few kept windows of each task and a few dropped ones, in a stable order."""
    cols = ["window_id", "task", "split", "target_text", "n_frames", "n_flagged", "drop_reason"]
    kept = targets[~targets["dropped"]].sort_values("window_id").groupby("task").head(max(n // 2, 1))
    dropped = targets[targets["dropped"]].sort_values("window_id").head(max(n // 4, 1))
    return pd.concat([kept, dropped])[cols].reset_index(drop=True)
