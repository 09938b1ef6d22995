"""The world-ceiling diagnostic: labels from the closed vocabulary, held-out scoring, gaze only in the loss."""

import inspect
import json

import pytest
import torch

from gazevlm import ceiling, layout, pretrain
from gazevlm import params as gparams
from gazevlm.evaluate.grounding import COLOURS, KINDS
from gazevlm.features import build_encoder_model
from test_pretrain import write_world


def test_label_is_the_first_object_of_the_reference():
    assert ceiling.label_of(
        "the camera wearer picks up the red cup, then puts the red cup in the blue bowl"
    ) == COLOURS.index("red") * len(KINDS) + KINDS.index("cup")
    assert ceiling.label_of("the camera wearer looks around") == -1
    assert ceiling.N_CLASSES == 36


def test_trains_and_scores_the_held_out_split_without_gaze_as_input(tmp_path):
    write_world(tmp_path, val_caption="the camera wearer picks up the blue bowl")
    root = tmp_path / layout.SHARDS_DIR
    train, val = ceiling.load_split("activity", "train", root), ceiling.load_split("activity", "val", root)
    assert train.frames.dtype == torch.uint8 and (val.label == ceiling.label_of("picks up the blue bowl")).all()
    for lam in (0.0, 10.0):
        r = ceiling.train_one(train, val, task="activity", lam=lam, seed=0, steps=3, batch_size=4)
        assert 0.0 <= r.object_accuracy <= 1.0 and r.test_windows == 4 and r.test_videos == 1
        assert r.train_windows == 16 and r.lam == lam
    assert list(inspect.signature(ceiling.CeilingNet.forward).parameters) == ["self", "frames"]


def test_the_command_line_scores_val_by_default_and_writes_the_report(tmp_path, capsys):
    write_world(tmp_path)
    out = tmp_path / "ceiling"
    argv = [
        "--tasks",
        "activity",
        "--steps",
        "2",
        "--seeds",
        "0",
        "1",
        "--lambdas",
        "0",
        "10",
        "--shards",
        str(tmp_path / layout.SHARDS_DIR),
        "--out",
        str(out),
    ]
    assert ceiling.main(argv) == 0
    assert "held-out" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["held_out"] == "val" and len(record["results"]) == 4
    # train: red cups and blue bowls alike (mode: the first, red cup); val names the green bottle only
    assert all(r["chance"] == 0.0 and r["best_constant"] == 1.0 for r in record["results"])
    assert all(len(r["hits"]) == 4 for r in record["results"])  # the 4 val windows, each scored
    assert [g["lam"] for g in record["gains"]] == [10.0] and record["gains"][0]["n_videos"] == 1
    md = out.with_suffix(".md").read_text()
    assert "| activity | scratch | block | 2 | 10 | 2 |" in md and "chance" in md and " s)" not in md
    # the same runs give the same report bytes (no timings in it)
    assert ceiling.main(argv) == 0 and out.with_suffix(".md").read_text() == md


def _result(lam: float, seed: int, hits: list[int]) -> ceiling.CeilingResult:
    acc = sum(hits) / len(hits)
    return ceiling.CeilingResult(
        "future",
        "pretrained",
        lam,
        seed,
        500,
        100,
        len(hits),
        4,
        acc,
        0.3,
        1.0,
        {"pick": {"windows": len(hits), "object_accuracy": acc}},
        hits,
        0.125,
        0.25,
    )


def test_gains_pair_the_same_windows_and_resample_videos():
    uids = ["a", "a", "b", "b", "c", "c", "d", "d"]
    base = [_result(0.0, s, [0, 0, 0, 1, 0, 0, 1, 0]) for s in (0, 1)]
    gaze = [_result(1.5, 0, [1, 0, 1, 1, 1, 0, 1, 1]), _result(1.5, 1, [1, 1, 1, 1, 0, 0, 1, 1])]
    summary = ceiling.summarise(base + gaze, {"future": uids})
    (gain,) = summary["gains"]
    # seed means per window: gaze (1, .5, 1, 1, .5, 0, 1, 1) vs base (0, 0, 0, 1, 0, 0, 1, 0)
    assert gain["diff"] == pytest.approx((6.0 - 2.0) / 8) and gain["n_videos"] == 4 and gain["seeds"] == [0, 1]
    assert gain["mean_a"] == pytest.approx(6.0 / 8) and gain["mean_b"] == pytest.approx(2.0 / 8)
    runs = {r["lam"]: r for r in summary["runs"]}
    assert runs[0.0]["object_accuracy"] == pytest.approx(0.25) and runs[1.5]["min"] == pytest.approx(0.75)


