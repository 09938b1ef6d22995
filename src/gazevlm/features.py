"""The frozen vision encoder's patch features of every frame in the shards, computed once (stage `features`).

Every training worker used to decode its shards' JPEGs and encode every frame of its train and val
windows (VisionFeatureCache.warm), and evaluate and attention encoded the test frames again for each
model. The encoder is frozen and the same for every run and seed (the tiny preset's pretrained
encoder, models/encoder/), and it encodes each image on its own (no batch statistics), so a feature
is a function of the frame's bytes: this stage encodes each distinct frame once, for all tasks and
splits, and indexes the windows:

  data/features/frames.npy            (K, P, D) float32: one row per distinct frame (JPEG bytes) of the shards
  data/features/<task>/<split>.json   window ids in shard order, the K-rows of each window's T frames, and
                                      the sha256 of the split's shard manifest they were read from
  data/features/info.json             the encoder's fingerprint (its tensors, the pixel normalisation,
                                      torch version, device), shapes and counts; or why nothing was computed

A reader (the training loop's feature cache, evaluate, attention) uses them only when the fingerprint
is its own model's encoder and each split's manifest is the one the features were read from; otherwise
it encodes as before and says why (never stale features). A features directory that claims to match
but is inconsistent (a missing or cut file, rows out of range, windows other than the shards') is an
error naming the file. The numbers are the ones encoding on the fly gives, bit for bit (tested).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazevlm import atomic, layout
from gazevlm.params import Params

FEATURES_DIR = layout.FEATURES_DIR
FORMAT = "gazevlm-features/1"
INFO_FILE = "info.json"
TABLE_FILE = "frames.npy"
REPORT_FILE = layout.REPORTS_DIR / "features.json"
ENCODE_CHUNK = 256  # frames per encoder call (the features do not depend on it: each image is encoded alone)


class FeatureError(RuntimeError):
    """A features directory that claims to fit the model and shards but is inconsistent."""


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of what a frame's features depend on: the vision tower's tensors (names, dtypes, shapes,
    bytes), the model's pixel normalisation and input size, the torch version and the device type."""
    digest = hashlib.sha256()
    tower = model.vision_encoder
    state = {f"tower.{k}": v for k, v in tower.state_dict().items()}
    state.update({"pixel_mean": model.pixel_mean, "pixel_std": model.pixel_std})
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    device = next(tower.parameters()).device.type
    digest.update(f"image_size={model.image_size}|torch={torch.__version__}|device={device}".encode())
    return digest.hexdigest()


def index_path(task: str, split: str, root: Path = FEATURES_DIR) -> Path:
    return Path(root) / task / f"{split}.json"


def manifest_sha256(task: str, split: str, shards_root: Path = layout.SHARDS_DIR) -> str:
    """sha256 of the split's shard manifest (which holds every shard's sha256): the shards' identity."""
    path = layout.shard_manifest(task, split, Path(shards_root))
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no shard manifest (run the heatmaps stage)") from None


# --- reading ----------------------------------------------------------------------------------------


@dataclass
class SplitIndex:
    window_ids: list[str]
    rows: np.ndarray  # (N, T) int64 rows of the frame table


@dataclass
class SharedFeatures:
    """The stage's features, opened for one model: the frame table (memory-mapped) and split indexes."""

    root: Path
    table: np.ndarray  # (K, P, D) float32, memory-mapped
    splits: dict[tuple[str, str], SplitIndex]

    def window_features(self, task: str, split: str) -> tuple[list[str], torch.Tensor]:
        """(window ids in shard order, features (N, T, P, D) float32) of one split."""
        index = self.splits[(task, split)]
        return index.window_ids, torch.from_numpy(self.table[index.rows])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FeatureError(f"{path}: unreadable ({err}); rerun the features stage") from None


