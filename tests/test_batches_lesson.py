"""The classic recipe's windows are exactly the lesson's, and the default recipe's sequences cover the text."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm.data.batches import (
    make_sequence_batches,
    make_window_batches,
    sequence_starts,
    split_ids,
    window_starts,
)
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError

MAXLEN, STEP = 40, 3


def lesson_windows(text: str, maxlen: int = MAXLEN, step: int = STEP):
    """The lesson's code, verbatim in spirit: sentences, next_chars and one-hot x, y."""
    chars = sorted(list(set(text)))
    char_indices = {c: i for i, c in enumerate(chars)}
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i : i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype=bool)
    y = np.zeros((len(sentences), len(chars)), dtype=bool)
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return chars, sentences, next_chars, x, y


@pytest.fixture(scope="module")
def lesson_text(shared_data) -> str:
    return (shared_data / "treasure_island.txt").read_text(encoding="utf-8")[:6000].lower()


def all_batches(ds):
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_windows_equal_the_lessons(lesson_text):
    chars, sentences, next_chars, x_lesson, y_lesson = lesson_windows(lesson_text)
    vocab = Vocabulary.build(lesson_text)
    assert vocab.chars == tuple(chars)
    ids = vocab.encode(lesson_text)

    starts = window_starts(len(ids), MAXLEN, STEP)
    assert len(starts) == len(sentences)
    assert [lesson_text[s : s + MAXLEN] for s in starts] == sentences

    ds = make_window_batches(ids, MAXLEN, STEP, batch_size=128, seed=0, shuffle=False)
    x, y = all_batches(ds)
    assert x.shape == (len(sentences), MAXLEN) and y.shape == (len(sentences),)
    assert len(ds) == -(-len(sentences) // 128)
    # as ids: the lesson's one-hot positions
    np.testing.assert_array_equal(x, x_lesson.argmax(axis=-1))
    np.testing.assert_array_equal(y, y_lesson.argmax(axis=-1))
    assert vocab.decode(x[0]) == sentences[0] and vocab.decode(y[:5]) == "".join(next_chars[:5])
    assert vocab.decode(x[-1]) == sentences[-1] and vocab.decode(y[-1:]) == next_chars[-1]


def test_one_hot_inside_the_model_equals_the_lessons_x(lesson_text):
    import keras

    chars, _, _, x_lesson, _ = lesson_windows(lesson_text)
    ids = Vocabulary.build(lesson_text).encode(lesson_text)
    x, _ = make_window_batches(ids, MAXLEN, STEP, batch_size=64, seed=0, shuffle=False)[0]
    onehot = keras.layers.CategoryEncoding(num_tokens=len(chars), output_mode="one_hot")(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(onehot).astype(bool), x_lesson[:64])


@pytest.mark.parametrize("n", [41, 42, 43, 44, 45, 46, 100, 101, 102, 103])
def test_window_starts_match_the_lessons_range_at_every_remainder(n):
    text = "".join(chr(97 + i % 26) for i in range(n))
    _, sentences, next_chars, _, _ = lesson_windows(text)
    starts = window_starts(n, MAXLEN, STEP)
    assert starts.tolist() == list(range(0, n - MAXLEN, STEP))
    assert [text[s + MAXLEN] for s in starts] == next_chars


@pytest.mark.parametrize("n", [0, 39, 40])
def test_text_shorter_than_a_window_is_refused(n):
    with pytest.raises(CharlstmError, match="shorter than one training window"):
        window_starts(n, MAXLEN, STEP)


def row_multiset(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return sorted(map(bytes, np.concatenate([x, y[:, None]], axis=1).astype(np.uint8)))


def test_shuffled_epochs_are_permutations_fixed_by_seed_and_epoch(lesson_text):
    ids = Vocabulary.build(lesson_text).encode(lesson_text)
    plain_x, plain_y = all_batches(make_window_batches(ids, MAXLEN, STEP, 128, seed=0, shuffle=False))
    ds = make_window_batches(ids, MAXLEN, STEP, 128, seed=5)
    x0, y0 = all_batches(ds)
    # same rows, different order
    assert not np.array_equal(x0, plain_x)
    assert row_multiset(x0, y0) == row_multiset(plain_x, plain_y)
    ds.set_epoch(1)
    x1, _ = all_batches(ds)
    assert not np.array_equal(x0, x1)
    again = make_window_batches(ids, MAXLEN, STEP, 128, seed=5)
    again.set_epoch(1)
    np.testing.assert_array_equal(all_batches(again)[0], x1)


def test_sequences_targets_are_inputs_shifted_by_one():
    ids = np.arange(1000, dtype=np.uint16) % 251
    ds = make_sequence_batches(ids, seq_len=32, batch_size=8, seed=3)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (8, 32)
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    starts = sequence_starts(len(ids), 32, seed=3, epoch=0)
    # non-overlapping, one seq_len apart once sorted, and never running off the end
    s = np.sort(starts)
    assert np.all(np.diff(s) == 32) and s[-1] + 33 <= len(ids)
    assert not np.array_equal(starts, sequence_starts(len(ids), 32, seed=3, epoch=1))
    np.testing.assert_array_equal(starts, sequence_starts(len(ids), 32, seed=3, epoch=0))


def test_split_is_contiguous():
    ids = np.arange(1000)
    train, val = split_ids(ids, 0.1)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)
    assert len(split_ids(ids, 0.0)[1]) == 0
