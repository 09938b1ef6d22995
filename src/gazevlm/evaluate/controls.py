"""Controls that tell a model that reads its frames from one that does not.

- shuffled frames: every test window gets the frames of a window of ANOTHER video (a fixed
  derangement across videos) while its reference stays; a model that ignores its frames scores the
  same, a model that reads them drops. Generation sees only the frames and the task's fixed,
  answer-free prompt, so the text generated for window i's frames under the shuffle is exactly the
  text generated for the window whose frames it received: the shuffled prediction of window i is
  prediction[derangement[i]] (tests/test_evaluate_stage.py checks this against a real second
  generation).
- distinct predictions: the share of test windows whose generated text is distinct. One caption
  for every window (a language prior) gives 1 / n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def derangement(uids: Sequence[str]) -> np.ndarray:
    """index[i] = the window whose frames window i receives: the k-th window of video v gets the
    (k mod n)-th window of the next video in sorted order (n its number of windows), so no window
    keeps a window of its own video and windows keep roughly their position in the video. Windows
    are taken in the given order within each video. Needs at least two videos."""
    uids = np.asarray([str(u) for u in uids], dtype=object)
    videos = sorted(set(uids.tolist()))
    if len(videos) < 2:
        raise ValueError(f"shuffled frames need windows of at least two videos, got {len(videos)}")
    members = {v: np.flatnonzero(uids == v) for v in videos}
    out = np.empty(len(uids), dtype=np.int64)
    for k, v in enumerate(videos):
        donor = members[videos[(k + 1) % len(videos)]]
        for j, i in enumerate(members[v]):
            out[i] = donor[j % len(donor)]
    return out


def distinct_share(predictions: Sequence[str]) -> float:
    """Share of windows whose (normalised) generated text is distinct: #distinct texts / #windows."""
    if not len(predictions):
        return float("nan")
    return len(set(predictions)) / len(predictions)
