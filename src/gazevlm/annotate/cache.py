"""On-disk cache of chat responses keyed by a content hash of what was asked.

One JSON file per request, <dir>/<sha256>.json, written atomically (gazevlm.atomic), so
a run killed at any moment leaves either a complete answer or none, and the next run asks only what
is missing. The key covers the model, the full text sent and the bytes of every image: change any of
them and the question is new. Nothing about the endpoint (URL, key) is part of the key or the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import atomic

log = logging.getLogger(__name__)


def request_key(model: str, text: str, images: Iterable[bytes] = ()) -> str:
    """sha256 over (model, text, sha256 of each image in order)."""
    h = hashlib.sha256()
    h.update(b"gazevlm-annotate-v1\0")
    for part in (model.encode(), text.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    for image in images:
        h.update(hashlib.sha256(image).digest())
    return h.hexdigest()


@dataclass
class ResponseCache:
    directory: Path
    hits: int = 0
    misses: int = 0
    corrupt: int = 0

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply text, or None. A damaged file counts as missing (and is re-asked)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text())
            reply = entry["reply"]
            if not isinstance(reply, str):
                raise TypeError("reply is not a string")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, KeyError, TypeError) as err:
            log.warning("cache file %s is damaged (%s): asking again", path, err)
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return reply

    def put(self, key: str, reply: str, meta: dict | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "reply": reply, **(meta or {})}
        atomic.write_json(self.path(key), entry, indent=1, trailing_newline=False)
