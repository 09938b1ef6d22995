"""The training loop of one (run, task, seed) on every rank of the process group: a `Trainer` with
named steps (setup, resume, train_epoch, validate, save) over one `TrainState`.

FSDP2 over the ranks when there are 2 or more (one process trains the plain module), the optimizer
built after sharding, gradient accumulation with gradient sync on the last micro-batch only,
global-norm clipping on the sharded gradients, AdamW with warmup and a constant or cosine schedule,
bf16 autocast on GPU only. Loss = CE + lambda * gaze KL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

from gazevlm import allocator, distributed, layout
from gazevlm import checkpoint as ckpt
from gazevlm import params as params_mod
from gazevlm.gaze_inputs import GazeInputs
from gazevlm.params import Params
from gazevlm.train import live as live_mod
from gazevlm.train.data import DataSource, MemorySource, ShardSource, VisionFeatureCache, full_groups
from gazevlm.train.launch import check_seed, report_dir
from gazevlm.train.state import (
    TrainState,
    fingerprint,
    full_state,
    read_train_state,
    rng_state,
    save_best,
    seed_all,
    set_rng_state,
)
from gazevlm.train.step import (
    StepConfig,
    Stepper,
    WarmupSchedule,
    forward_losses,
    micro_batch_size,
    model_api,
    vision_tower,
)


def train(
    params: Params,
    run: str,
    task: str,
    *,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    live_dir: str | Path | None = None,
    shards_root: str | Path = layout.SHARDS_DIR,
    features_root: str | Path = layout.FEATURES_DIR,
    data: DataSource | None = None,
    device: str = "auto",
    resume: str = "auto",
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> dict:
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
    if ctx.device.type == "cpu":
        allocator.keep_freed_memory()
        if params.train.cpu_threads > 0:
            torch.set_num_threads(params.train.cpu_threads)
    try:
        inputs = GazeInputs.of_run(params.run(run))  # gaze as a model input: the gaze-input baselines only
        # the features stage encoded the shards' own frames: a gaze_overlay run trains on other pixels
        shared = (Path(shards_root), Path(features_root)) if data is None and not inputs.overlay else None
        if data is None and params.train.in_memory and ctx.world_size == 1:
            data = MemorySource(task, Path(shards_root), inputs=inputs)
        elif data is None:
            data = ShardSource(
                task, Path(shards_root), params.train.shuffle_buffer, params.train.num_workers, inputs=inputs
            )
        trainer = Trainer(
            ctx,
            params,
            run,
            task,
            seed,
            out_dir=Path(out_dir) if out_dir else layout.run_dir(run, task, seed),
            live_dir=Path(live_dir) if live_dir else report_dir(run, task, seed),
            data=data,
            shared=shared,
            resume=resume,
            progress=progress,
            on_step=on_step,
        )
        return trainer.fit()
    finally:
        live_mod.close_live_repos()
        torch.set_num_threads(threads)
        distributed.shutdown(ctx)


def _check_params(params: Params, run: str, task: str) -> None:
    # types, ranges, choices and run switches: gazevlm.params, the one place (also for Params built in code)
    params_mod.validate(params)
    params.run(run)
    if task not in layout.TASKS:
        raise ValueError(f"unknown task {task!r} (have {layout.TASKS})")


class Trainer:
    """One run's loop; `fit` calls the steps in order: setup, resume, prepare_outputs, then per epoch
    train_epoch, validate and save_epoch, then finish."""

    def __init__(
        self,
        ctx: distributed.DistContext,
        params: Params,
        run: str,
        task: str,
        seed: int,
        *,
        out_dir: Path,
        live_dir: Path,
        data: DataSource,
        shared: tuple[Path, Path] | None,
        resume: str,
        progress: bool,
        on_step: Callable[[int, int], None] | None,
    ):
        self.ctx, self.params, self.run, self.task, self.seed = ctx, params, run, task, seed
        self.out_dir, self.live_dir, self.data, self.shared = out_dir, live_dir, data, shared
        self.resume_mode, self.progress, self.on_step = resume, progress, on_step
        self.api = model_api()
        self.tp, self.rp = params.train, params.run(run)
        self.micro = micro_batch_size(self.tp.batch_size, ctx.world_size, self.tp.grad_accum)
        self.state_root = out_dir / ckpt.STATE_DIR
        self.state = TrainState()
        self.live = None
        self.template: dict | None = None  # a batch for ranks with nothing left to validate (FSDP needs every rank)
        self.features_note: dict[str, str] | None = None
        self.t_start = time.perf_counter()

    def fit(self) -> dict:
        self.setup()
        self.resume()
        self.prepare_outputs()
        self.t_start = time.perf_counter()
        for epoch in range(self.state.epoch, self.tp.epochs):
            self.train_epoch(epoch)
            self.save_epoch(epoch, self.validate(epoch) if self.validates(epoch) else None)
        return self.finish()

    def validates(self, epoch: int) -> bool:
        """Whether the val split is scored after `epoch` (0-based): every train.validate_every-th and the last."""
        return (epoch + 1) % self.tp.validate_every == 0 or epoch + 1 == self.tp.epochs

    # --- setup ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Tokenizer, model, optimizer, schedule and the step: the same on every rank."""
        self._build_tokenizer()
        self._build_model()
        tp = self.tp
        # AFTER sharding: the optimizer must hold the sharded (DTensor) parameters.
        # fused: one kernel over the local shards (the per-tensor loop is 3x slower on DTensors on CPU)
        self.opt = torch.optim.AdamW(self.trainable, lr=tp.lr, weight_decay=tp.weight_decay, fused=True)
        total_steps = self.steps_per_epoch * tp.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, WarmupSchedule(tp.warmup_steps, total_steps, tp.schedule)
        )
        self.cache = (
            VisionFeatureCache(self.model.encode_vision) if (tp.cache_vision_features and self.frozen) else None
        )
        self.step_cfg = StepConfig(
            task=self.task,
            lam=float(self.rp.lam),
            kl_direction=tp.kl_direction,
            kl_reduction=tp.kl_reduction,
            kl_eps=tp.kl_eps,
            device=self.ctx.device,
            encode=self.api.train_encoder(self.tokenizer, self.task),
        )
        self.stepper = Stepper(
            self.model,
            self.tokenizer,
            self.api,
            self.step_cfg,
            self.cache,
            self.trainable,
            self.opt,
            self.sched,
            tp.grad_clip if tp.grad_clip > 0 else math.inf,
            self.ctx,
            has_block=bool(self.rp.block),
        )

    def _build_tokenizer(self) -> None:
        # the same deterministic build from the train targets on every rank and for every run
        texts = self.data.train_texts()
        if not texts:
            raise ValueError(f"{self.task}: the train split has no samples")
        self.tokenizer = self.api.build_tokenizer(self.params, texts)
        self.fp = fingerprint(self.params, self.run, self.task, self.api.vocab_fingerprint(self.tokenizer), self.seed)
        n_train = self.data.num_samples("train")
        self.steps_per_epoch = n_train // self.tp.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.task}: {n_train} train samples, fewer than one global batch ({self.tp.batch_size})"
            )

    def _build_model(self) -> None:
        # identical initialisation on every rank (same seed), vision tower frozen and kept whole
        seed_all(self.seed)
        self.model = model = self.api.build_model(self.params, self.run, self.tokenizer)
        self.tower = vision_tower(model)
        self.frozen = bool(self.tp.freeze_vision and self.tower is not None)
        if self.tp.freeze_vision and self.tower is None:
            raise ValueError("params.train.freeze_vision: the model has no `vision_encoder` module to freeze")
        if self.frozen:
            self.tower.requires_grad_(False)
        model.to(self.ctx.device)
        if self.ctx.world_size > 1:  # FSDP2 shards over the ranks; one process trains the plain module (no hooks)
            distributed.shard_model(model, self.ctx, ignored=[self.tower] if self.frozen else [])
        self.trainable = [p for p in model.trainable_parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")

    # --- resume --------------------------------------------------------------------------------------

    def resume(self) -> None:
        """Continue from the latest resumable state (per `resume`) or start afresh; seed every rank."""
        ctx, st = self.ctx, self.state
        meta, weights, optim_state = read_train_state(
            ctx, self.state_root, self.out_dir, self.model, self.fp, self.resume_mode
        )
        self.resumed = meta["found"]
        if self.resumed:
            load_opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
            distributed.load_full_state_dict(self.model, weights, ctx)
            set_optimizer_state_dict(self.model, self.opt, optim_state if ctx.is_main else {}, options=load_opts)
            self.sched.load_state_dict(meta["scheduler"])
            st.restore(meta, ctx.rank, ctx.world_size)
            if ctx.is_main:
                st.elapsed = live_mod.wall_time_before(self.live_dir, Path(meta["dir"]).name)
            if st.pending_rng is None:  # another number of ranks, at an epoch's end: fresh streams
                seed_all(self.seed + 7919 * (st.step + 1) + ctx.rank)
        else:
            seed_all(self.seed + 7919 + ctx.rank)  # per-rank dropout streams, fixed by the seed

    def _restore_rng(self) -> None:
        if self.state.pending_rng is not None:
            set_rng_state(self.state.pending_rng, self.ctx.device)
            self.state.pending_rng = None

    def prepare_outputs(self) -> None:
        """Vision features (after a resume: from the tower the run trains with), the tokenizer next to the
        checkpoint, the DVCLive logger (rank 0)."""
        ctx = self.ctx
        if self.cache is not None:
            self.model.eval()
            if self.shared is not None:
                self.features_note = _load_shared_features(self.cache, self.model, self.task, *self.shared)
            if hasattr(self.data, "warm"):
                self.data.warm(self.cache, ctx.device)
        if ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.save_tokenizer(self.tokenizer, self.out_dir / ckpt.TOKENIZER_DIR)
            if self.resumed:
                live_mod.truncate_live_logs(self.live_dir, self.state.step)
            self.live = live_mod.open_live(self.live_dir, resume=self.resumed)
            self.live.log_params(
                {
                    "run": self.run,
                    "task": self.task,
                    "world_size": ctx.world_size,
                    "seed": self.seed,
                    "micro_batch": self.micro,
                    "steps_per_epoch": self.steps_per_epoch,
                }
            )

    # --- one epoch -----------------------------------------------------------------------------------

    def _train_mode(self) -> None:
        self.model.train()
        if self.frozen:
            self.tower.eval()  # a frozen tower stays deterministic (dropout/batch statistics off)

    def train_epoch(self, epoch: int) -> None:
        """The epoch's optimizer steps (those already in a mid-epoch state skipped)."""
        ctx, st, tp = self.ctx, self.state, self.tp
        if st.skip_steps == 0:
            self._restore_rng()
        groups = full_groups(
            self.data.batches(
                "train",
                epoch=epoch,
                rank=ctx.rank,
                world_size=ctx.world_size,
                batch_size=self.micro,
                shuffle=True,
                seed=self.seed,
            ),
            tp.grad_accum,
            self.micro,
        )
        steps_in_epoch = 0
        bar = _progress_bar(
            self.steps_per_epoch, f"{self.run}/{self.task} epoch {epoch + 1}/{tp.epochs}", ctx.is_main and self.progress
        )
        self._train_mode()
        while True:
            group = next(groups, None)
            if not distributed.all_true(group is not None, ctx):
                self._restore_rng()  # the state was written after this epoch's last step
                break  # the rank with the fewest full batches ends the epoch for all
            steps_in_epoch += 1
            if steps_in_epoch <= st.skip_steps:  # resuming mid-epoch: these steps are in the state already
                bar.update(1)
                continue
            self._restore_rng()
            self._train_step(group, epoch, steps_in_epoch)
            bar.update(1)
            bar.set_postfix(loss=f"{st.last['loss']:.4f}", refresh=False)
        bar.close()
        st.skip_steps = 0  # only the epoch a mid-epoch state was written in is partly done
        if steps_in_epoch == 0:
            raise ValueError(
                f"{self.run}/{self.task}: epoch {epoch} had no full batch of {self.micro} samples on "
                f"some rank ({ctx.world_size} ranks); fewer train samples or shards than ranks?"
            )

    def _train_step(self, group: list[dict], epoch: int, steps_in_epoch: int) -> None:
        st = self.state
        self.template = group[0] if self.template is None else self.template
        st.last = self.stepper.step(group)
        st.step += 1
        if not math.isfinite(st.last["loss"]):
            raise FloatingPointError(
                f"{self.run}/{self.task}: non-finite training loss at step {st.step} (epoch {epoch})"
            )
        live_mod.log_metrics(self.live, st.step, "train", st.last)
        if self.tp.checkpoint_every_steps and st.step % self.tp.checkpoint_every_steps == 0:
            self.save(epoch, steps_in_epoch, *full_state(self.model, self.opt))
        if self.on_step is not None:
            self.on_step(st.step, epoch)

    def validate(self, epoch: int) -> dict[str, float]:
        """The validation losses after `epoch`, logged."""
        val = validation_losses(
            self.model,
            self.data,
            self.tokenizer,
            self.api,
            self.step_cfg,
            self.ctx,
            self.micro * self.tp.grad_accum,
            self.seed,
            self.template,
            self.cache,
            has_block=bool(self.rp.block),
        )
        self._train_mode()
        if not all(math.isfinite(v) for v in val.values()):
            raise FloatingPointError(
                f"{self.run}/{self.task}: non-finite validation losses {val} after epoch {epoch + 1}"
            )
        live_mod.log_metrics(self.live, self.state.step, "val", val)
        return val

    # --- save ----------------------------------------------------------------------------------------

    def save(self, epoch: int, steps_in_epoch: int, full_weights: dict, full_optim: dict) -> None:
        """The resumable state (rank 0 writes, every rank gives its random streams)."""
        ctx, st = self.ctx, self.state
        rngs = distributed.gather_objects(rng_state(ctx.device), ctx)
        if ctx.is_main:
            # an epoch-end state may follow a mid-epoch one at the same step: distinct names
            name = f"step-{st.step:09d}" + ("" if steps_in_epoch else "-end")
            ckpt.save_train_state(
                self.state_root,
                name,
                full_weights,
                {
                    "format": ckpt.FORMAT,
                    "fingerprint": self.fp,
                    "optimizer": full_optim,
                    "scheduler": self.sched.state_dict(),
                    "rng": rngs,
                    "epoch": epoch,
                    "steps_in_epoch": steps_in_epoch,
                    "step": st.step,
                    "best": st.best,
                    "last": live_mod.without_wall_clock(st.last),
                    "world_size": ctx.world_size,
                },
            )
            live_mod.record_wall_time(self.live_dir, name, st.elapsed + (time.perf_counter() - self.t_start))

    def save_epoch(self, epoch: int, val: dict[str, float] | None) -> None:
        """Keep the epoch as the best one if it is (by train.select_on, among the validated epochs: `val`
        None when this one was not), then its end-of-epoch state."""
        st, tp = self.state, self.tp
        last = tp.select_on == "last"
        score = -float(epoch + 1) if last else (val[tp.select_on] if val is not None else math.inf)
        full_weights, full_optim = full_state(self.model, self.opt)
        if score < st.best["value"]:
            st.best = {
                "value": score,
                "epoch": epoch + 1,
                "step": st.step,
                **{f"val_{k}": v for k, v in (val or {}).items()},
            }
            # by `last`, every epoch is the best so far: only the final one's weights are worth writing
            if self.ctx.is_main and (not last or epoch + 1 == tp.epochs):
                save_best(
                    self.out_dir,
                    full_weights,
                    self.params,
                    self.run,
                    self.task,
                    self.seed,
                    self.model,
                    st.best,
                    self.ctx.world_size,
                    self.fp,
                )
        self.save(epoch + 1, 0, full_weights, full_optim)
        del full_weights, full_optim
        if self.live is not None:
            self.live.log_metric("epoch", epoch + 1, plot=False)
            self.live.summary.update({"best_epoch": st.best["epoch"], f"best_val_{tp.select_on}": st.best["value"]})
            live_mod.results_only(self.live.summary)
            self.live.make_summary()

    def finish(self) -> dict:
        """The run's summary (also reports/.../summary.json on rank 0); closes the logger."""
        ctx, st, tp, cache = self.ctx, self.state, self.tp, self.cache
        st.elapsed += time.perf_counter() - self.t_start
        summary = {
            "run": self.run,
            "task": self.task,
            "seed": self.seed,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "steps": st.step,
            "epochs": tp.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "micro_batch": self.micro,
            "best": st.best,
            "select_on": tp.select_on,
            "train_time_s": round(st.elapsed, 3),
            "last": st.last,
            "fingerprint": self.fp,
        }
        if cache is not None:
            summary["vision_cache"] = {
                "samples": len(cache.features),
                "bytes": cache.nbytes,
                "hits": cache.hits,
                "misses": cache.misses,
                "loaded": cache.loaded,
            }
        if self.features_note is not None:
            summary["vision_features"] = self.features_note
        if self.live is not None:
            self.live.summary.update({"world_size": ctx.world_size})  # train_time_s: summary.json / report.json
            live_mod.results_only(self.live.summary)
            self.live.end()
            ckpt.write_json(self.live_dir / "summary.json", summary)
        return summary


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _load_shared_features(
    cache: VisionFeatureCache, model: nn.Module, task: str, shards_root: Path, features_root: Path
) -> dict[str, str]:
    """Fill the cache with the features stage's train and val features when they fit this model's tower
    and these shards; what was done, for the summary."""
    from gazevlm import features

    found, why = features.open_shared(
        model, [(task, "train"), (task, "val")], shards_root=shards_root, root=features_root
    )
    if found is None:
        return {"source": "encoded here", "reason": why}
    for split in ("train", "val"):
        cache.load(*found.window_features(task, split))
    return {"source": str(features_root)}


@torch.no_grad()
def validation_losses(
    model: nn.Module,
    data: DataSource,
    tokenizer: Any,
    api: Any,
    cfg: StepConfig,
    ctx: distributed.DistContext,
    batch_size: int,
    seed: int,
    template: dict | None,
    cache: VisionFeatureCache | None,
    has_block: bool,
) -> dict[str, float]:
    """Mean validation loss/ce/kl over the whole val split (weighted by samples, all ranks)."""
    model.eval()
    # val features are cached too: the val set is the same every epoch (keys are window ids).
    it = iter(
        data.batches(
            "val", epoch=0, rank=ctx.rank, world_size=ctx.world_size, batch_size=batch_size, shuffle=False, seed=seed
        )
    )
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
            sums += torch.tensor(
                [loss.item() * n, ce.item() * n, (kl.item() if kl is not None else 0.0) * n, n], dtype=torch.float64
            )
    tot = distributed.all_reduce(sums, ctx)
    if tot[3] == 0:
        raise ValueError("validation split is empty")
    out = {"loss": tot[0].item() / tot[3].item(), "ce": tot[1].item() / tot[3].item()}
    if has_block:
        out["kl"] = tot[2].item() / tot[3].item()
    return out
