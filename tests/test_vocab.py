"""Vocabulary: characters <-> ids, persistence, and the unknown-character policies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError

MIXED = "Hello, wörld! Ünïcode: 李白 — ☃ 😀\n\ttabs and\r\nnewlines… ½ x²"


def test_round_trip_any_text(tiny_text):
    for text in (tiny_text, MIXED, "a", "\n\n\n", "😀😀a😀"):
        vocab = Vocabulary.build(text)
        ids = vocab.encode(text)
        assert len(ids) == len(text)
        assert vocab.decode(ids) == text


def test_ids_are_the_lessons_sorted_set(shared_data):
    text = (shared_data / "treasure_island.txt").read_text(encoding="utf-8")[:20000].lower()
    chars = sorted(list(set(text)))
    char_indices = {c: i for i, c in enumerate(chars)}
    vocab = Vocabulary.build(text)
    assert vocab.chars == tuple(chars)
    assert vocab.size == len(chars) and not vocab.has_unknown
    np.testing.assert_array_equal(vocab.encode(text), [char_indices[c] for c in text])


def test_ids_fit_the_smallest_dtype():
    assert Vocabulary.build("abc").encode("abc").dtype == np.uint8
    wide = "".join(chr(0x4E00 + i) for i in range(300))  # 300 CJK characters: more than a byte holds
    vocab = Vocabulary.build(wide)
    ids = vocab.encode(wide)
    assert ids.dtype == np.uint16
    assert vocab.decode(ids) == wide


def test_json_round_trip_preserves_ids():
    vocab = Vocabulary.build(MIXED * 3 + "zzzz", max_vocab=12)
    again = Vocabulary.from_json(json.loads(json.dumps(vocab.to_json(), ensure_ascii=False)))
    assert again == vocab
    assert again.size == vocab.size and again.unknown_id == vocab.unknown_id
    np.testing.assert_array_equal(again.encode(MIXED, unknown="replace"), vocab.encode(MIXED, unknown="replace"))


def test_unknown_error_names_the_characters():
    vocab = Vocabulary.build("abc ")
    with pytest.raises(CharlstmError) as info:
        vocab.encode("a b€c¤", unknown="error")
    msg = str(info.value)
    assert "'€'" in msg and "'¤'" in msg and "--unknown" in msg


def test_unknown_skip_and_replace():
    vocab = Vocabulary.build("abc ")
    assert vocab.decode(vocab.encode("a b€c¤", unknown="skip")) == "a bc"
    # no unknown symbol in this vocabulary: replace has nothing to map to and drops them too
    assert vocab.decode(vocab.encode("a b€c¤", unknown="replace")) == "a bc"
    with pytest.raises(CharlstmError, match="policy"):
        vocab.encode("abc", unknown="ignore")


def test_rare_characters_share_one_unknown_id():
    text = "aaaaabbbbbccccc" + "xy"  # x and y seen once
    vocab = Vocabulary.build(text, min_count=2)
    assert vocab.chars == ("a", "b", "c") and vocab.has_unknown
    assert vocab.size == 4 and vocab.unknown_id == 3
    assert vocab.coverage == pytest.approx(15 / 17)
    ids = vocab.encode("axbyc", unknown="replace")
    assert ids.tolist() == [0, 3, 1, 3, 2]
    assert vocab.decode(ids) == "a\ufffdb\ufffdc"


def test_max_vocab_keeps_the_most_frequent():
    text = "a" * 10 + "b" * 5 + "c" * 3 + "d" * 2 + "e"
    vocab = Vocabulary.build(text, max_vocab=3)  # two characters + the unknown symbol
    assert vocab.size == 3 and vocab.chars == ("a", "b") and vocab.has_unknown
    full = Vocabulary.build(text, max_vocab=5)  # everything fits: no unknown symbol
    assert full.size == 5 and not full.has_unknown


@pytest.mark.parametrize("kwargs", [{"max_vocab": 1}, {"min_count": 0}, {"min_count": 100}])
def test_bad_vocabulary_settings(kwargs):
    with pytest.raises(CharlstmError):
        Vocabulary.build("aabbc", **kwargs)


def test_empty_text_is_refused():
    with pytest.raises(CharlstmError, match="empty"):
        Vocabulary.build("")
