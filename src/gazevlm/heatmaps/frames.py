"""Keyframe JPEG reading and writing for the heatmap stage (video frames: gazevlm.video_frames)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class ImageError(RuntimeError):
    """A keyframe image is missing or cannot be decoded."""


def read_image(path: str | Path) -> np.ndarray:
    """BGR image or ImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: keyframe image not found")
    # PIL, unlike cv2.imread, refuses a truncated JPEG instead of returning a half-grey frame.
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: keyframe image cannot be decoded ({err})") from err
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()
