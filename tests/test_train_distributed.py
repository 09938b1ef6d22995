"""FSDP over 2 CPU ranks (gloo) against 1 rank, and kill -9 then resume against an uninterrupted run."""

from __future__ import annotations

import signal
from contextlib import chdir  # DVCLive must not find the project's own DVC repository
from pathlib import Path

import pytest
import torch

from gazevlm import checkpoint as ckpt
from train_fixtures import (
    TASK,
    process_context,
    read_tsv_metrics,
    run_in_process,
    spawn_ranks,
    tiny_params,
    train_until_killed,
    weights_of,
    write_shards,
)

pytestmark = pytest.mark.slow  # ranks are processes


def _kwargs(root: Path, **kw) -> dict:
    return {"run": "gaze", "task": TASK, "out_dir": str(root / "models"), "live_dir": str(root / "live"), **kw}


# one Flamingo-style backbone and one projector backbone (transformers' own model class under FSDP2)
@pytest.mark.parametrize("backbone", ["openflamingo", "internvl"])
def test_two_ranks_match_one_rank_with_the_same_global_batch(tmp_path, backbone):
    """2 ranks x 2 accumulated micro-batches of 1 vs 1 rank x 1 micro-batch of 4 (global batch 4)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    model = {"backbone": backbone}
    with chdir(one):
        s1 = run_in_process(threads=1, result_path=None, source={}, train_kwargs=_kwargs(one, model=model))
    with chdir(two):
        s2 = spawn_ranks(2, {"source": {}, "train_kwargs": _kwargs(two, model=model, train={"grad_accum": 2})}, two)
    assert s2[0]["world_size"] == 2 and s2[0]["micro_batch"] == 1 and s1["micro_batch"] == 4
    c1, c2 = read_tsv_metrics(one / "live"), read_tsv_metrics(two / "live")
    assert c1.keys() == c2.keys()
    for name in c1:
        steps1, v1 = zip(*c1[name], strict=False)
        steps2, v2 = zip(*c2[name], strict=False)
        assert steps1 == steps2, name
        # same samples, same mean: only the order of float additions differs
        assert v2 == pytest.approx(v1, rel=1e-5, abs=1e-7), name  # measured: ~1e-7
    # the clipped global norm over the sharded gradients equals the 1-rank norm (step 1: same weights)
    g1, g2 = c1["plots/metrics/train/grad_norm.tsv"][0][1], c2["plots/metrics/train/grad_norm.tsv"][0][1]
    assert g1 > 1.0 and g2 == pytest.approx(g1, rel=1e-5)  # above grad_clip, so clipping was active
    w1, w2 = weights_of(one / "models/model.safetensors"), weights_of(two / "models/model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        a, b = _comparable(k, w1[k], s1["steps"]), _comparable(k, w2[k], s1["steps"])
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-5, msg=k)
    assert s2[0]["best"]["epoch"] == s1["best"]["epoch"]


def _comparable(name: str, weight: torch.Tensor, steps: int) -> torch.Tensor:
    """The part of a trained weight that two equivalent runs must agree on.

    A patch layer's key bias adds the same q . b_k to every logit of a query, which the softmax removes:
    its true gradient is 0, its computed one float noise that differs with the order of additions, and
    AdamW turns any nonzero gradient into a step of about lr (at most a few lr). So it only has to stay
    within a few steps x lr of its initial 0; the query and value biases around it are compared as
    everything else."""
    if not (".patch_layers." in name and name.endswith("self_attn.in_proj_bias")):
        return weight
    q, k, v = weight.chunk(3)
    assert k.abs().max() <= 3 * steps * tiny_params().train.lr, name
    return torch.cat([q, v])


# one rank reads the shards into memory by default (train.in_memory); streaming them is what 2+ ranks do
@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "stream"])
def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path, in_memory):
    shards = write_shards(tmp_path / "shards")
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir()
    killed.mkdir()
    train = {"epochs": 3, "checkpoint_every_steps": 2, "in_memory": in_memory}
    with chdir(full):
        s_full = run_in_process(
            threads=1,
            result_path=None,
            source=None,
            train_kwargs=_kwargs(full, shards_root=str(shards), train=dict(train)),
        )
    assert s_full["steps"] == 9

    # step 5 is mid-epoch 2, one step after the state written at step 4; the process dies with SIGKILL
    proc = process_context().Process(
        target=train_until_killed, args=(str(killed), 5, _kwargs(killed, shards_root=str(shards), train=dict(train)))
    )
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL
    state = ckpt.find_train_state(killed / "models" / "state")
    assert state.name == "step-000000004"
    assert max(s for s, _ in read_tsv_metrics(killed / "live")["plots/metrics/train/loss.tsv"]) == 5
    # the killed process's training time, kept beside its logs for the state it wrote
    before = ckpt.read_json(killed / "live" / "wall_time.json")
    assert before["state"] == "step-000000004" and before["elapsed_s"] > 0

    with chdir(killed):
        s_res = run_in_process(
            threads=1,
            result_path=None,
            source=None,
            train_kwargs=_kwargs(killed, shards_root=str(shards), resume="must", train=dict(train)),
        )
    assert s_res["steps"] == 9 and s_res["best"] == s_full["best"]
    assert s_res["train_time_s"] > before["elapsed_s"]  # both processes' time
    for rel in ("model.safetensors", "state/step-000000009-end/model.safetensors"):
        a, b = weights_of(full / "models" / rel), weights_of(killed / "models" / rel)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), rel  # bit-exact
    # the curves of the resumed run are those of the uninterrupted one (rows past step 4 replaced)
    assert read_tsv_metrics(killed / "live") == read_tsv_metrics(full / "live")
