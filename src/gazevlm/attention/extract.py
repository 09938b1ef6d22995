"""The only model-dependent code of the attention stage: attention maps for batches of test windows.

The model contract (gazevlm.models): `model(pixels (B, T, 3, H, W), input_ids, attention_mask,
return_perceiver_attention=True)` returns an object with
  .attention             (B, T, P) the gaze block's last-layer attention, or None without the block
  .perceiver_attention   (B, T, P) the Perceiver's latent-to-patch attention (mean over latents and
                         heads), or None where the backbone has no Perceiver
Gaze never enters the forward pass. The prompt tokens do not change which patches the block or the
Perceiver attend to (both attend from visual queries), but the forward needs them: they come from a
`prompt_fn(batch)` (the task's answer-free prompt for trained models) or from the batch itself
(`input_ids`, `attention_mask`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from gazevlm import layout
from gazevlm.params import Params

PromptFn = Callable[[dict], tuple[torch.Tensor, torch.Tensor]]
# model output attribute -> source name used in every output of the stage
OUTPUT_SOURCES = (("attention", "block"), ("perceiver_attention", "perceiver"))


def batch_prompt(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    if "input_ids" not in batch:
        raise KeyError(
            "attention extraction: the batch has no `input_ids`; give the stage a prompt_fn(batch) "
            "that tokenizes the answer-free prompt"
        )
    ids = batch["input_ids"]
    return ids, batch.get("attention_mask", torch.ones_like(ids))


def _to_maps(value: Any, name: str, batch_size: int, n_frames: int) -> np.ndarray:
    arr = value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float32)
    if arr.ndim != 3 or arr.shape[:2] != (batch_size, n_frames):
        raise ValueError(f"model output `{name}` has shape {arr.shape}, expected (B={batch_size}, T={n_frames}, P)")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"model output `{name}` has negative or non-finite attention weights")
    sums = arr.sum(-1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError(f"model output `{name}` has a frame whose attention sums to 0")
    return (arr / sums).astype(np.float32)  # mean-of-softmax rows sum to 1 up to rounding; make it exact


def clips_and_frames(batch: dict) -> tuple[int, int]:
    """(B, T) of a batch of pixels (B, T, 3, H, W) or of vision features (B, T, P, D) (gazevlm.features)."""
    return tuple(batch["vision_features" if "vision_features" in batch else "pixels"].shape[:2])


def attention_maps(model: torch.nn.Module, batch: dict, prompt_fn: PromptFn | None = None) -> dict[str, np.ndarray]:
    """source -> (B, T, P) attention distributions for one batch; sources the model lacks are left out.
    The batch carries pixels, or the frozen encoder's features (`vision_features`, passed on as such)."""
    b, t = clips_and_frames(batch)
    input_ids, attention_mask = (prompt_fn or batch_prompt)(batch)
    vision = {"vision_features": batch["vision_features"]} if "vision_features" in batch else {}
    with torch.no_grad():
        out = model(batch.get("pixels"), input_ids, attention_mask, return_perceiver_attention=True, **vision)
    maps = {}
    for attr, source in OUTPUT_SOURCES:
        value = getattr(out, attr, None)
        if value is not None:
            maps[source] = _to_maps(value, attr, b, t)
    return maps


def collect_attention(
    model: torch.nn.Module, batches: Iterable[dict], prompt_fn: PromptFn | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """(window ids in loader order, source -> (N, T, P)) over all batches."""
    was_training = model.training
    model.eval()
    ids: list[str] = []
    chunks: dict[str, list[np.ndarray]] = defaultdict(list)
    sources: set[str] | None = None
    try:
        for batch in batches:
            maps = attention_maps(model, batch, prompt_fn)
            if sources is None:
                sources = set(maps)
            elif set(maps) != sources:
                raise ValueError(
                    f"the model returned attention sources {sorted(maps)} for one batch and "
                    f"{sorted(sources)} for another"
                )
            for source, m in maps.items():
                chunks[source].append(m)
            ids.extend(str(w) for w in batch["window_id"])
    finally:
        model.train(was_training)
    return ids, {source: np.concatenate(c) for source, c in chunks.items()}


# --- wiring to the rest of the pipeline --------------------------------------------------------------


def prompt_for(tokenizer: Any, task: str) -> PromptFn:
    """The task's answer-free prompt (the one generation starts from), one row per window."""
    from gazevlm.models.text import encode_prompt

    def fn(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = clips_and_frames(batch)
        enc = encode_prompt(tokenizer, task, t, b)
        return enc["input_ids"], enc["attention_mask"]

    return fn


def analysed_seed(params: Params) -> int:
    """The seed the attention stage and the explorer look at: attention.seed, else the first trained."""
    seed = params.attention.seed
    if seed is None:
        return int(params.train.seeds[0])
    if seed not in params.train.seeds:
        raise ValueError(f"params.attention.seed = {seed} is not one of train.seeds {list(params.train.seeds)}")
    return int(seed)


def load_run_model(params: Params, run: str, task: str) -> tuple[torch.nn.Module, PromptFn]:
    """(trained model in eval mode, its prompt function) for models/<run>/seed<N>/<task> (analysed_seed)."""
    from gazevlm import checkpoint  # imported late: model code is heavy and the tests use stand-ins

    model, tokenizer = checkpoint.load_trained(layout.run_dir(run, task, analysed_seed(params)), params=params)
    return model, prompt_for(tokenizer, task)


def test_batches(params: Params, task: str) -> Iterable[dict]:
    """The test split in file order; the model gets RGB only (the gaze is read from the shards apart)."""
    from gazevlm import shards

    return shards.make_loader((task, "test"), batch_size=params.evaluate.batch_size, with_gaze=False, shuffle=False)
