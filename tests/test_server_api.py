"""The HTTP API in process (FastAPI's TestClient, httpx over ASGI): every endpoint, validation errors that name
the field, the SSE event sequence and its chunks, 429 when saturated, tokens, the same text for the same seed
alone, under load and from the Python API, and no TensorFlow."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient
from servers import WIDE_CHARS, make_model

from charlstm.errors import CharlstmError
from charlstm.generation import model as runtime
from charlstm.server import Limits, create_app, load_entries
from charlstm.server.batcher import FLUSH_S, Job
from charlstm.server.openai_api import StopHolder
from charlstm.server.run import check_auth

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("serve") / "small.keras")


@pytest.fixture(scope="module")
def wide_path(tmp_path_factory):
    """Emoji, CJK and an astral CJK Ext. B character, favoured by the output bias so they come often."""
    bias = {WIDE_CHARS.index(c): 2.5 for c in ("中", "😀", "𠀋")}
    return make_model(tmp_path_factory.mktemp("serve") / "wide.keras", chars=WIDE_CHARS, output_bias=bias, seed=5)


@pytest.fixture(scope="module")
def client(model_path, wide_path, tiny_run):
    app = create_app(load_entries([str(model_path), str(wide_path), str(tiny_run)]), Limits(max_length=50_000))
    with TestClient(app) as c:
        yield c


def events(body: bytes) -> list[tuple[str, object]]:
    """SSE events of a whole response body: (event name, parsed data). Each event's bytes must be whole UTF-8."""
    out = []
    for raw in body.split(b"\n\n"):
        if not raw.strip():
            continue
        text = raw.decode("utf-8")  # strict: an event never ends inside a character
        name, data = "message", []
        for line in text.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        out.append((name, "\n".join(data) if data == ["[DONE]"] else json.loads("\n".join(data))))
    return out


# -- models, runs, health -------------------------------------------------------------------------------------


def test_models_describe_each_model(client, tiny_run):
    models = {m["name"]: m for m in client.get("/api/models").json()}
    assert set(models) == {"small", "wide", tiny_run.name}
    assert models["small"]["architecture"] == "2×LSTM(32)" and models["small"]["vocab_size"] == 20
    run = models[tiny_run.name]
    assert run["run"] is True and run["corpus"] == "tiny.txt" and run["recipe"] == "default"
    metrics = [r["val_bpc"] for r in client.get(f"/api/runs/{tiny_run.name}").json()["metrics"]]
    assert run["best_val_bpc"] == pytest.approx(min(metrics))


def test_run_has_every_epoch_metrics_and_samples(client, tiny_run):
    run = client.get(f"/api/runs/{tiny_run.name}").json()
    assert [r["epoch"] for r in run["metrics"]] == list(range(1, 9))
    assert all(isinstance(r["bpc"], float) and isinstance(r["val_bpc"], float) for r in run["metrics"])
    assert [e["epoch"] for e in run["samples"]] == list(range(1, 9))
    for epoch in run["samples"]:
        assert [s["temperature"] for s in epoch["samples"]] == [0.5]
        assert epoch["samples"][0]["text"].startswith(epoch["prime"])
        assert len(epoch["samples"][0]["text"]) == len(epoch["prime"]) + 50
    r = client.get("/api/runs/small")
    assert r.status_code == 404 and tiny_run.name in r.json()["error"]["message"]


def test_healthz_and_the_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and set(health["models"]) >= {"small"}
    assert health["limits"]["max_length"] == 50_000
    page = client.get("/")
    assert page.status_code == 200 and "<title>charlstm playground</title>" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN
    js = client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in js.replace("http://www.w3.org/2000/svg", "") and "https://" not in js


# -- generate and stream ----------------------------------------------------------------------------------------


def test_generate_gives_the_python_api_text_for_the_same_seed(client, model_path):
    model = runtime.load(model_path)
    body = {"model": "small", "prime": "the ", "length": 200, "temperature": 0.8, "top_k": 6, "seed": 11}
    r = client.post("/api/generate", json=body).json()
    assert r["text"] == model.generate("the ", 200, 0.8, top_k=6, seed=11)
    assert r["chars"] == 200 and r["finish_reasons"] == ["length"] and r["prime"] == "the "
    many = client.post("/api/generate", json={**body, "num_samples": 3, "top_p": 0.9, "stop": ["e ", "at"]}).json()
    assert many["texts"] == model.generate("the ", 200, 0.8, top_k=6, top_p=0.9, seed=11, num_samples=3,
                                           stop=["e ", "at"])
    assert all(r == ("stop" if t.endswith(("e ", "at")) else "length")
               for r, t in zip(many["finish_reasons"], many["texts"], strict=True))
    default_prime = client.post("/api/generate", json={"length": 30, "seed": 2}).json()
    assert default_prime["prime"] == "the cat " and default_prime["text"] == model.generate(None, 30, seed=2)


