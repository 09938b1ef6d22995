"""Grounding diagnostics on hand-made captions of the synthetic world's closed vocabulary."""

import itertools

import numpy as np
import pytest

from gazevlm import sample
from gazevlm.annotate.narrations import clean_narration
from gazevlm.evaluate import grounding as G
from gazevlm.params import AnnotateParams, SampleParams

W = "the camera wearer"
PICK_RED_CUP = f"{W} picks up the red cup"
PUT_RED_CUP_IN_BLUE_BOWL = f"{W} puts the red cup in the blue bowl"
TWO_EVENTS = f"{PICK_RED_CUP}, then {PUT_RED_CUP_IN_BLUE_BOWL}"


def score(pred, ref):
    return {k: float(v[0]) for k, v in G.score_grounding([pred], [ref]).items()}


# --- the vocabulary is the world's ------------------------------------------------------------------------


def test_vocabulary_is_the_synthetic_worlds():
    assert G.COLOURS == tuple(sample.COLOURS)
    assert G.KINDS == tuple(sample.KINDS)
    assert isinstance(G.COLOURS, tuple) and isinstance(G.KINDS, tuple)  # gazevlm.ceiling indexes them


def test_every_verb_of_the_world_has_a_clause():
    assert {verb for verb, _ in G._CLAUSES} == set(sample.TEMPLATES)


@pytest.mark.parametrize("verb", sorted(sample.TEMPLATES))
def test_every_template_with_every_object_parses_to_its_event(verb):
    names = [(c, k) for c in sample.COLOURS for k in sample.KINDS]
    template = sample.TEMPLATES[verb]
    dests = names if "{dest}" in template else [None]
    for obj, dest in itertools.product(names, dests):
        text = clean_narration(template.format(obj=" ".join(obj), dest=" ".join(dest) if dest else ""))
        events = G.parse_events(text)
        assert [(e.verb, e.obj, e.dest) for e in events] == [(verb, obj, dest)], text


def test_every_narration_of_a_tiny_world_parses_and_their_joined_windows_too():
    sp = SampleParams(seed=3, videos=3, seconds=12, objects=6)
    joiner = AnnotateParams().joiner
    for index in range(3):
        plan = sample.plan_video(sp, index)
        captions = [clean_narration(text) for _, text in plan.narrations]
        assert captions
        for caption in captions:
            assert len(G.parse_events(caption)) == 1, caption
        joined = joiner.join(captions[:4])  # a window's target: consecutive captions joined
        assert len(G.parse_events(joined)) == len(captions[:4])
        assert G.first_object(joined) == (
            plan.things[plan.actions[0].obj].colour,
            plan.things[plan.actions[0].obj].kind,
        )


# --- parsing --------------------------------------------------------------------------------------------------


def test_events_come_in_text_order_with_destinations():
    events = G.parse_events(TWO_EVENTS)
    assert [(e.verb, e.obj, e.dest) for e in events] == [
        ("pick", ("red", "cup"), None),
        ("put_in", ("red", "cup"), ("blue", "bowl")),
    ]
    assert events[0].start < events[1].start


def test_put_on_the_table_is_not_a_put_on_an_object():
    assert [e.verb for e in G.parse_events(f"{W} puts the red cup on the table")] == ["put_table"]
    events = G.parse_events(f"{W} puts the red cup on the white plate")
    assert [(e.verb, e.dest) for e in events] == [("put_on", ("white", "plate"))]


def test_parsing_ignores_case_and_the_raw_narration_tag():
    assert [e.verb for e in G.parse_events("#C C Opens the Green Bottle.")] == ["open"]


def test_empty_and_foreign_text_state_no_event():
    for text in (None, "", "   ", "the camera wearer looks around", "c cuts the green apple"):
        assert G.parse_events(text) == []
        assert G.triples(text) == set()


def test_first_object_falls_back_to_a_bare_colour_kind_pair():
    assert G.first_object("there is a yellow knife") == ("yellow", "knife")
    assert G.first_object(f"the purple spoon, then {W} picks up the red cup") == ("red", "cup")  # events first
    assert G.first_object("the green apple") is None
    assert G.first_object(None) is None


def test_triples_split_a_put_into_object_and_destination():
    assert G.triples(PUT_RED_CUP_IN_BLUE_BOWL) == {("put_in", "red", "cup"), ("put_in_dest", "blue", "bowl")}


# --- the metrics --------------------------------------------------------------------------------------------


def test_exact_prediction_scores_one_everywhere():
    assert score(TWO_EVENTS, TWO_EVENTS) == {"object_accuracy": 1.0, "action_f1": 1.0, "verb_accuracy": 1.0}


def test_object_needs_colour_and_kind():
    assert score(f"{W} picks up the blue cup", PICK_RED_CUP)["object_accuracy"] == 0.0
    assert score(f"{W} picks up the red knife", PICK_RED_CUP)["object_accuracy"] == 0.0
    assert score(f"{W} holds the red cup", PICK_RED_CUP)["object_accuracy"] == 1.0


