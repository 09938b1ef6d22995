"""Annotate stage, narrations source: cleaning, time matching, QC rules, window targets, bad inputs."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from annotate_fixtures import make_params, make_world, write_narrations
from gazevlm import annotate, layout
from gazevlm.annotate import qc, stage
from gazevlm.annotate.narrations import Narration, clean_narration, load_narrations, nearest
from gazevlm.ego4d import NarrationError


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("#C C picks up the knife from the table", "the camera wearer picks up the knife from the table"),
        ("#C C picks up the red cup.", "the camera wearer picks up the red cup"),
        ("#c c stirs food in pan ..", "the camera wearer stirs food in pan"),
        ("#O man X hands the tool to C", "a man hands the tool to the camera wearer"),
        ("#O The woman Y talks to C #unsure", "a woman talks to the camera wearer"),
        ("#O X opens the door", "another person opens the door"),
        ("#O person A walks to the sink", "another person walks to the sink"),
        ("#O man X picks the bag. man X walks", "a man picks the bag. the man walks"),
        ("#C C gives man Y the cup", "the camera wearer gives the man the cup"),
        ("#C C gives the woman a cup", "the camera wearer gives the woman a cup"),
        ("#Unsure C looks around", "the camera wearer looks around"),
        ("#C C's hand holds the cup", "the camera wearer's hand holds the cup"),
        ("  #C   C   drops the spoon ,  then  leaves  ", "the camera wearer drops the spoon, then leaves"),
    ],
)
def test_clean_narration(raw, clean):
    assert clean_narration(raw) == clean


def _narration_file(root, content):
    path = root / "v2" / "annotations" / "narration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _n(t, text, uid="a"):
    return {
        "timestamp_sec": t,
        "timestamp_frame": int(t * 30) if t == t else 0,
        "narration_text": text,
        "annotation_uid": uid,
    }


def test_nearest_uses_both_passes_within_tolerance(tmp_path):
    _narration_file(
        tmp_path,
        {
            "v": {
                "narration_pass_1": {"narrations": [_n(1.9, "#C C opens the jar"), _n(9.0, "#C C closes the jar")]},
                "narration_pass_2": {"narrations": [_n(2.05, "#C C holds the jar lid")]},
                "status": "complete",
            }
        },
    )
    index = load_narrations(tmp_path, "v2")
    assert nearest(index.by_uid["v"], 2.0, 1.0).text == "#C C holds the jar lid"  # pass 2 is nearer
    assert nearest(index.by_uid["v"], 1.5, 1.0).text == "#C C opens the jar"
    assert nearest(index.by_uid["v"], 5.0, 1.0) is None  # nothing within 1 s
    assert nearest(index.by_uid["v"], 8.0, 1.0).text == "#C C closes the jar"  # exactly at the tolerance
    tie = [Narration(1.0, "first", "narration_pass_2", "x"), Narration(3.0, "second", "narration_pass_1", "y")]
    assert nearest(tie, 2.0, 1.0).text == "first"  # ties go to the earlier


def test_narration_file_bad_inputs(tmp_path):
    with pytest.raises(NarrationError, match="narration.json: narration file not found"):
        load_narrations(tmp_path, "v2")
    _narration_file(tmp_path, "{not json")
    with pytest.raises(NarrationError, match="narration.json: not valid JSON"):
        load_narrations(tmp_path, "v2")
    _narration_file(tmp_path, {"v": {"narration_pass_1": {"narrations": [{"narration_text": "#C C runs"}]}}})
    with pytest.raises(NarrationError, match="malformed narration in v.narration_pass_1"):
        load_narrations(tmp_path, "v2")
    _narration_file(
        tmp_path,
        {
            "v": {
                "narration_pass_1": {
                    "narrations": [_n(float("nan"), "#C C runs"), _n(2.0, "#unsure"), _n(4.0, "#C C cuts the bread")]
                },
                "status": "complete",
            },
            "redacted": {"status": "redacted"},
        },
    )
    index = load_narrations(tmp_path, "v2")
    assert [n.t for n in index.by_uid["v"]] == [4.0]
    assert index.skipped == {"bad_timestamp": 1, "empty_text": 1}
    assert index.by_uid.get("redacted", []) == []


@pytest.mark.parametrize(
    "caption,flags",
    [
        ("the camera wearer picks up the red cup from the table", []),
        ("the camera wearer stirs food in pan", []),
        ("", ["empty"]),
        (None, ["empty"]),
        (" . ", ["empty"]),
        ("picks cup", ["generic"]),
        ("a person is doing something with a box", ["generic"]),
        ("same as the previous frame, holding the cup", ["generic"]),
        ("the image is blurred but a cup is there", ["unclear"]),
        ("the camera wearer looks around", ["ungrounded"]),
        ("another person walks away slowly", ["ungrounded"]),
        ("the scene is too blurry to tell", ["unclear"]),
        ("blurry", ["generic", "unclear", "ungrounded"]),
    ],
)
def test_qc_flags(caption, flags):
    assert qc.flag_caption(caption) == flags


def _captions(rows):
    return pd.DataFrame(
        [
            {
                "keyframe_id": k,
                "uid": "v",
                "frame": int(t * 30),
                "t": t,
                "caption": c,
                "flagged": bool(qc.flag_caption(c)) if c is not None else False,
            }
            for k, t, c in rows
        ]
    )


def _window(ids, wid="w"):
    return pd.DataFrame([{"window_id": wid, "task": "future", "split": "train", "target_keyframe_ids": ids}])


def test_targets_time_order_joiner_dedupe():
    caps = _captions(
        [
            ("k1", 1.0, "the camera wearer picks up the cup"),
            ("k2", 2.0, "the camera wearer picks up the cup"),
            ("k3", 3.0, "the camera wearer opens the jar"),
        ]
    )
    # ids listed out of time order: the target must follow the keyframes' timestamps
    t = stage.build_targets(
        _window(["k3", "k1", "k2"]), caps, joiner=" | ", dedupe_consecutive=True, qc_max_flagged=0.2
    )
    assert t.loc[0, "target_text"] == "the camera wearer picks up the cup | the camera wearer opens the jar"
    t = stage.build_targets(
        _window(["k3", "k1", "k2"]), caps, joiner=" | ", dedupe_consecutive=False, qc_max_flagged=0.2
    )
    assert t.loc[0, "target_text"].count("picks up the cup") == 2
    assert not t.loc[0, "dropped"] and t.loc[0, "n_frames"] == 3 and t.loc[0, "n_flagged"] == 0


def test_targets_drop_reasons():
    good = "the camera wearer picks up the cup"
    rows = [(f"g{i}", float(i), good + f" number {i}") for i in range(4)] + [
        ("bad", 9.0, "the camera wearer looks around"),
        ("none", 10.0, None),
    ]
    caps = _captions(rows)
    kw = dict(joiner=", then ", dedupe_consecutive=True, qc_max_flagged=0.2)
    # 1 flagged of 5 = 20%: kept (the rule is "more than"); 1 of 4 = 25%: dropped
    assert not stage.build_targets(_window(["g0", "g1", "g2", "g3", "bad"]), caps, **kw).loc[0, "dropped"]
    t = stage.build_targets(_window(["g0", "g1", "g2", "bad"]), caps, **kw)
    assert t.loc[0, "drop_reason"] == "qc_flagged" and t.loc[0, "n_flagged"] == 1
    t = stage.build_targets(_window(["none"]), caps, **kw)
    assert t.loc[0, "drop_reason"] == "no_caption" and pd.isna(t.loc[0, "target_text"])
    # partly uncaptioned: joined from the captioned ones, kept
    t = stage.build_targets(_window(["g0", "none"]), caps, **kw)
    assert not t.loc[0, "dropped"] and t.loc[0, "target_text"] == good + " number 0"
    t = stage.build_targets(_window(["g0", "g1"]), caps, failed_keyframes={"g1"}, **kw)
    assert t.loc[0, "drop_reason"] == "failed_chunk" and pd.isna(t.loc[0, "target_text"])
    t = stage.build_targets(_window([]), caps, **kw)
    assert t.loc[0, "drop_reason"] == "no_target_frames"


def _narrate_with_gaps(uid, k):
    """vidB has no narration after 4.3 s (keyframes 6, 7 uncaptioned); vidA keyframe 2 is narrated vaguely."""
    if uid == "vidB" and k >= 5:
        return []
    text = "#C C looks around" if (uid, k) == ("vidA", 2) else f"#C C picks up the cup number {k}"
    text += " #unsure" if (uid, k) == ("vidB", 3) else ""
    return [{"timestamp_sec": k + 0.3, "timestamp_frame": 0, "narration_text": text, "annotation_uid": f"{uid}{k}"}]


def test_stage_from_narrations(tmp_path):
    world = make_world(tmp_path, narrate=_narrate_with_gaps)
    report = annotate.run(make_params("narrations"), root=tmp_path)
    out = annotate.paths(tmp_path)
    captions = pd.read_parquet(out["captions"])
    targets = pd.read_parquet(out["targets"])
    assert list(captions.columns) == ["keyframe_id", "uid", "frame", "t", "caption", "source", "flags", "flagged"]
    assert list(targets.columns) == [
        "window_id",
        "task",
        "split",
        "target_text",
        "n_frames",
        "n_flagged",
        "dropped",
        "drop_reason",
    ]
    assert str(pq.read_schema(out["captions"]).field("flags").type) == "list<element: string>"
    cap = captions.set_index("keyframe_id")
    assert cap.at[layout.keyframe_id("vidA", 30), "caption"] == "the camera wearer picks up the cup number 1"
    assert cap.at[layout.keyframe_id("vidA", 60), "flags"].tolist() == ["ungrounded"]
    assert pd.isna(cap.at[layout.keyframe_id("vidB", 180), "caption"])
    assert set(captions["source"]) == {"narrations"}
    assert report["keyframes"] == {"total": 16, "used_by_windows": 16, "captioned": 14, "without_caption": 2}
    assert report["flags"]["ungrounded"] == 1 and report["flagged_keyframes"] == 2
    # the #unsure tag is cleaned out of the text but flagged (issue 15, item 9)
    unsure = cap.loc[layout.keyframe_id("vidB", 90)]
    assert unsure["caption"] == "the camera wearer picks up the cup number 3" and unsure["flags"].tolist() == ["unsure"]
    assert report["flags"]["unsure"] == 1

    tg = targets.set_index("window_id")
    fut = tg.loc[layout.window_id("future", "vidA", 0)]
    assert fut["target_text"] == (
        "the camera wearer picks up the cup number 3, then the camera wearer picks up the cup number 4"
    )
    assert tg.loc[layout.window_id("future", "vidB", 90), "drop_reason"] == "no_caption"  # targets 6, 7 s
    assert tg.loc[layout.window_id("activity", "vidA", 0), "drop_reason"] == "qc_flagged"  # 1 of 3 flagged
    assert report["windows"]["total"] == len(world.windows) == 16
    assert report["windows"]["dropped"]["no_caption"] == int((targets["drop_reason"] == "no_caption").sum()) >= 1
    assert report["windows"]["kept"] == int((~targets["dropped"]).sum())
    assert report["caption_words"]["n"] == 14 and report["caption_words"]["max"] == 9
    assert json.loads(out["report"].read_text()) == report
    assert json.loads(out["prompt_history"].read_text())["source"] == "narrations"


def test_stage_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="keyframes.parquet: not found"):
        annotate.run(make_params(), root=tmp_path)
    world = make_world(tmp_path)
    with pytest.raises(ValueError, match="annotate.source"):
        annotate.run(make_params("gpt"), root=tmp_path)
    windows = world.windows.copy()
    windows.loc[0, "target_keyframe_ids"] = ["nope_0000001"]
    windows.to_parquet(tmp_path / layout.EXTRACT_DIR / "windows.parquet")
    with pytest.raises(ValueError, match="windows.parquet: target_keyframe_ids names 1 keyframe"):
        annotate.run(make_params(), root=tmp_path)
    world.windows.drop(columns=["target_keyframe_ids"]).to_parquet(tmp_path / layout.EXTRACT_DIR / "windows.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['target_keyframe_ids'\]"):
        annotate.run(make_params(), root=tmp_path)
    world.windows.to_parquet(tmp_path / layout.EXTRACT_DIR / "windows.parquet")
    pd.concat([world.keyframes, world.keyframes.head(1)]).to_parquet(
        tmp_path / layout.EXTRACT_DIR / "keyframes.parquet"
    )
    with pytest.raises(ValueError, match="duplicated keyframe_id"):
        annotate.run(make_params(), root=tmp_path)
    world.keyframes.to_parquet(tmp_path / layout.EXTRACT_DIR / "keyframes.parquet")
    (tmp_path / "data/sample/v2/annotations/narration.json").unlink()
    with pytest.raises(NarrationError, match="narration.json: narration file not found"):
        annotate.run(make_params(), root=tmp_path)
    write_narrations(tmp_path, {})  # no narrations at all: every window dropped, counted, not faked
    report = annotate.run(make_params(), root=tmp_path)
    assert report["keyframes"]["captioned"] == 0 and report["windows"]["kept"] == 0
    assert report["narrations"]["videos_without_narrations"] == ["vidA", "vidB"]


def test_unsure_narrations_are_flagged():
    assert qc.flag_caption("the camera wearer cuts the bread", "#C C cuts the bread #unsure") == ["unsure"]
    assert qc.flag_caption("the camera wearer cuts the bread", "#C C cuts the bread") == []
    assert qc.flag_caption("the camera wearer cuts the bread") == []
    assert "unsure" in qc.FLAG_KINDS
