"""The evaluate stage's generation: every (run, task, seed)'s test predictions, in worker processes.

Generation is one independent job per trained model, and most of the stage's model time; scoring must
stay in one process and in one order (the semantic scorer's embeddings depend, in their last bits, on
which texts share a batch, and its cache decides that). So the jobs run in `params.evaluate.workers`
processes of one intra-op thread each, and their predictions come back in job order while the stage
scores the earlier ones. A model's greedy continuations are the same in any process and at any thread
count, so the predictions are the bytes one process writes (tested end to end on the default run).
Stand-in models and batches (tests) run here, in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gazevlm import allocator, checkpoint, layout
from gazevlm.evaluate import predict as P
from gazevlm.params import Params


@dataclass(frozen=True)
class Job:
    run: str
    task: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.run}/{self.task}/seed{self.seed}"


@dataclass
class Generated:
    job: Job
    predictions: pd.DataFrame  # evaluate.predict.predict's table
    vision_inputs: str  # features stage or pixels, and why
    seconds: float


ModelLoader = Callable[[str, str, int], tuple[Any, Any]]
BatchSource = Callable[[Params, str], Iterable[Mapping[str, Any]]]
GazeBatchSource = Callable[[Params, str, str], Iterable[Mapping[str, Any]]]  # (params, task, run)


def jobs_of(params: Params) -> list[Job]:
    """Every (run, task, seed) in the stage's order: task, then run, then seed."""
    return [Job(r, t, int(s)) for t in params.train.tasks for r in params.runs for s in params.train.seeds]


class _Generator:
    """Loads a job's model and generates its test predictions (in this process or in a worker)."""

    def __init__(
        self,
        params: Params,
        root: Path,
        load_model: ModelLoader | None = None,
        batches: BatchSource | None = None,
        codec: P.TextCodec | None = None,
        gaze_batches: GazeBatchSource | None = None,
    ):
        from gazevlm import features

        self.params, self.codec = params, codec
        # the gaze-input baselines (Tables 13, 15) alone read the test gaze, as pixels (+ prompt points)
        self.gaze_batches = gaze_batches or (
            lambda params_, task_, run_: P.gaze_input_batches(params_, task_, run_, root / layout.SHARDS_DIR)
        )
        self.load_model = load_model or (
            lambda r, t, s: checkpoint.load_trained(layout.run_dir(r, t, s, root / layout.MODELS_DIR), params=params)
        )
        if batches is None:
            shards = root / layout.SHARDS_DIR
            self.test_batches = features.TestBatches(
                lambda task: P.test_batches(params, task, shards),
                params.evaluate.batch_size,
                shards_root=shards,
                root=root / layout.FEATURES_DIR,
            )
        else:
            self.test_batches = lambda model, task: (batches(params, task), "given")

    def __call__(self, job: Job) -> Generated:
        ev = self.params.evaluate
        t0 = time.time()
        torch.manual_seed(ev.seed)
        model, tokenizer = self.load_model(job.run, job.task, job.seed)
        if self.params.run(job.run).gaze_inputs:
            batches, how = self.gaze_batches(self.params, job.task, job.run), "pixels with the run's gaze inputs"
        else:
            batches, how = self.test_batches(model, job.task)
        df = P.predict(
            model,
            tokenizer,
            batches,
            job.task,
            max_new_tokens=ev.max_new_tokens,
            num_beams=ev.num_beams,
            codec=self.codec,
        )
        if df.empty:
            raise ValueError(f"task {job.task!r}: the test split yielded no windows")
        return Generated(job, df, how, round(time.time() - t0, 2))


_WORKER: _Generator | None = None  # the generator of a worker process (set by _start_worker)


def _start_worker(params: Params, root: Path) -> None:
    global _WORKER
    torch.set_num_threads(1)  # the workers share the cores; one intra-op thread each
    allocator.keep_freed_memory()
    _WORKER = _Generator(params, root)


def _run_in_worker(job: Job) -> Generated:
    return _WORKER(job)


def in_workers(*stand_ins: Any) -> bool:
    """Whether generation may run in worker processes: not with stand-ins (tests), which live here."""
    return all(s is None for s in stand_ins)


def generate_all(
    params: Params,
    root: Path = Path("."),
    *,
    load_model: ModelLoader | None = None,
    batches: BatchSource | None = None,
    codec: P.TextCodec | None = None,
    gaze_batches: GazeBatchSource | None = None,
) -> Iterator[Generated]:
    """Every job's predictions, in job order (see the module docstring)."""
    jobs = jobs_of(params)
    workers = min(params.evaluate.workers, len(jobs))
    if workers <= 1 or not in_workers(load_model, batches, codec, gaze_batches):
        gen = _Generator(params, Path(root), load_model, batches, codec, gaze_batches)
        for job in jobs:
            yield gen(job)
        return
    import multiprocessing

    # this process scores while the workers generate, on one thread: two intra-op threads on a shared
    # core made the tiny models' many small ops 3-10x slower (generation: 454 s CPU at 2 threads under a
    # load of 2-4 vs 42 s at 1); the scores are the same at any thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(params, Path(root)),
    )
    try:
        futures = [pool.submit(_run_in_worker, job) for job in jobs]
        for future in futures:
            got = future.result()
            if all(f.done() for f in futures):
                # the workers are done, scoring goes on (most of the stage): give it the idle core too
                torch.set_num_threads(threads)
            yield got
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
