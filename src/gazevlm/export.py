"""`gazevlm export MODEL_DIR OUT_DIR`: a trained model as a self-contained directory to hand on.

OUT_DIR/
  model.safetensors   the checkpoint's weights, byte for byte (sha256 checked before and after the copy)
  config.json         the checkpoint's config (weights_sha256 included), its params completed with how
                      windows are cut (extract: keyframe rate, observation, stride, horizon), how the
                      evaluate stage generates, the data root, and an `export` section: the provenance
                      and the evaluation results the model card shows
  tokenizer/          the task's tokenizer
  README.md           the model card (gazevlm.model_card)

gazevlm.load_model(OUT_DIR) and `gazevlm predict --model OUT_DIR` read it without the project. The
directory is written staged (swapped in on success); an existing OUT_DIR is replaced only when it is an
earlier export. Same model and project state, same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gazevlm import __version__, checkpoint, layout, model_card
from gazevlm.out_dir import check_replaceable
from gazevlm.trained import EXPORT_FORMAT, GENERATION_KEYS, WINDOW_KEYS, ModelSource, describe, read_lock

README = "README.md"
EVAL_DIR = layout.METRICS_DIR / "eval"
ATTENTION_FILE = layout.METRICS_DIR / "attention.json"


def _lock_md5(lock: dict[str, Any], kind: str, path: str, within: str | None = None) -> str | None:
    """The md5 dvc.lock records for `path` among the `kind` ("deps"/"outs") of a stage (of the stage
    with an out containing `within`, when given)."""
    for stage in lock.values():
        if within is not None and not any(
            within == o.get("path") or within.startswith(o.get("path", "") + "/") for o in stage.get("outs", [])
        ):
            continue
        for entry in stage.get(kind, []):
            if entry.get("path") == path and entry.get("md5"):
                return str(entry["md5"])
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); rerun the stage that writes it") from None


def provenance(source: ModelSource) -> dict[str, Any]:
    """Where a pipeline model came from and how it scored: the data root and the DVC fingerprints of the
    data and of the shards it was trained on (dvc.lock), metrics/eval/<run>_<task>.json and this run and
    task of metrics/attention.json (each None when the project has not written it)."""
    from gazevlm.attention.extract import analysed_seed
    from gazevlm.evaluate.stage import is_synthetic

    project, p = source.project, source.params
    model_path = source.path.resolve().relative_to(project).as_posix()
    lock = read_lock(project)
    attention = (_read_json(project / ATTENTION_FILE) or {}).get(source.run, {}).get(source.task)
    return {
        "format": EXPORT_FORMAT,
        "gazevlm_version": __version__,
        "source": model_path,
        # synthetic: None when the root is gone from the project (cannot tell)
        "data": {
            "root": p.data.root,
            "version": p.data.version,
            "synthetic": is_synthetic(p, project) if (project / p.data.root).exists() else None,
            "root_md5": _lock_md5(lock, "deps", p.data.root),
            "shards_md5": _lock_md5(lock, "deps", layout.SHARDS_DIR.as_posix(), within=model_path),
        },
        "evaluation": _read_json(project / EVAL_DIR / f"{source.run}_{source.task}.json"),
        "attention": None if attention is None else {"seed": analysed_seed(p), "sources": attention},
    }


def export_config(source: ModelSource) -> dict[str, Any]:
    """config.json of the export: the checkpoint's, with the settings a model is used with and provenance."""
    p = source.params
    config = json.loads(json.dumps(source.config))
    config["params"] = {
        **config["params"],
        "extract": {k: getattr(p.extract, k) for k in WINDOW_KEYS},
        "evaluate": {k: getattr(p.evaluate, k) for k in GENERATION_KEYS},
        "data": dataclasses.asdict(p.data),
    }
    config["export"] = source.config["export"] if source.kind == "export" else provenance(source)
    return config


def _verify(path: Path, recorded: str, cfg_path: Path) -> None:
    actual = checkpoint.sha256_file(path)
    if actual != recorded:
        raise checkpoint.CheckpointError(
            f"{path}: checksum {actual[:12]}... is not the recorded {recorded[:12]}... "
            f"({cfg_path}): corrupted or replaced"
        )


def _copy_weights(source: ModelSource, target: Path) -> None:
    """Byte copy of the weights, checked against config.json's weights_sha256 before and after."""
    cfg_path = source.path / checkpoint.CONFIG_FILE
    recorded = checkpoint.recorded_sha256(source.config, cfg_path)
    weights = source.path / checkpoint.WEIGHTS_FILE
    if not weights.is_file():
        raise checkpoint.CheckpointError(f"{weights}: weights file not found")
    _verify(weights, recorded, cfg_path)
    shutil.copyfile(weights, target)
    _verify(target, recorded, cfg_path)


def _check_out(out: Path, source: ModelSource) -> None:
    if out.resolve() == source.path.resolve() or source.path.resolve() in out.resolve().parents:
        raise ValueError(f"{out}: inside the model directory {source.path}; export elsewhere")
    check_replaceable(out, checkpoint.CONFIG_FILE)
    if (out / checkpoint.CONFIG_FILE).is_file() and "export" not in checkpoint.read_json(out / checkpoint.CONFIG_FILE):
        raise FileExistsError(
            f"{out}: holds a model that is not an export (no `export` in its config.json); "
            "choose a new or empty directory"
        )


def export(model_dir: str | Path, out_dir: str | Path, task: str | None = None) -> Path:
    """Write the self-contained copy of a pipeline (or exported) model directory; returns OUT_DIR."""
    source = describe(model_dir, task)
    out = Path(out_dir)
    _check_out(out, source)
    checkpoint.load_tokenizer(source.path / checkpoint.TOKENIZER_DIR)  # a broken tokenizer fails here
    config = export_config(source)
    with layout.staged_dir(out) as tmp:
        _copy_weights(source, tmp / checkpoint.WEIGHTS_FILE)
        shutil.copytree(source.path / checkpoint.TOKENIZER_DIR, tmp / checkpoint.TOKENIZER_DIR)
        checkpoint.write_json(tmp / checkpoint.CONFIG_FILE, config)
        (tmp / README).write_text(model_card.render(config, out.name))
    return out


# --- command line -----------------------------------------------------------------------------------


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "model_dir",
        type=Path,
        help="a pipeline model, models/<run>/seed<N>/<task> (or "
        "models/<run>/seed<N> with --task), inside its project (the directory with params.yaml)",
    )
    ap.add_argument("out_dir", type=Path, help="the directory to write (new, empty, or an earlier export)")
    ap.add_argument("--task", choices=layout.TASKS, help="the task directory under MODEL_DIR")


def run(args: argparse.Namespace) -> Path:
    out = export(args.model_dir, args.out_dir, task=args.task)
    print(f"exported {args.model_dir} -> {out} (model card: {out / README})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from gazevlm.command import run_command

    ap = argparse.ArgumentParser(prog="python -m gazevlm.export", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_command(run, ap.parse_args(argv), ap.prog)


if __name__ == "__main__":
    raise SystemExit(main())
