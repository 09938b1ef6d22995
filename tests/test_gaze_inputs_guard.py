"""Gaze reaches a model only in the runs defined to take it (gaze_text, gaze_overlay), at training and test
time; every other run's inputs are byte-identical whatever the gaze data say. Plus the gaze-input runs
through the real readers, the training loop, generation and the evaluate stage."""

from __future__ import annotations

import json
from contextlib import chdir
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from evaluate_fixtures import StandInModel, encode_prompt, encode_train, make_batches, make_tokenizer
from gazevlm import gaze_inputs as G
from gazevlm import layout, params
from gazevlm.evaluate import predict as P
from gazevlm.evaluate import stage as evaluate_stage
from gazevlm.models import text
from gazevlm.models.tokenizer import build_word_tokenizer
from gazevlm.train.data import MemorySource, ShardSource, batch_pixels, prompt_inputs

TASK = "future"
FRAMES = 3
RUNS = {
    "base": {"block": False, "lambda": 0.0},
    "lambda0": {"block": True, "lambda": 0.0},
    "gaze": {"block": True, "lambda": 100.0},
    "gaze_text": {"gaze_text": True},
    "gaze_overlay": {"gaze_overlay": True},
}
TAKE_GAZE = {"gaze_text", "gaze_overlay"}
WORDS = ["picks up the red cup", "opens the blue bottle", "cuts the green apple", "puts the knife down"]


def five_runs(**sections) -> params.Params:
    return params.with_overrides(params.Params(), runs=RUNS, **sections)


def write_split_shards(root: Path, *, gaze_seed: int, size: int = 16, grid: int = 2, counts=None) -> Path:
    """train/val/test shards of TASK: the same frames and texts for every gaze_seed; the gaze entries
    (heatmap, patch targets, validity) drawn from gaze_seed alone."""
    from gazevlm.shards import ShardSetWriter, encode_sample

    counts = counts or {"train": 8, "val": 4, "test": 6}
    for split, n in counts.items():
        rng = np.random.default_rng(len(split))  # frames: the split's, whatever the gaze
        gaze = np.random.default_rng(gaze_seed * 100 + len(split))
        writer = ShardSetWriter(layout.shard_pattern(TASK, split, root), 4)
        for i in range(n):
            wid = f"{TASK}_{split}v{i // 2}_{i:07d}"
            frames = (rng.random((FRAMES, size, size, 3)) * 255).astype(np.uint8)
            jpegs = [cv2.imencode(".png", f[:, :, ::-1])[1].tobytes() for f in frames]  # lossless
            heat = gaze.random((FRAMES, 8, 8)).astype(np.float32) ** 6
            heat /= heat.sum(axis=(1, 2), keepdims=True)
            target = gaze.random((FRAMES, grid, grid)).astype(np.float32)
            target /= target.sum(axis=(1, 2), keepdims=True)
            valid = gaze.random(FRAMES) < 0.7
            meta = {
                "window_id": wid,
                "task": TASK,
                "split": split,
                "uid": f"{split}v{i // 2}",
                "frames": list(range(FRAMES)),
                "target_text": WORDS[i % len(WORDS)],
            }
            writer.write(encode_sample(wid, jpegs, target, valid, heat.astype(np.float16), meta))
        writer.close()
    return root


@pytest.fixture(scope="module")
def gaze_worlds(tmp_path_factory) -> dict[str, Path]:
    """Two shard sets that differ in their gaze only."""
    return {
        name: write_split_shards(tmp_path_factory.mktemp(name), gaze_seed=seed) for name, seed in (("a", 1), ("b", 2))
    }


def _train_inputs(root: Path, run: params.RunParams, source: str) -> tuple[list[str], list]:
    """(the tokenizer's texts, per train batch: window ids, uint8 frames, prompt ids) as the loop sees them."""
    inputs = G.GazeInputs.of_run(run)
    data = MemorySource(TASK, root, inputs=inputs) if source == "memory" else ShardSource(TASK, root, inputs=inputs)
    texts = data.train_texts()
    tok = build_word_tokenizer(texts)
    out = []
    for b in data.batches("train", epoch=0, rank=0, world_size=1, batch_size=4, shuffle=True, seed=0):
        ids = text.encode_train(tok, b["text"], TASK, FRAMES, **prompt_inputs(b))["input_ids"]
        out.append((b["window_id"], G.to_uint8(batch_pixels(b)), ids, "gaze_points" in b))
    return texts, out


