"""What the gaze block costs: training step and generation, gaze run / base run, and peak memory.

Both models are built from the same seed (the block is built on a forked RNG, so the backbones are
identical) and measured side by side in one process, ABAB. The training step is gazevlm.train.step's own step
(train.Stepper) on one rank, as the loop runs it at world size 1: the plain module (no FSDP2 wrapping),
the frozen tower's features from the VisionFeatureCache (train.cache_vision_features, filled during
warm-up), each target tokenised once (TrainEncoder), `forward_losses`, backward, global-norm clipping,
fused AdamW and the schedule. Generation is GazeVLM.generate on pixels (the
evaluation stage's call), forced to exactly max_new_tokens tokens so both runs do the same work.

Shapes: `tiny` is the preset the default pipeline trains; `paper/4` is the paper preset's code path
(open_clip ViT-L-14 + OPT loaded from a weights directory, open_flamingo's default Perceiver and
cross-attention in every layer, 224 px / 14 px patches, 8 block heads) with ViT-L-14 and OPT-1.3B
widths and depths divided by 4 (random weights, written to a temporary directory).

Peak memory: a fresh subprocess per measurement (`--memory-probe`), glibc told to return large blocks
to the OS at once (MALLOC_MMAP_THRESHOLD_), warm-up steps, then the peak RSS (VmHWM, reset through
/proc/self/clear_refs) of one more step, above the RSS before it.

    python -m bench.bench_model [--repeats 9] [--only train,generate,frames,memory]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import (
    DEFAULT_THREADS,
    Figure,
    Summary,
    fmt_spread,
    goal_at_most,
    interleaved,
    paired_ratio,
    quiet,
    set_threads,
)
from gazevlm import distributed
from gazevlm import params as params_mod
from gazevlm.models import block_patch_layers, build_model, get_preset
from gazevlm.models.text import encode_prompt
from gazevlm.models.tokenizer import build_word_tokenizer, load_pretrained_tokenizer
from gazevlm.params import Params
from gazevlm.train.data import VisionFeatureCache
from gazevlm.train.live import open_live
from gazevlm.train.step import StepConfig, Stepper, WarmupSchedule, model_api, vision_tower

RUNS = ("base", "gaze")
# tiny: the default tiny block (the preset's trainable patch layers); tiny/paper-block: the same model with
# the paper's block (model.block_patch_layers 0), whose cost the ratio goal is about
SHAPES = ("tiny", "tiny/paper-block", "paper/4")
RATIO_GOAL = 1.05
MODULE = "python -m bench.bench_model"
# The paper's models (open_clip ViT-L-14; facebook/opt-1.3b: hidden 2048, 24 layers, 32 heads, ffn 8192).
OPT_13B = {"hidden": 2048, "layers": 24, "heads": 32, "ffn": 8192}

_COLOURS = ("red", "blue", "green", "yellow", "white", "black")
_THINGS = ("cup", "bowl", "knife", "plate", "spoon", "bottle", "board", "pan")
_VERBS = ("picks up", "puts down", "cuts", "opens", "washes", "moves")


def target_texts(n: int, seed: int = 0) -> list[str]:
    """Targets shaped like the synthetic world's (two actions joined by ', then ', ~20 words)."""
    rng = np.random.default_rng(seed)

    def action() -> str:
        return (
            f"the camera wearer {_VERBS[rng.integers(len(_VERBS))]} the {_COLOURS[rng.integers(len(_COLOURS))]} "
            f"{_THINGS[rng.integers(len(_THINGS))]}"
        )

    return [f"{action()}, then {action()}" for _ in range(n)]


