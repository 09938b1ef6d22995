"""The reviewer's form (callbacks driven without a browser) and notebook 02 run headless by papermill."""

import json
from pathlib import Path

import papermill
import pytest
import yaml

from annotate_fixtures import (  # noqa: F401 (fixtures)
    API_KEY_ENV,
    BASE_URL_ENV,
    FAKE_KEY,
    ChatServer,
    make_params,
    make_world,
    output_files,
    params_yaml,
    server,
    world,
    write_feedback,
)
from gazevlm import annotate
from gazevlm.annotate.llm_captions import sha256_text

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_annotate.ipynb"
N_CHUNKS = 6


def test_is_interactive(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not annotate.is_interactive() and annotate.is_interactive(True)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/02_annotate.ipynb")
    assert annotate.is_interactive() and not annotate.is_interactive(False)


def test_review_form_refine_then_accept_writes_feedback_the_stage_replays(world, server):
    P = make_params("llm")
    write_feedback(world.root, [])
    form = annotate.start_review(P, root=world.root)
    assert [s.kind for s in server.seen] == ["captions", "captions"]
    assert "Round 1" in form.header.value and "Describe each frame." in form.header.value
    assert "the camera wearer picks up the red cup" in form.captions.value
    assert "data:image/jpeg;base64," in form.captions.value
    with pytest.raises(RuntimeError, match="prompt review not finished"):
        annotate.require_review_finished(form)

    form.refine_button.click()  # no feedback yet: nothing is sent
    assert "Write feedback first" in form.status.value and len(server.seen) == 2
    form.feedback.value = "Mention colours and where things go."
    form.refine_button.click()
    assert [s.kind for s in server.seen[2:]] == ["rewrite", "captions", "captions"]
    assert "Round 2" in form.header.value and "revision" in form.header.value and form.feedback.value == ""
    saved = yaml.safe_load((world.root / "annotate" / "feedback.yaml").read_text())["rounds"]
    assert saved == [
        {
            "feedback": "Mention colours and where things go.",
            "accept": False,
            "prompt_sha256": sha256_text("Describe each frame."),
        }
    ]

    form.feedback.value = "Good now."
    form.accept_button.click()
    assert form.session.done and form.session.accepted and form.accept_button.disabled
    assert "Refinement finished" in form.header.value
    saved = yaml.safe_load((world.root / "annotate" / "feedback.yaml").read_text())["rounds"]
    assert [r["accept"] for r in saved] == [False, True]
    annotate.require_review_finished(form)

    # the stage replays the reviewed rounds from the cache and asks only for the other chunks
    n = len(server.seen)
    report = annotate.run(P, root=world.root)
    assert [s.kind for s in server.seen[n:]] == ["captions"] * (N_CHUNKS - 2)
    assert report["llm"]["accepted"] and report["llm"]["rounds"] == 2
    history = json.loads(annotate.paths(world.root)["prompt_history"].read_text())
    assert history["final_prompt"] == form.session.final_prompt
    assert not any(r.get("feedback_prompt_mismatch") for r in history["rounds"])


@pytest.mark.slow
def test_notebook_runs_headless_without_leaking_the_key(world, server):
    """The LLM source end to end through papermill (the narrations source runs in-process elsewhere)."""
    source = "llm"
    params_yaml(world.root, source)
    out = world.root / "reports" / "notebooks" / "02_annotate.ipynb"
    out.parent.mkdir(parents=True)
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={"params_file": "params.yaml"},
        cwd=str(world.root),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # both figures
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any("target_text" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)  # examples table
    report = json.loads(annotate.paths(world.root)["report"].read_text())
    assert report["source"] == source and report["windows"]["kept"] > 0
    assert len(server.seen) == 9 and report["llm"]["stop_reason"] == "accepted"
    assert not [str(p) for p in output_files(world.root) if FAKE_KEY.encode() in p.read_bytes()]
