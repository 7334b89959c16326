"""The page in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium; no browser
download): load it with a token in the URL, move the temperature slider, Generate, watch the text grow while it
streams, Stop, open the lesson view and the run view, and fit a phone's width.

Skips (with the install command) where Chromium is missing, except under CI (env CI set), where it fails.
Saves a screenshot on failure. `CHARLSTM_PLAYGROUND_PNG=docs/playground.png pytest tests/test_playground_browser.py`
also writes the README's screenshot (with `CHARLSTM_PLAYGROUND_RUN=runs/NAME` it shows that run instead of the
tests' tiny one).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from servers import get_json, live_server, make_model

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
TOKEN = "browser-token"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
]

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(Path(p).name))]
    if missing:
        message = f"headless browser test needs {', '.join(missing)}: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    _need_browser()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver"))
    d = webdriver.Chrome(service=service, options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_run):
    """The tests' tiny trained run (readable text, metrics, samples) and a slow wide model for streaming."""
    _need_browser()
    run = os.environ.get("CHARLSTM_PLAYGROUND_RUN") or str(tiny_run)
    slow = make_model(tmp_path_factory.mktemp("browser") / "wide512.keras", units=512, embedding_dim=64)
    with live_server([run, str(slow)], "--token", TOKEN, "--max-length", "10000") as base:
        yield base, Path(run).resolve().name


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_playground_in_a_real_browser(driver, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    base, run_name = server
    js = driver.execute_script
    by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
    gen_text = lambda: js("return document.querySelector('#output .gen-text').textContent")  # noqa: E731
    try:
        driver.set_window_size(1280, 1000)
        driver.get(base + "/#token=" + TOKEN)
        wait_for(lambda: len(Select(by_id("model")).options) == 2, what="the model list")
        assert "token" not in driver.current_url  # taken out of the address bar
        for el in driver.find_elements(By.CSS_SELECTOR, "input, select, textarea"):  # every control labelled
            assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{el.get_attribute('id')}']"), el.get_attribute("id")

        # the temperature slider, moved with the keyboard as a person would
        slider = by_id("temperature")
        slider.click()
        for _ in range(10):
            slider.send_keys(Keys.ARROW_LEFT)
        assert by_id("temperature-value").text == "0.50" and slider.get_attribute("value") == "0.5"

        # Generate on the slow model: the text grows while it streams; Stop ends it, here and on the server
        Select(by_id("model")).select_by_visible_text("wide512")
        js("const l = document.getElementById('length'); l.value = 10000; l.dispatchEvent(new Event('input'))")
        by_id("generate").click()
        first = wait_for(lambda: len(gen_text()), what="the first characters")
        wait_for(lambda: len(gen_text()) > first + 20, timeout=10, what="the text to grow")
        by_id("stop").click()
        wait_for(lambda: "stopped after" in by_id("status").text, what="the stopped status")
        stopped = len(gen_text())
        assert 0 < stopped < 10_000
        health = lambda: get_json(base + "/healthz")["models"]["wide512"]["active"]  # noqa: E731
        wait_for(lambda: health() == 0, timeout=5, what="the server to stop generating")
        time.sleep(0.3)
        assert len(gen_text()) == stopped

        # a whole generation on the trained run, at the slider's temperature
        Select(by_id("model")).select_by_visible_text(run_name)
        js("const l = document.getElementById('length'); l.value = 600; l.dispatchEvent(new Event('input'))")
        by_id("seed").send_keys("7")
        by_id("generate").click()
        wait_for(lambda: "ended by length" in by_id("status").text, what="the finished generation")
        assert len(gen_text()) == 600
        generated = driver.find_element(By.ID, "output").text
        png = os.environ.get("CHARLSTM_PLAYGROUND_PNG")
        if png:
            driver.set_window_size(1280, 900)
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(png)

        # the lesson view: four temperatures side by side from one prime
        by_id("tab-lesson").click()
        assert by_id("view-lesson").is_displayed() and not by_id("view-generate").is_displayed()
        js("const l = document.getElementById('lesson-length'); l.value = 200; l.dispatchEvent(new Event('input'))")
        by_id("lesson-generate").click()
        cols = wait_for(lambda: [c for c in driver.find_elements(By.CSS_SELECTOR, ".lesson-col")
                                 if "characters" in c.find_element(By.CLASS_NAME, "status").text] or None,
                        what="four finished columns")
        wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, ".lesson-col")) == 4 and all(
            "characters" in c.find_element(By.CLASS_NAME, "status").text
            for c in driver.find_elements(By.CSS_SELECTOR, ".lesson-col")), what="all four columns")
        cols = driver.find_elements(By.CSS_SELECTOR, ".lesson-col")
        assert [c.get_attribute("data-temperature") for c in cols] == ["0.2", "0.5", "1", "1.2"]
        texts = [c.find_element(By.CLASS_NAME, "gen-text").get_attribute("textContent") for c in cols]
        primes = {c.find_element(By.CLASS_NAME, "prime-text").get_attribute("textContent") for c in cols}
        assert all(len(t) == 200 for t in texts) and len(set(texts)) == 4 and len(primes) == 1

        # the run view: loss curves as inline SVG, and the samples of every epoch
        by_id("tab-run").click()
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#chart svg polyline.val"), what="the loss chart")
        epochs = len(get_json(base + f"/api/runs/{run_name}", token=TOKEN)["metrics"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chart svg circle")) == 2 * epochs
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chart svg polyline.train")) == 1
        assert len(driver.find_elements(By.CSS_SELECTOR, "details.epoch")) == epochs

        # a phone's width: nothing wider than the screen, the lesson columns stacked
        driver.set_window_size(390, 844)
        by_id("tab-lesson").click()
        time.sleep(0.2)
        assert js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        xs = {round(c.rect["x"]) for c in driver.find_elements(By.CSS_SELECTOR, ".lesson-col")}
        assert len(xs) == 1
        assert generated.startswith(js("return document.querySelector('#output .prime-text').textContent"))
    except BaseException:
        shot = Path(os.environ.get("CHARLSTM_SCREENSHOT_DIR", tmp_path)) / "playground-failure.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the failure: {shot}")
        raise
