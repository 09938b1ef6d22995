"""The same floating-point code paths on every x86-64 machine, so that the same params give the same bytes.

torch chooses its CPU kernels by the machine it runs on: ATen's vectorised loops by the widest instruction
set (AVX2 or AVX-512), MKL's matrix products by the CPU model (blocking, order of the sums), oneDNN's
convolutions likewise. Each choice rounds differently, and a model trained for a thousand steps ends
somewhere else: the default pipeline's metrics, byte-identical run after run on one machine, differed on
the next (future object accuracy, gaze - base: +0.045, p 0.038 on one; +0.036, p 0.12 on another; README
"Same bytes on every machine"). Pinning all three to their AVX2 paths (MKL's Conditional Numerical
Reproducibility mode, strict) gives the same results on every CPU with AVX2. On an AVX-512 machine that
costs a tiny training step ~20% (MKL's AVX2 GEMMs; ATen's AVX2 loops nothing measurable), the train
stages 8% and `make repro` 3% (12.5 -> 12.9 min).

The variables must be in the environment before torch computes anything, so `import gazevlm` sets them
(every stage notebook, worker and test imports gazevlm before torch). Each is only a default: export your
own value (e.g. MKL_CBWR=AUTO for a faster run whose bytes depend on the machine), or set
GAZEVLM_NATIVE_NUMERICS=1 to pin nothing. Thread counts matter too: a stage whose results depend on them
runs with a fixed count (STAGE_THREADS), never "every core".
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels (softmax, norms, SDPA on CPU, reductions)
    "MKL_CBWR": "AVX2,STRICT",  # MKL's GEMMs: one code path and summation order on any CPU with AVX2
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions (the vision tower's patch embedding)
}
NATIVE_SWITCH = "GAZEVLM_NATIVE_NUMERICS"
# intra-op threads of stages that train in the stage's own process (pretrain): the gradients' sums are
# split by thread, so "every core" would make the bytes depend on the machine's core count
STAGE_THREADS = 2


def pin(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set each PINNED variable the environment does not already set; returns the values in effect."""
    if environ.get(NATIVE_SWITCH, "").strip() not in ("", "0"):
        return {}
    for key, value in PINNED.items():
        environ.setdefault(key, value)
    return {key: environ[key] for key in PINNED}


def in_effect() -> dict[str, str]:
    """What this process computes with (for reports): torch's kernel capability and the pinned variables."""
    import torch

    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{key: os.environ.get(key, "") for key in PINNED},
    }
