"""One optimizer step of the training loop: the forward pass and its losses, gradient accumulation,
clipping, AdamW and the learning-rate schedule (the benchmark times this very code)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from gazevlm import distributed
from gazevlm.train.data import VisionFeatureCache, batch_frames, batch_pixels, prompt_inputs
from gazevlm.train.live import STEP_TIME


def model_api() -> SimpleNamespace:
    """The functions of gazevlm.models / gazevlm.losses the loop uses, imported when a run starts."""
    from gazevlm import losses, models
    from gazevlm.models import text, tokenizer

    # tiny presets: a word tokenizer over the train targets; real presets: the LM's own
    return SimpleNamespace(
        build_model=models.build_model,
        build_tokenizer=models.build_tokenizer,
        encode_train=text.encode_train,
        train_encoder=text.TrainEncoder,
        gaze_kl=losses.gaze_kl,
        total_loss=losses.total_loss,
        vocab_fingerprint=tokenizer.vocabulary_fingerprint,
    )


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
        raise ValueError(
            f"params.train.batch_size={global_batch} is not divisible by world_size ({world_size}) "
            f"x grad_accum ({grad_accum})"
        )
    return global_batch // (world_size * grad_accum)


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


def forward_losses(
    model: nn.Module,
    batch: dict,
    tokenizer: Any,
    api: SimpleNamespace,
    cfg: StepConfig,
    cache: VisionFeatureCache | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss, ce, kl or None) of one micro-batch; kl is None when the model has no gaze block."""
    n_frames = batch_frames(batch)
    extra = prompt_inputs(batch)  # gaze-input baselines only: each window's gaze points in its prompt
    if cfg.encode is not None:
        enc = cfg.encode(list(batch["text"]), n_frames, **extra)
    else:
        enc = api.encode_train(tokenizer, list(batch["text"]), cfg.task, n_frames, **extra)
    enc = {k: v.to(cfg.device) for k, v in enc.items()}
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if cfg.device.type == "cuda" else contextlib.nullcontext()
    )  # bf16 needs no loss scaler; CPU stays float32
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
        kl = api.gaze_kl(
            attention.float(),
            batch["gaze_target"].to(cfg.device),
            batch["gaze_valid"].to(cfg.device),
            direction=cfg.kl_direction,
            reduction=cfg.kl_reduction,
            eps=cfg.kl_eps,
        )
    loss = api.total_loss(ce, kl, cfg.lam)
    return loss, ce, kl


@dataclass
class Stepper:
    """One optimizer step: a group of micro-batches with gradient accumulation (FSDP's gradient sync on
    the last one only), global-norm clipping, AdamW and the schedule."""

    model: nn.Module
    tokenizer: Any
    api: SimpleNamespace
    cfg: StepConfig
    cache: VisionFeatureCache | None
    trainable: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    grad_clip: float  # math.inf: no clipping (the norm is still measured)
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
            sums += torch.tensor(
                [loss.item(), ce.item(), kl.item() if kl is not None else 0.0, 1.0], dtype=torch.float64
            )
        # clip_grad_norm_ on DTensor gradients reduces the shard norms over the mesh: the global norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        tot = distributed.all_reduce(sums, self.ctx)
        n = tot[3].item()
        last = {
            "loss": tot[0].item() / n,
            "ce": tot[1].item() / n,
            "lr": lr,
            "grad_norm": grad_norm,
            STEP_TIME: time.perf_counter() - t0,
        }
        if self.has_block:
            last["kl"] = tot[2].item() / n
        return last