def write_paper_shaped_weights(root: Path, tokenizer: Any, div: int = 4) -> Path:
    """<root>/clip and <root>/opt-1.3b as presets.PAPER reads them (see its docstring), random weights,
    ViT-L-14 and OPT-1.3B with widths and depths divided by `div` (head widths kept at 64)."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import OPTConfig, OPTForCausalLM

    cfg = open_clip.get_model_config("ViT-L-14")
    vc = cfg["vision_cfg"]
    vc.update(width=vc["width"] // div, layers=max(1, vc["layers"] // div), head_width=64)
    cfg["text_cfg"].update(layers=1, width=64, heads=1, vocab_size=64)  # dropped by build_vision_encoder
    cfg["embed_dim"] = cfg["embed_dim"] // div
    cfg["quick_gelu"] = True
    clip_dir = root / "clip"
    clip_dir.mkdir(parents=True, exist_ok=True)
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.manual_seed(123)
    clip = open_clip.create_model(f"local-dir:{clip_dir}", load_weights=False)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(clip_dir / "open_clip_model.safetensors"))

    lm_dir = root / "opt-1.3b"
    o = OPT_13B
    lm = OPTForCausalLM(
        OPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=o["hidden"] // div,
            num_hidden_layers=max(1, o["layers"] // div),
            num_attention_heads=o["heads"] // div,
            ffn_dim=o["ffn"] // div,
            word_embed_proj_dim=o["hidden"] // div,
            max_position_embeddings=256,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
    )
    lm.save_pretrained(str(lm_dir))
    tokenizer.save_pretrained(str(lm_dir))
    return root


@dataclass
class Setup:
    """Everything one shape needs: params, tokenizer, and per run a model ready to train."""

    shape: str
    params: Params
    tokenizer: Any
    frames: int
    batch_size: int
    image_size: int
    grid: int
    tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def make_setup(shape: str, params: Params, frames: int, batch_size: int) -> Setup:
    texts = target_texts(64)
    tmp = None
    if shape in ("tiny", "tiny/paper-block"):
        model = {"preset": "tiny", "weights_dir": None, "vision_weights": None}
        if shape == "tiny/paper-block":
            model["block_patch_layers"] = 0
        p = params_mod.with_overrides(params, model=model)
        tok = build_word_tokenizer(texts)
    elif shape == "paper/4":
        tmp = tempfile.TemporaryDirectory(prefix="bench-paper-")
        write_paper_shaped_weights(Path(tmp.name), build_word_tokenizer(texts))
        tok = load_pretrained_tokenizer(Path(tmp.name) / "opt-1.3b")
        p = params_mod.with_overrides(params, model={"preset": "paper", "weights_dir": tmp.name})
    else:
        raise ValueError(f"unknown shape {shape!r} (have {SHAPES})")
    size, patch = get_preset(p.model.preset, p.model.backbone).geometry
    return Setup(shape, p, tok, frames, batch_size, size, size // patch, tmp)


def make_batch(setup: Setup, seed: int = 1) -> dict:
    """A training batch as ShardSource yields it: frames in [0, 1], a gaze distribution per frame."""
    g = torch.Generator().manual_seed(seed)
    b, t, s, n = setup.batch_size, setup.frames, setup.image_size, setup.grid
    target = torch.rand(b, t, n, n, generator=g) ** 4
    target /= target.sum(dim=(2, 3), keepdim=True)
    return {
        "pixels": torch.rand(b, t, 3, s, s, generator=g),
        "gaze_target": target,
        "gaze_valid": torch.ones(b, t, dtype=torch.bool),
        "text": target_texts(b, seed),
        "window_id": [f"w{seed}_{i}" for i in range(b)],
    }


def build(setup: Setup, run: str) -> torch.nn.Module:
    torch.manual_seed(int(setup.params.train.seeds[0]))
    return build_model(setup.params, run, setup.tokenizer)


class Trainer:
    """gazevlm.train.step's optimizer step (Stepper) for one run on one rank: the plain module as the loop
    trains it at world size 1, or (fsdp=True) FSDP2-wrapped as on 2+ ranks; the vision-feature cache;
    with `live_dir`, the loop's DVCLive logging of every step too."""

    def __init__(
        self,
        setup: Setup,
        run: str,
        ctx: distributed.DistContext,
        fsdp: bool = False,
        cache: bool | None = None,
        live_dir: Path | None = None,
    ):
        tp, rp = setup.params.train, setup.params.run(run)
        self.model = build(setup, run)
        tower = vision_tower(self.model)
        tower.requires_grad_(False)
        if fsdp:
            distributed.shard_model(self.model, ctx, ignored=[tower])
        self.fsdp = fsdp
        self.trainable = [p for p in self.model.trainable_parameters() if p.requires_grad]
        opt = torch.optim.AdamW(self.trainable, lr=tp.lr, weight_decay=tp.weight_decay, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule(tp.warmup_steps, 10**9, tp.schedule))
        self.api = model_api()
        use_cache = tp.cache_vision_features if cache is None else cache
        self.cache = VisionFeatureCache(self.model.encode_vision) if use_cache else None
        self.cfg = StepConfig(
            task="future",
            lam=float(rp.lam),
            kl_direction=tp.kl_direction,
            kl_reduction=tp.kl_reduction,
            kl_eps=tp.kl_eps,
            device=torch.device("cpu"),
            encode=self.api.train_encoder(setup.tokenizer, "future"),
        )
        self.tokenizer = setup.tokenizer
        self.stepper = Stepper(
            self.model,
            setup.tokenizer,
            self.api,
            self.cfg,
            self.cache,
            self.trainable,
            opt,
            sched,
            tp.grad_clip if tp.grad_clip > 0 else float("inf"),
            ctx,
            has_block=bool(rp.block),
        )
        self.live = open_live(live_dir, resume=False) if live_dir is not None else None
        self.steps = 0
        self.model.train()
        tower.eval()

    def step(self, batch: dict) -> float:
        last = self.stepper.step([batch])
        self.steps += 1
        if self.live is not None:
            self.live.step = self.steps
            for k, v in last.items():
                self.live.log_metric(f"train/{k}", v)
        return last["loss"]


