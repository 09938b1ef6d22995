"""Annotate stage, LLM source (Algorithm 1), against a real chat-completions server on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

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
from gazevlm import annotate, layout
from gazevlm.annotate.cache import ResponseCache, request_key
from gazevlm.annotate.llm_captions import CaptionCountError, make_chunks, parse_captions
from gazevlm.annotate.llm_client import ChatClient, ChatConfigError, ChatError

ROOT = Path(__file__).resolve().parents[1]
N_CHUNKS = 6  # 2 videos x 8 keyframes in chunks of 3 -> 3 chunks per video


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "1. a red cup\n2. a blue bowl\n3. a green knife",
        "Here are the captions:\n\n1) A red cup.\n\n2) A blue bowl.\n3) A green knife.\n",
        "Frame 1: a red cup\nFrame 2: a blue bowl\nframe 3 - a green knife",
        "**Frame 1:** a red cup\n**Frame 2:** a blue bowl\n**Frame 3:** a green knife",
        "```\n1. a red\ncup\n2. a blue bowl\n3. a green knife\n```",
        "a red cup\n\na blue bowl\na green knife",
        "- a red cup\n- a blue bowl\n- a green knife",
    ],
)
def test_parse_captions_accepts_common_shapes(reply):
    assert parse_captions(reply, 3) == ["a red cup", "a blue bowl", "a green knife"]


@pytest.mark.parametrize(
    "reply,why",
    [
        ("1. a red cup\n2. a blue bowl", "expected frames 1..3"),
        ("1. a\n2. b\n3. c\n4. d", "expected frames 1..3"),
        ("1. a\n1. b\n2. c", "numbered twice"),
        ("2. b\n1. a\n3. c", "in order"),
        ("a red cup\na blue bowl", "got 2 unnumbered lines"),
        ("Sure! Here you go:\na\nb\nc", "got 4 unnumbered lines"),
        ("", "got 0"),
    ],
)
def test_parse_captions_detects_wrong_counts(reply, why):
    with pytest.raises(CaptionCountError, match=why):
        parse_captions(reply, 3)


# --- the client -----------------------------------------------------------------------------------


def _client(**kw):
    c = ChatClient(
        model="test-vlm",
        base_url_env=BASE_URL_ENV,
        api_key_env=API_KEY_ENV,
        **{"retries": 3, "backoff_s": 0.01, "timeout_s": 5.0, **kw},
    )
    c.sleep = lambda s: None
    return c


def test_client_retries_429_500_and_timeouts_with_capped_backoff(server):
    server.script = [
        {"status": 429, "headers": {"Retry-After": "0.05"}},
        500,
        {"status": 503, "headers": {"Retry-After": "3600"}},
        {"reply": "ok"},
    ]
    c = _client()
    assert c.complete([{"role": "user", "content": "hi"}]) == "ok"
    assert c.requests_sent == 4
    # backoff 0.01, 0.02, 0.04; Retry-After 0.05 honoured; 3600 capped at backoff * 2**retries = 0.08
    assert c.sleeps == pytest.approx([0.05, 0.02, 0.08])
    assert all(s.authorization == f"Bearer {FAKE_KEY}" for s in server.seen)

    server.script = [{"sleep": 1.0}, {"reply": "late but fine"}]
    assert _client(timeout_s=0.3).complete([{"role": "user", "content": "hi"}]) == "late but fine"

    server.script = [500, 502, 503, 504]
    with pytest.raises(ChatError, match="after 4 attempts; last: HTTP 504"):
        _client().complete([{"role": "user", "content": "hi"}])
    server.script = [{"status": 400, "body": b'{"error": "image too large"}'}]
    with pytest.raises(ChatError, match="rejected: HTTP 400"):
        _client().complete([{"role": "user", "content": "hi"}])
    server.script = [{"body": b"<html>not json</html>"}]
    with pytest.raises(ChatError, match="malformed chat response"):
        _client().complete([{"role": "user", "content": "hi"}])


def test_client_configuration_errors(server, monkeypatch):
    server.key = "another-key"  # the server refuses ours
    with pytest.raises(ChatConfigError, match="HTTP 401") as err:
        _client().complete([{"role": "user", "content": "hi"}])
    assert FAKE_KEY not in str(err.value) and FAKE_KEY not in repr(_client())
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ChatConfigError, match=f"{API_KEY_ENV} .* is not set"):
        _client().complete([])
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ChatConfigError, match=f"{BASE_URL_ENV} .* is not set"):
        _client().complete([])


def test_cache_is_atomic_and_survives_damage(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    key = request_key("m", "prompt", [b"img1", b"img2"])
    assert key != request_key("m", "prompt", [b"img2", b"img1"]) != request_key("m2", "prompt", [b"img1", b"img2"])
    assert cache.get(key) is None
    cache.put(key, "1. a cup")
    assert cache.get(key) == "1. a cup"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.json"]  # no temporary files left
    cache.path(key).write_text('{"reply": "1. a c')  # a torn file (not written by us) is re-asked
    assert cache.get(key) is None and cache.corrupt == 1


# --- the stage ------------------------------------------------------------------------------------


def _outputs(root):
    p = annotate.paths(root)
    return (
        pd.read_parquet(p["captions"]),
        pd.read_parquet(p["targets"]),
        json.loads(p["prompt_history"].read_text()),
        json.loads(p["report"].read_text()),
    )


def test_llm_stage_refines_then_annotates_and_reruns_for_free(world, server, monkeypatch):
    P = make_params("llm")
    report = annotate.run(P, root=world.root)
    captions, targets, history, _ = _outputs(world.root)

    # Algorithm 1: round 0 (2 validation chunks), rewrite, round 1 (2 chunks), accepted; then the
    # final prompt (= round 1's) captions everything: the 2 validation chunks come from the cache.
    kinds = [s.kind for s in server.seen]
    assert kinds == ["captions"] * 2 + ["rewrite"] + ["captions"] * 2 + ["captions"] * (N_CHUNKS - 2)
    assert len(history["rounds"]) == 2 and history["accepted"] and history["stop_reason"] == "accepted"
    r0, r1 = history["rounds"]
    assert r0["prompt"] == "Describe each frame." and r0["feedback"] == "Name the objects and their colours."
    assert r0["rewritten_prompt"] == r1["prompt"] == history["final_prompt"] and "revision" in r1["prompt"]
    assert r1["accept"] is True and r1["rewritten_prompt"] is None
    assert all(c["captions"] and len(c["captions"]) == len(c["keyframe_ids"]) for c in r0["captions"])
    assert history["validation_chunks"] == [c["chunk_id"] for c in r1["captions"]]
    assert all(history["final_prompt"] in s.text for s in server.seen[5:])

    by_id = captions.set_index("keyframe_id")
    for kid, what in world.truth.items():  # every caption belongs to its own frame: no shifting
        assert by_id.at[kid, "caption"] == f"the camera wearer picks up {what}"
    assert set(captions["source"]) == {"llm"} and not captions["flagged"].any()
    assert not targets["dropped"].any() and len(targets) == len(world.windows)
    assert report["llm"]["failed_chunks"] == 0 and report["llm"]["requests_sent"] == len(server.seen) == 9

    before = len(server.seen)
    rerun = annotate.run(P, root=world.root)
    assert len(server.seen) == before, "a rerun must not send a single request"
    assert rerun["llm"]["requests_sent"] == 0 and rerun["llm"]["cache_misses"] == 0
    c2, t2, h2, _ = _outputs(world.root)
    pd.testing.assert_frame_equal(c2, captions)
    pd.testing.assert_frame_equal(t2, targets)
    assert h2 == history

    # an answered cache needs no endpoint at all
    monkeypatch.delenv(BASE_URL_ENV)
    monkeypatch.delenv(API_KEY_ENV)
    assert annotate.run(P, root=world.root)["windows"] == report["windows"]


def test_failed_chunks_are_skipped_and_counted(world, server):
    chunks = make_chunks(world.keyframes, 3)
    wrong_count = set(chunks[1].keyframe_ids)  # vidA frames 3-5
    always_500 = set(chunks[4].keyframe_ids)  # vidB frames 3-5

    def rule(seen, index):
        ids = {world.image_sha[s] for s in seen.image_sha}
        if ids == wrong_count:
            return {"reply": "1. the camera wearer holds the red cup\n2. the camera wearer holds a bowl"}
        if ids == always_500:
            return {"status": 500}
        return None

    server.rules = [rule]
    write_feedback(world.root, [])  # no refinement rounds given: prompt 0 is used, not accepted
    P = make_params("llm", validation_sequences=1)
    report = annotate.run(P, root=world.root)
    captions, targets, history, _ = _outputs(world.root)
    assert report["llm"]["failed_chunks"] == 2
    assert sorted(report["llm"]["failed_chunk_ids"]) == sorted([chunks[1].chunk_id, chunks[4].chunk_id])
    assert history["stop_reason"] == "feedback_exhausted" and not history["accepted"]
    failed = wrong_count | always_500
    by_id = captions.set_index("keyframe_id")
    assert by_id.loc[sorted(failed), "caption"].isna().all()  # never filled with placeholders
    assert by_id.drop(index=sorted(failed))["caption"].notna().all()
    ids = pd.read_parquet(world.root / layout.EXTRACT_DIR / "windows.parquet").set_index("window_id")
    touching = {w for w, kf in ids["target_keyframe_ids"].items() if failed & set(kf)}
    skipped = set(targets.loc[targets["drop_reason"] == "failed_chunk", "window_id"])
    assert skipped == touching and report["llm"]["windows_skipped_failed_chunk"] == len(touching) > 0
    assert targets.loc[targets["window_id"].isin(touching), "target_text"].isna().all()

    # rerun: the malformed reply is cached (same failure, no request); the 500 chunk is asked again
    server.seen.clear()
    server.rules = []
    report = annotate.run(P, root=world.root)
    assert [sorted({world.image_sha[s] for s in x.image_sha}) for x in server.seen] == [sorted(always_500)]
    assert report["llm"]["failed_chunk_ids"] == [chunks[1].chunk_id]


@pytest.mark.slow
def test_resume_after_kill(world, server):
    """Kill the stage (SIGKILL, in a subprocess) when request 5 arrives; the rerun asks only the rest."""
    params_file = params_yaml(world.root, "llm")
    env = {
        **os.environ,
        BASE_URL_ENV: server.base_url,
        API_KEY_ENV: FAKE_KEY,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    code = (
        "import sys; from gazevlm import params; from gazevlm.annotate import run; "
        "run(params.load(sys.argv[1]), sys.argv[2])"
    )
    server.script = [None] * 5 + [{"sleep": 10}]  # request index 5 hangs until the kill
    pid = []
    server.on_request = lambda index: os.kill(pid[0], signal.SIGKILL) if index == 5 else None
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(params_file), str(world.root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    pid.append(proc.pid)
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stdout.read().decode()
    first = [(s.kind, tuple(s.image_sha), s.text) for s in server.seen[:5]]
    cache_dir = annotate.paths(world.root)["cache"]
    assert len(list(cache_dir.glob("*.json"))) == 5 and not (world.root / "reports" / "annotate.json").exists()

    server.on_request = None
    server.script = []
    server.seen.clear()
    report = annotate.run(make_params("llm"), root=world.root)
    second = [(s.kind, tuple(s.image_sha), s.text) for s in server.seen]
    assert not set(first) & set(second), "an answered request was asked again"
    # 9 requests in all (see the refinement test): 5 answered before the kill, and request 6 again + 3 more
    assert len(second) == 9 - 5 and report["llm"]["cache_hits"] >= 5 and report["llm"]["failed_chunks"] == 0


def test_no_api_key_in_any_output(world, server, caplog, capsys):
    """Errors that echo the key (as some servers do) must not carry it into outputs or logs."""
    chunks = make_chunks(world.keyframes, 3)
    leaky = {"status": 500, "body": json.dumps({"error": f"bad request for key {FAKE_KEY}"}).encode()}

    def rule(seen, index):
        if {world.image_sha[s] for s in seen.image_sha} == set(chunks[2].keyframe_ids):
            return leaky
        return None

    server.rules = [rule]
    caplog.set_level("DEBUG")
    report = annotate.run(make_params("llm"), root=world.root)
    assert report["llm"]["failed_chunks"] == 1
    hist = json.loads(annotate.paths(world.root)["prompt_history"].read_text())
    assert "[redacted]" in hist["final_annotation"]["failed"][0]["error"]
    leaks = [str(p) for p in output_files(world.root) if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaks
    out = capsys.readouterr()
    assert FAKE_KEY not in caplog.text + out.out + out.err
    assert len(list(annotate.paths(world.root)["cache"].glob("*.json"))) >= N_CHUNKS


def test_bad_llm_inputs(world, server):
    P = make_params("llm")
    (world.root / "annotate" / "feedback.yaml").write_text("rounds:\n  - feedback: more detail\n")
    with pytest.raises(Exception, match="feedback.yaml: rounds\\[0\\] needs `accept: true\\|false`"):
        annotate.run(P, root=world.root)
    (world.root / "annotate" / "feedback.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="feedback.yaml: reviewer feedback file not found"):
        annotate.run(P, root=world.root)
    write_feedback(world.root, [{"feedback": "", "accept": False}])
    with pytest.raises(Exception, match="gives no feedback"):
        annotate.run(P, root=world.root)
    write_feedback(world.root, [{"feedback": "ok", "accept": True}])
    (world.root / "annotate" / "prompt0.txt").unlink()
    with pytest.raises(FileNotFoundError, match="prompt0.txt: initial prompt not found"):
        annotate.run(P, root=world.root)
    (world.root / "annotate" / "prompt0.txt").write_text("Describe.")
    Path(world.root / world.keyframes.loc[0, "path"]).unlink()
    with pytest.raises(FileNotFoundError, match="0000000.jpg: keyframe image .* does not exist"):
        annotate.run(P, root=world.root)
    assert not server.seen


def test_timeout_is_a_deadline_for_the_whole_request(server):
    """Issue 15, item 10: a server trickling a byte every 0.5 s beat a per-read timeout of 2 s."""
    server.script = [{"trickle": 0.5}]
    start = time.monotonic()
    with pytest.raises(ChatError, match="after 1 attempts; last: Timeout"):
        _client(timeout_s=2.0, retries=0).complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 3.5  # the trickle alone would take 10 s
    server.script = [{"trickle": 0.5}, {"reply": "second try"}]
    c = _client(timeout_s=2.0, retries=1)
    assert c.complete([{"role": "user", "content": "hi"}]) == "second try" and c.requests_sent == 2
    server.script = [{"trickle": 0.01, "trickle_bytes": 30, "reply": "slow but in time"}]
    assert _client(timeout_s=2.0).complete([{"role": "user", "content": "hi"}]) == "slow but in time"
