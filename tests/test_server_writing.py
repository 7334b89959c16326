"""Issue 16 on the HTTP API (in process): /v1/completions' logprobs, echo and scoring with max_tokens 0,
streamed logprobs, OpenAI's penalties and logit_bias keyed by the vocabulary endpoint's ids, the loop
settings on /api/generate reproducing Python's text, and POST /api/next and /api/score."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import WIDE_CHARS, make_model

from charlstm.generation import model as runtime
from charlstm.server import Limits, create_app, load_entries

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("writing")
    bias = {WIDE_CHARS.index(c): 2.5 for c in ("中", "😀", "𠀋")}
    return {"small": make_model(folder / "small.keras"),
            "wide": make_model(folder / "wide.keras", chars=WIDE_CHARS, output_bias=bias, seed=5)}


@pytest.fixture(scope="module")
def client(paths):
    app = create_app(load_entries([str(paths["small"]), str(paths["wide"])]), Limits())
    with TestClient(app) as c:
        yield c


def complete(client, **body):
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_logprobs_and_echo_equal_model_score_and_offsets_count_characters(client, paths):
    for name, prompt in (("small", "the cat "), ("wide", "the 中😀 cat")):
        model = runtime.load(paths[name])
        body = complete(client, model=name, prompt=prompt, max_tokens=40, temperature=0.9, seed=4, logprobs=3,
                        echo=True)
        choice = body["choices"][0]
        lp = choice["logprobs"]
        text = choice["text"]
        assert lp["tokens"] == list(text) and text.startswith(prompt)
        assert lp["text_offset"] == list(range(len(text)))  # one per character, emoji and CJK included
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        scored = model.score(text)
        np.testing.assert_allclose(lp["token_logprobs"][1:], scored.logprobs[1:], rtol=0, atol=1e-5)
        for pos in range(1, len(text)):
            top = lp["top_logprobs"][pos]
            assert text[pos] in top and top[text[pos]] == lp["token_logprobs"][pos]
            assert 3 <= len(top) <= 4  # the 3 likeliest, and the chosen one if it is not among them
            best = sorted(top.values(), reverse=True)[:3]
            row = scoring_row(model, text[:pos])
            np.testing.assert_allclose(best, np.sort(row)[::-1][:3], atol=1e-5)


def scoring_row(model, prefix):
    from charlstm.generation.sampling import log_softmax

    return log_softmax(model.logits(prefix)[-1])


def test_logprobs_without_echo_offset_from_the_prompt_and_match_the_plain_text(client, paths):
    plain = complete(client, max_tokens=60, temperature=0.7, seed=9)["choices"][0]
    with_lp = complete(client, max_tokens=60, temperature=0.7, seed=9, logprobs=0)["choices"][0]
    assert plain["logprobs"] is None and with_lp["text"] == plain["text"]  # logprobs never change the text
    lp = with_lp["logprobs"]
    assert lp["text_offset"] == list(range(4, 64)) and lp["tokens"] == list(plain["text"])
    assert all(len(t) == 1 for t in lp["top_logprobs"])  # logprobs 0: the chosen character only
    scored = runtime.load(paths["small"]).score("the " + plain["text"])
    np.testing.assert_allclose(lp["token_logprobs"], scored.logprobs[4:], atol=1e-5)


def test_max_tokens_0_with_echo_scores_the_prompt_only(client, paths):
    text = "the cat sat on the mat"
    choice = complete(client, prompt=text, max_tokens=0, echo=True, logprobs=1)["choices"][0]
    assert choice["text"] == text and choice["finish_reason"] == "length"
    assert len(choice["logprobs"]["tokens"]) == len(text)
    total = sum(choice["logprobs"]["token_logprobs"][1:])
    assert total == pytest.approx(-runtime.load(paths["small"]).score(text).nats, abs=1e-4)
    assert complete(client, prompt=text, max_tokens=0)["choices"][0]["text"] == ""


def test_streamed_chunks_carry_their_logprobs(client):
    whole = complete(client, max_tokens=300, temperature=1.0, seed=2, logprobs=2, echo=True, stop="ee")
    with client.stream("POST", "/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 300,
                       "temperature": 1.0, "seed": 2, "logprobs": 2, "echo": True, "stop": "ee",
                       "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    merged = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    text = ""
    for c in chunks:
        ch = c["choices"][0]
        text += ch["text"]
        for k in merged:
            merged[k] += ch["logprobs"][k]
        assert ch["logprobs"]["tokens"] == list(ch["text"]) or ch["text"] == "the "
    assert text == whole["choices"][0]["text"] and merged == whole["choices"][0]["logprobs"]


def test_penalties_and_logit_bias_reach_generation(client, paths):
    vocab = client.get("/api/models/small/vocabulary").json()
    assert vocab["tokens"][:3] == ["\n", " ", "."] or len(vocab["tokens"]) == runtime.load(paths["small"]).vocab.size
    e = vocab["tokens"].index("e")
    model = runtime.load(paths["small"])
    banned = complete(client, max_tokens=300, seed=1, logit_bias={str(e): -100})["choices"][0]["text"]
    assert "e" not in banned
    assert banned == model.generate("the ", 300, 1.0, seed=1, logit_bias={e: -100})
    pen = complete(client, max_tokens=200, seed=1, presence_penalty=1.5, frequency_penalty=0.5)["choices"][0]
    assert pen["text"] == model.generate("the ", 200, 1.0, seed=1, presence_penalty=1.5, frequency_penalty=0.5)
    assert pen["text"] != complete(client, max_tokens=200, seed=1)["choices"][0]["text"]
    assert client.get("/api/models/nope/vocabulary").status_code == 404


def test_loop_settings_give_the_same_text_from_every_api(client, paths):
    settings = {"no_repeat_ngram": 4, "repetition_penalty": 1.3, "min_p": 0.05, "typical_p": 0.95}
    model = runtime.load(paths["small"])
    text = model.generate("the ", 250, 0.5, seed=8, **settings)
    r = client.post("/api/generate", json={"prime": "the ", "length": 250, "temperature": 0.5, "seed": 8, **settings})
    assert r.status_code == 200 and r.json()["text"] == text
    assert complete(client, max_tokens=250, temperature=0.5, seed=8, **settings)["choices"][0]["text"] == text
    grams = [("the " + text)[i : i + 4] for i in range(len(text))]
    assert len(grams) == len(set(grams))
    r = client.post("/api/generate", json={"prime": "the ", "repetition_penalty": 0})
    assert r.status_code == 422 and r.json()["error"]["param"] == "repetition_penalty"


def test_api_next_and_score(client, paths):
    model = runtime.load(paths["wide"])
    r = client.post("/api/next", json={"model": "wide", "prefix": "the 中", "k": 5, "temperature": 0.7})
    assert r.status_code == 200, r.text
    got = r.json()["next"]
    want = model.next_chars("the 中", 5, temperature=0.7)
    assert [g["char"] for g in got] == [c for c, _ in want]
    np.testing.assert_allclose([g["prob"] for g in got], [p for _, p in want], atol=1e-9)
    r = client.post("/api/score", json={"model": "wide", "text": "the 😀 cat 中"})
    body = r.json()
    scored = model.score("the 😀 cat 中")
    assert body["logprobs"][0] is None and len(body["logprobs"]) == len("the 😀 cat 中")
    np.testing.assert_allclose(body["logprobs"][1:], scored.logprobs[1:], atol=1e-5)
    assert body["bits_per_char"] == pytest.approx(scored.bits_per_char)
    bad = client.post("/api/score", json={"model": "small", "text": "the 😀"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "text" and "skip" in bad.text
    assert client.post("/api/next", json={"prefix": ""}).status_code == 422
    assert math.isfinite(client.post("/api/score", json={"text": "a"}).json()["chars"])


def test_echo_logprobs_of_a_prompt_with_characters_outside_the_vocabulary(client):
    for policy in ("skip", "replace"):
        r = client.post("/v1/completions", json={"model": "small", "prompt": "the 😀 cat", "max_tokens": 3,
                                                 "echo": True, "logprobs": 2, "unknown": policy})
        assert r.status_code == 200, r.text
        lp = r.json()["choices"][0]["logprobs"]
        assert lp["token_logprobs"][0] is None and len(lp["tokens"]) >= 3 + 7
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the 😀", "echo": True, "logprobs": 1})
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"
