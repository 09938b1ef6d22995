"""WebDataset shards: round trip, model-ready batches, per-rank/per-worker split, determinism."""

import io
import tarfile

import numpy as np
import pytest
import torch

from gazevlm import layout
from gazevlm.shards import (
    ShardError,
    ShardSetWriter,
    assign_shards,
    count_samples,
    encode_sample,
    even_shard_size,
    iter_samples,
    make_loader,
)
from heatmaps_fixtures import dummy_shards


def ids_of(loader):
    return [w for batch in loader for w in batch["window_id"]]


def test_round_trip(tmp_path):
    files = dummy_shards(tmp_path, n=7, per_shard=3, frames=3)
    assert [f.rsplit("/", 1)[1] for f in files] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    samples = list(iter_samples(files))
    assert [s["window_id"] for s in samples] == [f"w{i:04d}" for i in range(7)]
    s = samples[5]
    assert s["frames"].shape == (3, 16, 16, 3) and s["frames"].dtype == np.uint8
    # frames come back in their metadata order (f0, f1, f2), each with its own fill value
    assert [int(np.median(s["frames"][k])) for k in range(3)] == pytest.approx([50, 90, 130], abs=2)
    assert s["meta"]["frames"] == [500, 530, 560] and s["text"] == "text 5"
    assert s["valid"].tolist() == [True, False, True] and s["target"].dtype == np.float32
    assert s["heatmap"].dtype == np.float16 and not s["target"][1].any()
    assert count_samples(files) == 7
    no_gaze = next(iter_samples(files, with_gaze=False))
    assert not {"target", "valid", "heatmap"} & set(no_gaze)


def test_task_split_lookup(tmp_path):
    (tmp_path / "future").mkdir()
    dummy_shards(tmp_path / "future", n=2, per_shard=5, prefix="val")
    assert count_samples(("future", "val"), root=tmp_path) == 2
    with pytest.raises(ShardError, match="no shards for task 'future', split 'test'"):
        count_samples(("future", "test"), root=tmp_path)
    assert layout.shard_pattern("future", "val", tmp_path).endswith("future/val-%06d.tar")


def test_model_ready_batches(tmp_path):
    files = dummy_shards(tmp_path, n=5, per_shard=2, frames=2)
    batches = list(make_loader(files, batch_size=2, with_gaze=True, shuffle=False))
    assert [len(b["window_id"]) for b in batches] == [2, 2, 1]
    b = batches[0]
    assert b["pixels"].dtype == torch.float32 and b["pixels"].shape == (2, 2, 3, 16, 16)
    assert 0.0 <= float(b["pixels"].min()) and float(b["pixels"].max()) <= 1.0
    assert b["gaze_target"].shape == (2, 2, 4, 4) and b["gaze_target"].dtype == torch.float32
    assert b["gaze_valid"].dtype == torch.bool and b["gaze_valid"].tolist() == [[True, False]] * 2
    assert b["text"] == ["text 0", "text 1"] and isinstance(b["meta"][0], dict)
    dropped = list(make_loader(files, batch_size=2, with_gaze=True, shuffle=False, drop_last=True))
    assert len(dropped) == 2


def test_evaluation_reader_yields_no_gaze_at_all(tmp_path):
    files = dummy_shards(tmp_path, n=3, per_shard=3)
    for batch in make_loader(files, batch_size=3, with_gaze=False, shuffle=False):
        assert set(batch) == {"pixels", "text", "window_id", "meta"}


@pytest.mark.parametrize("n,per_shard", [(11, 2), (9, 20)])  # 6 shards, and 1 shard for 2 ranks
def test_two_ranks_see_disjoint_and_complete_data(tmp_path, n, per_shard):
    files = dummy_shards(tmp_path, n=n, per_shard=per_shard)
    seen = [
        ids_of(
            make_loader(files, batch_size=3, with_gaze=True, rank=r, world_size=2, seed=1, epoch=0, shuffle_buffer=4)
        )
        for r in range(2)
    ]
    assert seen[0] and seen[1]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"w{i:04d}" for i in range(n)]
    assert len(seen[0]) + len(seen[1]) == n  # nothing twice within a rank either


