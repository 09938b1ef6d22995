"""The explorer's callbacks, driven in-process over fixture stage outputs."""

from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest

import attention_fixtures as F
from gazevlm import layout
from gazevlm.attention import outputs
from gazevlm.widgets import Explorer, find_attention_dir


@pytest.fixture(scope="module")
def stage_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    F.build_stage_outputs(root)
    # the gaze run of the future task lost its first window (as when the loader drops one)
    path = root / "data/attention/gaze_future.npz"
    r = outputs.read_run_attention(path)
    keep = slice(1, None)
    r.window_ids, r.prediction, r.reference, r.semantic = (
        r.window_ids[keep],
        r.prediction[keep],
        r.reference[keep],
        r.semantic[keep],
    )
    r.maps = {s: m[keep] for s, m in r.maps.items()}
    r.metrics = {s: {k: v[keep] for k, v in m.items()} for s, m in r.metrics.items()}
    outputs.write_run_attention(path, r)
    return root


@pytest.fixture
def app(stage_root):
    return Explorer(stage_root / layout.ATTENTION_DIR, width=128)


def pngs(app):
    values = app.image_values()
    assert values and all(v[:4] == b"\x89PNG" for v in values)
    return values


def test_initial_state(app):
    assert app.task.value == "future"
    assert app.runs.value == ("base", "gaze")
    assert app.window.value == app.window.options[0] and len(app.window.options) == 6
    assert app.frame.max == 4 and app.frame.value == 4
    assert len(pngs(app)) == 2


def test_window_selector_changes_the_images_and_text(app):
    app.window.value = app.window.options[2]
    before, text = pngs(app), app.info.value
    app.window.value = app.window.options[3]
    after = pngs(app)
    assert before[0] != after[0] and before[1] != after[1]
    assert app.window.options[3] in app.info.value and app.info.value != text
    app.next_button.click()
    assert app.window.value == app.window.options[4]
    app.prev_button.click()
    app.prev_button.click()
    assert app.window.value == app.window.options[2]


def test_layer_toggle(app):
    app.window.value = app.window.options[2]
    shown = {}
    for layer in ("gaze", "attention", "both"):
        app.layer.value = layer
        shown[layer] = pngs(app)
    assert len({v[1] for v in shown.values()}) == 3
    assert shown["gaze"][0] == shown["gaze"][1]  # gaze alone does not depend on the run
    assert shown["attention"][0] != shown["attention"][1]  # attention does


def test_source_toggle_and_topk_outline(app):
    app.window.value = app.window.options[2]
    app.layer.value = "attention"
    primary = pngs(app)
    assert "block" in app._titles[1].value and "perceiver" in app._titles[0].value
    app.source.value = "perceiver"
    perceiver = pngs(app)
    assert perceiver[0] == primary[0] and perceiver[1] != primary[1]
    app.source.value = "block"
    assert "no such attention" in app._titles[0].value
    app.source.value = "primary"
    app.show_topk.value = True
    assert pngs(app)[1] != primary[1]


def test_frame_slider_and_missing_gaze(app):
    app.window.value = app.window.options[0]
    app.frame.value = 1
    one = pngs(app)
    app.frame.value = 0
    assert pngs(app) != one
    assert "missing" in app.info.value  # the fixture's window 0 frame 0 has no gaze
    assert "not in this run" in app._titles[1].value  # and the gaze run lost that window
    assert "window not scored" in app.info.value


def test_info_shows_texts_and_metrics(app):
    app.window.value = app.window.options[3]
    html = app.info.value
    assert "base says cup 3" in html and "gaze says cup 3" in html  # joined by window id, not row
    assert "pick up cup 3" in html and "training seed 0" in html  # which seed's models are shown
    for metric in ("topk_overlap", "kl", "cc", "nss", "sim", "auc_judd"):
        assert metric in html
    assert "0.900" in html  # gaze run's block top-10 overlap


def test_task_and_run_selection(app):
    app.task.value = "activity"
    assert app.frame.max == 2 and app.frame.value == 2
    assert all(w.startswith("activity_") for w in app.window.options)
    assert len(pngs(app)) == 2
    app.runs.value = ("gaze",)
    assert len(pngs(app)) == 1 and "gaze" in app._titles[0].value


def test_finds_outputs_from_a_notebook_folder(stage_root, tmp_path):
    (stage_root / "notebooks").mkdir(exist_ok=True)
    with contextlib.chdir(stage_root / "notebooks"):
        assert find_attention_dir().resolve() == (stage_root / layout.ATTENTION_DIR).resolve()
    with contextlib.chdir(tmp_path), pytest.raises(FileNotFoundError, match="attention"):
        find_attention_dir()
    with pytest.raises(FileNotFoundError, match="index.json"):
        Explorer(tmp_path)


def test_opens_fast(stage_root):
    import time

    start = time.perf_counter()
    app = Explorer(stage_root / layout.ATTENTION_DIR)
    for w in app.window.options:
        app.window.value = w
    assert time.perf_counter() - start < 5.0
    assert np.all([len(v) > 1000 for v in app.image_values()])


def test_index_without_tasks_is_refused(stage_root, tmp_path):
    shutil.copytree(stage_root / layout.ATTENTION_DIR, tmp_path / "att")
    outputs.write_index(tmp_path / "att", {}, 10, 0.01)
    with pytest.raises(ValueError, match="no tasks"):
        Explorer(tmp_path / "att")