def _read_index(path: Path, task: str, split: str, n_rows: int) -> tuple[SplitIndex, str]:
    if not path.is_file():
        raise FeatureError(
            f"{path}: missing, but {path.parent.parent / INFO_FILE} lists {task}/{split}; rerun the features stage"
        )
    index = _read_json(path)
    ids, rows = index.get("window_ids"), np.asarray(index.get("rows"), dtype=np.int64)
    if not isinstance(ids, list) or rows.ndim != 2 or rows.shape[0] != len(ids) or len(set(ids)) != len(ids):
        raise FeatureError(f"{path}: window_ids and rows do not describe one row list per distinct window")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise FeatureError(f"{path}: rows outside the {n_rows} rows of {TABLE_FILE}")
    return SplitIndex([str(w) for w in ids], rows), str(index.get("manifest_sha256"))


def open_shared(
    model: torch.nn.Module,
    splits: Iterable[tuple[str, str]],
    *,
    shards_root: Path = layout.SHARDS_DIR,
    root: Path = FEATURES_DIR,
) -> tuple[SharedFeatures | None, str]:
    """The stage's features of (task, split)s when they were computed by this model's encoder from these
    shards: (features, ""); otherwise (None, why not). Inconsistent files raise FeatureError."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        return None, f"no {info_path} (the features stage has not run)"
    info = _read_json(info_path)
    if info.get("format") != FORMAT:
        raise FeatureError(f"{info_path}: not a {FORMAT} file; rerun the features stage")
    if not info.get("computed"):
        return None, f"{info_path}: not computed ({info.get('reason', 'no reason given')})"
    if info.get("encoder") != encoder_fingerprint(model):
        return None, f"{info_path}: computed by another vision encoder than this model's (or torch, device)"
    try:
        table = np.load(root / TABLE_FILE, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FeatureError(f"{root / TABLE_FILE}: unreadable ({err}); rerun the features stage") from None
    if list(table.shape) != info.get("shape") or table.dtype != np.float32:
        raise FeatureError(
            f"{root / TABLE_FILE}: {table.dtype} {list(table.shape)}, but {info_path} records "
            f"float32 {info.get('shape')} (cut or replaced?); rerun the features stage"
        )
    indexes = {}
    for task, split in splits:
        if f"{task}/{split}" not in info.get("splits", {}):
            return None, f"{info_path}: no features of {task}/{split}"
        index, manifest = _read_index(index_path(task, split, root), task, split, table.shape[0])
        if manifest != manifest_sha256(task, split, shards_root):
            return None, (
                f"{index_path(task, split, root)}: computed from other {task}/{split} shards than "
                f"{layout.shard_manifest(task, split, Path(shards_root))}"
            )
        indexes[(task, split)] = index
    return SharedFeatures(root, table, indexes), ""


Layout = tuple[tuple[int, ...], int]


def encoder_layout(model: torch.nn.Module) -> Layout:
    """Strides and storage offset of the patch tokens (N, P, D) the model's tower returns. A CLS-token ViT
    returns a view past its CLS row, and the gaze block's kernels round differently (last bits) on such
    a view than on a packed copy: feature batches replacing pixels are laid out the same way."""
    size = model.image_size
    device = next(model.vision_encoder.parameters()).device
    with torch.no_grad():
        probe = model.backbone.encode_patches(torch.zeros(2, 3, size, size, device=device))
    return tuple(probe.stride()), probe.storage_offset()


def lay_out(features: torch.Tensor, like: Layout | None) -> torch.Tensor:
    """features (N, P, D) copied into memory laid out as `like` (see encoder_layout); packed when None."""
    if like is None:
        return features.contiguous()
    strides, offset = like
    n, p, d = features.shape
    numel = offset + 1 + sum((size - 1) * stride for size, stride in zip((n, p, d), strides, strict=True))
    out = torch.empty(numel, dtype=features.dtype).as_strided((n, p, d), strides, offset)
    return out.copy_(features)


def feature_batches(
    shared: SharedFeatures,
    task: str,
    split: str,
    batch_size: int,
    shards_root: Path = layout.SHARDS_DIR,
    like: Layout | None = None,
) -> Iterator[dict[str, Any]]:
    """A split in shard file order, batched like shards.make_loader(shuffle=False, with_gaze=False) but
    with `vision_features` (B, T, P, D) from the stage, laid out as `like`, instead of `pixels`; no JPEG is
    decoded."""
    from gazevlm import shards

    index = shared.splits[(task, split)]
    row_of = {w: i for i, w in enumerate(index.window_ids)}
    batch: list[dict[str, Any]] = []

    def emit() -> dict[str, Any]:
        rows = index.rows[[row_of[s["window_id"]] for s in batch]]  # (B, T)
        flat = lay_out(torch.from_numpy(shared.table[rows.reshape(-1)]), like)  # (B * T, P, D)
        return {
            "vision_features": flat.reshape(*rows.shape, *flat.shape[1:]),
            "text": [s["text"] for s in batch],
            "window_id": [s["window_id"] for s in batch],
            "meta": [s["meta"] for s in batch],
        }

    for sample in shards.iter_samples((task, split), with_gaze=False, root=shards_root, with_frames=False):
        if sample["window_id"] not in row_of:
            raise FeatureError(
                f"{index_path(task, split, shared.root)}: window {sample['window_id']!r} of the "
                f"{task}/{split} shards is not indexed, although the manifest matches"
            )
        batch.append(sample)
        if len(batch) == batch_size:
            yield emit()
            batch = []
    if batch:
        yield emit()


class TestBatches:
    """The test split of a task for one model at a time: the features stage's features when they fit the
    model (read once per task, then reused for every model of that task), else `pixel_batches(task)`.
    Returns (batches, how) where `how` says which, for the stage's report."""

    def __init__(
        self,
        pixel_batches: Callable[[str], Iterable[dict]],
        batch_size: int,
        *,
        shards_root: Path = layout.SHARDS_DIR,
        root: Path = FEATURES_DIR,
    ):
        self.pixel_batches, self.batch_size = pixel_batches, batch_size
        self.shards_root, self.root = Path(shards_root), Path(root)
        self._read: dict[str, list[dict]] = {}

    def __call__(self, model: torch.nn.Module, task: str) -> tuple[Iterable[dict], str]:
        shared, why = open_shared(model, [(task, "test")], shards_root=self.shards_root, root=self.root)
        if shared is None:
            return self.pixel_batches(task), f"encoded on the fly: {why}"
        if task not in self._read:  # every model it fits has this encoder, so the same tower layout
            self._read[task] = list(
                feature_batches(shared, task, "test", self.batch_size, self.shards_root, like=encoder_layout(model))
            )
        return self._read[task], f"shared ({self.root})"


