"""The training stage: `python -m gazevlm.train --params params.yaml --run gaze --task future --seed 0`.

One entry point for one process (plain `python -m`), N processes (`torchrun --nproc_per_node N`) and
N nodes (torchrun rendezvous): FSDP2 over the ranks when there are 2 or more (one process trains the
plain module), the optimizer built after sharding, gradient accumulation with gradient sync on the last
micro-batch only, global-norm clipping on the sharded gradients, AdamW with warmup and a constant or
cosine schedule, bf16 autocast on GPU only. Loss = CE + lambda * gaze KL; runs differ only by their
switches in params.yaml (`runs`). Every run is trained once per seed of `train.seeds`.

Each epoch ends with the validation loss; the best epoch by validation loss (`train.select_on`)
is kept as models/<run>/seed<N>/<task>/model.safetensors; the latest resumable state is kept under
models/<run>/seed<N>/<task>/state/ (see gazevlm.checkpoint) and a rerun resumes from it bit-exactly on
CPU. Curves go to DVCLive in reports/train/<run>/seed<N>/<task>/. `run(params, run, seed=...)`
(gazevlm.train_launch, re-exported here) is the notebook's entry: it starts one worker per task
(train.parallel_tasks at a time): the interpreter itself for one process per task, torchrun for more.

The committed params.yaml trains the tiny preset (lr 2e-3, global batch 32). The paper trained its
OpenFlamingo (`model.preset: paper`) with lr 7e-5, global batch 32, 10 epochs, vision encoder frozen:
  dvc exp run -S model.preset=paper -S train.lr=7e-5 -S train.batch_size=32 -S train.epochs=10
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from gazevlm import checkpoint as ckpt
from gazevlm import distributed, layout, train_launch
from gazevlm import params as params_mod
from gazevlm.checkpoint import CheckpointError, load_trained  # noqa: F401  (re-exported for the stages)
from gazevlm.gaze_inputs import GazeInputs
from gazevlm.params import Params
from gazevlm.train_data import (
    DataSource,
    MemorySource,
    ShardSource,
    VisionFeatureCache,
    batch_frames,
    batch_pixels,
    full_groups,
    prompt_inputs,
)
from gazevlm.train_launch import (  # noqa: F401  (the launcher and the stage's reports, re-exported)
    TRAIN_REPORTS,
    _switches,
    check_seed,
    launch_command,
    report_dir,
    torchrun_command,
    write_seed_metrics,
)

SCHEDULES = params_mod.SCHEDULES   # checked, with every other key, by gazevlm.params
SELECT_ON = params_mod.SELECT_ON
# train keys that may change between a run and its resumption (they do not change the trajectory
# of the steps already taken); every other key of the fingerprint must match to resume.
RESUMABLE_CHANGES = ("epochs", "num_workers", "nproc_per_node", "checkpoint_every_steps", "tasks",
                     "cpu_threads", "seeds", "in_memory", "parallel_tasks")


# --- the model side, behind one seam -------------------------------------------------------------

def _model_api() -> SimpleNamespace:
    """The functions of gazevlm.models / gazevlm.losses the loop uses (tests may stand in for them)."""
    from gazevlm import losses, models
    from gazevlm.models import text, tokenizer

    # tiny presets: a word tokenizer over the train targets; real presets: the LM's own
    return SimpleNamespace(build_model=models.build_model, build_tokenizer=models.build_tokenizer,
                           encode_train=text.encode_train, train_encoder=text.TrainEncoder, gaze_kl=losses.gaze_kl,
                           total_loss=losses.total_loss, vocab_fingerprint=tokenizer.vocabulary_fingerprint)


def vision_tower(model: nn.Module) -> nn.Module | None:
    """The (frozen) vision encoder sub-module, found by name."""
    for attr in ("vision_tower", "vision_encoder"):
        found = getattr(model, attr, None)
        if callable(found) and not isinstance(found, nn.Module):
            found = found()
        if isinstance(found, nn.Module):
            return found
    for name, module in model.named_modules():
        if name.split(".")[-1] == "vision_encoder":
            return module
    return None


# --- schedule, seeds, fingerprint ---------------------------------------------------------------

@dataclass
class WarmupSchedule:
    """LR factor per optimizer step: linear warmup, then constant or cosine to 0 at `total` steps.
    A callable object (not a closure) so LambdaLR's state dict holds plain numbers."""

    warmup: int
    total: int
    kind: str = "constant"

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - self.warmup) / span)))


