"""The copy check: how much of a generated text the training text already contains, and where.

For a text it finds the maximal copied spans — pieces also found in the training text that cannot be
extended either way — with one suffix-array search each (data/copyindex.py), plus a binary search for where
the next span starts (span ends only move right, so no position inside a span needs its own search). It
reports the longest span and the share of the text's characters covered by spans of at least `min_span`
characters (K, default 20: shorter pieces are words and phrases any text shares with its corpus).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from charlstm.data.copyindex import CopyIndex, copy_index, model_corpus
from charlstm.data.prepared import PreparedCorpus
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError

MIN_SPAN = 20


@dataclass(frozen=True)
class Span:
    """text[start:end] is also the training text's characters [source, source + end - start)."""

    start: int
    end: int
    source: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end, "length": self.length, "source": self.source}


@dataclass
class CopyReport:
    """What the check found in one text: spans of at least `min_span` characters, the longest of any length."""

    length: int  # characters checked
    min_span: int
    longest: Span | None  # the longest copied span of any length (None: nothing in common)
    spans: list[Span] = field(default_factory=list)  # maximal spans >= min_span, in text order

    @property
    def longest_length(self) -> int:
        return self.longest.length if self.longest is not None else 0

    @property
    def copied(self) -> int:
        """Characters covered by the spans (overlapping spans count each character once)."""
        covered, reach = 0, 0
        for s in self.spans:
            covered += max(0, s.end - max(s.start, reach))
            reach = max(reach, s.end)
        return covered

    @property
    def share(self) -> float:
        return self.copied / self.length if self.length else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "chars": self.length, "min_span": self.min_span, "longest": self.longest_length,
            "longest_span": self.longest.to_json() if self.longest is not None else None,
            "copied_chars": self.copied, "copied_share": round(self.share, 4),
            "spans": [s.to_json() for s in self.spans],
        }

    def summary(self) -> str:
        """One line for a person: 'copy check: longest copied span 212 chars; 38.5% in spans >= 20 (2 spans)'."""
        if self.longest is None:
            return "copy check: nothing in common with the training text"
        return (
            f"copy check: longest copied span {self.longest_length} chars; {self.share:.1%} of {self.length} "
            f"chars in spans >= {self.min_span} ({len(self.spans)} span{'s' if len(self.spans) != 1 else ''})"
        )


def _segments(vocab: Vocabulary, text: str) -> list[tuple[int, np.ndarray]]:
    """(offset, ids) of the stretches of `text` made of the corpus' characters: any other character (or one the
    corpus keeps only as its unknown symbol) cannot be copied, so it cuts the text."""
    if not text:
        return []
    table = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    order = np.argsort(table)
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    pos = np.minimum(np.searchsorted(table[order], cps), len(table) - 1)
    found = table[order][pos] == cps
    ids = order[pos]
    out = []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], found.astype(np.int8), [0]))))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        out.append((int(a), ids[a:b]))
    return out


def find_spans(index: CopyIndex, ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal matches (start, length, corpus position) of an id sequence against the index, left to right:
    the positions whose longest match reaches further than the previous position's (match ends never move
    left, since query[i+1:] keeps all but the first character of query[i:]'s match)."""
    lengths, where = index.matches(ids)
    ends = np.arange(len(ids)) + lengths
    previous = np.concatenate(([0], ends[:-1]))
    starts = np.flatnonzero((lengths > 0) & (ends > previous))
    return [(int(i), int(lengths[i]), int(where[i])) for i in starts]


def check_copies(index: CopyIndex, vocab: Vocabulary, text: str, min_span: int = MIN_SPAN) -> CopyReport:
    """The copy report of `text` against the index built over a corpus with vocabulary `vocab`."""
    if isinstance(min_span, bool) or not isinstance(min_span, int) or min_span < 1:
        raise CharlstmError(f"--min-span must be an integer >= 1, got {min_span!r}")
    spans: list[Span] = []
    longest: Span | None = None
    for offset, ids in _segments(vocab, text):
        for start, n, where in find_spans(index, ids):
            span = Span(offset + start, offset + start + n, where)
            if longest is None or n > longest.length:
                longest = span
            if n >= min_span:
                spans.append(span)
    return CopyReport(len(text), min_span, longest, spans)


class CopyChecker:
    """A corpus' copy index with its vocabulary: `check(text)` is the copy report of one text."""

    def __init__(self, index: CopyIndex, vocab: Vocabulary, name: str) -> None:
        self.index, self.vocab, self.name = index, vocab, name

    def check(self, text: str, min_span: int = MIN_SPAN) -> CopyReport:
        return check_copies(self.index, self.vocab, text, min_span)


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def checker_for_corpus(corpus: PreparedCorpus, part: str = "train", log: Any = _log, store: bool = True) -> CopyChecker:
    """The checker of a corpus' training part (or all of it), its index opened or built beside it."""
    return CopyChecker(copy_index(corpus, part, log=log, store=store), corpus.vocab, corpus.name)


def checker_for_model(meta: dict[str, Any], against: str | os.PathLike[str] | None = None,
                      model_path: str | None = None, log: Any = _log) -> CopyChecker:
    """The checker against a model's training text (or `against`): which corpus that is, and its index, are
    data's (`copyindex.model_corpus`, `copyindex.copy_index`)."""
    corpus, part = model_corpus(meta, against, model_path)
    return checker_for_corpus(corpus, part, log)


COPY_CHECK_MAX_CHARS = 200_000_000  # training checks its samples only against texts up to this size


class LazyChecker:
    """A corpus' checker built on first use (training's first samples), or None past COPY_CHECK_MAX_CHARS:
    a 1 GB text's index takes minutes to build, which a run should not spend unasked."""

    def __init__(self, corpus: PreparedCorpus, part: str = "train", log: Any = _log) -> None:
        self.corpus, self.part, self.log = corpus, part, log
        self._checker: CopyChecker | None = None
        a, b = (corpus.meta["split"]["train"] if part == "train" else (0, len(corpus.ids)))
        self.enabled = b - a <= COPY_CHECK_MAX_CHARS

    def __call__(self, text: str, min_span: int = MIN_SPAN) -> CopyReport | None:
        if not self.enabled:
            return None
        if self._checker is None:  # a text prepared in memory gets its index in memory too (seconds at most)
            self._checker = checker_for_corpus(self.corpus, self.part, self.log, store=self.corpus.path is not None)
        return self._checker.check(text, min_span)
