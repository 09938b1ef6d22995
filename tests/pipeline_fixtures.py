"""A scratch clone of this repository with a shrunken params.yaml, for the tests that run the DVC pipeline
(`dvc repro`, `dvc exp run`, the ablation targets) as a user would, in a git repository of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The shrunken world every pipeline test shares (one `dvc repro` per session, tests/conftest.py): 2 test
# videos, so the shuffled-frames control gives each window a window of another video; both tasks.
SMALL = {
    "sample": {"videos": 8, "seconds": 10},
    "extract": {"split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    "pretrain": {"steps": 5, "batch_size": 8},
    "runs": {"base": {"block": False, "lambda": 0.0}, "gaze": {"block": True, "lambda": 100.0}},
    "train": {"tasks": ["future", "activity"], "seeds": [0], "epochs": 1, "batch_size": 8},
    "evaluate": {"bootstrap_samples": 100, "max_new_tokens": 8},
}


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section; `runs` is replaced whole (the runs are the test's)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) and key != "runs" else value
    return out


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command with this venv first on PATH; its stdout, or an AssertionError with its output's tail."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def clone(dest: Path, params: dict) -> Path:
    """The repository's tracked and untracked-but-not-ignored files at `dest`, params.yaml shrunk by `params`,
    committed as a fresh git repository, the data placeholder made (`make placeholder`, never reinstalling)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the clone's dvc.lock (if any) describes the default-sized run: start this one afresh
    (dest / "dvc.lock").unlink(missing_ok=True)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(raw, params), sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    run(["make", "-o", "install", "placeholder", f"VENV={sys.prefix}"], dest)
    return dest
