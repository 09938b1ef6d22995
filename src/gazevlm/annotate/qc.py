"""Quality control of captions (the paper's filter), as simple rules that can be tested.

A caption gets zero or more flags:
- empty:      nothing left after stripping whitespace and punctuation;
- generic:    fewer than MIN_WORDS words, or a stock phrase that says nothing about this frame
              ("a person is doing something", "same as previous frame", "an image of a room");
- unclear:    admits it cannot see ("blurred", "blurry", "unclear", "cannot see", "not visible");
- ungrounded: names no object. Rule: drop the leading subject (articles, possessives and person
              words such as "the camera wearer", "another person", "his hands"), drop the verb that
              follows it, and what remains must contain a content word (not a stop word, particle,
              adverb of place or person word). "the camera wearer looks around" is ungrounded;
              "the camera wearer stirs food in pan" is grounded by "food" and "pan".
- unsure:     the narrator tagged the source narration #unsure (the tag is cleaned out of the caption
              text, so the flag carries it: an unsure narration must not pass as a sure one).
The paper's "hallucinated" flag needs a person or the video, so it is not automated here.
A window is dropped when more than qc_max_flagged of its target frames carry any flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FLAG_KINDS = ("empty", "generic", "unclear", "ungrounded", "unsure")
UNSURE_TAG = re.compile(r"#\s*unsure\b", re.IGNORECASE)
MIN_WORDS = 3

_STOCK = (
    r"\b(?:is|are) doing something\b",
    r"\bdoing (?:some|the)thing\b",
    r"\bnothing (?:happens|is happening)\b",
    r"\bno (?:visible )?(?:action|activity|change)\b",
    r"\bsame as (?:the )?(?:previous|above|before|last)\b",
    r"\b(?:previous|next|last) frame\b",
    r"\bas before\b",
    r"^(?:an? )?(?:image|picture|photo|view|frame) of\b",
    r"\bsome(?:thing|one) (?:is )?happening\b",
    r"^(?:n/?a|none|unknown|no caption)$",
)
_UNCLEAR = (
    r"\bblur(?:red|ry)?\b",
    r"\bunclear\b",
    r"\bcan ?not (?:be )?(?:see|seen|tell|determine|identify)\b",
    r"\bcan'?t (?:see|tell|determine|identify)\b",
    r"\bnot (?:clearly )?visible\b",
    r"\bunable to\b",
    r"\bout of focus\b",
    r"\bhard to (?:see|tell)\b",
    r"\bindistinct\b",
    r"\bobscured\b",
)

_STOP = frozenset(
    """
a an the this that these those his her their its my your our some any each every all both one two
and or but then while as with without to of in on at by for from into onto over under up down off out
away back around about near next through across along toward towards behind between inside outside
here there again still also just slightly now closer further forward left right side is are was were be
being been has have had it itself them they he she him himself herself themselves someone somebody
something very too not no slowly quickly carefully gently briefly closely firmly again
""".split()
)
_PERSON_WORDS = frozenset(
    """
camera wearer wearers person people another other man men woman women lady boy girl child kid guy
friend baby hand hands finger fingers arm arms c o x y
""".split()
)


def words(caption: str | None) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", (caption or "").lower())


def is_unsure(source_text: str | None) -> bool:
    """True when a source narration carries Ego4D's #unsure tag."""
    return bool(source_text) and bool(UNSURE_TAG.search(source_text))


def flag_caption(caption: str | None, source_text: str | None = None) -> list[str]:
    """The QC flags of one caption, in FLAG_KINDS order (empty list = clean); `source_text` is the
    narration it was cleaned from, if any (for the unsure flag)."""
    text = (caption or "").strip().lower()
    tokens = words(text)
    if not tokens:
        return ["empty"]
    flags = []
    if len(tokens) < MIN_WORDS or any(re.search(p, text) for p in _STOCK):
        flags.append("generic")
    if any(re.search(p, text) for p in _UNCLEAR):
        flags.append("unclear")
    if not is_grounded(tokens):
        flags.append("ungrounded")
    if is_unsure(source_text):
        flags.append("unsure")
    return flags


def is_grounded(tokens: list[str]) -> bool:
    """True when, after the subject and its verb, a content word (an object) remains."""
    bare = [t[:-2] if t.endswith("'s") else t for t in tokens]
    i = 0
    while i < len(bare) and (bare[i] in _STOP or bare[i] in _PERSON_WORDS):
        i += 1
    rest = bare[i + 1 :]  # bare[i] is the verb
    return any(t not in _STOP and t not in _PERSON_WORDS and not t.isdigit() for t in rest)


def count_flags(flag_lists: Iterable[Iterable[str]]) -> dict[str, int]:
    counts = {kind: 0 for kind in FLAG_KINDS}
    for flags in flag_lists:
        for kind in flags:
            counts[kind] = counts.get(kind, 0) + 1
    return counts
