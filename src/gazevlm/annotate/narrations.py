"""Captions from Ego4D narrations: read narration.json, clean the tags, match keyframes by time.

Ego4D narrations are point events ("#C C picks up the knife" at 12.3 s) written in two passes by
different annotators. A keyframe's caption is the narration nearest to it in time, from either pass,
if one lies within the tolerance; otherwise the keyframe has no caption (it is counted, not filled).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import ego4d

PASSES = ego4d.NARRATION_PASSES

# Words that name a person in "#O man X"-style references; the single capital letter after them is
# the annotators' id for that person and carries no meaning in a caption.
_PERSON_NOUNS = (
    "man",
    "woman",
    "lady",
    "boy",
    "girl",
    "person",
    "child",
    "kid",
    "guy",
    "friend",
    "baby",
    "men",
    "women",
    "people",
)
_NOUN = "|".join(_PERSON_NOUNS)
# Capital letters used as person ids. C is the wearer, I is the pronoun and A is too often the article.
_PERSON_ID = r"(?![ACI]\b)[A-Z]"


@dataclass(frozen=True)
class Narration:
    t: float
    text: str
    narration_pass: str
    annotation_uid: str


@dataclass
class NarrationIndex:
    """Narrations per video, sorted by time, plus what was skipped while reading and why."""

    by_uid: dict[str, list[Narration]]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def clean_narration(text: str) -> str:
    """Turn Ego4D narration text into a plain lower-case English caption.

    "#C C picks up the knife" -> "the camera wearer picks up the knife";
    "#O man X hands C a cup" -> "a man hands the camera wearer a cup"; "#unsure" is dropped.
    """
    s = str(text)
    s = re.sub(r"#\s*unsure\b", " ", s, flags=re.IGNORECASE)
    # The wearer: "#C C", a bare "#C", then every stand-alone capital C ("hands the cup to C").
    s = re.sub(
        r"#\s*C\b\s*(?:\bC\b)?('s\b)?",
        lambda m: " the camera wearer" + (m.group(1) or "") + " ",
        s,
        flags=re.IGNORECASE,
    )
    s = re.sub(r"\bC\b", "the camera wearer", s)
    # Another person: "#O man X" / "#O the woman Y" -> "a man" / "a woman"; "#O X" / "#O" -> another person.
    # (Only the tag, articles and nouns ignore case: the person id is always a capital letter.)
    s = re.sub(rf"(?i:#\s*O)\b\s*(?:(?i:the|a|an)\s+)?((?i:{_NOUN}))\b(?:\s+[A-Z]\b)?", _another, s)
    s = re.sub(r"(?i:#\s*O)\b\s*(?:[A-Z]\b(?!'))?", " another person ", s)
    # Later mentions of the same person: "man X" -> "the man" (unless an article is already there).
    s = re.sub(
        rf"\b(?:((?i:the|a|an))\s+)?((?i:{_NOUN}))\s+[A-Z]\b", lambda m: f"{m.group(1) or 'the'} {m.group(2)}", s
    )
    s = re.sub(rf"\b{_PERSON_ID}\b('s)?", lambda m: "another person" + (m.group(1) or ""), s)
    s = re.sub(r"#\s*\w+", " ", s)  # any other annotation tag
    s = s.lower()
    s = re.sub(r"\ban another\b", "another", s)
    s = re.sub(r"\ba another\b", "another", s)
    s = re.sub(r"\bthe the\b", "the", s)
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)  # no space before punctuation
    s = re.sub(r"([,.;:!?])\1+", r"\1", s)  # "..", ",," -> one
    s = re.sub(r"\s+", " ", s)
    return s.strip(" \t\n,.;:!?-")


def _another(m: re.Match) -> str:
    noun = m.group(1).lower()
    return " another person " if noun == "person" else f" a {noun} "


def load_narrations(data_root: str | Path, version: str) -> NarrationIndex:
    """Both passes of <data_root>/<version>/annotations/narration.json, read by gazevlm.ego4d (which
    raises NarrationError naming the file if it is missing or malformed). Entries with a non-finite
    time, or whose text is empty once cleaned (e.g. only "#unsure"), are skipped and counted."""
    table = ego4d.read_narrations(data_root, version)
    index = NarrationIndex(by_uid={})
    for uid in table["uid"].unique():
        index.by_uid[str(uid)] = []
    columns = [table[c] for c in ("uid", "pass", "timestamp_sec", "text", "annotation_uid")]
    for uid, pass_name, t, text, annotation_uid in zip(*columns, strict=False):
        if not math.isfinite(t):
            index.skip("bad_timestamp")
        elif not clean_narration(text):
            index.skip("empty_text")
        else:
            index.by_uid[str(uid)].append(Narration(float(t), text, pass_name, annotation_uid))
    for items in index.by_uid.values():
        items.sort(key=lambda n: (n.t, PASSES.index(n.narration_pass), n.annotation_uid))
    return index


def nearest(narrations: list[Narration], t: float, tolerance_s: float) -> Narration | None:
    """The narration nearest to time t within tolerance; ties go to the earlier one, then pass 1."""
    times = [n.t for n in narrations]
    i = bisect.bisect_left(times, t - tolerance_s)
    best: Narration | None = None
    best_key: tuple | None = None
    while i < len(narrations) and narrations[i].t <= t + tolerance_s:
        n = narrations[i]
        key = (abs(n.t - t), n.t, PASSES.index(n.narration_pass))
        if best_key is None or key < best_key:
            best, best_key = n, key
        i += 1
    return best


def caption_keyframes(keyframes: pd.DataFrame, index: NarrationIndex, tolerance_s: float) -> pd.DataFrame:
    """One row per keyframe: keyframe_id, caption (None when no narration is close enough), narration_t,
    narration_text (the raw narration, tags and all: QC reads #unsure from it)."""
    rows = []
    for kf in keyframes.itertuples(index=False):
        found = nearest(index.by_uid.get(kf.uid, []), float(kf.t), tolerance_s)
        rows.append(
            {
                "keyframe_id": kf.keyframe_id,
                "caption": clean_narration(found.text) if found else None,
                "narration_t": found.t if found else None,
                "narration_text": found.text if found else None,
            }
        )
    return pd.DataFrame(rows, columns=["keyframe_id", "caption", "narration_t", "narration_text"])


def narrated_pass(narrations: list[Narration]) -> str | None:
    """The pass a video's coarse targets come from: the first of PASSES with any narration. Both passes
    narrate the same events (by two annotators), so mixing them would repeat each event."""
    present = {n.narration_pass for n in narrations}
    return next((p for p in PASSES if p in present), None)


def narrations_between(narrations: list[Narration], start: float, end: float) -> list[Narration]:
    """The narrations of the video's narrated pass with start < t <= end, in time order (the window
    code's tolerances: a narration exactly at the horizon's end is in, one at its start is not)."""
    chosen = narrated_pass(narrations)
    return [n for n in narrations if n.narration_pass == chosen and start + 1e-9 < n.t <= end + 1e-6]
