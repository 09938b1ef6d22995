"""Frames with gaze and attention overlays, as RGB arrays (one renderer for figures and the explorer).

Attention lives on the patch grid and is drawn as blocks (nearest upsampling) so the picture shows the
resolution the metrics see; the gaze heatmap is drawn smooth (bilinear), and the gaze support used by
top-k overlap / NSS / AUC is outlined patch by patch.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

MODES = ("gaze", "attention", "both", "frame")
GAZE_RGB = np.array([0.15, 1.0, 0.35])
SUPPORT_RGB = np.array([0.2, 1.0, 1.0])
TOPK_RGB = np.array([1.0, 1.0, 1.0])


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def to_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # speed over size: shown, not stored
    return buf.getvalue()


def _resize(x: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(x.astype(np.float32), mode="F").resize(size, resample))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), 0, None)
    peak = x.max()
    return x / peak if peak > 0 else x


def _cell_mask(mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Upsampled patch mask and the mask of each selected cell's border pixels (2 px)."""
    w, h = size
    gh, gw = mask.shape
    rows = (np.arange(h) * gh // h)[:, None]
    cols = (np.arange(w) * gw // w)[None, :]
    full = mask[rows, cols]
    r_edge = (np.diff(rows[:, 0], prepend=-1) != 0) | (np.diff(rows[:, 0], append=gh) != 0)
    c_edge = (np.diff(cols[0], prepend=-1) != 0) | (np.diff(cols[0], append=gw) != 0)
    r_edge = r_edge | np.roll(r_edge, 1) | np.roll(r_edge, -1)
    c_edge = c_edge | np.roll(c_edge, 1) | np.roll(c_edge, -1)
    return full, full & (r_edge[:, None] | c_edge[None, :])


def _outline(mask_full: np.ndarray) -> np.ndarray:
    """Pixels on the boundary of a region (2 px inside it)."""
    return mask_full & ~ndimage.binary_erosion(mask_full, iterations=2, border_value=0)


def overlay(
    frame: np.ndarray,
    *,
    mode: str = "both",
    gaze_heatmap: np.ndarray | None = None,
    attention: np.ndarray | None = None,
    gaze_support: np.ndarray | None = None,
    topk: np.ndarray | None = None,
    width: int = 256,
    cmap: str = "inferno",
) -> np.ndarray:
    """RGB uint8 picture of `frame` with the overlays `mode` asks for.

    gaze_heatmap: (S, S) heatmap at any resolution; attention: (gh, gw) patch weights; gaze_support,
    topk: (gh, gw) boolean patch masks (outlined). Overlays that are None are left out.
    """
    if mode not in MODES:
        raise ValueError(f"overlay mode must be one of {MODES}, got {mode!r}")
    h = max(1, round(width * frame.shape[0] / frame.shape[1]))
    size = (width, h)
    out = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255
    show_gaze = mode in ("gaze", "both") and gaze_heatmap is not None
    if mode in ("attention", "both") and attention is not None:
        a = _resize(np.asarray(attention, dtype=np.float32), size, Image.Resampling.NEAREST)
        span = a.max() - a.min()
        # min-max scaling: a flat map shows as flat (lowest colour, faint), never as a fake hot spot
        a = (a - a.min()) / span if span > 0 else np.zeros_like(a)
        color = colormaps[cmap](a)[..., :3]
        alpha = (0.25 + 0.5 * a)[..., None]
        out = out * (1 - alpha) + color * alpha
    if show_gaze:
        g = _unit(_resize(_unit(gaze_heatmap), size, Image.Resampling.BILINEAR))
        alpha = ((0.65 if mode == "gaze" else 0.35) * g)[..., None]
        out = out * (1 - alpha) + GAZE_RGB * alpha
    if mode in ("gaze", "both") and gaze_support is not None and gaze_support.any():
        full, _ = _cell_mask(np.asarray(gaze_support, bool), size)
        out[_outline(full)] = SUPPORT_RGB
    if topk is not None and mode != "frame":
        _, border = _cell_mask(np.asarray(topk, bool), size)
        out[border] = TOPK_RGB
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)
