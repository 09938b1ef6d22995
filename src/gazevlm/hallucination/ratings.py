"""The ratings file: one CSV row per rating of one window x run x training seed, appended, never rewritten.

Columns (the header is the first line; every row is one physical line, notes are put on one line):
  rated_at         UTC time of the rating, ISO 8601
  rater            who rated (free text, may be empty)
  task, seed       the task and the training seed whose predictions were rated
  run, window_id   the rated prediction (the run is hidden from the reviewer, never from the file)
  hallucinated     yes | no
  sample_seed      the seed that drew the sample and shuffled the order the reviewer saw
  note             optional free text
  prediction_hash  the first 16 hex digits of the sha256 of the rated prediction text (UTF-8): a rating
                   of a prediction the models no longer make is stale, not silently reused

A rating is never edited: rating an item again appends a row, and the latest row of an item wins
(the stage counts the rows it superseded). An append is one write() of a whole line to a file opened
with O_APPEND under an exclusive lock, then fsync; if a killed writer left a row without its line end,
the next append starts on a new line, so that row stays a single malformed line. Reading skips and
counts malformed rows (naming the file and line); a file whose first line is not the header is an error.
The last column is checked strictly (exactly 16 hex digits), so a row cut short anywhere is malformed.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import io
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from gazevlm.layout import TASKS

COLUMNS = (
    "rated_at",
    "rater",
    "task",
    "seed",
    "run",
    "window_id",
    "hallucinated",
    "sample_seed",
    "note",
    "prediction_hash",
)
HEADER = ",".join(COLUMNS)
ANSWERS = ("yes", "no")
_HASH = re.compile(r"[0-9a-f]{16}")


class RatingsError(ValueError):
    """The ratings file cannot be read or appended to (its path is in the message)."""


def prediction_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def one_line(text: str) -> str:
    """Free text on one line (every whitespace run becomes one space): one row stays one line."""
    return " ".join(str(text).split())


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Rating:
    task: str
    seed: int
    run: str
    window_id: str
    hallucinated: str
    sample_seed: int
    prediction_hash: str
    note: str = ""
    rater: str = ""
    rated_at: str = field(default_factory=now_utc)

    def line(self) -> bytes:
        """The CSV row, ending with its line end (csv quoting keeps commas and quotes in notes)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["note"], values["rater"] = one_line(self.note), one_line(self.rater)
        problem = _row_problem([str(values[c]) for c in COLUMNS])
        if problem:
            raise ValueError(f"not a valid rating ({problem}): {self}")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([values[c] for c in COLUMNS])
        return buf.getvalue().encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _first_line(fd: int) -> bytes:
    head = os.pread(fd, len(HEADER) + 2, 0)
    return head.split(b"\n", 1)[0].rstrip(b"\r")


def append_rating(path: str | Path, rating: Rating) -> None:
    """Append one rating to the file (created with its header when missing or empty), atomically."""
    path = Path(path)
    line = rating.line()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another kernel rating at the same time appends after us
        size = os.fstat(fd).st_size
        if size == 0:
            prefix = (HEADER + "\n").encode()
        else:
            first = _first_line(fd)
            if first != HEADER.encode():
                raise RatingsError(
                    f"{path}:1: not a ratings file (header {first[:200]!r}, expected {HEADER!r}); nothing appended"
                )
            # a killed writer's row without its line end stays one (malformed, skipped) line of its own
            prefix = b"\n" if os.pread(fd, 1, size - 1) != b"\n" else b""
        _write_all(fd, prefix + line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


@dataclass
class RatingsTable:
    """The valid rows (COLUMNS plus `line`, hallucinated as bool) and the skipped ones ((line, reason))."""

    path: Path
    exists: bool
    rows: pd.DataFrame
    skipped: list[tuple[int, str]]

    def skipped_messages(self) -> list[str]:
        return [f"{self.path}:{line}: {reason}" for line, reason in self.skipped]


def _int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"\d+", text) else None


def _row_problem(values: list[str]) -> str | None:
    """What is wrong with one row's fields, or None."""
    if len(values) != len(COLUMNS):
        return f"{len(values)} fields, expected {len(COLUMNS)} (a row cut short or edited by hand?)"
    row = dict(zip(COLUMNS, values, strict=True))
    try:
        dt.datetime.fromisoformat(row["rated_at"])
    except ValueError:
        return f"rated_at {row['rated_at']!r} is not an ISO 8601 time"
    checks = [
        (row["task"] in TASKS, f"task {row['task']!r} is not one of {list(TASKS)}"),
        (_int(row["seed"]) is not None, f"seed {row['seed']!r} is not a non-negative integer"),
        (bool(row["run"]) and bool(row["window_id"]), "run or window_id is empty"),
        (row["hallucinated"] in ANSWERS, f"hallucinated {row['hallucinated']!r} is not one of {list(ANSWERS)}"),
        (_int(row["sample_seed"]) is not None, f"sample_seed {row['sample_seed']!r} is not a non-negative integer"),
        (
            _HASH.fullmatch(row["prediction_hash"]) is not None,
            f"prediction_hash {row['prediction_hash']!r} is not 16 hex digits (a row cut short?)",
        ),
    ]
    return next((why for ok, why in checks if not ok), None)


def _parse_line(raw: bytes) -> tuple[list[str] | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text (a row cut short inside a character?)"
    try:
        values = next(csv.reader([text]), [])
    except csv.Error as err:
        return None, f"not a CSV row ({err})"
    return values, _row_problem(values)


def read_ratings(path: str | Path) -> RatingsTable:
    """Every valid rating in file order; malformed rows skipped and counted. A missing or empty file, or
    one with the header only, has no ratings. A first line that is not the header is a RatingsError."""
    path = Path(path)
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in (*COLUMNS, "line")})
    if not path.is_file():
        return RatingsTable(path, False, empty, [])
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the last line end
    if not lines:
        return RatingsTable(path, True, empty, [])
    if lines[0].rstrip(b"\r") != HEADER.encode():
        raise RatingsError(f"{path}:1: expected the header {HEADER!r}, found {lines[0][:200]!r}")
    rows, skipped = [], []
    for number, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue  # a blank line holds no rating
        values, problem = _parse_line(raw)
        if problem:
            skipped.append((number, problem))
            continue
        rows.append([*values, number])
    if not rows:
        return RatingsTable(path, True, empty, skipped)
    table = pd.DataFrame(rows, columns=[*COLUMNS, "line"])
    table["seed"] = table["seed"].astype(int)
    table["sample_seed"] = table["sample_seed"].astype(int)
    table["hallucinated"] = table["hallucinated"] == "yes"
    return RatingsTable(path, True, table, skipped)
