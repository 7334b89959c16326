"""A real `charlstm serve` process on a loopback port: the official `openai` client works against it unchanged,
and a client that disconnects stops its generation at once."""

from __future__ import annotations

import time

import httpx
import pytest
from servers import get_json, live_server, make_model

from charlstm.generation import model as runtime

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TOKEN = "live-test-token"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("live") / "small.keras")


@pytest.fixture(scope="module")
def server(model_path):
    with live_server([str(model_path)], "--token", TOKEN, "--max-length", "2000000", "--time-limit", "60") as base:
        yield base


@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server + "/v1", api_key=TOKEN, max_retries=0, timeout=30)


def api_generate(server: str, **body) -> dict:
    r = httpx.post(server + "/api/generate", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    r.raise_for_status()
    return r.json()


def test_openai_client_lists_models_and_completes(openai_client, server, model_path):
    assert [m.id for m in openai_client.models.list()] == ["small"]
    c = openai_client.completions.create(model="small", prompt="the ", max_tokens=120, temperature=0.8, seed=7)
    assert c.object == "text_completion" and c.choices[0].finish_reason == "length"
    same = api_generate(server, prime="the ", length=120, temperature=0.8, seed=7)
    assert c.choices[0].text == same["text"] == runtime.load(model_path).generate("the ", 120, 0.8, seed=7)
    assert c.usage.completion_tokens == 120 and c.usage.prompt_tokens == 4


def test_openai_client_streams(openai_client, server):
    pieces = []
    finish = None
    for chunk in openai_client.completions.create(
        model="small", prompt="the ", max_tokens=3000, temperature=1.0, seed=3, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == api_generate(server, prime="the ", length=3000, seed=3)["text"]
    assert len([p for p in pieces if p]) > 1 and finish == "length"


def test_openai_client_n_and_top_k_extra(openai_client, server):
    c = openai_client.completions.create(model="small", prompt="the cat", max_tokens=80, n=3, seed=9,
                                         top_p=0.9, extra_body={"top_k": 5})
    assert [ch.index for ch in c.choices] == [0, 1, 2]
    same = api_generate(server, prime="the cat", length=80, num_samples=3, seed=9, top_p=0.9, top_k=5)
    assert [ch.text for ch in c.choices] == same["texts"]
    assert len(set(same["texts"])) == 3


def test_openai_client_stop(openai_client, server):
    full = api_generate(server, prime="the ", length=400, seed=12)["text"]
    stop = full[150:153]
    c = openai_client.completions.create(model="small", prompt="the ", max_tokens=400, seed=12, stop=[stop, "zzz"])
    assert c.choices[0].text == full[: full.index(stop)] and c.choices[0].finish_reason == "stop"
    streamed = "".join(
        ch.choices[0].text
        for ch in openai_client.completions.create(model="small", prompt="the ", max_tokens=400, seed=12,
                                                   stop=stop, stream=True)
    )
    assert streamed == full[: full.index(stop)]


def test_openai_client_errors_are_readable(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError, match="no model named 'gpt-4'"):
        openai_client.completions.create(model="gpt-4", prompt="the ", max_tokens=5)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        openai_client.completions.create(model="small", prompt="the ", max_tokens=-4)
    bad = openai.OpenAI(base_url=openai_client.base_url, api_key="wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="small", prompt="the ", max_tokens=5)


def test_a_client_that_disconnects_stops_its_generation(server):
    """Ask for two million characters, read the first chunk, hang up: the generation ends within a moment."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    health = lambda: get_json(server + "/healthz", token=TOKEN)["models"]["small"]  # noqa: E731
    for endpoint, body in [("/api/stream", {"prime": "the ", "length": 2_000_000}),
                           ("/v1/completions", {"model": "small", "prompt": "the ", "max_tokens": 2_000_000,
                                                "stream": True})]:
        with httpx.Client(timeout=30) as client, client.stream("POST", server + endpoint, json=body,
                                                               headers=headers) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:
                if '"text' in line:
                    break
            active = health()["active"]
            assert active == 1, (endpoint, health(), [line for line, _ in zip(lines, range(12), strict=False)])
        deadline = time.monotonic() + 5
        while health()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert health()["active"] == 0, f"{endpoint}: still generating after the client left"
        chars = health()["chars"]
        time.sleep(0.3)
        assert health()["chars"] == chars  # and nothing more is generated
        assert chars < 1_000_000


def test_openai_client_logprobs_and_echo_equal_model_score(openai_client, model_path):
    """Issue 16: per-character token_logprobs through the official client equal `model.score`."""
    import numpy as np

    model = runtime.load(model_path)
    c = openai_client.completions.create(model="small", prompt="the cat", max_tokens=40, temperature=0.8, seed=5,
                                         logprobs=5, echo=True, presence_penalty=0.2)
    text, lp = c.choices[0].text, c.choices[0].logprobs
    assert text.startswith("the cat") and lp.tokens == list(text) and lp.text_offset == list(range(len(text)))
    assert lp.token_logprobs[0] is None
    np.testing.assert_allclose(lp.token_logprobs[1:], model.score(text).logprobs[1:], rtol=0, atol=1e-5)
    for pos, top in enumerate(lp.top_logprobs[1:], start=1):
        assert text[pos] in top and 5 <= len(top) <= 6
    scored = openai_client.completions.create(model="small", prompt="the cat sat", max_tokens=0, echo=True,
                                              logprobs=0)
    assert scored.choices[0].text == "the cat sat" and len(scored.choices[0].logprobs.tokens) == 11
    streamed, logprobs = "", []
    for chunk in openai_client.completions.create(model="small", prompt="the ", max_tokens=200, seed=5,
                                                  logprobs=1, stream=True):
        streamed += chunk.choices[0].text
        logprobs += chunk.choices[0].logprobs.token_logprobs
    assert len(logprobs) == len(streamed) == 200
    np.testing.assert_allclose(logprobs, model.score("the " + streamed).logprobs[4:], atol=1e-5)
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.UnprocessableEntityError) as err:
        openai_client.completions.create(model="small", prompt="the ", best_of=1, n=2)  # best_of < n
    assert "best_of" in str(err.value.body)  # the param the 422 names