def test_object_accuracy_looks_at_the_first_object_only():
    # the right object, but second: the reference's first object is the red cup
    assert score(f"{W} picks up the green spoon, then {PICK_RED_CUP}", PICK_RED_CUP)["object_accuracy"] == 0.0
    # a put's first object is what is put, not where
    assert score(f"{W} picks up the blue bowl", PUT_RED_CUP_IN_BLUE_BOWL)["object_accuracy"] == 0.0


def test_action_f1_by_hand():
    # prediction {(pick, red, cup)}, reference {(pick, red, cup), (put_in, red, cup), (put_in_dest, blue, bowl)}:
    # 1 hit, F1 = 2 * 1 / (1 + 3)
    assert score(PICK_RED_CUP, TWO_EVENTS)["action_f1"] == pytest.approx(0.5)
    # wrong destination: 2 of 3 predicted triples hit the 3 reference triples
    wrong_dest = f"{PICK_RED_CUP}, then {W} puts the red cup in the white bowl"
    assert score(wrong_dest, TWO_EVENTS)["action_f1"] == pytest.approx(2 * 2 / (3 + 3))
    # right object, wrong verb: no triple shared
    assert score(f"{W} holds the red cup", PICK_RED_CUP)["action_f1"] == 0.0


def test_action_f1_counts_each_event_once():
    """Sets, not multisets: repeating an event neither earns nor costs anything."""
    repeated = f"{PICK_RED_CUP}, then {PICK_RED_CUP}, then {PICK_RED_CUP}"
    assert score(repeated, PICK_RED_CUP)["action_f1"] == 1.0
    assert score(repeated, TWO_EVENTS)["action_f1"] == score(PICK_RED_CUP, TWO_EVENTS)["action_f1"]


def test_verb_accuracy_compares_first_verbs():
    assert score(f"{W} picks up the white bottle", PICK_RED_CUP)["verb_accuracy"] == 1.0
    assert score(f"{W} puts the red cup on the table", PUT_RED_CUP_IN_BLUE_BOWL)["verb_accuracy"] == 0.0
    assert score(PUT_RED_CUP_IN_BLUE_BOWL, TWO_EVENTS)["verb_accuracy"] == 0.0  # second verb, not first


@pytest.mark.parametrize("pred", ["", None, "the camera wearer looks around", "c c c c"])
def test_empty_or_unparseable_predictions_score_zero(pred):
    assert score(pred, TWO_EVENTS) == {"object_accuracy": 0.0, "action_f1": 0.0, "verb_accuracy": 0.0}


def test_a_reference_stating_no_event_gives_no_credit():
    for pred in ("", "c looks at the table", PICK_RED_CUP):
        assert score(pred, "c looks at the table") == {"object_accuracy": 0.0, "action_f1": 0.0, "verb_accuracy": 0.0}


def test_f1_of_sets():
    assert G.f1({1, 2}, {2, 3}) == pytest.approx(0.5)
    assert G.f1({1}, {1}) == 1.0
    assert G.f1(set(), {1}) == 0.0 and G.f1({1}, set()) == 0.0 and G.f1(set(), set()) == 0.0


def test_scores_are_per_pair_float_arrays_and_need_equal_lengths():
    out = G.score_grounding([PICK_RED_CUP, ""], [PICK_RED_CUP, PICK_RED_CUP])
    assert set(out) == set(G.GROUNDING_METRICS)
    for values in out.values():
        assert values.dtype == np.float64 and values.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        G.score_grounding(["a", "b"], ["a"])


# --- chance levels --------------------------------------------------------------------------------------------


def test_prior_baseline_answers_the_majority_train_target():
    blue_bottle = f"{W} opens the blue bottle"
    train = [PICK_RED_CUP] * 3 + [blue_bottle] * 2 + ["", None]  # empties are ignored
    test = [PICK_RED_CUP, TWO_EVENTS, blue_bottle, f"{W} picks up the green spoon"]
    chance = G.prior_baseline(train, test)
    # majority = "picks up the red cup": object right on tests 0, 1; verb right on 0, 1, 3;
    # action F1 1, 2/(1+3), 0, 0
    assert chance["majority_object_accuracy"] == pytest.approx(2 / 4)
    assert chance["majority_verb_accuracy"] == pytest.approx(3 / 4)
    assert chance["majority_action_f1"] == pytest.approx((1 + 0.5) / 4)
    assert chance["uniform_object_accuracy"] == pytest.approx(1 / 36)
    assert set(chance) == {
        "majority_object_accuracy",
        "majority_action_f1",
        "majority_verb_accuracy",
        "uniform_object_accuracy",
    }


def test_prior_baseline_needs_train_and_test_targets():
    assert G.prior_baseline([], [PICK_RED_CUP]) == {}
    assert G.prior_baseline(["", None], [PICK_RED_CUP]) == {}
    assert G.prior_baseline([PICK_RED_CUP], []) == {}
