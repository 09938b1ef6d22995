"""End to end in a real browser: JupyterLab on 127.0.0.1 serves the explorer notebook over fixture stage
outputs; Debian's chromium (driven by Playwright, no browser download) runs it, changes the window
selector and sees the displayed image change."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import attention_fixtures as F

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# without chromium: skipped, or failed when CI is set (tests/conftest.py)
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server over a root holding the explorer notebook and fixture stage outputs."""
    root = tmp_path / "root"
    root.mkdir()
    F.build_stage_outputs(root, F.fixture_params(tasks=("future",)))
    (root / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "explore.ipynb", root / "notebooks" / "explore.ipynb")
    home = tmp_path / "jupyter"
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # kernel = this venv
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTER_PLATFORM_DIRS": "1",
           "IPYTHONDIR": str(home / "ipython")}
    # no "official Jupyter news?" toast over the page (config dir is this test's own)
    (home / "config" / "labconfig").mkdir(parents=True)
    (home / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    log = tmp_path / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.terminals_enabled=False",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/api/status?token={token}", proc, log)
        yield {"base": base, "token": token, "tmp": tmp_path, "log": log}
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url = f"{lab['base']}/lab/tree/notebooks/explore.ipynb?token={lab['token']}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
            # wait for the kernel, then run every cell through JupyterLab's own command
            page.wait_for_function("() => { const w = window.jupyterapp?.shell?.currentWidget;"
                                   " const k = w?.sessionContext?.session?.kernel;"
                                   " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
                                   timeout=60_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            image = page.locator(".jp-OutputArea-output img").first
            image.wait_for(state="visible", timeout=60_000)
            page.wait_for_function("() => document.querySelector('.jp-OutputArea-output img')?.complete", timeout=10_000)
            assert page.locator(".jp-OutputArea-output img").count() == 2   # one panel per run
            assert "future_vid0_0000000" in page.locator(".jp-OutputArea-output").inner_text()
            before_src, before_png = image.get_attribute("src"), image.screenshot()

            window = page.locator(".widget-dropdown", has_text="window").locator("select")
            window.select_option(index=3)
            page.wait_for_function("(src) => document.querySelector('.jp-OutputArea-output img').src !== src",
                                   arg=before_src, timeout=20_000)
            page.wait_for_function("() => document.querySelector('.jp-OutputArea-output img').complete",
                                   timeout=10_000)
            page.wait_for_timeout(300)
            after_png = image.screenshot()
            assert after_png != before_png
            assert "future_vid1_0000090" in page.locator(".jp-OutputArea-output").inner_text()
            shot = lab["tmp"] / "explorer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            page.locator(".jp-OutputArea-output").last.screenshot(path=str(lab["tmp"] / "explorer_output.png"))
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()
        finally:
            browser.close()
