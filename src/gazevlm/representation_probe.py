"""Where a trained VLM loses what gaze taught its block: linear probes of its inner representations.

The world ceiling (gazevlm.ceiling) says how much of a task's target the frames carry with and without
the gaze loss. This asks the trained models themselves: a linear probe (train split -> held-out split,
validation by default) names the first object of each window's reference (colour x kind, as the
ceiling's label) from
    block:            the gaze block's token of the last observed frame (runs with a block),
    resampler:        everything the LM's cross-attention reads (the Perceiver's latents, flattened),
    resampler+block:  both side by side.
If the gaze run's block token names the object better than lambda0's while its resampler output does
not beat base's, the gain is lost between the block and the LM; if the resampler output carries it and
the generated text does not, the LM loses it. The gaze block's last-frame top-3 overlap with held-out
gaze says whether the attention learned the gaze at all. Gaze is never an input: it is only compared
with the attention. After `make repro`, `make probe-representations`:

    python -m gazevlm.representation_probe --task future --runs base gaze --out reports/representation_probe
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from gazevlm import ceiling, layout

REPRESENTATIONS = ("block", "resampler", "resampler+block")


@torch.no_grad()
def representations(model: nn.Module, features: torch.Tensor, chunk: int = 64) -> dict[str, torch.Tensor]:
    """model: a trained GazeVLM of a Perceiver backbone; features (N, T, P, D) its frozen encoder's tokens ->
    {name: (N, dim)} for the names of REPRESENTATIONS that exist in this model."""
    backbone = model.backbone
    if not isinstance(getattr(backbone, "perceiver", None), nn.Module):
        raise ValueError(
            f"representation probe: backbone {model.config.get('backbone')!r} has no resampler between the block "
            "and the LM (the Flamingo backbones have)"
        )
    blocks, resampled = [], []
    for i in range(0, len(features), chunk):
        x = features[i : i + chunk]
        p = x.shape[2]
        if backbone.gaze_block is not None:
            out = backbone.gaze_block(x)
            if out.tokens is not None:  # "pooled_lm"
                blocks.append(out.tokens[:, -1])
            elif out.features.shape[2] > p:  # "pooled", "attended": the token after the frame's patches
                blocks.append(out.features[:, -1, p])
            x = out.features  # what the resampler reads (adapted patches, + the token when pooled)
        latents = backbone.perceiver(x.unsqueeze(1))  # (n, 1, latents, D): one media item per window
        if blocks and out.tokens is not None:  # "pooled_lm": the tokens join the latents on the LM's side
            latents = torch.cat([latents, out.tokens.unsqueeze(1)], dim=2)
        resampled.append(latents.flatten(1))
    reps = {"resampler": torch.cat(resampled).float()}
    if blocks:
        reps["block"] = torch.cat(blocks).float()
        reps["resampler+block"] = torch.cat([reps["resampler"], reps["block"]], dim=1)
    return reps


def linear_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    seed: int = 0,
    steps: int = 600,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
) -> torch.Tensor:
    """Multinomial logistic regression on standardised inputs (full batch AdamW); windows whose label is -1
    (the reference names no object) neither train nor score. Returns the hits (0/1) of the scored test rows."""
    keep = y_train >= 0
    x_train, y_train = x_train[keep], y_train[keep]
    if not len(y_train):
        raise ValueError("representation probe: no train window names an object")
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    torch.manual_seed(seed)
    head = nn.Linear(x_train.shape[1], ceiling.N_CLASSES)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    z = (x_train - mean) / std
    with torch.enable_grad():
        for _ in range(steps):
            loss = nn.functional.cross_entropy(head(z), y_train)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    scored = y_test >= 0
    with torch.no_grad():
        pred = head((x_test[scored] - mean) / std).argmax(-1)
    return (pred == y_test[scored]).int()


def block_overlap(model: nn.Module, split: ceiling.Split, chunk: int = 64) -> float:
    """The gaze block's last-frame top-3 overlap with the held-out gaze (nan without a block)."""
    block = model.backbone.gaze_block
    if block is None:
        return float("nan")
    with torch.no_grad():
        attention = torch.cat(
            [block(split.features[i : i + chunk]).attention for i in range(0, len(split.label), chunk)]
        )
    return ceiling._top3_overlap(attention, split.target, split.valid)


def _encoded(model: nn.Module, split: ceiling.Split, chunk: int = 64) -> ceiling.Split:
    """split with the model's own frozen encoder tokens (what its block and resampler read)."""
    with torch.no_grad():
        feats = [
            model.encode_vision(split.frames[i : i + chunk].float() / 255.0).float()
            for i in range(0, len(split.label), chunk)
        ]
    return replace(split, features=torch.cat(feats))


