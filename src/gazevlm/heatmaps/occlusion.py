"""Forward/backward flow consistency: is an earlier frame majorly occluded at the keyframe?

For each pixel p of the earlier frame tau, p_hat = p + f(tau->t)(p) and the discrepancy is
|f(tau->t)(p) + f(t->tau)(p_hat)| (the paper, "Gaze heatmaps"). A pixel is inconsistent when the
discrepancy exceeds eps, or when p_hat leaves the keyframe (its content is not visible at t, so
there is no backward flow to check it against: our choice, the paper is silent). The frame is
occluded when more than eta of its pixels are inconsistent.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Consistency:
    inconsistent: np.ndarray  # (h, w) bool at flow resolution
    fraction: float  # share of inconsistent pixels

    def occluded(self, eta: float) -> bool:
        return self.fraction > eta


def consistency(forward: np.ndarray, backward: np.ndarray, eps: float) -> Consistency:
    """Forward flow tau->t and backward flow t->tau, both (h, w, 2) in the same pixel units as eps."""
    if forward.shape != backward.shape or forward.ndim != 3 or forward.shape[2] != 2:
        raise ValueError(f"flows must both be (h, w, 2), got {forward.shape} and {backward.shape}")
    h, w = forward.shape[:2]
    fx, fy = cv2.split(forward)
    map_x = fx + np.arange(w, dtype=np.float32)[None, :]
    map_y = fy + np.arange(h, dtype=np.float32)[:, None]
    # p_hat outside the keyframe samples the huge border value, so its discrepancy exceeds any eps:
    # leaving the frame counts as inconsistent without separate comparisons.
    back = cv2.remap(
        backward,
        map_x,
        map_y,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(_OUTSIDE, _OUTSIDE, 0, 0),
    )
    bx, by = cv2.split(back)
    bad = cv2.magnitude(fx + bx, fy + by) > eps
    return Consistency(bad, float(np.count_nonzero(bad)) / bad.size)


_OUTSIDE = 1.0e6
