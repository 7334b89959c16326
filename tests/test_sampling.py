"""Sampling: greedy at T=0, the softmax at T=1 (checked statistically), sharper below 1, seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from charlstm.errors import CharlstmError
from charlstm.generation.sampling import check_options, entropy, probabilities, sample

DRAWS = 20_000


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@pytest.fixture
def logits() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 1.5, size=12)


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value of observed counts under `probs`, pooling cells with expected count < 5."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp).pvalue)


def test_temperature_zero_is_argmax():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(64, 30))
    for u in (np.zeros(64), np.full(64, 0.999), rng.random(64)):
        np.testing.assert_array_equal(sample(z, u, temperature=0.0), z.argmax(axis=-1))
    for row in z[:8]:  # the batch-1 path
        assert sample(row, rng.random(1), temperature=0)[0] == row.argmax()
    p = probabilities(z, temperature=0)
    np.testing.assert_array_equal(p.argmax(axis=-1), z.argmax(axis=-1))
    assert np.all(p.sum(axis=-1) == 1) and np.all(entropy(p) == 0)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 1.7])
def test_batched_draws_match_the_tempered_softmax(logits, temperature):
    u = np.random.default_rng(2).random(DRAWS)
    ids = sample(np.tile(logits, (DRAWS, 1)), u, temperature=temperature)
    counts = np.bincount(ids, minlength=len(logits))
    assert chi_square_p(counts, softmax(logits / temperature)) > 1e-3
    # and a clearly different distribution is rejected, so the test has power
    assert chi_square_p(counts, softmax(logits / (temperature * 1.5))) < 1e-6


def test_single_row_draws_match_the_softmax(logits):
    """The batch-1 fast path (what `charlstm generate` uses) samples the same distribution."""
    rng = np.random.default_rng(3)
    u = rng.random(DRAWS)
    ids = np.array([sample(logits[None, :], u[i : i + 1], 1.0)[0] for i in range(DRAWS)])
    counts = np.bincount(ids, minlength=len(logits))
    assert chi_square_p(counts, softmax(logits)) > 1e-3
    # both paths turn the same uniforms into the same choices
    np.testing.assert_array_equal(ids, sample(np.tile(logits, (DRAWS, 1)), u, 1.0))


def test_lower_temperature_gives_lower_entropy(logits):
    temps = [0.05, 0.2, 0.5, 0.8, 1.0, 1.2, 2.0, 5.0]
    h = [float(entropy(probabilities(logits, t))[0]) for t in temps]
    assert all(a < b for a, b in zip(h, h[1:], strict=False)), h
    assert float(entropy(probabilities(logits, 0))[0]) == 0.0
    assert h[-1] < math.log(len(logits))
    assert float(entropy(probabilities(logits, 1.0))[0]) == pytest.approx(
        float(stats.entropy(softmax(logits)))
    )


def test_top_k_and_top_p_restrict_the_support(logits):
    order = np.argsort(-logits)
    p = probabilities(logits, 1.0, top_k=3)[0]
    assert set(np.flatnonzero(p)) == set(order[:3])
    full = softmax(logits)
    p = probabilities(logits, 1.0, top_p=0.6)[0]
    kept = np.flatnonzero(p)
    mass = np.cumsum(full[order])
    need = int(np.searchsorted(mass, 0.6) + 1)  # smallest prefix holding 60 % of the mass
    assert set(kept) == set(order[:need])
    u = np.random.default_rng(4).random(5000)
    drawn = set(sample(np.tile(logits, (5000, 1)), u, 1.0, top_k=3).tolist())
    assert drawn == set(order[:3].tolist())
    drawn = set(sample(np.tile(logits, (5000, 1)), u, 1.0, top_p=0.6).tolist())
    assert drawn <= set(order[:need].tolist())


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -0.1}, {"temperature": float("nan")}, {"temperature": 1, "top_k": 0},
               {"temperature": 1, "top_p": 0.0}, {"temperature": 1, "top_p": 1.5}],
)
def test_meaningless_settings_are_refused(kwargs):
    with pytest.raises(CharlstmError):
        check_options(**kwargs)


def test_runtime_greedy_generation_follows_the_argmax(tiny_run):
    import charlstm

    model = charlstm.load(str(tiny_run / "model.keras"))
    prime = "the cat "
    text = model.generate(prime, 25, temperature=0, seed=1, no_repeat_ngram=0)  # the argmax, unconstrained
    assert text == model.generate(prime, 25, temperature=0, seed=99, no_repeat_ngram=0)  # no randomness at T=0
    for n in range(len(text)):
        logits = model.logits(prime + text[:n])[-1]
        assert model.vocab.chars[int(np.argmax(logits))] == text[n]


def test_runtime_first_character_follows_the_softmax(tiny_run):
    """20k samples of the first generated character, drawn as one batch, match the model's softmax."""
    import charlstm

    model = charlstm.load(str(tiny_run / "model.keras"))
    prime = "the d"
    probs = softmax(model.logits(prime)[-1].astype(np.float64))
    first = model.generate(prime, 1, temperature=1.0, seed=5, num_samples=DRAWS, max_repeat="none")
    ids = model.vocab.encode("".join(first))
    counts = np.bincount(ids, minlength=model.vocab.size)
    assert chi_square_p(counts, probs) > 1e-3


def test_runtime_seed_fixes_the_text(tiny_run):
    import charlstm

    model = charlstm.load(str(tiny_run / "model.keras"))
    a = model.generate("the ", 200, temperature=1.0, seed=7)
    assert a == model.generate("the ", 200, temperature=1.0, seed=7)
    assert a != model.generate("the ", 200, temperature=1.0, seed=8)


def test_a_longer_request_extends_a_shorter_one(tiny_run):
    """Same seed: the text of a short request is the start of a longer one, across draw-chunk boundaries."""
    import charlstm

    model = charlstm.load(str(tiny_run / "model.keras"))
    long = model.generate("the ", 4100, temperature=1.0, seed=21)
    for length in (1, 7, 300, 4096):
        assert model.generate("the ", length, temperature=1.0, seed=21) == long[:length]
    wide = model.generate("the ", 600, temperature=1.0, seed=22, num_samples=3)
    short = model.generate("the ", 5, temperature=1.0, seed=22, num_samples=3)
    assert [w[:5] for w in wide] == short
