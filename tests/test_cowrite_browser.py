"""Issue 16: the playground's write view in a real headless Chromium (as test_playground_browser.py: Debian's
chromium + chromium-driver through Selenium, skipped with the install command where they are missing): after
a pause a grey proposal appears, Tab takes it, typing dismisses it, the five likeliest next characters sit
beside the text, the surprise view colours every character and gives the total bits per character, and it
all fits a phone's width. `CHARLSTM_COWRITE_PNG=docs/cowrite.png` also writes the README's screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_playground_browser import TOKEN, driver, server, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def get_json_post(url: str, body: dict) -> dict:
    import json
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_write_view_proposes_accepts_dismisses_and_colours_surprise(driver, server, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    base, run_name = server
    js = driver.execute_script
    by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
    ghost = lambda: js("return document.getElementById('write-ghost').textContent")  # noqa: E731
    value = lambda: by_id("write-text").get_attribute("value")  # noqa: E731
    try:
        driver.set_window_size(1280, 1000)
        driver.get(base + "/#token=" + TOKEN)
        wait_for(lambda: len(Select(by_id("model")).options) == 2, what="the model list")
        Select(by_id("model")).select_by_visible_text(run_name)
        by_id("tab-write").click()
        assert by_id("view-write").is_displayed() and not by_id("view-generate").is_displayed()
        for el in by_id("view-write").find_elements(By.CSS_SELECTOR, "input, textarea"):  # every control labelled
            el_id = el.get_attribute("id")
            labelled = driver.find_elements(By.CSS_SELECTOR, f"label[for='{el_id}']") or el.get_attribute("aria-label")
            assert labelled, el_id

        by_id("write-seed").send_keys("5")
        area = by_id("write-text")
        area.click()
        area.send_keys("the cat sat on the ")
        proposal = wait_for(ghost, what="a proposed continuation")
        assert value() == "the cat sat on the "  # proposed, not typed
        length = int(by_id("write-length").get_attribute("value"))
        same = get_json_post(base + "/api/generate", {"model": run_name, "prime": "the cat sat on the ",
                                                       "length": length, "temperature": 0.5, "seed": 5,
                                                       "no_repeat_ngram": 20, "unknown": "skip"})
        assert proposal == same["text"]  # the proposal is the API's text for the same seed
        assert js("return getComputedStyle(document.getElementById('write-ghost')).color") != js(
            "return getComputedStyle(document.getElementById('write-text')).color")  # shown greyed
        items = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#write-next li"), what="next characters")
        assert len(items) == 5
        probs = [float(li.find_element(By.CLASS_NAME, "p").text.rstrip("%")) for li in items]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.5
        # beside the text, at the cursor's line
        assert items[0].rect["x"] >= area.rect["x"] + area.rect["width"] - 1

        png = os.environ.get("CHARLSTM_COWRITE_PNG")
        area.send_keys(Keys.TAB)  # Tab takes the proposal
        assert value() == "the cat sat on the " + proposal and ghost() == ""
        assert driver.switch_to.active_element == area  # the focus stayed in the text
        second = wait_for(ghost, what="the next proposal")
        area.send_keys("x")  # typing dismisses it at once
        assert ghost() == "" and value() == "the cat sat on the " + proposal + "x"
        wait_for(ghost, what="a proposal after the typed character")
        area.send_keys(Keys.ESCAPE)
        assert ghost() == ""
        assert second  # (two proposals came)

        # the surprise view: every character coloured by its log-probability, the total in bits/char
        text = "the cat sat on the mat. ybyg the dog"  # characters of the tiny run's vocabulary
        by_id("surprise-text").send_keys(text)
        by_id("surprise-go").click()
        wait_for(lambda: "bits/char" in by_id("surprise-status").text, what="the scored text")
        spans = driver.find_elements(By.CSS_SELECTOR, "#surprise-out span")
        assert "".join(s.get_attribute("textContent") for s in spans) == text
        bits = [s.get_attribute("data-bits") for s in spans]
        assert bits[0] is None and all(b is not None for b in bits[1:])
        colours = {s.value_of_css_property("background-color") for s in spans[1:]}
        assert len(colours) > 3  # graded, not one colour
        surprising = max(range(1, len(bits)), key=lambda i: float(bits[i]))
        assert 24 <= surprising < 28  # the model's least expected character is in the nonsense word
        if png:
            area.send_keys(Keys.BACKSPACE)
            wait_for(ghost, what="a proposal for the screenshot")
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(png)

        # the Generate view sends the loop settings too: the same text as the API for the same seed
        by_id("tab-generate").click()
        js("for (const [id, v] of [['length', 120], ['repetition_penalty', 1.3], ['no_repeat_ngram', 6]]) {"
           " const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); }")
        assert by_id("repetition_penalty-value").text == "1.30" and by_id("no_repeat_ngram-value").text == "6"
        by_id("prime").clear()
        by_id("prime").send_keys("the dog ")
        by_id("seed").send_keys("3")
        by_id("generate").click()
        wait_for(lambda: "ended by" in by_id("status").text, what="the generation")
        shown = js("return document.querySelector('#output .gen-text').textContent")
        expect = get_json_post(base + "/api/generate", {"model": run_name, "prime": "the dog ", "length": 120,
                                                         "temperature": 1.0, "seed": 3, "no_repeat_ngram": 6,
                                                         "repetition_penalty": 1.3, "unknown": "skip"})
        assert shown == expect["text"]
        by_id("tab-write").click()

        # a phone's width: nothing wider than the screen, the next characters below the text
        driver.set_window_size(390, 844)
        area.send_keys("a")
        wait_for(ghost, what="a proposal at phone width")
        assert js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        item = driver.find_elements(By.CSS_SELECTOR, "#write-next li")[0]
        assert item.rect["y"] >= area.rect["y"] + area.rect["height"] - 1
    except BaseException:
        shot = Path(os.environ.get("CHARLSTM_SCREENSHOT_DIR", tmp_path)) / "cowrite-failure.png"
        driver.save_screenshot(str(shot))
        print(f"screenshot of the failure: {shot}")
        raise