def test_stream_sends_start_text_chunks_and_done_without_splitting_characters(client, wide_path):
    model = runtime.load(wide_path)
    body = {"model": "wide", "prime": "中文 ", "length": 20_000, "seed": 4, "num_samples": 2}
    r = client.post("/api/stream", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.content)
    names = [n for n, _ in evs]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"text"}
    assert evs[0][1] == {"model": "wide", "prime": "中文 ", "num_samples": 2}
    texts = ["".join(d["texts"][b] for n, d in evs if n == "text") for b in range(2)]
    assert texts == model.generate("中文 ", 20_000, seed=4, num_samples=2)
    assert sum(t.count("𠀋") + t.count("😀") for t in texts) > 100  # astral characters really went through
    assert len(names) > 4  # sent as it was generated, in several chunks
    assert evs[-1][1]["chars"] == 40_000 and evs[-1][1]["finish_reasons"] == ["length", "length"]
    assert "中".encode() in r.content  # UTF-8 on the wire, not \\u escapes


def test_chunks_are_flushed_at_the_first_character_then_at_least_every_flush_interval():
    class Loop:
        def __init__(self):
            self.calls = 0

        def call_soon_threadsafe(self, fn):
            self.calls += 1

    class Gen:
        rows = 1

    loop = Loop()
    job = Job(Gen(), loop, time_limit=10)
    job.add(["a"], now=100.0)
    assert loop.calls == 1  # the first character is sent at once
    job.add(["b"], now=100.0 + FLUSH_S / 2)
    assert loop.calls == 1  # then they gather for up to FLUSH_S
    job.add(["c"], now=100.0 + FLUSH_S * 1.01)
    assert loop.calls == 2
    job.end(["length"])
    assert loop.calls == 3 and FLUSH_S <= 0.025  # ends are sent at once; chunks never wait 50 ms


# -- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"length": -1}, "length"),
        ({"length": 50_001}, "length"),
        ({"length": "many"}, "length"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 17}, "num_samples"),
        ({"seed": -3}, "seed"),
        ({"unknown": "ignore"}, "unknown"),
        ({"colour": "red"}, "colour"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "nope"}, "model"),
        ({"prime": "the quiet "}, "prime"),  # 'q' is not in the vocabulary
        ({"prime": ""}, "prime"),
        ({"prime": "x" * 4001}, "prime"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/api/generate", "/api/stream"])
def test_invalid_requests_get_422_naming_the_field(client, body, field, endpoint):
    r = client.post(endpoint, json={"model": "small", "length": 10, **body})
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"]["param"] == field or err["error"]["param"].startswith(field + ".")
    assert any(d["loc"][:2] == ["body", field] for d in err["detail"])


def test_unknown_prime_characters_follow_the_cli_policy(client, model_path):
    model = runtime.load(model_path)
    msg = client.post("/api/generate", json={"prime": "the quiet ", "length": 5}).json()["error"]["message"]
    assert "'q'" in msg and '"unknown": "skip"' in msg
    r = client.post("/api/generate", json={"prime": "the quiet ", "length": 30, "seed": 1, "unknown": "skip"})
    assert r.json()["text"] == model.generate("the uiet ", 30, seed=1)


def test_bodies_that_are_not_json_or_too_big_are_refused(client):
    r = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/generate", content=b'{"prime": "' + b"a" * 70_000 + b'"}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


# -- the OpenAI-compatible endpoints (the official client is tested against a live server elsewhere) -------------


def test_openai_completions_strip_the_stop_string_and_count_characters(client, model_path):
    model = runtime.load(model_path)
    full = model.generate("the ", 200, 1.0, seed=4)
    stop = full[60:62]
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 200, "seed": 4,
                                             "stop": stop}).json()
    assert r["object"] == "text_completion" and r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["text"] == full[: full.index(stop)]
    assert r["usage"] == {"prompt_tokens": 4, "completion_tokens": full.index(stop), "total_tokens": 4 + full.index(stop)}
    echo = client.post("/v1/completions", json={"model": "small", "prompt": "the ", "max_tokens": 10, "seed": 4,
                                                "echo": True}).json()
    assert echo["choices"][0]["text"] == "the " + full[:10] and echo["choices"][0]["finish_reason"] == "length"
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list" and {m["id"] for m in listed["data"]} >= {"small", "wide"}


