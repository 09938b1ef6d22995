"""Table 20's coarse future targets: annotate.future_targets = narrations puts the raw narrations of each
future window's horizon in place of its target keyframes' captions; activity targets stay captions."""

import dataclasses

import pandas as pd
import pytest

from annotate_fixtures import make_params, make_world, write_narrations
from gazevlm import annotate, layout
from gazevlm.annotate.narrations import Narration, narrated_pass, narrations_between

P1, P2 = "narration_pass_1", "narration_pass_2"


def _n(t, text, narration_pass=P1):
    return Narration(t, text, narration_pass, f"{narration_pass}-{t}")


def test_horizon_narrations_come_from_one_pass_inside_the_horizon():
    both = [_n(2.0, "at t_last"), _n(2.1, "a"), _n(2.15, "a again", P2), _n(4.0, "at the end"), _n(4.5, "after")]
    assert [n.text for n in narrations_between(both, 2.0, 4.0)] == ["a", "at the end"]  # pass 1 only
    only_second = [_n(3.0, "b", P2), _n(3.5, "c", P2)]
    assert narrated_pass(only_second) == P2 and [n.text for n in narrations_between(only_second, 2, 4)] == ["b", "c"]
    assert narrated_pass([]) is None and narrations_between([], 0, 10) == []


def _with_targets(future_targets: str):
    p = make_params("narrations")
    return dataclasses.replace(p, annotate=dataclasses.replace(p.annotate, future_targets=future_targets))


def _narrate(uid, k):
    """One narration 0.2 s after each keyframe; vidA's keyframe 4 is vague, vidB is silent after 4.2 s."""
    if uid == "vidB" and k >= 5:
        return []
    text = "#C C looks around" if (uid, k) == ("vidA", 4) else f"#C C picks up the cup number {k}"
    return [{"timestamp_sec": k + 0.2, "timestamp_frame": 0, "narration_text": text, "annotation_uid": f"{uid}{k}"}]


def test_stage_writes_the_horizons_narrations_as_future_targets(tmp_path):
    make_world(tmp_path, narrate=_narrate)
    fine = annotate.run(_with_targets("captions"), root=tmp_path)
    captions = pd.read_parquet(annotate.paths(tmp_path)["targets"]).set_index("window_id")
    coarse = annotate.run(_with_targets("narrations"), root=tmp_path)
    narrations = pd.read_parquet(annotate.paths(tmp_path)["targets"]).set_index("window_id")
    assert list(narrations.index) == list(captions.index)  # same windows, same order
    assert "future_targets" not in fine and coarse["future_targets"] == "narrations"

    # future window of vidA observing keyframes 0-2 (t_last 2 s); the fixture's horizon ends at t_end = 5 s
    w = layout.window_id("future", "vidA", 0)
    assert (
        narrations.at[w, "target_text"]
        == ", then ".join(f"the camera wearer picks up the cup number {k}" for k in (2, 3))
        + ", then the camera wearer looks around"
    )
    assert narrations.at[w, "n_frames"] == 3 and narrations.at[w, "n_flagged"] == 1  # "looks around": ungrounded
    assert captions.at[w, "target_text"] != narrations.at[w, "target_text"]
    # vidB is silent after 4.2 s: a horizon without narration is dropped (and counted), not filled
    silent = layout.window_id("future", "vidB", 90)  # observes 3-5 s, horizon (5, 8]
    assert narrations.at[silent, "drop_reason"] == "no_narration" and pd.isna(narrations.at[silent, "target_text"])
    assert coarse["windows"]["dropped"]["no_narration"] == int((narrations["drop_reason"] == "no_narration").sum())
    assert "no_narration" not in fine["windows"]["dropped"]
    activity = narrations["task"] == "activity"
    pd.testing.assert_frame_equal(narrations[activity], captions[activity])  # activity targets unchanged


def test_a_video_narrated_only_in_the_second_pass_gets_those_narrations(tmp_path):
    world = make_world(tmp_path)
    entries = [
        {
            "timestamp_sec": k + 0.5,
            "timestamp_frame": 0,
            "narration_text": f"#C C opens the box {k}",
            "annotation_uid": f"b{k}",
        }
        for k in range(8)
    ]
    narration = {
        uid: {
            P1: {"narrations": [] if uid == "vidB" else entries, "summaries": []},
            P2: {"narrations": entries, "summaries": []},
            "status": "complete",
        }
        for uid in world.keyframes["uid"].unique()
    }
    write_narrations(tmp_path, narration)
    annotate.run(_with_targets("narrations"), root=tmp_path)
    targets = pd.read_parquet(annotate.paths(tmp_path)["targets"]).set_index("window_id")
    expected = ", then ".join(f"the camera wearer opens the box {k}" for k in (2, 3, 4))  # (2, 5]: 2.5, 3.5, 4.5
    for uid in ("vidA", "vidB"):  # vidA: pass 1 only (no event twice); vidB: pass 2
        assert targets.at[layout.window_id("future", uid, 0), "target_text"] == expected


def test_coarse_targets_refuse_activity_windows():
    from gazevlm.annotate.narrations import NarrationIndex
    from gazevlm.annotate.stage import build_narration_targets

    windows = pd.DataFrame(
        [{"window_id": "w", "task": "activity", "uid": "a", "split": "train", "obs_keyframe_ids": ["k"], "t_end": 1.0}]
    )
    with pytest.raises(ValueError, match="future windows, not 'activity'"):
        build_narration_targets(
            windows,
            pd.DataFrame({"keyframe_id": ["k"], "t": [0.0]}),
            NarrationIndex({}),
            joiner=", ",
            dedupe_consecutive=True,
            qc_max_flagged=0.2,
        )
