"""The train stage's command line: `python -m gazevlm.train --params params.yaml --run gaze --task future`
(torchrun runs the same module on every rank)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from gazevlm import layout
from gazevlm import params as params_mod
from gazevlm.train.launch import check_seed

DESCRIPTION = "The training stage: `python -m gazevlm.train --params params.yaml --run gaze --task future --seed 0`."


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`--set section.key=value` items as {section: {key: value}} (values parsed as YAML)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set expects section.key=value, got {item!r}")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gazevlm.train", description=DESCRIPTION)
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument(
        "--run",
        "--run-name",
        dest="run",
        required=True,
        help="a run named under `runs` in params (base, lambda0, gaze)",
    )
    ap.add_argument("--task", required=True, choices=layout.TASKS)
    ap.add_argument("--seed", type=int, default=None, help="one of train.seeds (default: the first)")
    ap.add_argument("--out", default=None, help="checkpoint directory (default: models/<run>/seed<N>/<task>)")
    ap.add_argument("--live-dir", default=None, help="DVCLive directory (default: reports/train/<run>/seed<N>/<task>)")
    ap.add_argument("--shards", default=str(layout.SHARDS_DIR), help="shards root (default: data/shards)")
    ap.add_argument(
        "--features",
        default=str(layout.FEATURES_DIR),
        help="the features stage's output, used when it fits (default: data/features)",
    )
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--resume", default="auto", choices=("auto", "never", "must"))
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a params key for this invocation (e.g. --set train.epochs=1)",
    )
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    params = params_mod.load(args.params)
    overrides = parse_overrides(args.set)
    if overrides:
        params = params_mod.with_overrides(params, **overrides)
    try:
        check_seed(params, args.seed)  # a usage error, before any process group or data
    except ValueError as err:
        ap.error(f"--seed: {err}")
    from gazevlm.train.trainer import train  # torch: after the arguments are checked

    summary = train(
        params,
        args.run,
        args.task,
        seed=args.seed,
        out_dir=args.out,
        live_dir=args.live_dir,
        shards_root=args.shards,
        features_root=args.features,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(args.run, args.task, summary)
    return 0


def _print_summary(run: str, task: str, summary: dict) -> None:
    best = summary["best"]
    print(
        f"{run}/{task} seed {summary['seed']}: {summary['steps']} steps on {summary['world_size']} "
        f"rank(s) in {summary['train_time_s']:.1f} s; best epoch {best['epoch']} "
        f"(val {summary['select_on']} {best['value']:.4f})",
        flush=True,
    )
    if "vision_features" in summary:
        vf = summary["vision_features"]
        print(f"vision features: {vf['source']}" + (f" ({vf['reason']})" if "reason" in vf else ""), flush=True)
