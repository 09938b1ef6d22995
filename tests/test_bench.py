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


def test_host_cpu_times_reads_proc_stat_and_shares_sum_to_one(tmp_path):
    from bench import host_cpu_times, host_shares

    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    stat.write_text(f"cpu  {tick * 10} 0 {tick * 2} {tick * 80} {tick} 0 0 {tick * 7} 0 0\ncpu0 1 2 3\n")
    before = host_cpu_times(str(stat))
    assert before == {
        "user": 10.0,
        "nice": 0.0,
        "system": 2.0,
        "idle": 80.0,
        "iowait": 1.0,
        "irq": 0.0,
        "softirq": 0.0,
        "steal": 7.0,
    }
    stat.write_text(f"cpu  {tick * 20} 0 {tick * 2} {tick * 150} {tick} 0 0 {tick * 27} 0 0\n")
    shares = host_shares(before, host_cpu_times(str(stat)))
    assert shares["steal"] == pytest.approx(0.2) and shares["user"] == pytest.approx(0.1)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert host_cpu_times(str(tmp_path / "missing")) == {} and host_shares({}, before) == {}


def test_cpu_description_names_the_model_and_its_widest_vectors(tmp_path):
    from bench import cpu_description

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert cpu_description(str(info)) == "Some Xeon, AVX2"
    info.write_text("model name\t: Some Xeon\nflags\t\t: avx2 avx512f avx512bw\n")
    assert cpu_description(str(info)) == "Some Xeon, AVX-512"
    assert cpu_description(str(tmp_path / "missing")) == "?"


@pytest.mark.slow
def test_pipeline_timing_counts_stages_and_the_cpu_of_every_descendant(tmp_path):
    from bench import bench_pipeline

    # a grandchild burns ~0.6 s of CPU inside stage "b": the make -> dvc -> papermill -> worker chain in small
    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    script = tmp_path / "stages.sh"
    script.write_text(
        f"echo \"Running stage 'a':\"\nsleep 0.2\necho \"Running stage 'b':\"\n{sys.executable} -c '{burn}'\n"
    )
    timed = bench_pipeline._run(["bash", str(script)], tmp_path, dict(os.environ), tmp_path / "log", 60)
    assert list(timed.stages_s) == ["a", "b"] and timed.stages_s["a"] >= 0.2
    assert timed.cpu_s >= 0.5 and timed.wall_s >= 0.8
    assert "Running stage 'b'" in (tmp_path / "log").read_text()
    if timed.host:
        assert sum(timed.host.values()) == pytest.approx(1.0)
    note = bench_pipeline.machine_note(timed)
    assert note.startswith(f"CPU {timed.cpu_s:.0f} s = ") and "cores busy" in note
