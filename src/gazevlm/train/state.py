"""What a training run carries from step to step and across a resume: its counters and best epoch
(`TrainState`), the random streams of every rank, the fingerprint a resumed run must match, and the
rank-0 reads and writes of the resumable state and of the best epoch's checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

from gazevlm import checkpoint as ckpt
from gazevlm import distributed
from gazevlm.checkpoint import CheckpointError
from gazevlm.params import Params
from gazevlm.train.launch import switches

# train keys that may change between a run and its resumption (they do not change the trajectory
# of the steps already taken); every other key of the fingerprint must match to resume.
RESUMABLE_CHANGES = (
    "epochs",
    "num_workers",
    "nproc_per_node",
    "checkpoint_every_steps",
    "validate_every",
    "tasks",
    "cpu_threads",
    "seeds",
    "in_memory",
    "parallel_tasks",
)


@dataclass
class TrainState:
    """The loop's changing values; those saved in a resumable state are restored from it."""

    epoch: int = 0  # the epoch the loop (re)starts at
    skip_steps: int = 0  # steps of that epoch already in a mid-epoch state
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # training seconds before this process (rank 0; kept beside the logs, not in the state)
    last: dict[str, float] = field(default_factory=dict)  # the last step's logged values
    best: dict[str, Any] = field(default_factory=lambda: {"value": math.inf, "epoch": -1, "step": 0})
    pending_rng: dict | None = None  # this rank's random streams, set once the resumed position is reached

    def restore(self, meta: dict, rank: int, world_size: int) -> None:
        """Take the counters of a state read by `read_train_state`; this rank's random streams when the
        state was written by as many ranks."""
        self.epoch, self.skip_steps, self.step = meta["epoch"], meta["steps_in_epoch"], meta["step"]
        self.best, self.last = meta["best"], meta["last"]
        if meta["world_size"] == world_size:
            self.pending_rng = meta["rng"][rank]
        elif self.skip_steps:
            raise CheckpointError(
                f"{meta['dir']}: a mid-epoch state of {meta['world_size']} ranks cannot resume on {world_size}"
            )


def fingerprint(params: Params, run: str, task: str, vocab: str, seed: int) -> str:
    """What a resumed run must share with the run that wrote the state."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in RESUMABLE_CHANGES}
    blob = {
        "model": dataclasses.asdict(params.model),
        "run": switches(params, run),
        "train": train,
        "task": task,
        "vocab": vocab,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """This process's random streams (python, numpy, torch, cuda) as tensors and numbers."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"])
    )
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def full_state(model: nn.Module, opt: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state on rank 0, CPU; empty dicts on the other ranks."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=opts)
    optim = get_optimizer_state_dict(model, opt, options=opts) if opt is not None else None
    return weights, optim


def _find_state(state_root: Path, out_dir: Path, model: nn.Module, fp: str, resume: str) -> tuple[dict, dict, dict]:
    """Rank 0: (meta, weights, optimizer state) of the state to resume from; a fresh run deletes what an
    earlier one left in out_dir."""
    found = None if resume == "never" else ckpt.find_train_state(state_root)
    if found is None and resume == "must":
        raise CheckpointError(f"{state_root}: no training state to resume from")
    if found is None:  # a fresh run: nothing of an earlier one may survive next to it
        shutil.rmtree(state_root, ignore_errors=True)
        (out_dir / ckpt.WEIGHTS_FILE).unlink(missing_ok=True)
        (out_dir / ckpt.CONFIG_FILE).unlink(missing_ok=True)
        return {"found": False}, {}, {}
    weights, st = ckpt.load_train_state(found)
    if st["fingerprint"] != fp:
        raise CheckpointError(
            f"{found / ckpt.STATE_FILE}: state of another configuration (fingerprint {st['fingerprint']}"
            f", this run {fp}): params, run switches, task or tokenizer changed; rerun with "
            f"--resume never to start afresh"
        )
    ckpt.check_compatible(ckpt.expected_shapes(model), weights, found / ckpt.WEIGHTS_FILE)
    optim_state = st.pop("optimizer")
    return {"found": True, "dir": str(found), **st}, weights, optim_state


def read_train_state(
    ctx: distributed.DistContext, state_root: Path, out_dir: Path, model: nn.Module, fp: str, resume: str
) -> tuple[dict, dict, dict]:
    """(meta, weights, optimizer state): rank 0 reads, every rank gets the meta (the weights and the
    optimizer state are broadcast when loaded, so other nodes need no shared disk)."""
    meta: dict[str, Any] = {"found": False}
    weights: dict = {}
    optim_state: dict = {}
    if ctx.is_main:
        try:
            meta, weights, optim_state = _find_state(state_root, out_dir, model, fp, resume)
        except CheckpointError as err:
            meta = {"error": str(err)}
    box = [meta]
    if ctx.world_size > 1:
        dist.broadcast_object_list(box, src=0)
    meta = box[0]
    if "error" in meta:
        raise CheckpointError(meta["error"])
    return meta, weights, optim_state


def save_best(
    out_dir: Path,
    weights: dict,
    params: Params,
    run: str,
    task: str,
    seed: int,
    model: nn.Module,
    best: dict,
    world_size: int,
    fp: str,
) -> None:
    """The best epoch's weights and its config.json (rank 0)."""
    digest = ckpt.save_weights(
        weights, out_dir / ckpt.WEIGHTS_FILE, metadata={"run": run, "task": task, "seed": str(seed)}
    )
    config = {
        "format": ckpt.FORMAT,
        "run": run,
        "task": task,
        "seed": seed,
        "weights_sha256": digest,  # checked on load
        "params": {
            "model": dataclasses.asdict(params.model),
            "train": dataclasses.asdict(params.train),
            "runs": {run: switches(params, run)},
        },
        "model_config": json.loads(json.dumps(getattr(model, "config", None), sort_keys=True, default=str)),
        "best": best,
        "world_size": world_size,
        "fingerprint": fp,
    }
    ckpt.write_json(out_dir / ckpt.CONFIG_FILE, config)
