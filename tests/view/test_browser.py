"""The page in a real browser: Debian's chromium, headless, driven by Playwright (never `playwright install`).

CI installs chromium (`.ci/run`); elsewhere these tests skip when it is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sperm_edge.view import RunView
from tests.view.conftest import live_run, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert not errors, errors  # no JavaScript error on the page


def _number(page, selector: str) -> int:
    return int(page.inner_text(selector).split()[0])


def test_live_page_counts_streams_explains_and_finishes(page, tiny_bundle: Path, watch_clip: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "live"
    with live_run(tiny_bundle, watch_clip, out, "--fps", "4", "--view-linger", "5", token="auto") as run:
        shown = wait_for(lambda: next((w for w in run.output().split() if "?token=" in w), None), 30, "the URL")
        token = (out / "view_token").read_text().strip()  # the log shows 4 characters of it, the file all
        assert token not in run.output() and shown.endswith(f"?token={token[:4]}…")
        page.goto(shown.split("?")[0] + f"?token={token}")
        page.wait_for_selector("#state.live")
        assert "token" not in page.url  # moved into an HTTP-only cookie, out of the address bar
        # the MJPEG stream renders in the <img>
        page.wait_for_function("() => document.getElementById('stream').naturalWidth > 0")
        assert page.eval_on_selector("#stream", "img => img.naturalWidth") == 480
        # the counts change while the clip plays
        page.wait_for_function("() => parseInt(document.getElementById('progress-text').textContent) > 0")
        before = _number(page, "#progress-text")
        page.wait_for_function(f"() => parseInt(document.getElementById('progress-text').textContent) > {before}")
        assert page.inner_text("#percent") != "-"
        # a flagged cell's crop shows in the gallery; clicking it asks for its explanation and shows the heatmap
        cell = page.wait_for_selector(".cell")
        page.wait_for_function("() => document.querySelector('.cell .crop').naturalWidth > 0")
        cell.click()
        page.wait_for_selector("#explain[open]")
        heat = page.wait_for_selector("#explain-image")
        page.wait_for_function("() => document.getElementById('explain-image').naturalWidth > 0")
        assert "LayerCAM" in heat.get_attribute("alt")  # the bundle's explainer draws explained cells
        cell_id = int(cell.get_attribute("data-id"))
        assert (out / "explanations" / f"{cell_id:06d}.png").is_file()
        page.keyboard.press("Escape")
        # finish writes the report, and the page says so
        page.click("#finish")
        wait_for(lambda: (out / "report.json").is_file(), 60, "the report")
        page.wait_for_selector("#state.finished")
        report = json.loads((out / "report.json").read_text())
        page.wait_for_function(f"() => document.getElementById('meta').textContent.includes('{report['cells']} cells')")
        # and offers the clinical report: the PDF, made on the first click, through the page's own cookie
        link = page.wait_for_selector("#pdf", state="visible")
        pdf = page.request.get(page.url.split("?")[0].rstrip("/") + link.get_attribute("href"), timeout=30_000)
        assert pdf.ok and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF")
        assert page.is_disabled("#finish") and run.wait(60) == 0


def test_finished_run_page_shows_the_gallery_and_heatmaps(page, finished_run: Path) -> None:
    with RunView(finished_run, port=0) as served:
        page.goto(served.url)
        page.wait_for_selector("#state.finished")
        assert page.is_hidden("#stream") and page.is_visible("#no-stream")
        report = json.loads((finished_run / "report.json").read_text())
        page.wait_for_function(f"() => document.querySelectorAll('.cell').length === {min(60, report['flagged'])}")
        page.wait_for_selector(".cell.explained")  # heatmaps written by the run show in the gallery
        page.click(".cell")
        page.wait_for_function("() => document.getElementById('explain-image')?.naturalWidth > 0")
        assert page.is_disabled("#pause") and page.is_disabled("#finish") and page.is_visible("#pdf")
