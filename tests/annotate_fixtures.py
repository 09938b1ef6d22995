"""Fixtures for the annotate tests: a tiny extract output + narration.json, and a real local
OpenAI-compatible chat server (http.server on 127.0.0.1, free port) with scripted replies."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image

from gazevlm import layout
from gazevlm import params as gparams

FAKE_KEY = "sk-LEAKCHECK-7f3a9c1e5b2d4f60a8e1"
BASE_URL_ENV = "GAZEVLM_TEST_LLM_BASE_URL"
API_KEY_ENV = "GAZEVLM_TEST_LLM_API_KEY"
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 20),
    "purple": (140, 30, 160),
    "orange": (240, 140, 20),
    "cyan": (20, 200, 210),
    "grey": (128, 128, 128),
    "pink": (240, 120, 180),
    "brown": (120, 70, 20),
}
KINDS = ("cup", "bowl", "knife", "plate", "bottle", "spoon")


@dataclass
class World:
    root: Path
    keyframes: pd.DataFrame
    windows: pd.DataFrame
    truth: dict[str, str]  # keyframe_id -> what the frame shows ("the red cup")
    image_sha: dict[str, str]  # sha256 of image bytes -> keyframe_id


def make_world(
    root: Path,
    uids: tuple[str, ...] = ("vidA", "vidB"),
    n_keyframes: int = 8,
    fps: int = 30,
    splits: dict[str, str] | None = None,
    narrate: Callable[[str, int], list[dict]] | None = None,
) -> World:
    """Keyframes at t = 0..n-1 s, a JPEG per keyframe (distinct colour), future windows (3 observed,
    2 target keyframes), activity windows (3 keyframes), narration.json with one #C narration 0.2 s
    after each keyframe except where `narrate` says otherwise."""
    root = Path(root)
    splits = splits or {uid: ("val" if i == 0 else "train") for i, uid in enumerate(uids)}
    names = list(COLOURS)
    kf_rows, truth, image_sha = [], {}, {}
    frames_dir = root / layout.EXTRACT_DIR / "frames"
    for v, uid in enumerate(uids):
        (frames_dir / uid).mkdir(parents=True, exist_ok=True)
        for k in range(n_keyframes):
            frame = k * fps
            kid = layout.keyframe_id(uid, frame)
            colour = names[(k + v) % len(names)]
            kind = KINDS[(k + 2 * v) % len(KINDS)]
            rel = (layout.EXTRACT_DIR / "frames" / uid / f"{frame:07d}.jpg").as_posix()
            buf = io.BytesIO()
            image = Image.new("RGB", (24, 24), COLOURS[colour])
            image.paste((255, 255, 255), (2 * k, 8 * v, 2 * k + 2, 8 * v + 4))  # every image distinct
            image.save(buf, format="JPEG", quality=95)
            (root / rel).write_bytes(buf.getvalue())
            image_sha[hashlib.sha256(buf.getvalue()).hexdigest()] = kid
            truth[kid] = f"the {colour} {kind}"
            kf_rows.append(
                {"keyframe_id": kid, "uid": uid, "frame": frame, "t": float(k), "split": splits[uid], "path": rel}
            )
    keyframes = pd.DataFrame(kf_rows)
    win_rows = []
    for uid in uids:
        ids = [layout.keyframe_id(uid, k * fps) for k in range(n_keyframes)]
        for s in range(n_keyframes - 4):
            win_rows.append(
                {
                    "window_id": layout.window_id("future", uid, s * fps),
                    "task": "future",
                    "uid": uid,
                    "split": splits[uid],
                    "obs_frames": [(s + i) * fps for i in range(3)],
                    "obs_keyframe_ids": ids[s : s + 3],
                    "target_frames": [(s + 3 + i) * fps for i in range(2)],
                    "target_keyframe_ids": ids[s + 3 : s + 5],
                    "t_start": float(s),
                    "t_end": float(s + 5),
                }
            )
            win_rows.append(
                {
                    "window_id": layout.window_id("activity", uid, s * fps),
                    "task": "activity",
                    "uid": uid,
                    "split": splits[uid],
                    "obs_frames": [(s + i) * fps for i in range(3)],
                    "obs_keyframe_ids": ids[s : s + 3],
                    "target_frames": [(s + i) * fps for i in range(3)],
                    "target_keyframe_ids": ids[s : s + 3],
                    "t_start": float(s),
                    "t_end": float(s + 3),
                }
            )
    windows = pd.DataFrame(win_rows)
    (root / layout.EXTRACT_DIR).mkdir(parents=True, exist_ok=True)
    keyframes.to_parquet(root / layout.EXTRACT_DIR / "keyframes.parquet", index=False)
    windows.to_parquet(root / layout.EXTRACT_DIR / "windows.parquet", index=False)

    narration = {}
    for uid in uids:
        entries = []
        for k in range(n_keyframes):
            kid = layout.keyframe_id(uid, k * fps)
            entries += (
                narrate(uid, k)
                if narrate
                else [
                    {
                        "timestamp_sec": k + 0.2,
                        "timestamp_frame": int((k + 0.2) * fps),
                        "narration_text": f"#C C picks up {truth[kid]}",
                        "annotation_uid": f"{uid}-{k}",
                    }
                ]
            )
        narration[uid] = {
            "narration_pass_1": {"narrations": entries, "summaries": []},
            "narration_pass_2": {"narrations": [], "summaries": []},
            "status": "complete",
        }
    write_narrations(root, narration)
    (root / "annotate").mkdir(exist_ok=True)
    (root / "annotate" / "prompt0.txt").write_text("Describe each frame.\n")
    write_feedback(
        root,
        [{"feedback": "Name the objects and their colours.", "accept": False}, {"feedback": "Good.", "accept": True}],
    )
    assert len(image_sha) == len(kf_rows), "fixture images must differ"
    return World(root, keyframes, windows, truth, image_sha)


def write_narrations(root: Path, narration: dict) -> Path:
    path = root / "data" / "sample" / "v2" / "annotations" / "narration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(narration))
    return path


def write_feedback(root: Path, rounds: list[dict]) -> None:
    (root / "annotate").mkdir(exist_ok=True)
    (root / "annotate" / "feedback.yaml").write_text(yaml.safe_dump({"rounds": rounds}))


def make_params(source: str = "narrations", **llm: Any) -> gparams.Params:
    llm_values = {
        "base_url_env": BASE_URL_ENV,
        "api_key_env": API_KEY_ENV,
        "model": "test-vlm",
        "chunk_size": 3,
        "max_rounds": 3,
        "validation_sequences": 2,
        "retries": 2,
        "backoff_s": 0.001,
        "timeout_s": 5.0,
    }
    llm_values.update(llm)
    return gparams.from_dict(
        {"data": {"root": "data/sample", "version": "v2"}, "annotate": {"source": source, "llm": llm_values}}
    )


def params_yaml(root: Path, source: str = "llm", **llm: Any) -> Path:
    """The same params as make_params, as a params.yaml file (for subprocess and papermill runs)."""
    p = make_params(source, **llm)
    doc = {
        "data": {"root": p.data.root, "version": p.data.version},
        "annotate": {
            "source": source,
            "llm": {
                k: getattr(p.annotate.llm, k)
                for k in (
                    "base_url_env",
                    "api_key_env",
                    "model",
                    "chunk_size",
                    "max_rounds",
                    "validation_sequences",
                    "retries",
                    "backoff_s",
                    "timeout_s",
                )
            },
        },
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# --- the chat server ------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it."""

    kind: str  # "captions" (has images) or "rewrite"
    text: str  # all text parts joined
    image_sha: list[str]
    authorization: str
    status: int = 200