def micro_batch_size(global_batch: int, world_size: int, grad_accum: int) -> int:
    """Samples per rank per micro-batch; the global batch must split evenly."""
    if grad_accum < 1:
        raise ValueError(f"params.train.grad_accum must be >= 1, got {grad_accum}")
    if global_batch % (world_size * grad_accum):
        raise ValueError(f"params.train.batch_size={global_batch} is not divisible by world_size ({world_size}) "
                         f"x grad_accum ({grad_accum})")
    return global_batch // (world_size * grad_accum)


def fingerprint(params: Params, run: str, task: str, vocab: str, seed: int) -> str:
    """What a resumed run must share with the run that wrote the state."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in RESUMABLE_CHANGES}
    blob = {"model": dataclasses.asdict(params.model), "run": _switches(params, run), "train": train,
            "task": task, "vocab": vocab, "seed": seed}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- one forward pass -----------------------------------------------------------------------------

@dataclass
class StepConfig:
    task: str
    lam: float
    kl_direction: str
    kl_reduction: str
    kl_eps: float
    device: torch.device
    # texts, n_frames -> encode_train's tensors, each text tokenised once (None: api.encode_train every step)
    encode: Callable[[list[str], int], dict] | None = None


def forward_losses(model: nn.Module, batch: dict, tokenizer: Any, api: SimpleNamespace, cfg: StepConfig,
                   cache: VisionFeatureCache | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss, ce, kl or None) of one micro-batch; kl is None when the model has no gaze block."""
    n_frames = batch_frames(batch)
    extra = prompt_inputs(batch)  # gaze-input baselines only: each window's gaze points in its prompt
    if cfg.encode is not None:
        enc = cfg.encode(list(batch["text"]), n_frames, **extra)
    else:
        enc = api.encode_train(tokenizer, list(batch["text"]), cfg.task, n_frames, **extra)
    if not isinstance(enc, dict):
        enc = dict(zip(("input_ids", "attention_mask", "labels"), enc, strict=True))
    enc = {k: v.to(cfg.device) for k, v in enc.items()}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.device.type == "cuda"
                else contextlib.nullcontext())  # bf16 needs no loss scaler; CPU stays float32
    with autocast:
        if cache is not None:
            features = cache(list(batch["window_id"]), lambda: batch_pixels(batch).to(cfg.device), cfg.device)
            out = model(pixels=None, vision_features=features, **enc)
        else:
            out = model(pixels=batch_pixels(batch).to(cfg.device, non_blocking=True), **enc)
    ce = out.loss.float()
    attention = getattr(out, "attention", None)
    kl = None
    if attention is not None:
        kl = api.gaze_kl(attention.float(), batch["gaze_target"].to(cfg.device), batch["gaze_valid"].to(cfg.device),
                         direction=cfg.kl_direction, reduction=cfg.kl_reduction, eps=cfg.kl_eps)
    loss = api.total_loss(ce, kl, cfg.lam)
    return loss, ce, kl


@dataclass
class Stepper:
    """One optimizer step of the loop (the benchmark times this very code): a group of micro-batches
    with gradient accumulation (FSDP's gradient sync on the last one only), global-norm clipping, AdamW
    and the schedule."""

    model: nn.Module
    tokenizer: Any
    api: SimpleNamespace
    cfg: StepConfig
    cache: VisionFeatureCache | None
    trainable: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    grad_clip: float                 # math.inf: no clipping (the norm is still measured)
    ctx: distributed.DistContext
    has_block: bool

    def step(self, group: list[dict]) -> dict[str, float]:
        """What the loop logs: loss and ce (kl with a gaze block, lambda 0 or not) averaged over the group
        and the ranks, the lr the step used, the global gradient norm before clipping, the step's wall time."""
        t0 = time.perf_counter()
        sums = torch.zeros(4, dtype=torch.float64)
        for i, mb in enumerate(group):
            if self.ctx.world_size > 1:
                self.model.set_requires_gradient_sync(i == len(group) - 1)
            loss, ce, kl = forward_losses(self.model, mb, self.tokenizer, self.api, self.cfg, self.cache)
            (loss / len(group)).backward()
            sums += torch.tensor([loss.item(), ce.item(), kl.item() if kl is not None else 0.0, 1.0],
                                 dtype=torch.float64)
        # clip_grad_norm_ on DTensor gradients reduces the shard norms over the mesh: the global norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        tot = distributed.all_reduce(sums, self.ctx)
        n = tot[3].item()
        last = {"loss": tot[0].item() / n, "ce": tot[1].item() / n, "lr": lr, "grad_norm": grad_norm,
                "step_time_s": time.perf_counter() - t0}
        if self.has_block:
            last["kl"] = tot[2].item() / n
        return last


