"""Tokenizers: a small word-level one built locally from the captions (tiny preset), or the pretrained
LM's own tokenizer (paper preset); both get open_flamingo's special tokens."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .prompts import BOS, EOC, EOS, IMAGE, PAD, SPECIAL_TOKENS, TASK_PROMPTS, UNK


def build_word_tokenizer(texts: Iterable[str], max_vocab: int = 4096, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Lower-cased word-level tokenizer over `texts` (captions + task prompts); unknown words -> <unk>."""
    texts = list(texts) + list(TASK_PROMPTS.values())
    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(vocab_size=max_vocab, min_frequency=min_frequency,
                               special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, additional_special_tokens=[IMAGE, EOC])


def load_pretrained_tokenizer(name_or_dir: str | Path) -> PreTrainedTokenizerBase:
    """A pretrained LM's tokenizer (e.g. facebook/opt-1.3b) plus open_flamingo's special tokens."""
    tok = AutoTokenizer.from_pretrained(str(name_or_dir))
    missing = [t for t in (IMAGE, EOC) if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": PAD})
    return tok


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved by save_tokenizer; it must carry open_flamingo's special tokens."""
    directory = Path(directory)
    if not (directory / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{directory}: no saved tokenizer (tokenizer_config.json missing)")
    tok = AutoTokenizer.from_pretrained(str(directory))
    check_special_tokens(tok, where=str(directory))
    return tok


def check_special_tokens(tokenizer: PreTrainedTokenizerBase, where: str = "tokenizer") -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in (IMAGE, EOC) if t not in vocab]
    if missing or tokenizer.pad_token_id is None:
        raise ValueError(f"{where}: tokenizer lacks open_flamingo's special tokens {missing or [PAD]}")


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids the model needs: media and end-of-chunk tokens, pad/eos/bos for the language model config."""
    check_special_tokens(tokenizer)
    ids = {
        "media_token_id": tokenizer.convert_tokens_to_ids(IMAGE),
        "eoc_token_id": tokenizer.convert_tokens_to_ids(EOC),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id,
    }
    return ids


def vocabulary_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha1 of the token -> id map: a checkpoint must be used with the tokenizer it was trained with."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()


def build_tokenizer(params, texts: Iterable[str]) -> PreTrainedTokenizerBase:
    """The tokenizer a run of params.model.preset needs: the word-level one built from `texts` (the
    training captions) for offline presets, the language model's own for presets loaded by name
    (from params.model.weights_dir when set, else the hub)."""
    from .presets import get_preset, pretrained_source

    preset = get_preset(params.model.preset, params.model.backbone)
    if "hub" not in preset.lm:
        return build_word_tokenizer(texts)
    return load_pretrained_tokenizer(pretrained_source(preset, "lm", params.model.weights_dir))
