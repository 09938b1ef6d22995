"""The notebook's entry: torchrun with 2 CPU ranks on real shards (per-rank split), then the curve plots."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib
import pytest
import yaml

from gazevlm import layout, params, train
from gazevlm.shards import ShardError, write_manifest
from gazevlm.train import curves as train_curves
from gazevlm.train.data import MemorySource, ShardSource
from train_fixtures import TASK, tiny_params, write_shards

matplotlib.use("Agg")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory: params.yaml and data/shards with 4 train shards (2 per rank) and 2 val shards."""
    write_shards(tmp_path / layout.SHARDS_DIR, n_train=12, n_val=4, per_shard=3)
    p = tiny_params(epochs=1, nproc_per_node=2)
    raw = {
        "model": {"preset": "tiny", "vision_weights": None},
        "train": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.train.__dict__.items()},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_torchrun_two_ranks_from_shards_and_curves(project):
    P = params.load("params.yaml")
    lines: list[str] = []
    report = train.run(
        P, "lambda0", extra_args=["--set", "train.lr=0.002", "--no-progress", "--device", "cpu"], stream=lines.append
    )
    s = report["tasks"][TASK]
    assert s["world_size"] == 2 and s["micro_batch"] == 2 and s["steps"] == 3
    # rank 0 read 2 whole train shards (6 windows, 3 micro-batches of 2) and val shard 0 (3 of the 4
    # windows; rank 1 has 1, so it joins rank 0's second forward with a dummy batch), each encoded once
    assert s["vision_cache"]["misses"] == 6 + 3
    assert s["seed"] == 0 and report["seed"] == 0  # the first of train.seeds
    assert any("lambda0/future seed 0: 3 steps on 2 rank(s)" in line for line in lines)
    assert json.loads(Path(f"reports/train/lambda0/seed0/{TASK}/report.json").read_text())["steps"] == 3
    cfg = json.loads(Path("models/lambda0/seed0/future/config.json").read_text())
    assert cfg["params"]["train"]["lr"] == 0.002 and cfg["world_size"] == 2 and cfg["seed"] == 0
    # the stage's DVC metrics: results per task, no timings
    metrics = json.loads(Path("reports/train/lambda0/seed0.json").read_text())
    assert set(metrics) == {TASK} and metrics[TASK]["best_epoch"] == 1 and "train_time_s" not in json.dumps(metrics)

    curves = train_curves.read_curves("lambda0", [TASK], seed=0)
    assert set(curves["metric"]) >= {"loss", "ce", "kl", "lr", "grad_norm", "step_time_s"}
    assert sorted(curves.query("split == 'val'")["step"].unique()) == [3]
    assert len(train_curves.plot_losses(curves).axes) == 3
    assert len(train_curves.plot_optimizer(curves).axes) == 3
    table = train_curves.summary_table(report)
    assert table.loc[TASK, "best_epoch"] == 1 and table.loc[TASK, "ranks"] == 2


@pytest.mark.slow
def test_a_dvc_set_param_value_trains(project):
    """`dvc exp run -S train.lr=7e-5` (the README's paper-preset command): DVC writes `lr: 7e-05`, which
    YAML 1.1 reads as a string; the worker must train with the number."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides("params.yaml", ["train.lr=7e-5", "train.nproc_per_node=1"])
    assert "lr: 7e-05" in Path("params.yaml").read_text()
    report = train.run(
        params.load("params.yaml"), "gaze", extra_args=["--no-progress", "--device", "cpu"], stream=None, seed=1
    )
    s = report["tasks"][TASK]
    assert s["steps"] == 3 and s["seed"] == 1 and s["world_size"] == 1  # a plain `python -m`, no torchrun
    # one rank: the shards decoded once into memory (train.in_memory), every window encoded up front
    assert s["vision_cache"]["misses"] == 12 + 4 and s["vision_cache"]["samples"] == 12 + 4
    cfg = json.loads(Path("models/gaze/seed1/future/config.json").read_text())
    assert cfg["params"]["train"]["lr"] == 7e-5 and cfg["seed"] == 1
    assert Path(f"reports/train/gaze/seed1/{TASK}/metrics.json").is_file()
    assert not Path("models/gaze/seed0").exists()


@pytest.mark.slow
def test_a_failed_training_ends_with_its_real_error(project):
    """Issue 15, item 14: in a git repository with packs (any clone), DVCLive's dulwich objects outlived
    a failed worker and printed `ImportError: sys.meta_path is None` after the real error."""
    import subprocess

    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        ["git", "add", "params.yaml", ".dvc"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
        ["git", "gc", "-q"],
    ):
        subprocess.run(cmd, check=True, capture_output=True)
    assert list(Path(".git/objects/pack").glob("*.pack"))
    with pytest.raises(RuntimeError) as err:
        train.run(
            params.load("params.yaml"),
            "gaze",
            stream=None,
            nproc_per_node=1,
            extra_args=["--set", "train.lr=1e30", "--no-progress", "--device", "cpu"],
        )
    message = str(err.value)
    assert "sys.meta_path is None" not in message and "dulwich" not in message
    assert re.search(r"FloatingPointError: gaze/future: non-finite training loss", message.splitlines()[-1])


def test_one_process_per_task_is_launched_without_torchrun():
    """nproc_per_node 1: the interpreter itself (no torchrun agent, no rendezvous); more: torchrun."""
    assert train.launch_command(1) == train.launch_command("1") == [sys.executable]
    two = train.launch_command(2)
    assert two[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=2" in two


@pytest.mark.slow
def test_failed_worker_raises_with_its_output(project):
    fail = [sys.executable, "-c", "import sys; print('worker exploded'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"training gaze/future failed \(exit 3\)(.|\n)*worker exploded"):
        train.run(params.load("params.yaml"), "gaze", tasks=[TASK], launcher=fail, stream=None)
    with pytest.raises(KeyError, match="no run named 'nope'"):
        train.run(params.load("params.yaml"), "nope")


# both readers of the shards: ShardSource streams them (2+ ranks), MemorySource decodes them once (1 rank)
SOURCES = {"stream": ShardSource, "memory": MemorySource}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_missing_or_broken_shards_are_named(tmp_path, source):
    make = SOURCES[source]
    with pytest.raises(FileNotFoundError, match=r"future/train-%06d\.tar: no train shards"):
        make(TASK, tmp_path).train_texts()
    (tmp_path / TASK).mkdir()
    (tmp_path / TASK / "train-000000.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(ShardError, match=r"train\.manifest\.json: no shard manifest"):
        make(TASK, tmp_path).train_texts()
    write_manifest(
        tmp_path / TASK / "train.manifest.json",
        [str(tmp_path / TASK / "train-000000.tar")],
        {str(tmp_path / TASK / "train-000000.tar"): 1},
    )
    with pytest.raises(ShardError, match=r"train-000000\.tar: unreadable shard"):
        make(TASK, tmp_path).train_texts()
    with pytest.raises(FileNotFoundError, match="no DVCLive curves"):
        train_curves.read_curves("gaze", [TASK], seed=0, root=tmp_path)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_a_shard_altered_in_place_is_refused(tmp_path, source):
    """Same size, one byte changed (a JPEG's data): only the manifest's sha256 tells."""
    write_shards(tmp_path, n_train=4, n_val=2, per_shard=4)
    shard = tmp_path / TASK / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"train-000000\.tar: sha256 differs"):
        SOURCES[source](TASK, tmp_path).train_texts()
