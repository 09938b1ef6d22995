"""The world-ceiling diagnostic: labels from the closed vocabulary, held-out scoring, gaze only in the loss."""

import inspect

import torch

from gazevlm import ceiling, layout
from gazevlm.evaluate.grounding import COLOURS, KINDS
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
    assert list(inspect.signature(ceiling.CeilingNet.forward).parameters) == ["self", "pixels"]


def test_the_command_line_scores_val_by_default(tmp_path, capsys):
    write_world(tmp_path)
    out = tmp_path / "ceiling.json"
    assert (
        ceiling.main(
            [
                "--task",
                "activity",
                "--steps",
                "2",
                "--seeds",
                "0",
                "--lambdas",
                "0",
                "--shards",
                str(tmp_path / layout.SHARDS_DIR),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "held-out" in capsys.readouterr().out and out.is_file()
