"""Write a file whole or not at all: every writer goes through a temporary sibling that is flushed to
disk and then renamed over the target, so a killed or failing run leaves the last good file (or none),
never a truncated one. Standard library only: light enough for every stage to import.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` (not created) for the caller to write; when the block ends without
    error the file is synced and renamed over `path`, otherwise it is deleted and `path` is untouched.

    The name is unique per call (process, thread and call), so concurrent writers of one target never
    share a temporary file; the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace `path` with `data`, atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Replace `path` with `text` (UTF-8), atomically; returns `path`."""
    return write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` with every NaN float (numpy's too) as None, mapping keys as str and tuples as lists: the
    metrics files are read by DVC and strict JSON readers, which reject NaN."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(
    path: str | Path,
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
    trailing_newline: bool = True,
) -> Path:
    """Replace `path` with `obj` as JSON, atomically; returns `path`. The keywords are json.dumps's:
    each file format keeps its own (the bytes of earlier outputs must not change)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, default=default)
    return write_text(path, text + ("\n" if trailing_newline else ""))
