"""The lesson's text and training windows, as charlstm keeps them: ids, never a one-hot corpus.

The lesson reads the book with `open(path).read().lower()`, builds `sorted(set(text))` and one-hot arrays
of every 40-character window moved 3 characters at a time: x (n, 40, V) and y (n, V) booleans, V/4 times
the size of int32 ids (Treasure Island: 288 MB for x against 20 MB), growing with the alphabet. `lesson_windows` gives the same windows as int32 ids for a model
that one-hot encodes or embeds inside (or for `charlstm.OneHotWindows`, which one-hot encodes per batch).
"""

from __future__ import annotations

import os

import numpy as np

from charlstm.data.batches import gather, window_starts
from charlstm.data.corpus import load_corpus, preprocess
from charlstm.data.vocab import Vocabulary


def lesson_text(
    source: str | os.PathLike[str] = "treasure-island", *, lowercase: bool = True, max_chars: int | None = None
) -> str:
    """The text as the lesson reads it: lowercase, ASCII only, the Project Gutenberg header kept (the
    classic recipe's preprocessing); `lowercase=False` keeps the case (e.g. to score a model trained with
    it). A named corpus is downloaded once into the Keras cache; a file or folder is read as `train` reads it."""
    text = preprocess(load_corpus(source).text, normalize="none", lowercase=lowercase, ascii_only=True)
    return text[:max_chars] if max_chars else text


def lesson_windows(
    text: str, maxlen: int = 40, step: int = 3, vocab: Vocabulary | None = None
) -> tuple[np.ndarray, np.ndarray, Vocabulary]:
    """The lesson's training pairs, `for i in range(0, len(text) - maxlen, step)`: x[k] holds the ids of
    text[i:i+maxlen], y[k] the id of text[i+maxlen]; and the vocabulary (ids = the lesson's sorted(set(text))).

    int32 ids: Treasure Island's 126,491 windows take 20 MB, where the lesson's one-hot x takes 288 MB of
    booleans (57 characters). `vocab`: another vocabulary to encode with (characters outside it are an error).
    """
    vocab = vocab or Vocabulary.build(text)
    ids = vocab.encode(text).astype(np.int32)
    rows = gather(ids, window_starts(len(ids), maxlen, step), maxlen + 1)
    return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, -1]), vocab