def measure(
    task: str,
    runs: Sequence[str],
    seeds: Sequence[int],
    *,
    held_out: str = "val",
    shards: str | Path = layout.SHARDS_DIR,
    models_dir: str | Path = layout.MODELS_DIR,
) -> tuple[list[dict], list[str]]:
    """Every (run, seed, representation) probed; the splits are loaded once and encoded once by the first
    model's frozen encoder, which must be every model's. Returns the records (with per-window hits) and
    the video of each scored held-out window."""
    from gazevlm.features import encoder_fingerprint
    from gazevlm.trained import load_model

    train, test = ceiling.load_split(task, "train", shards), ceiling.load_split(task, held_out, shards)
    encoder, records = None, []
    for run in runs:
        for seed in seeds:
            path = Path(models_dir) / run / f"seed{seed}" / task
            model = load_model(path).model
            if encoder is None:
                encoder, train, test = encoder_fingerprint(model), _encoded(model, train), _encoded(model, test)
            elif encoder_fingerprint(model) != encoder:
                raise ValueError(f"{path}: its vision encoder differs from {runs[0]} seed {seeds[0]}'s (trained too?)")
            reps_train, reps_test = representations(model, train.features), representations(model, test.features)
            overlap = block_overlap(model, test)
            for name in REPRESENTATIONS:
                if name not in reps_train:
                    continue
                hits = linear_probe(reps_train[name], train.label, reps_test[name], test.label, seed=seed)
                records.append(
                    {
                        "task": task,
                        "run": run,
                        "seed": seed,
                        "representation": name,
                        "object_accuracy": float(hits.float().mean()),
                        "block_top3_overlap": overlap,
                        "hits": hits.tolist(),
                    }
                )
    return records, [u for u, label in zip(test.uid, test.label.tolist(), strict=True) if label >= 0]


def summarise(records: Sequence[dict], uids: Sequence[str]) -> dict[str, list[dict]]:
    """Per (run, representation) the seeds' probe accuracy; each later run vs the first on the same
    representation and windows (seed mean per window), with a video-level interval and paired p."""
    from dataclasses import asdict

    from gazevlm.evaluate.stats import paired_test, seed_mean

    groups: dict[tuple[str, str], dict[int, dict]] = {}
    order = list(dict.fromkeys(r["run"] for r in records))
    for r in records:
        groups.setdefault((r["run"], r["representation"]), {})[r["seed"]] = r
    rows, gains = [], []
    for (run, name), by_seed in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        accs = [r["object_accuracy"] for r in by_seed.values()]
        rows.append(
            {
                "run": run,
                "representation": name,
                "seeds": sorted(by_seed),
                "object_accuracy": sum(accs) / len(accs),
                "min": min(accs),
                "max": max(accs),
                "block_top3_overlap": sum(r["block_top3_overlap"] for r in by_seed.values()) / len(accs),
            }
        )
        first = groups.get((order[0], name))
        if run != order[0] and first:
            common = sorted(set(by_seed) & set(first))
            cmp = paired_test(
                seed_mean([by_seed[s]["hits"] for s in common]),
                seed_mean([first[s]["hits"] for s in common]),
                list(uids),
            )
            gains.append({"run": run, "vs": order[0], "representation": name, "seeds": common, **asdict(cmp)})
    return {"rows": rows, "gains": gains}


def to_markdown(summary: dict[str, list[dict]], task: str, held_out: str) -> str:
    """The summary as the report's tables (the same models give the same bytes)."""
    from gazevlm.evaluate.tables import fmt_gain

    lines = [
        f"Representation probe (python -m gazevlm.representation_probe), task {task}: object accuracy of a linear "
        f"probe trained on the train split and scored on the {held_out} split, mean [min, max] over the models' "
        "seeds; block = the gaze block's token of the last frame, resampler = all the LM's cross-attention reads. "
        "Gains: vs the first run on the same representation and windows, 95% bootstrap CI over videos, p from "
        "sign flips of per-video differences. Overlap: the block's last-frame top-3 patches among held-out gaze's.",
        "",
        "| run | representation | seeds | probe object acc. | block top-3 overlap with gaze |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        overlap = "-" if r["block_top3_overlap"] != r["block_top3_overlap"] else f"{r['block_top3_overlap']:.2f}"
        lines.append(
            f"| {r['run']} | {r['representation']} | {len(r['seeds'])} | {r['object_accuracy']:.3f} "
            f"[{r['min']:.3f}, {r['max']:.3f}] | {overlap} |"
        )
    lines += ["", "| run vs | representation | probe object acc. gain | videos / seeds |", "|---|---|---|---|"]
    for g in summary["gains"]:
        lines.append(
            f"| {g['run']} vs {g['vs']} | {g['representation']} | {fmt_gain(g)} | {g['n_videos']} / {len(g['seeds'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gazevlm.representation_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="future", choices=layout.TASKS)
    ap.add_argument("--runs", nargs="+", default=["base", "gaze"], help="trained runs (models/<run>/seed<N>/<task>)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--held-out", default="val", choices=("val", "test"), help="split scored (default val)")
    ap.add_argument("--shards", default=str(layout.SHARDS_DIR))
    ap.add_argument("--models", default=str(layout.MODELS_DIR))
    ap.add_argument("--out", default=None, help="write <out>.json (every probe, per-window hits) and <out>.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    records, uids = measure(
        args.task, args.runs, args.seeds, held_out=args.held_out, shards=args.shards, models_dir=args.models
    )
    summary = summarise(records, uids)
    text = to_markdown(summary, args.task, args.held_out)
    if args.out:
        from gazevlm import atomic

        command = "python -m gazevlm.representation_probe " + " ".join(argv if argv is not None else sys.argv[1:])
        record = {
            "command": command,
            "task": args.task,
            "held_out": args.held_out,
            **summary,
            "records": [{**r, "hits": "".join(map(str, r["hits"]))} for r in records],
        }
        atomic.write_json(f"{args.out}.json", atomic.json_safe(record))
        atomic.write_text(f"{args.out}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
