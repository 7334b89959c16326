"""Fine-tuning on a text with characters the model lacks (issue 17): the Embedding and the output layer grow, the
old characters' logits stay exactly what they were, the new characters become reachable, the file loads in
plain Keras and in the NumPy runtime."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY_TEXT
from model_factory import keras_logits

import charlstm
from charlstm.data.vocab import Vocabulary
from charlstm.generation.model import load
from charlstm.training.grow import grow_model, grow_weights, grown_vocab, id_mapping
from charlstm.training.model import ModelSpec, build_model
from charlstm.training.saving import load_keras_model

NEW_TEXT = TINY_TEXT + "Zoë and Xavi zip by: Zoë? Xavi! " * 30


def test_grow_weights_moves_old_entries_and_fills_new_ones_by_the_rules():
    old = Vocabulary(tuple("abc"))
    new, added = grown_vocab(old, tuple("abcxy"))
    assert added == ("x", "y") and new.chars == ("a", "b", "c", "x", "y")  # old ids unchanged
    assert grown_vocab(Vocabulary(tuple("ab"), has_unknown=True), tuple("abz")) == (
        Vocabulary(tuple("ab"), has_unknown=True), ())  # rare characters already have their symbol
    mapping = id_mapping(old, new)
    assert mapping.tolist() == [0, 1, 2, -1, -1]
    rng = np.random.default_rng(0)
    emb, lstm, kernel, bias = rng.normal(size=(3, 4)), rng.normal(size=(4, 8)), rng.normal(size=(2, 3)), np.array([1.0, 2.0, 0.0])
    freq = np.array([0.5, 0.2, 0.1, 0.15, 0.05])
    g_emb, g_lstm, g_kernel, g_bias = grow_weights([emb, lstm, kernel, bias], [(5, 4), (4, 8), (2, 5), (5,)], 3,
                                                   mapping, freq)
    np.testing.assert_array_equal(g_emb[:3], emb)
    np.testing.assert_allclose(g_emb[3], emb.mean(0)) and np.testing.assert_allclose(g_emb[4], emb.mean(0))
    assert g_lstm is lstm  # not vocabulary-sized: kept as it is
    np.testing.assert_array_equal(g_kernel[:, :3], kernel)
    assert (g_kernel[:, 3:] == 0).all()
    np.testing.assert_array_equal(g_bias[:3], bias)
    offset = np.mean(bias - np.log(freq[:3]))
    np.testing.assert_allclose(g_bias[3:], np.log(freq[3:]) + offset)  # log-frequency, offset like the old ones


@pytest.fixture(scope="module")
def grown_run(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("grow")
    (root / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    out = root / "run"
    charlstm.train(str(root / "new.txt"), out=out, init_from=str(tiny_run / "model.keras"), epochs=6,
                   batch_size=16, seq_len=32, lr=1e-2, sample_length=0, verbose=0)
    return root, out


def test_the_grown_models_old_logits_match_the_original_before_training(tiny_run):
    base = load(tiny_run / "model.keras")
    old_keras = load_keras_model(tiny_run / "model.keras", compile=False)
    new, added = grown_vocab(base.vocab, tuple(sorted(set(NEW_TEXT))))
    assert set(added) == {"Z", "ë", "X", "v", "z", "p", ":", "?", "!"} - set(base.vocab.chars)
    spec = ModelSpec(vocab_size=new.size, input="embedding", embedding_dim=16, cell="lstm", layers=1, units=48)
    grown = build_model(spec)
    counts = {c: NEW_TEXT.count(c) for c in new.chars}
    grow_model(grown, old_keras, base.vocab, new, counts)
    ids = base.vocab.encode("the cat sat on the mat. the dog")[None, :]
    before, after = keras_logits(old_keras, ids), keras_logits(grown, ids)
    # logits, not probabilities: the new characters take some of the softmax mass, the old scores stay
    np.testing.assert_allclose(after[..., : base.vocab.size], before, rtol=1e-6, atol=1e-6)
    # a new character starts near its frequency in the new text (context-free: zero output column)
    z = new.chars.index("Z")
    probs = np.exp(after[0] - after[0].max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    share = counts["Z"] / sum(counts.values())
    assert share / 10 < probs[:, z].mean() < share * 10


@pytest.mark.slow
def test_added_characters_are_generated_after_a_few_steps_and_the_file_loads_everywhere(grown_run, tiny_run):
    _, out = grown_run
    model = load(out / "model.keras")
    base = load(tiny_run / "model.keras")
    assert model.vocab.chars[: len(base.vocab.chars)] == base.vocab.chars
    assert {"Z", "X", "ë"} <= set(model.vocab.chars)
    text = model.generate("Zo", 400, 0.8, seed=1)
    assert any(c in text for c in "ZXë?!:")  # the new characters are reachable
    plain = keras.saving.load_model(out / "model.keras", compile=False)  # no custom objects
    ids = model.encode("Zoë and Xavi")
    np.testing.assert_allclose(model.logits(ids), keras_logits(plain, ids[None, :])[0], rtol=1e-4, atol=1e-4)
