"""Readers of the Ego4D layout, on the tiny synthetic world and on hand-written fixtures per quirk."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ego4d_fixtures import gaze_table, make_root, metadata_entry, tiny_world, write_gaze, write_metadata, write_video  # noqa: F401
from gazevlm import ego4d

PER_FRAME = dict(confidence_min=0.6, max_gap_s=0.05, saccade_px=40.0)


# --- the synthetic world through the reader ------------------------------------------------------------


def test_discover_tiny_world(tiny_world):
    inv = ego4d.discover(tiny_world)
    assert len(inv.videos) == 3 and inv.skipped == []
    for rec in inv.videos:
        assert (rec.fps, rec.width, rec.height, rec.num_frames) == (30, 128, 128, 240)
        assert rec.video_path.parent.name == "full_scale" and rec.gaze_path.suffix == ".csv"
        samples, stats = ego4d.read_gaze_csv(rec.gaze_path)
        assert stats.dropped_nan == 0 and stats.dropped_out_of_range == 0
        assert samples.t.is_monotonic_increasing
        gf = ego4d.gaze_per_frame(
            samples, fps=rec.fps, width=rec.width, height=rec.height, num_frames=rec.num_frames, **PER_FRAME
        )
        assert len(gf) == 240 and (gf.frame.to_numpy() == np.arange(240)).all()
        assert set(gf.label) <= {"fixation", "saccade", "out_of_frame", "untracked"}
        assert gf.label.eq("fixation").mean() > 0.6


def test_read_narrations_tiny_world(tiny_world):
    table = ego4d.read_narrations(tiny_world)
    assert set(table["pass"]) == set(ego4d.NARRATION_PASSES)
    assert table.text.str.startswith("#C C ").all()
    assert (table.timestamp_frame == (table.timestamp_sec * 30).round().astype(int)).all()
    assert table.annotation_uid.is_unique


# --- per-frame gaze ---------------------------------------------------------------------------------


def test_y_is_flipped_exactly_once():
    samples, _ = ego4d.read_gaze_csv(write_gaze_tmp(gaze_table([0.0, 0.033, 0.066], nx=0.25, ny=0.75)))
    gf = ego4d.gaze_per_frame(samples, fps=30, width=200, height=100, num_frames=3, **PER_FRAME)
    assert np.allclose(gf.x, 50.0) and np.allclose(gf.y, 25.0)  # (0.25 W, 0.25 H) from the top-left
    assert (gf.label == "fixation").all() and gf.valid.all()


def write_gaze_tmp(table: pd.DataFrame):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "g.csv"
    return write_gaze(path, table)


def test_nearest_sample_gap_confidence_and_labels():
    # frames at 0, 0.1, ..., 0.7 s (10 fps) in a 100 x 100 image
    samples = pd.DataFrame(
        {
            "t": [0.0, 0.1, 0.2, 0.3, 0.41, 0.5, 0.6, 0.64],
            "confidence": [0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.2, 0.9],
            "norm_x": [0.5, 0.9, 0.3, 0.5, 1.3, 0.5, 0.0, 0.5],
            "norm_y": 0.5,
        }
    )
    gf = ego4d.gaze_per_frame(samples, fps=10, width=100, height=100, num_frames=8, **PER_FRAME)
    assert list(gf.label) == [
        "fixation",  # x = 50
        "fixation",  # moved exactly 40 px: not more than saccade_px
        "saccade",  # moved 60 px
        "untracked",  # only a blink here; the nearest confident samples are 0.1 s away
        "out_of_frame",  # x = 130, 10 ms away
        "saccade",  # back from 130 to 50
        "fixation",  # the nearest sample is a blink: the confident one 40 ms away is used
        "untracked",  # nearest sample 60 ms away > max_gap_s
    ]
    assert list(gf.valid) == [True, True, True, False, False, True, True, False]
    assert gf.x[6] == 50 and gf.confidence[6] == 0.9 and gf.y[6] == 50
    assert gf.x[4] == pytest.approx(130) and np.isnan(gf.x[3]) and np.isnan(gf.x[7])


def test_max_gap_makes_frames_untracked():
    samples = pd.DataFrame({"t": [0.0, 0.2], "confidence": 0.9, "norm_x": [0.1, 0.9], "norm_y": 0.5})
    gf = ego4d.gaze_per_frame(samples, fps=10, width=100, height=100, num_frames=3, **PER_FRAME)
    # the frame after an untracked one has no previous point to compare with: not a saccade
    assert list(gf.label) == ["fixation", "untracked", "fixation"]
    assert np.isnan(gf.x[1]) and not gf.valid[1]


# --- layout quirks ------------------------------------------------------------------------------------


def test_manifest_legacy_suffix_and_full_scale_gaze(tmp_path):
    vdir = make_root(tmp_path, ["aaa", "bbb"], video_dir="full_scale.gaze")
    (vdir / "gaze" / "manifest.csv").write_text("video_uid\naaa\n")
    (vdir / "gaze" / "manifest.ver").write_text("1\n")
    legacy = vdir / "gaze" / "bbb.mp4"
    (vdir / "gaze" / "bbb.csv").rename(legacy)  # old v1 downloads: CSV text with an .mp4 suffix
    (vdir / "gaze" / "ccc.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # a real video here
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa", "bbb"]
    assert inv.videos[1].gaze_path == legacy
    assert all(r.video_path.parent.name == "full_scale.gaze" for r in inv.videos)
    assert any("old v1 .mp4 suffix" in n for n in inv.notes)
    assert [(s.uid, "not CSV text" in s.reason) for s in inv.skipped] == [("ccc", True)]
    assert "manifest" not in {r.uid for r in inv.videos}


def test_gaze_without_video_and_video_without_gaze(tmp_path):
    vdir = make_root(tmp_path, ["aaa", "bbb", "ccc"])
    (vdir / "full_scale" / "bbb.mp4").unlink()
    (vdir / "gaze" / "ccc.csv").unlink()
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa"]
    reasons = {s.uid: s.reason for s in inv.skipped}
    assert "gaze CSV without a video" in reasons["bbb"]
    assert "video without a gaze CSV" in reasons["ccc"]


def test_missing_ego4d_json_is_an_error(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    (vdir / "ego4d.json").unlink()
    with pytest.raises(ego4d.LayoutError, match="ego4d.json"):
        ego4d.discover(tmp_path)


def test_malformed_ego4d_json_is_an_error(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    (vdir / "ego4d.json").write_text("{not json")
    with pytest.raises(ego4d.MetadataError, match=str(vdir / "ego4d.json")):
        ego4d.discover(tmp_path)


def test_missing_version_folder_is_an_error(tmp_path):
    with pytest.raises(ego4d.LayoutError, match=f"{tmp_path / 'v2'}: Ego4D version folder not found"):
        ego4d.discover(tmp_path)


def test_missing_gaze_folder_is_an_error(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    for f in (vdir / "gaze").iterdir():
        f.unlink()
    (vdir / "gaze").rmdir()
    with pytest.raises(ego4d.LayoutError, match="gaze folder"):
        ego4d.discover(tmp_path)


def test_missing_metadata_entry_is_skipped(tmp_path):
    vdir = make_root(tmp_path, ["aaa", "bbb"])
    write_metadata(vdir, [metadata_entry("aaa", 65)])
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa"]
    assert "no usable entry in ego4d.json" in inv.skipped[0].reason and inv.skipped[0].uid == "bbb"


def test_corrupt_and_truncated_videos_are_skipped(tmp_path):
    vdir = make_root(tmp_path, ["aaa", "bbb", "ccc"])
    (vdir / "full_scale" / "bbb.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = (vdir / "full_scale" / "ccc.mp4").read_bytes()
    (vdir / "full_scale" / "ccc.mp4").write_bytes(whole[: len(whole) // 2])
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa"]
    skipped = {s.uid: s for s in inv.skipped}
    assert set(skipped) == {"bbb", "ccc"}
    for uid in ("bbb", "ccc"):
        assert skipped[uid].file.endswith(f"{uid}.mp4") and str(vdir) in skipped[uid].reason


def test_video_shorter_than_metadata_and_resolution_mismatch(tmp_path):
    vdir = make_root(tmp_path, ["aaa", "bbb", "ccc"])
    write_metadata(
        vdir, [metadata_entry("aaa", 65), metadata_entry("bbb", 90), metadata_entry("ccc", 65, width=64, height=64)]
    )
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa"]
    skipped = {s.uid: s.reason for s in inv.skipped}
    assert "shorter than its metadata" in skipped["bbb"] and "65 frames" in skipped["bbb"]
    assert "resolution 32x32" in skipped["ccc"]


def test_has_gaze_false_is_noted_not_trusted(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    entry = metadata_entry("aaa", 65)
    entry["has_gaze"] = False
    write_metadata(vdir, [entry])
    inv = ego4d.discover(tmp_path)
    assert [r.uid for r in inv.videos] == ["aaa"] and any("has_gaze" in n for n in inv.notes)


# --- bad gaze CSVs ------------------------------------------------------------------------------------


def test_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ego4d.GazeFileError, match="empty.csv.*empty gaze CSV"):
        ego4d.read_gaze_csv(path)


def test_header_only_csv(tmp_path):
    path = write_gaze(tmp_path / "h.csv", gaze_table([]))
    with pytest.raises(ego4d.GazeFileError, match="h.csv.*no samples"):
        ego4d.read_gaze_csv(path)


def test_missing_columns(tmp_path):
    path = write_gaze(tmp_path / "m.csv", gaze_table([0.0, 0.1]).drop(columns=["norm_pos_y", "confidence"]))
    with pytest.raises(ego4d.GazeFileError, match=r"m.csv.*missing gaze column\(s\) \['confidence', 'norm_pos_y'\]"):
        ego4d.read_gaze_csv(path)


def test_truncated_csv_drops_the_partial_row(tmp_path):
    path = write_gaze(tmp_path / "t.csv", gaze_table([0.0, 0.1, 0.2]))
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 12])  # cut inside the last row
    samples, stats = ego4d.read_gaze_csv(path)
    assert stats.rows == 3 and stats.used == 2 and stats.dropped_truncated == 1 and stats.dropped_nan == 0
    assert list(samples.t) == [0.0, 0.1]


def test_a_last_row_cut_mid_number_is_dropped_and_counted(tmp_path):
    """Issue 15, item 8: "0.51234" cut to "0.51" parsed as a real (wrong) gaze position."""
    table = gaze_table([0.0, 0.1, 0.2], nx=[0.5, 0.5, 0.51234])
    path = write_gaze(tmp_path / "cut.csv", table)
    text = path.read_text()
    path.write_text(text[: text.rindex("0.51234") + 4])  # the file ends in "...,0.51"
    samples, stats = ego4d.read_gaze_csv(path)
    assert list(samples.norm_x) == [0.5, 0.5] and stats.dropped_truncated == 1 and stats.rows == 3
    # only the columns we read, no final newline: the last row may hold a partial number too
    short = write_gaze(tmp_path / "short.csv", table[list(ego4d.GAZE_REQUIRED)])
    text = short.read_text()
    short.write_text(text[: text.rindex("\n")])  # complete fields, but no line end
    samples, stats = ego4d.read_gaze_csv(short)
    assert len(samples) == 2 and stats.dropped_truncated == 1
    intact = write_gaze(tmp_path / "intact.csv", table)  # a whole file loses nothing
    samples, stats = ego4d.read_gaze_csv(intact)
    assert len(samples) == 3 and stats.dropped_truncated == 0


def test_truncated_header_is_missing_columns(tmp_path):
    path = write_gaze(tmp_path / "th.csv", gaze_table([0.0]))
    path.write_text(path.read_text()[:60])
    with pytest.raises(ego4d.GazeFileError, match="missing gaze column"):
        ego4d.read_gaze_csv(path)


def test_nan_and_out_of_range_rows_are_dropped_and_counted(tmp_path):
    table = gaze_table(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        conf=[0.9, np.nan, 1.5, 0.9, 0.9, 0.9],
        nx=[0.5, 0.5, 0.5, 50.0, 1.2, 0.5],
        ny=[0.5, 0.5, 0.5, 0.5, 0.5, np.nan],
    )
    samples, stats = ego4d.read_gaze_csv(write_gaze(tmp_path / "n.csv", table))
    assert (stats.dropped_nan, stats.dropped_out_of_range, stats.used) == (2, 2, 2)
    assert list(samples.t) == [0.0, 0.4]  # 1.2 is an out-of-frame excursion, not garbage


def test_all_rows_bad_is_an_error(tmp_path):
    path = write_gaze(tmp_path / "b.csv", gaze_table([0.0, 0.1], conf=[np.nan, -1.0]))
    with pytest.raises(ego4d.GazeFileError, match="no usable gaze sample"):
        ego4d.read_gaze_csv(path)


def test_non_numeric_value_is_an_error(tmp_path):
    table = gaze_table([0.0, 0.1])
    table["norm_pos_x"] = ["0.5", "abc"]
    with pytest.raises(ego4d.GazeFileError, match=r"x.csv.*'abc' in column norm_pos_x"):
        ego4d.read_gaze_csv(write_gaze(tmp_path / "x.csv", table))


def test_unsorted_samples_are_sorted():
    path = write_gaze_tmp(gaze_table([0.2, 0.0, 0.1], nx=[0.3, 0.1, 0.2]))
    samples, _ = ego4d.read_gaze_csv(path)
    assert list(samples.t) == [0.0, 0.1, 0.2] and list(samples.norm_x) == [0.1, 0.2, 0.3]


# --- narrations ---------------------------------------------------------------------------------------


def test_missing_narration_file(tmp_path):
    make_root(tmp_path, ["aaa"])
    with pytest.raises(ego4d.NarrationError, match="narration.json: narration file not found"):
        ego4d.read_narrations(tmp_path)


def test_malformed_narrations(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    (vdir / "annotations").mkdir()
    path = vdir / "annotations" / "narration.json"
    path.write_text("[1, 2")
    with pytest.raises(ego4d.NarrationError, match="not valid JSON"):
        ego4d.read_narrations(tmp_path)
    path.write_text(json.dumps({"aaa": {"narration_pass_1": {"narrations": [{"timestamp_sec": 1.0}]}}}))
    with pytest.raises(ego4d.NarrationError, match="malformed narration in aaa.narration_pass_1"):
        ego4d.read_narrations(tmp_path)


def test_hand_written_narrations(tmp_path):
    vdir = make_root(tmp_path, ["aaa"])
    (vdir / "annotations").mkdir()
    item = {
        "timestamp_sec": 2.5,
        "timestamp_frame": 75,
        "narration_text": "#C C picks up the knife",
        "annotation_uid": "u1",
    }
    (vdir / "annotations" / "narration.json").write_text(
        json.dumps({"aaa": {"narration_pass_1": {"narrations": [item], "summaries": []}, "status": "complete"}})
    )
    table = ego4d.read_narrations(tmp_path)
    assert table.to_dict("records") == [
        {
            "uid": "aaa",
            "pass": "narration_pass_1",
            "timestamp_sec": 2.5,
            "timestamp_frame": 75,
            "text": "#C C picks up the knife",
            "annotation_uid": "u1",
        }
    ]


def test_write_video_fixture_is_readable(tmp_path):
    probe = ego4d.probe_video(write_video(tmp_path / "v.mp4", 10))
    assert (probe.width, probe.height, probe.num_frames) == (32, 32, 10)