@pytest.mark.parametrize("source", ["memory", "stream"])
def test_only_gaze_input_runs_train_on_gaze(gaze_worlds, source):
    p = five_runs()
    reference = _train_inputs(gaze_worlds["a"], p.run("base"), source)
    for name in RUNS:
        texts_a, a = _train_inputs(gaze_worlds["a"], p.run(name), source)
        texts_b, b = _train_inputs(gaze_worlds["b"], p.run(name), source)
        assert [x[0] for x in a] == [x[0] for x in b]  # the same windows in the same order
        same_pixels = all(torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        same_prompts = all(torch.equal(x[2], y[2]) for x, y in zip(a, b, strict=True))
        if name not in TAKE_GAZE:
            # byte-identical model inputs whatever the gaze, and those of the plain run
            assert same_pixels and same_prompts and not any(x[3] for x in a), name
            assert texts_a == reference[0] and all(
                torch.equal(x[1], r[1]) and torch.equal(x[2], r[2]) for x, r in zip(a, reference[1], strict=True)
            )
        elif name == "gaze_text":
            assert same_pixels and not same_prompts and all(x[3] for x in a)
            assert len(texts_a) > len(reference[0])  # its tokenizer knows the coordinates
        else:
            assert not same_pixels and same_prompts and not any(x[3] for x in a)


def _test_inputs(batches) -> list[tuple]:
    return [(b["window_id"], G.to_uint8(b["pixels"]), b.get("gaze_points"), sorted(b)) for b in batches]


def test_only_gaze_input_runs_are_tested_with_gaze(gaze_worlds):
    p = five_runs(evaluate={"batch_size": 4})
    plain = {w: _test_inputs(P.test_batches(p, TASK, gaze_worlds[w])) for w in "ab"}
    assert [x[0] for x in plain["a"]] == [x[0] for x in plain["b"]]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(plain["a"], plain["b"], strict=True))
    assert not {k for x in plain["a"] for k in x[3]} & {*G.GAZE_KEYS, "gaze_points"}
    for name in TAKE_GAZE:
        a, b = (_test_inputs(P.gaze_input_batches(p, TASK, name, gaze_worlds[w])) for w in "ab")
        assert not {k for x in a for k in x[3]} & set(G.GAZE_KEYS)  # no gaze array leaves the reader
        assert [x[0] for x in a] == [x[0] for x in plain["a"]]
        if name == "gaze_text":
            assert all(torch.equal(x[1], y[1]) for x, y in zip(a, plain["a"], strict=True)) and [x[2] for x in a] != [
                x[2] for x in b
            ]
        else:
            assert any(not torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True)) and a[0][2] is None
    for name in set(RUNS) - TAKE_GAZE:
        with pytest.raises(ValueError, match="takes no gaze as input"):
            P.gaze_input_batches(p, TASK, name, gaze_worlds["a"])


def test_the_evaluate_stage_asks_for_test_gaze_for_gaze_input_runs_only(tmp_path):
    tok = make_tokenizer()
    p = five_runs(train={"tasks": [TASK], "seeds": [0]}, evaluate={"bootstrap_samples": 100, "batch_size": 4})
    asked = {"plain": [], "gaze": []}

    def batches(params_, task):
        asked["plain"].append(task)
        return make_batches(8, task=task, batch_size=4)

    def gaze_batches(params_, task, run):
        asked["gaze"].append(run)
        return make_batches(8, task=task, batch_size=4)

    loaded = []

    def load(run, task, seed):
        loaded.append(run)
        return StandInModel(tok), tok

    report = evaluate_stage.run(
        p,
        root=tmp_path,
        load_model=load,
        batches=batches,
        gaze_batches=gaze_batches,
        codec=P.TextCodec(encode_prompt=encode_prompt, encode_train=encode_train),
        synthetic=False,
    )
    assert loaded == list(RUNS) and sorted(asked["gaze"]) == sorted(TAKE_GAZE)
    assert len(asked["plain"]) == len(RUNS) - len(TAKE_GAZE)
    assert report["generation"]["gaze_inputs"]["gaze_text"] == ["gaze_text"]
    assert report["runs"]["gaze_overlay"] == {"block": False, "lambda": 0.0, "gaze_overlay": True}
    comparisons = json.loads((tmp_path / "metrics/eval/comparisons.json").read_text())[TASK]
    assert {
        "gaze_vs_base",
        "gaze_text_vs_base",
        "gaze_vs_gaze_text",
        "gaze_overlay_vs_base",
        "gaze_vs_gaze_overlay",
    } <= set(comparisons)


