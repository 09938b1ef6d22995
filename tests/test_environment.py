"""environment.yml, the Makefile and requirements.lock install the same pins as pyproject.toml (one
source of truth), and a fresh clone talks to no DVC remote."""

import configparser
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock() -> dict[str, str]:
    """requirements.lock as {canonical name: version}; every requirement line must be `name==version`."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.]*)", line.strip())
        assert m, f"requirements.lock: not an exact PyPI pin (no URL, option, extra or local version): {line!r}"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def test_environment_yml_parses_and_installs_this_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # the package itself, so the pins come from pyproject.toml and cannot drift
    assert any(re.fullmatch(r"-e \.(\[.*\])?", line) for line in pip)
    assert "-c requirements.lock" in pip  # and every other package at the locked version
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


def test_lock_pins_every_dependency_of_pyproject_at_its_version():
    """requirements.lock (`make lock`) holds every dependency of pyproject.toml, the test extra and the
    build system, each exactly at the pyproject pin where there is one and inside its range otherwise."""
    project, lock = _pyproject(), _lock()
    required = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["test"],
        *project["build-system"]["requires"],
    ]
    for line in required:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is in pyproject.toml but not in requirements.lock: run `make lock`"
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if pins:
            assert lock[name] == pins[0], f"{req.name}: pyproject.toml pins {pins[0]}, the lock {lock[name]}"
        assert req.specifier.contains(lock[name], prereleases=True), f"{line}: lock has {lock[name]}"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"
    # installed on their own by the Makefile, never from the lock
    assert "gazevlm" not in lock and "open-flamingo" not in lock


def test_makefile_installs_the_lock_without_resolving():
    make = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements.lock" in make
    assert "--no-deps -r $(LOCK)" in make and "--no-deps --no-build-isolation -e ." in make
    assert "pip-compile" in make and "pip-compile" in (ROOT / "requirements.lock").read_text()


def test_pre_commit_hooks_run_the_locked_tool_versions():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    lock = _lock()
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "nbstripout"} <= set(hooks)
    for hook in hooks.values():
        for dep in hook.get("additional_dependencies", []):
            req = Requirement(dep)
            assert str(req.specifier) == f"=={lock[canonicalize_name(req.name)]}", f"{hook['id']}: {dep}"


def test_dvc_config_has_no_remote():
    """Remotes are per lab (README, "Sharing data and models"): `dvc remote add --local` keeps them out of git."""
    text = (ROOT / ".dvc" / "config").read_text()
    config = configparser.ConfigParser()
    config.read_string(text)
    assert not [s for s in config.sections() if s.strip("'\"").startswith("remote")], text
    assert not config.has_option("core", "remote"), text


def test_a_browser_test_without_chromium_fails_in_ci_and_skips_elsewhere(pytester, monkeypatch):
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    assert 'CHROMIUM = Path("/usr/bin/chromium")' in conftest
    pytester.makeconftest(conftest.replace('Path("/usr/bin/chromium")', 'Path("/nonexistent/chromium")'))
    pytester.makeini("[pytest]\nmarkers =\n    browser: drives chromium\n")
    pytester.makepyfile(test_page="import pytest\n\n@pytest.mark.browser\ndef test_page():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*CI is set and chromium is missing*"])
    monkeypatch.delenv("CI")
    pytester.runpytest().assert_outcomes(skipped=1)


@pytest.mark.slow  # the throwaway tests start `true`
def test_a_test_that_starts_a_process_unmarked_gets_a_warning(pytester):
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: starts a process\n    browser: drives chromium\n")
    true = shutil.which("true")
    pytester.makepyfile(
        test_procs=f"""
import subprocess
import pytest

def test_unmarked():
    subprocess.run([{true!r}], check=True)

@pytest.mark.slow
def test_marked():
    subprocess.run([{true!r}], check=True)

def test_no_process():
    pass
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*test_unmarked*", "*started a process but is not marked slow*"])
