"""The web export in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium, as
tests/test_playground_browser.py does): served by a plain static file server on loopback, every other host
unreachable; the page's logits equal the NumPy runtime's within 1e-4 over 1,000 characters of a real text
(LSTM, GRU, int8), greedy text (with the recipe's n-gram ban and repeat guard) equals `generate`'s, a seed
gives the same text twice, an items model gives whole items, and the page fits a 390-px-wide phone.

`CHARLSTM_EXPORT_PNG=docs/export-web.png pytest tests/test_export_browser.py` also writes the README's
screenshot (the phone-width page after a generation).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from model_factory import build_and_save
from test_playground_browser import CHROMEDRIVER, CHROMIUM, FLAGS, _need_browser, wait_for

import charlstm.generation.model as runtime
from charlstm.export import parts, quantize
from charlstm.export.web import export_web

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# every host but loopback resolves to nothing: the page can only reach the static server
BLOCK = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def text() -> str:
    book = (DATA / "treasure_island.txt").read_text(encoding="utf-8")
    start = book.index("SQUIRE TRELAWNEY, Dr. Livesey")
    return book[start : start + 1000]


@pytest.fixture(scope="module")
def site(tmp_path_factory, text):
    """Exports of an LSTM, a GRU, the LSTM with int8 weights and an items model, under one static server."""
    _need_browser()
    root = tmp_path_factory.mktemp("site")
    chars = tuple(sorted(set(text)))
    models = {}
    for name, kw in {
        "lstm": dict(cell="lstm", extra_meta={"seeds": ["the captain "], "longest_runs": [3] * len(chars)}),
        "gru": dict(cell="gru"),
    }.items():
        path = root / f"{name}.keras"
        build_and_save(path, layers=2, units=32, chars=chars, logit_scale=3.0, seed=7, **kw)
        models[name] = runtime.load(path)
        export_web(models[name], root / name, log=None)
    export_web(models["lstm"], root / "int8", quantize_mode="int8", text=text, log=None)
    # 21 units: every product has a tail past the kernel's blocks of 4 and 8
    build_and_save(root / "odd.keras", layers=2, units=21, chars=chars, logit_scale=3.0, seed=8)
    models["odd"] = runtime.load(root / "odd.keras")
    export_web(models["odd"], root / "odd", log=None)
    export_web(models["odd"], root / "odd8", quantize_mode="int8", text=text, log=None)
    path = root / "items.keras"
    items_chars = tuple("\nabcdeilmnorst")
    build_and_save(path, chars=items_chars, units=16, logit_scale=2.0, output_bias={0: 1.5}, seed=3,
                   extra_meta={"items": {"boundary": "\n", "max_len": 12}, "recipe": "default"})
    models["items"] = runtime.load(path)
    export_web(models["items"], root / "items", log=None)
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", models
    httpd.shutdown()
    httpd.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    _need_browser()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    for flag in (*FLAGS, BLOCK):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = Service(CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver"))
    d = webdriver.Chrome(service=service, options=options)
    d.set_page_load_timeout(30)
    d.set_script_timeout(60)
    yield d
    d.quit()


def open_page(driver, url: str) -> None:
    driver.get(url)
    driver.execute_async_script("const done = arguments[0]; window.charlstm.ready.then(() => done(true))")
    # everything the page loaded came from the static server
    origins = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) == {url.split("/", 3)[0] + "//" + url.split("/", 3)[2]}, origins


@pytest.mark.parametrize("name,engine", [
    ("lstm", "WebAssembly SIMD"), ("gru", "WebAssembly SIMD"), ("int8", "WebAssembly SIMD"),
    ("odd", "WebAssembly SIMD"), ("odd8", "WebAssembly SIMD"),
    ("lstm", "JavaScript"), ("gru", "JavaScript"), ("int8", "JavaScript"),  # where WebAssembly SIMD is missing
])
def test_the_pages_logits_are_the_numpy_runtimes(driver, site, text, name, engine) -> None:
    base, models = site
    open_page(driver, f"{base}/{name}/" + ("?engine=js" if engine == "JavaScript" else ""))
    assert driver.execute_script("return window.charlstm.net.engine") == engine
    got = np.array(driver.execute_script("return window.charlstm.logits(arguments[0], true)", text), np.float64)
    model = models[{"int8": "lstm", "odd8": "odd"}.get(name, name)]
    ids = model.encode(text)
    state, want = model.initial_state(1), []
    for i in ids:
        logits, state = model.step(np.array([i]), state)
        want.append(logits[0])
    want = np.stack(want)
    got = got.reshape(want.shape)
    if name in ("int8", "odd8"):  # 8-bit weights: the dequantized weights' logits, close to float32's but not equal
        assert 0 < np.abs(got - want).max() < 0.5
        deq = quantize.quantize(parts.step_weights(model)).dequantized
        mine, want = parts.initial_state(deq), []
        for i in ids:
            logits, mine = parts.step(deq, np.array([i]), mine)
            want.append(logits[0])
        want = np.stack(want)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_greedy_text_is_the_runtimes_with_the_recipes_processors(driver, site) -> None:
    base, models = site
    open_page(driver, f"{base}/lstm/")
    model = models["lstm"]
    for options, kw in (
        ({"no_repeat_ngram": 0, "max_repeat": False}, {"no_repeat_ngram": 0, "max_repeat": "none"}),
        ({}, {}),  # the default recipe's 20-gram ban and the repeat limits recorded in the file
        ({"no_repeat_ngram": 4}, {"no_repeat_ngram": 4}),
    ):
        got = driver.execute_script(
            "return window.charlstm.generate(Object.assign({prime: 'the captain ', length: 300, temperature: 0}, arguments[0]))",
            options)
        assert got == model.generate("the captain ", length=300, temperature=0, **kw), options


def test_a_seed_draws_the_text_charlstm_generate_draws(driver, site) -> None:
    """The page's random stream is NumPy's (SeedSequence + PCG64), so a seed gives the runtime's text, with
    truncations and the recipe's processors too (unless a logit lands within ~1e-6 of a draw's boundary)."""
    base, models = site
    open_page(driver, f"{base}/lstm/")
    model = models["lstm"]
    for page, kw in (
        ({"temperature": 1, "seed": 7}, {"temperature": 1.0, "seed": 7}),
        ({"temperature": 0.7, "top_k": 10, "top_p": 0.9, "seed": 2**40 + 3},
         {"temperature": 0.7, "top_k": 10, "top_p": 0.9, "seed": 2**40 + 3}),
        ({"temperature": 1.2, "no_repeat_ngram": 6, "repetition_penalty": 1.3, "seed": 0},
         {"temperature": 1.2, "no_repeat_ngram": 6, "repetition_penalty": 1.3, "seed": 0}),
    ):
        got = driver.execute_script(
            "return window.charlstm.generate(Object.assign({prime: 'the captain ', length: 400}, arguments[0]))", page)
        assert got == model.generate("the captain ", length=400, **kw), page


def test_generate_in_the_page_a_seed_gives_the_same_text_twice_and_it_fits_a_phone(driver, site, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    base, models = site
    by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
    js = driver.execute_script
    gen_text = lambda: js("return document.querySelector('#output .gen-text').textContent")  # noqa: E731
    driver.set_window_size(390, 844)
    open_page(driver, f"{base}/lstm/")
    wait_for(lambda: by_id("generate").is_enabled(), what="the model to load")
    for el in driver.find_elements(By.CSS_SELECTOR, "input, textarea"):  # every control labelled
        assert driver.find_elements(By.CSS_SELECTOR, f"label[for='{el.get_attribute('id')}']"), el.get_attribute("id")
    assert by_id("no_repeat_ngram").get_attribute("value") == "20"  # the recipe's default

    def run(seed: str, length: int = 600) -> str:
        js("const l = document.getElementById('length'); l.value = arguments[0]; l.dispatchEvent(new Event('input'))",
           length)
        by_id("seed").clear()
        by_id("seed").send_keys(seed)
        by_id("generate").click()
        wait_for(lambda: "ended by length" in by_id("status").text, what="the finished generation")
        return gen_text()

    first, again, other = run("7"), run("7"), run("8")
    assert len(first) == 600 and first == again and other != first
    assert first == models["lstm"].generate(None, length=600, seed=7)  # what `charlstm generate --seed 7` writes
    assert js("return document.querySelector('#output .prime-text').textContent") == "the captain "  # the seed prime
    # streaming: a long generation shows text before it is done, and Stop ends it
    js("const l = document.getElementById('length'); l.max = 200000; l.value = 200000; l.dispatchEvent(new Event('input'))")
    by_id("generate").click()
    wait_for(lambda: len(gen_text()) > 0 and "generating" in by_id("status").text, what="the first characters")
    by_id("stop").click()
    wait_for(lambda: "stopped after" in by_id("status").text, what="the stopped status")
    assert 0 < len(gen_text()) < 200000
    run("7")
    assert js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot = tmp_path / "export-web-390.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 5000
    png = os.environ.get("CHARLSTM_EXPORT_PNG")
    if png:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(png)


def test_an_items_model_gives_whole_items(driver, site) -> None:
    from selenium.webdriver.common.by import By

    base, models = site
    by_id = lambda i: driver.find_element(By.ID, i)  # noqa: E731
    driver.set_window_size(1000, 900)
    open_page(driver, f"{base}/items/")
    wait_for(lambda: by_id("generate").is_enabled(), what="the model to load")
    assert by_id("count").is_displayed() and not by_id("length").is_displayed()
    driver.execute_script(
        "const c = document.getElementById('count'); c.value = 6; c.dispatchEvent(new Event('input'))")
    by_id("seed").send_keys("3")
    by_id("generate").click()
    wait_for(lambda: "done" in by_id("status").text, what="the items")
    shown = driver.execute_script("return document.querySelector('#output .gen-text').textContent")
    items = shown.split("\n")
    assert items[-1] == "" and len(items[:-1]) == 6 and all(items[:-1])  # six items, each ended by the model
    assert all(len(i) <= 2 * 12 + 20 for i in items[:-1])
    assert "6 items" in by_id("status").text
