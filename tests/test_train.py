"""The training stage on one process: outputs, determinism, best-by-validation, strict checkpoints, CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import warnings
from contextlib import chdir  # DVCLive must not find the project's own DVC repository
from pathlib import Path

import pytest
import torch
import yaml

from gazevlm import checkpoint as ckpt
from gazevlm import layout, params
from gazevlm import train as train_mod
from gazevlm.checkpoint import CheckpointError, load_trained
from train_fixtures import (
    TASK,
    ListSource,
    collate,
    read_tsv_metrics,
    run_in_process,
    tiny_params,
    weights_of,
    write_shards,
)


def _train(root: Path, run: str = "gaze", source: dict | None = None, **kw) -> dict:
    with chdir(root):
        return run_in_process(
            threads=1,
            result_path=None,
            source={} if source is None else source,
            train_kwargs={
                "run": run,
                "task": TASK,
                "out_dir": root / "models" / run,
                "live_dir": root / "live" / run,
                **kw,
            },
        )


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the CPU is shared, and oversubscribed OpenMP threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same gaze run twice (same seed) and a base run, each 2 epochs of 3 steps."""
    out = {}
    for name, run in (("a", "gaze"), ("b", "gaze"), ("base", "base")):
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, _train(root, run))
    return out


def test_outputs_and_logged_curves(runs):
    root, summary = runs["a"]
    run_dir = root / "models" / "gaze"
    for rel in ("model.safetensors", "config.json", "tokenizer/tokenizer.json", "state/latest"):
        assert (run_dir / rel).exists(), rel
    curves = read_tsv_metrics(root / "live" / "gaze")
    steps = summary["steps"]
    assert steps == 6 and summary["steps_per_epoch"] == 3
    for name in ("loss", "ce", "kl", "lr", "grad_norm"):
        assert [s for s, _ in curves[f"plots/metrics/train/{name}.tsv"]] == list(range(1, steps + 1))
    assert [s for s, _ in curves["plots/metrics/val/loss.tsv"]] == [3, 6]  # once per epoch
    # loss = ce + lambda * kl, logged as such
    lam = tiny_params().run("gaze").lam
    for (_, loss), (_, ce), (_, kl) in zip(
        *(curves[f"plots/metrics/train/{k}.tsv"] for k in ("loss", "ce", "kl")), strict=False
    ):
        assert loss == pytest.approx(ce + lam * kl, rel=1e-5)
    # warmup 2 steps then cosine to 0 over 6 steps
    lrs = [v for _, v in curves["plots/metrics/train/lr.tsv"]]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3) and lrs[-1] < lrs[2]
    assert summary["vision_cache"]["samples"] == 12 + 4 and summary["vision_cache"]["hits"] > 0
    live_summary = json.loads((root / "live" / "gaze" / "metrics.json").read_text())
    assert live_summary["best_epoch"] == summary["best"]["epoch"]


def test_training_keeps_freed_memory_for_the_next_step(tmp_path, monkeypatch):
    from gazevlm import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or True)
    _train(tmp_path, "base", train={"epochs": 1})
    assert calls == ["kept"]  # once per training process, before its first step


def test_base_run_logs_no_kl_and_differs_only_by_switches(runs):
    root, summary = runs["base"]
    curves = read_tsv_metrics(root / "live" / "base")
    assert "plots/metrics/train/kl.tsv" not in curves and "val_kl" not in summary["best"]
    cfg = json.loads((root / "models" / "base" / "config.json").read_text())
    cfg_gaze = json.loads((runs["a"][0] / "models" / "gaze" / "config.json").read_text())
    assert cfg["params"]["train"] == cfg_gaze["params"]["train"]
    assert cfg["params"]["model"] == cfg_gaze["params"]["model"]
    assert cfg["params"]["runs"] == {"base": {"block": False, "lambda": 0.0}}
    # same tokenizer for every run of a task
    assert (root / "models/base/tokenizer/tokenizer.json").read_text() == (
        runs["a"][0] / "models/gaze/tokenizer/tokenizer.json"
    ).read_text()


