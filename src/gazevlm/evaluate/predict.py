"""The only model-dependent part of evaluation: generation and teacher-forced argmax.

Contract with gazevlm.models (kept here, in one place, so a change there is a change here):
- `model.generate(pixels, input_ids, attention_mask, max_new_tokens=..., num_beams=...)` returns the
  continuation token ids (B, N); if it returns prompt + continuation (the Hugging Face habit for
  decoder-only models), the prompt is cut off here. No gaze argument exists.
- `model(pixels, input_ids, attention_mask, labels)` returns an object with `.logits` (B, L, V) aligned
  with input_ids, position t predicting token t + 1 (the Hugging Face convention).
- `gazevlm.models.text.encode_prompt(tokenizer, task, n_frames, batch)` -> {"input_ids",
  "attention_mask"}: the answer-free prompt; `encode_train(tokenizer, texts, task, n_frames)` ->
  {"input_ids", "attention_mask", "labels"} with labels -100 outside the answer.
- Checkpoints: `gazevlm.checkpoint.load_trained(layout.run_dir(run, task, seed), params)` -> (model, tokenizer).
- Test batches: `gazevlm.shards.make_loader((task, "test"), with_gaze=False, shuffle=False, ...)` yields
  {"pixels": (B, T, 3, H, W) in [0, 1], "text": [reference], "window_id": [id], "meta": [...]};
  `gazevlm.features.feature_batches` the same with "vision_features" (B, T, P, D) (the frozen encoder's
  output, computed once by the features stage) instead of pixels, passed on as `vision_features=`.
- The gaze-input baselines (runs with gaze_text / gaze_overlay, Tables 13 and 15) alone read the test
  gaze, through `gaze_input_batches`: overlaid pixels and/or `gaze_points` for the prompt, and no gaze
  array. Their prompts differ per window (`encode_prompt(..., gaze=points)`), so `predict` generates
  the windows of equal prompt length together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gazevlm import layout
from gazevlm.params import Params

IGNORE_INDEX = -100
# Special tokens that end an answer even when the tokenizer does not call them eos.
_EXTRA_STOP_TOKENS = ("<|endofchunk|>",)


@dataclass(frozen=True)
class TextCodec:
    encode_prompt: Callable[..., Mapping[str, torch.Tensor]]
    encode_train: Callable[..., Mapping[str, torch.Tensor]]


def default_codec() -> TextCodec:
    from gazevlm.models import text

    return TextCodec(encode_prompt=text.encode_prompt, encode_train=text.encode_train)


def test_batches(params: Params, task: str, root: Path = layout.SHARDS_DIR) -> Iterable[Mapping[str, Any]]:
    """The test split of `task` without gaze, in file order, batched as evaluate.batch_size."""
    from gazevlm import shards

    return shards.make_loader(
        (task, "test"), batch_size=params.evaluate.batch_size, with_gaze=False, shuffle=False, root=root
    )


def gaze_input_batches(
    params: Params, task: str, run: str, root: Path = layout.SHARDS_DIR
) -> Iterable[Mapping[str, Any]]:
    """The test split of `task` for a run that takes gaze as input (and for no other run): read with the
    gaze heatmap, turned into the run's inputs (gazevlm.gaze_inputs), every gaze array dropped."""
    from gazevlm import gaze_inputs, shards

    inputs = gaze_inputs.GazeInputs.of_run(params.run(run))
    if not inputs.any:
        raise ValueError(f"run {run!r} takes no gaze as input: its test batches are read without gaze (test_batches)")
    loader = shards.make_loader(
        (task, "test"),
        batch_size=params.evaluate.batch_size,
        with_gaze=True,
        with_heatmap=True,
        shuffle=False,
        root=root,
    )
    return (gaze_inputs.model_inputs(b, inputs, keep_loss_targets=False) for b in loader)


def stop_token_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _EXTRA_STOP_TOKENS if t in vocab)
    return {i for i in ids if i is not None}


def decode(tokenizer, rows: torch.Tensor | list[list[int]], stop_ids: set[int]) -> list[str]:
    """Decode each row up to (not including) its first stop token."""
    texts = []
    for row in rows:
        ids = row.tolist() if isinstance(row, torch.Tensor) else list(row)
        cut = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
        texts.append(tokenizer.decode(ids[:cut], skip_special_tokens=True).strip())
    return texts


