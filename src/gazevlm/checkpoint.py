"""Checkpoints of the training stage: what is written, how it is read back, and the strict checks.

models/<run>/<task>/
  model.safetensors   the best weights by validation loss (full, unsharded state dict)
  config.json         what built them: run, task, switches, the model and train sections of params,
                      the model's own config dict, and the best epoch/step/validation losses
  tokenizer/          the task's tokenizer (built from the train split's target texts)
  state/latest        name of the newest resumable training state below
  state/step-NNNNNNNNN[-end]/model.safetensors  the latest weights (not the best)
  state/step-NNNNNNNNN[-end]/train_state.pt     optimizer, scheduler, RNG states, counters, best so far;
                                           plain tensors and numbers, read with weights_only=True

Every file is written to a temporary name and renamed, and a training state directory becomes
visible only through the `latest` pointer, so a process killed at any moment leaves either the old
or the new checkpoint, never half of one. Loading is strict: a missing, unexpected or mis-shaped
tensor, a truncated file, or a config from another preset raises CheckpointError naming the file.
Every weights file's sha256 is recorded next to it (config.json `weights_sha256`, train_state.pt
`weights_sha256`) and checked on load, and a non-finite tensor is refused: a bit-flipped file must
not load and evaluate to empty predictions. The safetensors header is written in a fixed key order,
so identical weights give identical bytes (DVC sees no change after a retrain that changed nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gazevlm import atomic

# torch and safetensors are imported where tensors are read or written: the train stage's notebook
# launches its workers (gazevlm.train.launch) through this module's JSON helpers without importing torch
if TYPE_CHECKING:
    import torch

FORMAT = "gazevlm-checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
STATE_DIR = "state"
STATE_FILE = "train_state.pt"
LATEST_FILE = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, or does not fit the model it is loaded into."""


def write_json(path: Path, obj: Any) -> None:
    """A checkpoint's JSON file (sorted keys; values JSON cannot hold as their str), atomically."""
    atomic.write_json(path, obj, indent=2, sort_keys=True, default=str)


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON (truncated or corrupt?): {err}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with its metadata keys sorted. safetensors keeps the metadata in a
    hash map whose order changes from process to process (and call to call), so identical weights
    gave different bytes. Same keys, same values: the header keeps its length and is rewritten in place."""
    with open(path, "r+b") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = fh.read(size)
        header = json.loads(raw)  # tensors stay in file (offset) order: a dict keeps it
        meta = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:
            raise CheckpointError(f"{path}: canonical safetensors header longer than the written one")
        fh.seek(8)
        fh.write(text.ljust(size, b" "))  # safetensors pads its header with spaces


def save_weights(state_dict: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> str:
    """Write a full state dict as safetensors (tied tensors are stored once per name), byte-reproducible;
    returns the file's sha256 (to be recorded where the file is referenced)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    tensors = {}
    for name, t in state_dict.items():
        t = t.detach().cpu().contiguous()
        if t.untyped_storage().data_ptr() in seen and t.numel() > 0:
            t = t.clone()  # safetensors refuses shared storage (e.g. tied embeddings)
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    with atomic.atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, **(metadata or {})})
        _canonical_header(tmp)
        digest = sha256_file(tmp)
    return digest


