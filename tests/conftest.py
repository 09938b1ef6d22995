"""Suite-wide settings: nothing in the tests may reach a network or a model hub; browser tests need
Debian's chromium.

Marks (pyproject.toml registers them): `slow` for every test that starts another process (subprocess,
torchrun or multiprocessing ranks, DataLoader workers, papermill's kernel, JupyterLab) or runs the
pipeline, so that `make test-fast` (-m "not slow and not browser") stays under 3 minutes on 2 cores;
`browser` for tests that drive chromium. pytest-timeout's default (pyproject.toml) applies to every
test; a longer one is a `pytest.mark.timeout(seconds)` beside the test.
"""

import multiprocessing.process
import os
import subprocess
from pathlib import Path

import pytest

import gazevlm  # noqa: F401  before any test module imports torch: the pinned kernels (gazevlm.numerics)

pytest_plugins = ["pytester"]  # tests/test_environment.py runs this file's hooks on a throwaway suite

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`make browser`); what the browser tests launch


def _env_flag(name: str) -> bool:
    """An environment switch: unset, "", "0", "false" and "no" mean off."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def in_ci() -> bool:
    """CI sets CI=true (.ci/run's environment); off means a developer's machine."""
    return _env_flag("CI")


def every_variant() -> bool:
    """GAZEVLM_E2E_ALL=1 (`make test-all`): also the end-to-end tests marked `every_variant` (every backbone
    and every ablation target as DVC experiments, about 12 more minutes on 2 cores). `make test` runs one of
    each kind, so that it stays within 15 minutes; the others' code is covered by their own unit tests."""
    return _env_flag("GAZEVLM_E2E_ALL")


def pytest_collection_modifyitems(config, items):
    # deselected, not skipped: `make test` does not claim them; `make test-all` runs them
    if every_variant():
        return
    kept = [item for item in items if not item.get_closest_marker("every_variant")]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("every_variant")])
        items[:] = kept


def pytest_runtest_setup(item):
    # A browser test without chromium skips on a developer's machine but fails in CI, so that a broken
    # `make browser` cannot turn the end-to-end explorer test into a silent skip.
    if item.get_closest_marker("browser") and not CHROMIUM.exists():
        why = f"needs Debian's chromium at {CHROMIUM} (`make browser` installs it when run as root)"
        if in_ci():
            pytest.fail(f"CI is set and chromium is missing: {why}", pytrace=False)
        pytest.skip(why)


class UnmarkedProcessWarning(pytest.PytestWarning):
    """A test outside `slow` started a process: mark it `@pytest.mark.slow` (see the docstring above)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Keep `make test-fast` honest: a test not marked slow (or browser) that starts a process, in its
    fixtures or its body, gets a warning naming the command, in every run's warnings summary."""
    if item.get_closest_marker("slow") or item.get_closest_marker("browser"):
        yield
        return
    started: list[str] = []
    popen_init, process_start = subprocess.Popen.__init__, multiprocessing.process.BaseProcess.start

    def recording_popen_init(self, args, *a, **kw):
        started.append(args if isinstance(args, str) else " ".join(map(str, args)))
        popen_init(self, args, *a, **kw)

    def recording_start(self):
        started.append(f"{type(self).__name__} (multiprocessing)")
        process_start(self)

    subprocess.Popen.__init__, multiprocessing.process.BaseProcess.start = recording_popen_init, recording_start
    try:
        yield
    finally:
        subprocess.Popen.__init__, multiprocessing.process.BaseProcess.start = popen_init, process_start
    if started:
        item.warn(UnmarkedProcessWarning(f"started a process but is not marked slow: {started[0][:120]}"))


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory) -> Path:
    """A scratch clone on the shrunken world (pipeline_fixtures.SMALL) after `dvc repro`, as `make repro`
    runs it after installing, with this test's venv. Shared by the end-to-end modules: the ablation
    targets queue experiments beside the workspace; tests/test_e2e_pipeline.py then runs its own."""
    from pipeline_fixtures import SMALL, clone, run

    dest = clone(tmp_path_factory.mktemp("clone") / "gazevlm", SMALL)
    run(["dvc", "repro"], dest)
    return dest
