"""End to end in a real browser: JupyterLab on 127.0.0.1 serves the explorer notebook over fixture stage
outputs; Debian's chromium (driven by Playwright, no browser download) runs it, changes the window
selector and sees the displayed image change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import attention_fixtures as F
import browser_fixtures as B

REPO = Path(__file__).resolve().parents[1]

# without chromium: skipped, or failed when CI is set (tests/conftest.py)
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server over a root holding the explorer notebook and fixture stage outputs."""
    root = tmp_path / "root"
    root.mkdir()
    F.build_stage_outputs(root, F.fixture_params(tasks=("future",)))
    (root / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "explore.ipynb", root / "notebooks" / "explore.ipynb")
    with B.jupyter_lab(root, tmp_path) as server:
        yield {**server, "tmp": tmp_path}


def test_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = B.launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            B.run_notebook(page, lab, "notebooks/explore.ipynb")
            image = page.locator(".jp-OutputArea-output img").first
            image.wait_for(state="visible", timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('.jp-OutputArea-output img')?.complete", timeout=10_000
            )
            assert page.locator(".jp-OutputArea-output img").count() == 2  # one panel per run
            assert "future_vid0_0000000" in page.locator(".jp-OutputArea-output").inner_text()
            before_src, before_png = image.get_attribute("src"), image.screenshot()

            window = page.locator(".widget-dropdown", has_text="window").locator("select")
            window.select_option(index=3)
            page.wait_for_function(
                "(src) => document.querySelector('.jp-OutputArea-output img').src !== src",
                arg=before_src,
                timeout=20_000,
            )
            page.wait_for_function("() => document.querySelector('.jp-OutputArea-output img').complete", timeout=10_000)
            page.wait_for_timeout(300)
            after_png = image.screenshot()
            assert after_png != before_png
            assert "future_vid1_0000090" in page.locator(".jp-OutputArea-output").inner_text()
            shot = lab["tmp"] / "explorer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
            page.locator(".jp-OutputArea-output").last.screenshot(path=str(lab["tmp"] / "explorer_output.png"))
            assert B.stderr_outputs(page) == []
        finally:
            browser.close()