def continuation(out: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The generated part of `out`, whether or not the model echoed the prompt."""
    n = input_ids.shape[1]
    if out.shape[0] == input_ids.shape[0] and out.shape[1] >= n and torch.equal(out[:, :n].to(input_ids), input_ids):
        return out[:, n:]
    return out


def _n_frames(pixels: torch.Tensor, where: str) -> int:
    if pixels.dim() != 5 or pixels.shape[2] != 3:
        raise ValueError(f"{where}: pixels must be (B, T, 3, H, W), got {tuple(pixels.shape)}")
    return int(pixels.shape[1])


def model_inputs(batch: Mapping[str, Any], where: str) -> tuple[int, int, Any, dict[str, torch.Tensor]]:
    """(batch size, frames per window, pixels or None, extra model kwargs) of a test batch: pixels, or
    the frozen encoder's features (B, T, P, D) as `vision_features` (gazevlm.features)."""
    if "vision_features" in batch:
        feats = batch["vision_features"]
        if feats.dim() != 4:
            raise ValueError(f"{where}: vision_features must be (B, T, P, D), got {tuple(feats.shape)}")
        return int(feats.shape[0]), int(feats.shape[1]), None, {"vision_features": feats}
    pixels = batch["pixels"]
    return int(pixels.shape[0]), _n_frames(pixels, where), pixels, {}


def teacher_forced_ids(logits: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Argmax next-token ids at the answer positions (labels != -100), the reference prefix given."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"teacher forcing: logits {tuple(logits.shape)} not aligned with labels {tuple(labels.shape)}")
    pred = logits.argmax(-1)
    rows = []
    for b in range(labels.shape[0]):
        pos = torch.nonzero(labels[b] != IGNORE_INDEX).flatten()
        pos = pos[pos > 0]
        rows.append(pred[b, pos - 1].tolist())
    return rows


def _generate_gaze_prompts(
    model,
    tokenizer,
    codec: TextCodec,
    pixels: torch.Tensor,
    gaze: list,
    task: str,
    stop: set[int],
    *,
    max_new_tokens: int,
    num_beams: int,
) -> list[str]:
    """Generate for windows whose prompts differ (their gaze text): the windows of one prompt length
    together, so no prompt is padded; texts come back in the batch's order."""
    n_frames = int(pixels.shape[1])
    rows = [codec.encode_prompt(tokenizer, task, n_frames, 1, gaze=[g])["input_ids"][0] for g in gaze]
    preds: list[str] = [""] * len(rows)
    for length in sorted({len(r) for r in rows}):
        idx = [i for i, r in enumerate(rows) if len(r) == length]
        ids = torch.stack([rows[i] for i in idx])
        out = model.generate(pixels[idx], ids, torch.ones_like(ids), max_new_tokens=max_new_tokens, num_beams=num_beams)
        for i, text in zip(idx, decode(tokenizer, continuation(out, ids), stop), strict=True):
            preds[i] = text
    return preds


@torch.no_grad()
def predict(
    model,
    tokenizer,
    batches: Iterable[Mapping[str, Any]],
    task: str,
    *,
    max_new_tokens: int,
    num_beams: int = 1,
    teacher_forcing: bool = True,
    codec: TextCodec | None = None,
) -> pd.DataFrame:
    """One row per test window: window_id, uid, reference, prediction (generated from the frames and an
    answer-free prompt) and teacher_forced_prediction (argmax under teacher forcing, the authors'
    protocol, reported beside the real score only)."""
    codec = codec or default_codec()
    stop = stop_token_ids(tokenizer)
    rows: list[dict] = []
    for k, batch in enumerate(batches):
        n_clips, n_frames, pixels, vision = model_inputs(batch, f"test batch {k} of task {task!r}")
        refs, ids = list(batch["text"]), list(batch["window_id"])
        if not (len(refs) == len(ids) == n_clips):
            raise ValueError(
                f"test batch {k} of task {task!r}: {n_clips} clips, {len(refs)} texts, {len(ids)} window ids"
            )
        gaze = batch.get("gaze_points")  # gaze_text runs only (gaze_input_batches, always pixels)
        if gaze is None:
            prompt = codec.encode_prompt(tokenizer, task, n_frames, n_clips)
            out = model.generate(
                pixels,
                prompt["input_ids"],
                prompt["attention_mask"],
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                **vision,
            )
            preds = decode(tokenizer, continuation(out, prompt["input_ids"]), stop)
        else:
            if pixels is None:
                raise ValueError(f"test batch {k} of task {task!r}: gaze prompts come with pixels, not features")
            preds = _generate_gaze_prompts(
                model, tokenizer, codec, pixels, gaze, task, stop, max_new_tokens=max_new_tokens, num_beams=num_beams
            )
        if teacher_forcing:
            enc = codec.encode_train(tokenizer, refs, task, n_frames, **({} if gaze is None else {"gaze": gaze}))
            logits = model(pixels, enc["input_ids"], enc["attention_mask"], enc["labels"], **vision).logits
            tf = decode(tokenizer, teacher_forced_ids(logits, enc["labels"]), stop)
        else:
            tf = [None] * len(refs)
        metas = batch.get("meta") or [{}] * len(refs)
        for wid, ref, pred, tfp, meta in zip(ids, refs, preds, tf, metas, strict=False):
            uid = meta.get("uid") if isinstance(meta, Mapping) else None
            rows.append(
                {"window_id": wid, "uid": uid, "reference": ref, "prediction": pred, "teacher_forced_prediction": tfp}
            )
    df = pd.DataFrame(rows, columns=["window_id", "uid", "reference", "prediction", "teacher_forced_prediction"])
    dup = df["window_id"].duplicated()
    if dup.any():
        raise ValueError(f"task {task!r}: the test loader yielded window {df.loc[dup, 'window_id'].iloc[0]!r} twice")
    return df