class PromptRecorder(torch.nn.Module):
    """Generates WORDS[k] for the window whose first pixel codes k; records every prompt it is given."""

    def __init__(self, tok):
        super().__init__()
        self.tok, self.prompts = tok, []

    def generate(self, pixels, input_ids, attention_mask, max_new_tokens, num_beams=1):
        assert attention_mask.all()  # never padded
        self.prompts.append(input_ids.clone())
        rows = [self.tok(WORDS[int(k)])["input_ids"] for k in torch.round(pixels[:, 0, 0, 0, 0] * 10)]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])

    def forward(self, pixels, input_ids, attention_mask, labels):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, len(self.tok)))


def test_generation_groups_windows_by_gaze_prompt_length_and_keeps_their_order():
    tok = build_word_tokenizer(WORDS + text.gaze_vocabulary())
    gaze = [[None, None, None], [(0.5, 0.25), None, (0.1, 0.9)], [None, None, None], [(0.42, 0.61)] * 3]
    pixels = torch.zeros(4, FRAMES, 3, 4, 4)
    for i in range(4):
        pixels[i, 0, 0, 0, 0] = i / 10
    batch = {"pixels": pixels, "text": WORDS, "window_id": [f"w{i}" for i in range(4)], "gaze_points": gaze}
    model = PromptRecorder(tok)
    df = P.predict(model, tok, [batch], TASK, max_new_tokens=8)
    assert df["prediction"].tolist() == WORDS
    assert len(model.prompts) == 3  # three prompt lengths, one generate call each
    seen = sorted(row.tolist() for ids in model.prompts for row in ids)
    assert seen == sorted(tok(text.prompt_text(TASK, g))["input_ids"] for g in gaze)


def test_a_gaze_input_run_builds_the_base_model():
    """Gaze enters as prompt tokens or pixels: the model of a gaze-input run is the base model."""
    from gazevlm.models import build_model

    p = params.with_overrides(five_runs(), model={"vision_weights": None})
    tok = build_word_tokenizer(WORDS + text.gaze_vocabulary())
    models = {}
    for name in ("base", "gaze_text", "gaze_overlay"):
        torch.manual_seed(0)
        models[name] = build_model(p, name, tok)
    for name in TAKE_GAZE:
        assert models[name].config == models["base"].config
        assert all(
            torch.equal(a, b)
            for a, b in zip(models[name].state_dict().values(), models["base"].state_dict().values(), strict=True)
        )


def test_the_attention_stage_and_gazevlm_predict_leave_gaze_input_runs_alone(tmp_path):
    from gazevlm.attention.stage import analysed_runs
    from gazevlm.predict import predict_video
    from gazevlm.trained import ModelDirError

    runs, skipped = analysed_runs(five_runs())
    assert runs == ["base", "lambda0", "gaze"] and set(skipped) == TAKE_GAZE and "gaze as input" in skipped["gaze_text"]
    source = SimpleNamespace(params=five_runs(), run="gaze_overlay", path=tmp_path / "m")
    with pytest.raises(ModelDirError, match="trained with gaze as an input .gaze_overlay.*RGB frames only"):
        predict_video(tmp_path / "missing.mp4", SimpleNamespace(source=source), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("run", ["base", *sorted(TAKE_GAZE)])
def test_a_gaze_input_run_trains_from_shards(tmp_path, monkeypatch, run):
    """The training loop on the shards (tiny preset, one epoch) reads gaze inputs for the gaze-input runs
    only: its tokenizer knows the coordinates (gaze_text), its switches are in the checkpoint's config."""
    from gazevlm import train as train_mod

    made = []

    class Recording(MemorySource):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("inputs", G.NONE))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(train_mod.trainer, "MemorySource", Recording)
    write_split_shards(tmp_path / "data" / "shards", gaze_seed=1, size=128, grid=8, counts={"train": 8, "val": 4})
    p = five_runs(
        model={"preset": "tiny", "vision_weights": None},
        train={"tasks": [TASK], "seeds": [0], "batch_size": 4, "epochs": 1, "warmup_steps": 1},
    )
    with chdir(tmp_path):
        summary = train_mod.train(p, run, TASK, shards_root=Path("data/shards"), device="cpu", progress=False)
    assert made == [G.GazeInputs(text=run == "gaze_text", overlay=run == "gaze_overlay")]
    run_dir = tmp_path / layout.run_dir(run, TASK, 0)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["params"]["runs"][run] == {"block": False, "lambda": 0.0, **({run: True} if run != "base" else {})}
    assert summary["steps"] == 2 and np.isfinite(summary["best"]["value"])
    vocab = json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert ("none" in vocab and "61" in vocab) == (run == "gaze_text")
