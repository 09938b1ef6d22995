"""The `gazevlm` console command: `gazevlm predict` (gazevlm.predict) and `gazevlm export` (gazevlm.export).

Errors a user can fix (a missing or corrupt video, a video shorter than one window, a model directory
from another version or project state, an output directory that is someone else's) print one line
naming the file and the problem, and the command exits with status 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gazevlm import __version__
from gazevlm.command import run_command


def parser() -> argparse.ArgumentParser:
    from gazevlm import export, predict

    ap = argparse.ArgumentParser(prog="gazevlm", description="Use a trained gazevlm model outside the pipeline.")
    ap.add_argument("--version", action="version", version=f"gazevlm {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, module in (("predict", predict), ("export", export)):
        summary = module.__doc__.split("\n\n")[0]
        module.add_arguments(sub.add_parser(name, help=summary, description=summary))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from gazevlm import export, predict

    args = parser().parse_args(argv)
    fn = {"predict": predict.run, "export": export.run}[args.command]
    return run_command(fn, args, f"gazevlm {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
