"""The representation probe: what a trained VLM's block and resampler carry about the named object."""

from __future__ import annotations

import json
import shutil
from contextlib import chdir

import pytest
import torch

from gazevlm import ceiling, layout, representation_probe
from model_fixtures import batch, build
from train_fixtures import TASK, write_shards
from usage_fixtures import SEED, project, tiny_world  # noqa: F401  (fixtures)


@pytest.mark.parametrize("block_output", ["pooled", "pooled_lm", "attended"])
def test_the_resampler_representation_is_what_the_lm_cross_attention_reads(block_output):
    model = build("gaze", block_output=block_output)
    pixels, enc = batch(model, b=2, t=3)
    seen = {}
    layer = model.backbone.lang_encoder.gated_cross_attn_layers[0]
    layer.register_forward_hook(lambda mod, args, out: seen.update(media=args[1]))
    model(pixels, enc["input_ids"], enc["attention_mask"])
    reps = representation_probe.representations(model, model.encode_vision(pixels))
    # (close, not equal: under no_grad an eval-mode transformer layer takes its fused path)
    torch.testing.assert_close(reps["resampler"], seen["media"].flatten(1).float())
    out = model.backbone.gaze_block(model.encode_vision(pixels))
    token = out.tokens if out.tokens is not None else out.features[:, :, 64]
    torch.testing.assert_close(reps["block"], token[:, -1])  # the last observed frame's token
    assert torch.equal(reps["resampler+block"], torch.cat([reps["resampler"], reps["block"]], 1))


@pytest.mark.parametrize("backbone", ["openflamingo", "openflamingo_noperceiver"])
def test_reweighted_patches_make_no_block_token(backbone):
    model = build("gaze", backbone=backbone, block_output="reweighted")
    pixels, _ = batch(model, b=2, t=3)
    reps = representation_probe.representations(model, model.encode_vision(pixels))
    assert set(reps) == {"resampler"} and reps["resampler"].shape[0] == 2


def test_a_run_without_block_has_only_the_resampler_and_projectors_are_refused():
    model = build("base")
    pixels, _ = batch(model, b=2, t=3)
    assert set(representation_probe.representations(model, model.encode_vision(pixels))) == {"resampler"}
    assert representation_probe.block_overlap(model, None) != representation_probe.block_overlap(model, None)  # nan
    llava = build("gaze", backbone="llava_next")
    with pytest.raises(ValueError, match="'llava_next' has no resampler"):
        representation_probe.representations(llava, torch.zeros(1, 3, 64, llava.config["vision_dim"]))


def test_the_linear_probe_learns_a_separable_label_and_scores_only_windows_naming_an_object():
    g = torch.Generator().manual_seed(0)
    y_train = torch.arange(60) % 3
    y_test = torch.tensor([0, 1, 2, -1, 2, 1])
    x_train = torch.nn.functional.one_hot(y_train, 8).float() + 0.05 * torch.randn(60, 8, generator=g)
    x_test = torch.nn.functional.one_hot(y_test.clamp(min=0), 8).float()
    x_train[5], y_train[5] = 100.0, -1  # a window that names no object must not train the probe
    hits = representation_probe.linear_probe(x_train, y_train, x_test, y_test, steps=200)
    assert hits.tolist() == [1, 1, 1, 1, 1]  # the -1 window is not scored
    with pytest.raises(ValueError, match="no train window names an object"):
        representation_probe.linear_probe(x_train, torch.full((60,), -1), x_test, y_test)


def test_gains_pair_the_same_windows_by_video_and_the_report_repeats():
    def rec(run, seed, hits):
        return {
            "task": "future",
            "run": run,
            "seed": seed,
            "representation": "resampler",
            "object_accuracy": sum(hits) / len(hits),
            "block_top3_overlap": float("nan"),
            "hits": hits,
        }

    uids = ["a", "a", "b", "b"]
    records = [
        rec("base", 0, [0, 0, 1, 0]),
        rec("base", 1, [0, 1, 1, 0]),
        rec("gaze", 0, [1, 0, 1, 1]),
        rec("gaze", 1, [1, 1, 1, 1]),
    ]
    summary = representation_probe.summarise(records, uids)
    (gain,) = summary["gains"]
    # seed means per window: gaze 1, .5, 1, 1; base 0, .5, 1, 0 -> mean difference 0.5
    assert gain["run"] == "gaze" and gain["vs"] == "base" and gain["diff"] == pytest.approx(0.5)
    assert gain["n_videos"] == 2 and gain["seeds"] == [0, 1]
    md = representation_probe.to_markdown(summary, "future", "val")
    assert "| gaze vs base | resampler | +0.500" in md and "| base | resampler | 2 | 0.375 [0.250, 0.500] | - |" in md
    assert representation_probe.to_markdown(representation_probe.summarise(records, uids), "future", "val") == md


@pytest.mark.slow
def test_the_command_probes_trained_models_on_the_held_out_split(project, tmp_path, capsys):  # noqa: F811
    root = tmp_path / "p"
    shutil.copytree(project.root / layout.MODELS_DIR, root / layout.MODELS_DIR)
    shutil.copy(project.root / "params.yaml", root / "params.yaml")
    write_shards(root / layout.SHARDS_DIR, n_train=12, n_val=4)
    argv = ["--task", TASK, "--runs", "base", "gaze", "--seeds", str(SEED), "--out", "reports/probe"]
    with chdir(root):
        assert representation_probe.main(argv) == 0
        record = json.loads((root / "reports/probe.json").read_text())
        md = (root / "reports/probe.md").read_text()
        assert representation_probe.main(argv) == 0 and (root / "reports/probe.md").read_text() == md
    assert {(r["run"], r["representation"]) for r in record["records"]} == {
        ("base", "resampler"),
        ("gaze", "block"),
        ("gaze", "resampler"),
        ("gaze", "resampler+block"),
    }
    val = ceiling.load_split(TASK, "val", root / layout.SHARDS_DIR)
    assert all(len(r["hits"]) == int((val.label >= 0).sum()) for r in record["records"])
    assert "gaze vs base" in md and record["held_out"] == "val"
    # the fixture's last frames are untracked: no overlap to measure there (nan, written as null)
    assert {r["block_top3_overlap"] for r in record["records"] if r["run"] == "gaze"} == {None}
    # a run that was not trained is named, not skipped
    with chdir(root), pytest.raises(Exception, match="lambda0"):
        representation_probe.measure(TASK, ["base", "lambda0"], [SEED])
