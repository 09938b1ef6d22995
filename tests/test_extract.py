"""Stage extract and windows.py: tables as in layout.py, keyframes, windows, video-level split, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pandas as pd
import pytest

from ego4d_fixtures import make_root, tiny_params, tiny_world  # noqa: F401
from gazevlm import ego4d, extract, layout, params, windows

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def extracted(tiny_world, tmp_path_factory):
    """extract.run on the tiny world, in its own working directory; returns (workdir, report)."""
    work = tmp_path_factory.mktemp("extract")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        report = extract.run(tiny_params(tiny_world))
    return work, report


def tables(work: Path) -> dict[str, pd.DataFrame]:
    return {
        name: pd.read_parquet(work / layout.EXTRACT_DIR / f"{name}.parquet")
        for name in ("videos", "gaze_frames", "keyframes", "windows")
    }


def test_tables_follow_the_layout(extracted):
    work, report = extracted
    t = tables(work)
    assert list(t["videos"].columns) == "uid fps width height num_frames duration_s split video_path gaze_path".split()
    assert list(t["gaze_frames"].columns) == "uid frame t x y confidence label valid".split()
    assert list(t["keyframes"].columns) == "keyframe_id uid frame t split path".split()
    assert (
        list(t["windows"].columns)
        == (
            "window_id task uid split obs_frames obs_keyframe_ids target_frames target_keyframe_ids t_start t_end"
        ).split()
    )
    assert len(t["videos"]) == 3 and (t["videos"].num_frames == 240).all()
    gf = t["gaze_frames"]
    assert len(gf) == 3 * 240 and set(gf.label) <= set(layout.GAZE_LABELS)
    assert (gf.valid == gf.label.isin(["fixation", "saccade"])).all()
    assert json.loads((work / "reports" / "extract.json").read_text()) == json.loads(json.dumps(report))


def test_keyframes_carry_absolute_frames_and_native_jpegs(extracted):
    work, _ = extracted
    kf = tables(work)["keyframes"]
    for uid, g in kf.groupby("uid"):
        assert list(g.frame) == list(range(0, 240, 30)) and np.allclose(g.t, g.frame / 30)
        for row in g.itertuples():
            assert row.keyframe_id == layout.keyframe_id(uid, row.frame)
            assert row.path == f"data/extract/frames/{uid}/{row.frame:07d}.jpg"
            image = cv2.imread(str(work / row.path))
            assert image.shape == (128, 128, 3)
    # the JPEG is the video's frame at that absolute index (not an off-by-one neighbour)
    row = kf.iloc[3]
    video = tables(work)["videos"].set_index("uid").video_path[row.uid]
    cap = cv2.VideoCapture(video)
    for _ in range(row.frame + 1):
        ok, frame = cap.read()
    cap.release()
    jpeg = cv2.imread(str(work / row.path)).astype(float)
    assert np.abs(jpeg - frame).mean() < 3


def test_windows_for_both_tasks(extracted):
    work, report = extracted
    t = tables(work)
    win, kf = t["windows"], t["keyframes"].set_index("keyframe_id")
    fut, act = win[win.task == "future"], win[win.task == "activity"]
    # 8 keyframes per video: future windows start at 0..2 (3 has no target), activity at 0..5
    assert len(fut) == 3 * 3 and len(act) == 3 * 6
    assert report["windows"]["future"]["skipped"] == {windows.SKIP_NO_TARGET: 3}
    for w in fut.itertuples():
        assert len(w.obs_frames) == 5 and list(w.obs_frames) == sorted(w.obs_frames)
        last = w.obs_frames[-1] / 30
        assert all(last < f / 30 <= last + 2 for f in w.target_frames) and len(w.target_frames) >= 1
        assert list(kf.loc[list(w.obs_keyframe_ids)].frame) == list(w.obs_frames)
        assert w.t_start == w.obs_frames[0] / 30 and w.t_end == pytest.approx(last + 2)
        assert w.window_id == layout.window_id("future", w.uid, w.obs_frames[0])
    for w in act.itertuples():
        assert len(w.obs_frames) == 3 and list(w.target_frames) == list(w.obs_frames)
        assert list(w.target_keyframe_ids) == list(w.obs_keyframe_ids)
    assert win.window_id.is_unique


def test_split_is_by_video(extracted):
    work, report = extracted
    t = tables(work)
    split_of = t["videos"].set_index("uid").split
    for name in ("keyframes", "windows"):
        assert (t[name].split == t[name].uid.map(split_of)).all()
        assert t[name].groupby("uid").split.nunique().max() == 1  # no video in two splits
    assert sorted(split_of) == ["test", "train", "val"]  # 3 videos: every split non-empty
    assert {s: v["videos"] for s, v in report["splits"].items()} == {"train": 1, "val": 1, "test": 1}
    assert sum(v["windows"]["future"] for v in report["splits"].values()) == report["windows"]["future"]["made"]


def test_gaze_frames_match_the_csv_flipped_once(extracted, tiny_world):
    work, _ = extracted
    gf = tables(work)["gaze_frames"]
    for rec in ego4d.discover(tiny_world).videos:
        raw = pd.read_csv(rec.gaze_path)
        raw = raw[raw.confidence >= 0.6]
        g = gf[(gf.uid == rec.uid) & gf.valid]
        nearest = np.abs(raw.canonical_timestamp_s.to_numpy()[None, :] - g.t.to_numpy()[:, None]).argmin(axis=1)
        assert np.allclose(g.x, raw.norm_pos_x.to_numpy()[nearest] * 128)
        assert np.allclose(g.y, (1 - raw.norm_pos_y.to_numpy()[nearest]) * 128)
        assert len(g) > 150


def test_a_bad_video_is_skipped_and_reported(tmp_path, monkeypatch):
    uids = ["aaa", "bbb", "ccc", "ddd", "eee"]
    vdir = make_root(tmp_path / "root", uids)
    (vdir / "full_scale" / "aaa.mp4").write_bytes(b"not a video")
    (vdir / "gaze" / "bbb.csv").write_text("")
    monkeypatch.chdir(tmp_path)
    report = extract.run(params.with_overrides(params.from_dict({}), data={"root": str(tmp_path / "root")}))
    reasons = {s["uid"]: s for s in report["skipped_videos"]}
    assert set(reasons) == {"aaa", "bbb"}
    assert reasons["aaa"]["file"].endswith(".mp4") and reasons["bbb"]["file"].endswith(".csv")
    assert "empty gaze CSV" in reasons["bbb"]["reason"]
    t = tables(tmp_path)
    for name in t:
        assert set(t[name].uid) <= {"ccc", "ddd", "eee"}
    assert set(t["videos"].uid) == {"ccc", "ddd", "eee"}
    assert not (tmp_path / "data/extract/frames/aaa").exists()
    assert report["videos"] == {"used": 3, "skipped": 2}


def test_video_shorter_than_its_metadata_is_skipped(tmp_path, monkeypatch):
    vdir = make_root(tmp_path / "root", ["aaa", "bbb", "ccc", "ddd"], frames=65)
    meta = json.loads((vdir / "ego4d.json").read_text())
    meta["videos"][1]["video_metadata"]["num_frames"] = 120
    (vdir / "ego4d.json").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    p = params.with_overrides(params.from_dict({}), data={"root": str(tmp_path / "root")})
    report = extract.run(p)
    assert [(s["uid"], "shorter than its metadata" in s["reason"]) for s in report["skipped_videos"]] == [("bbb", True)]
    assert set(tables(tmp_path)["keyframes"].uid) == {"aaa", "ccc", "ddd"}


def test_keyframe_writer_stops_clearly_when_decoding_ends_early(tmp_path):
    from ego4d_fixtures import write_video

    video = write_video(tmp_path / "v.mp4", 40)
    with pytest.raises(ego4d.VideoFileError, match=r"v.mp4: decoding stopped after 40 frames; keyframe 60"):
        extract.write_keyframes(video, [0, 30, 60], "v", 32, 32, root=tmp_path / "out")
    assert not (tmp_path / "out" / "frames" / "v").exists()  # no partial folder left behind
    paths = extract.write_keyframes(video, [30, 0], "v", 32, 32, root=tmp_path / "out")
    assert [Path(p).name for p in paths] == ["0000000.jpg", "0000030.jpg"]


def test_no_usable_video_is_an_error(tmp_path, monkeypatch):
    vdir = make_root(tmp_path / "root", ["aaa"])
    (vdir / "gaze" / "aaa.csv").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ego4d.Ego4DError, match="no usable video.*aaa: .*empty gaze CSV"):
        extract.run(params.with_overrides(params.from_dict({}), data={"root": str(tmp_path / "root")}))


def test_explicit_split_uids(tmp_path, monkeypatch):
    make_root(tmp_path / "root", ["aaa", "bbb", "ccc"], frames=65)
    monkeypatch.chdir(tmp_path)
    p = params.with_overrides(
        params.from_dict({}),
        data={"root": str(tmp_path / "root")},
        extract={"split_uids": {"train": ["aaa"], "test": ["bbb", "zzz"]}},
    )
    report = extract.run(p)
    videos = tables(tmp_path)["videos"]
    assert dict(zip(videos.uid, videos.split, strict=False)) == {"aaa": "train", "bbb": "test"}
    assert [(s["uid"], s["reason"]) for s in report["skipped_videos"]] == [
        ("ccc", "not listed in params.extract.split_uids")
    ]
    assert not (tmp_path / "data/extract/frames/ccc").exists()
    # no val video: allowed, but said loudly in the report
    assert any(
        n.startswith("WARNING:") and "the val split is empty" in n and "2 usable video(s)" in n for n in report["notes"]
    )


def test_figures(extracted, monkeypatch):
    work, _ = extracted
    monkeypatch.chdir(work)
    t = tables(work)
    fig = extract.plot_keyframes_with_gaze(t["keyframes"], t["gaze_frames"], n=4)
    assert len([a for a in fig.axes if a.images]) == 4
    assert extract.plot_gaze_labels(t["gaze_frames"], t["videos"]).axes
    assert extract.plot_window_counts(t["windows"]).axes


# --- windows.py units ---------------------------------------------------------------------------------


def test_keyframe_indices():
    assert list(windows.keyframe_indices(95, 30, 1)) == [0, 30, 60, 90]
    assert list(windows.keyframe_indices(90, 30, 1)) == [0, 30, 60]
    assert list(windows.keyframe_indices(100, 29.97, 1)) == [0, 30, 60, 90]
    assert list(windows.keyframe_indices(61, 30, 2)) == [0, 15, 30, 45, 60]
    with pytest.raises(ValueError):
        windows.keyframe_indices(10, 30, 0)


def test_windows_short_video_and_horizon():
    ep = params.ExtractParams()
    kf = windows.keyframes_for_video("u", 4 * 30, 30, 1)  # 4 keyframes < 5 observed
    made, skipped = windows.windows_for_video(kf, windows.window_specs(ep)["future"])
    assert made == [] and skipped == {windows.SKIP_SHORT_VIDEO: 1}
    kf = windows.keyframes_for_video("u", 7 * 30, 30, 1)  # 7 keyframes: starts 0 (2 targets), 1 (1 target)
    made, skipped = windows.windows_for_video(kf.iloc[::-1], windows.window_specs(ep)["future"])
    assert [w["target_frames"] for w in made] == [[150, 180], [180]]
    assert skipped == {windows.SKIP_NO_TARGET: 1}
    spec = windows.window_specs(params.ExtractParams(window_stride_s=2))["activity"]
    assert [w["obs_frames"][0] for w in windows.windows_for_video(kf, spec)[0]] == [0, 60, 120]


def test_split_fractions():
    for n in (3, 5, 12, 31):
        uids = [f"v{i:02d}" for i in range(n)]
        split, unassigned = windows.split_videos(uids, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
        assert unassigned == [] and sorted(split) == uids
        counts = pd.Series(split).value_counts()
        assert set(counts.index) == {"train", "val", "test"} and counts.sum() == n
        assert split == windows.split_videos(list(reversed(uids)), {"train": 0.6, "val": 0.2, "test": 0.2}, 0)[0]
    split12 = windows.split_videos([f"v{i}" for i in range(12)], {"train": 0.6, "val": 0.2, "test": 0.2}, 0)[0]
    assert pd.Series(split12).value_counts().to_dict() == {"train": 7, "val": 3, "test": 2}
    other = windows.split_videos([f"v{i}" for i in range(12)], {"train": 0.6, "val": 0.2, "test": 0.2}, 1)[0]
    assert other != split12
    one = windows.split_videos(["a"], {"train": 0.6, "val": 0.2, "test": 0.2}, 0)[0]
    assert one == {"a": "train"}


def test_the_default_world_has_enough_test_videos_and_train_windows():
    """Issue 13, item 1: the default params (the `sample` world, the default split and windows) give at
    least 8 test videos and about 1000 train windows per task; counted without rendering a video."""
    from gazevlm import sample

    p = params.load(Path(__file__).resolve().parents[1] / "params.yaml")
    sp, ep = p.sample, p.extract
    assert p.data.root == sp.root  # the default pipeline reads the world it samples
    uids = [sample.video_uid(sp.seed, i) for i in range(sp.videos)]
    assert sample.plan_video(sp, 0).num_frames == int(round(sp.seconds * sp.fps))
    split, unassigned = windows.split_videos(uids, ep.split_fractions, ep.split_seed, ep.split_uids)
    assert not unassigned and windows.check_split(split, ep.split_fractions) == []
    assert sum(s == "test" for s in split.values()) >= 8
    keyframes = pd.concat(
        [windows.keyframes_for_video(u, int(round(sp.seconds * sp.fps)), sp.fps, ep.keyframe_fps) for u in uids],
        ignore_index=True,
    )
    table, _ = windows.build_windows(keyframes, ep, split)
    train = table[table["split"] == "train"].groupby("task").size()
    assert set(train.index) == set(layout.TASKS)
    assert all(800 <= n <= 2000 for n in train), train.to_dict()
    assert table[table["split"] == "test"]["uid"].nunique() >= 8


def test_split_errors_and_explicit_lists():
    with pytest.raises(ValueError, match="sum to 1"):
        windows.split_videos(["a"], {"train": 0.5, "val": 0.2, "test": 0.2}, 0)
    with pytest.raises(ValueError, match="unknown split"):
        windows.split_videos(["a"], {"train": 0.8, "dev": 0.2}, 0)
    with pytest.raises(ValueError, match="in both train and test"):
        windows.split_videos(["a"], {}, 0, {"train": ["a"], "test": ["a"]})
    split, unassigned = windows.split_videos(["a", "b", "c"], {}, 0, {"train": ["a"], "val": ["b", "x"]})
    assert split == {"a": "train", "b": "val"} and unassigned == ["c"]


# --- nothing lost, nothing silent (issue 15, items 4, 7, 8) -------------------------------------------


def _root_params(root: Path) -> params.Params:
    return params.with_overrides(params.from_dict({}), data={"root": str(root)})


def _good_run(tmp_path: Path, monkeypatch) -> pd.DataFrame:
    make_root(tmp_path / "good", ["aaa", "bbb", "ccc"])
    monkeypatch.chdir(tmp_path)
    extract.run(_root_params(tmp_path / "good"))
    return tables(tmp_path)["keyframes"]


def _intact(tmp_path: Path, keyframes: pd.DataFrame) -> None:
    again = tables(tmp_path)["keyframes"]
    pd.testing.assert_frame_equal(again, keyframes)
    assert all((tmp_path / p).is_file() for p in again.path)  # every JPEG the table names is there


def test_a_run_where_every_video_is_bad_keeps_the_last_good_output(tmp_path, monkeypatch):
    keyframes = _good_run(tmp_path, monkeypatch)
    vdir = make_root(tmp_path / "bad", ["aaa", "bbb"])
    for uid in ("aaa", "bbb"):
        (vdir / "full_scale" / f"{uid}.mp4").write_bytes(b"not a video")
    with pytest.raises(ego4d.Ego4DError, match="no usable video"):
        extract.run(_root_params(tmp_path / "bad"))
    _intact(tmp_path, keyframes)
    assert not list((tmp_path / "data").glob(".extract*"))  # no staging directory left behind


def test_a_split_without_test_videos_is_an_error_naming_fractions_and_count(tmp_path, monkeypatch):
    keyframes = _good_run(tmp_path, monkeypatch)
    make_root(tmp_path / "two", ["aaa", "bbb"])
    with pytest.raises(
        windows.SplitError,
        match=r"split_fractions \{'train': 0.6, 'val': 0.2, 'test': 0.2\} "
        r"split 2 usable video\(s\) into train 1 / val 1 / test 0: "
        r"the test split is empty",
    ):
        extract.run(_root_params(tmp_path / "two"))
    _intact(tmp_path, keyframes)
    with pytest.raises(windows.SplitError, match="the train and test splits are empty"):
        windows.check_split({"a": "val"}, {"train": 0.6, "val": 0.2, "test": 0.2})


def test_a_video_without_in_frame_gaze_and_a_cut_csv_get_notes(tmp_path, monkeypatch):
    from ego4d_fixtures import gaze_table, write_gaze

    vdir = make_root(tmp_path / "root", ["aaa", "bbb", "ccc"])
    t = np.arange(0, 65 / 30, 0.005)
    write_gaze(vdir / "gaze" / "aaa.csv", gaze_table(t, nx=np.full(len(t), 1.5)))  # always right of the frame
    text = (vdir / "gaze" / "bbb.csv").read_text()
    (vdir / "gaze" / "bbb.csv").write_text(text[:-25])  # cut inside the last row
    monkeypatch.chdir(tmp_path)
    report = extract.run(_root_params(tmp_path / "root"))
    assert any(n.startswith("aaa: no frame has in-frame gaze") for n in report["notes"])
    assert any(n.endswith("bbb.csv: last row cut short (truncated file?), dropped") for n in report["notes"])
    assert report["per_video"]["bbb"]["gaze"]["dropped_truncated"] == 1
    assert report["per_video"]["aaa"]["gaze"]["labels"]["out_of_frame"] == 65
