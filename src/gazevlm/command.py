"""How every `gazevlm` subcommand (and `python -m gazevlm.predict|export`) ends: a user error becomes
one line on stderr and exit status 1; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _user_errors() -> tuple[type[BaseException], ...]:
    from gazevlm.checkpoint import CheckpointError
    from gazevlm.params import ParamsError

    return (FileNotFoundError, FileExistsError, ValueError, CheckpointError, ParamsError)


def run_command(fn: Callable[[argparse.Namespace], Any], args: argparse.Namespace, prog: str) -> int:
    """Run a subcommand; a user error becomes `<prog>: error: <message>` on stderr and exit status 1."""
    try:
        fn(args)
    except _user_errors() as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0
