"""Caption keyframes with a vision-language chat model, a chunk of consecutive frames per request.

A chunk is up to chunk_size consecutive keyframes of one video (the paper sends about 10 frames per
request); it is also the "sequence" that prompt refinement reviews. The reply must carry exactly one
caption per frame: numbered lines ("1.", "2)", "Frame 3:", "**4.**") or, without numbering, exactly
as many non-empty lines as frames. Anything else fails the chunk (its raw reply stays cached, so the
failure is reproducible); captions are never guessed or shifted to fit.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .cache import ResponseCache, request_key
from .llm_client import ChatClient, ChatError, image_part

log = logging.getLogger(__name__)


class CaptionCountError(ValueError):
    """The reply does not hold exactly one caption per frame."""


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    uid: str
    split: str
    keyframe_ids: tuple[str, ...]
    paths: tuple[str, ...]


@dataclass
class ChunkResult:
    chunk_id: str
    captions: list[str] | None  # None when the chunk failed
    error: str | None = None
    cached: bool = False


def make_chunks(keyframes: pd.DataFrame, chunk_size: int) -> list[Chunk]:
    """Consecutive keyframes of each video (ordered by frame index, never by file name) in chunks."""
    if chunk_size < 1:
        raise ValueError(f"annotate.llm.chunk_size must be >= 1, got {chunk_size}")
    chunks = []
    for uid, group in keyframes.sort_values(["uid", "frame"]).groupby("uid", sort=True):
        rows = list(group.itertuples(index=False))
        for start in range(0, len(rows), chunk_size):
            part = rows[start : start + chunk_size]
            chunks.append(
                Chunk(
                    chunk_id=f"{uid}_{int(part[0].frame):07d}_{len(part)}",
                    uid=str(uid),
                    split=str(part[0].split),
                    keyframe_ids=tuple(r.keyframe_id for r in part),
                    paths=tuple(str(r.path) for r in part),
                )
            )
    return chunks


def request_text(prompt: str, n_frames: int) -> str:
    """The prompt plus a fixed format instruction the parser relies on (refinement cannot break it)."""
    return (
        f"{prompt.strip()}\n\nYou are given {n_frames} frames from one egocentric video, in time order. "
        f"Reply with exactly {n_frames} lines numbered 1 to {n_frames}, one caption per frame, "
        "and nothing else."
    )


_NUMBERED = re.compile(
    r"^\s*(?:[-*#>]+\s*)?\**\s*(?:frame|image)?\s*#?\s*(\d{1,3})\s*\**\s*(?:[.):\]]|\s-|\s–)\s*\**\s*(.*)$",
    re.IGNORECASE,
)


def parse_captions(reply: str, n_frames: int) -> list[str]:
    """Exactly n_frames captions from a reply, or CaptionCountError saying what was wrong."""
    lines = [ln.strip() for ln in reply.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln and not ln.startswith("```")]
    numbered: dict[int, str] = {}
    order: list[int] = []
    current: int | None = None
    for line in lines:
        m = _NUMBERED.match(line)
        if m:
            current = int(m.group(1))
            if current in numbered:
                raise CaptionCountError(f"frame {current} numbered twice")
            numbered[current] = _tidy(m.group(2))
            order.append(current)
        elif current is not None:
            numbered[current] = _tidy(f"{numbered[current]} {line}")  # a caption wrapped over two lines
        # unnumbered lines before the first number are a preamble ("Here are the captions:")
    if numbered:
        if sorted(numbered) != list(range(1, n_frames + 1)) or order != sorted(order):
            raise CaptionCountError(f"expected frames 1..{n_frames} in order, got numbers {order}")
        return [numbered[i] for i in range(1, n_frames + 1)]
    if len(lines) != n_frames:
        raise CaptionCountError(f"expected {n_frames} captions, got {len(lines)} unnumbered lines")
    return [_tidy(re.sub(r"^[-*\u2022]\s+", "", line)) for line in lines]


def _tidy(text: str) -> str:
    text = re.sub(r"\*\*|__", "", text)
    text = re.sub(r"\s+", " ", text).strip().strip('"').strip()
    return text.lower().rstrip(".").strip()


def annotate_chunks(
    client: ChatClient, cache: ResponseCache, prompt: str, chunks: list[Chunk], root: Path
) -> dict[str, ChunkResult]:
    """Caption every chunk with one prompt, answering from the cache first and caching each reply
    as soon as it arrives (a killed run resumes where it stopped)."""
    results = {}
    for chunk in chunks:
        images = [_read_image(root, p) for p in chunk.paths]
        text = request_text(prompt, len(images))
        key = request_key(client.model, text, images)
        reply = cache.get(key)
        cached = reply is not None
        if reply is None:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": text}]
                    + [image_part(img, p) for img, p in zip(images, chunk.paths, strict=False)],
                }
            ]
            try:
                reply = client.complete(messages)
            except ChatError as err:
                log.warning("chunk %s failed: %s", chunk.chunk_id, err)
                results[chunk.chunk_id] = ChunkResult(chunk.chunk_id, None, f"request: {err}")
                continue
            cache.put(
                key,
                reply,
                {
                    "model": client.model,
                    "kind": "captions",
                    "chunk_id": chunk.chunk_id,
                    "prompt_sha256": sha256_text(prompt),
                    "n_images": len(images),
                },
            )
        try:
            captions = parse_captions(reply, len(images))
        except CaptionCountError as err:
            log.warning("chunk %s: unusable reply: %s", chunk.chunk_id, err)
            results[chunk.chunk_id] = ChunkResult(chunk.chunk_id, None, f"parse: {err}", cached)
            continue
        results[chunk.chunk_id] = ChunkResult(chunk.chunk_id, captions, None, cached)
    return results


def _read_image(root: Path, path: str) -> bytes:
    full = Path(path) if Path(path).is_absolute() else root / path
    try:
        return full.read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{full}: keyframe image listed in keyframes.parquet does not exist") from err


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