def load_weights(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a weights file; with `sha256`, the file must have exactly that checksum. Non-finite tensors
    are refused either way (a finite model never saves one: training stops at a non-finite loss)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors weights (truncated or corrupt?): {err}") from None
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(
                f"{path}: checksum {actual[:12]}... is not the recorded {sha256[:12]}... "
                "(file corrupted or replaced since it was written)"
            )
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensor(s) with NaN or inf values, e.g. {bad[:3]} (corrupt weights)")
    return weights


def recorded_sha256(record: Mapping[str, Any], path: Path) -> str:
    """The `weights_sha256` a config or training state records for its weights file."""
    digest = record.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise CheckpointError(
            f"{path}: no weights_sha256 for its weights file (written before checksums were "
            "recorded, or edited): retrain, or rerun with --resume never"
        )
    return digest


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Global (unsharded) shapes of every state-dict entry; DTensor reports its global shape."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_compatible(
    expected: Mapping[str, tuple[int, ...]], weights: Mapping[str, torch.Tensor], path: Path, hint: str = ""
) -> None:
    """Strict key and shape check with a message that says what differs (never strict=False)."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mis_shaped = sorted(k for k in set(expected) & set(weights) if tuple(weights[k].shape) != tuple(expected[k]))
    if not (missing or unexpected or mis_shaped):
        return

    def show(keys: list[str], fmt=lambda k: k) -> str:
        head = ", ".join(fmt(k) for k in keys[:5])
        return head + (f" ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {show(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
    if mis_shaped:
        parts.append(
            f"{len(mis_shaped)} with another shape: "
            + show(mis_shaped, lambda k: f"{k} {tuple(weights[k].shape)} vs model {tuple(expected[k])}")
        )
    raise CheckpointError(
        f"{path}: weights do not fit this model ({'; '.join(parts)})."
        + (f" {hint}" if hint else " Was it saved from another preset, backbone or run?")
    )


# --- resumable training state ------------------------------------------------------------------


def save_train_state(
    state_root: Path, name: str, weights: Mapping[str, torch.Tensor], state: Mapping[str, Any]
) -> Path:
    """Write a new state directory `name` (never the one `latest` names), publish it through
    `latest`, then delete the older ones."""
    import torch

    state_root = Path(state_root)
    state_root.mkdir(parents=True, exist_ok=True)
    if not name.startswith("step-"):
        raise ValueError(f"state directory names start with 'step-', got {name!r}")
    final = state_root / name
    pointer = state_root / LATEST_FILE
    if pointer.is_file() and pointer.read_text().strip() == name:
        raise ValueError(f"{final}: is the published state; a new state needs a new name")
    tmp = state_root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    digest = save_weights(weights, tmp / WEIGHTS_FILE)
    torch.save({**state, "weights_sha256": digest}, tmp / STATE_FILE)
    with open(tmp / STATE_FILE, "rb") as fh:
        os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    atomic.write_text(pointer, name + "\n")
    for old in state_root.iterdir():
        if old.name not in (name, LATEST_FILE) and (old.name.startswith("step-") or old.name.startswith(".step-")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def find_train_state(state_root: Path) -> Path | None:
    """The directory named by state/latest, or None when no state was ever published."""
    pointer = Path(state_root) / LATEST_FILE
    if not pointer.is_file():
        return None
    target = Path(state_root) / pointer.read_text().strip()
    if not target.is_dir():
        raise CheckpointError(f"{pointer}: names {target.name!r}, which does not exist")
    return target


def load_train_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    state_dir = Path(state_dir)
    path = state_dir / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: training state file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError/UnpicklingError/EOFError for bad files
        raise CheckpointError(f"{path}: cannot read training state (truncated or corrupt?): {err}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} training state")
    weights = load_weights(state_dir / WEIGHTS_FILE, sha256=recorded_sha256(state, path))
    return weights, state


# --- the trained model, for evaluation and attention analysis -----------------------------------


def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    from gazevlm.models import tokenizer as tokmod

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(tokmod, "save_tokenizer"):
        tokmod.save_tokenizer(tokenizer, tmp)
    else:
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(directory, ignore_errors=True)
    os.rename(tmp, directory)


def load_tokenizer(directory: Path) -> Any:
    from gazevlm.models import tokenizer as tokmod

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: tokenizer directory not found")
    try:
        if hasattr(tokmod, "load_tokenizer"):
            return tokmod.load_tokenizer(directory)
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{directory}: cannot load the tokenizer: {err}") from None


def config_params(config: Mapping[str, Any], path: Path):
    """The Params a checkpoint was trained with (model and train sections, and its run's switches)."""
    from gazevlm import params as params_mod

    try:
        return params_mod.from_dict(config["params"])
    except (KeyError, TypeError, params_mod.ParamsError) as err:
        raise CheckpointError(f"{path}: no usable `params` section: {err}") from None


def load_trained(run_dir: Path, params=None, device: str | torch.device = "cpu"):
    """(model, tokenizer) of a finished run, in eval mode: the one loader of trained models (evaluation,
    attention, zero-shot and `gazevlm.trained.load_model` all call it). run_dir: models/<run>/seed<N>/<task>
    (gazevlm.layout.run_dir) or an exported directory; a missing one is a FileNotFoundError naming it.

    If `params` is given, its model section must equal the one the checkpoint was trained with (a
    checkpoint of another preset or variant is refused with the differing keys named), except
    `weights_dir`, a local path: the caller's is used to build the pretrained parts.
    """
    import torch

    from gazevlm.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir}: no trained model here (the train stage writes models/<run>/seed<N>/<task>)"
        )
    cfg_path = run_dir / CONFIG_FILE
    config = read_json(cfg_path)
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a {FORMAT} config (format={config.get('format')!r})")
    saved = config_params(config, cfg_path)
    if params is not None:
        a, b = _asdict(params.model), _asdict(saved.model)
        diff = {
            k: (b.get(k), a.get(k))
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in ("weights_dir", "vision_weights")
        }
        if diff:
            shown = ", ".join(f"model.{k}: checkpoint {v[0]!r} vs params {v[1]!r}" for k, v in diff.items())
            raise CheckpointError(f"{cfg_path}: checkpoint was trained with other model params ({shown})")
        saved = dataclasses.replace(saved, model=dataclasses.replace(saved.model, weights_dir=params.model.weights_dir))
    # the checkpoint holds every weight, the vision encoder's too: no pretrained file is needed to load it
    saved = dataclasses.replace(saved, model=dataclasses.replace(saved.model, vision_weights=None))
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR)
    torch.manual_seed(0)  # every weight is overwritten below; seeding only keeps construction quiet
    model = build_model(saved, config["run"], tokenizer)
    weights_path = run_dir / WEIGHTS_FILE
    weights = load_weights(weights_path, sha256=recorded_sha256(config, cfg_path))
    check_compatible(expected_shapes(model), weights, weights_path)
    model.load_state_dict(weights, strict=True)
    if "model_config" in config and _jsonable(getattr(model, "config", None)) != config["model_config"]:
        raise CheckpointError(
            f"{cfg_path}: model_config differs from the model this code builds "
            f"from the same params (code changed since training?)"
        )
    return model.to(device).eval(), tokenizer


def _asdict(obj: Any) -> dict:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str)) if obj is not None else None