# --- the stage ---------------------------------------------------------------------------------------


def _frames_of_shards(tasks: Iterable[str], shards_root: Path) -> tuple[list[bytes], dict[tuple[str, str], dict]]:
    """Distinct JPEG frames of every (task, split) in shard order, and per split its window ids and rows."""
    from gazevlm import shards

    rows_of: dict[bytes, int] = {}
    jpegs: list[bytes] = []
    splits: dict[tuple[str, str], dict] = {}
    for task in tasks:
        for split in layout.SPLITS:
            if not layout.shard_files(task, split, shards_root):
                continue
            ids, rows = [], []
            for s in shards.iter_samples((task, split), with_gaze=False, root=shards_root, with_frames=False):
                window_rows = []
                for data in s["jpegs"]:
                    key = hashlib.blake2b(data, digest_size=20).digest()
                    if key not in rows_of:
                        rows_of[key] = len(jpegs)
                        jpegs.append(data)
                    window_rows.append(rows_of[key])
                ids.append(s["window_id"])
                rows.append(window_rows)
            splits[(task, split)] = {
                "window_ids": ids,
                "rows": rows,
                "manifest_sha256": manifest_sha256(task, split, shards_root),
            }
    return jpegs, splits


@torch.no_grad()
def encode_frames(model: torch.nn.Module, jpegs: list[bytes], chunk: int = ENCODE_CHUNK) -> np.ndarray:
    """(K, P, D) float32 features of K JPEG frames: decoded as the shard readers decode them, then the
    model's own encode_vision on pixels in [0, 1] (one frame per window, so the same call as training's)."""
    from gazevlm import shards

    out = None
    for start in range(0, len(jpegs), chunk):
        frames = shards.decode_jpegs(jpegs[start : start + chunk], f"frames {start}..")  # (k, H, W, 3)
        pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, None].float().div_(255.0)
        feats = model.encode_vision(pixels)[:, 0].float().cpu().numpy()
        if out is None:
            out = np.empty((len(jpegs), *feats.shape[1:]), dtype=np.float32)
        out[start : start + len(feats)] = feats
    return out if out is not None else np.empty((0, 0, 0), dtype=np.float32)


