"""The synthetic world: Ego4D layout, determinism, gaze behaviour and quirks, frames free of gaze."""

from __future__ import annotations

import hashlib
import inspect
import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ego4d_fixtures import TINY, tiny_params, tiny_world  # noqa: F401
from gazevlm import ego4d, sample

SRC = Path(sample.__file__).parent


def frames_digest(video: Path) -> tuple[int, str]:
    cap = cv2.VideoCapture(str(video))
    h, n = hashlib.sha256(), 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h.update(frame.tobytes())
        n += 1
    cap.release()
    return n, h.hexdigest()


def world_bytes(root: Path) -> dict[str, bytes]:
    vdir = root / "v2"
    files = [vdir / "ego4d.json", vdir / "annotations" / "narration.json", *sorted((vdir / "gaze").glob("*.csv"))]
    return {f.name: f.read_bytes() for f in files}


def test_grid_matches_the_tiny_preset():
    from gazevlm.geometry import patch_grid  # no torch: gazevlm.geometry is outside the models package

    assert sample.GRID == patch_grid("tiny")


def test_layout_and_schemas(tiny_world):
    vdir = tiny_world / "v2"
    meta = json.loads((vdir / "ego4d.json").read_text())
    uids = [v["video_uid"] for v in meta["videos"]]
    assert len(uids) == 3 and all(uuid.UUID(u).version == 4 for u in uids)
    for v in meta["videos"]:
        vm = v["video_metadata"]
        assert (vm["fps"], vm["num_frames"], vm["display_resolution_width"], vm["display_resolution_height"]) == (
            30,
            240,
            128,
            128,
        )
        assert v["has_gaze"] is True and v["duration_sec"] == 8.0
        assert (vdir / "full_scale" / f"{v['video_uid']}.mp4").is_file()
        header = (vdir / "gaze" / f"{v['video_uid']}.csv").read_text().split("\n", 1)[0]
        assert tuple(header.split(",")) == ego4d.GAZE_COLUMNS
    narr = json.loads((vdir / "annotations" / "narration.json").read_text())
    assert sorted(narr) == sorted(uids)
    for entry in narr.values():
        assert entry["status"] == "complete"
        for p in ego4d.NARRATION_PASSES:
            assert entry[p]["summaries"] and entry[p]["narrations"]
            for item in entry[p]["narrations"]:
                assert set(item) == {"timestamp_sec", "timestamp_frame", "narration_text", "annotation_uid"}
                assert item["narration_text"].startswith("#C C ")
                assert set(item["narration_text"].split()) <= set(sample.vocabulary())


def test_videos_decode_with_the_metadata_frame_count(tiny_world):
    for video in sorted((tiny_world / "v2" / "full_scale").glob("*.mp4")):
        n, _ = frames_digest(video)
        assert n == 240
        probe = ego4d.probe_video(video)
        assert (probe.width, probe.height, probe.fps, probe.num_frames) == (128, 128, 30, 240)


@pytest.mark.slow  # workers=2: a process pool
def test_same_seed_same_bytes_and_frames_other_seed_differs(tmp_path):
    small = dict(videos=2, seconds=3)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sample.write_world(tiny_params(a, **small).sample)
    sample.write_world(tiny_params(b, **small).sample, workers=2)
    sample.write_world(tiny_params(c, seed=1, **small).sample)
    assert world_bytes(a) == world_bytes(b)
    for video in sorted((a / "v2" / "full_scale").glob("*.mp4")):
        assert frames_digest(video) == frames_digest(b / "v2" / "full_scale" / video.name)
    assert not set(world_bytes(a)) & set(world_bytes(c)) - {"ego4d.json", "narration.json"}
    assert world_bytes(a)["ego4d.json"] != world_bytes(c)["ego4d.json"]


def test_frames_never_show_gaze(tmp_path, monkeypatch):
    # rendering takes the plan only: no gaze argument can reach a frame
    assert list(inspect.signature(sample.render_frames).parameters) == ["plan"]
    small = dict(videos=1, seconds=3)
    sample.write_world(tiny_params(tmp_path / "a", **small).sample)
    monkeypatch.setattr(sample, "GAZE", 99)  # a different gaze stream: other blinks, glances, noise
    sample.write_world(tiny_params(tmp_path / "b", **small).sample)
    a, b = world_bytes(tmp_path / "a"), world_bytes(tmp_path / "b")
    csv = [k for k in a if k.endswith(".csv")][0]
    assert a[csv] != b[csv]
    video = next((tmp_path / "a" / "v2" / "full_scale").glob("*.mp4"))
    assert frames_digest(video) == frames_digest(tmp_path / "b" / "v2" / "full_scale" / video.name)


def read_csv(root: Path, uid: str) -> pd.DataFrame:
    return pd.read_csv(root / "v2" / "gaze" / f"{uid}.csv")


def test_gaze_quirks_are_present(tiny_world):
    tables = [pd.read_csv(p) for p in sorted((tiny_world / "v2" / "gaze").glob("*.csv"))]
    for g in tables:
        t = g.canonical_timestamp_s.to_numpy()
        dt = np.diff(t)
        assert np.median(dt) == pytest.approx(1 / 200, rel=0.1) and (dt > 0).all()
        assert dt.max() > 0.15  # an untracked stretch: rows missing
        assert (g.confidence < 0.6).any()  # blinks
        assert g.component_idx.eq(0).all() and g.base_data.isna().all()
        assert (g.world_index == np.clip(np.round(t * 30), 0, 239)).all()
    out = pd.concat(tables)
    outside = (out.norm_pos_x < 0) | (out.norm_pos_x > 1) | (out.norm_pos_y < 0) | (out.norm_pos_y > 1)
    assert outside.sum() > 20  # out-of-frame excursions


