"""Our training loop against a plain loop over open_flamingo's own Flamingo, and with vs without FSDP2.

Side by side in one process, interleaved (bench.interleaved: every round alternates the order):
- ours: gazevlm.train.step's optimizer step (Stepper) as the loop runs it at world size 1 (the plain module,
  the vision-feature cache, each target tokenised once, clipping, fused AdamW, the schedule) and the
  loop's DVCLive logging of every step, for the base and the gaze run;
- ours FSDP2-wrapped at world size 1 (a one-process group, the units of distributed.shard_model): what
  the loop did before it trained one process without wrapping;
- ours with the frozen tower in the step (no feature cache), like for like with the plain loop;
- plain: open_flamingo's Flamingo class itself (not our subclass) with the tiny preset's vision
  encoder, LM, Perceiver and cross-attention sizes, the same batch of 32 windows and targets. Its
  stock vision path takes one frame per media item, so a window's 5 frames are 5 media items with one
  <image> each; its frozen encoder runs in every step under no_grad (open_flamingo's own code); loss =
  the LM's cross-entropy; backward, clipping, fused AdamW. The targets are tokenised once, up front.

    python -m bench.bench_loop [--repeats 25] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench import DEFAULT_THREADS, Figure, Summary, fmt_spread, paired_ratio, quiet, set_threads
from bench.bench_model import Setup, Trainer, clock_for, make_batch, make_setup, process_group, timed
from gazevlm import params as params_mod
from gazevlm.models import presets
from gazevlm.models.compat import adapt_language_model
from gazevlm.models.text import TrainEncoder
from gazevlm.models.tokenizer import IMAGE, special_token_ids
from gazevlm.train.live import close_live_repos

MODULE = "python -m bench.bench_loop"
IGNORE_INDEX = -100


class PlainFlamingo:
    """A plain training loop over open_flamingo's Flamingo (see the module docstring)."""

    def __init__(self, setup: Setup, batch: dict):
        from open_flamingo.src.flamingo import Flamingo
        from open_flamingo.src.helpers import GatedCrossAttentionBlock, PerceiverResampler

        preset = presets.get_preset("tiny", "openflamingo")
        tok = setup.tokenizer
        ids = special_token_ids(tok)
        torch.manual_seed(int(setup.params.train.seeds[0]))
        vision = presets.build_vision_encoder(preset)
        lm = presets.build_language_model(
            preset, len(tok), {k: ids[k] for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
        )
        adapt_language_model(lm)  # open_flamingo 2.0.1 on transformers 5 (gazevlm.models.compat)
        vis_dim = vision.visual.transformer.width
        model = Flamingo(
            vision,
            lm,
            ids["eoc_token_id"],
            ids["media_token_id"],
            vis_dim,
            cross_attn_every_n_layers=preset.xattn_every,
        )
        # the tiny preset's sizes (open_flamingo's defaults are 6 x 8 x 64 for the Perceiver, 8 x 64 heads)
        model.perceiver = PerceiverResampler(dim=vis_dim, max_num_frames=preset.max_frames, **preset.perceiver)
        lm.gated_cross_attn_layers = torch.nn.ModuleList(
            GatedCrossAttentionBlock(dim=model.lang_dim, dim_visual=vis_dim, **preset.xattn)
            if layer is not None
            else None
            for layer in lm.gated_cross_attn_layers
        )
        lm.init_flamingo_layers(gradient_checkpointing=False)
        model.requires_grad_(True)
        model.vision_encoder.requires_grad_(False)
        self.model = model.train()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        tp = setup.params.train
        self.opt = torch.optim.AdamW(self.trainable, lr=tp.lr, weight_decay=tp.weight_decay, fused=True)
        self.clip = tp.grad_clip if tp.grad_clip > 0 else float("inf")
        self.inputs = self._inputs(setup, batch)

    @staticmethod
    def _inputs(setup: Setup, batch: dict) -> dict[str, torch.Tensor]:
        """The pixels and the tiny preset's normalisation; T <image> tokens, then the task prompt, the target
        and <|endofchunk|> (labels on the target only), tokenised once."""
        b, t = batch["pixels"].shape[:2]
        enc = TrainEncoder(setup.tokenizer, "future")(list(batch["text"]), t)  # starts with one <image>
        extra = t - 1
        image = setup.tokenizer.convert_tokens_to_ids(IMAGE)
        preset = presets.get_preset("tiny", "openflamingo")
        return {
            "pixels": batch["pixels"],  # normalised in the step, as a loader's transform would every epoch
            "mean": torch.tensor(preset.pixel_mean).view(1, 1, 3, 1, 1),
            "std": torch.tensor(preset.pixel_std).view(1, 1, 3, 1, 1),
            "lang_x": torch.cat([torch.full((b, extra), image), enc["input_ids"]], dim=1),
            "attention_mask": torch.cat([torch.ones(b, extra, dtype=torch.long), enc["attention_mask"]], dim=1),
            "labels": torch.cat([torch.full((b, extra), IGNORE_INDEX), enc["labels"]], dim=1),
        }

    def step(self) -> float:
        x = self.inputs
        vision_x = ((x["pixels"] - x["mean"]) / x["std"]).unsqueeze(2)  # (B, T, F=1, 3, H, W)
        loss = self.model(vision_x, x["lang_x"], attention_mask=x["attention_mask"], labels=x["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def _variants(setup: Setup, ctx, batch: dict, live_root: Path) -> dict[str, Any]:
    """name -> a zero-argument step."""
    steps: dict[str, Any] = {}
    for run in ("base", "gaze"):
        ours = Trainer(setup, run, ctx, live_dir=live_root / run)
        wrapped = Trainer(setup, run, ctx, fsdp=True, live_dir=live_root / f"{run}-fsdp")
        steps[f"ours {run}"] = lambda t=ours: t.step(batch)
        steps[f"ours {run}, FSDP2"] = lambda t=wrapped: t.step(batch)
    uncached = Trainer(setup, "base", ctx, cache=False, live_dir=live_root / "base-uncached")
    steps["ours base, tower in the step"] = lambda: uncached.step(batch)
    plain = PlainFlamingo(setup, batch)
    steps["plain open_flamingo"] = plain.step
    return steps


def run(params_file: str, repeats: int, threads: int, warmup: int = 2, frames: int = 5) -> list[Figure]:
    """The loop figures (section "loop"), measured interleaved in one timing."""
    set_threads(threads)
    params = params_mod.load(params_file)
    setup = make_setup("tiny", params, frames, params.train.batch_size)
    clock = clock_for(threads)
    batch = make_batch(setup)
    try:
        with process_group() as ctx, tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
            res = timed(_variants(setup, ctx, batch, Path(tmp)), repeats, warmup, clock)
            close_live_repos()
    finally:
        setup.close()
    return figures(
        res, setup.batch_size, frames, f"{MODULE} --params {params_file} --repeats {repeats} --threads {threads}"
    )


def figures(res: dict[str, Any], batch: int, frames: int, command: str) -> list[Figure]:
    t = res["times"]
    clock = "CPU" if res["clock"] == "cpu" else "wall"
    sps = {k: Summary.of([batch / x for x in v]) for k, v in t.items()}
    ms = {k: 1e3 * Summary.of(v).median for k, v in t.items()}
    shape = f"tiny, batch {batch}, {frames} frames"
    out = []
    for run in ("base", "gaze"):
        s = sps[f"ours {run}"]
        out.append(
            Figure(
                "loop",
                f"training samples/s, our loop at world size 1 ({run} run; {shape})",
                s.median,
                f"samples/s ({clock})",
                fmt_spread(s, 1),
                "",
                None,
                command,
                f"{ms[f'ours {run}']:.1f} ms per step ({clock} time): train.Stepper on the plain module, "
                "cached features, DVCLive logging",
                {"step_s": t[f"ours {run}"]},
            )
        )
    s = sps["plain open_flamingo"]
    out.append(
        Figure(
            "loop",
            f"training samples/s, plain loop over open_flamingo's Flamingo ({shape})",
            s.median,
            f"samples/s ({clock})",
            fmt_spread(s, 1),
            "",
            None,
            command,
            f"{ms['plain open_flamingo']:.1f} ms per step; the same tiny encoder, LM, Perceiver and "
            "cross-attention; 5 frames as 5 one-frame media; frozen encoder in every step",
            {"step_s": t["plain open_flamingo"]},
        )
    )
    for name, other in (("ours base", "cached features"), ("ours base, tower in the step", "tower in the step")):
        r = paired_ratio(t["plain open_flamingo"], t[name])
        out.append(
            Figure(
                "loop",
                f"our loop / plain open_flamingo loop, samples/s (base run, {other})",
                r.median,
                "x",
                fmt_spread(r),
                "",
                None,
                command,
                f"ours {ms[name]:.1f} ms vs plain {ms['plain open_flamingo']:.1f} ms per step; round by "
                "round ratio of the plain step's time to ours",
            )
        )
    for run in ("base", "gaze"):
        r = paired_ratio(t[f"ours {run}, FSDP2"], t[f"ours {run}"])
        out.append(
            Figure(
                "loop",
                f"our loop at world size 1, FSDP2-wrapped / plain module, step time ({run} run)",
                r.median,
                "x",
                fmt_spread(r),
                "",
                None,
                command,
                f"wrapped {ms[f'ours {run}, FSDP2']:.1f} ms vs plain module {ms[f'ours {run}']:.1f} ms per "
                "step (the trainer wraps only with 2+ ranks)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args(argv)
    quiet()
    for f in run(args.params, args.repeats, args.threads):
        print(f"{f.name}: {f.value:.3f} {f.unit} ({f.spread})  {f.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