class Generator:
    """GazeVLM.generate on pixels, always exactly max_new_tokens new tokens."""

    def __init__(self, setup: Setup, run: str, max_new_tokens: int, num_beams: int):
        self.model = build(setup, run).eval()
        # min_new_tokens in the LM's generation config: the same length for both runs, whatever they predict
        self.model.backbone.lang_encoder.generation_config.min_new_tokens = max_new_tokens
        self.max_new_tokens, self.num_beams = max_new_tokens, num_beams
        batch = make_batch(setup, seed=2)
        self.pixels = batch["pixels"]
        self.prompt = encode_prompt(setup.tokenizer, "future", setup.frames, setup.batch_size)

    def __call__(self) -> int:
        out = self.model.generate(
            self.pixels,
            self.prompt["input_ids"],
            self.prompt["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
        )
        if out.shape[1] != self.max_new_tokens:
            raise RuntimeError(f"generate returned {out.shape[1]} tokens, not {self.max_new_tokens}")
        return out.shape[1]


@contextlib.contextmanager
def process_group():
    ctx = distributed.init("cpu")
    try:
        yield ctx
    finally:
        distributed.shutdown(ctx)


def clock_for(threads: int) -> str:
    """Which clock the ratios use: process CPU time with one thread (the wall time on an idle core, not
    inflated by other processes' bursts; see bench.interleaved), wall time with more (spinning threads
    would count as work)."""
    return "cpu" if threads == 1 else "wall"


def timed(fns: dict[Any, Callable[[], Any]], repeats: int, warmup: int, clock: str) -> dict[str, Any]:
    """Interleaved timings on both clocks; `times` and `ratio` (gaze / base, round by round) use `clock`."""
    cpu: dict[Any, list[float]] = {}
    wall = interleaved(fns, repeats, warmup, cpu=cpu)
    out: dict[str, Any] = {"wall": wall, "cpu": cpu, "clock": clock, "times": cpu if clock == "cpu" else wall}
    if "base" in fns and "gaze" in fns:
        out["ratio"] = paired_ratio(out["times"]["gaze"], out["times"]["base"])
        other = wall if clock == "cpu" else cpu
        out["other_ratio"] = paired_ratio(other["gaze"], other["base"])
    return out


def time_training(
    setup: Setup, ctx, repeats: int, warmup: int, fsdp: bool = False, runs: tuple[str, ...] = RUNS, clock: str = "wall"
) -> dict[str, Any]:
    trainers = {run: Trainer(setup, run, ctx, fsdp=fsdp) for run in runs}
    batch = make_batch(setup)
    out = timed({run: (lambda t=t: t.step(batch)) for run, t in trainers.items()}, repeats, warmup, clock)
    return {**out, "trainers": trainers, "batch": batch}


def time_generation(
    setup: Setup, repeats: int, warmup: int, max_new_tokens: int, num_beams: int, clock: str = "wall"
) -> dict[str, Any]:
    gens = {run: Generator(setup, run, max_new_tokens, num_beams) for run in RUNS}
    return {**timed(dict(gens), repeats, warmup, clock), "generators": gens}


# --- profiling (for a figure that misses its goal) ---------------------------------------------------


def profile_ops(fn: Callable[[], Any], steps: int = 3) -> dict[str, float]:
    """Self CPU milliseconds per operator name, per call, over `steps` calls of fn (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    return {e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()}


def profile_difference(fns: dict[str, Callable[[], Any]], steps: int = 3, top: int = 8) -> dict[str, Any]:
    """Where the gaze run's extra time goes: per operator, gaze self CPU ms minus base, largest first."""
    ops = {run: profile_ops(fn, steps) for run, fn in fns.items()}
    base, gaze = ops["base"], ops["gaze"]
    diff = {k: gaze.get(k, 0.0) - base.get(k, 0.0) for k in set(base) | set(gaze)}
    largest = sorted(diff.items(), key=lambda kv: -kv[1])[:top]
    return {
        "total_ms": {run: sum(v.values()) for run, v in ops.items()},
        "extra_ms": [(k, round(v, 3), round(gaze.get(k, 0.0), 3)) for k, v in largest],
        "gaze_top_ms": sorted(((k, round(v, 3)) for k, v in gaze.items()), key=lambda kv: -kv[1])[:top],
    }


def what_if_no_input_gradient(setup: Setup, ctx, repeats: int, warmup: int, clock: str) -> dict[str, Any]:
    """base, gaze, and gaze with the block's output features detached before the Perceiver, interleaved.

    With the "pooled" output the Perceiver reads torch.cat([patches, pooled]): one token per frame
    needs a gradient, so autograd computes the Perceiver's input gradient (to_kv, norm_media backward)
    for every patch token of every frame and drops all but the pooled rows. Detaching (this variant
    only; it also cuts the CE gradient into the block) shows what that costs: the upper bound of the
    saving from computing the pooled token's keys/values separately."""
    trainers = {run: Trainer(setup, run, ctx) for run in RUNS}
    detached = Trainer(setup, "gaze", ctx)
    block = detached.model.backbone.gaze_block
    forward = block.forward

    def detached_forward(patches: torch.Tensor) -> Any:
        out = forward(patches)
        return out._replace(features=out.features.detach()) if hasattr(out, "_replace") else out

    block.forward = detached_forward  # this instance only
    batch = make_batch(setup)
    fns = {run: (lambda t=t: t.step(batch)) for run, t in trainers.items()}
    fns["gaze, Perceiver input detached"] = lambda: detached.step(batch)
    res = timed(fns, repeats, warmup, clock)
    t = res["times"]
    return {
        "ratio": dataclasses.asdict(res["ratio"]),
        "detached_ratio": dataclasses.asdict(paired_ratio(t["gaze, Perceiver input detached"], t["base"])),
        "ms": {k: 1e3 * Summary.of(v).median for k, v in t.items()},
        "clock": clock,
    }


def block_cost(setup: Setup, repeats: int = 20) -> dict[str, float]:
    """Median ms of the gaze block alone, forward + backward, on one batch of (cached) patch features."""
    import time

    model = build(setup, "gaze")
    block = model.backbone.gaze_block
    with torch.no_grad():
        feats = model.encode_vision(make_batch(setup)["pixels"])  # (B, T, P, D), as the cache holds them

    def step() -> None:
        out = block(feats)
        feats_out, attention = (out[0], out[-1]) if isinstance(out, tuple) else (out.features, out.attention)
        (feats_out.sum() + attention.sum()).backward()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"fwd_bwd_ms": 1e3 * float(np.median(times)), "params": sum(q.numel() for q in block.parameters())}


