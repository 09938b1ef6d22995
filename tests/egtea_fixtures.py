"""Small hand-written EGTEA Gaze+ files for the reader's tests: BeGaze exports of both header lengths,
index and split files, and a root with session videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gazevlm import egtea

OLD_COLUMNS = ["Time", "Type", "Trial", "L POR X [px]", "L POR Y [px]", "Frame", "L Event Info"]
NEW_COLUMNS = [
    "Time",
    "Type",
    "Trial",
    "L Raw X [px]",
    "L Raw Y [px]",
    "B POR X [px]",
    "B POR Y [px]",
    "L Dia X [px]",
    "Frame",
    "B Event Info",
]


def header(n_lines: int, samples: int | None = None, calibration: tuple[int, int] | None = (1280, 960)) -> list[str]:
    """A `##` header of n_lines lines (BeGaze versions differ in how many)."""
    lines = ["## [BeGaze]", "## Version:\tBeGaze 3.x", "## Sample Rate:\t30"]
    if samples is not None:
        lines.append(f"## Number of Samples:\t{samples}")
    if calibration is not None:
        lines.append(f"## Calibration Area:\t{calibration[0]}\t{calibration[1]}")
    while len(lines) < n_lines:
        lines.append(f"## Note {len(lines)}:\tpadding")
    return lines


def old_row(frame: int, x: float, y: float, event: str, time_us: int = 1000) -> str:
    """An older export's row: left-eye point, plain frame number."""
    return "\t".join([str(time_us + frame), "SMP", "1", f"{x:.2f}", f"{y:.2f}", str(frame), event])


def new_row(frame: int, x: float, y: float, event: str, time_us: int = 1000) -> str:
    """A newer export's row: binocular point, hh:mm:ss:ff timecode at 24 fps."""
    s, ff = divmod(frame, 24)
    tc = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}:{ff:02d}"
    return "\t".join([str(time_us + frame), "SMP", "1", "1.00", "2.00", f"{x:.2f}", f"{y:.2f}", "14.0", tc, event])


def write_begaze(
    path: Path,
    rows: list[str],
    *,
    newer: bool = True,
    header_lines: int = 30,
    samples: int | None = None,
    calibration: tuple[int, int] | None = (1280, 960),
    end: str = "\r\n",
) -> Path:
    lines = header(header_lines, samples, calibration) + ["\t".join(NEW_COLUMNS if newer else OLD_COLUMNS)] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + end).encode("latin-1"))
    return path


def write_video(path: Path, frames: int, fps: float = 24.0, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8))
    writer.release()
    return path


VERBS = ["Take", "Put", "Turn_on", "Divide/Pull Apart"]
NOUNS = ["bowl", "cutting_board", "condiment,bread", "onion"]


def write_annotations(root: Path, train: list[str], test: list[str], k: int = 1) -> Path:
    """Index files and split k's files (lines as given)."""
    folder = root / egtea.ANNOTATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "verb_idx.txt").write_text("".join(f"{v} {i}\n" for i, v in enumerate(VERBS, 1)))
    (folder / "noun_idx.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(NOUNS, 1)))
    actions = [f"{v} {n}" for v in VERBS for n in NOUNS]
    (folder / "action_idx.txt").write_text("".join(f"{a} {i}\n" for i, a in enumerate(actions, 1)))
    (folder / f"train_split{k}.txt").write_text("".join(f"{line}\n" for line in train))
    (folder / f"test_split{k}.txt").write_text("".join(f"{line}\n" for line in test))
    return root


def clip(session: str, f0: int, f1: int) -> str:
    return f"{session}-{round(f0 / 24 * 1000)}-{round(f1 / 24 * 1000)}-F{f0:06d}-F{f1:06d}"
