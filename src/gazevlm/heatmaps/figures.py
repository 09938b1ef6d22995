"""Figures and tables for notebook 03 (each returns a matplotlib Figure or a DataFrame).

They read the stage's outputs (reports/heatmaps.json, data/heatmaps/keyframes.parquet, the shards)
and, for the occlusion examples only, decode the two frames involved again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gazevlm import layout
from gazevlm.heatmaps import aggregate as A
from gazevlm.heatmaps.flow import make_backend
from gazevlm.heatmaps.frames import read_image
from gazevlm.heatmaps.heatmap import gaussian_heatmap
from gazevlm.heatmaps.occlusion import consistency
from gazevlm.heatmaps.stage import KEYFRAMES_TABLE
from gazevlm.params import Params
from gazevlm.shards import iter_samples
from gazevlm.video_frames import read_frames


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _overlay(ax: plt.Axes, rgb: np.ndarray, heat: np.ndarray | None, title: str) -> None:
    ax.imshow(rgb)
    if heat is not None and heat.max() > 0:
        h, w = rgb.shape[:2]
        ax.imshow(heat / heat.max(), cmap="inferno", alpha=0.55, extent=(0, w, h, 0), vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def keyframe_table() -> pd.DataFrame:
    if not KEYFRAMES_TABLE.is_file():
        raise FileNotFoundError(f"{KEYFRAMES_TABLE}: run the heatmaps stage first")
    return layout.read_table(KEYFRAMES_TABLE, layout.HEATMAP_KEYFRAMES)


def summary_table(report: dict[str, Any]) -> pd.DataFrame:
    """Windows written and frames without gaze per task and split."""
    rows = [
        {"task": task, "split": split, **cell}
        for task, splits in report["windows_written"].items()
        for split, cell in splits.items()
    ]
    return pd.DataFrame(rows).set_index(["task", "split"]).sort_index()


def gaze_counts_table(report: dict[str, Any]) -> pd.DataFrame:
    """Per split: video frames by gaze label, valid/invalid, and keyframes valid/without gaze."""
    rows = []
    for split, c in sorted(report["gaze_frames"].items()):
        kf = report["keyframes"].get(split, {})
        rows.append(
            {
                "split": split,
                "frames": c["frames"],
                "valid": c["valid"],
                "invalid": c["invalid"],
                **{f"label:{k}": v for k, v in c["by_label"].items()},
                "keyframes": kf.get("computed", 0),
                "keyframes valid": kf.get("valid", 0),
                "keyframes without gaze": kf.get("computed", 0) - kf.get("valid", 0),
            }
        )
    return pd.DataFrame(rows).set_index("split").fillna(0).astype(int)


def gaze_counts_plot(report: dict[str, Any]) -> Figure:
    table = gaze_counts_table(report)
    labels = [c for c in table.columns if c.startswith("label:")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    share = table[labels].div(table["frames"], axis=0)
    share.columns = [c.split(":", 1)[1] for c in labels]
    share.plot.bar(stacked=True, ax=axes[0], rot=0, colormap="tab10")
    axes[0].set_ylabel("share of video frames")
    axes[0].set_title("gaze label per frame")
    axes[0].legend(fontsize=8, loc="lower right")
    table[["keyframes valid", "keyframes without gaze"]].plot.bar(
        stacked=True, ax=axes[1], rot=0, color=["tab:green", "tab:red"]
    )
    axes[1].set_ylabel("keyframes")
    axes[1].set_title("keyframes with a heatmap vs 'no gaze' mask")
    fig.tight_layout()
    return fig


def frame_fate_table(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """What happened to the earlier frames' gaze points, per split (occluded = dropped by the test)."""
    table = keyframe_table() if table is None else table
    rows = []
    for split, part in table.groupby("split"):
        counts = pd.Series([s for statuses in part["status"] for s in list(statuses)[:-1]]).value_counts()
        rows.append({"split": split, **{s: int(counts.get(s, 0)) for s in A.FRAME_STATUSES}})
    return pd.DataFrame(rows).set_index("split")


