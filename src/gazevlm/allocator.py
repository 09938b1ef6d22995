"""Keep freed memory in the process for the next step (glibc malloc on Linux; a no-op elsewhere).

A CPU training step allocates and frees the same few-MB activations and gradients every time. glibc
hands freed memory at the top of its heap back to the kernel once more than M_TRIM_THRESHOLD is free
(a dynamic threshold that stays small), so the next step faults the same pages in again and zero-fills
them. With the heap kept, the tiny models' training step took 46 instead of 51 ms (base) and 134
instead of 142 ms (gaze, two patch layers; bench.bench_model's Trainer, one thread, 3 rounds of 10
steps). Memory is not returned to the OS until the process ends; the training and generation workers
that call this are short-lived processes of one model each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (larger values are refused): blocks up to it come from
# the heap and are reused; the tiny models' largest activations are a few MB
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks for reuse; True when it took all three settings."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
