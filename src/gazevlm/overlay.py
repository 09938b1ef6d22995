"""`gazevlm predict --overlay`: the model's attention over the frames it saw, as a video and a contact sheet.

overlay.mp4 has one picture per observed frame of every window, in window order (N windows x T frames,
OVERLAY_FPS pictures a second), each captioned with the window's span, the frame's time and the
window's prediction. overlay.png shows at most SHEET_ROWS windows (evenly spaced over the video), one
row of T frames each. The attention is drawn on the patch grid by attention.render.overlay (the
renderer of the attention stage's figures and the explorer), over the cropped frame the model saw.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gazevlm.attention.render import overlay

OVERLAY_FPS = 2.0  # two pictures a second: a 5-frame window is on screen for 2.5 s
VIDEO_WIDTH = 384  # the picture in the video (the tiny preset's frames are 128 px)
SHEET_WIDTH = 160  # one frame in the contact sheet
SHEET_ROWS = 12  # windows on the contact sheet
PREDICTION_LINES = 3  # caption lines for the prediction (longer texts are cut with "...")
FONT_SIZE = 12
SOURCES = {"block": "gaze block attention", "backbone": "backbone attention (the model has no gaze block)"}


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _wrap(text: str, width_px: int, lines: int, font) -> list[str]:
    chars = max(8, int(width_px / max(1.0, font.getlength("abcdefghij") / 10)))
    wrapped = textwrap.wrap(text, chars) or [""]
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][: max(0, chars - 3)] + "..."
    return wrapped + [""] * (lines - len(wrapped))  # a fixed height: every video frame has one size


def caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """`image` (H, W, 3) uint8 with a white strip of text lines below it."""
    font = _font()
    line_h = FONT_SIZE + 4
    strip = Image.new("RGB", (image.shape[1], line_h * len(lines) + 6), "white")
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * line_h), line, fill="black", font=font)
    return np.concatenate([image, np.asarray(strip)], axis=0)


def _grid(attention: np.ndarray) -> np.ndarray:
    """(P,) patch weights -> (g, g) grid (square patch grids only, as every preset has)."""
    g = int(round(np.sqrt(attention.shape[-1])))
    if g * g != attention.shape[-1]:
        raise ValueError(f"attention over {attention.shape[-1]} patches is not a square grid")
    return attention.reshape(g, g)


def video_frames(record: dict[str, Any], frames: Sequence[np.ndarray], attention: np.ndarray) -> list[np.ndarray]:
    """One captioned picture per (window, frame). frames: per window (T, S, S, 3); attention (N, T, P)."""
    font = _font()
    preds = record["predictions"]
    out = []
    for w, clip, maps in zip(preds, frames, attention, strict=True):
        for j, (frame, att) in enumerate(zip(clip, maps, strict=True)):
            head = (
                f"window {w['window'] + 1}/{len(preds)}  {w['t_start']:.1f}-{w['t_end']:.1f} s  "
                f"frame {j + 1}/{len(clip)} (t={w['keyframe_times'][j]:.1f} s)"
            )
            picture = overlay(frame, mode="attention", attention=_grid(att), width=VIDEO_WIDTH)
            out.append(caption(picture, [head, *_wrap(w["prediction"], VIDEO_WIDTH - 8, PREDICTION_LINES, font)]))
    return out


def write_video(path: Path, pictures: Sequence[np.ndarray], fps: float = OVERLAY_FPS) -> int:
    """RGB pictures of one size -> an mp4v video (OpenCV); returns the number written."""
    h, w = pictures[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot open an mp4v video writer")
    try:
        for picture in pictures:
            writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return len(pictures)


def sheet_rows(n_windows: int, rows: int = SHEET_ROWS) -> list[int]:
    """Which windows the contact sheet shows: all, or `rows` evenly spaced from first to last."""
    return sorted({int(round(i)) for i in np.linspace(0, n_windows - 1, min(rows, n_windows))})


def contact_sheet(record: dict[str, Any], frames: Sequence[np.ndarray], attention: np.ndarray) -> np.ndarray:
    """RGB image: a title, then one row of T overlaid frames per shown window with its prediction below."""
    font = _font()
    preds = record["predictions"]
    blocks = []
    for i in sheet_rows(len(preds)):
        w = preds[i]
        row = np.concatenate(
            [
                overlay(f, mode="attention", attention=_grid(a), width=SHEET_WIDTH)
                for f, a in zip(frames[i], attention[i], strict=True)
            ],
            axis=1,
        )
        text = f"{w['t_start']:.1f}-{w['t_end']:.1f} s: {w['prediction']}"
        blocks.append(caption(row, _wrap(text, row.shape[1] - 8, 2, font)))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    m = record["model"]
    shown = f"{len(blocks)} of {len(preds)} windows" if len(blocks) < len(preds) else f"{len(preds)} windows"
    title = [
        f"{Path(record['video']['path']).name}: {m['run']} / {m['task']} ({m['backbone']}, {m['preset']})",
        f"{SOURCES[record['attention_drawn']]}; {shown}",
    ]
    return np.concatenate([caption(np.zeros((0, width, 3), np.uint8), title), *blocks], axis=0)


def write(directory: Path, record: dict[str, Any], frames: Sequence[np.ndarray], attention: np.ndarray) -> None:
    """overlay.mp4 and overlay.png into `directory`. frames: per window (T, S, S, 3); attention (N, T, P)."""
    if attention is None or len(attention) != len(frames):
        raise ValueError(
            f"overlay: {0 if attention is None else len(attention)} attention maps for {len(frames)} windows"
        )
    write_video(directory / "overlay.mp4", video_frames(record, frames, attention))
    Image.fromarray(contact_sheet(record, frames, attention)).save(directory / "overlay.png")
