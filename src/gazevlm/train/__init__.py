"""The training stage: `python -m gazevlm.train --params params.yaml --run gaze --task future --seed 0`.

One entry point for one process (plain `python -m`), N processes (`torchrun --nproc_per_node N`) and
N nodes (torchrun rendezvous): FSDP2 over the ranks when there are 2 or more. Loss = CE + lambda * gaze
KL; runs differ only by their switches in params.yaml (`runs`). Every run is trained once per seed of
`train.seeds`.

Each epoch ends with the validation loss; the best epoch by validation loss (`train.select_on`)
is kept as models/<run>/seed<N>/<task>/model.safetensors; the latest resumable state is kept under
models/<run>/seed<N>/<task>/state/ (see gazevlm.checkpoint) and a rerun resumes from it bit-exactly on
CPU. Curves go to DVCLive in reports/train/<run>/seed<N>/<task>/. `run(params, run, seed=...)`
(gazevlm.train.launch) is the notebook's entry: it starts one worker per task (train.parallel_tasks
at a time): the interpreter itself for one process per task, torchrun for more.

Modules: `launch` (workers and the stage's reports; no torch), `cli` (the command line), `trainer`
(the loop: `Trainer` over a `TrainState`), `step` (one optimizer step), `state` (resumable state,
random streams, fingerprint), `live` (DVCLive logs), `data` (batches and the vision-feature cache),
`curves` (the notebook's plots).

The committed params.yaml trains the tiny preset (lr 2e-3, global batch 32). The paper trained its
OpenFlamingo (`model.preset: paper`) with lr 7e-5, global batch 32, 10 epochs, vision encoder frozen:
  dvc exp run -S model.preset=paper -S train.lr=7e-5 -S train.batch_size=32 -S train.epochs=10
"""

from __future__ import annotations

import importlib
from typing import Any

from gazevlm.train.launch import (
    TRAIN_REPORTS,
    check_seed,
    launch_command,
    report_dir,
    run,
    torchrun_command,
    write_seed_metrics,
)

# Names of the torch-importing modules, imported on first use: `from gazevlm.train import launch`
# (the notebook) must not import torch.
_LAZY = {
    "main": "cli",
    "parse_overrides": "cli",
    "Trainer": "trainer",
    "train": "trainer",
    "validation_losses": "trainer",
    "TrainState": "state",
    "fingerprint": "state",
    "RESUMABLE_CHANGES": "state",
    "StepConfig": "step",
    "Stepper": "step",
    "WarmupSchedule": "step",
    "forward_losses": "step",
    "micro_batch_size": "step",
    "model_api": "step",
    "vision_tower": "step",
}

__all__ = [
    "TRAIN_REPORTS",
    "check_seed",
    "launch_command",
    "report_dir",
    "run",
    "torchrun_command",
    "write_seed_metrics",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
