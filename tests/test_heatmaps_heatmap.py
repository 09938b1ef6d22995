"""Gaussian heatmaps, the shared resize/crop and patch targets (targets never from normalised pixels, never
with swapped axes)."""

import numpy as np
import pytest

from gazevlm.heatmaps.crop import CropGeometry
from gazevlm.heatmaps.heatmap import gaussian_heatmap, single_point_heatmap
from gazevlm.heatmaps.targets import area_pool, patch_target, patch_target_from_points, resize_heatmap


def test_single_point_sums_to_one_and_peaks_at_the_point():
    heat = single_point_heatmap(x=70.3, y=20.6, height=64, width=96, sigma=5)
    assert heat.shape == (64, 96) and heat.dtype == np.float32
    assert heat.sum() == pytest.approx(1.0, abs=1e-5)
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert (row, col) == (20, 70)  # rows are y, columns are x (no swapped axes)


def test_vectorised_sum_equals_per_point_loop():
    pts = np.array([[10.0, 5.0], [80.0, 50.0], [40.0, 30.0]])
    heat = gaussian_heatmap(pts, 64, 96, sigma=4)
    loop = sum(single_point_heatmap(x, y, 64, 96, 4) for x, y in pts) / len(pts)
    np.testing.assert_allclose(heat, loop, atol=1e-7)
    # a point near the border is normalised inside the frame: it weighs as much as one in the middle
    edge = gaussian_heatmap(np.array([[0.2, 0.2], [48.0, 32.0]]), 64, 96, sigma=6)
    assert edge[:20, :20].sum() == pytest.approx(0.5, abs=1e-3)


def test_no_points_or_points_outside_are_refused():
    with pytest.raises(ValueError, match="no gaze points"):
        gaussian_heatmap(np.zeros((0, 2)), 64, 96, 5)
    with pytest.raises(ValueError, match="outside"):
        gaussian_heatmap(np.array([[96.0, 10.0]]), 64, 96, 5)
    with pytest.raises(ValueError, match="outside"):
        gaussian_heatmap(np.array([[np.nan, 10.0]]), 64, 96, 5)
    tiny = single_point_heatmap(10.0, 10.0, 32, 32, sigma=1e-4)  # underflow falls back to one pixel
    assert tiny.sum() == pytest.approx(1.0) and tiny[10, 10] == pytest.approx(1.0)


def test_crop_geometry_non_square():
    g = CropGeometry.for_frame(width=160, height=112, size=64)
    assert (g.resized_width, g.resized_height, g.left, g.top) == (91, 64, 13, 0)
    img = np.zeros((112, 160), np.float32)
    assert g.apply(img).shape == (64, 64)
    cx, cy = g.to_crop(80.0, 56.0)  # frame centre -> crop centre
    assert abs(cx - 32) < 0.6 and abs(cy - 32) < 1e-9
    with pytest.raises(ValueError, match="rows x cols"):
        g.apply(np.zeros((160, 112), np.float32))  # transposed input is refused
    tall = CropGeometry.for_frame(width=100, height=200, size=50)
    assert (tall.resized_width, tall.resized_height, tall.left, tall.top) == (50, 100, 0, 25)


@pytest.mark.parametrize("width,height", [(160, 112), (112, 160), (128, 128)])
def test_blob_in_cell_r_c_puts_most_mass_in_r_c(width, height):
    """Pitfall 1: a gaze blob in patch cell (r, c) of the model's crop gives the target's max at (r, c)."""
    size, grid = 64, 8
    g = CropGeometry.for_frame(width, height, size)
    cell = size / grid
    for r, c in [(0, 0), (1, 6), (6, 2), (7, 7), (3, 4)]:
        # the centre of cell (r, c) in crop pixels, mapped back to native pixels
        cx, cy = (c + 0.5) * cell, (r + 0.5) * cell
        x = (cx + g.left) * width / g.resized_width
        y = (cy + g.top) * height / g.resized_height
        heat = single_point_heatmap(x, y, height, width, sigma=3.0)
        for pt in (
            patch_target(heat, g, grid, eps=1e-6),  # reference path
            patch_target_from_points(np.array([[x, y]]), g, 3.0, grid, eps=1e-6),
        ):  # the stage's path
            assert pt.valid and pt.target.shape == (grid, grid) and pt.target.dtype == np.float32
            assert pt.target.sum() == pytest.approx(1.0, abs=1e-5)
            assert np.unravel_index(pt.target.argmax(), pt.target.shape) == (r, c)
            assert pt.target[r, c] > 0.5  # a blob, not 16 scattered non-zeros