def test_fixed_seed_gives_identical_metrics_and_weights(runs):
    (ra, sa), (rb, sb) = runs["a"], runs["b"]
    assert read_tsv_metrics(ra / "live" / "gaze") == read_tsv_metrics(rb / "live" / "gaze")
    wa, wb = weights_of(ra / "models/gaze/model.safetensors"), weights_of(rb / "models/gaze/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sa["best"] == sb["best"]
    # the DVC metrics file holds results only: two identical runs give the same file (no timings)
    ma, mb = ((r / "live" / "gaze" / "metrics.json").read_text() for r in (ra, rb))
    assert ma == mb and "step_time_s" not in ma and "train_time_s" not in ma
    # identical weights, identical bytes (safetensors' metadata order was random), and so every file of
    # the model directory, the resumable state included (it once held the wall time): DVC sees no change
    da, db = ra / "models/gaze", rb / "models/gaze"
    files_a, files_b = (sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file()) for d in (da, db))
    assert files_a == files_b and any(f.name == ckpt.STATE_FILE for f in files_a)
    for rel in files_a:
        assert (da / rel).read_bytes() == (db / rel).read_bytes(), rel


def test_safetensors_bytes_do_not_depend_on_metadata_order(tmp_path):
    weights = {"b": torch.randn(3, 4), "a": torch.zeros(5, dtype=torch.float16), "c": torch.arange(7)}
    meta = {f"key{i}": f"value{i}" for i in range(6)}
    blobs = set()
    for i in range(5):
        path = tmp_path / f"w{i}.safetensors"
        ckpt.save_weights(weights, path, metadata=dict(reversed(meta.items())) if i % 2 else meta)
        blobs.add(path.read_bytes())
    assert len(blobs) == 1
    back = weights_of(tmp_path / "w0.safetensors")
    assert all(torch.equal(back[k], weights[k]) for k in weights)