@pytest.mark.slow  # DataLoader worker processes
def test_two_ranks_times_two_workers(tmp_path):
    files = dummy_shards(tmp_path, n=13, per_shard=2)  # 7 shards over 4 slots
    seen = [
        ids_of(make_loader(files, batch_size=2, with_gaze=False, rank=r, world_size=2, num_workers=2, seed=3))
        for r in range(2)
    ]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"w{i:04d}" for i in range(13)]


def test_sample_split_mode_balances_ranks(tmp_path):
    files = dummy_shards(tmp_path, n=12, per_shard=8)  # 2 shards of 8 and 4 samples
    sizes = [
        len(ids_of(make_loader(files, batch_size=1, with_gaze=False, rank=r, world_size=2, split_mode="samples")))
        for r in range(2)
    ]
    assert sizes == [6, 6]


def test_shuffle_is_deterministic_given_seed_and_epoch(tmp_path):
    files = dummy_shards(tmp_path, n=20, per_shard=4)

    def order(seed, epoch):
        return ids_of(make_loader(files, batch_size=4, with_gaze=False, seed=seed, epoch=epoch, shuffle_buffer=8))

    a = order(0, 0)
    assert a == order(0, 0)
    assert sorted(a) == [f"w{i:04d}" for i in range(20)]
    assert a != order(0, 1) and a != order(1, 0)
    assert ids_of(make_loader(files, batch_size=4, with_gaze=False, shuffle=False)) == sorted(a)


def test_assign_shards_is_a_partition():
    files = [f"s{i}.tar" for i in range(10)]
    for mode in ("auto", "shards", "samples"):
        plans = [assign_shards(files, s, 3, shuffle=True, seed=5, epoch=2, mode=mode) for s in range(3)]
        whole = sum((p.whole for p in plans), [])
        assert len(whole) == len(set(whole))
        assert set(whole) | set(plans[0].shared) == set(files) and not set(whole) & set(plans[0].shared)
        assert all(p.shared == plans[0].shared and (p.stride, p.offset) == (3, s) for s, p in enumerate(plans))
    auto = assign_shards(files, 0, 3, shuffle=True, seed=5, epoch=2)
    assert len(auto.whole) == 3 and len(auto.shared) == 1  # 9 dealt whole, 1 shared
    assert assign_shards(files, 1, 3, shuffle=False, seed=0, epoch=0, mode="shards").whole == [
        "s1.tar",
        "s4.tar",
        "s7.tar",
    ]
    few = assign_shards(files[:2], 2, 3, shuffle=False, seed=0, epoch=0)
    assert few.whole == [] and few.shared == files[:2]
    with pytest.raises(ValueError):
        assign_shards(files, 3, 3, shuffle=False, seed=0, epoch=0)
    with pytest.raises(ValueError, match="rank 2 is not in a world of size 2"):
        make_loader(files, batch_size=1, with_gaze=True, rank=2, world_size=2)


def test_auto_split_balances_ranks_with_an_odd_shard_count(tmp_path):
    files = dummy_shards(tmp_path, n=12, per_shard=4)  # 3 shards of 4 for 2 ranks
    seen = [ids_of(make_loader(files, batch_size=1, with_gaze=False, rank=r, world_size=2, seed=7)) for r in range(2)]
    assert [len(s) for s in seen] == [6, 6]
    assert sorted(seen[0] + seen[1]) == [f"w{i:04d}" for i in range(12)]


def test_even_shard_size():
    assert even_shard_size(266, 256) == 133
    assert even_shard_size(1001, 256) == 251 and even_shard_size(1000, 256) == 250
    assert even_shard_size(5, 256) == 5 and even_shard_size(0, 256) == 1


def test_incomplete_sample_is_a_clear_error(tmp_path):
    path = tmp_path / "bad-000000.tar"
    sample = encode_sample(
        "w0",
        [b"\xff\xd8junk"],
        np.zeros((1, 2, 2), np.float32),
        np.array([True]),
        np.zeros((1, 4, 4), np.float16),
        {"frames": [0, 30], "target_text": "x"},
    )
    with tarfile.open(path, "w") as tar:
        for k, v in sample.items():
            if k != "__key__":
                info = tarfile.TarInfo(f"w0.{k}")
                info.size = len(v)
                tar.addfile(info, io.BytesIO(v))
    with pytest.raises(ShardError, match="cannot be decoded|missing f1.jpg"):
        list(iter_samples([str(path)]))