# --- the loop ------------------------------------------------------------------------------------

def _check_params(params: Params, run: str, task: str) -> None:
    # types, ranges, choices and run switches: gazevlm.params, the one place (also for Params built in code)
    params_mod.validate(params)
    params.run(run)
    if task not in layout.TASKS:
        raise ValueError(f"unknown task {task!r} (have {layout.TASKS})")


def _full_state(model: nn.Module, opt: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state on rank 0, CPU; empty dicts on the other ranks."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=opts)
    optim = get_optimizer_state_dict(model, opt, options=opts) if opt is not None else None
    return weights, optim


def _truncate_live_logs(live_dir: Path, last_step: int) -> None:
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


def _results_only(summary: dict) -> None:
    """DVCLive's metrics.json is a DVC metric: keep wall-clock values out of it, or `dvc metrics diff`
    of two identical runs shows noise (step times stay in the plots; the total in summary.json)."""
    summary.get("train", {}).pop("step_time_s", None)
    summary.pop("train_time_s", None)


_LIVE_REPOS: list = []   # DVC repos opened by DVCLive in this process, closed when train() returns


def _open_live(live_dir: Path, resume: bool):
    from dvclive import Live

    # dvc.yaml declares the plots; DVCLive must not write its own dvc.yaml or save experiments.
    live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=False, report=None)
    if getattr(live, "_dvc_repo", None) is not None:
        _LIVE_REPOS.append(live._dvc_repo)
    return live


def _close_live_repos() -> None:
    """Close DVCLive's DVC repo (its git packs). On a failure the traceback keeps it alive until the
    interpreter's teardown, where dulwich's __del__ cannot import any more and prints
    `ImportError: sys.meta_path is None` after the real error; closed here, nothing follows it."""
    while _LIVE_REPOS:
        repo = _LIVE_REPOS.pop()
        with contextlib.suppress(Exception):
            repo.close()


def train(params: Params, run: str, task: str, *, seed: int | None = None, out_dir: str | Path | None = None,
          live_dir: str | Path | None = None, shards_root: str | Path = layout.SHARDS_DIR,
          features_root: str | Path = layout.FEATURES_DIR, data: DataSource | None = None, device: str = "auto",
          resume: str = "auto", progress: bool = True, on_step: Callable[[int, int], None] | None = None) -> dict:
    """Train one (run, task, seed) on every rank of the process group; returns the summary (rank 0).

    seed: one of params.train.seeds (default the first). resume: auto (continue from
    models/<run>/seed<N>/<task>/state if present) | never (start afresh, deleting it) | must (fail if
    there is no state). `on_step(step, epoch)` is called after each optimizer step. The frozen tower's
    features come from `features_root` (stage features) when they were computed by this model's tower
    from these shards; a `data` source given here gets none (its windows are not the shards').
    """
    if resume not in ("auto", "never", "must"):
        raise ValueError(f"resume={resume!r} (auto | never | must)")
    _check_params(params, run, task)
    seed = check_seed(params, seed)
    ctx = distributed.init(device)
    threads = torch.get_num_threads()
    if ctx.device.type == "cpu" and params.train.cpu_threads > 0:
        torch.set_num_threads(params.train.cpu_threads)
    try:
        inputs = GazeInputs.of_run(params.run(run))  # gaze as a model input: the gaze-input baselines only
        # the features stage encoded the shards' own frames: a gaze_overlay run trains on other pixels
        shared = (Path(shards_root), Path(features_root)) if data is None and not inputs.overlay else None
        if data is None and params.train.in_memory and ctx.world_size == 1:
            data = MemorySource(task, Path(shards_root), inputs=inputs)
        elif data is None:
            data = ShardSource(task, Path(shards_root), params.train.shuffle_buffer, params.train.num_workers,
                               inputs=inputs)
        return _train(ctx, params, run, task, seed,
                      out_dir=Path(out_dir) if out_dir else layout.run_dir(run, task, seed),
                      live_dir=Path(live_dir) if live_dir else report_dir(run, task, seed),
                      data=data, shared=shared, resume=resume, progress=progress, on_step=on_step)
    finally:
        _close_live_repos()
        torch.set_num_threads(threads)
        distributed.shutdown(ctx)