def test_load_trained_reproduces_the_logged_validation_loss(runs):
    root, summary = runs["a"]
    model, tok = load_trained(root / "models" / "gaze")
    assert not model.training
    data = ListSource()
    api = train_mod.model_api()
    p = tiny_params()
    cfg = train_mod.StepConfig(
        task=TASK,
        lam=p.run("gaze").lam,
        kl_direction=p.train.kl_direction,
        kl_reduction=p.train.kl_reduction,
        kl_eps=p.train.kl_eps,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        batch = collate(data.split["val"])
        _, ce, kl = train_mod.forward_losses(model, batch, tok, api, cfg, cache=None)
    assert ce.item() == pytest.approx(summary["best"]["val_ce"], rel=1e-4)
    assert kl.item() == pytest.approx(summary["best"]["val_kl"], rel=1e-4)


class DriftingVal(ListSource):
    """Validation gets worse after the first epoch (targets scrambled) while training improves."""

    def __init__(self):
        super().__init__()
        self.val_calls = 0

    def batches(self, split, **kw):
        if split == "val":
            self.val_calls += 1
            if self.val_calls > 1:
                for s in self.split["val"]:
                    s["text"] = " ".join(reversed(s["text"].split()))
        return super().batches(split, **kw)


def test_best_checkpoint_is_chosen_on_validation_not_training(tmp_path):
    p = tiny_params(schedule="constant", lr=3e-3)
    with chdir(tmp_path):
        s2 = train_mod.train(
            p,
            "gaze",
            TASK,
            out_dir=tmp_path / "m2",
            live_dir=tmp_path / "l2",
            data=DriftingVal(),
            device="cpu",
            progress=False,
        )
        s1 = train_mod.train(
            tiny_params(schedule="constant", lr=3e-3, epochs=1),
            "gaze",
            TASK,
            out_dir=tmp_path / "m1",
            live_dir=tmp_path / "l1",
            data=ListSource(),
            device="cpu",
            progress=False,
        )
    train_loss = [v for _, v in read_tsv_metrics(tmp_path / "l2")["plots/metrics/train/ce.tsv"]]
    assert train_loss[-1] < train_loss[2]  # training kept improving in epoch 2 ...
    assert s2["best"]["epoch"] == 1  # ... but validation did not: epoch 1 is kept
    best = weights_of(tmp_path / "m2" / "model.safetensors")
    after_epoch1 = weights_of(tmp_path / "m1" / "model.safetensors")
    latest = weights_of(ckpt.find_train_state(tmp_path / "m2" / "state") / "model.safetensors")
    assert all(torch.equal(best[k], after_epoch1[k]) for k in best)
    assert any(not torch.equal(best[k], latest[k]) for k in best)
    assert s1["best"]["value"] == s2["best"]["value"]


@pytest.mark.parametrize("select_on", ["last", "ce"])
def test_validating_fewer_epochs_changes_no_weight(tmp_path, select_on):
    """train.validate_every scores the val split after every Nth epoch and the last only: the trained
    weights are the same bytes (validation draws no random number), the val curve has those epochs'
    rows, and by `ce` the best is chosen among them."""
    out = {}
    for every in (1, 2):
        with chdir(tmp_path):
            out[every] = train_mod.train(
                tiny_params(epochs=3, select_on=select_on, validate_every=every),
                "gaze",
                TASK,
                out_dir=tmp_path / f"m{every}",
                live_dir=tmp_path / f"l{every}",
                data=ListSource(),
                device="cpu",
                progress=False,
            )
    end1, end2 = (ckpt.find_train_state(tmp_path / f"m{e}" / "state") for e in (1, 2))
    assert (end1 / "model.safetensors").read_bytes() == (end2 / "model.safetensors").read_bytes()
    curves = {e: read_tsv_metrics(tmp_path / f"l{e}") for e in (1, 2)}
    steps = [s for s, _ in curves[1]["plots/metrics/val/ce.tsv"]]
    assert len(steps) == 3 and curves[2]["plots/metrics/val/ce.tsv"] == curves[1]["plots/metrics/val/ce.tsv"][1:]
    assert curves[2]["plots/metrics/train/ce.tsv"] == curves[1]["plots/metrics/train/ce.tsv"]
    best1, best2 = out[1]["best"], out[2]["best"]
    assert best2["epoch"] in (2, 3)
    if select_on == "last" or best1["epoch"] != 1:
        assert best2 == best1
        assert (tmp_path / "m1/model.safetensors").read_bytes() == (tmp_path / "m2/model.safetensors").read_bytes()
    metrics = {e: json.loads((tmp_path / f"l{e}" / "metrics.json").read_text()) for e in (1, 2)}
    assert metrics[1]["epoch"] == metrics[2]["epoch"] == 3


# --- strict checkpoints ---------------------------------------------------------------------------


def _copy_run(runs, tmp_path: Path, name: str = "a", run: str = "gaze") -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(runs[name][0] / "models" / run, dst)
    return dst


def test_truncated_weights_fail_naming_the_file(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    path = run_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated or corrupt"):
        load_trained(run_dir)


def test_weights_of_another_architecture_fail_with_the_differences(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    shutil.copy(runs["base"][0] / "models" / "base" / "model.safetensors", run_dir / "model.safetensors")
    _record_checksum(run_dir)  # a deliberate swap: past the checksum, the shapes must still be refused
    with pytest.raises(CheckpointError, match=r"copy/model\.safetensors: weights do not fit.*missing: .*gaze_block"):
        load_trained(run_dir)


def _record_checksum(run_dir: Path) -> None:
    import hashlib

    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    (run_dir / "config.json").write_text(json.dumps(cfg))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: still a finite float, a different model
    path.write_bytes(bytes(data))


def test_config_records_the_weights_checksum(runs):
    import hashlib

    run_dir = runs["a"][0] / "models" / "gaze"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["weights_sha256"] == hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()


def test_bit_flipped_weights_are_refused(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    _flip_last_byte(run_dir / "model.safetensors")
    weights_of(run_dir / "model.safetensors")  # safetensors itself reads it happily
    with pytest.raises(CheckpointError, match=r"copy/model\.safetensors: checksum .* is not the recorded"):
        load_trained(run_dir)


def test_non_finite_weights_are_refused_even_with_a_matching_checksum(runs, tmp_path):
    from safetensors.torch import save_file

    run_dir = _copy_run(runs, tmp_path)
    weights = weights_of(run_dir / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(run_dir / "model.safetensors"))
    _record_checksum(run_dir)
    with pytest.raises(CheckpointError, match=rf"NaN or inf values, e.g. \['{name}'\]"):
        load_trained(run_dir)


def test_bit_flipped_training_state_is_not_resumed(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    _flip_last_byte(ckpt.find_train_state(run_dir / "state") / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"state/step-\d+-end/model\.safetensors: checksum"):
        _train(tmp_path, out_dir=run_dir)


def test_checkpoint_of_another_preset_is_refused(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    paper = params.with_overrides(tiny_params(), model={"preset": "paper"})
    with pytest.raises(CheckpointError, match=r"config\.json: .*model\.preset: checkpoint 'tiny' vs params 'paper'"):
        load_trained(run_dir, params=paper)


def test_truncated_training_state_fails_naming_the_file(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    state = ckpt.find_train_state(run_dir / "state") / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"train_state\.pt: cannot read training state"):
        _train(tmp_path, out_dir=run_dir)


def test_state_of_another_configuration_is_not_resumed(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    with pytest.raises(CheckpointError, match=r"train_state\.pt: state of another configuration.*--resume never"):
        _train(tmp_path, out_dir=run_dir, train={"lr": 5e-4})
    with pytest.raises(CheckpointError, match=r"no training state to resume from"):
        _train(tmp_path, out_dir=tmp_path / "empty", resume="must")


def test_finished_run_resumes_to_a_no_op(runs, tmp_path):
    run_dir = _copy_run(runs, tmp_path)
    before = weights_of(run_dir / "model.safetensors")
    summary = _train(tmp_path, out_dir=run_dir)
    assert summary["steps"] == 6 and summary["best"] == runs["a"][1]["best"]
    after = weights_of(run_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- pieces -------------------------------------------------------------------------------------


def test_resumed_wall_time_is_read_only_for_the_state_it_was_recorded_for(tmp_path):
    from gazevlm.train import live

    live.record_wall_time(tmp_path, "step-000000004", 12.3456)
    assert live.wall_time_before(tmp_path, "step-000000004") == 12.346
    assert live.wall_time_before(tmp_path, "step-000000006") == 0.0  # killed before the record of a newer state
    assert live.wall_time_before(tmp_path / "gone", "step-000000004") == 0.0  # logs deleted: time unknown
    (tmp_path / live.WALL_TIME_FILE).write_text("{not json")
    assert live.wall_time_before(tmp_path, "step-000000004") == 0.0


def test_schedule_and_batch_split():
    cos = train_mod.WarmupSchedule(warmup=2, total=10, kind="cosine")
    assert [cos(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0] and cos(6) == pytest.approx(0.5) and cos(10) == 0.0
    assert train_mod.WarmupSchedule(0, 10, "constant")(9) == 1.0
    assert train_mod.micro_batch_size(32, 4, 2) == 4
    with pytest.raises(ValueError, match="batch_size=32 is not divisible by world_size \\(3\\)"):
        train_mod.micro_batch_size(32, 3, 1)


def test_bad_params_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="schedule = 'linear'"):
        train_mod.train(tiny_params(schedule="linear"), "gaze", TASK, data=ListSource(), device="cpu")
    bad = dataclasses.replace(tiny_params(), runs={"odd": params.RunParams(block=False, lam=1.0)})
    with pytest.raises(ValueError, match="runs.odd.lambda = 1.0: lambda > 0 needs block: true"):
        train_mod.train(bad, "odd", TASK, data=ListSource(), device="cpu")
    with pytest.raises(ValueError, match="fewer than one global batch"):
        _train(tmp_path, source={"n_train": 3})


def test_sharded_gradients_equal_the_plain_model_gradients():
    """FSDP2 (hooks, aliases, ignored frozen tower) changes nothing in the gradients of one step.

    Training wraps the model only on 2+ ranks (one rank trains the plain module); here the wrapping is
    applied on a group of one, so the units, their aliases and the no-view outputs are checked without
    processes (test_train_distributed compares whole 2-rank runs with 1-rank runs)."""
    from gazevlm import distributed
    from gazevlm.models import build_model
    from gazevlm.train.data import VisionFeatureCache

    p = tiny_params()
    data = ListSource(n_train=4, n_val=0)
    api = train_mod.model_api()
    tok = api.build_tokenizer(p, data.train_texts())
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(p, "gaze", tok))
    plain, sharded = models
    ctx = distributed.init("cpu")
    try:
        tower = train_mod.vision_tower(sharded)
        tower.requires_grad_(False)
        distributed.shard_model(sharded, ctx, ignored=[tower])
        batch = collate(data.split["train"])
        cfg = train_mod.StepConfig(
            task=TASK,
            lam=100.0,
            kl_direction="gaze_to_attention",
            kl_reduction="sum",
            kl_eps=1e-8,
            device=torch.device("cpu"),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for model, cache in ((plain, None), (sharded, VisionFeatureCache(sharded.encode_vision))):
                loss, _, _ = train_mod.forward_losses(model, batch, tok, api, cfg, cache)
                loss.backward()
        # no sharded unit returns a view (FSDP2: an in-place op on one would skip its all-gather)
        views = sorted({str(w.message).split(")")[0] for w in caught if "returned a view tensor" in str(w.message)})
        assert not views, views
        grads = dict(sharded.named_parameters())
        checked = 0
        for name, param in plain.named_parameters():
            if not param.requires_grad:
                continue
            other = grads[name].grad
            assert other is not None, name
            other = other.full_tensor() if hasattr(other, "full_tensor") else other
            torch.testing.assert_close(other, param.grad, rtol=1e-4, atol=1e-6, msg=name)
            checked += 1
        assert checked > 50
    finally:
        distributed.shutdown(ctx)


# --- seeds and the in-memory source -------------------------------------------------------------------


def _memory_batches(source, seed: int, epoch: int, split: str = "train", shuffle: bool = True) -> list[dict]:
    return list(source.batches(split, epoch=epoch, rank=0, world_size=1, batch_size=4, shuffle=shuffle, seed=seed))


def test_memory_source_batches_are_fixed_by_seed_and_epoch(tmp_path):
    from gazevlm.train.data import MemorySource, ShardSource, batch_pixels

    write_shards(tmp_path, n_train=12, n_val=4, per_shard=5)
    mem = MemorySource(TASK, tmp_path)
    ids = lambda batches: [b["window_id"] for b in batches]  # noqa: E731
    first = _memory_batches(mem, seed=0, epoch=0)
    again = _memory_batches(MemorySource(TASK, tmp_path), seed=0, epoch=0)  # a fresh source: a resumed run
    assert ids(first) == ids(again)
    assert "frames" not in mem._split("train")  # nothing decoded yet: the JPEGs wait until pixels are asked for
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["frame_rows"].gather(), b["frame_rows"].gather())
        assert torch.equal(a["gaze_target"], b["gaze_target"]) and a["text"] == b["text"]
    # every epoch is a permutation of the whole split, in drop_last batches of 4
    assert [len(b) for b in ids(first)] == [4, 4, 4]
    assert sorted(w for b in ids(first) for w in b) == sorted(mem._split("train")["window_id"])
    assert ids(_memory_batches(mem, seed=1, epoch=0)) != ids(first)  # another seed, another order
    assert ids(_memory_batches(mem, seed=0, epoch=1)) != ids(first)  # and another epoch
    assert mem.num_samples("train") == 12 and mem.num_samples("val") == 4
    with pytest.raises(ValueError, match="MemorySource serves one process"):
        next(iter(mem.batches("train", epoch=0, rank=0, world_size=2, batch_size=2, shuffle=True, seed=0)))

    # the same samples as the streaming reader decodes (texts, frames, gaze), validation unshuffled
    stream = ShardSource(TASK, tmp_path)
    assert sorted(mem.train_texts()) == sorted(stream.train_texts())
    by_id = {}
    for b in stream.batches("val", epoch=0, rank=0, world_size=1, batch_size=4, shuffle=False, seed=0):
        for i, wid in enumerate(b["window_id"]):
            by_id[wid] = (b["pixels"][i], b["gaze_target"][i], b["gaze_valid"][i], b["text"][i])
    val = _memory_batches(mem, seed=0, epoch=0, split="val", shuffle=False)
    assert sorted(w for b in ids(val) for w in b) == sorted(by_id)
    for b in val:
        pixels = batch_pixels(b)
        for i, wid in enumerate(b["window_id"]):
            px, target, valid, text = by_id[wid]
            torch.testing.assert_close(pixels[i], px.float(), rtol=0, atol=1e-6)
            torch.testing.assert_close(b["gaze_target"][i], target.float())
            assert torch.equal(b["gaze_valid"][i], valid.bool()) and b["text"][i] == text


def test_seed_outside_train_seeds_is_refused(tmp_path, capsys):
    p = tiny_params()  # seeds [0, 1]
    assert train_mod.check_seed(p, None) == 0 and train_mod.check_seed(p, 1) == 1
    with pytest.raises(ValueError, match=r"seed 5 is not one of params.train.seeds \[0, 1\]"):
        train_mod.train(p, "gaze", TASK, seed=5, data=ListSource(), device="cpu")
    never = [sys.executable, "-c", "raise SystemExit('launched')"]
    with pytest.raises(ValueError, match=r"seed 5 is not one of params.train.seeds \[0, 1\]"):
        train_mod.run(p, "gaze", launcher=never, stream=None, seed=5)  # before any worker starts
    # the command line: a usage error naming the option and the seeds, before any training
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.to_dict(p)))
    with chdir(tmp_path), pytest.raises(SystemExit) as exit_:
        train_mod.main(["--params", "params.yaml", "--run", "gaze", "--task", TASK, "--seed", "5"])
    assert exit_.value.code == 2
    assert re.search(r"error: --seed: seed 5 is not one of params.train.seeds \[0, 1\]", capsys.readouterr().err)
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports").exists()


def test_each_seed_trains_into_its_own_directories_from_shards(tmp_path):
    """Default paths models/<run>/seed<N>/<task> and reports/train/<run>/seed<N>/<task>; one rank reads the
    shards through MemorySource (train.in_memory), which encodes every window once, up front."""
    write_shards(tmp_path / "data" / "shards")
    p = tiny_params(epochs=1)
    out = {}
    with chdir(tmp_path):
        for seed in (0, 1):
            out[seed] = train_mod.train(
                p, "gaze", TASK, seed=seed, shards_root=Path("data/shards"), device="cpu", progress=False
            )
    for seed, summary in out.items():
        run_dir = tmp_path / "models" / "gaze" / f"seed{seed}" / TASK
        assert run_dir == tmp_path / layout.run_dir("gaze", TASK, seed)
        assert summary["seed"] == seed and json.loads((run_dir / "config.json").read_text())["seed"] == seed
        live = tmp_path / train_mod.report_dir("gaze", TASK, seed)
        assert live == tmp_path / "reports" / "train" / "gaze" / f"seed{seed}" / TASK
        assert json.loads((live / "summary.json").read_text())["seed"] == seed
        assert summary["vision_cache"] == {**summary["vision_cache"], "samples": 16, "misses": 16}
        assert summary["vision_cache"]["hits"] == 3 * 4 + 4  # one epoch of 3 steps of 4, then validation
    w0, w1 = (weights_of(tmp_path / layout.run_dir("gaze", TASK, s) / "model.safetensors") for s in (0, 1))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # another seed, another initialisation
    assert out[0]["fingerprint"] != out[1]["fingerprint"]  # so neither resumes the other's state
