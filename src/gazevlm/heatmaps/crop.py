"""The vision encoder's resize + centre crop, shared by the frames and their gaze heatmaps.

One geometry object maps a native frame to the encoder's square input. The shard frames and the
heatmaps both go through `CropGeometry.apply`, so a patch target can never be cut from a different
region than the pixels the model sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropGeometry:
    """Resize so the short side equals `size`, then cut the central `size` x `size` square."""

    width: int
    height: int
    size: int
    resized_width: int
    resized_height: int
    left: int
    top: int

    @classmethod
    def for_frame(cls, width: int, height: int, size: int) -> CropGeometry:
        if width <= 0 or height <= 0 or size <= 0:
            raise ValueError(f"bad crop geometry: frame {width}x{height}, output {size}")
        scale = size / min(width, height)
        rw = max(size, int(round(width * scale)))
        rh = max(size, int(round(height * scale)))
        return cls(width, height, size, rw, rh, (rw - size) // 2, (rh - size) // 2)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resize (area interpolation, mass-preserving for heatmaps) and centre-crop an (H, W[, C]) array."""
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"image of shape {image.shape[:2]} (rows, cols) does not match the frame geometry "
                f"{self.height}x{self.width} (rows x cols)"
            )
        resized = cv2.resize(image, (self.resized_width, self.resized_height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(resized[self.top : self.top + self.size, self.left : self.left + self.size])

    def to_crop(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Native (x, y) pixel coordinates -> coordinates in the cropped square (same convention)."""
        cx = np.asarray(x, dtype=np.float64) * (self.resized_width / self.width) - self.left
        cy = np.asarray(y, dtype=np.float64) * (self.resized_height / self.height) - self.top
        return cx, cy
