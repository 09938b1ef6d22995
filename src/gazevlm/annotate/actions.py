"""Captions from EGTEA Gaze+ action labels: segments of a session, each with a verb and a noun.

Where Ego4D narrates points in time, EGTEA labels segments (a clip's start and end frames). A keyframe
inside one or more segments takes the one that started last (the action in progress most recently
begun); a keyframe between segments takes the nearest segment within the tolerance, measured to the
segment's edge; otherwise it has no caption (counted, not filled). The label reads as a narration
("#C C takes the bowl", gazevlm.egtea.action_sentence) and is cleaned as Ego4D narrations are
("the camera wearer takes the bowl"), so captions of both datasets share one style.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .narrations import PASSES, Narration, NarrationIndex, clean_narration


def _pick(segments: pd.DataFrame, t: float, tolerance_s: float) -> pd.Series | None:
    """The segment a keyframe at time t takes (segments of its session, sorted by start), or None."""
    if segments.empty:
        return None
    start, end = segments["start_s"].to_numpy(), segments["end_s"].to_numpy()
    inside = np.flatnonzero((start <= t + 1e-9) & (t <= end + 1e-9))
    if len(inside):
        return segments.iloc[inside[-1]]  # sorted by start: the last one began most recently
    gap = np.where(t < start, start - t, t - end)
    k = int(np.argmin(gap))  # ties: the earlier segment
    return segments.iloc[k] if gap[k] <= tolerance_s else None


def caption_keyframes(keyframes: pd.DataFrame, actions: pd.DataFrame, tolerance_s: float) -> pd.DataFrame:
    """One row per keyframe: keyframe_id, caption (None when no segment is close enough), narration_t
    (the segment's start), narration_text (the label as a #C narration, for QC)."""
    by_session = {
        s: g.sort_values(["start_s", "end_s", "clip"], kind="stable").reset_index(drop=True)
        for s, g in actions.groupby("session", sort=False)
    }
    rows = []
    empty = actions.iloc[0:0]
    for kf in keyframes.itertuples(index=False):
        seg = _pick(by_session.get(kf.uid, empty), float(kf.t), tolerance_s)
        rows.append(
            {
                "keyframe_id": kf.keyframe_id,
                "caption": clean_narration(seg["text"]) if seg is not None else None,
                "narration_t": float(seg["start_s"]) if seg is not None else None,
                "narration_text": seg["text"] if seg is not None else None,
            }
        )
    return pd.DataFrame(rows, columns=["keyframe_id", "caption", "narration_t", "narration_text"])


def narration_index(actions: pd.DataFrame) -> NarrationIndex:
    """The segments as narrations, for the future task's horizon targets (annotate.future_targets =
    narrations): one per segment, at its start (when the action begins, the time caption_keyframes reports
    as narration_t), so a horizon lists the actions begun inside it. EGTEA has one labelling pass: all go
    in the first."""
    index = NarrationIndex(by_uid={})
    ordered = actions.sort_values(["session", "start_s", "end_s", "clip"], kind="stable")
    for session, start, text, clip in zip(
        ordered["session"], ordered["start_s"], ordered["text"], ordered["clip"], strict=True
    ):
        index.by_uid.setdefault(str(session), []).append(Narration(float(start), str(text), PASSES[0], str(clip)))
    return index
