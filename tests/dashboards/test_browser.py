"""Headless Chromium renders the dashboard of the live smoke study, a trial's artifacts, and the report."""

from __future__ import annotations

import html
import re

import pytest
from PIL import Image, ImageStat

from mnist_hpo import storage
from mnist_hpo.dashboards import figures, write_report

from .conftest import N_TRIALS, get

pytestmark = pytest.mark.slow  # real studies or several processes: `-m 'not slow'` leaves it out

pytestmark = pytest.mark.timeout(300)


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def check_screenshot(path, size) -> None:
    image = Image.open(path)
    assert image.size == size
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10, f"{path} looks blank (grey-level spread {spread:.1f})"


def test_dashboard_page_shows_the_study_and_its_trial_count(live, chromium):
    page = f"{live.base}/dashboard/studies/{live.study_id}/trials"
    done = chromium.dump_dom(page)
    text = visible_text(done.stdout)
    assert f"{live.study} (id={live.study_id})" in text, text[:2000]
    assert f"{N_TRIALS} Trials" in text, text[:2000]
    overview = chromium.screenshot(f"{live.base}/dashboard/studies/{live.study_id}", "dashboard-study.png")
    check_screenshot(overview, (1280, 900))


def test_a_trials_artifacts_open_in_the_dashboard(live, chromium):
    study = storage.load_study(live.url, live.study)
    best = study.best_trial
    page = f"{live.base}/dashboard/studies/{live.study_id}/trials?numbers={best.number}"
    dom = chromium.dump_dom(page).stdout
    assert f"Trial {best.number} (trial_id={best._trial_id})" in visible_text(dom)
    images = dict(re.findall(r'<img[^>]*\balt="([^"]+\.png)"[^>]*\bsrc="(/artifacts/[^"]+)"', dom))
    assert {figures.CURVES, figures.CONFUSION, figures.MISCLASSIFIED} <= set(images), images
    for name, src in images.items():
        status, content_type, body = get(live.base + src)
        assert status == 200 and content_type == "image/png", (name, status, content_type)
        assert figures.png_size(body) == figures.SIZES[name]
    shot = chromium.screenshot(page, "dashboard-trial-artifacts.png", size=(1280, 1800))
    check_screenshot(shot, (1280, 1800))


def test_report_renders_offline_without_javascript_errors(live, chromium, tmp_path):
    out = write_report(live.url, live.study, tmp_path / "report.html", live.artifacts)
    document = out.read_text(encoding="utf-8")
    assert "<script src=" not in document.replace(" ", "")  # nothing loaded from elsewhere
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", document)
    assert document.count("plotly.js v") == 1  # the library, inlined once
    done = chromium.dump_dom(out.as_uri(), "--enable-logging=stderr", "--v=0")
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    dom = done.stdout
    plots = len(re.findall(r'id="plot-\d+"', document))
    assert plots >= 5  # history, intermediate values, importances, parallel coordinates, slices
    assert dom.count('class="plot-container plotly"') == plots, "a plot did not render"
    assert dom.count('class="main-svg"') >= plots
    text = visible_text(dom)
    assert f"Study {live.study}" in text and "validation accuracy (selection)" in text
    assert "test: not measured" in text  # no test figure unless measured
    pictures = re.findall(r'<img alt="([^"]+)"[^>]*src="data:image/png;base64,', dom)  # the best trial's, inlined
    assert len(pictures) == 3 and any("confusion matrix" in alt for alt in pictures), pictures
    shot = chromium.screenshot(out.as_uri(), "report.png")
    check_screenshot(shot, (1280, 900))


@pytest.fixture(scope="module")
def window(chromium):
    """A Chromium page of 1,400 × 1,000 pixels, driven by playwright (scripts measure the layout)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra); it drives Debian's chromium")
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=chromium.path, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    browser.close()
    playwright.stop()


@pytest.mark.parametrize("view", ["trials?numbers=BEST", "", "trialTable", "note"], ids=["trial", "study", "table", "note"])
def test_dashboard_pages_fit_a_1400_pixel_window(live, window, view):
    """A trial's note and attributes (long JSON lines: its curve, spec, settings) wrap instead of running off to the right."""
    best = storage.load_study(live.url, live.study).best_trial.number
    window.goto(f"{live.base}/dashboard/studies/{live.study_id}/{view.replace('BEST', str(best))}")
    shown = "learning_curve" if view.startswith("trials") else live.study  # rendered after the page's first API answer
    window.wait_for_function(f"document.body.innerText.includes({shown!r})", timeout=30_000)
    widths = window.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"