def test_gaze_leads_the_hand_and_the_cue_frame_shows_the_target(tiny_world):
    sp = tiny_params(tiny_world).sample
    checked = 0
    for i in range(sp.videos):
        plan = sample.plan_video(sp, i)
        kin, g = sample.Kinematics(plan), plan.geom
        raw = read_csv(tiny_world, plan.uid)
        t = raw.canonical_timestamp_s.to_numpy()
        for a in plan.actions:
            assert 0.5 <= a.lead_s <= 1.2 and a.contact_s - a.cue_s < a.lead_s - 0.3
            target = g.cell_centre(*a.cell) - kin.camera(np.array([a.cue_s]))[0]
            # bottom-left origin in the file: pixel y = (1 - norm_pos_y) * height
            near = (np.abs(t - a.cue_s) < 0.02) & (raw.confidence > 0.6)
            if near.any():
                x = raw.norm_pos_x[near].median() * g.width
                y = (1 - raw.norm_pos_y[near].median()) * g.height
                assert np.hypot(x - target[0], y - target[1]) < 0.6 * g.cell
                checked += 1
            # the head is turned and the hand close to the target; the camera sits on the cell grid
            assert 0 <= target[0] < g.width and 0 <= target[1] < g.height
            grasp = target + np.multiply(sample.GRASP_OFFSET, g.cell)
            assert np.hypot(*(kin.right_hand(np.array([a.cue_s]))[0] - grasp)) < 1.2 * g.cell
            cam = kin.camera(np.array([a.cue_s]))[0] - g.margin
            assert np.abs(cam - np.round(cam / g.cell) * g.cell).max() <= 0.1 * g.cell
    assert checked >= 6


def test_cue_scales_head_turn_and_hand_reach(tiny_world):
    sp = tiny_params(tiny_world, cue=0.0).sample
    plan = sample.plan_video(sp, 0)
    kin = sample.Kinematics(plan)
    reaches = [p for p in kin.phases if p[6]]  # (t0, t_mid, t1, share, start point, grasp, world)
    assert len(reaches) == len(plan.actions)
    for a, reach in zip(plan.actions, reaches, strict=False):
        assert a.cam_cue == a.cam_before
        # the hand has not left its start (the rest or carry pose, or the previous contact when the
        # next reach follows at once): nothing of the target shows before the contact
        assert reach[3] == 0.0 and reach[1] == a.cue_s
        assert np.allclose(kin.right_hand(np.array([a.cue_s]))[0], reach[4])
    full = sample.Kinematics(sample.plan_video(tiny_params(tiny_world).sample, 0))
    assert all(p[3] == sample.HAND_REACH for p in full.phases if p[6])


def test_narrations_cover_the_keyframes(tiny_world):
    table = ego4d.read_narrations(tiny_world)
    for uid, g in table[table["pass"] == "narration_pass_1"].groupby("uid"):
        ts = g.timestamp_sec.to_numpy()
        for second in range(int(np.ceil(ts.min())), int(ts.max()) + 1):
            assert np.abs(ts - second).min() <= 1.0, (uid, second)
        assert np.diff(ts).max() <= 2.0 + 1e-6


def test_actions_follow_the_world_rules(tiny_world):
    sp = tiny_params(tiny_world, seconds=60).sample
    for i in range(3):
        plan = sample.plan_video(sp, i)
        # contacts fall late in a whole second (PHASE), one or two whole seconds apart (GAPS)
        contacts = np.asarray(plan.contacts)
        phase = contacts - np.floor(contacts)
        assert phase.min() >= sample.PHASE[0] - 1e-6 and phase.max() <= sample.PHASE[1] + 1e-6
        assert set(np.diff(np.floor(contacts)).astype(int)) <= set(sample.GAPS)
        held = None
        for e, a in enumerate(plan.actions):
            kind = plan.things[a.obj].kind
            if a.verb == "pick":
                assert held is None and kind in sample.GRASPABLE
                held = a.obj
            elif a.verb.startswith("put"):
                assert held == a.obj
                held = None
            assert plan.held[e + 1] == held
        cells = [s.cell for s in plan.states[-1] if s.cell is not None and s.inside is None]
        assert len(cells) == len(set(cells))  # one object per cell (apart from things put in / on others)


def test_run_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = sample.run(tiny_params(Path("data/sample"), videos=1, seconds=2))
    assert (tmp_path / "data/sample/v2/ego4d.json").is_file()
    saved = json.loads((tmp_path / "reports/sample.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["frames"] == 60 and saved["cell_px"] == 16 and "picks" in saved["vocabulary"]


def test_rewriting_replaces_a_synthetic_world_but_never_real_data(tmp_path):
    sp = tiny_params(tmp_path, videos=1, seconds=2).sample
    sample.write_world(sp)
    stale = tmp_path / "v2" / "gaze" / "stale.csv"
    stale.write_text("x")
    sample.write_world(sp)
    assert not stale.exists()
    (tmp_path / "v2" / "ego4d.json").write_text(json.dumps({"videos": []}))  # looks like a real download
    with pytest.raises(FileExistsError, match="not a synthetic world"):
        sample.write_world(sp)


def test_bad_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        sample.plan_video(tiny_params(tmp_path, width=32, height=32).sample, 0)
    with pytest.raises(ValueError, match="objects"):
        sample.plan_video(tiny_params(tmp_path, objects=1).sample, 0)