def _pick(table: pd.DataFrame, n: int, seed: int, mask: pd.Series) -> pd.DataFrame:
    """Up to n rows where mask holds, chosen with the seed, in keyframe order."""
    part = table[mask]
    return part.sample(min(n, len(part)), random_state=seed).sort_values("keyframe_id") if len(part) else part


def single_vs_aggregated(params: Params, n: int = 3, keyframe_ids: Sequence[str] | None = None) -> Figure:
    """Native keyframes with the single-point heatmap and the aggregated one side by side; dots: the
    earlier frames' raw points (white) and where the flow moved them (cyan), x: dropped ones."""
    table = keyframe_table()
    if keyframe_ids is None:
        rows = _pick(table, n, params.heatmaps.seed, table["valid"] & (table["n_points"] > 1))
    else:
        rows = table.set_index("keyframe_id").loc[list(keyframe_ids)].reset_index()
    paths = layout.read_table(layout.EXTRACT_DIR / "keyframes.parquet", layout.KEYFRAMES, ["keyframe_id", "path"])
    paths = paths.set_index("keyframe_id")["path"]
    hp = params.heatmaps
    fig, axes = plt.subplots(max(1, len(rows)), 2, figsize=(8, 4 * max(1, len(rows))), squeeze=False)
    for ax_row, (_, r) in zip(axes, rows.iterrows(), strict=False):
        rgb = _rgb(read_image(paths[r["keyframe_id"]]))
        h, w = rgb.shape[:2]
        sigma = hp.sigma_px * w / hp.reference_width  # as the stage draws it (heatmaps.stage.at_width)
        status = list(r["status"])
        own = (r["gaze_x"][-1], r["gaze_y"][-1])
        single = gaussian_heatmap(np.array([own]), h, w, sigma) if np.isfinite(own).all() else None
        _overlay(ax_row[0], rgb, single, f"{r['keyframe_id']}: single point")
        used = [(x, y) for x, y, s in zip(r["moved_x"], r["moved_y"], status, strict=False) if s == A.USED]
        agg = gaussian_heatmap(np.array(used), h, w, sigma) if used else None
        dropped = sum(s in (A.OCCLUDED, A.MOVED_OUT) for s in status)
        _overlay(ax_row[1], rgb, agg, f"aggregated: {len(used)} points, {dropped} dropped")
        ax_row[1].scatter(r["gaze_x"], r["gaze_y"], s=10, c="white", label="raw")
        if used:
            ax_row[1].scatter(*zip(*used, strict=False), s=10, c="cyan", label="moved by flow")
        bad = [
            (x, y) for x, y, s in zip(r["gaze_x"], r["gaze_y"], status, strict=False) if s in (A.OCCLUDED, A.MOVED_OUT)
        ]
        if bad:
            ax_row[1].scatter(*zip(*bad, strict=False), s=30, c="red", marker="x", label="dropped")
        ax_row[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def occluded_examples(params: Params, n: int = 2) -> Figure:
    """Earlier frames dropped as occluded: the frame, the keyframe and the inconsistent pixels. When
    no frame was dropped, the most inconsistent kept ones are shown instead (and say so)."""
    table = keyframe_table()
    pairs = [
        (r.Index, i, float(f), st)
        for r in table.itertuples()
        for i, (f, st) in enumerate(zip(r.inconsistent, r.status, strict=False))
        if np.isfinite(f)
    ]
    dropped = [p for p in pairs if p[3] == A.OCCLUDED]
    if dropped:
        rng = np.random.default_rng(params.heatmaps.seed)
        chosen = [dropped[j] for j in sorted(rng.choice(len(dropped), min(n, len(dropped)), replace=False))]
    else:
        chosen = sorted(pairs, key=lambda p: -p[2])[:n]
    if not chosen:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.text(0.5, 0.5, "no earlier frame went through the occlusion test", ha="center", va="center")
        ax.set_axis_off()
        return fig
    videos = layout.read_table(layout.EXTRACT_DIR / "videos.parquet", layout.VIDEOS, ["uid", "video_path"]).set_index(
        "uid"
    )
    hp = params.heatmaps
    backend = make_backend(hp.flow, hp.raft_weights)
    fig, axes = plt.subplots(len(chosen), 3, figsize=(12, 3.8 * len(chosen)), squeeze=False)
    for ax_row, (idx, i, _frac, status) in zip(axes, chosen, strict=False):
        r = table.loc[idx]
        tau, t = int(r["src_frames"][i]), int(r["frame"])
        frames = dict(read_frames(videos.loc[r["uid"], "video_path"], [tau, t]))
        fw, bw = backend.flow_pair(
            backend.prepare(frames[tau], hp.flow_scale), backend.prepare(frames[t], hp.flow_scale), backward=True
        )
        check = consistency(fw, bw, hp.eps_px * fw.shape[1] / frames[t].shape[1])
        verdict = "dropped" if status == A.OCCLUDED else "kept: none was dropped"
        _overlay(ax_row[0], _rgb(frames[tau]), None, f"{r['uid'][:13]} frame {tau} ({verdict})")
        ax_row[0].scatter([r["gaze_x"][i]], [r["gaze_y"][i]], c="red", marker="x", s=40)
        _overlay(ax_row[1], _rgb(frames[t]), None, f"keyframe {t}")
        ax_row[2].imshow(check.inconsistent, cmap="gray")
        sign = ">" if check.fraction > hp.eta else "<="
        ax_row[2].set_title(
            f"inconsistent pixels (white): {check.fraction:.0%} {sign} eta {hp.eta:.0%}, eps {hp.eps_px:g} px",
            fontsize=9,
        )
        ax_row[2].set_axis_off()
    fig.tight_layout()
    return fig


def patch_targets(task: str = "future", split: str = "train", n: int = 2) -> Figure:
    """Shard frames (after the model's resize/crop) with the patch grid, the stored heatmap and the
    patch target the loss sees; frames with the 'no gaze' mask say so."""
    samples = []
    for s in iter_samples(layout.shard_files(task, split)):
        samples.append(s)
        if len(samples) == n:
            break
    if not samples:
        raise FileNotFoundError(f"no shards for {task}/{split}: run the heatmaps stage first")
    t = samples[0]["frames"].shape[0]
    fig, axes = plt.subplots(3 * len(samples), t, figsize=(2.3 * t, 7 * len(samples)), squeeze=False)
    for k, s in enumerate(samples):
        size = s["frames"].shape[1]
        grid = s["target"].shape[1]
        for i in range(t):
            a0, a1, a2 = axes[3 * k, i], axes[3 * k + 1, i], axes[3 * k + 2, i]
            valid = bool(s["valid"][i])
            head = f"{s['window_id']}\n" if i == 0 else "\n"
            _overlay(a0, s["frames"][i], None, f"{head}frame {s['meta']['frames'][i]}")
            for g in range(1, grid):
                a0.axhline(g * size / grid - 0.5, color="white", lw=0.4)
                a0.axvline(g * size / grid - 0.5, color="white", lw=0.4)
            _overlay(
                a1,
                s["frames"][i],
                s["heatmap"][i].astype(np.float32) if valid else None,
                "heatmap" if valid else "no gaze (masked)",
            )
            a2.imshow(s["target"][i], cmap="viridis", vmin=0)
            a2.set_title(f"patch target {grid}x{grid}" if valid else "target: all zero, valid=False", fontsize=8)
            a2.set_xticks([])
            a2.set_yticks([])
    fig.tight_layout()
    return fig


def timings_table(report: dict[str, Any]) -> pd.DataFrame:
    t = pd.Series(report["timings_s"], name="seconds")
    return t.to_frame().assign(share=lambda d: (d["seconds"] / t["total"]).round(3))


def save(fig: Figure, name: str, directory: Path = layout.FIGURES_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
