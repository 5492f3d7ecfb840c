"""02-replay-analysis.ipynb in JupyterLab, in headless Chromium: run every cell, then check
that the replay player and the plotly charts rendered in the page; keep a screenshot."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.notebooks.jupyterlab import REPO, JupyterLab

pytestmark = pytest.mark.browser

NOTEBOOK = "02-replay-analysis.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("PULLTRACE_ARTIFACTS", REPO / "artifacts"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1800")

# JavaScript run in the page (JupyterLab exposes its app as window.jupyterapp).
JS_READY = """
const app = window.jupyterapp;
if (!app || !app.shell) return false;
const nb = app.shell.currentWidget;
if (!nb || !nb.sessionContext || !nb.content) return false;
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
return Boolean(kernel) && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
"""
JS_RUN_ALL = "window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"
JS_PROGRESS = """
const nb = window.jupyterapp.shell.currentWidget;
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
const done = cells.filter(c => c.model.executionCount !== null).length;
return [done, cells.length, nb.sessionContext.session.kernel.status];
"""


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if not missing:
        return
    message = (f"{', '.join(missing)} not found: install Debian's chromium and "
               "chromium-driver (apt-get install -y chromium chromium-driver)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def lab(tmp_path) -> Iterator[JupyterLab]:
    with JupyterLab(tmp_path, [NOTEBOOK]) as running:
        yield running


@pytest.fixture
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = driver.execute_script(script)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _count(driver, selector: str) -> int:
    return int(driver.execute_script(
        "return document.querySelectorAll(arguments[0]).length;", selector))


def test_replay_notebook_renders_in_chromium(lab, browser):
    browser.get(lab.notebook_url(NOTEBOOK))
    _wait(browser, JS_READY, 90, "JupyterLab to open the notebook with an idle kernel")
    browser.execute_script(JS_RUN_ALL)
    done: list = []

    def finished() -> bool:
        done[:] = browser.execute_script(JS_PROGRESS)
        return done[0] == done[1] and done[2] == "idle"

    deadline = time.monotonic() + 180
    while not finished():
        assert time.monotonic() < deadline, f"cells still running: {done}"
        time.sleep(0.5)

    # No cell failed.
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll("
        "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]'))"
        ".map(e => e.innerText.slice(0, 500));")
    assert errors == []

    # The replay player: its box, the play control, the time slider and its two charts.
    player = ".jp-OutputArea-output .pulltrace-replay"
    _wait(browser, f"return document.querySelectorAll('{player} .js-plotly-plot').length >= 2;",
          60, "the player's two charts")
    assert _count(browser, player) == 1
    assert _count(browser, f"{player} .widget-play") == 1
    assert _count(browser, f"{player} .widget-slider") >= 1
    assert _count(browser, f"{player} .pulltrace-pulls") == 1
    # The notebook's seven figures, drawn by plotly.js from their mime bundles.
    _wait(browser, "return document.querySelectorAll("
                   "'.jp-OutputArea-output.jp-RenderedPlotly .main-svg').length >= 7;", 60,
          "the notebook's plotly charts")
    assert _count(browser, ".jp-OutputArea-output.jp-RenderedPlotly") == 7
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot .gtitle'))"
        ".map(e => e.textContent);")
    assert any(t.startswith("Fetched throughput, by node") for t in titles)
    assert any(t.startswith("Layer waterfall") for t in titles)

    # Play moves the moment: the browser's clock steps the slider, the kernel redraws.
    clock = f"{player} .pulltrace-clock"
    before = browser.execute_script(
        "return document.querySelector(arguments[0]).textContent;", clock)
    browser.execute_script(
        "document.querySelector(arguments[0]).scrollIntoView();", player)
    browser.execute_script(
        "document.querySelector(arguments[0]).click();", f"{player} .widget-play button")
    _wait(browser, f"return document.querySelector('{clock}').textContent !== {before!r};",
          30, "the player's clock to move after pressing play")
    time.sleep(1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "02-replay-analysis.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
