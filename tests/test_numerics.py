"""gazevlm.numerics: torch computes with the same kernels, hence the same bytes, on every x86-64 machine.

Another machine is simulated by this one without AVX-512 for MKL (MKL_ENABLE_INSTRUCTIONS=AVX2): the
bytes of a few training steps must not move while the numerics are pinned. Without the pin they do, on
a machine with AVX-512 (which the check needs to see a difference at all)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from gazevlm import numerics

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine() in ("x86_64", "AMD64")

# a few steps of a small transformer layer: MKL GEMMs, ATen's softmax and norms, their backward
STEPS = """
import hashlib, json, gazevlm, torch
torch.manual_seed(0)
torch.set_num_threads(1)
layer = torch.nn.TransformerEncoderLayer(96, 4, 192, dropout=0.0, batch_first=True, norm_first=True)
opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
x = torch.randn(16, 48, 96)
for _ in range(5):
    opt.zero_grad()
    layer(x).pow(2).mean().backward()
    opt.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in layer.parameters())).hexdigest()
print(json.dumps({"digest": digest, "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def unpinned_env() -> dict[str, str]:
    """This environment without the pinned variables: what a fresh shell gives `import gazevlm`."""
    return {k: v for k, v in os.environ.items() if k not in numerics.PINNED}


def run_steps(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STEPS],
        env={**unpinned_env(), **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pin_sets_defaults_keeps_the_users_values_and_can_be_switched_off():
    env = {"MKL_CBWR": "AUTO"}
    assert numerics.pin(env) == {**numerics.PINNED, "MKL_CBWR": "AUTO"}
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "AUTO"
    off = {numerics.NATIVE_SWITCH: "1"}
    assert numerics.pin(off) == {} and set(off) == {numerics.NATIVE_SWITCH}
    assert numerics.pin({numerics.NATIVE_SWITCH: "0"}) == numerics.PINNED


def test_importing_gazevlm_pins_torch_before_it_computes():
    code = "import gazevlm, json, torch; from gazevlm import numerics; print(json.dumps(numerics.in_effect()))"
    got = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], env=unpinned_env(), capture_output=True, text=True, check=True
        ).stdout
    )
    assert {k: got[k] for k in numerics.PINNED} == numerics.PINNED
    if X86:
        assert got["torch_cpu_capability"] == "AVX2"


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="MKL and its instruction sets are x86-64's")
def test_training_bytes_do_not_depend_on_the_instructions_the_cpu_has():
    # this CPU as it is, and as one without AVX-512 (MKL told not to use it)
    assert run_steps() == run_steps(MKL_ENABLE_INSTRUCTIONS="AVX2")
    if "avx512f" in Path("/proc/cpuinfo").read_text():  # else this machine cannot show the difference
        native = {numerics.NATIVE_SWITCH: "1"}
        assert run_steps(**native)["digest"] != run_steps(**native, MKL_ENABLE_INSTRUCTIONS="AVX2")["digest"]


@pytest.mark.slow
def test_every_stage_notebook_imports_gazevlm_before_torch():
    """The pin acts only if it runs before torch is imported: what a notebook imports before gazevlm
    must not bring torch in."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
        imports = [line for line in code if line.startswith(("import ", "from "))]
        first = next(i for i, line in enumerate(imports) if "gazevlm" in line)
        probe = "\n".join([*imports[:first], "import sys", "print('torch' in sys.modules)"])
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
        assert out.stdout.strip() == "False", f"{notebook.name} imports torch before gazevlm: {imports[:first]}"
