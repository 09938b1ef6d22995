"""The rating form: one blinded item at a time (a test window's frames and one run's prediction), rated
"hallucinated: yes / no" with an optional note, each rating appended to the ratings file at once.

    from gazevlm.hallucination.app import RatingApp
    RatingApp(rater="AB")      # the repository of the working directory (or a parent): its params.yaml

Blinding: no displayed widget holds a run name (tests/test_hallucination.py walks every widget's state);
the run of each item lives only in Python and in the ratings file. Items come in the sample's shuffled
order (gazevlm.hallucination.study); the form opens at the first item not yet rated, so a reviewer can stop
and resume. Going back and rating an item again appends a new row; the latest one counts. A click that
comes sooner than `min_seconds` after an item appeared (the second click of a double click) is ignored.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import ipywidgets as W

from gazevlm import layout, params
from gazevlm.hallucination import frames, ratings, study

INSTRUCTIONS = (
    "<b>Is the prediction hallucinated?</b> Answer <i>yes</i> when it names objects, actions or details that "
    "neither the frames nor the reference support; a plausible description that is merely vague or incomplete "
    "is <i>no</i>. Predictions of several models come in a shuffled order and the model of each one is hidden: "
    "rate each on its own. Every answer is saved at once; you can stop and come back."
)


def find_root(start: str | Path | None = None) -> Path:
    """`start` if given, else the working directory or its first parent holding params.yaml."""
    if start is not None:
        return Path(start)
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        if (base / "params.yaml").is_file():
            return base
    raise FileNotFoundError(f"no params.yaml in {here} or its parents: open the notebook inside the repository")


class RatingApp:
    """The form; `.widget` is its ipywidgets tree, and the object displays as it in a notebook."""

    def __init__(
        self,
        root: str | Path | None = None,
        rater: str = "",
        params_file: str = "params.yaml",
        width: int = 192,
        min_seconds: float = 0.3,
    ):
        self.root = find_root(root)
        self.params = params.load(self.root / params_file)
        why = study.not_applicable(self.params)
        if why:
            raise ValueError(f"{self.root / params_file}: {why}")
        self.sample = study.draw_sample(self.params, study.load_predictions(self.params, self.root))
        self.ratings_file = self.root / self.params.hallucination.ratings_file
        self.window_frames = frames.load_frames(self.sample.task, self.sample.window_ids, self.root / layout.SHARDS_DIR)
        self.rater = rater
        self.width = width
        # a double click would rate the next item unseen: a click this soon after an item appears is ignored
        self.min_seconds = min_seconds
        self.shown_at = 0.0
        self.answers = self._saved_answers()
        self.position = 0

        self.progress = W.HTML()
        self.panels = W.HBox()
        self.reference = W.HTML()
        self.prediction = W.HTML()
        self.previous = W.HTML()
        self.note = W.Text(placeholder="optional note", layout=W.Layout(width="480px"))
        self.yes_button = W.Button(description="Hallucinated: yes", button_style="danger")
        self.no_button = W.Button(description="Hallucinated: no", button_style="success")
        self.back_button = W.Button(description="◀ previous", layout=W.Layout(width="110px"))
        self.skip_button = W.Button(description="next ▶", layout=W.Layout(width="110px"))
        self.status = W.HTML()
        self.widget = W.VBox(
            [
                W.HTML(INSTRUCTIONS),
                self.progress,
                self.panels,
                self.reference,
                self.prediction,
                self.previous,
                self.note,
                W.HBox([self.yes_button, self.no_button, self.back_button, self.skip_button]),
                self.status,
            ]
        )
        self.yes_button.on_click(lambda _: self.rate(True))
        self.no_button.on_click(lambda _: self.rate(False))
        self.back_button.on_click(lambda _: self.show(self.position - 1))
        self.skip_button.on_click(lambda _: self.show(self.position + 1))
        self.show(self.next_unrated(-1))

    def _saved_answers(self) -> dict[int, bool]:
        """Item index -> the latest answer in the ratings file for this very prediction (same task, seed, text)."""
        table = ratings.read_ratings(self.ratings_file)
        where = {(it.run, it.window_id, it.prediction_hash): i for i, it in enumerate(self.sample.items)}
        rows = table.rows[(table.rows["task"] == self.sample.task) & (table.rows["seed"] == self.sample.seed)]
        answers: dict[int, bool] = {}
        for run, wid, digest, answer in zip(
            rows["run"], rows["window_id"], rows["prediction_hash"], rows["hallucinated"], strict=True
        ):
            if (run, wid, digest) in where:
                answers[where[(run, wid, digest)]] = bool(answer)  # file order: the latest wins
        self.n_malformed = len(table.skipped)
        return answers

    def next_unrated(self, after: int) -> int:
        """The first unrated item after `after` (wrapping around); `after` + 1 when every item is rated."""
        n = len(self.sample.items)
        for k in range(1, n + 1):
            i = (after + k) % n
            if i not in self.answers:
                return i
        return (after + 1) % n

    # --- actions -------------------------------------------------------------------------------------------
    def rate(self, hallucinated: bool) -> None:
        """Append the rating of the current item, then move to the next unrated one."""
        waited = time.monotonic() - self.shown_at
        if waited < self.min_seconds:
            self.status.value = f"Ignored a click {waited:.2f} s after the item appeared (a double click?): rate again."
            return
        item = self.sample.items[self.position]
        rating = ratings.Rating(
            task=self.sample.task,
            seed=self.sample.seed,
            run=item.run,
            window_id=item.window_id,
            hallucinated="yes" if hallucinated else "no",
            sample_seed=self.sample.sample_seed,
            prediction_hash=item.prediction_hash,
            note=self.note.value,
            rater=self.rater,
        )
        try:
            ratings.append_rating(self.ratings_file, rating)
        except (ratings.RatingsError, OSError) as err:
            self.status.value = f"<b>Not saved:</b> {html.escape(str(err))}"
            return
        self.answers[self.position] = hallucinated
        self.note.value = ""
        done = self.position
        self.show(self.next_unrated(self.position))
        self.status.value = f"Saved item {done + 1}: {'yes' if hallucinated else 'no'}."

    def show(self, position: int) -> None:
        """Display item `position` (modulo the number of items)."""
        n = len(self.sample.items)
        self.position = position % n
        item = self.sample.items[self.position]
        shown = self.window_frames[item.window_id]
        self.panels.children = [
            W.VBox(
                [W.Image(value=frames.png(frame), format="png", width=self.width), W.HTML(f"<small>{t:.1f} s</small>")]
            )
            for frame, t in zip(shown.frames, shown.timestamps, strict=True)
        ]
        rated = len(self.answers)
        finished = " &middot; <b>every item is rated</b>" if rated == n else ""
        malformed = (
            f" &middot; {self.n_malformed} malformed line(s) in the ratings file are ignored"
            if self.n_malformed
            else ""
        )
        self.progress.value = (
            f"Item <b>{self.position + 1}</b> of {n} &middot; {rated} of {n} rated{finished}{malformed}"
        )
        self.reference.value = f"<b>Reference</b> (written by annotators): {html.escape(item.reference) or '&mdash;'}"
        text = html.escape(item.prediction) or "<i>(empty prediction)</i>"
        self.prediction.value = f"<div style='font-size:1.2em;margin:6px 0'><b>Prediction:</b> {text}</div>"
        answer = self.answers.get(self.position)
        self.previous.value = (
            ""
            if answer is None
            else f"<i>You rated this item: {'yes' if answer else 'no'} (rate again to change it; "
            "the latest rating counts)</i>"
        )
        self.status.value = ""
        self.shown_at = time.monotonic()

    # --- for tests and the notebook ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
