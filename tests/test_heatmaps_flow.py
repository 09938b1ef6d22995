"""Flow backends, the forward/backward occlusion test and flow aggregation on a translated scene."""

import numpy as np
import pytest

from gazevlm.heatmaps import aggregate as A
from gazevlm.heatmaps.aggregate import Aggregator, GazeTrack, single_point, window_frames
from gazevlm.heatmaps.flow import FlowBackendError, RaftFlow, make_backend, sample_flow
from gazevlm.heatmaps.occlusion import consistency
from heatmaps_fixtures import HEIGHT, VELOCITY, WIDTH, panning_frames

FRAMES = panning_frames(16, seed=3)


def track(n=16, valid=None, x0=40.0, y0=30.0):
    f = np.arange(n)
    v = np.ones(n, bool) if valid is None else valid
    return GazeTrack(f, x0 + VELOCITY[0] * f, y0 + VELOCITY[1] * f, v, WIDTH, HEIGHT)


@pytest.mark.parametrize("name,scale,gap", [("dis", 1.0, 6), ("dis", 0.5, 6), ("farneback", 1.0, 2)])
def test_backends_recover_the_translation(name, scale, gap):
    b = make_backend(name)
    fw, bw = b.flow_pair(b.prepare(FRAMES[10 - gap], scale), b.prepare(FRAMES[10], scale), backward=True)
    h, w = fw.shape[:2]
    assert (w, h) == (round(WIDTH * scale), round(HEIGHT * scale))
    inner = fw[h // 4 : -h // 4, w // 4 : -w // 4] / scale
    np.testing.assert_allclose(np.median(inner.reshape(-1, 2), axis=0), np.array(VELOCITY) * gap, atol=0.5)
    back = bw[h // 4 : -h // 4, w // 4 : -w // 4] / scale
    np.testing.assert_allclose(np.median(back.reshape(-1, 2), axis=0), -np.array(VELOCITY) * gap, atol=0.5)


def test_unknown_backend_and_bad_scale():
    with pytest.raises(FlowBackendError, match="unknown heatmaps.flow"):
        make_backend("pwcnet")
    with pytest.raises(ValueError, match="flow_scale"):
        make_backend("dis").prepare(FRAMES[0], 1.5)


def test_sample_flow_is_bilinear():
    rows, cols = np.mgrid[0:5, 0:7].astype(np.float32)
    flow = np.stack([cols * 2.0, rows * 3.0], axis=-1)  # linear field: exact under bilinear
    out = sample_flow(flow, np.array([1.5, 6.0]), np.array([2.25, 4.0]))
    np.testing.assert_allclose(out, [[3.0, 6.75], [12.0, 12.0]])


def test_consistency_on_constant_flows():
    h, w = 20, 30
    fw = np.zeros((h, w, 2), np.float32)
    fw[..., 0] = 3.0
    good = consistency(fw, -fw, eps=1.0)
    # only the columns whose p_hat leaves the frame (x + 3 > w - 1) are inconsistent
    assert good.fraction == pytest.approx(3 / w)
    assert not good.occluded(0.6)
    bad = consistency(fw, fw.copy(), eps=1.0)  # |3 + 3| = 6 > 1 everywhere
    assert bad.fraction == 1.0 and bad.occluded(0.6)
    with pytest.raises(ValueError):
        consistency(fw, fw[:, :5], eps=1.0)


def prepared(agg, frames, indices):
    return {i: agg.prepare(frames[i]) for i in indices}


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_aggregation_moves_points_by_the_translation(scale):
    """Gaze fixates a scene point; flow must bring every earlier point onto the keyframe's point."""
    agg = Aggregator(make_backend("dis"), scale, eps_px=20, eta=0.6, occlusion_filter=True)
    tr = track()
    key = 12
    out = agg.aggregate(tr, key, 6, prepared(agg, FRAMES, window_frames(key, 6)))
    assert out.frames == list(range(6, 13)) and out.status == [A.USED] * 7
    target = np.array(tr.point(key))
    np.testing.assert_allclose(out.points, np.repeat(target[None], 7, axis=0), atol=1.0)
    # without the flow the raw points would be up to 6 * |v| away
    raw = np.array([tr.point(f) for f in out.frames])
    assert np.abs(raw - target).max() >= 12


def test_an_occluded_frame_is_dropped():
    frames = list(FRAMES)
    # the whole view changes (turned upside down): no pixel's forward flow is undone by the backward flow
    frames[8] = np.ascontiguousarray(FRAMES[8][::-1, ::-1])
    # eps 2 px at 160 px wide ~ the paper's 20 px at 1088 px, scaled
    agg = Aggregator(make_backend("dis"), 1.0, eps_px=2, eta=0.6, occlusion_filter=True)
    out = agg.aggregate(track(), 12, 6, prepared(agg, frames, window_frames(12, 6)))
    status = dict(zip(out.frames, out.status, strict=False))
    assert status[8] == A.OCCLUDED
    assert [f for f, s in status.items() if s == A.OCCLUDED] == [8]
    frac = dict(zip(out.frames, out.inconsistent, strict=False))
    assert frac[8] > 0.6 and max(frac[f] for f in (6, 7, 9, 10, 11)) < 0.6
    assert len(out.points) == 6
    unfiltered = Aggregator(make_backend("dis"), 1.0, eps_px=2, eta=0.6, occlusion_filter=False)
    out2 = unfiltered.aggregate(track(), 12, 6, prepared(unfiltered, frames, window_frames(12, 6)))
    assert A.OCCLUDED not in out2.status and np.isnan(out2.inconsistent).all()


class CountingBackend:
    def __init__(self):
        self.inner = make_backend("dis")
        self.calls = 0

    def prepare(self, frame, scale):
        return self.inner.prepare(frame, scale)

    def flow_pair(self, a, b, backward):
        self.calls += 1
        return self.inner.flow_pair(a, b, backward)


def test_invalid_gaze_frames_cost_no_flow_and_never_enter():
    valid = np.ones(16, bool)
    valid[[7, 9]] = False
    backend = CountingBackend()
    agg = Aggregator(backend, 1.0, 20, 0.6, True)
    out = agg.aggregate(track(valid=valid), 12, 6, prepared(agg, FRAMES, window_frames(12, 6)))
    status = dict(zip(out.frames, out.status, strict=False))
    assert status[7] == status[9] == A.INVALID_GAZE
    assert backend.calls == 4 and len(out.points) == 5


def test_points_moved_out_of_frame_and_missing_frames_are_dropped():
    tr = track(x0=WIDTH - 2.0 - VELOCITY[0] * 12, y0=30.0)  # at the keyframe the point is at x = W - 2
    tr.x[6] = WIDTH - 1.0  # frame 6's point moves +12 px: out of frame
    agg = Aggregator(make_backend("dis"), 1.0, 20, 0.6, False)
    frames = prepared(agg, FRAMES, window_frames(12, 6))
    del frames[9]  # the video never delivered frame 9
    out = agg.aggregate(tr, 12, 6, frames)
    status = dict(zip(out.frames, out.status, strict=False))
    assert status[6] == A.MOVED_OUT and status[9] == A.FRAME_MISSING
    assert all(0 <= x < WIDTH for x, _ in out.points)


def test_keyframe_without_any_valid_point_is_invalid():
    valid = np.zeros(16, bool)
    agg = Aggregator(make_backend("dis"), 1.0, 20, 0.6, True)
    out = agg.aggregate(track(valid=valid), 12, 6, {})
    assert not out.valid and out.status == [A.INVALID_GAZE] * 7
    assert not single_point(track(valid=valid), 12).valid
    one = single_point(track(), 12)
    assert one.valid and one.points.shape == (1, 2) and one.frames == [12]


def test_gaze_track_is_indexed_by_frame_not_row_order():
    """Pitfall 6/7: rows arrive shuffled; lookups go by the absolute frame index."""
    f = np.array([5, 0, 3, 1, 2, 4])
    tr = GazeTrack(f, x=f * 10.0, y=f + 0.5, valid=np.ones(6, bool), width=100, height=50)
    assert tr.point(3) == (30.0, 3.5) and tr.point(0) == (0.0, 0.5)
    assert tr.point(6) is None and tr.point(-1) is None
    tr2 = GazeTrack(np.array([0]), np.array([150.0]), np.array([1.0]), np.array([True]), 100, 50)
    assert tr2.point(0) is None  # outside the frame never enters


def test_raft_needs_local_weights(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FlowBackendError, match="needs local RAFT weights"):
        make_backend("raft")
    with pytest.raises(FlowBackendError, match="needs local RAFT weights"):
        make_backend("raft_small", raft_weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FlowBackendError, match="junk.pth"):
        make_backend("raft_small", raft_weights=junk)


def test_raft_runs_from_a_local_checkpoint(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)  # random weights: checks the plumbing only
    assert make_backend("raft_small", raft_weights=path).weights_path == path
    b = RaftFlow("raft_small", path, num_flow_updates=2)  # fewer refinement steps: test speed
    a, c = b.prepare(FRAMES[0], 0.25), b.prepare(FRAMES[1], 0.25)  # 40 x 28: not a multiple of 8
    fw, bw = b.flow_pair(a, c, backward=True)
    assert fw.shape == bw.shape == (28, 40, 2) and fw.dtype == np.float32
    fw_only, none = b.flow_pair(a, c, backward=False)
    assert none is None and fw_only.shape == (28, 40, 2)
