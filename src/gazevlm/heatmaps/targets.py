"""Patch targets: the raw heatmap after the frame's resize/crop, area-pooled to the patch grid.

Built from the heatmap itself (values in [0, 1], summing to 1), never from normalised pixels, with
rows = y and columns = x throughout (a target built from normalised pixels with the row and channel axes
swapped points at the wrong patches).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.heatmap import gaussian_axes

# Below this share of the heatmap's mass inside the model's crop, the person looked at something
# the model cannot see: the frame is marked invalid rather than given a target piled on the border.
MIN_VISIBLE_MASS = 0.05


@dataclass(frozen=True)
class PatchTarget:
    valid: bool
    target: np.ndarray  # (grid, grid) float32, sums to 1 when valid, zeros otherwise
    heatmap: np.ndarray  # (size, size) float32 cropped heatmap, sums to 1 when valid
    visible_mass: float  # share of the native heatmap's mass inside the crop


def area_pool(image: np.ndarray, grid: int) -> np.ndarray:
    """Sum of `image` over each cell of a grid x grid partition (rows, cols)."""
    h, w = image.shape
    if h % grid == 0 and w % grid == 0:
        return image.reshape(grid, h // grid, grid, w // grid).sum(axis=(1, 3))
    # Non-divisible sizes: INTER_AREA averages fractional cells; rescale averages back to sums.
    return cv2.resize(image, (grid, grid), interpolation=cv2.INTER_AREA) * (h * w / (grid * grid))


def patch_target(
    heatmap: np.ndarray, geometry: CropGeometry, grid: int, eps: float, min_visible: float = MIN_VISIBLE_MASS
) -> PatchTarget:
    """Cut the native (H, W) heatmap like the frame and pool it onto the patch grid (+eps, L1)."""
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be a single-channel (H, W) array, got shape {heatmap.shape}")
    heatmap = heatmap.astype(np.float32, copy=False)
    total = float(heatmap.sum())
    if heatmap.min() < 0 or heatmap.max() > 1 or not np.isfinite(total) or abs(total - 1) > 1e-3:
        raise ValueError(
            "patch targets come from the raw heatmap (values in [0, 1], sum 1); got values in "
            f"[{heatmap.min():.3g}, {heatmap.max():.3g}] summing to {total:.4g}"
        )
    cropped = geometry.apply(heatmap)
    resized_total = total * geometry.resized_width * geometry.resized_height / (geometry.width * geometry.height)
    return _from_crop(cropped, float(cropped.sum() / resized_total), geometry.size, grid, eps, min_visible)


def patch_target_from_points(
    points: np.ndarray,
    geometry: CropGeometry,
    sigma: float,
    grid: int,
    eps: float,
    min_visible: float = MIN_VISIBLE_MASS,
) -> PatchTarget:
    """Same result as patch_target(gaussian_heatmap(points, ...)), without the native-size heatmap.

    The heatmap is separable (gy.T @ gx) and so are area resizing and cropping, so the frame's
    resize + crop is applied to each 1-D factor (K rows each) and only the crop is multiplied out:
    ~20x cheaper at 1088 x 1080 (bench/bench_heatmaps.py), equal to float rounding (tested)."""
    gy, gx = gaussian_axes(points, geometry.height, geometry.width, sigma)
    k = gx.shape[0]
    gxr = cv2.resize(gx, (geometry.resized_width, k), interpolation=cv2.INTER_AREA)  # (K, rw)
    gyr = cv2.resize(gy, (geometry.resized_height, k), interpolation=cv2.INTER_AREA)  # (K, rh)
    resized_total = float((gyr.sum(axis=1) * gxr.sum(axis=1)).sum())
    size = geometry.size
    cropped = gyr[:, geometry.top : geometry.top + size].T @ gxr[:, geometry.left : geometry.left + size]
    return _from_crop(cropped, float(cropped.sum() / resized_total), size, grid, eps, min_visible)


def _from_crop(
    cropped: np.ndarray, visible: float, size: int, grid: int, eps: float, min_visible: float
) -> PatchTarget:
    if visible < min_visible:
        return PatchTarget(False, np.zeros((grid, grid), np.float32), np.zeros((size, size), np.float32), visible)
    cropped = cropped / cropped.sum()
    pooled = area_pool(cropped, grid) + eps
    return PatchTarget(True, (pooled / pooled.sum()).astype(np.float32), cropped.astype(np.float32), visible)


def resize_heatmap(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A cropped heatmap at size x size for analysis, renormalised (all-zero stays all-zero)."""
    out = cv2.resize(heatmap.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    s = float(out.sum())
    return out / s if s > 0 else out
