"""End to end: a few seconds of training learns the text, and the model generates from its own vocabulary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import charlstm

pytestmark = pytest.mark.slow


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def learned_run(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default recipe, tiny model, small batches: enough steps to learn the repetitive tiny text."""
    out = tmp_path_factory.mktemp("e2e") / "learned"
    charlstm.train(
        str(tiny_corpus), out=out, epochs=6, layers=1, units=48, embedding_dim=16, seq_len=32, batch_size=8,
        lr=2e-2, dropout=0.0, sample_length=0, verbose=0,
    )
    return out


def test_loss_falls_well_below_uniform(learned_run, tiny_text):
    rows = read_metrics(learned_run)
    vocab_size = len(set(tiny_text))
    uniform = math.log(vocab_size)  # the loss of a model that knows nothing
    assert len(rows) == 6 and [int(r["epoch"]) for r in rows] == list(range(1, 7))
    losses = [float(r["loss"]) for r in rows]
    val_losses = [float(r["val_loss"]) for r in rows]
    assert losses[-1] < 0.5 * uniform, (losses, uniform)
    assert val_losses[-1] < 0.5 * uniform, (val_losses, uniform)
    assert losses[-1] < losses[0] and val_losses[-1] < val_losses[0]
    for r in rows:  # bits per character reported next to nats
        assert float(r["bpc"]) == pytest.approx(float(r["loss"]) / math.log(2))
        assert float(r["val_bpc"]) == pytest.approx(float(r["val_loss"]) / math.log(2))


def test_model_file_holds_the_vocabulary_and_the_best_epoch(learned_run, tiny_text):
    model = charlstm.load(str(learned_run / "model.keras"))
    assert model.vocab.chars == tuple(sorted(set(tiny_text)))
    rows = read_metrics(learned_run)
    best = min(float(r["val_loss"]) for r in rows)
    assert model.meta["train_state"]["best"] == pytest.approx(best)
    # the runtime's own loss on held-out text is what training reported (same model, same data)
    held_out = tiny_text[-model.meta["corpus"]["val_chars"] :]
    nats = model.evaluate(held_out, context="stateful")["nats_per_char"]
    assert nats < 0.5 * math.log(model.vocab.size)


def test_generation_uses_only_vocabulary_characters(learned_run):
    model = charlstm.load(str(learned_run / "model.keras"))
    allowed = set(model.vocab.chars)
    for temperature in (0.0, 0.5, 1.0, 1.5):
        text = model.generate("the ", 300, temperature=temperature, seed=3)
        assert len(text) == 300 and set(text) <= allowed
    texts = model.generate("the ", 200, temperature=1.2, seed=4, num_samples=3, top_k=5)
    assert len(texts) == 3 and all(len(t) == 200 and set(t) <= allowed for t in texts)



def test_model_prefers_the_text_to_its_shuffled_characters(learned_run, tiny_text):
    """Same characters, same frequencies: only the learned order of characters can tell them apart."""
    model = charlstm.load(str(learned_run / "model.keras"))
    sample = tiny_text[:600]
    shuffled = "".join(np.random.default_rng(0).permutation(list(sample)))
    real = model.evaluate(sample)["nats_per_char"]
    noise = model.evaluate(shuffled)["nats_per_char"]
    assert real < 0.5 * noise, (real, noise)


def test_classic_recipe_runs_on_a_small_text(shared_data, tmp_path):
    raw = (shared_data / "treasure_island.txt").read_text(encoding="utf-8")[:6000]
    path = tmp_path / "small.txt"
    path.write_text(raw, encoding="utf-8")
    out = tmp_path / "classic"
    model = charlstm.train(
        str(path), recipe="classic", out=out, epochs=1, units=32, sample_length=20,
        sample_temperatures=[0.2, 1.2], verbose=0,
    )
    # the lesson's text and vocabulary: lowercased, ASCII only, header kept
    lesson_text = "".join(c for c in raw.lower() if ord(c) < 128)
    assert model.vocab.chars == tuple(sorted(set(lesson_text)))
    assert model.window == 40 and model.recipe == "classic"
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))["config"]
    assert {k: config[k] for k in ("mode", "maxlen", "step", "batch_size", "optimizer", "lr", "input")} == {
        "mode": "windows", "maxlen": 40, "step": 3, "batch_size": 128, "optimizer": "rmsprop", "lr": 0.01,
        "input": "onehot",
    }
    assert model.meta["corpus"]["chars"] == len(lesson_text) and model.meta["corpus"]["val_chars"] == 0
    rows = read_metrics(out)
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"])) and rows[0]["val_loss"] == ""
    assert "temperature: 1.2" in (out / "samples.txt").read_text(encoding="utf-8")
    for context in ("window", "stateful"):
        text = model.generate(lesson_text[:40], 60, temperature=0.5, seed=0, context=context)
        assert len(text) == 60 and set(text) <= set(model.vocab.chars)
    # the windowed model predicts exactly what its Keras twin predicts for a 40-character window
    import keras

    km = keras.saving.load_model(out / "model.keras")
    window = model.encode(lesson_text[100:140])[None, :].astype("int32")
    np.testing.assert_allclose(
        km.predict(window, verbose=0)[0], model.logits(lesson_text[100:140])[-1], rtol=1e-4, atol=1e-4
    )
