"""The rating form in a real browser: JupyterLab on 127.0.0.1 serves notebooks/rate_hallucinations.ipynb over a
fixture repository (test shards, two runs' predictions, params.yaml); Debian's chromium (Playwright) runs
it, rates three items (one with a note) and the ratings file then holds exactly those three rows, in the
blinded order drawn from the seed, while the page never showed a run name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import browser_fixtures as B
import hallucination_fixtures as RF
from gazevlm.hallucination import ratings, study

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/rate_hallucinations.ipynb"

# without chromium: skipped, or failed when CI is set (tests/conftest.py)
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_rating_three_items_in_jupyterlab(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    p = RF.build_root(root, n_windows=6, windows=4)  # 8 items
    (root / "notebooks").mkdir()
    shutil.copy(REPO / NOTEBOOK, root / NOTEBOOK)
    note = 'names a knife that is not there, "twice"'
    with B.jupyter_lab(root, tmp_path) as lab, sync_playwright() as pw:
        browser = B.launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            B.run_notebook(page, lab, NOTEBOOK)
            form = page.locator(".jp-OutputArea-output").filter(has_text="Hallucinated")
            expect(form).to_contain_text("0 of 8 rated", timeout=60_000)
            yes = page.get_by_role("button", name="Hallucinated: yes")
            no = page.get_by_role("button", name="Hallucinated: no")
            for k, answer in enumerate((yes, no, yes)):
                assert form.locator("img").count() == 5  # the window's frames
                shown = form.inner_text().lower()
                assert not any(run in shown for run in RF.RUNS), shown
                if k == 0:
                    box = form.locator(".widget-text input")
                    box.fill(note)
                    box.press("Tab")  # the value reaches the kernel before the click
                page.wait_for_timeout(400)  # the form ignores a click sooner than 0.3 s after an item appears
                answer.click()
                expect(form).to_contain_text(f"{k + 1} of 8 rated", timeout=20_000)
            page.screenshot(path=str(tmp_path / "rating.png"), full_page=True)
            assert B.stderr_outputs(page) == []
        finally:
            browser.close()

    table = ratings.read_ratings(root / "ratings" / "hallucination.csv")
    expected = study.draw_sample(p, study.load_predictions(p, root)).items[:3]
    assert table.skipped == [] and len(table.rows) == 3
    assert list(zip(table.rows["run"], table.rows["window_id"], strict=True)) == [
        (it.run, it.window_id) for it in expected
    ]
    assert list(table.rows["prediction_hash"]) == [it.prediction_hash for it in expected]
    assert list(table.rows["hallucinated"]) == [True, False, True]
    assert list(table.rows["note"]) == [note, "", ""]
