"""Issue 22: one `GenerationSettings`, one text. For the same settings and seed, every way into generation
gives the same characters: `CharModel.generate` and `stream` (keyword arguments), `generate.generate` over
the `Network` (a settings object), a `Batch` stepping it beside other requests (the server's batcher), the
CLI, and the server's `/api/generate` and `/v1/completions`.

The model file is written from seeded NumPy weights (tests/numpy_model.py, no Keras): an LSTM over a GRU, with
an unknown symbol, so both cells, the stacking and the unknown mask are in every text. The texts before and
after the refactor were compared with tests/tools/record_generation.py (the same 437 outputs)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from fastapi.testclient import TestClient
from numpy_model import write_model

from charlstm.cli import main
from charlstm.errors import CharlstmError
from charlstm.generation import generate, scoring
from charlstm.generation.model import load
from charlstm.generation.settings import GenerationSettings
from charlstm.generation.state import Batch
from charlstm.server import Limits, create_app, load_entries

PRIME = "the cat "
CASES = [
    dict(length=60, seed=1),
    dict(length=60, seed=2, temperature=0.6, top_k=5),
    dict(length=60, seed=3, temperature=0.9, top_p=0.85, min_p=0.05),
    dict(length=60, seed=4, typical_p=0.7, no_repeat_ngram=3),
    dict(length=60, seed=5, repetition_penalty=1.3, no_repeat_ngram=0),
    dict(length=60, seed=6, presence_penalty=0.7, frequency_penalty=0.2, logit_bias={4: 2.0}),
    dict(length=60, seed=7, stop=("at", "e "), num_samples=3),
    dict(length=40, seed=8, num_samples=4, temperature=0.8, max_repeat=2),
]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("paths") / "mixed.keras")


@pytest.fixture(scope="module")
def model(path):
    return load(path)


@pytest.fixture(scope="module")
def client(path):
    with TestClient(create_app(load_entries([str(path)]), Limits())) as c:
        yield c


def texts(value):
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_every_python_path_gives_the_same_text(model, case):
    settings = GenerationSettings(**case)
    want = texts(model.generate(PRIME, **case))
    assert len(want) == settings.num_samples and all(want)
    pieces = list(model.stream(PRIME, **case))
    joined = ["".join(p if isinstance(p, str) else p[b] for p in pieces) for b in range(settings.num_samples)]
    assert joined == want
    assert texts(generate.generate(model.network, settings, PRIME)) == want
    # stepped in one Batch with two other requests, which join and leave at other times
    gens = [generate.start(model.network, settings, PRIME),
            generate.start(model.network, settings.replace(seed=99, length=25, stop=()), "a rose"),
            generate.start(model.network, GenerationSettings(length=90, seed=3, num_samples=2), "the ")]
    out = [[""] * g.rows for g in gens]
    batch = Batch()
    while not all(g.finished for g in gens):
        running = [g for g in gens if not g.finished]
        batch.step(running)
        for g in running:
            rows = out[gens.index(g)]
            for b, piece in enumerate(g.pieces):
                rows[b] += piece
    assert out[0] == want


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[6]], ids=["plain", "ngram", "stops"])
def test_the_server_gives_the_python_text(model, client, case):
    want = texts(model.generate(PRIME, **case))
    body = {k: list(v) if isinstance(v, tuple) else v for k, v in case.items()}
    got = client.post("/api/generate", json={"prime": PRIME, **body}).json()
    assert got["texts"] == want
    openai = {"length": "max_tokens", "num_samples": "n"}
    body = {openai.get(k, k): v for k, v in body.items()}
    choices = client.post("/v1/completions", json={"model": "mixed", "prompt": PRIME, **body}).json()["choices"]
    stops = case.get("stop", ())
    # OpenAI's text leaves the stop string out
    assert [c["text"] for c in choices] == [next((t[: -len(s)] for s in stops if t.endswith(s)), t) for t in want]


def test_the_cli_gives_the_python_text(model, path, capsys):
    case = CASES[3]
    assert main(["generate", str(path), "--prime", PRIME, "--length", "60", "--seed", "4", "--typical-p", "0.7",
                 "--no-repeat-ngram", "3"]) == 0
    assert capsys.readouterr().out == PRIME + model.generate(PRIME, **case) + "\n"


def test_next_chars_is_the_distribution_of_the_first_character(model):
    settings = GenerationSettings(temperature=0.7, top_p=0.9, no_repeat_ngram=2)
    top = scoring.next_chars(model.network, PRIME, 4, settings)
    assert top == model.next_chars(PRIME, 4, temperature=0.7, top_p=0.9, no_repeat_ngram=2)
    assert abs(sum(p for _, p in scoring.next_chars(model.network, PRIME, 30, settings)) - 1) < 1e-9


def test_settings_are_checked_once_and_name_their_field():
    for bad, field in [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 2}, "top_p"),
                       ({"min_p": 2}, "min_p"), ({"typical_p": 0}, "typical_p"), ({"length": -1}, "length"),
                       ({"num_samples": 0}, "num_samples"), ({"context": "x"}, "context"),
                       ({"max_repeat": 0}, "max_repeat"), ({"no_repeat_ngram": -1}, "no_repeat_ngram"),
                       ({"repetition_penalty": 0}, "repetition_penalty"), ({"logprobs": -1}, "logprobs"),
                       ({"presence_penalty": float("nan")}, "presence_penalty")]:
        with pytest.raises(CharlstmError) as err:
            GenerationSettings(**bad)
        assert err.value.field == field, bad
    s = GenerationSettings(stop="\n", top_k=3)
    assert s.stop == ("\n",) and s.replace(top_k=4).top_k == 4 and s.top_k == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.top_k = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        GenerationSettings(400)  # type: ignore[misc]  # keyword-only
    with pytest.raises(CharlstmError):
        s.replace(top_p=0)  # a changed copy is checked again


def test_errors_about_the_model_name_their_field_at_start(model):
    with pytest.raises(CharlstmError) as err:
        generate.start(model.network, GenerationSettings(), "the Zebra")
    assert err.value.field == "prime" and "use --unknown skip" in str(err.value)
    with pytest.raises(CharlstmError) as err:
        generate.start(model.network, GenerationSettings(logit_bias={999: 1.0}), "the")
    assert err.value.field == "logit_bias"


def test_errors_keep_their_field_when_pickled():
    from charlstm.errors import TrainingInterrupted, UnknownCharacters

    for exc in (CharlstmError("top-p must be in (0, 1], got 2", "top_p"), UnknownCharacters("1 character", "prime"),
                TrainingInterrupted("stopped")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and back.field == exc.field
    assert pickle.loads(pickle.dumps(UnknownCharacters("1 character"))).summary == "1 character"


def test_the_server_places_errors_by_their_field_not_their_wording(client):
    r = client.post("/api/generate", json={"prime": "the Zebra", "length": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prime"]
    assert r.json()["detail"][0]["msg"].endswith('send "unknown": "skip" (or "replace") to go on')
    r = client.post("/v1/completions", json={"model": "mixed", "prompt": "the Zebra", "max_tokens": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    r = client.post("/api/next", json={"prefix": "Z", "k": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prefix"]
    r = client.post("/api/score", json={"text": "Z"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "text"]
