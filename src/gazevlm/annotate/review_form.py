"""The reviewer's form for prompt refinement in Jupyter (ipywidgets).

It shows the validation captions of the current round, a text box for feedback and two buttons:
Refine (rewrite the prompt from the feedback, caption again) and Accept. Every click is written to the
versioned feedback file, so the stage's headless run replays the same rounds from the cache.
The callbacks are plain methods (`on_refine`, `on_accept`), testable without a browser or kernel.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from ..params import Params
from .llm_client import ChatConfigError
from .refine import RefinementError, RefinementSession, save_feedback
from .stage import build_session, resolve_path

THUMB_PX = 160


def is_interactive(flag: bool | None = None) -> bool:
    """True in a Jupyter server's kernel (JupyterLab / Notebook), False under papermill, unless forced."""
    if flag is not None:
        return bool(flag)
    return bool(os.environ.get("JPY_SESSION_NAME"))


class ReviewForm(widgets.VBox):
    def __init__(self, session: RefinementSession, feedback_file: str | Path, thumbnails: bool = True):
        self.session = session
        self.feedback_file = Path(feedback_file)
        self.thumbnails = thumbnails
        self.header = widgets.HTML()
        self.captions = widgets.HTML()
        self.feedback = widgets.Textarea(
            placeholder="What should the captions do better? (objects, actions, "
            "movement and space, fine-grained wording)",
            layout=widgets.Layout(width="100%", height="6em"),
        )
        self.accept_button = widgets.Button(description="Accept", button_style="success", icon="check")
        self.refine_button = widgets.Button(description="Refine", button_style="warning", icon="refresh")
        self.status = widgets.HTML()
        self.accept_button.on_click(lambda _: self.on_accept())
        self.refine_button.on_click(lambda _: self.on_refine())
        super().__init__(
            [
                self.header,
                self.captions,
                self.feedback,
                widgets.HBox([self.refine_button, self.accept_button]),
                self.status,
            ]
        )
        self.refresh()

    def on_refine(self) -> None:
        text = self.feedback.value.strip()
        if not text:
            self.status.value = "<b>Write feedback first</b> (or Accept)."
            return
        self._submit(text, accept=False)

    def on_accept(self) -> None:
        self._submit(self.feedback.value.strip(), accept=True)

    def _submit(self, text: str, accept: bool) -> None:
        self.status.value = "Working..."
        try:
            self.session.submit(text, accept)
        except (RefinementError, ChatConfigError) as err:
            self.status.value = f"<b>Error:</b> {html.escape(str(err))}"
            return
        save_feedback(self.feedback_file, self.session.feedback_entries())
        self.feedback.value = ""
        self.refresh()

    def refresh(self) -> None:
        s = self.session
        done = s.done
        self.accept_button.disabled = self.refine_button.disabled = self.feedback.disabled = done
        if done:
            self.header.value = (
                f"<h4>Refinement finished ({html.escape(str(s.stop_reason))})</h4>"
                f"<p>Final prompt:</p><pre>{html.escape(s.final_prompt)}</pre>"
            )
            self.captions.value = ""
            self.status.value = (
                f"Feedback saved to <code>{html.escape(str(self.feedback_file))}</code>. "
                "Run the cells below to caption everything with the final prompt."
            )
            return
        r = s.rounds[-1]
        self.header.value = (
            f"<h4>Round {r['round'] + 1} of at most {s.max_rounds}</h4>"
            f"<p>Prompt:</p><pre style='white-space:pre-wrap'>{html.escape(r['prompt'])}</pre>"
        )
        self.captions.value = self._captions_html(r["captions"])
        self.status.value = ""

    def _captions_html(self, chunks: list[dict]) -> str:
        rows = []
        paths = {kf: p for c in self.session.chunks for kf, p in zip(c.keyframe_ids, c.paths, strict=False)}
        for chunk in chunks:
            rows.append(f"<tr><th colspan=3 style='text-align:left'>{html.escape(chunk['chunk_id'])}</th></tr>")
            if chunk["captions"] is None:
                rows.append(f"<tr><td colspan=3><i>failed: {html.escape(str(chunk['error']))}</i></td></tr>")
                continue
            for kf, caption in zip(chunk["keyframe_ids"], chunk["captions"], strict=False):
                thumb = self._thumbnail(paths.get(kf)) if self.thumbnails else ""
                rows.append(f"<tr><td>{thumb}</td><td>{html.escape(kf)}</td><td>{html.escape(caption)}</td></tr>")
        return "<table>" + "".join(rows) + "</table>"

    def _thumbnail(self, path: str | None) -> str:
        if path is None:
            return ""
        try:
            with Image.open(resolve_path(self.session.root, path)) as im:
                im.thumbnail((THUMB_PX, THUMB_PX))
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=80)
        except OSError:
            return "(image missing)"
        return f"<img src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"


def start_review(params: Params, root: str | Path = ".", thumbnails: bool = True) -> ReviewForm:
    """Caption the validation chunks with the initial prompt and return the form to review them."""
    session = build_session(params, root)
    session.start()
    return ReviewForm(session, resolve_path(Path(root), params.annotate.llm.feedback_file), thumbnails)


def require_review_finished(form: ReviewForm | None) -> None:
    """Stop a 'run all' in Jupyter before the reviewer has accepted (or used up the rounds)."""
    if form is not None and not form.session.done:
        raise RuntimeError(
            "prompt review not finished: give feedback in the form above and click Refine or "
            "Accept until it says 'Refinement finished', then run this cell again"
        )