def test_the_pretrained_front_end_reads_the_runs_frozen_encoder(tmp_path):
    write_world(tmp_path)
    pretrain.run(gparams.with_overrides(gparams.Params(), pretrain={"steps": 4, "batch_size": 8}), root=tmp_path)
    weights = tmp_path / pretrain.ENCODER_DIR / pretrain.WEIGHTS_FILE
    params = gparams.with_overrides(gparams.Params(), model={"vision_weights": str(weights)})
    root = tmp_path / layout.SHARDS_DIR
    train = ceiling.encode(ceiling.load_split("activity", "train", root), params)
    val = ceiling.encode(ceiling.load_split("activity", "val", root), params)
    n, t = train.frames.shape[:2]
    assert train.features.shape[:3] == (n, t, train.target.shape[-1])
    # the tokens every tiny run reads for these frames (the model's own encode_vision, pretrained weights)
    expected = build_encoder_model(params).encode_vision(train.frames[:2].float() / 255.0)
    assert torch.equal(train.features[:2], expected.detach())
    r = ceiling.train_one(train, val, task="activity", lam=10.0, seed=0, steps=3, batch_size=4)
    assert r.encoder == "pretrained" and r.test_windows == 4 and 0.0 <= r.object_accuracy <= 1.0


def test_the_pretrained_front_end_without_an_encoder_names_the_missing_file(tmp_path):
    write_world(tmp_path)
    split = ceiling.load_split("activity", "val", tmp_path / layout.SHARDS_DIR)
    missing = tmp_path / "models" / "encoder" / "vision.safetensors"
    params = gparams.with_overrides(gparams.Params(), model={"vision_weights": str(missing)})
    with pytest.raises(FileNotFoundError, match="vision.safetensors: no pretrained encoder"):
        ceiling.encode(split, params)


def test_chance_is_the_most_frequent_train_object_on_the_held_out_windows():
    def split(labels):
        n = len(labels)
        return ceiling.Split(
            torch.zeros(n, 1, 3, 2, 2, dtype=torch.uint8),
            torch.zeros(n, 1, 4),
            torch.ones(n, 1, dtype=torch.bool),
            torch.tensor(labels),
            ["v"] * n,
        )

    chance, best = ceiling.chance_level(split([3, 3, 5, -1, -1, -1]), split([3, 5, 5, -1]))
    assert chance == pytest.approx(1 / 3) and best == pytest.approx(2 / 3)


def test_a_free_path_around_the_block_is_reported_apart(tmp_path):
    write_world(tmp_path)
    root = tmp_path / layout.SHARDS_DIR
    train, val = ceiling.load_split("activity", "train", root), ceiling.load_split("activity", "val", root)
    net = ceiling.CeilingNet(128, 16, train.frames.shape[1], free_path=True)
    logits, attention = net(train.inputs(slice(0, 2)))
    assert logits.shape == (2, ceiling.N_CLASSES) and attention.shape == (2, train.frames.shape[1], 64)
    results = [
        ceiling.train_one(train, val, task="activity", lam=lam, seed=0, steps=2, batch_size=4, free_path=free)
        for free in (False, True)
        for lam in (0.0, 1.5)
    ]
    assert [r.reads for r in results] == ["block", "block", "block+patches", "block+patches"]
    gains = ceiling.summarise(results, {"activity": [u for u in val.uid]})["gains"]
    assert [(g["reads"], g["lam"]) for g in gains] == [("block", 1.5), ("block+patches", 1.5)]


def test_without_a_patch_layer_the_block_reads_the_encoder_tokens_through_the_linear_map_only(tmp_path):
    write_world(tmp_path)
    root = tmp_path / layout.SHARDS_DIR
    train, val = ceiling.load_split("activity", "train", root), ceiling.load_split("activity", "val", root)
    net = ceiling.CeilingNet(128, 16, train.frames.shape[1], in_features=32, patch_layer=False)
    assert isinstance(net.spatial, torch.nn.Identity)
    tokens = torch.randn(2, train.frames.shape[1], 64, 32)
    seen = {}
    net.block.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    net(tokens)
    torch.testing.assert_close(seen["x"], net.norm(net.embed(tokens.flatten(0, 1))).view_as(seen["x"]))
    r = ceiling.train_one(train, val, task="activity", lam=1.5, seed=0, steps=2, batch_size=4, patch_layer=False)
    assert r.reads == "block-no-patch-layer"
    results, _ = ceiling.measure(
        "activity", lambdas=(0.0,), seeds=(0,), steps=(2,), reads=("block-no-patch-layer",), root=root
    )
    assert [x.reads for x in results] == ["block-no-patch-layer"]
