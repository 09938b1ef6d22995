"""Iterative prompt refinement (Algorithm 1 of the paper).

Round r: caption the validation chunks with prompt r; the reviewer reads them and gives feedback
(accept or not); if not accepted, a chat model rewrites the prompt from (prompt r, feedback) into
prompt r+1. Stop when the reviewer accepts, when max_rounds reviews were given (the final prompt is
then the last rewrite, which addresses all feedback) or when the feedback file has no more entries.

The same RefinementSession serves both reviewers: headless, `replay` feeds it the entries of the
versioned feedback file; in Jupyter, the review form (review_form.py) calls `submit` from its buttons
and writes each entry back to that file, so the headless rerun replays the same session from the
cache without a single request.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import atomic
from .cache import ResponseCache, request_key
from .llm_captions import Chunk, ChunkResult, annotate_chunks, sha256_text
from .llm_client import ChatClient, ChatError

log = logging.getLogger(__name__)

CRITERIA = (
    "the objects the camera wearer handles or looks at",
    "the actions of the camera wearer and of other people",
    "movement and spatial cues (where things are and where they go)",
    "clear, fine-grained wording a robot could act on, about 15-20 words",
)
REWRITE_SYSTEM = (
    "You improve the instruction (prompt) given to a vision-language model that writes one caption per "
    "frame of egocentric video. Rewrite the prompt so that the captions address the reviewer's feedback. "
    "Good captions describe: " + "; ".join(f"({i + 1}) {c}" for i, c in enumerate(CRITERIA)) + ". "
    "Do not ask for a particular output format (the format is fixed elsewhere). "
    "Reply with the new prompt only, without commentary."
)
FEEDBACK_HEADER = """\
# Reviewer feedback for the LLM annotator's prompt refinement (Algorithm 1), one entry per round, in order.
# Round r's entry is the review of the captions that prompt r produced on the validation chunks;
# `accept: true` ends refinement. `prompt_sha256` (optional) records which prompt was reviewed.
# Written by the review form in notebooks/02_annotate.ipynb, or by hand; versioned with the code.
"""


class RefinementError(RuntimeError):
    """Refinement cannot go on (the rewrite request failed, or the feedback file is malformed)."""


@dataclass(frozen=True)
class Feedback:
    feedback: str
    accept: bool
    prompt_sha256: str | None = None


def load_feedback(path: str | Path) -> list[Feedback]:
    """Read the feedback file: {rounds: [{feedback: str, accept: bool, prompt_sha256?: str}, ...]}."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: reviewer feedback file not found (annotate.llm.feedback_file)") from err
    except yaml.YAMLError as err:
        raise RefinementError(f"{path}: not valid YAML: {err}") from err
    rounds = (raw or {}).get("rounds", []) if isinstance(raw, dict) or raw is None else None
    if not isinstance(rounds, list):
        raise RefinementError(f"{path}: expected a mapping with a list under `rounds`")
    entries = []
    for i, entry in enumerate(rounds or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("accept"), bool):
            raise RefinementError(f"{path}: rounds[{i}] needs `accept: true|false`")
        text = entry.get("feedback", "")
        if not isinstance(text, str):
            raise RefinementError(f"{path}: rounds[{i}].feedback must be text")
        if not entry["accept"] and not text.strip():
            raise RefinementError(f"{path}: rounds[{i}] is not accepted but gives no feedback to act on")
        unknown = set(entry) - {"feedback", "accept", "prompt_sha256"}
        if unknown:
            raise RefinementError(f"{path}: rounds[{i}] has unknown keys {sorted(unknown)}")
        entries.append(Feedback(text.strip(), entry["accept"], entry.get("prompt_sha256")))
    return entries


def save_feedback(path: str | Path, entries: list[Feedback]) -> None:
    """Write the feedback file atomically (the review form calls this after every click)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "rounds": [
            {
                "feedback": e.feedback,
                "accept": e.accept,
                **({"prompt_sha256": e.prompt_sha256} if e.prompt_sha256 else {}),
            }
            for e in entries
        ]
    }
    atomic.write_text(path, FEEDBACK_HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))


def rewrite_prompt(client: ChatClient, cache: ResponseCache, prompt: str, feedback: str) -> str:
    """Ask the chat model for a new prompt from the current one and the reviewer's feedback (cached)."""
    user = (
        f'Current prompt:\n"""\n{prompt.strip()}\n"""\n\n'
        f'Reviewer feedback on the captions it produced:\n"""\n{feedback.strip()}\n"""'
    )
    key = request_key(client.model, REWRITE_SYSTEM + "\0" + user)
    reply = cache.get(key)
    if reply is None:
        try:
            reply = client.complete([{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}])
        except ChatError as err:
            raise RefinementError(f"prompt rewrite failed: {err}") from err
        cache.put(key, reply, {"model": client.model, "kind": "rewrite", "prompt_sha256": sha256_text(prompt)})
    new = _clean_prompt(reply)
    if not new:
        raise RefinementError(f"prompt rewrite returned no prompt (cached reply {cache.path(key).name})")
    return new