# --- peak memory (one fresh process per measurement) ---------------------------------------------------


def _proc_status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: 1024 * int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def memory_probe(shape: str, run: str, frames: int, batch_size: int, params_file: str, threads: int) -> dict:
    """In this (fresh) process: warm up a training step, then the peak RSS of one more."""
    set_threads(threads)
    setup = make_setup(shape, params_mod.load(params_file), frames, batch_size)
    try:
        with process_group() as ctx:
            trainer = Trainer(setup, run, ctx)
            batch = make_batch(setup)
            for _ in range(2):  # fills the feature cache and the optimizer state
                trainer.step(batch)
            before = _proc_status()["VmRSS"]
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            trainer.step(batch)
            after = _proc_status()
    finally:
        setup.close()
    return {
        "shape": shape,
        "run": run,
        "rss_before": before,
        "peak_rss": after["VmHWM"],
        "step_peak": after["VmHWM"] - before,
    }


def measure_memory(
    shape: str, frames: int, batch_size: int, params_file: str, threads: int, repeats: int
) -> dict[str, list[dict]]:
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "131072",
        "MALLOC_TRIM_THRESHOLD_": "131072",
        "OMP_NUM_THREADS": str(threads),
    }
    results: dict[str, list[dict]] = {run: [] for run in RUNS}
    for r in range(repeats):
        for run in RUNS if r % 2 == 0 else RUNS[::-1]:
            cmd = [
                sys.executable,
                "-m",
                "bench.bench_model",
                "--memory-probe",
                run,
                "--shapes",
                shape,
                "--frames",
                str(frames),
                "--batch",
                str(batch_size),
                "--params",
                params_file,
                "--threads",
                str(threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
            if proc.returncode != 0:
                raise RuntimeError(f"memory probe failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
            results[run].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


# --- the figures ---------------------------------------------------------------------------------------


@dataclass
class Options:
    params_file: str = "params.yaml"
    repeats: int = 9
    # per-shape repeats where a step is cheap: the tiny step (~0.1 s) varies by +-10% round to round under load
    shape_repeats: dict[str, int] = dataclasses.field(default_factory=lambda: {"tiny": 25, "tiny/paper-block": 25})
    warmup: int = 2
    threads: int = DEFAULT_THREADS
    shapes: tuple[str, ...] = SHAPES
    only: tuple[str, ...] = ("train", "generate", "frames", "memory")
    frames: int = 5
    frame_counts: tuple[int, ...] = (3, 5, 8)
    frames_uncached: bool = True  # also the step with the vision tower in it (first epoch / no cache)
    batch: dict[str, int] = dataclasses.field(default_factory=lambda: {"paper/4": 4})
    gen_batch: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"tiny": 8, "tiny/paper-block": 8, "paper/4": 2}
    )
    memory_repeats: int = 1  # peak memory is reproducible (spread < 0.1% in trials); one fresh process per run
    gen_repeats: int | None = None  # default max(3, repeats // 2): a generate call is ~10 training steps
    block_repeats: int = 20
    profile: bool = True


def _patch_layers(setup: Setup) -> int:
    m = setup.params.model
    return block_patch_layers(m, get_preset(m.preset, m.backbone))


def _ratio_figure(section: str, name: str, res: dict[str, Any], command: str, goal_applies: bool = True) -> Figure:
    """gaze/base of `res`; the RATIO_GOAL is the paper's block's (none for a block with patch layers, whose
    added layers cost about a base step each by design)."""
    ratio, times = res["ratio"], res["times"]
    goal, met = goal_at_most(ratio.median, RATIO_GOAL) if goal_applies else ("", None)
    base, gaze = Summary.of(times["base"]), Summary.of(times["gaze"])
    wb, wg = Summary.of(res["wall"]["base"]), Summary.of(res["wall"]["gaze"])
    other = res["other_ratio"]
    clock = "process CPU time" if res["clock"] == "cpu" else "wall time"
    note = (
        f"{clock}: base {1e3 * base.median:.1f} ms (IQR {1e3 * base.q1:.1f}-{1e3 * base.q3:.1f}), gaze "
        f"{1e3 * gaze.median:.1f} ms (IQR {1e3 * gaze.q1:.1f}-{1e3 * gaze.q3:.1f})"
    )
    if res["clock"] == "cpu":
        note += (
            f"; wall time: base {1e3 * wb.median:.1f} ms, gaze {1e3 * wg.median:.1f} ms, gaze/base "
            f"{other.median:.3f}x (IQR {other.q1:.3f}-{other.q3:.3f})"
        )
    else:
        note += f"; CPU-time ratio {other.median:.3f}x (IQR {other.q1:.3f}-{other.q3:.3f})"
    return Figure(
        section,
        name,
        ratio.median,
        "x",
        fmt_spread(ratio),
        goal,
        met,
        command,
        note,
        {
            "clock": res["clock"],
            "base_wall_s": res["wall"]["base"],
            "gaze_wall_s": res["wall"]["gaze"],
            "base_cpu_s": res["cpu"]["base"],
            "gaze_cpu_s": res["cpu"]["gaze"],
        },
    )


def run(opts: Options) -> tuple[list[Figure], dict[str, Any]]:
    """All model figures; the second value holds profiles of figures that missed their goal."""
    set_threads(opts.threads)
    params = params_mod.load(opts.params_file)
    figures: list[Figure] = []
    profiles: dict[str, Any] = {}
    common = f"--params {opts.params_file} --repeats {opts.repeats} --threads {opts.threads}"
    clock = clock_for(opts.threads)
    with process_group() as ctx:
        for shape in opts.shapes:
            batch = opts.batch.get(shape, params.train.batch_size)
            setup = make_setup(shape, params, opts.frames, batch)
            try:
                cmd = f"{MODULE} --only train --shapes {shape} {common}"
                repeats = opts.shape_repeats.get(shape, opts.repeats)
                cmd = cmd.replace(f"--repeats {opts.repeats}", f"--repeats {repeats}")
                if "train" in opts.only:
                    res = time_training(setup, ctx, repeats, opts.warmup, clock=clock)
                    layers = _patch_layers(setup)
                    fig = _ratio_figure(
                        "model",
                        f"train step gaze/base, {shape} ({layers} patch layers), {opts.frames} frames, batch {batch}",
                        res,
                        cmd,
                        goal_applies=layers == 0,
                    )
                    fig.extra["samples_per_s_gaze"] = batch / Summary.of(res["times"]["gaze"]).median
                    block = block_cost(setup, opts.block_repeats)
                    base_ms = 1e3 * Summary.of(res["times"]["base"]).median
                    fig.note += (
                        f"; the gaze block alone (forward + backward, {block['params'] / 1e6:.2f} M parameters) "
                        f"{block['fwd_bwd_ms']:.1f} ms = {100 * block['fwd_bwd_ms'] / base_ms:.1f}% of the base step"
                    )
                    figures.append(fig)
                    if opts.profile and not fig.met:
                        tr = res["trainers"]
                        prof = profile_difference({run: (lambda t=tr[run], b=res["batch"]: t.step(b)) for run in RUNS})
                        del res, tr
                        prof["whatif"] = what_if_no_input_gradient(setup, ctx, max(5, repeats // 2), 1, clock)
                        prof["block"] = block
                        profiles[fig.name] = prof
                    res = None
                if "generate" in opts.only:
                    gsetup = dataclasses.replace(setup, batch_size=opts.gen_batch.get(shape, batch), tmp=None)
                    ev = params.evaluate
                    res = time_generation(
                        gsetup,
                        opts.gen_repeats or max(3, repeats // 2),
                        1,
                        ev.max_new_tokens,
                        ev.num_beams,
                        clock=clock,
                    )
                    fig = _ratio_figure(
                        "model",
                        f"generate gaze-block/base, {shape} ({_patch_layers(gsetup)} patch layers), {opts.frames} "
                        f"frames, batch {gsetup.batch_size}, {ev.max_new_tokens} tokens",
                        res,
                        f"{MODULE} --only generate --shapes {shape} {common}".replace(
                            f"--repeats {opts.repeats}", f"--repeats {repeats}"
                        ),
                    )
                    figures.append(fig)
                    if opts.profile and not fig.met:
                        profiles[fig.name] = profile_difference(dict(res["generators"]), steps=2)
                    del res
            finally:
                setup.close()
        if "frames" in opts.only:
            for t in opts.frame_counts:
                setup = make_setup("tiny", params, t, params.train.batch_size)
                # cached features (every epoch after the first) and the frozen tower run in the step
                # (the first epoch, or train.cache_vision_features: false), side by side
                variants = (True, False) if opts.frames_uncached else (True,)
                trainers = {
                    (run, cached): Trainer(setup, run, ctx, cache=cached) for cached in variants for run in RUNS
                }
                batch = make_batch(setup)
                times = timed(
                    {k: (lambda tr=tr, batch=batch: tr.step(batch)) for k, tr in trainers.items()},
                    opts.repeats,
                    opts.warmup,
                    clock,
                )["times"]
                for cached in variants:
                    g, b = Summary.of(times[("gaze", cached)]), Summary.of(times[("base", cached)])
                    ratio = paired_ratio(times[("gaze", cached)], times[("base", cached)])
                    how = "cached features" if cached else "vision tower in the step"
                    figures.append(
                        Figure(
                            "scaling",
                            f"train step vs frames per window: tiny, {t} frames, batch {setup.batch_size}, {how}",
                            1e3 * g.median,
                            f"ms (gaze, {'CPU' if clock == 'cpu' else 'wall'})",
                            fmt_spread(g.scaled(1e3), 1, " ms"),
                            "",
                            None,
                            f"{MODULE} --only frames {common}",
                            f"base {1e3 * b.median:.1f} ms; gaze/base {ratio.median:.3f}x "
                            f"(IQR {ratio.q1:.3f}-{ratio.q3:.3f})",
                            {"base_s": times[("base", cached)], "gaze_s": times[("gaze", cached)]},
                        )
                    )
                del trainers
    if "memory" in opts.only:
        for shape in opts.shapes:
            batch = opts.batch.get(shape, params.train.batch_size)
            mem = measure_memory(shape, opts.frames, batch, opts.params_file, opts.threads, opts.memory_repeats)
            step = {run: Summary.of([m["step_peak"] for m in mem[run]]) for run in RUNS}
            peak = {run: Summary.of([m["peak_rss"] for m in mem[run]]) for run in RUNS}
            ratio = paired_ratio([m["step_peak"] for m in mem["gaze"]], [m["step_peak"] for m in mem["base"]])
            mb = 2**20
            figures.append(
                Figure(
                    "model",
                    f"peak memory of a training step gaze/base, {shape}, batch {batch}",
                    ratio.median,
                    "x",
                    fmt_spread(ratio),
                    "",
                    None,
                    f"{MODULE} --only memory --shapes {shape} --params {opts.params_file} --threads {opts.threads}",
                    f"step peak above RSS: base {step['base'].median / mb:.1f} MB, "
                    f"gaze {step['gaze'].median / mb:.1f} MB; "
                    f"process peak RSS: base {peak['base'].median / mb:.0f} MB, gaze {peak['gaze'].median / mb:.0f} MB "
                    f"(gaze/base {peak['gaze'].median / peak['base'].median:.3f}x)",
                    {"probes": mem},
                )
            )
    return figures, profiles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"rounds per figure (default {Options.repeats}; tiny train/generate: 25)",
    )
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--only", default="train,generate,frames,memory")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None, help="training batch (default: train.batch_size; 4 for paper/4)")
    ap.add_argument("--memory-probe", choices=RUNS, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quiet()
    shapes = tuple(s for s in args.shapes.split(",") if s)
    if args.memory_probe:
        batch = args.batch or Options().batch.get(shapes[0], params_mod.load(args.params).train.batch_size)
        print(json.dumps(memory_probe(shapes[0], args.memory_probe, args.frames, batch, args.params, args.threads)))
        return 0
    opts = Options(
        params_file=args.params,
        threads=args.threads,
        shapes=shapes,
        only=tuple(args.only.split(",")),
        frames=args.frames,
    )
    if args.repeats is not None:
        opts.repeats, opts.shape_repeats = args.repeats, {}
    if args.batch:
        opts.batch = {s: args.batch for s in shapes}
    figures, profiles = run(opts)
    for f in figures:
        print(f"{f.name}: {f.value:.3f} {f.unit} ({f.spread}) goal {f.goal or '-'}  {f.note}")
    for name, p in profiles.items():
        print(f"profile of {name}: {json.dumps(p, indent=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
