"""The EGTEA Gaze+ reader (gazevlm.egtea): one test per format quirk, bad files, the synthetic EGTEA world
read back, and extract / annotate on data.format egtea."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from contextlib import chdir
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from egtea_fixtures import NEW_COLUMNS, clip, new_row, old_row, write_annotations, write_begaze, write_video
from gazevlm import egtea, extract, layout, sample, sample_egtea
from gazevlm import params as gparams
from gazevlm.annotate import actions as action_captions
from gazevlm.annotate.narrations import clean_narration, narrations_between
from gazevlm.ego4d import VideoRecord

SESSION = "P02-R04-ContinentalBreakfast"


def _frames(samples, stats, frames=48, width=320, height=240):
    return egtea.gaze_per_frame(samples, stats, fps=24.0, width=width, height=height, num_frames=frames)


# --- BeGaze text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("header_lines", [26, 31, 34])
@pytest.mark.parametrize("newer", [False, True])
def test_header_length_and_version_do_not_change_the_samples(tmp_path, header_lines, newer):
    row = new_row if newer else old_row
    path = write_begaze(
        tmp_path / "g.txt",
        [row(0, 640, 480, "Fixation"), row(1, 100.5, 200.25, "Saccade")],
        newer=newer,
        header_lines=header_lines,
    )
    samples, stats = egtea.read_begaze(path)
    assert stats.header_lines == header_lines
    assert samples.to_dict("list") == {
        "frame": [0, 1],
        "x": [640.0, 100.5],
        "y": [480.0, 200.25],
        "event": ["fixation", "saccade"],
    }


def test_timecodes_count_24_frames_per_second():
    assert egtea.parse_timecode("00:00:00:00") == 0
    assert egtea.parse_timecode("00:01:02:13") == 62 * 24 + 13
    assert egtea.parse_timecode("01:00:00:23") == 3600 * 24 + 23
    assert egtea.parse_timecode("1490") == 1490  # older exports: a plain frame number
    for bad, why in (
        ("00:00:01:24", "not a valid 24 fps timecode"),
        ("00:61:00:00", "not a valid"),
        ("12:3", "neither"),
        ("", "neither"),
    ):
        with pytest.raises(ValueError, match=why):
            egtea.parse_timecode(bad)


def test_a_bad_timecode_names_the_file_and_line(tmp_path):
    rows = [new_row(0, 1, 1, "Fixation"), new_row(1, 1, 1, "Fixation").replace("00:00:00:01", "00:00:00:27")]
    path = write_begaze(tmp_path / "g.txt", rows, header_lines=30)
    with pytest.raises(egtea.GazeFileError, match=re.escape(f"{path}: line 33: timecode '00:00:00:27'")):
        egtea.read_begaze(path)


def test_gaze_is_scaled_from_the_gaze_camera_to_the_video_exactly_once(tmp_path):
    path = write_begaze(
        tmp_path / "g.txt",
        [new_row(0, 640, 480, "Fixation"), new_row(1, 1280, 0, "Fixation"), new_row(2, 0, 960, "Fixation")],
    )
    samples, stats = egtea.read_begaze(path)
    assert samples["x"].tolist() == [640.0, 1280.0, 0.0]  # read in the gaze camera's pixels
    gf = _frames(samples, stats, frames=3, width=640, height=480)
    assert gf["x"].tolist() == [320.0, 640.0, 0.0] and gf["y"].tolist() == [240.0, 0.0, 480.0]
    assert gf["label"].tolist() == ["fixation"] * 3
    # the header's calibration area is the gaze frame when present
    path = write_begaze(tmp_path / "h.txt", [new_row(0, 320, 240, "Fixation")], calibration=(640, 480))
    samples, stats = egtea.read_begaze(path)
    assert stats.gaze_frame == (640, 480)
    assert _frames(samples, stats, frames=1, width=640, height=480)[["x", "y"]].values.tolist() == [[320.0, 240.0]]


def test_default_gaze_frame_and_a_bad_calibration_area(tmp_path):
    samples, stats = egtea.read_begaze(
        write_begaze(tmp_path / "g.txt", [new_row(0, 1, 1, "Fixation")], calibration=None)
    )
    assert stats.gaze_frame == egtea.GAZE_FRAME == (1280, 960)
    path = write_begaze(tmp_path / "b.txt", [new_row(0, 1, 1, "Fixation")], calibration=None)
    path.write_bytes(path.read_bytes().replace(b"## [BeGaze]", b"## Calibration Area:\t1280"))
    with pytest.raises(egtea.GazeFileError, match=re.escape(f"{path}: header line 'Calibration Area: 1280'")):
        egtea.read_begaze(path)


def test_gaze_types_decide_labels_and_blinks_are_never_read_as_points(tmp_path):
    rows = [
        new_row(0, 640, 480, "Fixation"),
        new_row(1, 600, 400, "Fixation"),
        new_row(1, 0, 0, "Blink"),  # the blink's 0,0 is not a point
        new_row(2, 900, 100, "Saccade"),
        new_row(2, 880, 120, "Fixation"),  # any saccade: saccade
        new_row(3, 0, 0, "Blink"),
        new_row(4, 500, 500, "-"),  # unknown type: untracked
        new_row(5, 1400, 500, "Fixation"),  # right of the gaze frame
        new_row(7, 10, 10, "Fixation"),
    ]
    samples, stats = egtea.read_begaze(write_begaze(tmp_path / "g.txt", rows))
    assert stats.events == {"fixation": 5, "saccade": 1, "blink": 2, "unknown": 1}
    gf = _frames(samples, stats, frames=8)
    assert gf["label"].tolist() == [
        "fixation",
        "fixation",
        "saccade",
        "untracked",
        "untracked",
        "out_of_frame",
        "untracked",
        "fixation",
    ]
    assert gf.loc[1, "x"] == 150.0 and gf.loc[1, "y"] == 100.0  # the fixation alone, scaled by 1/4
    assert gf.loc[2, "x"] == 222.5 and gf.loc[2, "y"] == 27.5  # mean of the frame's two samples
    assert gf["valid"].tolist() == [True, True, True, False, False, False, False, True]
    assert gf["t"].tolist() == [i / 24 for i in range(8)]
    assert gf["confidence"].isna().tolist() == [False, False, False, True, True, False, True, False]


def test_a_blink_without_a_point_is_read_and_a_fixation_without_one_is_an_error(tmp_path):
    blink = new_row(1, 0, 0, "Blink").replace("\t0.00\t0.00\t", "\t-\t-\t")
    samples, stats = egtea.read_begaze(write_begaze(tmp_path / "g.txt", [new_row(0, 5, 5, "Fixation"), blink]))
    assert stats.events["blink"] == 1 and _frames(samples, stats, frames=2)["label"].tolist() == [
        "fixation",
        "untracked",
    ]
    bad = write_begaze(tmp_path / "b.txt", [blink.replace("Blink", "Fixation")], header_lines=30)
    with pytest.raises(egtea.GazeFileError, match=re.escape(f"{bad}: line 32: could not convert")):
        egtea.read_begaze(bad)


def test_message_rows_are_skipped_and_counted(tmp_path):
    rows = [new_row(0, 1, 1, "Fixation"), "1500\tMSG\t1\t# Message: start", new_row(1, 2, 2, "Fixation")]
    samples, stats = egtea.read_begaze(write_begaze(tmp_path / "g.txt", rows))
    assert len(samples) == 2 and stats.messages == 1 and stats.rows == 3


def test_a_row_cut_short_at_the_end_is_dropped_and_counted(tmp_path):
    rows = [new_row(0, 1, 1, "Fixation"), new_row(1, 2, 2, "Fixation"), new_row(2, 3, 3, "Fixation")]
    cut = write_begaze(tmp_path / "cut.txt", rows[:2] + [rows[2][:-4]], end="")  # "Fixa"
    samples, stats = egtea.read_begaze(cut)
    assert len(samples) == 2 and stats.dropped_truncated == 1
    short = write_begaze(tmp_path / "short.txt", rows[:2] + [rows[2].rsplit("\t", 3)[0]], end="")
    assert egtea.read_begaze(short)[1].dropped_truncated == 1
    whole = write_begaze(tmp_path / "whole.txt", rows, end="")  # no final newline, intact
    assert egtea.read_begaze(whole)[1].dropped_truncated == 0
    rec = VideoRecord(SESSION, 24.0, 64, 48, 3, 0.125, tmp_path / "v.mp4", cut)
    assert any("last row cut short" in n for n in egtea.read_gaze_frames(rec)[2])


def test_a_short_row_inside_the_file_is_an_error(tmp_path):
    rows = [new_row(0, 1, 1, "Fixation"), "1001\tSMP\t1\t2.0", new_row(2, 3, 3, "Fixation")]
    path = write_begaze(tmp_path / "g.txt", rows, header_lines=30)
    with pytest.raises(
        egtea.GazeFileError, match=re.escape(f"{path}: line 33 has 4 fields, the column line {len(NEW_COLUMNS)}")
    ):
        egtea.read_begaze(path)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "no column names"),
        (b"## [BeGaze]\r\n## Sample Rate:\t30\r\n", "no column names"),
        (b"\x00\x01binary", "not a text file"),
        (b"## x\r\nTime\tType\tFrame\tB Event Info\r\n1\tSMP\t0\tFixation\r\n", "point of regard"),
        (b"## x\r\nTime\tB POR X [px]\tB POR Y [px]\tFrame\r\n1\t0\t0\t0\r\n", "an event column"),
        (b"## x\r\nTime\tB POR X [px]\tB POR Y [px]\tB Event Info\r\n1\t0\t0\tFixation\r\n", "Frame"),
        (
            b"## x\r\nB POR X [px]\tB POR Y [px]\tFrame\tB Event Info\r\nabc\t0\t0\tFixation\r\n",
            "line 3: could not convert",
        ),
        (
            b"## x\r\nB POR X [px]\tB POR Y [px]\tFrame\tB Event Info\r\n0\t0\t0\tBlink\r\n9e9\t0\t1\tFixation\r\n",
            "no usable gaze sample",
        ),
    ],
)
def test_bad_begaze_files_name_the_file(tmp_path, content, message):
    path = tmp_path / f"{SESSION}.txt"
    path.write_bytes(content)
    if message == "no usable gaze sample":  # a blink is a sample; only garbage points make it empty
        path.write_bytes(content.replace(b"0\t0\t0\tBlink\r\n", b""))
    with pytest.raises(egtea.GazeFileError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        egtea.read_begaze(path)


def test_garbage_points_and_samples_after_the_video_are_dropped_and_counted(tmp_path):
    rows = [
        new_row(0, 640, 480, "Fixation"),
        new_row(1, -5000, 480, "Fixation"),
        new_row(2, 640, 480, "Fixation"),
        new_row(9, 640, 480, "Fixation"),
    ]
    samples, stats = egtea.read_begaze(write_begaze(tmp_path / "g.txt", rows))
    assert stats.dropped_out_of_range == 1 and len(samples) == 3
    gf = _frames(samples, stats, frames=4)
    assert stats.dropped_after_video == 1 and len(gf) == 4
    assert gf["label"].tolist() == ["fixation", "untracked", "fixation", "untracked"]


def test_a_wrong_sample_count_in_the_header_is_a_note(tmp_path):
    rows = [new_row(i, 10, 10, "Fixation") for i in range(3)]
    for stated, noted in ((3, False), (40, True), (None, False)):
        path = write_begaze(tmp_path / f"g{stated}.txt", rows, samples=stated)
        rec = VideoRecord(SESSION, 24.0, 64, 48, 3, 0.125, tmp_path / "v.mp4", path)
        notes = egtea.read_gaze_frames(rec)[2]
        assert any("header says 40 samples, the file has 3" in n for n in notes) == noted


def test_latin1_header_is_read(tmp_path):
    path = write_begaze(tmp_path / "g.txt", [new_row(0, 1, 1, "Fixation")])
    path.write_bytes(path.read_bytes().replace(b"## [BeGaze]", "## Subject:\tJürgen °".encode("latin-1")))
    assert len(egtea.read_begaze(path)[0]) == 1


# --- clip names, index and split files ---------------------------------------------------------------------


def test_clip_names_carry_session_times_and_frames():
    c = egtea.parse_clip_name("P02-R04-ContinentalBreakfast-544830-552337-F013057-F013275")
    assert (c.session, c.start_ms, c.end_ms, c.start_frame, c.end_frame) == (
        "P02-R04-ContinentalBreakfast",
        544830,
        552337,
        13057,
        13275,
    )
    assert egtea.parse_clip_name("OP01-R01-PastaSalad-1002316-1004005-F024051-F024101").session == "OP01-R01-PastaSalad"
    for bad, why in (
        ("P02-R04-Pasta-1-2-013057-F013275", "is not <session>"),
        ("P02-F1-F2", "is not"),
        ("P02-R04-Pasta-10-20-F000300-F000200", "ends before it starts"),
    ):
        with pytest.raises(ValueError, match=why):
            egtea.parse_clip_name(bad)


def test_split_files_give_labelled_segments_and_count_bad_lines(tmp_path):
    s1, s2 = "P01-R01-PastaSalad", "P03-R02-Pizza"
    train = [
        f"{clip(s1, 24, 48)} 1 1 1",
        f"{clip(s1, 96, 120)} 12 3 4",
        f"{clip(s1, 130, 140)} 1 9 1",
        "P01-not-a-clip 1 1 1",
        f"{clip(s1, 150, 160)}",
    ]
    test = [
        f"{clip(s2, 0, 30)} 7 2 3",
        f"{clip(s2, 40, 50)} 16",  # two columns: from action_idx.txt
        "",
        f"{clip(s2, 60, 70)} 99",
    ]
    write_annotations(tmp_path, train, test)
    actions, skipped = egtea.read_actions(tmp_path, 1)
    assert skipped == {
        "unknown verb or noun index": 1,
        "malformed clip name or index": 1,
        "no action index": 1,
        "unknown action index": 1,
    }
    assert actions[["session", "split", "start_frame", "end_frame", "verb", "noun"]].values.tolist() == [
        [s1, "train", 24, 48, "Take", "bowl"],
        [s1, "train", 96, 120, "Turn_on", "onion"],
        [s2, "test", 0, 30, "Put", "condiment,bread"],
        [s2, "test", 40, 50, "Divide/Pull", "Apart onion"],
    ]
    assert actions["start_s"].tolist()[:2] == [1.0, 4.0] and actions["end_s"].tolist()[:2] == [2.0, 5.0]
    assert actions["text"].tolist()[:3] == [
        "#C C takes the bowl",
        "#C C turns on the onion",
        "#C C puts the condiment and the bread",
    ]


def test_missing_or_malformed_annotation_files_name_the_file(tmp_path):
    write_annotations(tmp_path, [], [])
    with pytest.raises(
        egtea.AnnotationError,
        match=re.escape(f"{egtea.split_path(tmp_path, 'train', 2)}: split file not found (data.egtea_split = 2"),
    ):
        egtea.read_actions(tmp_path, 2)
    verbs = tmp_path / egtea.ANNOTATION_DIR / "verb_idx.txt"
    verbs.write_text("Take 1\nPut one\n")
    with pytest.raises(egtea.AnnotationError, match=re.escape(f"{verbs}: line 2 'Put one' is not '<name> <index>'")):
        egtea.read_actions(tmp_path, 1)
    verbs.write_text("Take 1\nPut 1\n")
    with pytest.raises(egtea.AnnotationError, match="index 1 appears twice"):
        egtea.read_actions(tmp_path, 1)
    verbs.unlink()
    with pytest.raises(egtea.AnnotationError, match=re.escape(f"{verbs}: index file not found")):
        egtea.read_actions(tmp_path, 1)


def test_a_session_goes_where_most_of_its_clips_are():
    rows = [("A", "train"), ("A", "train"), ("A", "test"), ("B", "test"), ("C", "train"), ("C", "test")]
    split, notes = egtea.session_split(pd.DataFrame(rows, columns=["session", "split"]))
    assert split == {"train": ["A"], "test": ["B", "C"]}
    assert [n.split(":")[0] for n in notes] == ["A", "C"] and "goes to train" in notes[0]


def test_labels_read_as_narrations():
    assert egtea.action_sentence("Take", "bowl") == "#C C takes the bowl"
    assert egtea.action_sentence("Wash", "cutting_board") == "#C C washes the cutting board"
    assert egtea.action_sentence("Move_Around", "pan") == "#C C moves around the pan"
    assert egtea.action_sentence("Put", "a,b,c") == "#C C puts the a, the b and the c"
    assert [egtea.third_person(v) for v in ("mix", "carry", "squeeze", "go", "stay")] == [
        "mixes",
        "carries",
        "squeezes",
        "goes",
        "stays",
    ]


def test_keyframes_take_the_segment_in_progress_or_the_nearest_one():
    actions = pd.DataFrame(
        {
            "session": ["S"] * 3,
            "clip": ["a", "b", "c"],
            "start_s": [1.0, 1.5, 6.0],
            "end_s": [3.0, 2.0, 7.0],
            "text": ["#C C takes the bowl", "#C C opens the fridge", "#C C cuts the onion"],
        }
    )
    kf = pd.DataFrame(
        {
            "keyframe_id": [f"k{t}" for t in range(9)] + ["other"],
            "uid": ["S"] * 9 + ["T"],
            "t": [float(t) for t in range(9)] + [1.0],
        }
    )
    out = action_captions.caption_keyframes(kf, actions, tolerance_s=1.0)
    assert out["caption"].tolist() == [
        "the camera wearer takes the bowl",
        "the camera wearer takes the bowl",
        "the camera wearer opens the fridge",
        "the camera wearer takes the bowl",
        "the camera wearer takes the bowl",
        "the camera wearer cuts the onion",
        "the camera wearer cuts the onion",
        "the camera wearer cuts the onion",
        "the camera wearer cuts the onion",
        out["caption"].iloc[9],
    ]
    assert pd.isna(out["caption"].iloc[9])  # another session's keyframe: no caption
    assert out["narration_t"].tolist()[:3] == [1.0, 1.0, 1.5]
    assert action_captions.caption_keyframes(kf[:1], actions, tolerance_s=0.5)["caption"].isna().all()


def test_segments_become_narrations_at_their_start_in_one_pass():
    actions = pd.DataFrame(
        {
            "session": ["S", "S", "T"],
            "clip": ["late", "early", "t"],
            "start_s": [6.0, 1.0, 2.0],
            "end_s": [7.0, 3.0, 2.5],
            "text": ["#C C cuts the onion", "#C C takes the bowl", "#C C opens the fridge"],
        }
    )
    index = action_captions.narration_index(actions)
    assert [(n.t, n.text, n.annotation_uid) for n in index.by_uid["S"]] == [
        (1.0, "#C C takes the bowl", "early"),
        (6.0, "#C C cuts the onion", "late"),
    ]
    assert {n.narration_pass for ns in index.by_uid.values() for n in ns} == {"narration_pass_1"}
    assert [n.text for n in narrations_between(index.by_uid["S"], 1.0, 6.0)] == ["#C C cuts the onion"]


# --- discovery ---------------------------------------------------------------------------------------------


def test_discover_pairs_sessions_and_skips_the_rest(tmp_path):
    rows = [new_row(0, 1, 1, "Fixation")]
    for name in ("A", "B", "C"):
        write_begaze(tmp_path / egtea.GAZE_DIR / f"{name}.txt", rows)
    write_video(tmp_path / "videos" / "A.mp4", 10)
    write_video(tmp_path / "raw_videos" / "A.mp4", 10)
    write_video(tmp_path / "raw_videos" / "B.mp4", 10, fps=30)
    write_video(tmp_path / "session_videos" / "D.mp4", 10)
    (tmp_path / egtea.GAZE_DIR / "readme.pdf").write_text("x")
    (tmp_path / egtea.ANNOTATION_DIR).mkdir()
    inv = egtea.discover(tmp_path)
    assert [(v.uid, v.fps, v.width, v.height, v.num_frames) for v in inv.videos] == [("A", 24.0, 64, 48, 10)]
    assert inv.videos[0].video_path == tmp_path / "videos" / "A.mp4"
    reasons = {s.uid: s.reason for s in inv.skipped}
    assert "30 fps, but EGTEA's timecodes and clip names count 24" in reasons["B"]
    assert reasons["C"].startswith("BeGaze file without a session video") and "without a BeGaze file" in reasons["D"]
    assert any("duplicate" in n for n in inv.notes) and any("readme.pdf: ignored" in n for n in inv.notes)


def test_a_root_without_gaze_or_annotations_is_an_error(tmp_path):
    with pytest.raises(egtea.LayoutError, match=re.escape(f"{tmp_path / 'gaze_data'}: folder not found")):
        egtea.discover(tmp_path)
    (tmp_path / "gaze_data").mkdir()
    with pytest.raises(egtea.LayoutError, match="action_annotation: folder not found"):
        egtea.discover(tmp_path)


# --- the synthetic EGTEA world read back ------------------------------------------------------------------

TINY = gparams.EgteaSampleParams(videos=3, seconds=6, width=128, height=96, test_fraction=0.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("egtea") / "world"
    sample_egtea.write_world(dataclasses.replace(TINY, root=str(root)))
    return root


def test_the_synthetic_world_has_the_egtea_layout_and_both_begaze_versions(world):
    report = json.loads((world / sample_egtea.MARKER).read_text())
    sessions = list(report["sessions"])
    assert sessions == [sample_egtea.session_name(i) for i in range(3)]
    heads = [(world / egtea.GAZE_DIR / f"{s}.txt").read_bytes().decode("latin-1").split("\r\n") for s in sessions]
    header_lengths = {sum(line.startswith("##") for line in h) for h in heads}
    assert len(header_lengths) == 2  # the two BeGaze versions differ in header length
    assert {h[len(h) - len([x for x in h if not x.startswith("##")])].split("\t")[-1] for h in heads} == {
        "L Event Info",
        "B Event Info",
    }
    inv = egtea.discover(world)
    assert [v.uid for v in inv.videos] == sessions and not inv.skipped
    assert {(v.fps, v.width, v.height, v.num_frames) for v in inv.videos} == {(24.0, 128, 96, 144)}


def test_the_synthetic_gaze_reads_back_where_the_simulation_put_it(world):
    sp = sample_egtea.sample_params(dataclasses.replace(TINY, root=str(world)))
    for index in range(2):  # one of each BeGaze version
        plan = sample.plan_video(sp, index)
        truth = sample_egtea.begaze_samples(plan, sample_egtea._rng(sp.seed, index, sample_egtea.EVENTS))
        rec = next(v for v in egtea.discover(world).videos if v.uid == sample_egtea.session_name(index))
        gf, stats, _ = egtea.read_gaze_frames(rec)
        assert stats["samples"] == len(truth) and stats["dropped_truncated"] == 0
        tracked = truth[truth["event"].isin(("Fixation", "Saccade"))]
        expected = tracked.groupby("frame")[["x", "y"]].mean() / 10.0  # 1280 x 960 -> 128 x 96
        got = gf.set_index("frame").loc[expected.index]
        assert np.allclose(got[["x", "y"]].to_numpy(), expected.to_numpy(), atol=0.01)
        labels = gf["label"].value_counts()
        assert labels["fixation"] > labels["saccade"] > 0 and labels["untracked"] > 0


def test_the_synthetic_labels_and_split_read_back(world):
    es = dataclasses.replace(TINY, root=str(world))
    actions, skipped = egtea.read_actions(world, 1)
    assert not skipped
    sp = sample_egtea.sample_params(es)
    for index in range(3):
        plan = sample.plan_video(sp, index)
        mine = actions[actions["session"] == sample_egtea.session_name(index)]
        assert len(mine) == len(plan.actions)
        assert set(mine["verb"]) <= set(sample_egtea.VERBS)
        contacts = np.array([a.contact_s for a in plan.actions])
        assert np.allclose(np.sort(mine["start_s"].to_numpy()), np.sort(contacts) - 0.5, atol=1 / 24)
    split, notes = egtea.session_split(actions)
    test = {sample_egtea.session_name(i) for i in sample_egtea.test_sessions(es)}
    assert set(split["test"]) == test and len(test) == 2 and not notes


def test_the_synthetic_world_is_deterministic_and_guards_other_folders(world, tmp_path):
    again = tmp_path / "again"
    sample_egtea.write_world(dataclasses.replace(TINY, root=str(again)))

    def digest(root: Path) -> dict:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".mp4"
        }

    assert digest(again) == digest(world) and len(digest(world)) == 3 + 5 + 1
    assert sample_egtea.is_current(dataclasses.replace(TINY, root=str(again)))
    assert not sample_egtea.is_current(dataclasses.replace(TINY, root=str(again), seed=3))
    (again / egtea.GAZE_DIR / f"{sample_egtea.session_name(0)}.txt").unlink()
    assert not sample_egtea.is_current(dataclasses.replace(TINY, root=str(again)))
    other = tmp_path / "download"
    (other / "gaze_data").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a synthetic EGTEA world"):
        sample_egtea.write_world(dataclasses.replace(TINY, root=str(other)))


# --- extract and annotate on data.format egtea --------------------------------------------------------------


def test_extract_and_annotate_read_egtea_into_the_same_tables(world, tmp_path):
    p = gparams.with_overrides(gparams.Params(), data={"format": "egtea", "root": str(world)})
    with chdir(tmp_path):
        report = extract.run(p)
        from gazevlm import annotate

        ann = annotate.run(p)
    out = tmp_path / layout.EXTRACT_DIR
    videos = pd.read_parquet(out / "videos.parquet")
    assert list(videos.columns) == layout.VIDEOS.names
    assert list(pd.read_parquet(out / "gaze_frames.parquet").columns) == layout.GAZE_FRAMES.names
    split, _ = egtea.session_split(egtea.read_actions(world, 1)[0])
    assert sorted(videos[videos["split"] == "test"]["uid"]) == sorted(split["test"])
    assert report["format"] == "egtea" and report["splits"]["val"]["videos"] == 0
    assert set(report["gaze_labels"]) == {"fixation", "saccade", "out_of_frame", "untracked"}
    assert any(
        "split 3 usable video(s) into train 1 / val 0 / test 2" in n and "test_split1.txt" in n for n in report["notes"]
    )
    assert all("header_lines" in v["gaze"] for v in report["per_video"].values())
    captions = pd.read_parquet(tmp_path / layout.ANNOTATE_DIR / "captions.parquet")
    texts = captions["caption"].dropna()
    assert len(texts) > 0.8 * len(captions)
    assert texts.str.match(
        r"^the camera wearer (takes|puts|opens|closes) the (red|green|blue|yellow|purple|white) "
        r"(cup|bowl|plate|knife|bottle|spoon)$"
    ).all()
    assert ann["narrations"]["file"].endswith("action_annotation") and ann["windows"]["kept"] > 0


def test_future_targets_from_the_labels_begun_inside_the_horizon(world, tmp_path):
    """annotate.future_targets = narrations on EGTEA (no narration file): the labels of the segments that
    start inside each future window's horizon, in order; activity targets stay the keyframes' captions."""
    p = gparams.with_overrides(gparams.Params(), data={"format": "egtea", "root": str(world)})
    with chdir(tmp_path):
        extract.run(p)
        from gazevlm import annotate

        annotate.run(p)
        captions = pd.read_parquet(annotate.paths(".")["targets"]).set_index("window_id")
        report = annotate.run(gparams.with_overrides(p, annotate={"future_targets": "narrations"}))
        targets = pd.read_parquet(annotate.paths(".")["targets"]).set_index("window_id")
    assert report["future_targets"] == "narrations"
    windows = pd.read_parquet(tmp_path / layout.EXTRACT_DIR / "windows.parquet")
    t_of = pd.read_parquet(tmp_path / layout.EXTRACT_DIR / "keyframes.parquet").set_index("keyframe_id")["t"]
    actions, _ = egtea.read_actions(world, 1)
    checked = 0
    for w in windows[windows["task"] == "future"].itertuples():
        t_last = t_of[w.obs_keyframe_ids[-1]]
        begun = actions[(actions["session"] == w.uid) & (actions["start_s"] > t_last) & (actions["start_s"] <= w.t_end)]
        texts = [clean_narration(t) for t in begun.sort_values("start_s")["text"]]
        texts = [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]
        got = targets.at[w.window_id, "target_text"]
        assert (got if isinstance(got, str) else None) == (", then ".join(texts) if texts else None)
        checked += bool(texts)
    assert checked > 0
    activity = targets["task"] == "activity"
    pd.testing.assert_frame_equal(targets[activity], captions[activity])


def test_extract_skips_sessions_in_no_split_file(world, tmp_path):
    root = tmp_path / "root"
    for sub in ("videos", "gaze_data", "action_annotation"):
        (root / sub).mkdir(parents=True)
        for f in (world / sub).iterdir():
            (root / sub / f.name).symlink_to(f)
    test_file = egtea.split_path(root, "test", 1)
    lines = test_file.read_text().splitlines()
    dropped = lines[0].split("-F")[0].rsplit("-", 2)[0]
    test_file.unlink()
    test_file.write_text("".join(f"{line}\n" for line in lines if not line.startswith(dropped)))
    p = gparams.with_overrides(gparams.Params(), data={"format": "egtea", "root": str(root)})
    with chdir(tmp_path):
        report = extract.run(p)
    skipped = {s["uid"]: s for s in report["skipped_videos"]}
    assert skipped[dropped]["reason"].startswith(f"not listed in {egtea.split_path(root, 'train', 1)}")


def test_the_data_format_and_egtea_params_are_checked(tmp_path):
    for section, values, message in (
        ("data", {"format": "epic"}, "data.format = 'epic': expected one of"),
        ("data", {"egtea_split": 4}, "data.egtea_split = 4: must be in [1, 3]"),
        ("sample_egtea", {"test_fraction": 1.0}, "must be in (0, 1)"),
        ("sample_egtea", {"width": 32}, "sample_egtea.width = 32: must be >= 64"),
    ):
        with pytest.raises(gparams.ParamsError, match=re.escape(message)):
            gparams.with_overrides(gparams.Params(), **{section: values})
    committed = gparams.load(Path(__file__).resolve().parents[1] / "params.yaml")
    assert committed.data.format == "ego4d" and committed.sample_egtea == gparams.Params().sample_egtea
    assert committed.zeroshot.root == committed.sample_egtea.root
