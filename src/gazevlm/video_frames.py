"""The one way frames are read from a video: in order, by absolute frame index.

Every frame is grabbed (no colour conversion) and only the wanted ones are retrieved: cheaper and more
reliable than seeking per frame, and indices are counted, never inferred from a timestamp. OpenCV
only (no model code): the extract and heatmap stages and the sample figures all read through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from gazevlm.ego4d import VideoFileError


def read_frames(path: str | Path, wanted: Iterable[int], *, strict: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (absolute frame index, BGR frame (H, W, 3) uint8) for each wanted index, in increasing order.

    strict=False: a frame that does not decode is left out and the iterator stops at the video's end;
    the caller notices the frames that never came. strict=True: either is a VideoFileError naming the
    video and the frame. A missing or unopenable video is a VideoFileError either way."""
    want = sorted({int(i) for i in wanted})
    if not want:
        return
    path = Path(path)
    if not path.is_file():
        raise VideoFileError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoFileError(f"{path}: OpenCV cannot open the video")
        index, k = 0, 0
        while k < len(want):
            if not cap.grab():
                if strict:
                    raise VideoFileError(
                        f"{path}: decoding stopped after {index} frames; keyframe "
                        f"{want[k]} is missing (video shorter than its metadata?)"
                    )
                return
            if index == want[k]:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    yield index, frame
                elif strict:
                    raise VideoFileError(f"{path}: frame {index} could not be decoded")
                k += 1
            index += 1
    finally:
        cap.release()
