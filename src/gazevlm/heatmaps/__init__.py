"""Gaze heatmaps: optical flow, occlusion test, temporal aggregation, Gaussians, patch targets.

The stage entry point is `gazevlm.heatmaps.stage.run(params)`; figures live in `gazevlm.heatmaps.figures`.
Coordinates everywhere are (x, y) in pixels of the native video frame, origin top-left, with pixel i
covering [i, i + 1) (its centre at i + 0.5); arrays are indexed (row, col) = (y, x).
"""
