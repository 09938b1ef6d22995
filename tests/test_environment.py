"""environment.yml and the Makefile install the same pins as pyproject.toml (one source of truth)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_parses_and_installs_this_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # the package itself, so the pins come from pyproject.toml and cannot drift
    assert any(re.fullmatch(r"-e \.(\[.*\])?", line) for line in pip)
    requires = _pyproject()["project"]["requires-python"]
    assert "3.11" in requires


def test_pins_are_exact_for_the_stack():
    deps = {re.split(r"[=<>~\[ ]", d)[0].lower(): d for d in _pyproject()["project"]["dependencies"]}
    for name in ("torch", "torchvision", "transformers", "dvc", "papermill", "webdataset", "open_clip_torch"):
        assert "==" in deps[name], f"{name} must be pinned exactly: {deps[name]}"
    assert deps["torch"] == "torch==2.14.1" and deps["torchvision"] == "torchvision==0.29.1"


def test_makefile_installs_open_flamingo_without_deps():
    make = (ROOT / "Makefile").read_text()
    assert "--no-deps open_flamingo==2.0.1" in make


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in readme and "make repro" in readme
