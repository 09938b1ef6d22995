"""The human hallucination study without a browser: the seeded sample and its blinded order, the append-only
ratings file (atomic appends, half-written and malformed rows), the stage's rates, intervals and paired test
on hand-made ratings with known answers, "not rated yet", and the rating form's blinding and bookkeeping."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import os
import threading

import ipywidgets as W
import numpy as np
import pytest
from PIL import Image

import hallucination_fixtures as RF
from gazevlm import layout, params, shards
from gazevlm.evaluate import stats
from gazevlm.hallucination import ratings, stage, study
from gazevlm.hallucination.app import RatingApp

# --- the sample ----------------------------------------------------------------------------------------------


def _predictions(tmp_path, n_windows=12, **hallucination):
    p = RF.fixture_params(**hallucination)
    RF.write_predictions(tmp_path, RF.window_ids(4, n_windows // 4))
    return p, study.load_predictions(p, tmp_path)


def test_the_blinded_order_is_reproducible_from_its_seed(tmp_path):
    p, preds = _predictions(tmp_path, n_windows=40, windows=10)
    a, b = study.draw_sample(p, preds), study.draw_sample(p, preds)
    assert a == b and len(a.window_ids) == 10 and len(a.items) == 20
    assert {(it.run, it.window_id) for it in a.items} == {(r, w) for r in RF.RUNS for w in a.window_ids}
    order = [(it.run, it.window_id) for it in a.items]
    assert order != sorted(order, key=lambda x: (a.window_ids.index(x[1]), RF.RUNS.index(x[0])))  # shuffled
    other = study.draw_sample(params.with_overrides(p, hallucination={"sample_seed": 1}), preds)
    assert [(it.run, it.window_id) for it in other.items] != order
    # the windows do not depend on which runs are rated
    only_base = study.draw_sample(params.with_overrides(p, hallucination={"runs": ["base"]}), {"base": preds["base"]})
    assert only_base.window_ids == a.window_ids and len(only_base.items) == 10


def test_items_carry_the_prediction_they_show_and_its_hash(tmp_path):
    p, preds = _predictions(tmp_path)
    for it in study.draw_sample(p, preds).items:
        row = preds[it.run].set_index("window_id").loc[it.window_id]
        assert it.prediction == row["prediction"] and it.uid == layout.window_uid(it.window_id, "future")
        assert it.prediction_hash == ratings.prediction_hash(it.prediction)


def test_every_window_is_drawn_when_the_split_has_fewer(tmp_path):
    p, preds = _predictions(tmp_path, n_windows=8, windows=200)
    assert len(study.draw_sample(p, preds).window_ids) == 8


def test_runs_scored_on_different_windows_are_refused(tmp_path):
    p = RF.fixture_params()
    ids = RF.window_ids(2, 3)
    RF.write_predictions(tmp_path, ids, runs=("base",))
    RF.write_predictions(tmp_path, ids[:-1], runs=("gaze",))
    with pytest.raises(ValueError, match="different test windows"):
        study.draw_sample(p, study.load_predictions(p, tmp_path))


def test_missing_predictions_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/predictions/base/future/seed0.parquet"):
        study.load_predictions(RF.fixture_params(), tmp_path)


@pytest.mark.parametrize(
    "override,key",
    [
        ({"task": "past"}, "hallucination.task"),
        ({"windows": 0}, "hallucination.windows"),
        ({"runs": []}, "hallucination.runs"),
        ({"runs": ["base", "base"]}, "hallucination.runs"),
        ({"seed": -1}, "hallucination.seed"),
    ],
)
def test_bad_study_params_name_the_key(override, key):
    with pytest.raises(params.ParamsError, match=key):
        params.from_dict({"hallucination": override})


def test_a_task_run_or_seed_the_pipeline_does_not_evaluate_is_not_applicable():
    assert study.not_applicable(RF.fixture_params()) is None
    assert "activity" in study.not_applicable(RF.fixture_params(task="activity"))
    assert "lambda0" in study.not_applicable(RF.fixture_params(runs=["base", "lambda0"]))
    assert "seed 3" in study.not_applicable(RF.fixture_params(seed=3))


# --- the ratings file ----------------------------------------------------------------------------------------


def test_append_creates_the_file_and_keeps_one_row_per_line(tmp_path):
    path = tmp_path / "ratings" / "h.csv"
    note = 'odd, "quoted"\nsecond line'
    ratings.append_rating(path, RF.rating("base", "future_v_0000000", True, "a cup", note=note))
    ratings.append_rating(path, RF.rating("gaze", "future_v_0000000", False, "a bowl"))
    lines = path.read_text().splitlines()
    assert lines[0] == ratings.HEADER and len(lines) == 3
    table = ratings.read_ratings(path)
    assert table.skipped == [] and list(table.rows["line"]) == [2, 3]
    assert list(table.rows["hallucinated"]) == [True, False] and list(table.rows["run"]) == ["base", "gaze"]
    assert table.rows["note"][0] == 'odd, "quoted" second line'


def test_an_append_never_drops_or_changes_what_is_there(tmp_path):
    path = tmp_path / "h.csv"
    for i in range(3):
        ratings.append_rating(path, RF.rating("base", f"future_v_{i:07d}", i % 2 == 0, f"text {i}"))
        before = path.read_bytes()
        ratings.append_rating(path, RF.rating("base", f"future_v_{i:07d}", True, f"text {i}"))  # a re-rating
        assert path.read_bytes().startswith(before)
    assert len(ratings.read_ratings(path).rows) == 6  # every rating kept, duplicates too


def test_a_half_written_row_stays_one_skipped_line(tmp_path):
    path = tmp_path / "h.csv"
    ratings.append_rating(path, RF.rating("base", "future_v_0000000", True, "x"))
    whole = RF.rating("gaze", "future_v_0000000", True, "y").line()
    with open(path, "ab") as f:
        f.write(whole[: len(whole) - 7])  # a writer killed mid-row: no line end, hash cut short
    assert ratings.read_ratings(path).skipped[0][0] == 3
    ratings.append_rating(path, RF.rating("gaze", "future_v_0000001", False, "z"))
    table = ratings.read_ratings(path)
    assert list(table.rows["line"]) == [2, 4] and list(table.rows["window_id"])[-1] == "future_v_0000001"
    assert len(table.skipped) == 1 and table.skipped_messages()[0].startswith(f"{path}:3: ")
    assert "16 hex digits" in table.skipped[0][1]


def test_a_half_written_multibyte_note_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "h.csv"
    whole = RF.rating("gaze", "future_v_0000000", True, "y", note="café").line()
    path.write_bytes(ratings.HEADER.encode() + b"\n" + whole[: whole.index("é".encode()) + 1] + b"\n")
    table = ratings.read_ratings(path)
    assert table.rows.empty and "UTF-8" in table.skipped[0][1]


def test_malformed_rows_are_skipped_and_named_by_line(tmp_path):
    path = tmp_path / "h.csv"
    ratings.append_rating(path, RF.rating("base", "future_v_0000000", True, "x"))
    good = RF.rating("base", "future_v_0000001", False, "y").line().decode()
    with open(path, "a") as f:
        f.write(good.replace(",no,", ",maybe,"))
        f.write("2025-01-01T00:00:00+00:00,me,future,0,base\n")
        f.write(good.replace(",future,", ",past,"))
        f.write(good.replace(",0,base,", ",zero,base,"))
        f.write("\n")  # a blank line is no rating and no error
        f.write(good)
    table = ratings.read_ratings(path)
    assert list(table.rows["line"]) == [2, 8]
    reasons = dict(table.skipped)
    assert sorted(reasons) == [3, 4, 5, 6]
    assert "maybe" in reasons[3] and "5 fields" in reasons[4] and "past" in reasons[5] and "seed" in reasons[6]


def test_a_file_that_is_not_a_ratings_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("window,answer\nw1,yes\n")
    with pytest.raises(ratings.RatingsError, match=f"{path}:1: expected the header"):
        ratings.read_ratings(path)
    with pytest.raises(ratings.RatingsError, match=f"{path}:1: not a ratings file"):
        ratings.append_rating(path, RF.rating("base", "future_v_0000000", True, "x"))
    assert path.read_text() == "window,answer\nw1,yes\n"


def test_an_invalid_rating_is_refused_before_it_is_written(tmp_path):
    path = tmp_path / "h.csv"
    bad = dataclasses.replace(RF.rating("base", "future_v_0000000", True, "x"), hallucinated="maybe")
    with pytest.raises(ValueError, match="hallucinated 'maybe'"):
        ratings.append_rating(path, bad)
    assert not path.exists()


def test_concurrent_appends_lose_no_row(tmp_path):
    path = tmp_path / "h.csv"
    start = threading.Barrier(8)

    def rate(worker: int) -> None:
        start.wait()  # every writer's first append races to create the file
        for i in range(25):
            ratings.append_rating(path, RF.rating("base", f"future_w{worker}_{i:07d}", True, f"{worker} {i}"))

    threads = [threading.Thread(target=rate, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = ratings.read_ratings(path)
    assert table.skipped == [] and len(table.rows) == 200 and table.rows["window_id"].nunique() == 200
    assert path.read_text().count(ratings.HEADER) == 1


def test_an_append_waits_for_another_writers_lock(tmp_path):
    # the check for the header and for a missing line end, then the write, happen under one exclusive lock
    path = tmp_path / "h.csv"
    ratings.append_rating(path, RF.rating("base", "future_v_0000000", True, "x"))
    before = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another kernel in the middle of its append
    writer = threading.Thread(
        target=ratings.append_rating, args=(path, RF.rating("gaze", "future_v_0000000", True, "y"))
    )
    writer.start()
    writer.join(0.3)
    try:
        assert writer.is_alive() and path.read_bytes() == before
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    writer.join(10)
    assert not writer.is_alive() and len(ratings.read_ratings(path).rows) == 2


# --- the stage -----------------------------------------------------------------------------------------------


def _hand_made(tmp_path, base_answers, gaze_answers, extra=()):
    """Predictions of 4 videos x 2 windows and a ratings file: one rating per (run, window) from the answers
    (row-major over videos), then `extra` ratings appended after them."""
    p = RF.fixture_params(windows=8)
    ids = RF.window_ids(4, 2)
    RF.write_predictions(tmp_path, ids)
    path = tmp_path / p.hallucination.ratings_file
    for run, answers in (("base", base_answers), ("gaze", gaze_answers)):
        for i, (wid, answer) in enumerate(zip(ids, answers, strict=True)):
            ratings.append_rating(path, RF.rating(run, wid, answer, RF.prediction_text(run, i)))
    for r in extra:
        ratings.append_rating(path, r)
    return p, ids, path


def test_rates_interval_and_paired_test_have_the_known_answer(tmp_path):
    # base hallucinates in every window, gaze in the first window of each video: per video 1.0 vs 0.5
    ids = RF.window_ids(4, 2)
    extra = [
        RF.rating("base", ids[1], True, RF.prediction_text("base", 1)),  # the latest rating of an item wins
        RF.rating("base", ids[2], False, "a text the model no longer writes"),  # stale
        RF.rating("base", ids[2], False, RF.prediction_text("base", 2), seed=5),  # another seed
    ]
    p, _, path = _hand_made(tmp_path, [True, False] + [True] * 6, [True, False] * 4, extra)
    with open(path, "ab") as f:
        f.write(b"garbage,row\n")
    before = path.read_bytes()
    result = stage.run(p, root=tmp_path)
    assert path.read_bytes() == before  # the stage only reads its input
    assert result["status"] == "complete" and result["sample"] == {
        "windows": 8,
        "items": 16,
        "rated_items": 16,
        "sample_seed": 0,
    }
    assert result["ratings"] == {"rows": 19, "used": 16, "superseded": 1, "stale": 1, "other": 1, "malformed": 1}
    assert result["rate"]["base"] == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 8, "n_videos": 4}
    assert result["rate"]["gaze"] == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 8, "n_videos": 4}
    cmp = result["comparisons"]["gaze_vs_base"]
    # 4 videos, every per-video difference -0.5: 2 of the 16 sign flips reach |mean| 0.5 (exact test)
    assert (cmp["diff"], cmp["ci_low"], cmp["ci_high"], cmp["n"], cmp["n_videos"]) == (-0.5, -0.5, -0.5, 8, 4)
    assert cmp["p_value"] == pytest.approx(2 / 16)
    metrics = json.loads((tmp_path / stage.METRICS_FILE).read_text())
    assert metrics["rate"]["gaze"]["mean"] == 0.5 and metrics["status"] == "complete"
    md = (tmp_path / stage.REPORT_MD).read_text()
    assert "0.500 [0.500, 0.500]" in md and "-0.500" in md and "p = 0.125" in md and "0.205" in md
    assert f"{path}:" in md and "garbage" not in md  # the malformed line is named, not echoed
    csv = (tmp_path / stage.REPORT_CSV).read_text().splitlines()
    assert csv[0] == "row,rate,ci_low,ci_high,p_value,n,n_videos,paper" and csv[1].startswith("base,1.0,")


def test_the_interval_resamples_videos(tmp_path):
    # per video base rates 1, 0.5, 0, 1 (2 windows each): pooled 5/8
    answers = [True, True, True, False, False, False, True, True]
    p, ids, _ = _hand_made(tmp_path, answers, [False] * 8)
    rate = stage.run(p, root=tmp_path)["rate"]["base"]
    assert rate["mean"] == 0.625 and (rate["n"], rate["n_videos"]) == (8, 4)
    expected = stats.mean_ci(
        np.array(answers, float), [layout.window_uid(w, "future") for w in ids], n_resamples=200, seed=0
    )
    assert (rate["ci_low"], rate["ci_high"]) == (expected.ci_low, expected.ci_high)
    assert 0.0 <= rate["ci_low"] < 0.625 < rate["ci_high"] <= 1.0


def test_partial_ratings_pair_only_windows_rated_for_both_runs(tmp_path):
    p = RF.fixture_params(windows=8)
    ids = RF.window_ids(4, 2)
    RF.write_predictions(tmp_path, ids)
    path = tmp_path / p.hallucination.ratings_file
    for i in range(3):
        ratings.append_rating(path, RF.rating("base", ids[i], True, RF.prediction_text("base", i)))
    ratings.append_rating(path, RF.rating("gaze", ids[0], False, RF.prediction_text("gaze", 0)))
    result = stage.run(p, root=tmp_path)
    assert result["status"] == "partial" and result["sample"]["rated_items"] == 4
    assert result["rate"]["base"]["n"] == 3 and result["rate"]["gaze"]["n"] == 1
    assert result["comparisons"]["gaze_vs_base"]["n"] == 1
    assert "partial" in (tmp_path / stage.REPORT_MD).read_text()


@pytest.mark.parametrize("content", [None, b"", (ratings.HEADER + "\n").encode()], ids=["no file", "empty", "header"])
def test_no_ratings_say_not_rated_yet_and_give_no_number(tmp_path, content):
    p = RF.fixture_params(windows=8)
    RF.write_predictions(tmp_path, RF.window_ids(4, 2))
    if content is not None:
        path = tmp_path / p.hallucination.ratings_file
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    result = stage.run(p, root=tmp_path)
    metrics = json.loads((tmp_path / stage.METRICS_FILE).read_text())
    assert result["status"] == metrics["status"] == "not rated yet"
    assert "rate" not in metrics and "comparisons" not in metrics and metrics["sample"]["rated_items"] == 0
    md = (tmp_path / stage.REPORT_MD).read_text()
    assert md.count("not rated yet") >= 3 and "0.205" in md and "0.140" in md and "-0.065" in md
    numbers = (tmp_path / stage.REPORT_CSV).read_text().splitlines()
    assert numbers[1].startswith("base,,,,")  # no rate, no interval


def test_only_stale_ratings_are_not_rated_yet(tmp_path):
    p = RF.fixture_params(windows=8)
    ids = RF.window_ids(4, 2)
    RF.write_predictions(tmp_path, ids)
    ratings.append_rating(tmp_path / p.hallucination.ratings_file, RF.rating("base", ids[0], True, "old text"))
    result = stage.run(p, root=tmp_path)
    assert result["status"] == "not rated yet" and result["ratings"]["stale"] == 1


def test_a_task_the_pipeline_did_not_evaluate_is_reported_not_applicable(tmp_path):
    p = RF.fixture_params(task="activity")
    result = stage.run(p, root=tmp_path)
    assert result["status"] == "not applicable" and "activity" in result["reason"]
    assert "not applicable" in (tmp_path / stage.REPORT_MD).read_text()


def test_same_inputs_give_the_same_bytes(tmp_path):
    p, _, _ = _hand_made(tmp_path, [True, False] * 4, [False, True, False, False] * 2)
    outputs = (stage.METRICS_FILE, stage.REPORT_MD, stage.REPORT_CSV)
    stage.run(p, root=tmp_path)
    first = [(tmp_path / f).read_bytes() for f in outputs]
    stage.run(p, root=tmp_path)
    assert [(tmp_path / f).read_bytes() for f in outputs] == first


# --- the rating form -----------------------------------------------------------------------------------------


def displayed_strings(root: W.Widget) -> list[str]:
    """Every string a widget tree sends to the browser: the public state of each widget reachable from root
    (children, layouts, styles). Keys starting with "_" are ipywidgets' own (module names such as
    "@jupyter-widgets/base"), not content; image bytes are frames."""
    seen, todo, out = set(), [root], []
    while todo:
        w = todo.pop()
        if w.model_id in seen:
            continue
        seen.add(w.model_id)
        for key in w.keys:
            value = getattr(w, key)
            values = value if isinstance(value, (list, tuple)) else [value]
            todo += [v for v in values if isinstance(v, W.Widget)]
            if not key.startswith("_"):
                out += [v for v in values if isinstance(v, str)]
    return out


@pytest.fixture
def app_root(tmp_path):
    RF.build_root(tmp_path, n_windows=6, windows=4)
    return tmp_path


def test_the_form_never_shows_a_run_name(app_root):
    app = RatingApp(app_root, min_seconds=0)
    assert len(app.sample.items) == 8
    frames_of = {
        s["window_id"]: s["frames"] for s in shards.iter_samples(("future", "test"), root=app_root / "data/shards")
    }
    shown_predictions = set()
    for i in range(len(app.sample.items)):
        app.show(i)
        text = " ".join(displayed_strings(app.widget)).lower()
        assert not any(run in text for run in RF.RUNS), text
        assert app.sample.items[i].prediction in " ".join(displayed_strings(app.widget))
        shown_predictions.add(app.sample.items[i].prediction)
        shown = [np.asarray(Image.open(io.BytesIO(bytes(c.children[0].value)))) for c in app.panels.children]
        assert np.array_equal(np.stack(shown), frames_of[app.sample.items[i].window_id])  # the window's, in order
    assert len(shown_predictions) == 8  # every item was reachable, each with its own text


def test_rating_appends_in_the_blinded_order_and_resumes_where_it_stopped(app_root):
    app = RatingApp(app_root, rater="AB", min_seconds=0)
    order = [(it.run, it.window_id) for it in app.sample.items]
    app.note.value = "mentions a cup, that is not there"
    app.yes_button.click()
    app.no_button.click()
    path = app_root / "ratings" / "hallucination.csv"
    rows = ratings.read_ratings(path).rows
    assert list(zip(rows["run"], rows["window_id"], strict=True)) == order[:2]
    assert list(rows["hallucinated"]) == [True, False] and list(rows["rater"]) == ["AB", "AB"]
    assert rows["note"][0] == "mentions a cup, that is not there" and rows["note"][1] == ""
    assert set(rows["sample_seed"]) == {0} and set(rows["seed"]) == {0}
    again = RatingApp(app_root, min_seconds=0)
    assert again.position == 2 and len(again.answers) == 2
    again.back_button.click()
    again.back_button.click()  # back to the first item, re-rated: a new row, the latest counts
    assert "You rated this item: yes" in again.previous.value
    again.no_button.click()
    assert again.position == 2
    table = ratings.read_ratings(path)
    assert len(table.rows) == 3
    result = stage.run(params.load(app_root / "params.yaml"), root=app_root)
    assert result["ratings"]["superseded"] == 1 and result["sample"]["rated_items"] == 2
    first_run = order[0][0]
    assert result["rate"][first_run]["mean"] == 0.0


def test_the_form_says_when_everything_is_rated(app_root):
    app = RatingApp(app_root, min_seconds=0)
    for _ in range(8):
        app.yes_button.click()
    assert "every item is rated" in app.progress.value and len(ratings.read_ratings(app.ratings_file).rows) == 8


def test_a_double_click_does_not_rate_the_next_item_unseen(app_root):
    app = RatingApp(app_root, min_seconds=60)
    app.yes_button.click()
    assert "Ignored a click" in app.status.value and app.position == 0 and not app.ratings_file.exists()
    app.shown_at -= 60  # the reviewer looked at the item for a minute
    app.yes_button.click()
    assert app.position == 1 and len(ratings.read_ratings(app.ratings_file).rows) == 1


def test_a_rating_that_cannot_be_saved_is_said_and_not_counted(app_root):
    app = RatingApp(app_root, min_seconds=0)
    app.ratings_file.parent.mkdir()
    app.ratings_file.write_text("something,else\n")  # replaced behind the form's back
    app.yes_button.click()
    assert "Not saved" in app.status.value and str(app.ratings_file) in app.status.value
    assert app.answers == {} and app.position == 0 and app.ratings_file.read_text() == "something,else\n"


def test_a_file_that_is_not_a_ratings_file_stops_the_form(app_root):
    path = app_root / "ratings" / "hallucination.csv"
    path.parent.mkdir()
    path.write_text("something,else\n")
    with pytest.raises(ratings.RatingsError, match="expected the header"):
        RatingApp(app_root, min_seconds=0)


def test_the_form_refuses_a_study_the_pipeline_cannot_have(app_root):
    RF.write_params(app_root, RF.fixture_params(task="activity"))
    with pytest.raises(ValueError, match="params.yaml: hallucination.task 'activity' is not evaluated"):
        RatingApp(app_root, min_seconds=0)


def test_predictions_of_windows_missing_from_the_shards_are_an_error(app_root):
    RF.write_params(app_root, RF.fixture_params(windows=100))  # every window is drawn
    ids = list(study.load_predictions(params.load(app_root / "params.yaml"), app_root)["base"]["window_id"])
    RF.write_predictions(app_root, ids[:-1] + ["future_vid9_0000000"])
    with pytest.raises(ValueError, match="the test shards hold no window 'future_vid9_0000000'"):
        RatingApp(app_root, min_seconds=0)
