"""The loop's DVCLive logs (reports/train/<run>/seed<N>/<task>/): opening, trimming on resume,
keeping the DVC metric free of wall-clock values, and the training time a resumed run continues from."""

from __future__ import annotations

import contextlib
from pathlib import Path

from gazevlm import checkpoint as ckpt

# Beside the logs, not in the resumable state: two identical runs then write the same model directory byte
# for byte (a DVC output), while a resumed run still reports the training time of all its processes.
WALL_TIME_FILE = "wall_time.json"
STEP_TIME = "step_time_s"  # the one wall-clock value a step logs

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
    summary.get("train", {}).pop(STEP_TIME, None)
    summary.pop("train_time_s", None)


def log_metrics(live, step: int, prefix: str, values: dict[str, float]) -> None:
    """Log `values` as `<prefix>/<name>` at optimizer step `step` (no-op without a logger: ranks > 0)."""
    if live is None:
        return
    live.step = step
    for k, v in values.items():
        live.log_metric(f"{prefix}/{k}", v)


def without_wall_clock(values: dict[str, float]) -> dict[str, float]:
    """A step's logged values without its wall time: what the resumable state keeps of them."""
    return {k: v for k, v in values.items() if k != STEP_TIME}


def record_wall_time(live_dir: Path, state_name: str, elapsed_s: float) -> None:
    """The training seconds up to the resumable state `state_name` (rank 0, after the state is written)."""
    ckpt.write_json(Path(live_dir) / WALL_TIME_FILE, {"state": state_name, "elapsed_s": round(elapsed_s, 3)})


def wall_time_before(live_dir: Path, state_name: str) -> float:
    """The training seconds recorded for the state a run resumes from; 0 when the logs are gone or name
    another state (a process killed between writing the state and this record)."""
    try:
        record = ckpt.read_json(Path(live_dir) / WALL_TIME_FILE)
    except (ckpt.CheckpointError, OSError):
        return 0.0
    if not isinstance(record, dict) or record.get("state") != state_name:
        return 0.0
    value = record.get("elapsed_s")
    return float(value) if isinstance(value, int | float) else 0.0