def fixed_encoder_reason(params: Params) -> str:
    """Why the encoder is not one fixed file shared by every run and seed ("" when it is)."""
    from gazevlm.models import presets

    preset = presets.get_preset(params.model.preset, params.model.backbone)
    if not preset.pretrainable_vision:
        return f"preset {preset.name!r}: its public encoder's features are large; encoded on the fly"
    if params.model.vision_weights is None:
        return "model.vision_weights is null: the encoder is each seed's random initialisation"
    if not Path(params.model.vision_weights).is_file():
        return f"{params.model.vision_weights}: no pretrained encoder (pretrain.enabled false?)"
    return ""


def build_encoder_model(params: Params) -> torch.nn.Module:
    """The model every run builds, as far as its vision side goes (GazeVLM.encode_vision), in eval mode."""
    import dataclasses

    from gazevlm import models
    from gazevlm.params import RunParams

    # a run of its own: the encoder is the same in every run, and `runs` is not a dependency of the stage
    params = dataclasses.replace(params, runs={"features": RunParams(block=False, lam=0.0)})
    tokenizer = models.build_tokenizer(params, [])
    torch.manual_seed(0)  # only the LM's weights are random here; the encoder is the file's
    return models.build_model(params, "features", tokenizer).eval()


def run(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Stage `features`: write data/features/ (see the module docstring) and reports/features.json."""
    root = Path(root)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"format": FORMAT, "computed": False}
    reason = fixed_encoder_reason(params)
    with layout.staged_dir(root / FEATURES_DIR) as out_dir:
        if reason:
            report["reason"] = reason
        else:
            model = build_encoder_model(params)
            jpegs, splits = _frames_of_shards(params.train.tasks, root / layout.SHARDS_DIR)
            table = encode_frames(model, jpegs)
            np.save(out_dir / TABLE_FILE, table, allow_pickle=False)
            for (task, split), index in splits.items():
                (out_dir / task).mkdir(exist_ok=True)
                index_path(task, split, out_dir).write_text(
                    json.dumps({"format": FORMAT, "task": task, "split": split, **index}) + "\n"
                )
            windows = {f"{t}/{s}": len(v["window_ids"]) for (t, s), v in splits.items()}
            report.update(
                computed=True,
                encoder=encoder_fingerprint(model),
                shape=list(table.shape),
                dtype="float32",
                frames=len(jpegs),
                splits=windows,
                frame_refs=int(sum(len(r) for v in splits.values() for r in v["rows"])),
            )
        (out_dir / INFO_FILE).write_text(json.dumps(report, indent=2) + "\n")
    # results only (DVC metrics): the seconds are in the return value
    atomic.write_json(root / REPORT_FILE, report)
    return {**report, "seconds": round(time.perf_counter() - t0, 1)}
