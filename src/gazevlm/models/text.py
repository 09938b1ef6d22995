"""OpenFlamingo-style text around a window of frames.

A window's frames are ONE media item (F = n_frames frames through the Perceiver's frame embeddings), so
the text carries one <image> token, then the task's fixed prompt; in training the target and
<|endofchunk|> follow. Labels are -100 on the prompt and on padding: the loss is on the target only.
Generation starts from the same answer-free prompt; all prompts of a task have the same length.

The one exception is a run with `gaze_text` (Table 13, gazevlm.gaze_inputs): its prompt also carries
each observed frame's gaze point, "gaze: (0.42, 0.61); none; ...", so prompts differ from window to
window (and in token length). Every other run's prompt is built without any gaze argument.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from .prompts import EOC, IGNORE_INDEX, IMAGE, TASK_PROMPTS

GAZE_NONE = "none"   # a frame without a valid gaze point (untracked, blink, outside the crop)

# Per observed frame: its gaze point (x, y) in [0, 1] of the cropped frame (x right, y down), or None.
FrameGaze = Sequence["tuple[float, float] | None"]


def gaze_text(points: FrameGaze) -> str:
    """'gaze: (0.42, 0.61); none; (0.40, 0.58)': the observed frames' gaze points in frame order, two
    decimals, `none` for a frame without one."""
    if isinstance(points, str) or len(points) == 0:
        raise ValueError(f"gaze_text needs one entry per observed frame, got {points!r}")
    parts = []
    for point in points:
        if point is None:
            parts.append(GAZE_NONE)
            continue
        x, y = (float(v) for v in point)
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"gaze point {point!r} is not normalised to [0, 1]")
        parts.append(f"({x:.2f}, {y:.2f})")
    return "gaze: " + "; ".join(parts)


def prompt_text(task: str, gaze: FrameGaze | None = None) -> str:
    """The task prompt after the window's <image>; with `gaze` (gaze_text runs only), the gaze points first."""
    try:
        question = TASK_PROMPTS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r} (have {sorted(TASK_PROMPTS)})") from None
    if gaze is None:
        return f"{IMAGE}{question}"
    return f"{IMAGE}{gaze_text(gaze)}. {question}"


def gaze_vocabulary() -> list[str]:
    """Texts that hold every word a gaze prompt can contain (each coordinate 0.00 ... 1.00, `none`, the
    punctuation after a point or a `none`), for the word tokenizer a gaze_text run builds."""
    texts = []
    for k in range(101):
        v = k / 100
        texts.append(prompt_text("future", [(v, v), None, (v, v), None])[len(IMAGE):])
        texts.append(prompt_text("activity", [None, (v, v)])[len(IMAGE):])
    return texts


def _check_frames(n_frames: int) -> None:
    # n_frames does not change the text (one <image> per window); it is checked so a caller mixing up
    # frames and batch size fails here rather than in the model.
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, task: str, gaze: FrameGaze | None = None) -> list[int]:
    return tokenizer(prompt_text(task, gaze), add_special_tokens=True)["input_ids"]


def _row_prompts(tokenizer: PreTrainedTokenizerBase, task: str, n_frames: int, batch: int,
                 gaze: Sequence[FrameGaze] | None) -> list[list[int]]:
    """Prompt ids per row: the task's one prompt, or (gaze_text runs) each window's own."""
    if gaze is None:
        return [_prompt_ids(tokenizer, task)] * batch
    if len(gaze) != batch or any(len(g) != n_frames for g in gaze):
        raise ValueError(f"gaze prompts: expected {batch} windows of {n_frames} frames' gaze points, got "
                         f"{[len(g) for g in gaze]}")
    return [_prompt_ids(tokenizer, task, g) for g in gaze]


class TrainEncoder:
    """`encode_train` for one tokenizer and task, each distinct target tokenised once.

    The training loop sees the same few thousand targets every epoch; the tokenizer's Python call cost
    (~0.1 ms a text, ~4 ms a batch of 32) is then paid once per text instead of once per step. The
    tensors are exactly encode_train's."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, task: str, max_target_tokens: int | None = None):
        self.tokenizer, self.task, self.max_target_tokens = tokenizer, task, max_target_tokens
        self.prompt = _prompt_ids(tokenizer, task)
        self.eoc = tokenizer.convert_tokens_to_ids(EOC)
        self._targets: dict[str, list[int]] = {}

    def target_ids(self, text: str) -> list[int]:
        """The answer's token ids (without <|endofchunk|>), memoised by text."""
        ids = self._targets.get(text)
        if ids is None:
            ids = self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
            if self.max_target_tokens is not None:
                ids = ids[: self.max_target_tokens]
            self._targets[text] = ids
        return ids

    def __call__(self, texts: Sequence[str], n_frames: int,
                 gaze: Sequence[FrameGaze] | None = None) -> dict[str, torch.Tensor]:
        """Prompt + target + <|endofchunk|>, right-padded: input_ids, attention_mask, labels (B, L) long.
        `gaze` (gaze_text runs only): per window, its frames' gaze points for the prompt."""
        _check_frames(n_frames)
        if isinstance(texts, str):
            raise TypeError("encode_train: texts must be a sequence of strings, got one string")
        prompts = ([self.prompt] * len(texts) if gaze is None
                   else _row_prompts(self.tokenizer, self.task, n_frames, len(texts), gaze))
        rows, label_rows = [], []
        for text, prompt in zip(texts, prompts, strict=True):
            target = self.target_ids(text) + [self.eoc]
            rows.append(prompt + target)
            label_rows.append([IGNORE_INDEX] * len(prompt) + target)
        length = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, (row, lab) in enumerate(zip(rows, label_rows, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            labels[i, : len(lab)] = torch.tensor(lab)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def encode_train(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], task: str, n_frames: int,
                 max_target_tokens: int | None = None,
                 gaze: Sequence[FrameGaze] | None = None) -> dict[str, torch.Tensor]:
    """Prompt + target + <|endofchunk|>, right-padded: input_ids, attention_mask, labels (B, L) long.
    `gaze` (gaze_text runs only): per window, its frames' gaze points for the prompt."""
    return TrainEncoder(tokenizer, task, max_target_tokens)(texts, n_frames, gaze)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, task: str, n_frames: int, batch: int,
                  gaze: Sequence[FrameGaze] | None = None) -> dict[str, torch.Tensor]:
    """The answer-free prompt for generation, repeated `batch` times: input_ids, attention_mask (B, L).
    With `gaze` (gaze_text runs only) each row is its window's prompt; rows must then have the same token
    length (generation takes no padding): evaluate.predict groups windows by prompt length."""
    _check_frames(n_frames)
    if gaze is None:
        ids = torch.tensor(_prompt_ids(tokenizer, task), dtype=torch.long).repeat(batch, 1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    prompts = _row_prompts(tokenizer, task, n_frames, batch, gaze)
    if len({len(p) for p in prompts}) > 1:
        raise ValueError(f"gaze prompts of {sorted({len(p) for p in prompts})} tokens in one batch: generate "
                         "windows whose prompts have equal length together")
    ids = torch.tensor(prompts, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def decode_generated(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> list[str]:
    """Continuation ids (from GazeVLM.generate) -> text, cut at the first <|endofchunk|>/eos/pad."""
    stops = {tokenizer.convert_tokens_to_ids(EOC), tokenizer.eos_token_id, tokenizer.pad_token_id}
    out = []
    for row in ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        out.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return out
