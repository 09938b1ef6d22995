"""Stand-ins for the evaluation tests: a tiny word-level tokenizer, a model with the GazeVLM interface
whose answers are known, its prompt codec and test batches shaped like gazevlm.shards' loader."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

ANSWERS = [
    "c picks up the red cup",
    "c puts the knife on the plate",
    "c opens the blue bottle",
    "c cuts the green apple",
    "c moves the bowl to the left",
    "c pours water into the cup",
]
WRONG = "c looks at the table"
SPECIALS = ["<pad>", "<unk>", "</s>", "<image>", "<|endofchunk|>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for s in ANSWERS + [WRONG, "predict the next action :", "describe :"] for w in s.split()})
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<image>", "<|endofchunk|>"],
    )
    return fast


def encode_prompt(tokenizer, task: str, n_frames: int, batch_size: int) -> dict:
    text = "<image> " * n_frames + ("predict the next action :" if task == "future" else "describe :")
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]] * batch_size)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def encode_train(tokenizer, texts: list[str], task: str, n_frames: int) -> dict:
    prompt = encode_prompt(tokenizer, task, n_frames, 1)["input_ids"][0].tolist()
    rows = [prompt + tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, len(prompt) : len(r)] = torch.tensor(r[len(prompt) :])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_index(pixels: torch.Tensor) -> torch.Tensor:
    """Which answer a clip shows: encoded in the first pixel of the last frame (k / 10)."""
    return torch.round(pixels[:, -1, 0, 0, 0] * 10).long()


class StandInModel(torch.nn.Module):
    """GazeVLM's interface with known behaviour: answers ANSWERS[k] for clip k (or WRONG for the clips in
    `wrong`), optionally echoing the prompt like Hugging Face's generate; perfect teacher forcing."""

    def __init__(self, tokenizer, wrong: set[int] = frozenset(), echo: bool = False, trailing: str = " c c"):
        super().__init__()
        self.tok, self.wrong, self.echo, self.trailing = tokenizer, set(wrong), echo, trailing
        self.calls: list[dict] = []

    def _answer_ids(self, k: int) -> list[int]:
        text = WRONG if k in self.wrong else ANSWERS[k]
        # junk after eos must never reach the prediction
        return (
            self.tok(text, add_special_tokens=False)["input_ids"]
            + [self.tok.eos_token_id]
            + self.tok(self.trailing.strip(), add_special_tokens=False)["input_ids"]
        )

    def generate(self, pixels, input_ids, attention_mask, max_new_tokens, num_beams=1):
        self.calls.append({"num_beams": num_beams, "max_new_tokens": max_new_tokens, "batch": pixels.shape[0]})
        rows = [self._answer_ids(int(k))[:max_new_tokens] for k in answer_index(pixels)]
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), self.tok.pad_token_id)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return torch.cat([input_ids, out], dim=1) if self.echo else out

    def forward(self, pixels, input_ids, attention_mask, labels):
        vocab = len(self.tok)
        logits = torch.zeros(*input_ids.shape, vocab)
        nxt = torch.roll(input_ids, shifts=-1, dims=1)  # perfect next-token prediction of the given text
        logits.scatter_(2, nxt.unsqueeze(-1), 5.0)
        return SimpleNamespace(logits=logits)


def make_batches(n_windows: int, task: str = "future", batch_size: int = 4, n_frames: int = 3, size: int = 8):
    """Loader-shaped batches: window i shows answer i % len(ANSWERS)."""
    batches = []
    for start in range(0, n_windows, batch_size):
        idx = list(range(start, min(n_windows, start + batch_size)))
        pixels = torch.rand(len(idx), n_frames, 3, size, size) * 0.05 + 0.5
        for j, i in enumerate(idx):
            pixels[j, -1, 0, 0, 0] = (i % len(ANSWERS)) / 10
        batches.append(
            {
                "pixels": pixels,
                "text": [ANSWERS[i % len(ANSWERS)] for i in idx],
                "window_id": [f"{task}_vid{i // 3}_{i:07d}" for i in idx],
                "meta": [{"uid": f"vid{i // 3}"} for i in idx],
            }
        )
    return batches
