"""layout.staged_dir: a stage's output directory is replaced only when the stage succeeds (issue 15, item 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gazevlm import layout


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def siblings(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def test_success_replaces_the_previous_output_whole(tmp_path):
    final = tmp_path / "out"
    (final / "old").mkdir(parents=True)
    (final / "old" / "a.txt").write_text("previous run")
    with layout.staged_dir(final) as tmp:
        assert tmp != final and tmp.parent == final.parent and not any(tmp.iterdir())
        assert contents(final) == {"old/a.txt": b"previous run"}  # untouched while the stage runs
        (tmp / "b.txt").write_text("this run")
    assert contents(final) == {"b.txt": b"this run"}  # nothing of the previous run is left
    assert siblings(final) == []


def test_a_first_run_creates_the_directory_and_its_parents(tmp_path):
    final = tmp_path / "data" / "extract"
    with layout.staged_dir(final) as tmp:
        (tmp / "x").write_bytes(b"1")
    assert contents(final) == {"x": b"1"} and siblings(final) == []


@pytest.mark.parametrize("error", [RuntimeError("stage failed"), KeyboardInterrupt()])
def test_a_failure_keeps_the_last_good_output_and_leaves_no_trace(tmp_path, error):
    final = tmp_path / "out"
    final.mkdir()
    (final / "good.txt").write_text("last good run")
    with pytest.raises(type(error)), layout.staged_dir(final) as tmp:
        (tmp / "half.txt").write_text("half written")
        raise error
    assert contents(final) == {"good.txt": b"last good run"}
    assert siblings(final) == []


def test_what_a_killed_run_left_is_cleared_by_the_next_run(tmp_path):
    """kill -9 skips every cleanup: the staged copy (and a moved-aside old output) stay on disk until the
    next run of the stage, which removes them before it starts."""
    final = tmp_path / "out"
    final.mkdir()
    (final / "good.txt").write_text("last good run")
    for stale in (f".out.tmp-{os.getpid() + 1}", ".out.old-99999"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "junk").write_text("killed")
    (tmp_path / ".other.tmp-1").mkdir()  # another stage's staging directory is not ours to remove
    with layout.staged_dir(final) as tmp:
        assert siblings(final) == [".other.tmp-1", tmp.name]
        (tmp / "new.txt").write_text("new")
    assert contents(final) == {"new.txt": b"new"}
    assert siblings(final) == [".other.tmp-1"]
