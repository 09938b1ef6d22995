"""Dense optical flow backends: OpenCV DIS and Farneback (offline), torchvision RAFT (local weights).

A backend turns a BGR frame into its own prepared form at `scale` x native resolution (`prepare`)
and computes the flow between two prepared frames: flow[r, c] = (dx, dy) moves pixel (c, r) of the
source onto the destination, in pixels of the prepared (scaled) resolution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

FLOW_BACKENDS = ("dis", "farneback", "raft", "raft_small")


class FlowBackendError(RuntimeError):
    """A flow backend cannot be used (unknown name, missing local weights)."""


class FlowBackend(Protocol):
    name: str

    def prepare(self, frame_bgr: np.ndarray, scale: float) -> Any: ...

    def flow_pair(self, a: Any, b: Any, backward: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Flow a->b and, when `backward`, b->a; each (h, w, 2) float32 in prepared pixels."""
        ...


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    if not 0 < scale <= 1:
        raise ValueError(f"heatmaps.flow_scale must be in (0, 1], got {scale}")
    return max(8, int(round(width * scale))), max(8, int(round(height * scale)))


def _downscale(frame: np.ndarray, scale: float) -> np.ndarray:
    h, w = frame.shape[:2]
    size = scaled_size(w, h, scale)
    if size == (w, h):
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class _OpenCVFlow:
    """Shared prepare step of the OpenCV backends: grey levels at the flow resolution."""

    name = "opencv"

    def prepare(self, frame_bgr: np.ndarray, scale: float) -> np.ndarray:
        grey = frame_bgr if frame_bgr.ndim == 2 else cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        return _downscale(grey, scale)

    def _flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def flow_pair(self, a: np.ndarray, b: np.ndarray, backward: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return self._flow(a, b), (self._flow(b, a) if backward else None)


class DISFlow(_OpenCVFlow):
    """OpenCV's Dense Inverse Search, FAST preset. On a rotating/zooming/panning 1088 x 1080 scene
    (27 px true motion over 6 frames, flow at 0.5 scale) FAST moved points with a 0.27 px median
    error in 12 ms, MEDIUM 0.11 px in 62 ms: both negligible next to sigma = 20 px, so the 5x
    cheaper preset is the default (bench/bench_heatmaps.py)."""

    name = "dis"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> None:
        self._dis = cv2.DISOpticalFlow_create(preset)

    def _flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._dis.calc(a, b, None)


class FarnebackFlow(_OpenCVFlow):
    name = "farneback"

    def _flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(
            a, b, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
        )


def raft_weight_candidates(variant: str, explicit: str | os.PathLike | None) -> list[Path]:
    """Where RAFT weights may live locally: the explicit path, else torchvision's file in the hub cache."""
    if explicit:
        return [Path(explicit)]
    import torch
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    weights = Raft_Large_Weights.DEFAULT if variant == "raft" else Raft_Small_Weights.DEFAULT
    # Reading .url does not download anything; it names the file torch.hub would have cached.
    return [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)]


class RaftFlow:
    """torchvision RAFT (large or small) from a local checkpoint; never downloads."""

    def __init__(
        self, variant: str = "raft", weights: str | os.PathLike | None = None, num_flow_updates: int = 12
    ) -> None:
        import torch
        from torchvision.models.optical_flow import raft_large, raft_small

        candidates = raft_weight_candidates(variant, weights)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FlowBackendError(
                f"heatmaps.flow={variant!r} needs local RAFT weights; not found at "
                f"{', '.join(str(p) for p in candidates)}. Put torchvision's checkpoint there or set "
                f"heatmaps.raft_weights, or use flow: dis / farneback (no weights needed)."
            )
        self.name = variant
        self.weights_path = found
        self._torch = torch
        model = (raft_large if variant == "raft" else raft_small)(weights=None, progress=False)
        try:
            state = torch.load(found, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as err:  # a wrong or truncated file must say which file
            raise FlowBackendError(f"{found}: not a usable {variant} checkpoint: {err}") from err
        self._model = model.eval()
        self._updates = num_flow_updates

    def prepare(self, frame_bgr: np.ndarray, scale: float) -> Any:
        rgb = cv2.cvtColor(_downscale(frame_bgr, scale), cv2.COLOR_BGR2RGB)
        tensor = self._torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0
        return tensor

    def flow_pair(self, a: Any, b: Any, backward: bool) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        h, w = a.shape[1:]
        # RAFT needs sides divisible by 8 and at least 128 (its correlation pyramid): replicate-pad
        # bottom/right, crop the flow back.
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
        src = torch.stack([a, b] if backward else [a])
        dst = torch.stack([b, a] if backward else [b])
        if ph or pw:
            src = torch.nn.functional.pad(src, (0, pw, 0, ph), mode="replicate")
            dst = torch.nn.functional.pad(dst, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            flows = self._model(src, dst, num_flow_updates=self._updates)[-1][:, :, :h, :w]
        out = flows.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
        return out[0], (out[1] if backward else None)


def make_backend(name: str, raft_weights: str | os.PathLike | None = None) -> FlowBackend:
    if name == "dis":
        return DISFlow()
    if name == "farneback":
        return FarnebackFlow()
    if name in ("raft", "raft_small"):
        return RaftFlow(name, raft_weights)
    raise FlowBackendError(f"unknown heatmaps.flow {name!r} (have {', '.join(FLOW_BACKENDS)})")


def sample_flow(flow: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear flow at array coordinates (u = column, v = row, pixel centres at integers); (N, 2)."""
    h, w = flow.shape[:2]
    u = np.clip(np.asarray(u, dtype=np.float64), 0, w - 1)
    v = np.clip(np.asarray(v, dtype=np.float64), 0, h - 1)
    c0 = np.minimum(np.floor(u).astype(int), w - 2) if w > 1 else np.zeros_like(u, dtype=int)
    r0 = np.minimum(np.floor(v).astype(int), h - 2) if h > 1 else np.zeros_like(v, dtype=int)
    fu = (u - c0)[..., None]
    fv = (v - r0)[..., None]
    c1 = np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    top = flow[r0, c0] * (1 - fu) + flow[r0, c1] * fu
    bottom = flow[r1, c0] * (1 - fu) + flow[r1, c1] * fu
    return (top * (1 - fv) + bottom * fv).astype(np.float64)
