"""gazevlm.allocator: freed blocks stay in the heap for the next training step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# a fresh interpreter each: the setting lasts for the process, and pytest's own must stay as it was
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from gazevlm import allocator

    NAMES = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in NAMES]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    took = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
    block = bytearray(8 << 20)  # a step's activation: above glibc's default mmap threshold (128 KiB)
    del block
    print(took, libc.mallinfo2().fordblks)
    """
)


def _free_in_heap(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc: Linux only")
def test_freed_blocks_stay_in_the_heap_only_when_asked():
    took, kept = _free_in_heap("keep")
    _, default = _free_in_heap("default")
    assert took == "True"
    assert kept >= 8 << 20  # the freed 8 MiB is still the process's, for the next step
    assert default < 8 << 20  # glibc's default gave it back (an mmap'ed block, unmapped on free)


def test_generation_workers_keep_freed_memory(monkeypatch):
    import torch

    from gazevlm import allocator
    from gazevlm.evaluate import generation

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("kept") or True)
    monkeypatch.setattr(generation, "_Generator", lambda params, root: ("generator", params, root))
    threads = torch.get_num_threads()
    try:
        generation._start_worker("params", "root")
    finally:
        torch.set_num_threads(threads)
        monkeypatch.setattr(generation, "_WORKER", None)
    assert calls == ["kept"]
