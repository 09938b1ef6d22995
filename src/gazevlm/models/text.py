"""OpenFlamingo-style text around a window of frames.

A window's frames are ONE media item (F = n_frames frames through the Perceiver's frame embeddings), so
the text carries one <image> token, then the task's fixed prompt; in training the target and
<|endofchunk|> follow. Labels are -100 on the prompt and on padding: the loss is on the target only.
Generation starts from the same answer-free prompt; all prompts of a task have the same length.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from .tokenizer import EOC, IMAGE

TASK_PROMPTS = {"future": "what happens next:", "activity": "what is happening:"}
IGNORE_INDEX = -100


def prompt_text(task: str) -> str:
    try:
        return f"{IMAGE}{TASK_PROMPTS[task]}"
    except KeyError:
        raise KeyError(f"unknown task {task!r} (have {sorted(TASK_PROMPTS)})") from None


def _check_frames(n_frames: int) -> None:
    # n_frames does not change the text (one <image> per window); it is checked so a caller mixing up
    # frames and batch size fails here rather than in the model.
    if not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive int, got {n_frames!r}")


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, task: str) -> list[int]:
    return tokenizer(prompt_text(task), add_special_tokens=True)["input_ids"]


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

    def __call__(self, texts: Sequence[str], n_frames: int) -> dict[str, torch.Tensor]:
        """Prompt + target + <|endofchunk|>, right-padded: input_ids, attention_mask, labels (B, L) long."""
        _check_frames(n_frames)
        if isinstance(texts, str):
            raise TypeError("encode_train: texts must be a sequence of strings, got one string")
        rows, label_rows = [], []
        for text in texts:
            target = self.target_ids(text) + [self.eoc]
            rows.append(self.prompt + target)
            label_rows.append([IGNORE_INDEX] * len(self.prompt) + target)
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
                 max_target_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Prompt + target + <|endofchunk|>, right-padded: input_ids, attention_mask, labels (B, L) long."""
    _check_frames(n_frames)
    if isinstance(texts, str):
        raise TypeError("encode_train: texts must be a sequence of strings, got one string")
    return TrainEncoder(tokenizer, task, max_target_tokens)(texts, n_frames)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, task: str, n_frames: int, batch: int) -> dict[str, torch.Tensor]:
    """The answer-free prompt for generation, repeated `batch` times: input_ids, attention_mask (B, L)."""
    _check_frames(n_frames)
    ids = torch.tensor(_prompt_ids(tokenizer, task), dtype=torch.long).repeat(batch, 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def decode_generated(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> list[str]:
    """Continuation ids (from GazeVLM.generate) -> text, cut at the first <|endofchunk|>/eos/pad."""
    stops = {tokenizer.convert_tokens_to_ids(EOC), tokenizer.eos_token_id, tokenizer.pad_token_id}
    out = []
    for row in ids.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        out.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return out