def _train(ctx: distributed.DistContext, params: Params, run: str, task: str, seed: int, *, out_dir: Path,
           live_dir: Path, data: DataSource, shared: tuple[Path, Path] | None, resume: str, progress: bool,
           on_step: Callable[[int, int], None] | None) -> dict:
    from tqdm.auto import tqdm

    api = _model_api()
    tp, rp = params.train, params.run(run)
    micro = micro_batch_size(tp.batch_size, ctx.world_size, tp.grad_accum)
    state_root = out_dir / ckpt.STATE_DIR

    # Tokenizer: the same deterministic build from the train targets on every rank and for every run.
    texts = data.train_texts()
    if not texts:
        raise ValueError(f"{task}: the train split has no samples")
    tokenizer = api.build_tokenizer(params, texts)
    vocab = api.vocab_fingerprint(tokenizer)
    fp = fingerprint(params, run, task, vocab, seed)
    n_train = data.num_samples("train")
    steps_per_epoch = n_train // tp.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{task}: {n_train} train samples, fewer than one global batch ({tp.batch_size})")

    # Model: identical initialisation on every rank (same seed), vision tower frozen and kept whole.
    _seed_all(seed)
    model = api.build_model(params, run, tokenizer)
    tower = vision_tower(model)
    frozen = bool(tp.freeze_vision and tower is not None)
    if tp.freeze_vision and tower is None:
        raise ValueError("params.train.freeze_vision: the model has no `vision_encoder` module to freeze")
    if frozen:
        tower.requires_grad_(False)
    model.to(ctx.device)
    if ctx.world_size > 1:  # FSDP2 shards over the ranks; one process trains the plain module (no hooks)
        distributed.shard_model(model, ctx, ignored=[tower] if frozen else [])
    trainable = [p for p in model.trainable_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    # AFTER sharding: the optimizer must hold the sharded (DTensor) parameters.
    # fused: one kernel over the local shards (the per-tensor loop is 3x slower on DTensors on CPU)
    opt = torch.optim.AdamW(trainable, lr=tp.lr, weight_decay=tp.weight_decay, fused=True)
    total_steps = steps_per_epoch * tp.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupSchedule(tp.warmup_steps, total_steps, tp.schedule))
    cache = VisionFeatureCache(model.encode_vision) if (tp.cache_vision_features and frozen) else None
    step_cfg = StepConfig(task=task, lam=float(rp.lam), kl_direction=tp.kl_direction,
                          kl_reduction=tp.kl_reduction, kl_eps=tp.kl_eps, device=ctx.device,
                          encode=api.train_encoder(tokenizer, task) if hasattr(api, "train_encoder") else None)

    # Resume (rank 0 reads; weights and optimizer are broadcast so other nodes need no shared disk).
    meta: dict[str, Any] = {"found": False}
    weights: dict = {}
    optim_state: dict = {}
    if ctx.is_main:
        try:
            found = None if resume == "never" else ckpt.find_train_state(state_root)
            if found is None and resume == "must":
                raise CheckpointError(f"{state_root}: no training state to resume from")
            if found is None:  # a fresh run: nothing of an earlier one may survive next to it
                shutil.rmtree(state_root, ignore_errors=True)
                (out_dir / ckpt.WEIGHTS_FILE).unlink(missing_ok=True)
                (out_dir / ckpt.CONFIG_FILE).unlink(missing_ok=True)
            else:
                weights, st = ckpt.load_train_state(found)
                if st["fingerprint"] != fp:
                    raise CheckpointError(
                        f"{found / ckpt.STATE_FILE}: state of another configuration (fingerprint {st['fingerprint']}"
                        f", this run {fp}): params, run switches, task or tokenizer changed; rerun with "
                        f"--resume never to start afresh")
                ckpt.check_compatible(ckpt.expected_shapes(model), weights, found / ckpt.WEIGHTS_FILE)
                optim_state = st.pop("optimizer")
                meta = {"found": True, "dir": str(found), **st}
        except CheckpointError as err:
            meta = {"error": str(err)}
    box = [meta]
    if ctx.world_size > 1:
        dist.broadcast_object_list(box, src=0)
    meta = box[0]
    if "error" in meta:
        raise CheckpointError(meta["error"])

    start_epoch, skip_steps, step, elapsed = 0, 0, 0, 0.0
    last: dict[str, float] = {}
    best: dict[str, Any] = {"value": math.inf, "epoch": -1, "step": 0}
    pending_rng = None
    if meta["found"]:
        load_opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
        distributed.load_full_state_dict(model, weights, ctx)
        set_optimizer_state_dict(model, opt, optim_state if ctx.is_main else {}, options=load_opts)
        sched.load_state_dict(meta["scheduler"])
        start_epoch, skip_steps, step = meta["epoch"], meta["steps_in_epoch"], meta["step"]
        best, elapsed, last = meta["best"], meta["elapsed_s"], meta["last"]
        if meta["world_size"] == ctx.world_size:
            pending_rng = meta["rng"][ctx.rank]
        elif skip_steps:
            raise CheckpointError(f"{meta['dir']}: a mid-epoch state of {meta['world_size']} ranks cannot resume "
                                  f"on {ctx.world_size}")
        else:
            _seed_all(seed + 7919 * (step + 1) + ctx.rank)
    else:
        _seed_all(seed + 7919 + ctx.rank)  # per-rank dropout streams, fixed by the seed
    del weights, optim_state
    features_note = None
    if cache is not None:
        # after a resume has loaded its weights: the features come from the tower the run trains with
        model.eval()
        if shared is not None:
            features_note = _load_shared_features(cache, model, task, *shared)
        if hasattr(data, "warm"):
            data.warm(cache, ctx.device)

    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.save_tokenizer(tokenizer, out_dir / ckpt.TOKENIZER_DIR)
        if meta["found"]:
            _truncate_live_logs(live_dir, step)
    live = _open_live(live_dir, resume=meta["found"]) if ctx.is_main else None
    if live is not None:
        live.log_params({"run": run, "task": task, "world_size": ctx.world_size, "seed": seed,
                         "micro_batch": micro, "steps_per_epoch": steps_per_epoch})

    def save_state(epoch: int, steps_in_epoch: int, full_weights: dict, full_optim: dict) -> None:
        rngs = distributed.gather_objects(_rng_state(ctx.device), ctx)
        if ctx.is_main:
            # an epoch-end state may follow a mid-epoch one at the same step: distinct names
            name = f"step-{step:09d}" + ("" if steps_in_epoch else "-end")
            ckpt.save_train_state(state_root, name, full_weights, {
                "format": ckpt.FORMAT, "fingerprint": fp, "optimizer": full_optim,
                "scheduler": sched.state_dict(), "rng": rngs, "epoch": epoch, "steps_in_epoch": steps_in_epoch,
                "step": step, "best": best, "elapsed_s": elapsed + (time.perf_counter() - t_start),
                "last": last, "world_size": ctx.world_size})

    def run_train_mode() -> None:
        model.train()
        if frozen:
            tower.eval()  # a frozen tower stays deterministic (dropout/batch statistics off)

    stepper = Stepper(model, tokenizer, api, step_cfg, cache, trainable, opt, sched,
                      tp.grad_clip if tp.grad_clip > 0 else math.inf, ctx, has_block=bool(rp.block))
    template: dict | None = None  # a batch for ranks with nothing left to validate (FSDP needs every rank)
    t_start = time.perf_counter()
    for epoch in range(start_epoch, tp.epochs):
        if pending_rng is not None and skip_steps == 0:
            _set_rng_state(pending_rng, ctx.device)
            pending_rng = None
        groups = full_groups(data.batches("train", epoch=epoch, rank=ctx.rank, world_size=ctx.world_size,
                                          batch_size=micro, shuffle=True, seed=seed),
                             tp.grad_accum, micro)
        steps_in_epoch = 0
        bar = tqdm(total=steps_per_epoch, desc=f"{run}/{task} epoch {epoch + 1}/{tp.epochs}",
                   disable=not (ctx.is_main and progress), leave=False, dynamic_ncols=True)
        run_train_mode()
        while True:
            group = next(groups, None)
            if not distributed.all_true(group is not None, ctx):
                if pending_rng is not None:  # the state was written after this epoch's last step
                    _set_rng_state(pending_rng, ctx.device)
                    pending_rng = None
                break  # the rank with the fewest full batches ends the epoch for all
            if steps_in_epoch < skip_steps:  # resuming mid-epoch: these steps are in the state already
                steps_in_epoch += 1
                bar.update(1)
                continue
            if pending_rng is not None:
                _set_rng_state(pending_rng, ctx.device)
                pending_rng = None
            template = group[0] if template is None else template
            last = stepper.step(group)
            step += 1
            steps_in_epoch += 1
            if not math.isfinite(last["loss"]):
                raise FloatingPointError(f"{run}/{task}: non-finite training loss at step {step} (epoch {epoch})")
            if live is not None:
                live.step = step
                for k, v in last.items():
                    live.log_metric(f"train/{k}", v)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
            if tp.checkpoint_every_steps and step % tp.checkpoint_every_steps == 0:
                w, o = _full_state(model, opt)
                save_state(epoch, steps_in_epoch, w, o)
            if on_step is not None:
                on_step(step, epoch)
        bar.close()
        skip_steps = 0  # only the epoch a mid-epoch state was written in is partly done
        if steps_in_epoch == 0:
            raise ValueError(f"{run}/{task}: epoch {epoch} had no full batch of {micro} samples on some rank "
                             f"({ctx.world_size} ranks); fewer train samples or shards than ranks?")

        val = validate(model, data, tokenizer, api, step_cfg, ctx, micro * tp.grad_accum, seed, template,
                       cache, has_block=bool(rp.block))
        run_train_mode()
        if not all(math.isfinite(v) for v in val.values()):
            raise FloatingPointError(f"{run}/{task}: non-finite validation losses {val} after epoch {epoch + 1}")
        if live is not None:
            live.step = step
            for k, v in val.items():
                live.log_metric(f"val/{k}", v)
            live.log_metric("epoch", epoch + 1, plot=False)
        score = -float(epoch + 1) if tp.select_on == "last" else val[tp.select_on]
        improved = score < best["value"]
        full_weights, full_optim = _full_state(model, opt)
        if improved:
            best = {"value": score, "epoch": epoch + 1, "step": step, **{f"val_{k}": v for k, v in val.items()}}
            if ctx.is_main:
                _save_best(out_dir, full_weights, params, run, task, seed, model, best, ctx.world_size, fp)
        save_state(epoch + 1, 0, full_weights, full_optim)
        del full_weights, full_optim
        if live is not None:
            live.summary.update({"best_epoch": best["epoch"], f"best_val_{tp.select_on}": best["value"]})
            _results_only(live.summary)
            live.make_summary()

    elapsed += time.perf_counter() - t_start
    summary = {"run": run, "task": task, "seed": seed, "world_size": ctx.world_size, "device": str(ctx.device),
               "steps": step, "epochs": tp.epochs, "steps_per_epoch": steps_per_epoch, "micro_batch": micro,
               "best": best, "select_on": tp.select_on, "train_time_s": round(elapsed, 3),
               "last": last, "fingerprint": fp}
    if cache is not None:
        summary["vision_cache"] = {"samples": len(cache.features), "bytes": cache.nbytes, "hits": cache.hits,
                                   "misses": cache.misses, "loaded": cache.loaded}
    if features_note is not None:
        summary["vision_features"] = features_note
    if live is not None:
        live.summary.update({"world_size": ctx.world_size})  # train_time_s: summary.json / report.json
        _results_only(live.summary)
        live.end()
        ckpt.write_json(live_dir / "summary.json", summary)
    return summary