def test_writer_refuses_inconsistent_samples(tmp_path):
    with pytest.raises(ValueError, match="2 frames"):
        encode_sample("w", [b"a", b"b"], np.zeros((3, 2, 2)), np.zeros(2, bool), np.zeros((2, 4, 4)), {})
    with pytest.raises(ValueError, match="contains '.'"):
        encode_sample("w.1", [b"a"], np.zeros((1, 2, 2)), np.zeros(1, bool), np.zeros((1, 4, 4)), {})
    w = ShardSetWriter(str(tmp_path / "x-%06d.tar"), 4)
    assert w.close() == [] and not list(tmp_path.iterdir())  # no empty shard for an empty split


def test_pooled_writer_mixes_and_writes_everything_once(tmp_path):
    import random

    from gazevlm.shards import PooledWriter

    def run(seed):
        w = PooledWriter(
            ShardSetWriter(str(tmp_path / f"s{seed}-%06d.tar"), 100),
            pool=3,
            rng=random.Random(seed),
            encode=lambda i: encode_sample(
                f"w{i:02d}", [b"x"], np.zeros((1, 2, 2)), np.ones(1, bool), np.zeros((1, 2, 2)), {"frames": [i]}
            ),
        )
        for i in range(10):
            w.add(i)
        files = w.close()
        with tarfile.open(files[0]) as tar:
            return [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".json")]

    order = run(0)
    assert sorted(order) == [f"w{i:02d}" for i in range(10)] and order != sorted(order)
    assert run(0) == order


def test_tar_members_carry_no_pax_headers(tmp_path):
    # a float mtime made tarfile write a pax header per member, parsed again on every read
    files = dummy_shards(tmp_path, n=2, per_shard=2, frames=2)
    with tarfile.open(files[0]) as tar:
        members = tar.getmembers()
    assert members and all(not m.pax_headers for m in members)


def test_model_batches_do_not_decode_the_analysis_heatmap(tmp_path):
    files = dummy_shards(tmp_path, n=4, per_shard=2, frames=2)
    batch = next(iter(make_loader(files, batch_size=2, with_gaze=True, shuffle=False)))
    assert "heatmap" not in batch and "gaze_target" in batch
    assert "heatmap" in next(iter_samples(files))


# --- completeness: a per-split manifest, checked by every reader (issue 15, item 2) -----------------


def _split(tmp_path, n=9, per_shard=3):
    """A (future, train) split of n windows under tmp_path/future, in shards of per_shard."""
    (tmp_path / "future").mkdir()
    return dummy_shards(tmp_path / "future", n=n, per_shard=per_shard, prefix="train")


