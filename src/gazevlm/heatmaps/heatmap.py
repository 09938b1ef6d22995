"""Gaussian gaze heatmaps at native resolution, vectorised over points.

A 2-D isotropic Gaussian is separable, so K points give heatmap = Gy^T @ Gx with Gy (K, H) and
Gx (K, W): one matrix product instead of K full-frame exponentials. Each point's Gaussian is
normalised to unit mass inside the frame (so a point near the border weighs as much as one in the
middle), the K are summed and the total normalised to 1. No points -> no heatmap: callers carry an
explicit valid=False instead of a uniform fake.
"""

from __future__ import annotations

import numpy as np


def _axis_weights(centres: np.ndarray, n: int, sigma: float) -> np.ndarray:
    grid = np.arange(n, dtype=np.float32) + 0.5
    d = (grid[None, :] - centres[:, None].astype(np.float32)) / np.float32(sigma)
    g = np.exp(-0.5 * d * d)
    sums = g.sum(axis=1, keepdims=True)
    # A sigma far below a pixel can underflow every weight: fall back to the nearest pixel.
    empty = sums[:, 0] <= 0
    if empty.any():
        idx = np.clip(np.floor(centres[empty]).astype(int), 0, n - 1)
        g[empty] = 0
        g[np.flatnonzero(empty), idx] = 1
        sums = g.sum(axis=1, keepdims=True)
    return g / sums


def gaussian_axes(points: np.ndarray, height: int, width: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The separable factors (gy (K, H), gx (K, W)) of the heatmap of (K, 2) points (x, y), K >= 1:
    heatmap = gy.T @ gx sums to 1 (each gy row sums to 1, each gx row to 1/K)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        raise ValueError("no gaze points: mark the frame invalid instead of building a heatmap")
    if not sigma > 0:
        raise ValueError(f"heatmaps.sigma_px must be > 0, got {sigma}")
    x, y = points[:, 0], points[:, 1]
    if not (
        np.isfinite(points).all() and (x >= 0).all() and (x < width).all() and (y >= 0).all() and (y < height).all()
    ):
        raise ValueError(f"gaze points outside the {width}x{height} frame or not finite: {points.tolist()}")
    gx = _axis_weights(x, width, sigma) / np.float32(len(points))
    gy = _axis_weights(y, height, sigma)
    return gy, gx


def gaussian_heatmap(points: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """(H, W) float32 summing to 1 from (K, 2) points (x, y) inside the frame; K >= 1."""
    gy, gx = gaussian_axes(points, height, width, sigma)
    return gy.T @ gx  # rows are y, columns are x


def single_point_heatmap(x: float, y: float, height: int, width: int, sigma: float) -> np.ndarray:
    return gaussian_heatmap(np.array([[x, y]]), height, width, sigma)