def test_openai_stream_holds_back_what_could_become_the_stop_string(client, model_path):
    model = runtime.load(model_path)
    body = {"model": "small", "prompt": "the ", "max_tokens": 300, "seed": 6, "n": 3, "stream": True,
            "stop": ["at", "e."]}
    evs = events(client.post("/v1/completions", json=body).content)
    assert evs[-1] == ("message", "[DONE]")
    chunks = [d for _, d in evs[:-1]]
    texts = ["".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i) for i in range(3)]
    expected = model.generate("the ", 300, 1.0, seed=6, num_samples=3, stop=["at", "e."])
    for text, exp in zip(texts, expected, strict=True):
        assert text == (exp[:-2] if exp.endswith(("at", "e.")) else exp)
        assert "at" not in text and "e." not in text
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert len(finals) == 3


def test_stop_holder_releases_only_what_cannot_begin_a_stop():
    h = StopHolder(["END", "xy"])
    assert h.feed("abcE") == "abc"
    assert h.feed("N") == ""
    assert h.feed("Dq") == "ENDq"  # (generation ends a row at its stop string; this is the holder alone)
    h = StopHolder(["END"])
    assert h.feed("aEN") == "a"
    assert h.feed("x") == "ENx"
    assert h.feed("EN") == "" and h.feed("D") == "" and h.finish("END") == ""


@pytest.mark.parametrize(
    "body, field, status",
    [
        ({"logprobs": 6}, "logprobs", 422),
        ({"presence_penalty": 2.5}, "presence_penalty", 422),
        ({"best_of": 1, "n": 2}, "best_of", 422),  # OpenAI's rule: best_of >= n
        ({"suffix": "end"}, "suffix", 422),
        ({"logit_bias": {"999": 1}}, "logit_bias", 422),
        ({"logit_bias": {"x": 1}}, "logit_bias", 422),
        ({"logit_bias": {"1": 101}}, "logit_bias", 422),
        ({"max_tokens": -1}, "max_tokens", 422),
        ({"n": 0}, "n", 422),
        ({"prompt": [1, 2, 3]}, "prompt", 422),
        ({"model": "gpt-4"}, "model", 404),
    ],
)
def test_openai_errors_name_the_field(client, body, field, status):
    r = client.post("/v1/completions", json={"model": "small", "prompt": "the ", **body})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"].split(".")[0] == field


# -- limits: 429 when saturated ---------------------------------------------------------------------------------


def test_saturated_server_answers_429_with_retry_after_and_frees_slots_when_clients_leave(model_path):
    app = create_app(load_entries([str(model_path)]), Limits(max_streams=2, max_length=10**7, time_limit=60))
    service = app.state.service

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
            long = {"prime": "the ", "length": 10**7}
            hogs = [asyncio.create_task(c.post("/api/generate", json=long)) for _ in range(2)]
            for _ in range(200):
                if service.active() == 2:
                    break
                await asyncio.sleep(0.01)
            assert service.active() == 2
            r = await c.post("/api/generate", json={"prime": "the ", "length": 5})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert "maximum of 2" in r.json()["error"]["message"]
            s = await c.post("/v1/completions", json={"model": "small", "prompt": "the "})
            assert s.status_code == 429
            for hog in hogs:  # the clients give up: their generations stop
                hog.cancel()
            await asyncio.gather(*hogs, return_exceptions=True)
            for _ in range(200):
                if service.active() == 0:
                    break
                await asyncio.sleep(0.01)
            assert service.active() == 0
            chars = service.batchers["small"].chars
            assert chars < 10**6  # far from the 2 x 10 million asked for
            r = await c.post("/api/generate", json={"prime": "the ", "length": 5})
            assert r.status_code == 200

    try:
        asyncio.run(scenario())
    finally:
        service.close()


def test_the_time_limit_ends_a_request_with_what_it_has(model_path):
    app = create_app(load_entries([str(model_path)]), Limits(max_length=10**7, time_limit=0.3))
    with TestClient(app) as c:
        r = c.post("/api/generate", json={"prime": "the ", "length": 10**7}).json()
    assert r["finish_reasons"] == ["time_limit"] and 0 < r["chars"] < 10**7 and r["seconds"] < 5


