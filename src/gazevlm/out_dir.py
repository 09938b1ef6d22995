"""Output directories of the user-facing commands (gazevlm predict, gazevlm export)."""

from __future__ import annotations

from pathlib import Path


def check_replaceable(final: Path, marker: str) -> None:
    """Refuse to let layout.staged_dir replace a non-empty directory that is not an earlier output of the
    same command (recognised by its `marker` file): a mistyped --out must not delete someone's data."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final}: exists and is not a directory")
    if final.is_dir() and any(final.iterdir()) and not (final / marker).is_file():
        raise FileExistsError(
            f"{final}: not empty and not an earlier output of this command (no {marker}); "
            "choose a new or empty directory"
        )
