"""Issue 16: next-character distributions and per-character scores. `next_chars` shows exactly what `generate`
draws from (the softmax of the runtime's logits under the same settings, summing to 1 over the vocabulary;
the first generated character follows from it and the seed's first uniform); `score` equals `evaluate` in one
stateful pass, whatever the chunking; penalised generation is reproducible and independent of its neighbours;
`charlstm score` prints the total and the least likely spans."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from model_factory import CHARS, build_and_save

from charlstm.errors import CharlstmError
from charlstm.generation import model as runtime
from charlstm.generation import scoring
from charlstm.generation.state import Batch

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TEXT = "the cat sat on the mat, and the cat ate the rat.\n" * 3
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "ate", "rat", "hen", "lion", "mouse", "bird", "tree", "stone", "rain", "sun", "moon"]


def _long_text(n: int) -> str:
    rng = np.random.default_rng(0)
    return " ".join(rng.choice(WORDS, n // 3)).replace("the ", "the\n", 5)[:n]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("scoring") / "m.keras"
    build_and_save(path, layers=2, units=32, logit_scale=3.0, seed=5, extra_meta={"seeds": ["the cat "]})
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return runtime.load(model_path)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.5}, {"temperature": 0.7, "top_k": 4},
                                      {"temperature": 1.3, "top_p": 0.6}])
def test_next_chars_is_the_softmax_of_the_runtime_logits(model, settings):
    prefix = "the cat s"
    t = settings.get("temperature", 1.0)
    z = model.logits(prefix)[-1] / t
    ref = _softmax(z)
    if "top_k" in settings:
        ref[np.argsort(-ref)[settings["top_k"] :]] = 0
    if "top_p" in settings:
        order = np.argsort(-ref)
        before = np.cumsum(ref[order]) - ref[order]
        ref[order[before >= settings["top_p"]]] = 0
    ref /= ref.sum()
    dist = model.distribution(prefix, max_repeat="none", **settings)
    assert dist.shape == (model.vocab.size,) and abs(dist.sum() - 1) < 1e-12
    np.testing.assert_allclose(dist, ref, rtol=0, atol=1e-6)
    top = model.next_chars(prefix, 5, max_repeat="none", **settings)
    expect = np.argsort(-ref, kind="stable")[:5]
    assert [c for c, _ in top] == [CHARS[i] for i in expect if ref[i] > 0]
    np.testing.assert_allclose([p for _, p in top], ref[expect][: len(top)], atol=1e-6)


def test_next_chars_is_what_generate_draws_from(model):
    settings = dict(temperature=0.8, top_p=0.9, repetition_penalty=1.3, no_repeat_ngram=3, min_p=0.02)
    prefix = "the cat sat on the ca"
    cdf = np.cumsum(model.distribution(prefix, **settings))
    for seed in range(30):
        u = np.random.default_rng(seed).random((1, 1))[0, 0]  # the generation's first uniform
        drawn = model.generate(prefix, 1, seed=seed, **settings)
        assert drawn == CHARS[int(np.searchsorted(cdf, u * cdf[-1], side="right"))]
    # the processors are there: "ca" was followed by "t" before, so no_repeat_ngram=3 bans it
    assert model.distribution(prefix, **settings)[CHARS.index("t")] == 0
    assert model.distribution(prefix, max_repeat="none")[CHARS.index("t")] > 0


def test_next_chars_rejects_bad_input(model):
    with pytest.raises(CharlstmError, match="k must be"):
        model.next_chars("the", 0)
    with pytest.raises(CharlstmError, match="prime is empty"):
        model.next_chars("", 5)
    with pytest.raises(CharlstmError, match="min-p"):
        model.next_chars("the", 5, min_p=2)


def test_score_equals_evaluate_and_the_logits_in_one_stateful_pass(model):
    text = _long_text(1500)
    scored = model.score(text)
    ev = model.evaluate(text, context="stateful", streams=1)
    assert scored.chars == ev["chars"] == len(text) - 1
    assert scored.nats_per_char == pytest.approx(ev["nats_per_char"], rel=1e-9)
    assert scored.summary()["bits_per_char"] == pytest.approx(ev["bits_per_char"], rel=1e-9)
    assert np.isnan(scored.logprobs[0])  # no context for the first character, as OpenAI's null
    logits = model.logits(text)
    ids = model.encode(text)
    ref = [float(scoring.log_softmax(logits[i - 1])[ids[i]]) for i in (1, 2, 700, 1499)]
    np.testing.assert_allclose(scored.logprobs[[1, 2, 700, 1499]], ref, rtol=1e-5)
    chunked = scoring.score(model, text, chunk=37)  # the state carries across chunks
    np.testing.assert_allclose(chunked.logprobs[1:], scored.logprobs[1:], rtol=1e-5)
    short = model.score(TEXT)  # short texts: evaluate reads them as one stream too
    assert short.nats_per_char == pytest.approx(model.evaluate(TEXT)["nats_per_char"], rel=1e-9)


def test_score_top_entries_and_least_likely_spans(model):
    scored = model.score(TEXT, top=3)
    assert scored.top_ids.shape == (len(TEXT), 3)
    assert (np.diff(scored.top_logprobs[1:], axis=1) <= 0).all()
    assert (scored.top_logprobs[1:, 0] >= scored.logprobs[1:] - 1e-12).all()
    spans = scored.least_likely(3, 10)
    assert len(spans) == 3 and spans[0][2] >= spans[1][2] >= spans[2][2]
    bits = -scored.logprobs / np.log(2)
    best = max(range(1, len(TEXT) - 9), key=lambda s: bits[s : s + 10].sum())
    assert spans[0][0] == best and spans[0][2] == pytest.approx(bits[best : best + 10].mean())
    assert all(b <= a or b >= a + 10 for a, _, _ in spans for b, _, _ in spans if a != b)
    with pytest.raises(CharlstmError, match="outside|not in|unknown"):
        model.score("the cat 😀")
    assert model.score("the cat 😀", unknown="skip").text == "the cat "


def test_penalised_generation_is_reproducible_and_independent_of_its_neighbours(model):
    settings = dict(temperature=0.6, no_repeat_ngram=4, repetition_penalty=1.2, presence_penalty=0.3,
                    frequency_penalty=0.1, logit_bias={CHARS.index("e"): -2.0}, seed=11)
    alone = model.generate("the ", 300, **settings)
    assert model.generate("the ", 300, **settings) == alone
    assert alone != model.generate("the ", 300, temperature=0.6, seed=11)
    # stepped beside other requests, with other settings, in one batch: the same text
    gens = [model.generation("the ", 300, **settings)] + [
        model.generation("a cat ", 300, 0.9, seed=s, no_repeat_ngram=2) for s in range(3)
    ] + [model.generation("the ", 300, 0.6, seed=11)]
    texts = [""] * len(gens)
    batch = Batch()
    while not all(g.finished for g in gens):
        live = [g for g in gens if not g.finished]
        batch.step(live)
        for i, g in enumerate(gens):
            if g in live:
                texts[i] += g.pieces[0]
    batch.release()
    assert texts[0] == alone
    grams = [alone[i : i + 4] for i in range(len(alone) - 3)]
    assert len(grams) == len(set(grams))


def test_cli_score_prints_the_total_and_the_least_likely_spans(model_path, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    r = run_cli("score", str(model_path), str(f), "--show", "2")
    assert r.returncode == 0, r.stderr
    scored = runtime.load(model_path).score(TEXT)
    assert f"{scored.bits_per_char:.4f} bits/char" in r.stdout and f"{len(TEXT) - 1:,} characters" in r.stdout
    assert r.stdout.count("bits/char") == 3  # the total and two spans
    bad = run_cli("score", str(model_path), str(tmp_path / "missing.txt"))
    assert bad.returncode == 2 and "missing.txt" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_generate_takes_the_loop_settings_and_gives_the_python_text(model_path):
    r = run_cli("generate", str(model_path), "--prime", "the ", "--length", "200", "--temperature", "0.4",
                "--seed", "3", "--no-repeat-ngram", "5", "--repetition-penalty", "1.2", "--min-p", "0.05")
    assert r.returncode == 0, r.stderr
    text = runtime.load(model_path).generate("the ", 200, 0.4, seed=3, no_repeat_ngram=5,
                                              repetition_penalty=1.2, min_p=0.05)
    assert r.stdout == "the " + text + "\n"
    bad = run_cli("generate", str(model_path), "--repetition-penalty", "0")
    assert bad.returncode == 2 and "repetition-penalty" in bad.stderr and "Traceback" not in bad.stderr
