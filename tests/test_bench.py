"""The benchmark harness runs and writes its report (no timing assertions: speed goals live in the
benchmark's output, reports/bench.md, not in the test suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `bench` is a top-level package of the repository, not of gazevlm

from bench import Summary, interleaved, paired_ratio  # noqa: E402


@pytest.mark.slow
def test_quick_run_writes_a_markdown_table_with_every_section(tmp_path):
    out = tmp_path / "bench.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--params", str(ROOT / "params.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "| figure | value | spread | goal | met |" in text
    assert "Load average" in text
    for row in (
        "train step gaze/base, tiny",
        "generate gaze-block/base, tiny",
        "train step vs frames per window",
        "training samples/s, our loop at world size 1 (base run",
        "training samples/s, plain loop over open_flamingo's Flamingo",
        "our loop / plain open_flamingo loop",
        "our loop at world size 1, FSDP2-wrapped / plain module",
        "shard reader / training samples/s",
        "heatmaps video-s per s",
        "heatmaps cost split",
    ):
        assert f"| {row}" in text, row
    # every figure says how to reproduce it; the pipeline is opt-in and says so
    figures = json.loads(out.with_suffix(".json").read_text())["figures"]
    assert figures and all(f["command"].startswith("python -m bench") for f in figures)
    assert all(f["value"] > 0 for f in figures)
    assert "--pipeline" in text
    assert "train step gaze/base, tiny" in proc.stdout  # the short table on stdout


@pytest.mark.slow
def test_unknown_section_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "model,gpu"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown sections ['gpu']" in proc.stderr


def test_interleaved_alternates_the_order_every_round_after_warmup():
    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(v) for v in times.values()] == [3, 3]


def test_summary_and_paired_ratio():
    s = Summary.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.median, s.lo, s.hi, s.n) == (3.0, 1.0, 100.0, 5)
    assert s.q1 == 2.0 and s.q3 == 4.0
    r = paired_ratio([2.0, 3.0, 4.0], [1.0, 3.0, 2.0])
    assert r.median == 2.0 and r.lo == 1.0
    with pytest.raises(ValueError, match="different lengths"):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no measurements"):
        Summary.of([])


def test_the_ratio_goal_is_the_papers_blocks_and_the_default_tiny_block_is_measured_beside_it():
    from bench import bench_model as BM
    from gazevlm import params as params_mod

    p = params_mod.load(ROOT / "params.yaml")
    default = BM.make_setup("tiny", p, frames=3, batch_size=2)
    paper_block = BM.make_setup("tiny/paper-block", p, frames=3, batch_size=2)
    assert BM._patch_layers(default) == 2 and BM._patch_layers(paper_block) == 0
    res = {
        "ratio": Summary.of([2.0, 2.1, 1.9]),
        "other_ratio": Summary.of([2.0, 2.1, 1.9]),
        "times": {"base": [0.05] * 3, "gaze": [0.1] * 3},
        "wall": {"base": [0.05] * 3, "gaze": [0.1] * 3},
        "cpu": {"base": [0.05] * 3, "gaze": [0.1] * 3},
        "clock": "cpu",
    }
    assert BM._ratio_figure("model", "x", res, "cmd").met is False  # the paper's block: <= 1.05
    fig = BM._ratio_figure("model", "x", res, "cmd", goal_applies=False)
    assert fig.goal == "" and fig.met is None  # patch layers cost a base step each by design: no goal
