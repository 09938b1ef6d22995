"""Grounding diagnostics for the synthetic world: did the text name the right objects and actions?

The synthetic world's captions come from a closed grammar (gazevlm.sample.TEMPLATES, cleaned by
the annotate stage): "the camera wearer picks up the red cup, then the camera wearer puts the red
cup in the blue bowl". So a caption can be parsed back into its events, and a prediction can be
checked against the world's truth word by word, which the semantic score cannot do ("picks up the
red cup" and "picks up the blue bowl" are close sentences to MiniLM). These are synthetic-only
diagnostics, reported beside the paper's metrics and absent on real data:

- object_accuracy: the first object of the prediction (colour and kind) is the first object of the
  reference. A prediction naming no object scores 0.
- action_f1: F1 between the sets of (verb, colour, kind) triples of prediction and reference; a
  put's destination counts as its own triple (verb + "_dest"), so "puts the red cup in the blue
  bowl" is {(put_in, red, cup), (put_in_dest, blue, bowl)}. Sets: stating an event twice earns
  nothing more. A prediction (or reference) stating no event scores 0.
- verb_accuracy: the first verb of the prediction is the first verb of the reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gazevlm import sample

# The world's vocabulary, taken from the world itself (no second copy to drift): colour names in the
# world's order, and its object kinds.
COLOURS: tuple[str, ...] = tuple(sample.COLOURS)
KINDS: tuple[str, ...] = tuple(sample.KINDS)
GROUNDING_METRICS = ("object_accuracy", "action_f1", "verb_accuracy")

Obj = tuple[str, str]  # (colour, kind)
Triple = tuple[str, str, str]  # (verb, colour, kind)

_OBJ = rf"(?:the |a |an )?({'|'.join(COLOURS)}) ({'|'.join(KINDS)})"
# one clause of the grammar; the verb phrase decides the verb, "on the table" is a put without a destination
_CLAUSES = (
    ("pick", re.compile(rf"\bpicks? up {_OBJ}")),
    ("put_table", re.compile(rf"\bputs? {_OBJ} (?:down )?on the table")),
    ("put_in", re.compile(rf"\bputs? {_OBJ} (?:in|into|inside) {_OBJ}")),
    ("put_on", re.compile(rf"\bputs? {_OBJ} (?:on|onto) {_OBJ}")),
    ("open", re.compile(rf"\bopens? {_OBJ}")),
    ("close", re.compile(rf"\bcloses? {_OBJ}")),
    ("hold", re.compile(rf"\bholds? {_OBJ}")),
)
_ANY_OBJ = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(KINDS)})\b")


@dataclass(frozen=True)
class Event:
    verb: str
    obj: Obj
    dest: Obj | None = None
    start: int = 0  # character offset in the text: events are kept in text order


def parse_events(text: str | None) -> list[Event]:
    """Every event the text states, in the order it states them (overlapping matches resolved to the
    earliest, longest clause: "puts the red cup on the table" is a put_table, not a put_on)."""
    s = " ".join(str(text or "").lower().replace(",", " , ").split())
    found: list[tuple[int, int, Event]] = []
    for verb, pattern in _CLAUSES:
        for m in pattern.finditer(s):
            g = m.groups()
            dest = (g[2], g[3]) if len(g) == 4 else None
            found.append((m.start(), -(m.end() - m.start()), Event(verb, (g[0], g[1]), dest, m.start())))
    found.sort(key=lambda x: (x[0], x[1]))
    events, end = [], -1
    for start, neg_len, event in found:
        if start >= end:
            events.append(event)
            end = start - neg_len
    return events


def first_object(text: str | None) -> Obj | None:
    """The first object the text names: its first event's object, else the first colour-kind pair."""
    events = parse_events(text)
    if events:
        return events[0].obj
    m = _ANY_OBJ.search(str(text or "").lower())
    return (m.group(1), m.group(2)) if m else None


def triples(text: str | None) -> set[Triple]:
    out: set[Triple] = set()
    for e in parse_events(text):
        out.add((e.verb, *e.obj))
        if e.dest is not None:
            out.add((f"{e.verb}_dest", *e.dest))
    return out


def f1(pred: set, ref: set) -> float:
    """F1 of two sets; 0 when either is empty (an empty or unparseable prediction earns nothing, even
    against a reference that states no event, as object_accuracy and verb_accuracy also score 0 there)."""
    if not pred or not ref:
        return 0.0
    hit = len(pred & ref)
    return 2.0 * hit / (len(pred) + len(ref))


def _first_verb(text: str | None) -> str | None:
    events = parse_events(text)
    return events[0].verb if events else None


def score_grounding(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-pair object_accuracy, action_f1 and verb_accuracy (float arrays, one value per pair)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    obj, act, verb = [], [], []
    for p, r in zip(predictions, references, strict=False):
        ref_obj = first_object(r)
        pred_obj = first_object(p)
        obj.append(float(ref_obj is not None and pred_obj == ref_obj))
        act.append(f1(triples(p), triples(r)))
        ref_verb = _first_verb(r)
        verb.append(float(ref_verb is not None and _first_verb(p) == ref_verb))
    return {"object_accuracy": np.array(obj), "action_f1": np.array(act), "verb_accuracy": np.array(verb)}


def prior_baseline(train_references: Iterable[str], test_references: Sequence[str]) -> dict[str, float]:
    """Chance levels: what a model that ignores its frames scores on the test references.

    - "majority": always answer the most frequent train target (the language prior a frame-blind model
      converges to), scored with the same functions (majority_object_accuracy, ...);
    - "uniform_object": 1 / (colours x kinds), a uniform guess of the first object.
    """
    train = [t for t in train_references if t]
    if not train or not test_references:
        return {}
    values, counts = np.unique(np.array(train, dtype=object), return_counts=True)
    top = str(values[int(np.argmax(counts))])
    scores = score_grounding([top] * len(test_references), list(test_references))
    out = {f"majority_{k}": float(v.mean()) for k, v in scores.items()}
    out["uniform_object_accuracy"] = 1.0 / (len(COLOURS) * len(KINDS))
    return out
