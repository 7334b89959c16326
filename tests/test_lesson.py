"""Bring your own Keras model: the lesson's windows as ids, SampleText, save_keras_model -> NumPy runtime."""

from __future__ import annotations

import numpy as np
import pytest

import charlstm
from charlstm.errors import CharlstmError

TEXT = (
    "the ship was at anchor in the bay and the captain was ashore with the doctor. "
    "jim hawkins kept the inn and listened to the sea; the old sailor sang of dead men and rum. "
) * 12


def lesson_model(vocab_size: int, units: int = 16):
    """The lesson's model, as its students write it: one-hot windows in, softmax probabilities out."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input(shape=(40, vocab_size)),
            keras.layers.LSTM(units),
            keras.layers.Dense(vocab_size, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.RMSprop(learning_rate=0.01))
    return model


def id_model(vocab_size: int, units: int = 16):
    """The same network on id windows (one-hot inside), with logits out."""
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input(shape=(40,), dtype="int32"),
            keras.layers.CategoryEncoding(vocab_size, output_mode="one_hot"),
            keras.layers.LSTM(units),
            keras.layers.Dense(vocab_size),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="rmsprop")
    return model


def test_lesson_windows_are_the_lessons_as_ids() -> None:
    """x, y equal the lesson's one-hot arrays (argmax), built the lesson's way, but as int32 ids."""
    x, y, vocab = charlstm.lesson_windows(TEXT, maxlen=40, step=3)
    chars = sorted(set(TEXT))
    assert list(vocab.chars) == chars
    index = {c: i for i, c in enumerate(chars)}
    sentences = [TEXT[i : i + 40] for i in range(0, len(TEXT) - 40, 3)]
    nexts = [TEXT[i + 40] for i in range(0, len(TEXT) - 40, 3)]
    onehot = np.zeros((len(sentences), 40, len(chars)), dtype=bool)  # the lesson's arrays
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            onehot[i, t, index[char]] = 1
    assert x.dtype == np.int32 and y.dtype == np.int32
    assert x.shape == (len(sentences), 40) and y.shape == (len(sentences),)
    np.testing.assert_array_equal(x, onehot.argmax(-1))
    np.testing.assert_array_equal(y, [index[c] for c in nexts])


def test_sample_text_prints_every_temperature_after_every_epoch_and_the_saved_model_runs_in_numpy(tmp_path) -> None:
    import keras

    x, y, vocab = charlstm.lesson_windows(TEXT)
    model = lesson_model(vocab.size)
    printed: list[str] = []
    temperatures = [0.2, 0.5, 1.0, 1.2]
    samples = charlstm.SampleText(vocab, text=TEXT, temperatures=temperatures, length=30, print_fn=printed.append)
    model.fit(
        charlstm.OneHotWindows(x, y, vocab.size, batch_size=128, one_hot_targets=True),
        epochs=2, callbacks=[samples], verbose=0,
    )
    assert len(printed) == 2  # one block per epoch
    for epoch, block in enumerate(printed, start=1):
        assert block.startswith(f"----- Epoch {epoch}: generating with seed: ")
        assert [line for line in block.splitlines() if line.startswith("----- temperature")] == [
            f"----- temperature: {t}" for t in temperatures
        ]
    assert [(s["epoch"], s["temperature"]) for s in samples.samples] == [(e, t) for e in (1, 2) for t in temperatures]
    assert all(len(s["text"]) == 30 and set(s["text"]) <= set(vocab.chars) for s in samples.samples)

    path = charlstm.save_keras_model(model, vocab, tmp_path / "lesson.keras", text=TEXT, lowercase=True)
    runtime = charlstm.load(path)
    assert runtime.vocab.chars == vocab.chars and runtime.window == 40
    generated = runtime.generate("The ship was ", length=60, temperature=0.5, seed=1)  # lowercased as trained
    assert len(generated) == 60 and set(generated) <= set(vocab.chars)
    # the NumPy runtime's next-character distribution is the Keras model's softmax output
    logits = runtime.forward(x[:8])[0][:, -1]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = model.predict_on_batch(np.eye(vocab.size, dtype="float32")[x[:8]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    # still a plain Keras file: it loads back as the student's own model
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict_on_batch(np.eye(vocab.size, dtype="float32")[x[:2]]), expected[:2], atol=1e-6)


@pytest.mark.parametrize("build", [lesson_model, id_model], ids=["one-hot-softmax", "ids-logits"])
def test_sample_text_reads_probabilities_or_logits(build, tmp_path) -> None:
    """Greedy (T = 0) samples equal the NumPy runtime's greedy window generation from the saved file: the
    callback read the model's input (one-hot or ids) and output (probabilities or logits) right."""
    x, y, vocab = charlstm.lesson_windows(TEXT)
    model = build(vocab.size)
    one_hot = len(model.inputs[0].shape) == 3
    data = charlstm.OneHotWindows(x, y, vocab.size, one_hot_targets=True) if one_hot else (x, y)
    samples = charlstm.SampleText(vocab, seed="the captain was ashore with the doctor. ", temperatures=[0.0, 1.0],
                                  length=25, print_fn=None)
    if one_hot:
        model.fit(data, epochs=1, callbacks=[samples], verbose=0)
    else:
        model.fit(*data, batch_size=128, epochs=1, callbacks=[samples], verbose=0)
    greedy = samples.samples[0]["text"]
    runtime = charlstm.load(charlstm.save_keras_model(model, vocab, tmp_path / "m.keras"))
    assert greedy == runtime.generate(samples.seed, length=25, temperature=0, context="window", max_repeat="none")


def test_save_keras_model_refuses_what_the_runtime_cannot_run(tmp_path) -> None:
    import keras

    _, _, vocab = charlstm.lesson_windows(TEXT)
    hidden = keras.Sequential(
        [
            keras.Input(shape=(40, vocab.size)),
            keras.layers.LSTM(8),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(vocab.size, activation="softmax"),
        ]
    )
    with pytest.raises(CharlstmError, match="linear or softmax activation, not .relu."):
        charlstm.save_keras_model(hidden, vocab, tmp_path / "hidden.keras")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    with pytest.raises(CharlstmError, match="vocabulary has"):
        charlstm.save_keras_model(lesson_model(vocab.size + 1), vocab, tmp_path / "wide.keras")
    with pytest.raises(CharlstmError, match="must end in .keras"):
        charlstm.save_keras_model(lesson_model(vocab.size), vocab, tmp_path / "m.h5")


def test_the_runtime_checks_a_models_layers_before_running_it() -> None:
    from charlstm.generation.modelfile import check_layers

    def graph(*layers):
        return [{"class_name": cls, "config": {"name": cls.lower(), **cfg}} for cls, cfg in layers]

    lstm = ("LSTM", {"units": 8, "activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True})
    check_layers(graph(("InputLayer", {}), lstm, ("Dense", {"activation": "linear"})))
    check_layers(graph(("InputLayer", {}), lstm, ("Dense", {"activation": "linear"}), ("Activation", {"activation": "softmax"})))
    refused = {
        "one Dense layer": graph(lstm, ("Dense", {"activation": "linear"}), ("Dense", {"activation": "linear"})),
        "default settings": graph(("LSTM", {**lstm[1], "activation": "relu"}), ("Dense", {"activation": "linear"})),
        "only a softmax after the Dense head": graph(lstm, ("Dense", {}), ("Activation", {"activation": "relu"})),
        "cannot run: Bidirectional": graph(("Bidirectional", {}), ("Dense", {})),
    }
    for reason, layers in refused.items():
        with pytest.raises(CharlstmError, match=reason):
            check_layers(layers, "m.keras")
