"""Wall time of the README's `make repro` from a fresh clone: its install, then the default pipeline.

    git clone <this repo> <tmp>/gazevlm          # the committed HEAD, nothing of the working tree
    make install                                   # the README's install: .venv + pinned stack
    make repro                                     # install done: the placeholder, then `dvc repro`

pip runs as configured on this machine (its cache and wheel sources are reused: nothing is
downloaded twice). Stage times come from the lines DVC prints when it starts each stage. Takes
about 10 minutes, so `python -m bench` runs it only with --pipeline.

    python -m bench.bench_pipeline [--keep] [--repo PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bench import Figure, cpu_description, goal_at_most, host_cpu_times, host_shares, load_average, quiet

REPO = Path(__file__).resolve().parent.parent
# the last measurement, kept so that `python -m bench` (without --pipeline) still reports it, dated
RESULTS = Path("reports/bench_pipeline.json")
INSTALL_GOAL_S = 5 * 60
REPRO_GOAL_S = 15 * 60  # `make repro` on a fresh clone, install included (issue 14)
MODULE = "python -m bench.bench_pipeline"
_STAGE = re.compile(r"Running stage '([^']+)'")


class Timed(NamedTuple):
    wall_s: float
    stages_s: dict[str, float]  # per DVC stage, from one 'Running stage' line to the next
    cpu_s: float  # user + system seconds of the command and every descendant it waited for
    host: dict[str, float]  # the whole machine's share of time per state meanwhile (host_shares)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float) -> Timed:
    """Run cmd to its end, logging its output; its wall and CPU seconds, and the wall seconds per DVC stage.

    Beside the wall time, what it cannot tell alone: the CPU seconds of the work (the same work in more
    CPU seconds means slower cores) and the machine's steal share (cores the hypervisor gave to others)."""
    cpu0, host0 = _children_cpu_s(), host_cpu_times()
    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    current, since = None, t0
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                out.write(line)
                m = _STAGE.search(line)
                if m:
                    now = time.perf_counter()
                    if current:
                        stages[current] = now - since
                    current, since = m.group(1), now
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    raise TimeoutError(f"{' '.join(cmd)}: still running after {timeout_s:.0f} s (log {log})")
        finally:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    if current:
        stages[current] = t0 + wall - since
    if rc != 0:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}) in {cwd}; log {log}:\n" + "\n".join(tail))
    return Timed(wall, stages, _children_cpu_s() - cpu0, host_shares(host0, host_cpu_times()))


def run(repo: Path = REPO, keep: bool = False, timeout_s: float = 3600.0, log_dir: Path | None = None) -> list[Figure]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-clone-"))
    clone = tmp / "gazevlm"
    log = (log_dir or tmp) / "bench_pipeline.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    # the clone's own venv first, as the Makefile does: papermill's `python3` kernel must be its python
    env["PATH"] = f"{clone / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True, env=env)
        load0 = load_average()
        install = _run(["make", "install"], clone, env, log, timeout_s)
        load1 = load_average()
        pipeline = _run(["make", "repro"], clone, env, log, timeout_s)
        load2 = load_average()
    finally:
        if keep:
            print(f"clone kept in {clone}; log {log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    where = f"fresh clone of {head}"
    install_s, pipeline_s = install.wall_s, pipeline.wall_s
    g1, m1 = goal_at_most(install_s / 60, INSTALL_GOAL_S / 60)
    repro_s = install_s + pipeline_s  # what a user waits for: one `make repro` on a fresh clone
    g2, m2 = goal_at_most(repro_s / 60, REPRO_GOAL_S / 60)
    split = ", ".join(f"{k} {v:.0f} s" for k, v in pipeline.stages_s.items())
    return [
        Figure(
            "pipeline",
            f"README install (`make install`), {where}",
            install_s / 60,
            "min",
            "n=1",
            g1,
            m1,
            f"{MODULE}",
            f"{install_s:.0f} s; load average {load0:.1f} at start; {machine_note(install)}",
            {"seconds": install_s, "cpu_s": install.cpu_s, "host": install.host},
        ),
        Figure(
            "pipeline",
            f"`make repro` (install included), {where}",
            repro_s / 60,
            "min",
            "n=1",
            g2,
            m2,
            f"{MODULE}",
            f"{repro_s:.0f} s: install {install_s:.0f} s, then the pipeline {pipeline_s:.0f} s (load average "
            f"{load1:.1f} at its start, {load2:.1f} at its end; {machine_note(pipeline)}); {split}",
            {
                "seconds": repro_s,
                "install_s": install_s,
                "pipeline_s": pipeline_s,
                "pipeline_cpu_s": pipeline.cpu_s,
                "pipeline_host": pipeline.host,
                "stages_s": pipeline.stages_s,
            },
        ),
    ]


def machine_note(t: Timed) -> str:
    """CPU seconds over wall seconds (how many cores the command kept busy on average) and the machine's
    steal and iowait shares meanwhile."""
    note = f"CPU {t.cpu_s:.0f} s = {t.cpu_s / t.wall_s:.2f} cores busy" if t.wall_s > 0 else f"CPU {t.cpu_s:.0f} s"
    if t.host:
        note += f", steal {t.host.get('steal', 0.0):.1%}, iowait {t.host.get('iowait', 0.0):.1%}"
    return f"{note}; {cpu_description()}"


def save(figures: list[Figure], commit: str, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "commit": commit,
                "figures": [f.as_dict() for f in figures],
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=MODULE, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO, help="the repository to clone (default: this one)")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    ap.add_argument(
        "--log-dir", type=Path, default=None, help="write bench_pipeline.log here (default: in the clone's temp dir)"
    )
    args = ap.parse_args(argv)
    quiet()
    # the commit cloned (HEAD may move while the pipeline runs)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.repo, capture_output=True, text=True
    ).stdout.strip()
    figures = run(args.repo, args.keep, log_dir=args.log_dir)
    save(figures, head)
    for f in figures:
        print(f"{f.name}: {f.value:.1f} {f.unit} goal {f.goal}  {f.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