def _clean_prompt(reply: str) -> str:
    text = re.sub(r"^```[a-z]*\n?|```$", "", reply.strip(), flags=re.MULTILINE).strip()
    text = re.sub(r"^(?:new|rewritten|revised|improved) prompt\s*:\s*", "", text, flags=re.IGNORECASE)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text.strip()


@dataclass
class RefinementSession:
    client: ChatClient
    cache: ResponseCache
    initial_prompt: str
    chunks: list[Chunk]
    root: Path
    max_rounds: int
    rounds: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    done: bool = False
    accepted: bool = False
    stop_reason: str | None = None
    results: dict[str, ChunkResult] = field(default_factory=dict)
    unused_feedback: int = 0

    def __post_init__(self) -> None:
        self.prompt = self.initial_prompt.strip()
        if not self.prompt:
            raise RefinementError("the initial prompt is empty")

    def start(self) -> None:
        """Caption the validation chunks with the initial prompt (round 0)."""
        if self.rounds:
            return
        if self.max_rounds <= 0:
            self._finish(False, "max_rounds")
            return
        self._annotate_round()

    def _annotate_round(self) -> None:
        self.results = annotate_chunks(self.client, self.cache, self.prompt, self.chunks, self.root)
        self.rounds.append(
            {
                "round": len(self.rounds),
                "prompt": self.prompt,
                "prompt_sha256": sha256_text(self.prompt),
                "captions": [
                    {
                        "chunk_id": c.chunk_id,
                        "keyframe_ids": list(c.keyframe_ids),
                        "captions": self.results[c.chunk_id].captions,
                        "error": self.results[c.chunk_id].error,
                    }
                    for c in self.chunks
                ],
                "feedback": None,
                "accept": None,
                "rewritten_prompt": None,
            }
        )

    def submit(self, feedback: str, accept: bool) -> None:
        """The reviewer's verdict on the current round; rewrites and re-captions unless accepted."""
        if self.done:
            raise RefinementError("refinement is finished: no more feedback is taken")
        if not self.rounds:
            self.start()
        current = self.rounds[-1]
        current["feedback"], current["accept"] = feedback.strip(), bool(accept)
        if accept:
            self._finish(True, "accepted")
            return
        if not feedback.strip():
            raise RefinementError("feedback is empty: say what to change, or accept")
        new = rewrite_prompt(self.client, self.cache, self.prompt, feedback)
        current["rewritten_prompt"] = new
        self.prompt = new
        if len(self.rounds) >= self.max_rounds:
            self._finish(False, "max_rounds")
            return
        self._annotate_round()

    def feedback_exhausted(self) -> None:
        """No more feedback (headless file ran out): keep the current prompt, not accepted."""
        if not self.done:
            self._finish(False, "feedback_exhausted")

    def _finish(self, accepted: bool, reason: str) -> None:
        self.done, self.accepted, self.stop_reason = True, accepted, reason

    @property
    def final_prompt(self) -> str:
        return self.prompt

    def feedback_entries(self) -> list[Feedback]:
        return [
            Feedback(r["feedback"], r["accept"], r["prompt_sha256"]) for r in self.rounds if r["accept"] is not None
        ]

    def history(self) -> dict[str, Any]:
        return {
            "source": "llm",
            "model": self.client.model,
            "criteria": list(CRITERIA),
            "rewrite_instruction": REWRITE_SYSTEM,
            "initial_prompt": self.initial_prompt,
            "validation_chunks": [c.chunk_id for c in self.chunks],
            "max_rounds": self.max_rounds,
            "rounds": self.rounds,
            "accepted": self.accepted,
            "stop_reason": self.stop_reason,
            "final_prompt": self.final_prompt,
            "final_prompt_sha256": sha256_text(self.final_prompt),
        }


def replay(session: RefinementSession, entries: list[Feedback]) -> RefinementSession:
    """Run the session headless with the feedback file's entries, in order."""
    session.start()
    used = 0
    for entry in entries:
        if session.done:
            break
        current = session.rounds[-1]
        if entry.prompt_sha256 and entry.prompt_sha256 != current["prompt_sha256"]:
            log.warning(
                "feedback for round %d was written for another prompt (sha256 %s..., now %s...)",
                current["round"],
                entry.prompt_sha256[:12],
                current["prompt_sha256"][:12],
            )
            current["feedback_prompt_mismatch"] = True
        session.submit(entry.feedback, entry.accept)
        used += 1
    session.feedback_exhausted()
    if used < len(entries):
        log.warning(
            "%d feedback entries were not needed (refinement stopped: %s)", len(entries) - used, session.stop_reason
        )
    session.unused_feedback = len(entries) - used
    return session


def select_validation(chunks: list[Chunk], n: int) -> list[Chunk]:
    """n chunks spread evenly over the val split's chunks (all chunks if there is no val split)."""
    pool = [c for c in chunks if c.split == "val"] or list(chunks)
    if n <= 0 or not pool:
        return []
    if n >= len(pool):
        return pool
    step = len(pool) / n
    return [pool[int(i * step)] for i in range(n)]