def _cut_at_member_boundary(path: str, keep_samples: int) -> None:
    """Truncate a tar right before the header of sample `keep_samples` (what a copy cut short leaves)."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    keys = sorted({m.name.split(".")[0] for m in members})
    first = next(m for m in members if m.name.split(".")[0] == keys[keep_samples])
    with open(path, "r+b") as fh:
        fh.truncate(first.offset)


def test_writer_records_counts_sizes_and_checksums(tmp_path):
    import hashlib
    import json
    from pathlib import Path

    files = _split(tmp_path, n=7, per_shard=3)
    manifest = json.loads((tmp_path / "future" / "train.manifest.json").read_text())
    assert manifest["samples"] == 7
    assert {k: v["samples"] for k, v in manifest["shards"].items()} == {
        "train-000000.tar": 3,
        "train-000001.tar": 3,
        "train-000002.tar": 1,
    }
    for f in files:
        entry = manifest["shards"][Path(f).name]
        assert entry["bytes"] == Path(f).stat().st_size
        assert entry["sha256"] == hashlib.sha256(Path(f).read_bytes()).hexdigest()


def test_a_shard_cut_at_a_member_boundary_fails_naming_it(tmp_path):
    from gazevlm.train.data import MemorySource, ShardSource

    files = _split(tmp_path)
    _cut_at_member_boundary(files[1], keep_samples=1)
    with tarfile.open(files[1]) as tar:  # tarfile reads the cut shard as a valid, shorter tar
        assert len({m.name.split(".")[0] for m in tar.getmembers()}) == 1
    for read in (
        lambda: list(make_loader(("future", "train"), batch_size=2, with_gaze=True, root=tmp_path)),
        lambda: list(make_loader(files, batch_size=2, with_gaze=True)),
        lambda: list(iter_samples(("future", "train"), root=tmp_path)),
        lambda: count_samples(files),
        lambda: ShardSource("future", tmp_path).num_samples("train"),
        lambda: MemorySource("future", tmp_path).num_samples("train"),
    ):  # one rank: the default
        with pytest.raises(ShardError, match=r"train-000001\.tar: .*truncated"):
            read()


def test_the_stream_checks_counts_when_the_size_cannot_tell(tmp_path):
    import json
    from pathlib import Path

    files = _split(tmp_path)
    _cut_at_member_boundary(files[2], keep_samples=2)
    mpath = tmp_path / "future" / "train.manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["shards"]["train-000002.tar"]["bytes"] = Path(files[2]).stat().st_size  # e.g. a remote copy
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"train-000002\.tar: 2 samples read but the manifest records 3"):
        list(make_loader(("future", "train"), batch_size=2, with_gaze=True, shuffle=False, root=tmp_path))
    with pytest.raises(ShardError, match=r"train-000002\.tar: sha256 differs"):
        from gazevlm.shards import verify_split

        verify_split("future", "train", tmp_path)


def test_missing_extra_and_unlisted_shards_are_named(tmp_path):
    import shutil

    files = _split(tmp_path)
    shutil.copy(files[0], tmp_path / "future" / "train-000009.tar")
    with pytest.raises(ShardError, match=r"train-000009\.tar: not listed in .*train\.manifest\.json"):
        count_samples(("future", "train"), root=tmp_path)
    (tmp_path / "future" / "train-000009.tar").unlink()
    (tmp_path / "future" / "train-000001.tar").unlink()
    with pytest.raises(ShardError, match=r"train-000001\.tar: shard listed in train\.manifest\.json is missing"):
        count_samples(("future", "train"), root=tmp_path)
    (tmp_path / "future" / "train.manifest.json").unlink()
    with pytest.raises(ShardError, match=r"train\.manifest\.json: no shard manifest"):
        count_samples(("future", "train"), root=tmp_path)


def _sample_with(tmp_path, **members):
    path = tmp_path / "bad-000000.tar"
    sample = encode_sample(
        "w0",
        [b"\xff\xd8junk"],
        np.zeros((1, 2, 2), np.float32),
        np.array([True]),
        np.zeros((1, 4, 4), np.float16),
        {"frames": [0], "target_text": "x"},
    )
    sample.update(members)
    with tarfile.open(path, "w") as tar:
        for k, v in sample.items():
            if k != "__key__":
                info = tarfile.TarInfo(f"w0.{k}")
                info.size = len(v)
                tar.addfile(info, io.BytesIO(v))
    return str(path)


@pytest.mark.parametrize(
    "member,garbage,match",
    [
        ("target.npy", b"\x93NUMPY garbage", r"sample w0: target\.npy is not a readable \.npy array"),
        ("valid.npy", b"", r"sample w0: valid\.npy is not a readable \.npy array"),
        ("json", b"{not json", r"sample w0: the json member is not valid JSON"),
        ("json", b"[1, 2]", r"sample w0: the json member is not an object"),
    ],
)
def test_garbage_members_raise_a_named_shard_error(tmp_path, member, garbage, match, monkeypatch):
    import cv2

    monkeypatch.setattr(cv2, "imdecode", lambda *a: np.zeros((2, 2, 3), np.uint8))  # frames are not the point
    path = _sample_with(tmp_path, **{member: garbage})
    with pytest.raises(ShardError, match=r"bad-000000\.tar: " + match):
        list(iter_samples([path]))


def test_a_shard_cut_inside_a_member_is_a_named_shard_error(tmp_path):
    from pathlib import Path

    files = dummy_shards(tmp_path, n=4, per_shard=4)
    (tmp_path / "train.manifest.json").unlink()  # the tar reader's own error, not the manifest's
    data = Path(files[0]).read_bytes()
    Path(files[0]).write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(ShardError, match=r"train-000000\.tar: unreadable shard: unexpected end of data"):
        list(iter_samples(files))
