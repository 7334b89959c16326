"""Logit processors: per-step constraints on the next character, applied row by row after the network and
before temperature / top-k / top-p (sampling.py).

Each keeps no state of its own between requests: what it may look at is the row's `RowHistory`, so a
request's text never depends on what else is generated beside it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RowHistory:
    """What a logit processor may look at, per row: the last character id and the length of its current run.

    Both start from the prime (a prime ending in "  " starts with last = id(" "), run = 2), so a constraint on
    runs counts the characters the user typed as well as generated ones. Kept up to date only when the
    generation has processors.
    """

    def __init__(self, prime_ids: np.ndarray, rows: int) -> None:
        last = int(prime_ids[-1])
        differs = np.flatnonzero(prime_ids != last)
        run = len(prime_ids) - (int(differs[-1]) + 1 if len(differs) else 0)
        self.last = np.full(rows, last, dtype=np.int64)
        self.run = np.full(rows, run, dtype=np.int64)

    def update(self, ids: np.ndarray) -> None:
        self.run = np.where(ids == self.last, self.run + 1, 1)
        self.last = np.asarray(ids, dtype=np.int64).copy()


class LogitProcessor(Protocol):
    """A per-step constraint on the next character: takes this generation's logits (rows, V) and its
    `RowHistory`, returns logits of the same shape (e.g. -inf where a character is forbidden for a row).
    Processors run in order, after the model and before temperature/top-k/top-p."""

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray: ...


class RepeatGuard:
    """Never let a row repeat a character more times in a row than `limits[character]` (the repeat guard).

    At low temperatures a character model can fall into one character forever (hundreds of spaces in source
    code); the guard forbids exactly the character that would make the current run too long, and leaves the
    distribution untouched otherwise. `limits` (V,) usually holds the training text's longest runs
    (`vocab.longest_runs`), recorded in the model file.
    """

    def __init__(self, limits: np.ndarray) -> None:
        self.limits = np.asarray(limits, dtype=np.int64)

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        over = np.flatnonzero(history.run >= self.limits[history.last])
        if not len(over):
            return logits
        logits = np.array(logits, copy=True)
        logits[over, history.last[over]] = -np.inf
        return logits
