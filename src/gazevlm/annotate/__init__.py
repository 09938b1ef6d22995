"""Annotation stage: captions per keyframe from Ego4D narrations or an LLM (Algorithm 1), QC, targets."""

from .narrations import clean_narration, load_narrations
from .plots import caption_length_figure, examples_table, flag_counts_figure
from .qc import FLAG_KINDS, flag_caption
from .review_form import ReviewForm, is_interactive, require_review_finished, start_review
from .stage import build_session, paths, run

__all__ = [
    "run",
    "paths",
    "build_session",
    "clean_narration",
    "load_narrations",
    "flag_caption",
    "FLAG_KINDS",
    "caption_length_figure",
    "flag_counts_figure",
    "examples_table",
    "ReviewForm",
    "start_review",
    "is_interactive",
    "require_review_finished",
]