# -- the same text alone and under load ------------------------------------------------------------------------


def test_same_seed_gives_the_same_text_alone_and_under_concurrent_load(model_path):
    """Requests with all kinds of settings run concurrently and join at different steps; the batcher steps them
    together (fewer steps than characters), and each gets the text it gets alone."""
    app = create_app(load_entries([str(model_path)]), Limits(max_length=20_000))
    service = app.state.service
    target = {"prime": "the dog ", "length": 1500, "temperature": 0.9, "top_k": 8, "seed": 5, "num_samples": 2}
    load = [
        {"prime": "a cat", "length": 3000 + 100 * i, "temperature": 0.3 + 0.1 * i, "seed": i,
         "num_samples": 1 + i % 3, **({"top_p": 0.8} if i % 2 else {}), **({"stop": "s."} if i % 4 == 3 else {})}
        for i in range(10)
    ]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
            alone = (await c.post("/api/generate", json=target)).json()
            batcher = service.batchers["small"]
            steps0, chars0 = batcher.steps, batcher.chars
            tasks = [asyncio.create_task(c.post("/api/generate", json=b)) for b in load]
            await asyncio.sleep(0.05)  # the target joins while the others run
            under_load = (await c.post("/api/generate", json=target)).json()
            others = [(await t).json() for t in tasks]
            return alone, under_load, others, batcher.steps - steps0, batcher.chars - chars0

    try:
        alone, under_load, others, steps, chars = asyncio.run(scenario())
    finally:
        service.close()
    assert under_load["texts"] == alone["texts"]
    assert steps < chars / 4, (steps, chars)  # really stepped together
    model = runtime.load(model_path)
    for body, got in zip(load, others, strict=True):
        kw = {k: v for k, v in body.items() if k != "prime"}
        expected = model.generate(body["prime"], **kw)
        assert got["texts"] == (expected if isinstance(expected, list) else [expected])


# -- tokens ---------------------------------------------------------------------------------------------------


def test_a_token_is_required_on_every_api_call_and_compared_in_constant_time(model_path, monkeypatch):
    import charlstm.server.app as app_module

    compared = []
    real = app_module.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    app = create_app(load_entries([str(model_path)]), token="s3cret-token")
    with TestClient(app) as c:
        for method, path, body in [("GET", "/api/models", None), ("POST", "/api/generate", {"length": 5}),
                                   ("POST", "/api/stream", {"length": 5}), ("GET", "/v1/models", None),
                                   ("POST", "/v1/completions", {"model": "small", "prompt": "the "})]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
                r = c.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
            ok = c.request(method, path, json=body, headers={"Authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200, (path, ok.text)
        assert c.get("/").status_code == 200 and c.get("/healthz").status_code == 200  # the page loads
    assert (b"s3cret-token", b"s3cret-token") in compared and (b"wrong", b"s3cret-token") in compared


def test_binding_off_loopback_needs_a_token_or_no_auth(model_path):
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_auth(host, None, False)
    with pytest.raises(CharlstmError, match="--token.*--no-auth"):
        check_auth("0.0.0.0", None, False)
    check_auth("0.0.0.0", "secret", False)
    check_auth("192.168.1.5", None, True)
    with pytest.raises(CharlstmError, match="empty"):
        check_auth("0.0.0.0", "  ", False)
    r = subprocess.run([sys.executable, "-m", "charlstm.cli", "serve", str(model_path), "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--token" in r.stderr and "--no-auth" in r.stderr and "Traceback" not in r.stderr


def test_serve_never_imports_tensorflow_or_keras(model_path):
    """`charlstm serve` end to end in a fresh interpreter (uvicorn.run replaced by a few requests)."""
    code = f"""
import sys, uvicorn
from fastapi.testclient import TestClient
def fake_run(app, **kw):
    with TestClient(app) as c:
        assert c.post('/api/generate', json={{'prime': 'the ', 'length': 20}}).status_code == 200
        assert c.post('/api/stream', json={{'length': 20}}).status_code == 200
        assert c.post('/v1/completions', json={{'model': 'small', 'prompt': 'the ', 'max_tokens': 5}}).status_code == 200
        assert c.get('/').status_code == 200
uvicorn.run = fake_run
from charlstm.cli import main
assert main(['serve', {str(model_path)!r}]) == 0
print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & {{'tensorflow', 'keras', 'jax', 'torch'}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout
