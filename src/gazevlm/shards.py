"""WebDataset shards of observation windows: writing, and reading per rank and per worker.

Sample layout (see gazevlm.layout): key = window_id; f0.jpg .. f{T-1}.jpg; target.npy (T, gh, gw)
float32; valid.npy (T,) bool; heatmap.npy (T, S, S) float16; json (metadata incl. target_text and
absolute frame indices). Frames are read back by their index from the json, never by file order.

Reading: `make_loader` returns a torch DataLoader of model-ready batches. Each of the
world_size x num_workers readers ("slots") gets a disjoint part of the data without needing an
initialised process group (see `assign_shards`): whole shards where they divide evenly, the
remainder shared sample by sample, so every rank sees about the same number of windows (the
training loop stops an epoch at the rank with the fewest batches). Shards are shuffled with
(seed, epoch), identically on every rank so the parts stay disjoint, then samples pass through a
bounded shuffle buffer of still-encoded bytes (small, unlike decoded frames). With
with_gaze=False the gaze entries are never decoded and the batches carry no gaze keys at all (the
evaluation reader).

Completeness: the writer lists every shard of a split with its sample count, size and sha256 in
<split>.manifest.json next to it. A tar cut at a member boundary reads as a shorter, valid tar, so
the readers check the manifest: a split looked up as (task, split) must have one, every shard it
lists and nothing else, each of the recorded size; while streaming, each shard must yield its
recorded number of samples; `verify_split` also checks the sha256 (the training stage's count).
Any mismatch, and any unreadable member (garbage .npy, JSON, JPEG), raises ShardError naming the shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import webdataset as wds

from gazevlm import atomic, layout

GAZE_ENTRIES = ("target.npy", "valid.npy", "heatmap.npy")


class ShardError(RuntimeError):
    """A shard or a sample in it is unreadable or incomplete."""


# --------------------------------------------------------------------------------------- writing
def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_sample(
    window_id: str,
    frames_jpeg: Sequence[bytes],
    target: np.ndarray,
    valid: np.ndarray,
    heatmap: np.ndarray,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One window as a WebDataset sample (all values already bytes)."""
    if "." in window_id:
        raise ValueError(f"window_id {window_id!r} contains '.', which WebDataset reads as an extension")
    t = len(frames_jpeg)
    if target.shape[0] != t or valid.shape != (t,) or heatmap.shape[0] != t:
        raise ValueError(
            f"{window_id}: {t} frames but target {target.shape}, valid {valid.shape}, heatmap {heatmap.shape}"
        )
    sample: dict[str, Any] = {"__key__": window_id}
    for i, jpeg in enumerate(frames_jpeg):
        sample[f"f{i}.jpg"] = jpeg
    sample["target.npy"] = npy_bytes(target.astype(np.float32))
    sample["valid.npy"] = npy_bytes(valid.astype(bool))
    sample["heatmap.npy"] = npy_bytes(heatmap.astype(np.float16))
    sample["json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
    return sample


def even_shard_size(n_samples: int, max_samples: int) -> int:
    """Samples per shard so that n_samples fill ceil(n / max) shards evenly (e.g. 266 at most 256
    -> 133 + 133, not 256 + 10): whole-shard splits between ranks then stay balanced."""
    if max_samples < 1:
        raise ValueError(f"heatmaps.shard_max_samples must be >= 1, got {max_samples}")
    n_shards = max(1, -(-n_samples // max_samples))
    return max(1, -(-n_samples // n_shards))


class ShardSetWriter:
    """Writes one (task, split) shard set through webdataset.ShardWriter, opened on the first sample
    (an empty split leaves no empty tar behind), reproducible bytes (fixed mtime), and on close the
    split's manifest (see `manifest_path`)."""

    def __init__(self, pattern: str, max_samples: int) -> None:
        if max_samples < 1:
            raise ValueError(f"heatmaps.shard_max_samples must be >= 1, got {max_samples}")
        self.pattern = pattern
        self.max_samples = max_samples
        self.count = 0
        self.files: list[str] = []
        self.counts: dict[str, int] = {}
        self._in_shard = 0
        self._writer: wds.ShardWriter | None = None

    def _finished(self, fname: str) -> None:
        # ShardWriter calls this when it closes a shard, before the next sample goes to the next one
        self.files.append(fname)
        self.counts[fname] = self._in_shard
        self._in_shard = 0

    def write(self, sample: dict[str, Any]) -> None:
        if self._writer is None:
            Path(self.pattern).parent.mkdir(parents=True, exist_ok=True)
            # an integer mtime: a float one makes tarfile add a pax header to every member, which
            # the reader then parses for every sample (about 40% of its time)
            self._writer = wds.ShardWriter(
                self.pattern, maxcount=self.max_samples, verbose=0, encoder=False, mtime=0, post=self._finished
            )
        self._writer.write(sample)
        self._in_shard += 1
        self.count += 1

    def close(self) -> list[str]:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            write_manifest(manifest_path(self.pattern), self.files, self.counts)
        return self.files


class PooledWriter:
    """Bounded shuffle on the writing side: windows arrive video by video; a pool of `pool` pending
    windows emits a random one whenever it is full, so each shard mixes many videos. Pending items
    stay unencoded (`encode(item)` runs on emission) so windows sharing keyframes share their arrays."""

    def __init__(
        self,
        writer: ShardSetWriter,
        pool: int,
        rng: random.Random,
        encode: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        self.writer, self.pool, self.rng = writer, max(1, pool), rng
        self.encode = encode or (lambda item: item)
        self._buf: list[Any] = []

    def add(self, item: Any) -> None:
        self._buf.append(item)
        if len(self._buf) > self.pool:
            self._emit()

    def _emit(self) -> None:
        k = self.rng.randrange(len(self._buf))
        self._buf[k], self._buf[-1] = self._buf[-1], self._buf[k]
        self.writer.write(self.encode(self._buf.pop()))

    def close(self) -> list[str]:
        while self._buf:
            self._emit()
        return self.writer.close()


# -------------------------------------------------------------------------------------- manifest
MANIFEST_FORMAT = "gazevlm-shards/1"


def manifest_path(pattern_or_shard: str | Path) -> Path:
    """<dir>/<split>.manifest.json for a writer pattern (<dir>/<split>-%06d.tar) or one of its shards."""
    path = Path(pattern_or_shard)
    return path.parent / f"{path.name.split('%')[0].rsplit('-', 1)[0]}.manifest.json"


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path, files: Sequence[str], counts: dict[str, int] | None = None) -> Path:
    """Record each shard's sample count (counted from the tars when not given), size and sha256."""
    if counts is None:
        counts = {
            f: sum(1 for _ in wds.DataPipeline(wds.SimpleShardList([f]), wds.tarfile_to_samples())) for f in files
        }
    shards = {
        Path(f).name: {"samples": int(counts[f]), "bytes": os.path.getsize(f), "sha256": _sha256(f)} for f in files
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "samples": sum(v["samples"] for v in shards.values()),
        "shards": dict(sorted(shards.items())),
    }
    return atomic.write_json(path, manifest, indent=1, sort_keys=True)


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ShardError(
            f"{path}: no shard manifest (the heatmaps stage writes one with the shards; rerun it)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(f"{path}: unreadable shard manifest: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{path}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def check_manifest(files: Sequence[str], *, complete: bool, checksums: bool = False) -> dict[str, int]:
    """Check local shards against their manifests; return the expected samples per shard.

    complete: the files are a whole split (a (task, split) lookup): its manifest must exist and list
    exactly these shards. Otherwise only files that have a manifest are checked (remote URLs are
    checked while streaming). Sizes always, sha256 with `checksums`."""
    expected: dict[str, int] = {}
    by_manifest: dict[Path, list[str]] = {}
    for f in files:
        if _is_local(f):
            by_manifest.setdefault(manifest_path(f), []).append(f)
    for mpath, group in by_manifest.items():
        if not complete and not mpath.is_file():
            continue
        listed = read_manifest(mpath)["shards"]
        names = {Path(f).name: f for f in group}
        if complete:
            missing = sorted(set(listed) - set(names))
            if missing:
                raise ShardError(
                    f"{mpath.parent / missing[0]}: shard listed in {mpath.name} is missing ({len(missing)} missing)"
                )
        for name, f in sorted(names.items()):
            entry = listed.get(name)
            if entry is None:
                raise ShardError(f"{f}: not listed in {mpath} (a shard of another run?)")
            size = os.path.getsize(f)
            if size != entry["bytes"]:
                raise ShardError(
                    f"{f}: {size} bytes but {mpath.name} records {entry['bytes']} "
                    f"({entry['samples']} samples): truncated or replaced"
                )
            if checksums and _sha256(f) != entry["sha256"]:
                raise ShardError(f"{f}: sha256 differs from {mpath.name} (corrupted or replaced)")
            expected[f] = int(entry["samples"])
    return expected


def verify_split(task: str, split: str, root: str | Path = layout.SHARDS_DIR, checksums: bool = True) -> dict[str, int]:
    """Every shard of (task, split) against its manifest, sha256 included; samples per shard."""
    return check_manifest(resolve_files((task, split), root), complete=True, checksums=checksums)


def _count_check(
    samples: Iterable[dict[str, Any]], expected: dict[str, int], urls: Callable[[], list[str]]
) -> Iterator[dict[str, Any]]:
    """Pass samples through, then check each opened shard yielded its manifest's count (a shard cut
    at a member boundary reads as a shorter valid tar). `urls()`: the shards this reader opens."""
    seen: dict[str, int] = {}
    for sample in samples:
        url = sample.get("__url__")
        seen[url] = seen.get(url, 0) + 1
        yield sample
    for url in urls():
        if url in expected and seen.get(url, 0) != expected[url]:
            raise ShardError(
                f"{url}: {seen.get(url, 0)} samples read but the manifest records {expected[url]} (shard truncated?)"
            )


def _tar_error(exn: Exception) -> bool:
    """webdataset's handler for a shard it cannot read: a ShardError naming it, never a bare error."""
    url = next((a for a in reversed(exn.args) if isinstance(a, str) and (a.endswith(".tar") or "://" in a)), None)
    if url is None:
        raise exn  # the inner tar reader: webdataset's outer layer adds the url and calls us again
    raise ShardError(f"{url}: unreadable shard: {exn.args[0] if exn.args else exn}") from exn


# --------------------------------------------------------------------------------------- reading
def resolve_files(source: Sequence[str] | tuple[str, str], root: str | Path = layout.SHARDS_DIR) -> list[str]:
    """A list of shard paths/URLs, or (task, split) looked up under `root`."""
    if isinstance(source, tuple) and len(source) == 2 and source[0] in layout.TASKS:
        files = layout.shard_files(source[0], source[1], Path(root))
        if not files:
            raise ShardError(
                f"no shards for task {source[0]!r}, split {source[1]!r} under {root} "
                f"(pattern {layout.shard_pattern(source[0], source[1], Path(root))})"
            )
        check_manifest(files, complete=True)
        return files
    files = [str(f) for f in source]
    if not files:
        raise ShardError("no shard files given")
    check_manifest(files, complete=False)
    return files


@dataclass(frozen=True)
class SlotPlan:
    """What one slot (rank x worker) reads: whole shards, plus every n_slots-th sample (from `offset`)
    of the stream of shared shards."""

    whole: list[str]
    shared: list[str]
    stride: int
    offset: int


def assign_shards(
    files: Sequence[str], slot: int, n_slots: int, *, shuffle: bool, seed: int, epoch: int, mode: str = "auto"
) -> SlotPlan:
    """Split the shards among n_slots readers, disjointly and completely.

    The shard order depends only on (seed, epoch), the same for every slot.
    "auto": the largest multiple of n_slots of the shards is dealt out whole; the few remaining
    shards are read by every slot, each keeping every n_slots-th of their samples. Counts per slot
    then differ only by shard-size differences (the writer makes shards even), at the cost of
    reading fewer than n_slots shards n_slots times.
    "shards": whole shards only (unequal counts when n_slots does not divide the shard count).
    "samples": every slot reads every shard and keeps every n_slots-th sample."""
    if not 0 <= slot < n_slots:
        raise ValueError(f"slot {slot} outside 0..{n_slots - 1}")
    if mode not in ("auto", "shards", "samples"):
        raise ValueError(f"split mode {mode!r} (have auto, shards, samples)")
    order = sorted(files)
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    if mode == "shards":
        return SlotPlan(order[slot::n_slots], [], n_slots, slot)
    k = (len(order) // n_slots) * n_slots if mode == "auto" else 0
    return SlotPlan(order[:k][slot::n_slots], order[k:], n_slots, slot)


class _Slots:
    """What this rank/worker reads; the worker id is only known inside the worker, so every stage
    asks at iteration time (deterministic, so all stages of one worker agree)."""

    def __init__(
        self, files: list[str], rank: int, world_size: int, shuffle: bool, seed: int, epoch: int, mode: str
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.files, self.rank, self.world_size = files, rank, world_size
        self.shuffle, self.seed, self.epoch, self.mode = shuffle, seed, epoch, mode

    def slot(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * n_workers + worker, self.world_size * n_workers

    def plan(self) -> SlotPlan:
        slot, n_slots = self.slot()
        return assign_shards(
            self.files, slot, n_slots, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch, mode=self.mode
        )


class _SlotShards(torch.utils.data.IterableDataset):
    """Pipeline source: {"url": ...} for each shard of this rank/worker."""

    def __init__(self, slots: _Slots) -> None:
        self.slots = slots

    def __iter__(self) -> Iterator[dict[str, str]]:
        plan = self.slots.plan()
        for url in plan.whole + plan.shared:
            yield {"url": url}


def _keep_slot(samples: Iterable[dict[str, Any]], slots: _Slots) -> Iterator[dict[str, Any]]:
    """Whole shards pass; samples of shared shards are dealt out by their index in the shared stream
    (the same stream, in the same order, for every slot)."""
    plan = slots.plan()
    shared = set(plan.shared)
    i = 0
    for sample in samples:
        if sample.get("__url__") not in shared:
            yield sample
            continue
        if i % plan.stride == plan.offset:
            yield sample
        i += 1


def _drop_gaze(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for sample in samples:
        yield {k: v for k, v in sample.items() if k not in GAZE_ENTRIES}


def _shuffle(samples: Iterable[dict[str, Any]], slots: _Slots, bufsize: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(slots.seed * 1_000_003 + slots.epoch * 10_007 + slots.slot()[0])
    buf: list[dict[str, Any]] = []
    for sample in samples:
        buf.append(sample)
        if len(buf) >= bufsize:
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def _load_npy(raw: dict[str, Any], name: str, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(raw[name]), allow_pickle=False)
    except KeyError:
        raise
    except Exception as err:  # numpy raises ValueError/EOFError/OSError/... for garbage bytes
        raise ShardError(f"{where}: {name} is not a readable .npy array ({type(err).__name__}: {err})") from None


def _load_meta(raw: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw["json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(f"{where}: the json member is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise ShardError(f"{where}: the json member is not an object with a `frames` list")
    return meta


def decode_jpegs(jpegs: Sequence[bytes], where: str) -> np.ndarray:
    """A window's JPEG frames -> (T, H, W, 3) uint8 RGB."""
    frames = []
    for i, data in enumerate(jpegs):
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ShardError(f"{where}: f{i}.jpg cannot be decoded")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def decode_sample(
    raw: dict[str, Any], with_gaze: bool, with_heatmap: bool = True, with_frames: bool = True
) -> dict[str, Any]:
    """Raw tar entries -> numpy: frames (T, H, W, 3) uint8 RGB, meta, and the gaze arrays if asked
    (the full heatmap only with with_heatmap: batches for the model never use it). With
    with_frames=False the JPEGs are not decoded: `jpegs` holds their bytes in frame order instead
    (readers whose vision features come from gazevlm.features decode them only if they must)."""
    where = f"{raw.get('__url__', '?')}: sample {raw.get('__key__', '?')}"
    try:
        meta = _load_meta(raw, where)
        t = len(meta["frames"])
        jpegs = []
        for i in range(t):  # by index from the metadata, never by tar member order
            data = raw.get(f"f{i}.jpg")
            if data is None:
                raise ShardError(f"{where}: missing f{i}.jpg (metadata lists {t} frames)")
            jpegs.append(data)
        out: dict[str, Any] = {"window_id": raw["__key__"], "meta": meta, "text": meta["target_text"]}
        if with_frames:
            out["frames"] = decode_jpegs(jpegs, where)
        else:
            out["jpegs"] = jpegs
        if with_gaze:
            out["target"] = _load_npy(raw, "target.npy", where)
            out["valid"] = _load_npy(raw, "valid.npy", where)
            if with_heatmap:
                out["heatmap"] = _load_npy(raw, "heatmap.npy", where)
            if out["target"].shape[:1] != (t,) or out["valid"].shape != (t,):
                raise ShardError(
                    f"{where}: gaze arrays {out['target'].shape}/{out['valid'].shape} do not match {t} frames"
                )
    except KeyError as err:
        raise ShardError(f"{where}: missing entry {err}") from err
    return out


def collate(samples: list[dict[str, Any]], with_gaze: bool) -> dict[str, Any]:
    """Model-ready batch: pixels float32 (B, T, 3, H, W) in [0, 1]; gaze_target (B, T, gh, gw);
    gaze_valid (B, T) bool; gaze_heatmap (B, T, S, S) when the samples carry their heatmap; text,
    window_id, meta lists. No gaze keys when with_gaze is False."""
    shapes = {s["frames"].shape for s in samples}
    if len(shapes) != 1:
        raise ShardError(
            f"cannot batch windows of different shapes {sorted(shapes)}: {[s['window_id'] for s in samples]}"
        )
    pixels = torch.from_numpy(np.stack([s["frames"] for s in samples])).permute(0, 1, 4, 2, 3)
    batch: dict[str, Any] = {
        "pixels": pixels.float().div_(255.0),
        "text": [s["text"] for s in samples],
        "window_id": [s["window_id"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }
    if with_gaze:
        batch["gaze_target"] = torch.from_numpy(np.stack([s["target"] for s in samples]).astype(np.float32))
        batch["gaze_valid"] = torch.from_numpy(np.stack([s["valid"] for s in samples]).astype(bool))
        if "heatmap" in samples[0]:  # read only for the runs that take gaze as input (gazevlm.gaze_inputs)
            batch["gaze_heatmap"] = torch.from_numpy(np.stack([s["heatmap"] for s in samples]).astype(np.float32))
    return batch


def make_loader(
    source: Sequence[str] | tuple[str, str],
    *,
    batch_size: int,
    with_gaze: bool,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    shuffle_buffer: int = 64,
    num_workers: int = 0,
    drop_last: bool = False,
    split_mode: str = "auto",
    root: str | Path = layout.SHARDS_DIR,
    with_heatmap: bool = False,
) -> torch.utils.data.DataLoader:
    """Batches for one rank (see the module docstring). `source`: shard paths/URLs or (task, split).

    split_mode: "auto" (whole shards, the remainder shared by samples), "shards" or "samples"
    (see `assign_shards`). with_heatmap (with with_gaze): the batches also carry gaze_heatmap, for the
    runs that take gaze as input only.
    Deterministic given (seed, epoch, rank, world_size, num_workers)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if with_heatmap and not with_gaze:
        raise ValueError("with_heatmap needs with_gaze (the heatmap is a gaze entry)")
    files = resolve_files(source, root)
    expected = check_manifest(files, complete=False)
    slots = _Slots(files, rank, world_size, shuffle, seed, epoch, split_mode)
    opened = lambda: [*slots.plan().whole, *slots.plan().shared]  # noqa: E731  (this slot's shards)
    stages: list[Any] = [
        _SlotShards(slots),
        wds.tarfile_to_samples(handler=_tar_error),
        partial(_count_check, expected=expected, urls=opened),
        partial(_keep_slot, slots=slots),
    ]
    if not with_gaze:
        stages.append(_drop_gaze)
    if shuffle and shuffle_buffer > 1:
        stages.append(partial(_shuffle, slots=slots, bufsize=shuffle_buffer))
    stages.append(wds.map(partial(decode_sample, with_gaze=with_gaze, with_heatmap=with_heatmap)))
    stages.append(wds.batched(batch_size, collation_fn=partial(collate, with_gaze=with_gaze), partial=not drop_last))
    # the pipeline yields whole batches: the DataLoader only adds worker processes (batch_size=None)
    dataset = wds.DataPipeline(*stages)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers, persistent_workers=False)


def _raw_samples(url: str, expected: dict[str, int]) -> Iterator[dict[str, Any]]:
    pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(handler=_tar_error))
    yield from _count_check(pipeline, expected, lambda: [url])


def iter_samples(
    source: Sequence[str] | tuple[str, str],
    with_gaze: bool = True,
    root: str | Path = layout.SHARDS_DIR,
    with_frames: bool = True,
) -> Iterator[dict[str, Any]]:
    """Every sample in file order, decoded to numpy (analysis; no shuffling, no splitting); with
    with_frames=False the JPEG bytes instead of the frames (see decode_sample)."""
    files = resolve_files(source, root)
    expected = check_manifest(files, complete=False)
    for url in files:
        for raw in _raw_samples(url, expected):
            yield decode_sample(raw, with_gaze, with_frames=with_frames)


def count_samples(source: Sequence[str] | tuple[str, str], root: str | Path = layout.SHARDS_DIR) -> int:
    """Number of samples (reads the tar headers only through webdataset; no decoding), checked
    against the manifest when there is one."""
    files = resolve_files(source, root)
    expected = check_manifest(files, complete=False)
    return sum(1 for url in files for _ in _raw_samples(url, expected))
