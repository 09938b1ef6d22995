"""Benchmarks: the cost of gaze regularisation and of every stage, measured side by side in one run.

`python -m bench` (or `make bench`) runs them all and writes reports/bench.md. Each module also runs on
its own (`python -m bench.bench_model --help`, ...). Shared here: interleaved timing with warm-up and
repeats, summaries (median and spread), and the record of one figure (value, goal, command).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import gazevlm  # noqa: F401  before any bench imports torch: the pipeline's pinned kernels (gazevlm.numerics)

# One thread count for every measurement of a run (set in each process, subprocesses included) so that
# base and gaze always get the same CPU. 1 by default: on the shared 2-core machine, 2 OpenMP threads
# competing with other processes made a tiny training step 4x slower and bimodal (77 ms idle, ~800 ms
# loaded) while 1 thread stayed near 200 ms. `--threads 2` on an idle machine.
DEFAULT_THREADS = 1


def set_threads(n: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def quiet() -> None:
    """Progress bars, FSDP's view-tensor warnings and open_clip's random-weights notices say nothing
    about speed; keep the output to the figures."""
    import logging
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger().setLevel(logging.ERROR)


def load_average() -> float:
    return os.getloadavg()[0]


# /proc/stat's first line: the whole machine's time per state since boot, in clock ticks
_PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def host_cpu_times(path: str = "/proc/stat") -> dict[str, float]:
    """Seconds the whole machine spent in each state since boot (summed over its cores); {} where there is
    no /proc/stat. The differences over a measurement tell a slow machine from slow code: `steal` is time
    the hypervisor gave this VM's cores to others, `iowait` idle time waiting on the disk."""
    try:
        with open(path) as f:
            first = f.readline().split()
    except OSError:
        return {}
    if not first or first[0] != "cpu":
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    return {name: int(v) / tick for name, v in zip(_PROC_STAT_FIELDS, first[1:], strict=False)}


def cpu_description(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its widest vector instructions ("?" where there is no /proc/cpuinfo): the
    same work took 1.6x more CPU seconds on one of this project's machines than on another."""
    try:
        text = open(path).read()
    except OSError:
        return "?"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {widest}"


def host_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Each state's share of the machine's time between two host_cpu_times readings ({} if either is)."""
    if not before or not after:
        return {}
    delta = {k: after[k] - before[k] for k in before if k in after}
    total = sum(delta.values())
    return {k: v / total for k, v in delta.items()} if total > 0 else {}


@dataclass
class Summary:
    """Median and spread of repeated measurements (seconds, bytes, ratios: whatever was measured)."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements to summarise")
        v = np.asarray(values, dtype=float)
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(v.min()), float(v.max()), len(v))

    def scaled(self, k: float) -> Summary:
        return Summary(self.median * k, self.q1 * k, self.q3 * k, self.lo * k, self.hi * k, self.n)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    inner: int = 1,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall seconds per call of each function, measured ABAB (the order alternates every round: AB, BA,
    ...) so that load from other processes falls on all of them alike. `inner` calls per timed sample.
    `cpu`, if given, receives this process's CPU seconds per call too: with one thread that is the
    wall time the call would take on an idle core, and other processes' bursts do not inflate it."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu is not None:
        cpu.update({name: [] for name in names})
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            fn = fns[name]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
            if cpu is not None:
                cpu[name].append((time.process_time() - c0) / inner)
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> Summary:
    """Ratio of two interleaved series, round by round (each pair ran back to back, under the same load)."""
    if len(num) != len(den):
        raise ValueError(f"paired series of different lengths ({len(num)} vs {len(den)})")
    return Summary.of([a / b for a, b in zip(num, den, strict=False)])


@dataclass
class Figure:
    """One number of reports/bench.md: what, its value and spread, the goal beside it, how to reproduce."""

    section: str
    name: str
    value: float
    unit: str
    spread: str = ""
    goal: str = ""
    met: bool | None = None
    command: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def goal_at_most(value: float, limit: float) -> tuple[str, bool]:
    return f"<= {limit:g}", value <= limit


def goal_at_least(value: float, limit: float) -> tuple[str, bool]:
    return f">= {limit:g}", value >= limit


def fmt_spread(s: Summary, digits: int = 3, unit: str = "") -> str:
    if s.n == 1:
        return "n=1"
    return f"IQR {s.q1:.{digits}f}-{s.q3:.{digits}f}{unit}, min/max {s.lo:.{digits}f}/{s.hi:.{digits}f}{unit}, n={s.n}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