class _Trickle:
    """A response stream that sends its first `n` bytes one at a time, `interval` seconds apart."""

    def __init__(self, raw, interval: float, n: int) -> None:
        self.raw, self.interval, self.left = raw, interval, n

    def write(self, data: bytes) -> int:
        data = bytes(data)
        while data and self.left > 0:
            self.raw.write(data[:1])
            self.raw.flush()
            data, self.left = data[1:], self.left - 1
            time.sleep(self.interval)
        if data:
            self.raw.write(data)
        return 0

    def flush(self) -> None:
        self.raw.flush()


@dataclass
class ChatServer:
    """A real HTTP server speaking the chat-completions format.

    `script` is consumed one entry per request, before the default behaviour: an int status
    (with optional headers/body: {"status": 429, "headers": {"Retry-After": "3"}}), {"reply": text},
    {"body": raw bytes}, {"sleep": seconds} (then default), {"trickle": seconds} (the response's first
    `trickle_bytes` (20) bytes one per interval, the rest at once), or None (default). `rules` are callables
    (seen, index) -> entry or None, checked when the script is empty. Default: a caption request gets
    one numbered caption per image ("the camera wearer picks up <truth>"), a rewrite request a new prompt.
    """

    truth: dict[str, str] = field(default_factory=dict)
    image_sha: dict[str, str] = field(default_factory=dict)
    key: str = FAKE_KEY
    script: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    on_request: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *a: None  # clients that timed out close their socket
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def captions_seen(self) -> list[Seen]:
        return [s for s in self.seen if s.kind == "captions"]

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))))
        texts, shas = [], []
        for message in body["messages"]:
            content = message["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    shas.append(hashlib.sha256(data).hexdigest())
        seen = Seen("captions" if shas else "rewrite", "\n".join(texts), shas, h.headers.get("Authorization", ""))
        with self._lock:
            index = len(self.seen)
            self.seen.append(seen)
            entry = self.script.pop(0) if self.script else None
            if entry is None:
                for rule in self.rules:
                    entry = rule(seen, index)
                    if entry is not None:
                        break
        if self.on_request:
            self.on_request(index)
        if h.path != "/v1/chat/completions" or seen.authorization != f"Bearer {self.key}":
            entry = {"status": 401, "body": b'{"error": "bad key or path"}'}
        if isinstance(entry, int):
            entry = {"status": entry}
        entry = dict(entry or {})
        if "sleep" in entry:
            time.sleep(entry.pop("sleep"))
        status = entry.get("status", 200)
        seen.status = status
        if "body" in entry:
            payload = entry["body"]
        elif status != 200:
            payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
        else:
            reply = entry.get("reply", self._default_reply(seen))
            payload = json.dumps(
                {
                    "id": f"x{index}",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}
                    ],
                }
            ).encode()
        try:
            if "trickle" in entry:  # the first bytes of the whole response one at a time, then the rest
                h.wfile = _Trickle(h.wfile, entry["trickle"], entry.get("trickle_bytes", 20))
            h.send_response(status)
            for name, value in entry.get("headers", {}).items():
                h.send_header(name, value)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass

    def _default_reply(self, seen: Seen) -> str:
        if seen.kind == "rewrite":
            m = re.search(r'Current prompt:\n"""\n(.*?)\n"""', seen.text, re.DOTALL)
            revision = hashlib.sha256(seen.text.encode()).hexdigest()[:6]
            return f"{m.group(1) if m else ''} Be specific (revision {revision})."
        return "\n".join(
            f"{i + 1}. The camera wearer picks up {self.truth.get(self.image_sha.get(s, ''), 'a thing')}."
            for i, s in enumerate(seen.image_sha)
        )


def output_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and p.suffix != ".jpg"]


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


@pytest.fixture
def server(world, monkeypatch):
    """The scripted chat server on 127.0.0.1, with the endpoint and a fake key in the environment;
    headless (no Jupyter session), so the stage never waits for the review form."""
    srv = ChatServer(truth=world.truth, image_sha=world.image_sha)
    monkeypatch.setenv(BASE_URL_ENV, srv.base_url)
    monkeypatch.setenv(API_KEY_ENV, FAKE_KEY)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    yield srv
    srv.stop()
