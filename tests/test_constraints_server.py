"""Patterns, required words, best-of and beam search on the server (issue 26): `/api/generate`'s regex,
must_include, best_of, beam; `/v1/completions`' guided_regex, guided_choice (vLLM's) and best_of (OpenAI's);
422s that name the field; constrained requests batched with others, each text what it is alone."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import make_model

from charlstm.generation import model as runtime
from charlstm.server import Limits, create_app, load_entries

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("constraints") / "small.keras")


@pytest.fixture(scope="module")
def client(model_path):
    with TestClient(create_app(load_entries([str(model_path)]), Limits())) as c:
        yield c


def per_char(model, prime: str, text: str) -> float:
    return float(model.score(prime + text).logprobs[len(prime) :].mean())


def test_api_generate_regex_and_words_match_and_equal_the_python_api(client, model_path):
    pattern = r"(the|a) [a-z ]*(cat|dog)\."
    body = {"prime": "the ", "length": 40, "temperature": 1.0, "seed": 3, "num_samples": 8, "regex": pattern}
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    texts = r.json()["texts"]
    assert len(texts) == 8 and all(re.fullmatch(pattern, t) for t in texts)
    model = runtime.load(model_path)
    assert texts == model.generate("the ", 40, 1.0, seed=3, num_samples=8, regex=pattern)
    r = client.post("/api/generate", json={"prime": "the ", "length": 60, "seed": 1, "num_samples": 4,
                                           "must_include": ["cold", "mint"]})
    assert r.status_code == 200 and all("cold" in t and "mint" in t for t in r.json()["texts"])
    streamed = client.post("/api/stream", json=body).text
    assert "event: done" in streamed


def test_best_of_returns_the_likeliest_drawn_and_beam_equals_the_python_search(client, model_path):
    model = runtime.load(model_path)
    drawn = model.generate("the ", 30, 1.0, seed=9, num_samples=6)
    scores = [per_char(model, "the ", t) for t in drawn]
    expected = [drawn[i] for i in np.argsort(scores, kind="stable")[::-1][:2]]
    r = client.post("/api/generate", json={"prime": "the ", "length": 30, "seed": 9, "num_samples": 2,
                                           "best_of": 6})
    assert r.status_code == 200, r.text
    assert r.json()["texts"] == expected and len(r.json()["finish_reasons"]) == 2
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 30, "seed": 9,
                                             "n": 2, "best_of": 6})
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == expected
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]
    r = client.post("/api/generate", json={"prime": "the ", "length": 30, "beam": 3, "num_samples": 2})
    assert r.status_code == 200, r.text
    assert r.json()["texts"] == [f.text for f in model.search("the ", 30, beam=3, num_samples=2)]


def test_guided_choice_and_guided_regex_on_the_openai_api(client):
    choices = ["cat", "dog", "log"]
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 20, "n": 6,
                                             "seed": 2, "guided_choice": choices})
    assert r.status_code == 200, r.text
    assert all(c["text"] in choices for c in r.json()["choices"])
    # the stop string is not in the returned text, and the text before it matches
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 40, "n": 6,
                                             "seed": 2, "guided_regex": "[a-z ]+s", "stop": "."})
    assert r.status_code == 200, r.text
    assert all(re.fullmatch("[a-z ]+s", c["text"]) for c in r.json()["choices"])


@pytest.mark.parametrize(
    "path, body, field",
    [("/api/generate", {"regex": "(a"}, "regex"),
     ("/api/generate", {"regex": r"(a)\1"}, "regex"),
     ("/api/generate", {"regex": "xyz+"}, "regex"),  # no x, y, z in the vocabulary
     ("/api/generate", {"must_include": ["zebra"]}, "must_include"),
     ("/api/generate", {"best_of": 2, "num_samples": 3}, "best_of"),
     ("/api/stream", {"beam": 2}, "beam"),
     ("/api/stream", {"best_of": 4}, "best_of"),
     ("/v1/completions", {"model": "small", "guided_regex": "(a"}, "guided_regex"),
     ("/v1/completions", {"model": "small", "guided_choice": ["zebra"]}, "guided_choice"),
     ("/v1/completions", {"model": "small", "best_of": 1, "n": 2}, "best_of"),
     ("/v1/completions", {"model": "small", "best_of": 3, "stream": True}, "best_of")],
)
def test_bad_requests_are_a_422_naming_the_field(client, path, body, field):
    r = client.post(path, json={"length": 20, **body} if path.startswith("/api") else body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", field], r.json()
    assert "\n" not in detail["msg"]


def test_constrained_requests_batch_with_others_and_nothing_in_flight_is_disturbed(model_path):
    app = create_app(load_entries([str(model_path)]), Limits(max_length=20_000))
    service = app.state.service
    plain = {"prime": "the dog ", "length": 1500, "temperature": 0.9, "seed": 5, "num_samples": 2}
    shaped = {"prime": "a ", "length": 300, "seed": 6, "num_samples": 3, "regex": r"[a-z ]*(cat|dog)\."}
    bad = [{"regex": "(a", "length": 10}, {"must_include": ["zz"], "length": 10}, {"best_of": 1, "num_samples": 2}]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
            alone = (await c.post("/api/generate", json=plain)).json()
            shaped_alone = (await c.post("/api/generate", json=shaped)).json()
            batcher = service.batchers["small"]
            steps0, chars0 = batcher.steps, batcher.chars
            runs = [asyncio.create_task(c.post("/api/generate", json=b)) for b in (plain, shaped)]
            await asyncio.sleep(0.05)
            codes = [(await c.post("/api/generate", json=b)).status_code for b in bad]
            got = [(await t).json() for t in runs]
            return alone, shaped_alone, got, codes, batcher.steps - steps0, batcher.chars - chars0

    try:
        alone, shaped_alone, got, codes, steps, chars = asyncio.run(scenario())
    finally:
        service.close()
    assert codes == [422, 422, 422]
    assert got[0]["texts"] == alone["texts"] and got[1]["texts"] == shaped_alone["texts"]
    assert all(re.fullmatch(shaped["regex"], t) for t in got[1]["texts"])
    assert steps < chars / 2, (steps, chars)  # stepped together