def _load_shared_features(cache: VisionFeatureCache, model: nn.Module, task: str, shards_root: Path,
                          features_root: Path) -> dict[str, str]:
    """Fill the cache with the features stage's train and val features when they fit this model's tower
    and these shards; what was done, for the summary."""
    from gazevlm import features

    found, why = features.open_shared(model, [(task, "train"), (task, "val")], shards_root=shards_root,
                                      root=features_root)
    if found is None:
        return {"source": "encoded here", "reason": why}
    for split in ("train", "val"):
        cache.load(*found.window_features(task, split))
    return {"source": str(features_root)}


@torch.no_grad()
def validate(model: nn.Module, data: DataSource, tokenizer: Any, api: SimpleNamespace, cfg: StepConfig,
             ctx: distributed.DistContext, batch_size: int, seed: int, template: dict | None,
             cache: VisionFeatureCache | None, has_block: bool) -> dict[str, float]:
    """Mean validation loss/ce/kl over the whole val split (weighted by samples, all ranks)."""
    model.eval()
    # val features are cached too: the val set is the same every epoch (keys are window ids).
    it = iter(data.batches("val", epoch=0, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch_size,
                           shuffle=False, seed=seed))
    sums = torch.zeros(4, dtype=torch.float64)
    while True:
        batch = next(it, None)
        if not distributed.any_true(batch is not None, ctx):
            break
        template = batch if batch is not None else template
        if template is None:
            raise ValueError("validation: a rank has no batch at all to keep FSDP in step")
        loss, ce, kl = forward_losses(model, template, tokenizer, api, cfg, cache)
        if batch is not None:  # a rank that ran out only joins the collective forward, unweighted
            n = len(batch["window_id"])
            sums += torch.tensor([loss.item() * n, ce.item() * n, (kl.item() if kl is not None else 0.0) * n, n],
                                 dtype=torch.float64)
    tot = distributed.all_reduce(sums, ctx)
    if tot[3] == 0:
        raise ValueError("validation split is empty")
    out = {"loss": tot[0].item() / tot[3].item(), "ce": tot[1].item() / tot[3].item()}
    if has_block:
        out["kl"] = tot[2].item() / tot[3].item()
    return out


