"""The loop's DVCLive logs (reports/train/<run>/seed<N>/<task>/): opening, trimming on resume, and
keeping the DVC metric free of wall-clock values."""

from __future__ import annotations

import contextlib
from pathlib import Path

_LIVE_REPOS: list = []  # DVC repos opened by DVCLive in this process, closed when train() returns


def open_live(live_dir: Path, resume: bool):
    """A DVCLive logger that writes no dvc.yaml and saves no experiment (dvc.yaml declares the plots)."""
    from dvclive import Live

    live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=False, report=None)
    if getattr(live, "_dvc_repo", None) is not None:
        _LIVE_REPOS.append(live._dvc_repo)
    return live


def close_live_repos() -> None:
    """Close DVCLive's DVC repo (its git packs). On a failure the traceback keeps it alive until the
    interpreter's teardown, where dulwich's __del__ cannot import any more and prints
    `ImportError: sys.meta_path is None` after the real error; closed here, nothing follows it."""
    while _LIVE_REPOS:
        repo = _LIVE_REPOS.pop()
        with contextlib.suppress(Exception):
            repo.close()


def truncate_live_logs(live_dir: Path, last_step: int) -> None:
    """Drop DVCLive rows written after the state we resume from (a killed run logged past it)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step") if "step" in header.split("\t") else None
        if col is None:
            continue
        kept = [r for r in rows if r and int(float(r.split("\t")[col])) <= last_step]
        tsv.write_text("\n".join([header, *kept]) + "\n")


def results_only(summary: dict) -> None:
    """DVCLive's metrics.json is a DVC metric: keep wall-clock values out of it, or `dvc metrics diff`
    of two identical runs shows noise (step times stay in the plots; the total in summary.json)."""
    summary.get("train", {}).pop("step_time_s", None)
    summary.pop("train_time_s", None)


def log_metrics(live, step: int, prefix: str, values: dict[str, float]) -> None:
    """Log `values` as `<prefix>/<name>` at optimizer step `step` (no-op without a logger: ranks > 0)."""
    if live is None:
        return
    live.step = step
    for k, v in values.items():
        live.log_metric(f"{prefix}/{k}", v)
