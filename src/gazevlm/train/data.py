"""What the training loop reads: per-rank batches of a split, the train texts, and a vision-feature cache.

The loop talks to a `DataSource`; `ShardSource` is the real one (WebDataset shards of the heatmap
stage, split per rank by `gazevlm.shards.make_loader`). Tests pass their own source so that a 2-rank
run sees exactly the global batches of a 1-rank run.

Both shard sources take the run's gaze inputs (gazevlm.gaze_inputs): none for every run but the
gaze-input baselines, whose frames get their heatmap painted over them and/or whose batches carry
`gaze_points` for the prompt (`prompt_inputs`).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from gazevlm import gaze_inputs, layout
from gazevlm.gaze_inputs import GazeInputs

_CPU = torch.device("cpu")  # where the feature cache keeps its tensors by default


class DataSource(Protocol):
    def train_texts(self) -> list[str]:
        """Target texts of the train split, in a fixed order (the tokenizer is built from them)."""

    def num_samples(self, split: str) -> int:
        """Number of samples of a split over all ranks."""

    def batches(
        self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int, shuffle: bool, seed: int
    ) -> Iterable[dict]:
        """This rank's batches: pixels (B,T,3,H,W) in [0,1], gaze_target (B,T,gh,gw), gaze_valid (B,T),
        text (list[str]), window_id (list[str]); gaze_points for a gaze_text run only."""


def split_files(task: str, split: str, root: Path) -> list[str]:
    """The shards of (task, split); a clear error when there are none."""
    files = layout.shard_files(task, split, root)
    if not files:
        raise FileNotFoundError(
            f"{layout.shard_pattern(task, split, root)}: no {split} shards for task {task!r}"
            " (run the heatmaps stage first)"
        )
    return files


def prompt_inputs(batch: dict) -> dict:
    """What the text codec takes from a batch besides its texts: the gaze points of a gaze_text run's
    windows, nothing for any other run (their batches carry no gaze_points)."""
    return {"gaze": batch["gaze_points"]} if "gaze_points" in batch else {}


def _tokenizer_texts(texts: list[str], inputs: GazeInputs) -> list[str]:
    if not inputs.text:
        return texts
    from gazevlm.models.text import gaze_vocabulary

    return texts + gaze_vocabulary()  # a word tokenizer must know the prompt's coordinates


class ShardSource:
    """The heatmap stage's shards: data/shards/<task>/<split>-NNNNNN.tar."""

    def __init__(
        self,
        task: str,
        root: Path = layout.SHARDS_DIR,
        shuffle_buffer: int = 64,
        num_workers: int = 0,
        inputs: GazeInputs = gaze_inputs.NONE,
    ):
        self.task, self.root = task, Path(root)
        self.shuffle_buffer, self.num_workers = shuffle_buffer, num_workers
        self.inputs = inputs
        self._json: dict[str, list[dict]] = {}

    def _files(self, split: str) -> list[str]:
        return split_files(self.task, split, self.root)

    def _records(self, split: str) -> list[dict]:
        """The json member of every sample, read straight from the tars (no image decoding); every
        shard checked against the split's manifest (sha256, and its number of samples)."""
        from gazevlm.shards import ShardError, verify_split

        if split not in self._json:
            self._files(split)  # a clear error when the split has no shards
            records = []
            for path, expected in verify_split(self.task, split, self.root).items():
                found = 0
                try:
                    with tarfile.open(path) as tar:
                        for member in tar:
                            if member.isfile() and member.name.endswith(".json"):
                                records.append(json.loads(tar.extractfile(member).read()))
                                found += 1
                except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
                    raise ShardError(f"{path}: unreadable shard: {err}") from None
                if found != expected:
                    raise ShardError(f"{path}: {found} samples but the manifest records {expected} (truncated?)")
            self._json[split] = records
        return self._json[split]

    def train_texts(self) -> list[str]:
        """The train targets (and, for a gaze_text run, the gaze prompt's words): the tokenizer's texts."""
        texts = []
        for rec in self._records("train"):
            if "target_text" not in rec:
                raise ValueError(
                    f"{self.root / self.task}: a train sample's json has no target_text "
                    f"(window {rec.get('window_id')!r})"
                )
            texts.append(rec["target_text"])
        return _tokenizer_texts(texts, self.inputs)

    def num_samples(self, split: str) -> int:
        return len(self._records(split))

    def batches(
        self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int, shuffle: bool, seed: int
    ) -> Iterable[dict]:
        from gazevlm import shards

        self._files(split)  # a clear error when the split has no shards
        loader = shards.make_loader(
            (self.task, split),
            batch_size=batch_size,
            with_gaze=True,
            rank=rank,
            world_size=world_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            shuffle_buffer=self.shuffle_buffer,
            num_workers=self.num_workers,
            drop_last=shuffle,
            root=self.root,
            with_heatmap=self.inputs.any,
        )
        if not self.inputs.any:
            return loader
        return (gaze_inputs.model_inputs(b, self.inputs, keep_loss_targets=True) for b in loader)


