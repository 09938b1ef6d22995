"""gazevlm.atomic: the one writer every stage's files go through (whole file or the old one, never half)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from gazevlm import atomic


def test_write_json_keeps_each_format_byte_for_byte(tmp_path):
    obj = {"b": 1.5, "a": [1, None], "é": "ü"}
    assert atomic.write_json(tmp_path / "x.json", obj).read_text() == json.dumps(obj, indent=2) + "\n"
    atomic.write_json(tmp_path / "y.json", obj, indent=1, sort_keys=True, ensure_ascii=False, trailing_newline=False)
    assert (tmp_path / "y.json").read_bytes() == json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False).encode()
    atomic.write_json(tmp_path / "z.json", {"p": tmp_path}, default=str)
    assert json.loads((tmp_path / "z.json").read_text()) == {"p": str(tmp_path)}


def test_write_creates_parent_directories_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic.write_text(path, "one")
    atomic.write_text(path, "twö")
    assert path.read_bytes() == "twö".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    atomic.write_bytes(path, b"good")
    with pytest.raises(RuntimeError, match="boom"), atomic.atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    path = atomic.write_json(tmp_path / "f.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_concurrent_writers_of_one_file_never_share_a_temporary(tmp_path):
    path = tmp_path / "f.json"
    temps: list[str] = []

    def write(i: int) -> None:
        with atomic.atomic_path(path) as tmp:
            temps.append(tmp.name)
            tmp.write_text(json.dumps({"writer": i}))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(temps)) == 8
    assert json.loads(path.read_text())["writer"] in range(8)
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_json_safe_writes_nan_as_null_for_strict_readers(tmp_path):
    obj = {"a": float("nan"), 3: (np.float64("nan"), 0.5, [np.nan, {"b": 1}]), "c": "x"}
    assert atomic.json_safe(obj) == {"a": None, "3": [None, 0.5, [None, {"b": 1}]], "c": "x"}
    path = atomic.write_json(tmp_path / "m.json", atomic.json_safe(obj))
    assert "NaN" not in path.read_text()
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in a metrics file"))