@pytest.mark.parametrize(
    "width,height,size,grid",
    [(160, 112, 64, 8), (112, 160, 64, 8), (1088, 1080, 224, 16), (256, 256, 64, 8), (100, 80, 64, 8)],
)
def test_separable_crop_equals_cropping_the_full_heatmap(width, height, size, grid):
    """The stage builds targets from the separable factors; it must equal the literal resize + crop."""
    g = CropGeometry.for_frame(width, height, size)
    rng = np.random.default_rng(width + height)
    for k in (1, 3, 7):
        pts = rng.uniform([0, 0], [width, height], size=(k, 2))
        pts[0] = [width - 0.5, 1.0]  # one near a corner, partly cropped away
        sigma = max(2.0, width / 50)
        ref = patch_target(gaussian_heatmap(pts, height, width, sigma), g, grid, eps=1e-6)
        fast = patch_target_from_points(pts, g, sigma, grid, eps=1e-6)
        assert fast.valid == ref.valid
        assert fast.visible_mass == pytest.approx(ref.visible_mass, abs=1e-5)
        np.testing.assert_allclose(fast.target, ref.target, atol=1e-6)
        np.testing.assert_allclose(fast.heatmap, ref.heatmap, atol=1e-6)


def test_target_is_built_from_the_raw_heatmap_only():
    """Pitfall 1: normalised pixels (negative values, several channels) are refused, not pooled."""
    g = CropGeometry.for_frame(96, 64, 64)
    clip_like = (np.random.default_rng(0).random((64, 96)) - 0.48) / 0.27
    with pytest.raises(ValueError, match="raw heatmap"):
        patch_target(clip_like.astype(np.float32), g, 8, 1e-6)
    with pytest.raises(ValueError, match="single-channel"):
        patch_target(np.zeros((64, 96, 3), np.float32), g, 8, 1e-6)
    unnormalised = single_point_heatmap(40, 30, 64, 96, 4) * 5
    with pytest.raises(ValueError, match="sum"):
        patch_target(np.clip(unnormalised, 0, 1), g, 8, 1e-6)


def test_eps_keeps_every_cell_positive_and_sum_one():
    g = CropGeometry.for_frame(64, 64, 64)
    pt = patch_target(single_point_heatmap(5, 5, 64, 64, 1.0), g, 8, eps=1e-3)
    assert (pt.target > 0).all() and pt.target.sum() == pytest.approx(1.0, abs=1e-6)


def test_gaze_outside_the_crop_is_invalid_not_a_fake_target():
    g = CropGeometry.for_frame(width=160, height=112, size=64)  # crops 13/91 of the width each side
    heat = single_point_heatmap(2.0, 56.0, 112, 160, sigma=3.0)  # far left, cropped away
    for pt in (patch_target(heat, g, 8, eps=1e-6), patch_target_from_points(np.array([[2.0, 56.0]]), g, 3.0, 8, 1e-6)):
        assert not pt.valid and pt.visible_mass < 0.05
        assert not pt.target.any() and not pt.heatmap.any()


def test_area_pool_and_resize_heatmap():
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    pooled = area_pool(img, 2)
    assert pooled[0, 1] == img[:4, 4:].sum() and pooled.sum() == img.sum()
    odd = area_pool(np.ones((10, 10), np.float32), 3)
    assert odd.sum() == pytest.approx(100.0, rel=1e-5)
    small = resize_heatmap(single_point_heatmap(42, 10, 64, 64, 3), 16)
    assert small.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(small.argmax(), small.shape) == (2, 10)
    assert not resize_heatmap(np.zeros((64, 64), np.float32), 16).any()