def _save_best(out_dir: Path, weights: dict, params: Params, run: str, task: str, seed: int, model: nn.Module,
               best: dict, world_size: int, fp: str) -> None:
    digest = ckpt.save_weights(weights, out_dir / ckpt.WEIGHTS_FILE,
                               metadata={"run": run, "task": task, "seed": str(seed)})
    config = {
        "format": ckpt.FORMAT, "run": run, "task": task, "seed": seed,
        "weights_sha256": digest,  # checked on load
        "params": {"model": dataclasses.asdict(params.model), "train": dataclasses.asdict(params.train),
                   "runs": {run: _switches(params, run)}},
        "model_config": json.loads(json.dumps(getattr(model, "config", None), sort_keys=True, default=str)),
        "best": best, "world_size": world_size, "fingerprint": fp,
    }
    ckpt.write_json(out_dir / ckpt.CONFIG_FILE, config)


# --- command line -----------------------------------------------------------------------------------

def _parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gazevlm.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--run", "--run-name", dest="run", required=True,
                    help="a run named under `runs` in params (base, lambda0, gaze)")
    ap.add_argument("--task", required=True, choices=layout.TASKS)
    ap.add_argument("--seed", type=int, default=None, help="one of train.seeds (default: the first)")
    ap.add_argument("--out", default=None, help="checkpoint directory (default: models/<run>/seed<N>/<task>)")
    ap.add_argument("--live-dir", default=None,
                    help="DVCLive directory (default: reports/train/<run>/seed<N>/<task>)")
    ap.add_argument("--shards", default=str(layout.SHARDS_DIR), help="shards root (default: data/shards)")
    ap.add_argument("--features", default=str(layout.FEATURES_DIR),
                    help="the features stage's output, used when it fits (default: data/features)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--resume", default="auto", choices=("auto", "never", "must"))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a params key for this invocation (e.g. --set train.epochs=1)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    params = params_mod.load(args.params)
    overrides = _parse_overrides(args.set)
    if overrides:
        params = params_mod.with_overrides(params, **overrides)
    try:
        check_seed(params, args.seed)  # a usage error, before any process group or data
    except ValueError as err:
        ap.error(f"--seed: {err}")
    summary = train(params, args.run, args.task, seed=args.seed, out_dir=args.out, live_dir=args.live_dir,
                    shards_root=args.shards, features_root=args.features, device=args.device, resume=args.resume,
                    progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary["best"]
        print(f"{args.run}/{args.task} seed {summary['seed']}: {summary['steps']} steps on {summary['world_size']} "
              f"rank(s) in {summary['train_time_s']:.1f} s; best epoch {best['epoch']} "
              f"(val {summary['select_on']} {best['value']:.4f})", flush=True)
        if "vision_features" in summary:
            vf = summary["vision_features"]
            print(f"vision features: {vf['source']}" + (f" ({vf['reason']})" if "reason" in vf else ""), flush=True)
    return 0


# the notebook's entry lives in gazevlm.train_launch (it starts the workers without importing torch)
run = train_launch.run

if __name__ == "__main__":
    sys.exit(main())
