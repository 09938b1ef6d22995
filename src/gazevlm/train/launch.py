"""The train stage's launcher: one training process per task (`python -m gazevlm.train`, torchrun for
2+ processes per node), up to train.parallel_tasks at a time, and the stage's reports.

Torch-free, so that the notebook (04_train) starts its workers without importing torch itself
(~2.5 s a stage); the package gazevlm.train re-exports every public name here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gazevlm import checkpoint as ckpt
from gazevlm import layout
from gazevlm import params as params_mod
from gazevlm.params import Params

TRAIN_REPORTS = layout.REPORTS_DIR / "train"


def report_dir(run: str, task: str, seed: int, root: Path = TRAIN_REPORTS) -> Path:
    """DVCLive directory of one run, task and seed: metrics.json and plots/metrics/{train,val}/*.tsv."""
    return Path(root) / run / layout.seed_dir(seed) / task


def check_seed(params: Params, seed: int | None) -> int:
    """The seed to train with: one of params.train.seeds (the first when None)."""
    seeds = tuple(params.train.seeds)
    if seed is None:
        return int(seeds[0])
    if seed not in seeds:
        raise ValueError(f"seed {seed} is not one of params.train.seeds {list(seeds)}")
    return int(seed)


def switches(params: Params, run: str) -> dict:
    """The run's switches as written to reports and checkpoint configs."""
    return params_mod.run_switches(params.run(run))


# --- one worker per task ---------------------------------------------------------------------------


def torchrun_command(nproc_per_node: int | str) -> list[str]:
    """torchrun on one node; --standalone picks a free local rendezvous port (none is hard-coded)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]


def launch_command(nproc_per_node: int | str) -> list[str]:
    """The prefix that starts one task's training: torchrun for 2+ processes per node; for one, the
    interpreter itself (torchrun would add an agent process, its imports and a rendezvous, ~2 s per
    task, and distributed.init builds the group of one without its environment variables)."""
    if str(nproc_per_node).strip() == "1":
        return [sys.executable]
    return torchrun_command(nproc_per_node)


def run(
    params: Params,
    run: str = "gaze",
    params_file: str | Path = "params.yaml",
    tasks: Sequence[str] | None = None,
    nproc_per_node: int | str | None = None,
    extra_args: Sequence[str] = (),
    stream: Callable[[str], None] | None = print,
    launcher: Sequence[str] | None = None,
    seed: int | None = None,
) -> dict:
    """Launch `python -m gazevlm.train` (`torchrun --standalone -m gazevlm.train` when nproc_per_node > 1)
    for each task of `run` with one seed (default the first of train.seeds), up to train.parallel_tasks at
    a time; write reports/train/<run>/seed<N>/<task>/report.json.

    `launcher` replaces that prefix (e.g. a Slurm srun line); the module and its arguments follow it."""
    params.run(run)  # a clear error for an unknown run name before anything starts
    seed = check_seed(params, seed)
    tasks = list(tasks or params.train.tasks)
    nproc = nproc_per_node or params.train.nproc_per_node
    report: dict[str, Any] = {
        "run": run,
        "seed": seed,
        "switches": switches(params, run),
        "nproc_per_node": nproc,
        "tasks": {},
    }
    lock = threading.Lock()
    todo = list(tasks)
    while todo:
        batch, todo = todo[: max(1, params.train.parallel_tasks)], todo[params.train.parallel_tasks :]
        # --run-name: torchrun's own parser rejects `--run` (a prefix of --run-path)
        workers = [
            _Worker(
                run,
                task,
                seed,
                [
                    *(launcher or launch_command(nproc)),
                    "-m",
                    "gazevlm.train",
                    "--params",
                    str(params_file),
                    "--run-name",
                    run,
                    "--task",
                    task,
                    "--seed",
                    str(seed),
                    *extra_args,
                ],
                stream if len(batch) == 1 or stream is None else _prefixed(stream, task, lock),
            )
            for task in batch
        ]
        failed = [w for w in workers if w.wait() != 0]
        if failed:
            w = failed[0]
            # the worker's own error goes last: torchrun's failure summary follows it in the output
            raise RuntimeError(
                f"training {run}/{w.task} failed (exit {w.returncode}): {' '.join(w.cmd)}\n"
                + "\n".join(w.tail)
                + "".join(f"\n\n{e}" for e in _worker_error(w.tail))
            )
        for w in workers:
            summary = ckpt.read_json(report_dir(run, w.task, seed) / "summary.json")
            report["tasks"][w.task] = {**summary, "wall_time_s": w.wall_time_s}
            ckpt.write_json(
                report_dir(run, w.task, seed) / "report.json",
                {**{k: v for k, v in report.items() if k != "tasks"}, "task": w.task, **report["tasks"][w.task]},
            )
    write_seed_metrics(run, seed)
    return report


def write_seed_metrics(run: str, seed: int, root: Path = TRAIN_REPORTS) -> Path:
    """reports/train/<run>/seed<N>.json: the DVC metrics of one training stage, results only (best epoch
    and validation losses per task, from each task's DVCLive metrics.json; no timings)."""
    base = Path(root) / run / layout.seed_dir(seed)
    out = {}
    for path in sorted(base.glob("*/metrics.json")):
        out[path.parent.name] = ckpt.read_json(path)
    target = base.with_suffix(".json")
    ckpt.write_json(target, out)
    return target


def _prefixed(stream: Callable[[str], None], task: str, lock: threading.Lock) -> Callable[[str], None]:
    def out(line: str) -> None:
        with lock:
            stream(f"[{task}] {line}")

    return out


class _Worker:
    """One training process; its output is read on a thread (several run at once) and its tail kept
    for the error message."""

    def __init__(self, run: str, task: str, seed: int, cmd: list[str], stream: Callable[[str], None] | None):
        self.run, self.task, self.seed, self.cmd = run, task, seed, cmd
        env = {**os.environ, "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "10")}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.tail: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream: Callable[[str], None] | None) -> None:
        for line in self.proc.stdout:
            self.tail = (self.tail + [line.rstrip()])[-40:]
            if stream is not None:
                stream(line.rstrip())

    def wait(self) -> int:
        self.returncode = self.proc.wait()
        self.reader.join()
        self.wall_time_s = round(time.perf_counter() - self.t0, 3)
        return self.returncode


def _worker_error(lines: Sequence[str]) -> list[str]:
    """The last exception line a worker printed (e.g. `[rank0]: FloatingPointError: ...`), if any."""
    pattern = re.compile(r"^(\[rank\d+\]:\s*)?[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?")
    found = [line.strip() for line in lines if pattern.match(line.strip()) and "ChildFailedError" not in line]
    return found[-1:]