def full_groups(batches: Iterable[dict], group: int, batch_size: int) -> Iterator[list[dict]]:
    """Groups of `group` batches of exactly `batch_size` samples (one optimizer step's micro-batches).
    A short tail batch is dropped so that every micro-batch of every rank weighs the same."""
    buf: list[dict] = []
    for b in batches:
        if len(b["window_id"]) != batch_size:
            continue
        buf.append(b)
        if len(buf) == group:
            yield buf
            buf = []


class VisionFeatureCache:
    """encode_vision once per sample (keyed by window_id), reused every epoch.

    Each sample is encoded on its own, so its features do not depend on which other samples share
    its batch: a resumed run, or a run on another number of ranks, reuses bit-identical features.
    `warm` (MemorySource, one rank) instead encodes whole splits in fixed chunks of sorted window ids:
    still the same features in a resumed run, not bit-identical to the per-sample ones.

    Memory, on `store` (host RAM by default), per rank: frames x patches x width x bytes per window,
    for every window the rank has seen (train and val). The shard-to-rank assignment is reshuffled
    every epoch, so after a few epochs every rank holds about the whole train + val set:
      tiny preset (float32 on CPU): 5 x 64 x 128 x 4 B = 0.16 MB per window; ~500 windows = 80 MB.
      paper preset (bf16 under GPU autocast): 5 x 256 x 1024 x 2 B = 2.6 MB per window; 10k windows
      = 26 GB per rank. Beyond host RAM, set train.cache_vision_features: false (the frozen tower then
      runs in every step, under no_grad).
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], store: torch.device = _CPU):
        self.encode, self.store = encode, store
        self.features: dict[str, torch.Tensor] = {}
        self.hits = self.misses = self.loaded = 0

    def load(self, window_ids: list[str], features: torch.Tensor) -> None:
        """Take the features (N, T, P, D) of these windows as computed elsewhere (gazevlm.features: the
        same numbers, encoded once for every run); windows already in the cache keep theirs."""
        features = features.to(self.store)
        for wid, feat in zip(window_ids, features, strict=True):
            if wid not in self.features:
                self.features[wid] = feat
                self.loaded += 1

    @torch.no_grad()
    def __call__(
        self,
        window_ids: list[str],
        pixels: torch.Tensor | Callable[[], torch.Tensor],
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """Features of the windows; `pixels` may be a function, called only if some window is new."""
        out = []
        got = None
        for i, wid in enumerate(window_ids):
            feat = self.features.get(wid)
            if feat is None:
                if got is None:
                    got = pixels() if callable(pixels) else pixels
                feat = self.encode(got[i : i + 1])
                if not isinstance(feat, torch.Tensor):
                    raise TypeError(f"encode_vision returned {type(feat).__name__}; the cache needs a tensor")
                feat = feat[0].detach().to(self.store)
                self.features[wid] = feat
                self.misses += 1
            else:
                self.hits += 1
            out.append(feat)
        if device is None:
            device = got.device if got is not None else (pixels.device if not callable(pixels) else None)
        return torch.stack(out).to(device) if device is not None else torch.stack(out)

    @torch.no_grad()
    def warm(self, window_ids: list[str], frames_u8: torch.Tensor, device: torch.device, chunk: int = 64) -> None:
        """Encode a whole split up front, in chunks of a fixed order (sorted window ids), so a feature
        depends only on its window and the chunk it falls in, never on the training order: a resumed
        run computes the same features. Much faster than one window at a time on a CPU."""
        order = sorted(range(len(window_ids)), key=lambda i: window_ids[i])
        for start in range(0, len(order), chunk):
            idx = [i for i in order[start : start + chunk] if window_ids[i] not in self.features]
            if not idx:
                continue
            feats = self.encode(frames_u8[idx].to(device).float().div_(255.0))
            for k, i in enumerate(idx):
                self.features[window_ids[i]] = feats[k].detach().to(self.store)
                self.misses += 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())


class MemorySource:
    """The heatmap stage's shards read once into memory, for one process (train.in_memory).

    Streaming the tars re-decodes every JPEG every epoch, which is most of a tiny training step on a
    CPU; the tiny world fits in memory many times over (180 videos: ~1200 windows x 5 frames x 3 x 128
    x 128 bytes = 0.3 GB per split). The JPEGs are decoded only when pixels are first needed (`frames`):
    never, when the feature cache holds every window (gazevlm.features). Batches are drawn from a
    permutation seeded by (seed, epoch), so a resumed run sees exactly the batches it would have seen.
    One rank only: ranks > 1 stream the shards (ShardSource), each its own part.
    """

    def __init__(self, task: str, root: Path = layout.SHARDS_DIR, inputs: GazeInputs = gaze_inputs.NONE):
        self.task, self.root = task, Path(root)
        self.inputs = inputs
        self._splits: dict[str, dict] = {}

    def _split(self, split: str) -> dict:
        if split not in self._splits:
            from gazevlm import shards

            # the same checks as ShardSource: the split exists, and every shard matches its manifest
            # (sha256 too: a shard altered in place keeps its size, which is all iter_samples checks)
            split_files(self.task, split, self.root)
            shards.verify_split(self.task, split, self.root)
            jpegs, targets, valids, heatmaps, texts, ids = [], [], [], [], [], []
            for s in shards.iter_samples((self.task, split), with_gaze=True, root=self.root, with_frames=False):
                jpegs.append(s["jpegs"])
                targets.append(torch.from_numpy(s["target"].astype("float32")))
                valids.append(torch.from_numpy(s["valid"].astype(bool)))
                if self.inputs.any:  # kept only for a gaze-input run: the others never hold the heatmap
                    heatmaps.append(torch.from_numpy(s["heatmap"].astype("float32")))
                texts.append(s["text"])
                ids.append(s["window_id"])
            if not ids:
                raise ValueError(f"{self.root / self.task}: the {split} split has no samples")
            data = {
                "jpegs": jpegs,
                "target": torch.stack(targets),
                "valid": torch.stack(valids),
                "text": texts,
                "window_id": ids,
            }
            if self.inputs.any:  # a gaze-input run: the heatmap overlaid on its frames and/or its points as text
                data["heatmap"] = torch.stack(heatmaps)
                if self.inputs.text:
                    data["gaze_points"] = gaze_inputs.heatmap_points(data["heatmap"], data["valid"])
            self._splits[split] = data
        return self._splits[split]

    def frames(self, split: str) -> torch.Tensor:
        """The split's frames (N, T, 3, H, W) uint8, decoded on first use."""
        from gazevlm import shards

        data = self._split(split)
        if "frames" not in data:
            where = f"{self.root / self.task} {split} window"
            frames = torch.stack(
                [
                    torch.from_numpy(shards.decode_jpegs(j, f"{where} {w}")).permute(0, 3, 1, 2)
                    for j, w in zip(data["jpegs"], data["window_id"], strict=True)
                ]
            )
            if self.inputs.overlay:  # made once here, so the feature cache encodes the frames the run trains on
                frames = gaze_inputs.overlay_frames(frames, data["heatmap"], data["valid"])
            data["frames"] = frames
        return data["frames"]

    def train_texts(self) -> list[str]:
        """The train targets in window-id order (and, for a gaze_text run, the gaze prompt's words)."""
        data = self._split("train")
        order = sorted(range(len(data["window_id"])), key=lambda i: data["window_id"][i])
        return _tokenizer_texts([data["text"][i] for i in order], self.inputs)

    def num_samples(self, split: str) -> int:
        return len(self._split(split)["window_id"])

    def warm(self, cache: VisionFeatureCache, device: torch.device) -> None:
        """Encode the train and val splits into the feature cache in one pass each (nothing to decode
        or encode for a split whose windows the cache holds already)."""
        for split in ("train", "val"):
            data = self._split(split)
            if any(w not in cache.features for w in data["window_id"]):
                cache.warm(data["window_id"], self.frames(split), device)

    def batches(
        self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int, shuffle: bool, seed: int
    ) -> Iterator[dict]:
        if world_size != 1 or rank != 0:
            raise ValueError(
                "MemorySource serves one process; with several ranks stream the shards (params.train.in_memory: false)"
            )
        data = self._split(split)
        n = len(data["window_id"])
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        else:
            order = torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if shuffle and len(idx) < batch_size:
                return  # drop_last, as the shard reader does for training
            rows = idx.tolist()
            batch = {
                "frame_rows": FrameRows(self, split, idx, int(data["target"].shape[1])),
                "gaze_target": data["target"][idx],
                "gaze_valid": data["valid"][idx],
                "text": [data["text"][i] for i in rows],
                "window_id": [data["window_id"][i] for i in rows],
            }
            if "gaze_points" in data:
                batch["gaze_points"] = [data["gaze_points"][i] for i in rows]
            yield batch


@dataclass(frozen=True)
class FrameRows:
    """Some windows of a MemorySource split, whose frames are gathered (and the split decoded) only when
    a step needs pixels: with the vision-feature cache warm, none does (gathering 32 windows' frames
    cost ~7 ms a step, a tenth of a tiny step)."""

    source: MemorySource
    split: str
    rows: torch.Tensor
    n_frames: int

    def gather(self) -> torch.Tensor:
        """(B, T, 3, H, W) uint8."""
        return self.source.frames(self.split)[self.rows]


def batch_pixels(batch: dict) -> torch.Tensor:
    """The batch's frames as float pixels in [0, 1]; MemorySource batches carry rows of uint8 frames,
    gathered and converted only when asked (with the vision-feature cache warm, a step never needs them)."""
    if "pixels" in batch:
        return batch["pixels"]
    return batch["frame_rows"].gather().float().div_(255.0)


def batch_frames(batch: dict) -> int:
    return int(batch["pixels"].shape[1]) if "pixels" in batch else batch["frame_rows"].n_frames
