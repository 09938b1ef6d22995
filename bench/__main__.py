"""`python -m bench` (`make bench`): every benchmark in one run, a short table, reports/bench.md.

    python -m bench                 # model, loop, data and heatmap figures (~6 min on the 2-core machine)
    python -m bench --pipeline      # also `make install` + `make repro` in a fresh clone (~15 min more)
    python -m bench --quick         # tiny repeat counts: checks the harness, not the machine

Figures that miss their goal are profiled and the largest costs are written under them. The install
and pipeline figures of the last --pipeline run are kept in reports/bench_pipeline.json and shown
(with their date) when a run does not measure them again.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    DEFAULT_THREADS,
    Figure,
    Summary,
    cpu_description,
    fmt_spread,
    goal_at_least,
    load_average,
    quiet,
    set_threads,
)
from gazevlm import numerics

REPORT = Path("reports/bench.md")
PIPELINE_RESULTS = Path("reports/bench_pipeline.json")  # = bench_pipeline.RESULTS
HEATMAP_GOAL = 4.0
NATIVE_FPS = 30


@dataclass
class Plan:
    """How much of everything to measure (the defaults are the real run; `quick` checks the harness)."""

    params_file: str = "params.yaml"
    threads: int = DEFAULT_THREADS
    model_repeats: int = 9
    shape_repeats: dict[str, int] = field(default_factory=lambda: {"tiny": 25, "tiny/paper-block": 25})
    model_shapes: tuple[str, ...] = ("tiny", "tiny/paper-block", "paper/4")
    model_only: tuple[str, ...] = ("train", "generate", "frames", "memory")
    loop_repeats: int = 25
    frame_counts: tuple[int, ...] = (3, 5, 8)
    frames_uncached: bool = True
    gen_batch: dict[str, int] = field(default_factory=lambda: {"tiny": 8, "tiny/paper-block": 8, "paper/4": 2})
    profile: bool = True
    gen_repeats: int | None = None
    block_repeats: int = 20
    loader_repeats: int = 7
    loader_samples: int = 256
    heat_repeats: int = 3
    heat_keyframes: int = 2
    heat_configs: tuple[tuple[str, int, float], ...] | None = None  # None: the full list below
    heat_small: bool = True
    heat_decode: bool = True
    pipeline: bool = False

    @classmethod
    def quick(cls, params_file: str) -> Plan:
        return cls(
            params_file=params_file,
            model_repeats=2,
            shape_repeats={},
            model_shapes=("tiny",),
            model_only=("train", "generate", "frames"),
            frame_counts=(3,),
            frames_uncached=False,
            gen_batch={"tiny": 2},
            profile=False,
            gen_repeats=2,
            block_repeats=2,
            loop_repeats=2,
            loader_repeats=1,
            loader_samples=32,
            heat_repeats=1,
            heat_keyframes=1,
            heat_configs=(("dis", 6, 0.5),),
            heat_small=False,
            heat_decode=False,
        )


# --- heatmaps (bench/bench_heatmaps.py's measurements, repeated and interleaved) -----------------------


def heatmap_figures(plan: Plan) -> tuple[list[Figure], list[str]]:
    from bench import bench_heatmaps as bh
    from gazevlm import params as params_mod
    from gazevlm.heatmaps.flow import FlowBackendError

    hp = params_mod.load(plan.params_file).heatmaps
    n_prev = round(hp.delta_ms / 1000 * NATIVE_FPS)
    default = (hp.flow, n_prev, hp.flow_scale)
    configs = list(
        plan.heat_configs
        or (
            default,
            ("farneback", n_prev, 0.5),
            ("raft", n_prev, 0.5),
            ("raft_small", n_prev, 0.5),
            (hp.flow, 2 * n_prev, hp.flow_scale),
            ("farneback", 2 * n_prev, 0.5),
            (hp.flow, n_prev, 0.25),
            (hp.flow, n_prev, 1.0),
            ("farneback", n_prev, 0.25),
        )
    )
    if default not in configs:
        configs.insert(0, default)
    k = plan.heat_keyframes
    frames = bh.scene_frames(2 * n_prev + k + 2)
    small = bh.scene_frames(2 * n_prev + k + 2, width=bh.WIDTH // 2, height=bh.HEIGHT // 2) if plan.heat_small else None
    cases: dict[tuple, tuple] = {(c, bh.WIDTH): (c, frames, bh.WIDTH, bh.HEIGHT) for c in configs}
    if small is not None:
        cases[(default[:2] + (1.0,), bh.WIDTH // 2)] = (default[:2] + (1.0,), small, bh.WIDTH // 2, bh.HEIGHT // 2)
    rows: dict[tuple, list[dict]] = {key: [] for key in cases}
    skipped: list[str] = []
    for r in range(plan.heat_repeats):
        for key in list(cases) if r % 2 == 0 else list(cases)[::-1]:
            if key not in rows:
                continue
            (name, prev, scale), fr, w, h = cases[key]
            try:
                rows[key].append(bh.bench_one(name, prev, scale, k, fr, w, h))
            except FlowBackendError as err:
                skipped.append(f"{name}: skipped ({str(err).split(';')[0]})")
                del rows[key]
    decode = None
    if plan.heat_decode:
        decode = Summary.of([bh.bench_decode()["ms_per_video_second"] for _ in range(plan.heat_repeats)])

    cmd = "python -m bench --only heatmaps"
    figures: list[Figure] = []
    use_cpu = plan.threads == 1  # the same clock rule as the model figures (bench_model.clock_for)
    for key, rs in rows.items():
        (name, prev, scale), _, w, h = cases[key]
        ms = Summary.of([x["cpu_ms_per_keyframe" if use_cpu else "ms_per_keyframe"] for x in rs])
        rt = Summary.of([1e3 / x["cpu_ms_per_keyframe" if use_cpu else "ms_per_keyframe"] for x in rs])
        wall = Summary.of([x["ms_per_keyframe"] for x in rs])
        split = {s: sum(x["split_ms"].get(s, 0.0) for x in rs) / len(rs) for s in rs[0]["split_ms"]}
        is_default = (name, prev, scale) == default and w == bh.WIDTH
        label = f"{name}, {prev} frames, flow scale {scale}, {w}x{h}" + (" (default)" if is_default else "")
        goal, met = goal_at_least(rt.median, HEATMAP_GOAL) if is_default else ("", None)
        # backends side by side at the default window, scale and resolution; the rest is how cost grows
        section = "heatmaps" if (prev, scale, w) == (n_prev, default[2], bh.WIDTH) else "scaling"
        figures.append(
            Figure(
                section,
                f"heatmaps video-s per s (aggregation only): {label}",
                rt.median,
                "x realtime",
                fmt_spread(rt, 1),
                goal,
                met,
                cmd,
                f"{ms.median:.1f} ms {'CPU' if use_cpu else 'wall'} per keyframe (1 keyframe = 1 video-second; wall "
                f"{wall.median:.1f} ms); split (wall ms): "
                + ", ".join(f"{s} {v:.1f}" for s, v in sorted(split.items(), key=lambda kv: -kv[1]))
                + f"; max point error {max(x['max_point_error_px'] for x in rs):.2f} px",
                {
                    "ms_per_keyframe": [x["ms_per_keyframe"] for x in rs],
                    "cpu_ms_per_keyframe": [x["cpu_ms_per_keyframe"] for x in rs],
                    "split_ms": split,
                },
            )
        )
        if is_default:
            total = sum(split.values())
            figures.append(
                Figure(
                    "heatmaps",
                    f"heatmaps cost split, {label}: flow share",
                    100 * split.get("flow", 0.0) / total,
                    "%",
                    "",
                    "",
                    None,
                    cmd,
                    "; ".join(
                        f"{s} {100 * v / total:.1f}% ({v:.1f} ms)"
                        for s, v in sorted(split.items(), key=lambda kv: -kv[1])
                    ),
                )
            )
            if decode is not None:
                per_s = ms.median + decode.median
                goal, met = goal_at_least(1e3 / per_s, HEATMAP_GOAL)
                figures.append(
                    Figure(
                        "heatmaps",
                        f"heatmaps video-s per s incl. video decode: {label}",
                        1e3 / per_s,
                        "x realtime",
                        f"decode {decode.median:.0f} ms per video-second ({fmt_spread(decode, 0, ' ms')})",
                        goal,
                        met,
                        cmd,
                        "aggregation (as above) + sequential mp4v decode of 30 frames (7 kept) per video-second (wall)",
                    )
                )
    return figures, skipped


# --- profiles of what missed -----------------------------------------------------------------------------


def profile_reader(plan: Plan, top: int = 8) -> tuple[list[tuple[str, float, float]], list[tuple[str, float]], float]:
    """cProfile of reader passes over generated shards: the top functions (name, self s, cumulative s per
    pass), self time per source file (name, share), and the profiled seconds per pass."""
    from bench.bench_loader import reader_pass, write_shards
    from gazevlm import params as params_mod

    tp = params_mod.load(plan.params_file).train
    passes = 3
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        write_shards(Path(tmp), n_samples=plan.loader_samples)
        reader_pass(Path(tmp), tp.batch_size, tp.shuffle_buffer, tp.num_workers, tp.seeds[0], 0)
        prof = cProfile.Profile()
        prof.enable()
        for e in range(passes):
            reader_pass(Path(tmp), tp.batch_size, tp.shuffle_buffer, tp.num_workers, tp.seeds[0], e + 1)
        prof.disable()
    rows, by_file = [], {}
    for (path, _, fn), (_, _, tottime, cumtime, _) in pstats.Stats(prof).stats.items():
        where = f"{Path(path).name}:{fn}" if path != "~" else fn
        rows.append((where, tottime / passes, cumtime / passes))
        # built-ins (path "~") by name: cv2.imdecode, np.load's compile() of the header...
        key = Path(path).name if path != "~" else fn
        by_file[key] = by_file.get(key, 0.0) + tottime / passes
    total = sum(by_file.values())
    files = sorted(((k, v / total) for k, v in by_file.items()), key=lambda kv: -kv[1])[:top]
    return sorted(rows, key=lambda r: -r[1])[:top], files, total


# --- the report -----------------------------------------------------------------------------------------


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt_value(f: Figure) -> str:
    return f"{f.value:.3g}" if abs(f.value) < 100 else f"{f.value:.0f}"


def _met(f: Figure) -> str:
    return "" if f.met is None else ("yes" if f.met else "**no**")


def table(figures: list[Figure], markdown: bool = True) -> str:
    if markdown:
        lines = ["| figure | value | spread | goal | met |", "|---|---|---|---|---|"]
        lines += [f"| {f.name} | {_fmt_value(f)} {f.unit} | {f.spread} | {f.goal} | {_met(f)} |" for f in figures]
        return "\n".join(lines)
    width = min(96, max(len(f.name) for f in figures))
    lines = [f"{'figure':<{width}}  {'value':>16}  {'goal':>8}  met"]
    for f in figures:
        name = f.name if len(f.name) <= width else f.name[: width - 1] + "~"
        lines.append(f"{name:<{width}}  {_fmt_value(f) + ' ' + f.unit:>16}  {f.goal:>8}  {_met(f).strip('*')}")
    return "\n".join(lines)


def write_report(
    path: Path,
    figures: list[Figure],
    meta: dict[str, Any],
    profiles: dict[str, Any],
    skipped: list[str],
    pipeline_meta: dict[str, Any] | None,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{meta['command']}` (`make bench`) on {meta['date']}, commit {meta['commit']}, in "
        f"{meta['wall_s'] / 60:.1f} min. Machine: {meta['cores']} cores, {meta['machine']} ({meta['cpu']}), Python "
        f"{meta['python']}, torch {meta['torch']} ({meta['kernels']}: gazevlm.numerics), OpenCV {meta['opencv']}. "
        f"Every measurement ran with {meta['threads']} thread(s) "
        f"(torch.set_num_threads, cv2.setNumThreads) in this process and in its subprocesses.",
        "",
        f"**Load average** (1 min) {meta['load_start']:.2f} at the start, {meta['load_end']:.2f} at the end "
        f"(5 and 15 min at the start: {meta['load5']:.2f}, {meta['load15']:.2f}): other processes shared the "
        f"{meta['cores']} cores, so absolute times are pessimistic; ratios come from measurements interleaved "
        "ABAB (each round alternates the order), taken round by round, so load falls on both sides alike.",
        "",
        "Method: warm-up, then repeats; value = median, spread = interquartile range and min/max over the "
        "repeats (for ratios: of the per-round ratios). Goals are the issue's; 'met' compares the median. "
        + (
            "Clock: with one thread the figures use this process's CPU time per call, which is the wall time "
            "the call takes on an idle core and is not inflated when another process takes the core for a "
            "while (wall-time medians and ratios are given beside them in the details); with more threads, "
            "wall time."
            if meta["threads"] == 1
            else "Clock: wall time."
        ),
        "",
        "## Summary",
        "",
        table(figures),
        "",
        "## Details and how to reproduce each figure",
        "",
    ]
    for f in figures:
        lines.append(
            f"- **{f.name}**: {_fmt_value(f)} {f.unit}"
            + (f" (goal {f.goal}: {_met(f)})" if f.goal else "")
            + (f". {f.note}" if f.note else "")
            + (f". Command: `{f.command}`" if f.command else "")
        )
    if pipeline_meta:
        lines += [
            "",
            f"The install and pipeline figures were measured on {pipeline_meta['date']} (commit "
            f"{pipeline_meta['commit']}) by `python -m bench --pipeline`, not in this run.",
        ]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(sorted(set(skipped))) + "."]
    if profiles:
        lines += ["", "## Profiles of the figures that missed their goal", ""]
        for name, prof in profiles.items():
            lines += [f"### {name}", "", *prof, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")


def _model_profile_lines(p: dict[str, Any]) -> list[str]:
    lines = [
        f"torch.profiler, self CPU ms per call: base {p['total_ms']['base']:.1f}, gaze {p['total_ms']['gaze']:.1f}. "
        "Largest extra costs of the gaze run (operator: gaze minus base, gaze total):",
        "",
    ]
    lines += [f"- `{k}`: +{d:.2f} ms ({g:.2f} ms)" for k, d, g in p["extra_ms"]]
    lines += ["", "Largest operators of the gaze run: " + ", ".join(f"`{k}` {v:.1f} ms" for k, v in p["gaze_top_ms"])]
    if "whatif" in p:
        w = p["whatif"]
        ms = ", ".join(f"{k} {v:.1f} ms" for k, v in w["ms"].items())
        lines += [
            "",
            f"Before/after, in one more interleaved run ({w['clock']} time): gaze/base "
            f"{w['ratio']['median']:.3f}x (IQR {w['ratio']['q1']:.3f}-{w['ratio']['q3']:.3f}); with the "
            f"block's features detached before the Perceiver (no input gradient through the Perceiver: "
            f"the most a separate key/value path for the pooled token could save) "
            f"{w['detached_ratio']['median']:.3f}x (IQR {w['detached_ratio']['q1']:.3f}-"
            f"{w['detached_ratio']['q3']:.3f}). Medians: {ms}.",
        ]
    if "block" in p:
        lines += [
            "",
            f"The gaze block alone, forward + backward on cached features: {p['block']['fwd_bwd_ms']:.1f} ms "
            f"({p['block']['params'] / 1e6:.2f} M parameters).",
        ]
    return lines


# --- main ---------------------------------------------------------------------------------------------------

SECTIONS = ("model", "loop", "loader", "heatmaps")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pipeline", action="store_true", help="also time make install + make repro in a fresh clone")
    ap.add_argument("--quick", action="store_true", help="tiny repeat counts (a check of the harness)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    ap.add_argument("--out", type=Path, default=REPORT, help="the markdown report (default reports/bench.md)")
    args = ap.parse_args(argv)
    only = tuple(s for s in args.only.split(",") if s)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown sections {sorted(unknown)} (have {SECTIONS})")
    plan = Plan.quick(args.params) if args.quick else Plan(params_file=args.params)
    plan.threads, plan.pipeline = args.threads, args.pipeline

    quiet()
    import cv2
    import torch

    from bench import bench_loader, bench_loop, bench_model, bench_pipeline

    set_threads(plan.threads)
    started = time.perf_counter()
    load5, load15 = os.getloadavg()[1:]
    meta: dict[str, Any] = {
        "command": "python -m bench"
        + (" --pipeline" if args.pipeline else "")
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if only != SECTIONS else ""),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_head(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_description(),
        "kernels": ", ".join(f"{k}={v}" for k, v in numerics.in_effect().items()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "threads": plan.threads,
        "load_start": load_average(),
        "load5": load5,
        "load15": load15,
    }
    figures: list[Figure] = []
    profiles: dict[str, list[str]] = {}
    skipped: list[str] = []

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s, load {load_average():.1f}] {what}", flush=True)

    if "model" in only:
        progress("model: train step, generate, frames per window, peak memory")
        opts = bench_model.Options(
            params_file=plan.params_file,
            repeats=plan.model_repeats,
            threads=plan.threads,
            shapes=plan.model_shapes,
            only=plan.model_only,
            frame_counts=plan.frame_counts,
            gen_batch=plan.gen_batch,
            profile=plan.profile,
            gen_repeats=plan.gen_repeats,
            block_repeats=plan.block_repeats,
            frames_uncached=plan.frames_uncached,
            shape_repeats=plan.shape_repeats,
            warmup=1 if args.quick else bench_model.Options.warmup,
        )
        figs, profs = bench_model.run(opts)
        figures += figs
        profiles.update({name: _model_profile_lines(p) for name, p in profs.items()})
    if "loop" in only:
        progress("loop: our training loop vs a plain open_flamingo loop, with and without FSDP2 at world size 1")
        figures += bench_loop.run(plan.params_file, plan.loop_repeats, plan.threads, warmup=1 if args.quick else 2)
    if "loader" in only:
        progress("data: shard reader vs training")
        figs = bench_loader.run(plan.params_file, plan.loader_repeats, plan.threads, n_samples=plan.loader_samples)
        real = Path("data/shards") / bench_loader.TASK
        if not args.quick and real.is_dir() and any(real.glob("train-*.tar")):
            figs += bench_loader.run(plan.params_file, plan.loader_repeats, plan.threads, shards="data/shards")
        figures += figs
        missed = [f for f in figs if f.met is False]
        if plan.profile and missed:
            rows, files, total = profile_reader(plan)
            profiles[missed[0].name] = [
                f"cProfile of a reader pass over the generated shards (stage writer): {1e3 * total:.0f} ms per pass "
                "under the profiler. Self time by source file (or built-in): "
                + ", ".join(f"`{k}` {100 * v:.0f}%" for k, v in files)
                + ". Largest functions:",
                "",
                *[f"- `{w}`: self {1e3 * s:.1f} ms, cumulative {1e3 * c:.1f} ms" for w, s, c in rows],
            ]
    if "heatmaps" in only:
        progress("heatmaps: aggregation throughput per flow backend, split, scaling")
        figs, skip = heatmap_figures(plan)
        figures += figs
        skipped += skip
    pipeline_meta = None
    if args.pipeline:
        progress("pipeline: fresh clone, make install, make repro (about 15 min)")
        figs = bench_pipeline.run(log_dir=Path(tempfile.gettempdir()))
        figures += figs
        bench_pipeline.save(figs, meta["commit"], PIPELINE_RESULTS)
    elif not args.quick and PIPELINE_RESULTS.is_file():
        saved = json.loads(PIPELINE_RESULTS.read_text())
        figures += [Figure(**f) for f in saved["figures"]]
        pipeline_meta = saved
    else:
        skipped.append("install and `make repro` from a fresh clone (run `python -m bench --pipeline`)")

    meta["load_end"] = load_average()
    meta["wall_s"] = time.perf_counter() - started
    write_report(args.out, figures, meta, profiles, skipped, pipeline_meta)
    # the raw measurements behind the report, for anyone who wants more than medians
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures]}, indent=1) + "\n"
    )
    print()
    print(table(figures, markdown=False))
    print(
        f"\nload average {meta['load_start']:.1f} -> {meta['load_end']:.1f}; {meta['wall_s'] / 60:.1f} min; "
        f"report: {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
