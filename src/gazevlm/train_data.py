"""What the training loop reads: per-rank batches of a split, the train texts, and a vision-feature cache.

The loop talks to a `DataSource`; `ShardSource` is the real one (WebDataset shards of the heatmap
stage, split per rank by `gazevlm.shards.make_loader`). Tests pass their own source so that a 2-rank
run sees exactly the global batches of a 1-rank run.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import torch

from gazevlm import layout


class DataSource(Protocol):
    def train_texts(self) -> list[str]:
        """Target texts of the train split, in a fixed order (the tokenizer is built from them)."""

    def num_samples(self, split: str) -> int:
        """Number of samples of a split over all ranks."""

    def batches(self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int,
                shuffle: bool, seed: int) -> Iterable[dict]:
        """This rank's batches: pixels (B,T,3,H,W) in [0,1], gaze_target (B,T,gh,gw), gaze_valid (B,T),
        text (list[str]), window_id (list[str])."""


class ShardSource:
    """The heatmap stage's shards: data/shards/<task>/<split>-NNNNNN.tar."""

    def __init__(self, task: str, root: Path = layout.SHARDS_DIR, shuffle_buffer: int = 64, num_workers: int = 0):
        self.task, self.root = task, Path(root)
        self.shuffle_buffer, self.num_workers = shuffle_buffer, num_workers
        self._json: dict[str, list[dict]] = {}

    def _files(self, split: str) -> list[str]:
        files = layout.shard_files(self.task, split, self.root)
        if not files:
            raise FileNotFoundError(
                f"{layout.shard_pattern(self.task, split, self.root)}: no {split} shards for task {self.task!r}"
                " (run the heatmaps stage first)")
        return files

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
        texts = []
        for rec in self._records("train"):
            if "target_text" not in rec:
                raise ValueError(f"{self.root / self.task}: a train sample's json has no target_text "
                                 f"(window {rec.get('window_id')!r})")
            texts.append(rec["target_text"])
        return texts

    def num_samples(self, split: str) -> int:
        return len(self._records(split))

    def batches(self, split: str, *, epoch: int, rank: int, world_size: int, batch_size: int,
                shuffle: bool, seed: int) -> Iterable[dict]:
        from gazevlm import shards

        self._files(split)  # a clear error when the split has no shards
        return shards.make_loader((self.task, split), batch_size=batch_size, with_gaze=True, rank=rank,
                                  world_size=world_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                  shuffle_buffer=self.shuffle_buffer, num_workers=self.num_workers,
                                  drop_last=shuffle, root=self.root)


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

    Memory, on `store` (host RAM by default), per rank: frames x patches x width x bytes per window,
    for every window the rank has seen (train and val). The shard-to-rank assignment is reshuffled
    every epoch, so after a few epochs every rank holds about the whole train + val set:
      tiny preset (float32 on CPU): 5 x 64 x 128 x 4 B = 0.16 MB per window; ~500 windows = 80 MB.
      paper preset (bf16 under GPU autocast): 5 x 256 x 1024 x 2 B = 2.6 MB per window; 10k windows
      = 26 GB per rank. Beyond host RAM, set train.cache_vision_features: false (the frozen tower then
      runs in every step, under no_grad).
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], store: torch.device = torch.device("cpu")):
        self.encode, self.store = encode, store
        self.features: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, window_ids: list[str], pixels: torch.Tensor) -> torch.Tensor:
        out = []
        for i, wid in enumerate(window_ids):
            feat = self.features.get(wid)
            if feat is None:
                feat = self.encode(pixels[i:i + 1])
                if not isinstance(feat, torch.Tensor):
                    raise TypeError(f"encode_vision returned {type(feat).__name__}; the cache needs a tensor")
                feat = feat[0].detach().to(self.store)
                self.features[wid] = feat
                self.misses += 1
            else:
                self.hits += 1
            out.append(feat)
        return torch.stack(out).to(pixels.device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.features.values())
