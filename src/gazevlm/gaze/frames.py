"""Sequential video decoding of only the frames the aggregation needs, and keyframe JPEG reading.

Frames are decoded in order with grab() (no colour conversion) and only the wanted ones retrieved:
cheaper and more reliable than seeking per frame, and indices are counted, never inferred from a
timestamp or a file order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


class VideoError(RuntimeError):
    """A video cannot be opened."""


class ImageError(RuntimeError):
    """A keyframe image is missing or cannot be decoded."""


def read_frames(path: str | Path, wanted: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (absolute frame index, BGR frame) for each wanted index, in order; stops at the video's end."""
    want = sorted(set(int(i) for i in wanted))
    if not want:
        return
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: cannot open video")
    try:
        wanted_set = set(want)
        last = want[-1]
        index = 0
        while index <= last:
            if not cap.grab():
                return  # the caller notices the frames that never came
            if index in wanted_set:
                ok, frame = cap.retrieve()
                if ok:
                    yield index, frame
            index += 1
    finally:
        cap.release()


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
