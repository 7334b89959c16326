"""Logit processors: per-step constraints on the next character, applied row by row after the network and
before temperature / top-k / top-p / min-p / typical-p (sampling.py).

They follow the formulas of the libraries people know them from, so a setting means here what it means there:

- `RepeatGuard(limits)`: never a longer run of one character than the training text had (issue 10).
- `NoRepeatNGram(n)`: Hugging Face `generate(no_repeat_ngram_size=n)` over characters: a row never produces
  an n-gram that already occurs in its text (prime included).
- `RepetitionPenalty(p)`: the CTRL paper's penalty as Hugging Face's `RepetitionPenaltyLogitsProcessor` has
  it: the logit of every character already in the row's text (prime included) is multiplied by p when
  negative and divided by p otherwise.
- `PresenceFrequencyPenalty(presence, frequency)`: OpenAI's formula, logit - count * frequency -
  (count > 0) * presence, counted over the characters generated so far (not the prompt), as OpenAI counts.
- `LogitBias(bias, V)`: OpenAI's `logit_bias`: a fixed amount added to the logits of given character ids.

A processor object holds only its settings; whatever it accumulates while a generation runs lives in that
generation's `RowHistory.memo`, so one processor may serve many requests at once and a request's text never
depends on another's. Each updates its memo from the ids appended since its last call, so a step costs
O(rows) (O(rows x V) for the count-based ones), not O(text length).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from charlstm.errors import CharlstmError

# The default recipe's no_repeat_ngram: no sample repeats a 20-character span verbatim. Chosen by measurement
# (benchmarks/bench_loops.py, benchmarks/README.md): at T = 0.5 it brought whitespace share and compressibility
# within 1.5x of the training text's own on source code and on a novel (the repeat guard alone: 53 % spaces
# where the code has 30 %), with the samples' loss under the model still below the text's own; 24 and
# more let loops of 20+ characters back in on the novel, shorter bans forbid more of what real text repeats.
DEFAULT_NO_REPEAT_NGRAM = 20


class RowHistory:
    """What a logit processor may look at, per row: the last character id, the length of its current run, and
    (when a processor asks for them, `needs_ids`) every id of the row so far, prime first.

    All start from the prime (a prime ending in "  " starts with last = id(" "), run = 2), so a constraint on
    runs or n-grams counts the characters the user typed as well as generated ones; `prime_len` tells them
    apart. `memo` is where processors keep what they accumulate for this generation (counts, n-grams seen),
    keyed by the processor: it lives and dies with the request. Kept up to date only when the generation has
    processors.
    """

    def __init__(self, prime_ids: np.ndarray, rows: int, keep_ids: bool = False) -> None:
        prime_ids = np.asarray(prime_ids, dtype=np.int64)
        last = int(prime_ids[-1])
        differs = np.flatnonzero(prime_ids != last)
        run = len(prime_ids) - (int(differs[-1]) + 1 if len(differs) else 0)
        self.last = np.full(rows, last, dtype=np.int64)
        self.run = np.full(rows, run, dtype=np.int64)
        self.prime_len = len(prime_ids)
        self.memo: dict[Any, Any] = {}
        self._length = self.prime_len
        self._ids: np.ndarray | None = None
        if keep_ids:  # grown by doubling: appending a step costs O(rows)
            self._ids = np.empty((rows, max(64, 2 * self.prime_len)), dtype=np.int32)
            self._ids[:, : self.prime_len] = prime_ids

    @property
    def ids(self) -> np.ndarray:
        """(rows, prime + generated) ids: a view, valid until the next update."""
        if self._ids is None:
            raise RuntimeError("this history keeps no ids: give the processor `needs_ids = True`")
        return self._ids[:, : self._length]

    def update(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.run = np.where(ids == self.last, self.run + 1, 1)
        self.last = ids.copy()
        if self._ids is not None:
            if self._length == self._ids.shape[1]:
                grown = np.empty((len(ids), 2 * self._length), dtype=np.int32)
                grown[:, : self._length] = self._ids
                self._ids = grown
            self._ids[:, self._length] = ids
        self._length += 1


    def select(self, rows: np.ndarray) -> RowHistory:
        """The history of rows `rows` (row k a copy of row `rows[k]`; repeats allowed): what beam search keeps
        of its hypotheses at each step. What the processors accumulated comes along where its form is known
        here (the n-gram ban's index, the penalties' counts), copied on write so that two copies of one row
        never share what either changes; anything else is dropped and rebuilt from the ids (never wrong)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = RowHistory.__new__(RowHistory)
        out.__dict__.update(self.__dict__)
        out.last, out.run = self.last[rows], self.run[rows]
        out._ids = self._ids[rows] if self._ids is not None else None
        out.memo = {}
        before = len(self.last)
        for key, value in self.memo.items():
            if isinstance(key, NoRepeatNGram) and isinstance(value, dict) and "seen" in value:
                memo: dict[str, Any] = {}
                for name, part in value.items():
                    if name == "seen":  # per row, the n-grams seen: copied for a second copy of a row
                        seen, used = [], set()
                        for r in rows.tolist():
                            index = part[r]
                            if r in used:  # its own index, sets included
                                index = {k: set(v) if isinstance(v, set) else v for k, v in index.items()}
                            used.add(r)
                            seen.append(index)
                        memo[name] = seen
                    elif isinstance(part, list) and len(part) == before:  # per row, immutable entries
                        memo[name] = [part[r] for r in rows.tolist()]
                    else:  # shared by all rows (how far the history is indexed)
                        memo[name] = part
                out.memo[key] = memo
            elif isinstance(value, _Counts):
                counts = _Counts.__new__(_Counts)
                counts.counts, counts.done = value.counts[rows], value.done
                out.memo[key] = counts
        return out


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

    Examples:
        >>> history = RowHistory(np.array([2, 1, 1]), rows=1)  # the prime ends in a run of two 1s
        >>> RepeatGuard(np.array([5, 2, 5]))(np.zeros((1, 3)), history)  # 1 may not run three times
        array([[  0., -inf,   0.]])
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


class _Counts:
    """Per-row counts (rows, V) of the ids in a history from position `start` on, kept up to date."""

    def __init__(self, rows: int, vocab: int, start: int) -> None:
        self.counts = np.zeros((rows, vocab), dtype=np.int64)
        self.done = start  # history positions already counted

    def update(self, history: RowHistory) -> np.ndarray:
        ids = history.ids
        if ids.shape[1] > self.done:
            new = ids[:, self.done :]
            rows = np.repeat(np.arange(len(new)), new.shape[1])
            np.add.at(self.counts, (rows, new.ravel()), 1)
            self.done = ids.shape[1]
        return self.counts


def _memo(processor: object, history: RowHistory, make: Any) -> Any:
    memo = history.memo
    if processor not in memo:
        memo[processor] = make()
    return memo[processor]


class NoRepeatNGram:
    """Forbid, for each row, every character that would complete an n-gram already in the row's text.

    Hugging Face's `no_repeat_ngram_size` semantics: the row's last n-1 characters are looked up among the
    (n-1)-grams seen before (prime included); every character that followed one of their earlier occurrences
    gets -inf. Rows shorter than n-1 characters are left alone. Should a ban leave a row with no finite
    logit at all (a tiny vocabulary, n = 1), that row is left as it was rather than made unsampleable.
    The n-grams are compared exactly (as Hugging Face compares them), never by a hash.

    Examples:
        >>> history = RowHistory(np.array([0, 1, 2, 0]), rows=1, keep_ids=True)  # "abca"
        >>> NoRepeatNGram(2)(np.zeros((1, 3)), history)  # "ab" is in the text: after "a", "b" is banned
        array([[  0., -inf,   0.]])
    """

    needs_ids = True

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise CharlstmError(f"no-repeat-ngram must be an integer >= 1, got {n!r}", "no_repeat_ngram")
        self.n = int(n)

    def __repr__(self) -> str:
        return f"NoRepeatNGram({self.n})"

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        ids = history.ids  # (rows, length)
        rows, length = ids.shape
        n = self.n
        if length < n - 1:
            return logits
        # memo, per row: {(n-1)-gram: the id that followed it, or the set of them when several}, the row's
        # last n-1 ids as one key, and how far the history is indexed. An (n-1)-gram's key is its ids as the
        # digits of one integer in base V (exact: two n-grams share a key only if they are equal; about 100
        # bytes per character for n = 20, where tuples of ids would take 400)
        base = logits.shape[-1]
        width = base ** (n - 1)  # keys are taken modulo V^(n-1): the last n-1 digits
        state = _memo(self, history, lambda: {"seen": [{} for _ in range(rows)], "keys": [0] * rows, "done": 0})
        seen: list[dict[int, Any]] = state["seen"]
        keys: list[int] = state["keys"]
        if length > state["done"]:
            start = state["done"]
            block = ids[:, start:].tolist()  # the ids not indexed yet, per row
            for b, (row, seq) in enumerate(zip(seen, block, strict=True)):
                key = keys[b]  # the (n-1)-gram just before position `start` (once start >= n - 1)
                for at, nxt in enumerate(seq, start):
                    if at >= n - 1:
                        old = row.get(key)
                        if old is None:
                            row[key] = nxt
                        elif isinstance(old, set):
                            old.add(nxt)
                        elif old != nxt:
                            row[key] = {old, nxt}
                    key = (key * base + nxt) % width
                keys[b] = key
            state["done"] = length
        out = None
        for b in range(rows):
            banned = seen[b].get(keys[b])  # what followed the row's last n-1 characters before
            if banned is None:
                continue
            cols = np.array([banned] if isinstance(banned, int) else sorted(banned), dtype=np.int64)
            row = logits[b]
            keep = np.isfinite(row)
            keep[cols] = False
            if not keep.any():
                continue  # banning all would leave nothing to sample: leave the row as it is
            if out is None:
                out = np.array(logits, copy=True)
            out[b, cols] = -np.inf
        return logits if out is None else out


class RepetitionPenalty:
    """The CTRL repetition penalty, as Hugging Face computes it: for every character already in the row's
    text (prime included), logit * p if the logit is negative, else logit / p. p > 1 discourages repeats,
    p < 1 encourages them, p = 1 changes nothing. Applied to the raw logits, before temperature.

    Examples:
        >>> history = RowHistory(np.array([0, 1]), rows=1, keep_ids=True)  # ids 0 and 1 are in the text
        >>> RepetitionPenalty(2.0)(np.array([[2.0, -1.0, 3.0]]), history)
        array([[ 1., -2.,  3.]])
    """

    needs_ids = True

    def __init__(self, penalty: float) -> None:
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not (penalty > 0) or (
            not np.isfinite(penalty)
        ):
            raise CharlstmError(f"repetition-penalty must be a number > 0 (1 = off), got {penalty!r}", "repetition_penalty")
        self.penalty = float(penalty)

    def __repr__(self) -> str:
        return f"RepetitionPenalty({self.penalty:g})"

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        rows, vocab = logits.shape
        counts = _memo(self, history, lambda: _Counts(rows, vocab, 0)).update(history)
        seen = counts > 0
        p = self.penalty
        penalised = np.where(logits < 0, logits * p, logits / p)
        return np.where(seen, penalised, logits)


class PresenceFrequencyPenalty:
    """OpenAI's presence and frequency penalties: logit - count * frequency - (count > 0) * presence, where
    count is how often the character has been generated so far in this row (the prompt is not counted).

    Examples:
        >>> history = RowHistory(np.array([0]), rows=1, keep_ids=True)  # the prompt: id 0
        >>> history.update(np.array([1])); history.update(np.array([1]))  # id 1 generated twice
        >>> PresenceFrequencyPenalty(presence=0.5, frequency=0.25)(np.zeros((1, 3)), history)
        array([[ 0., -1.,  0.]])
    """

    needs_ids = True

    def __init__(self, presence: float = 0.0, frequency: float = 0.0) -> None:
        for name, value in (("presence_penalty", presence), ("frequency_penalty", frequency)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise CharlstmError(f"{name} must be a finite number, got {value!r}", name)
        self.presence, self.frequency = float(presence), float(frequency)

    def __repr__(self) -> str:
        return f"PresenceFrequencyPenalty(presence={self.presence:g}, frequency={self.frequency:g})"

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        rows, vocab = logits.shape
        counts = _memo(self, history, lambda: _Counts(rows, vocab, history.prime_len)).update(history)
        return logits - counts * self.frequency - (counts > 0) * self.presence


class LogitBias:
    """OpenAI's `logit_bias`: add `bias[id]` to the logit of character `id` at every step, in every row
    (-100 bans a character in practice, +100 all but forces it).

    Examples:
        >>> LogitBias({2: -100.0, 0: 1.5}, vocab_size=3)(np.zeros((2, 3)), None)
        array([[   1.5,    0. , -100. ],
               [   1.5,    0. , -100. ]])
    """

    def __init__(self, bias: Mapping[int, float], vocab_size: int) -> None:
        self.vector = np.zeros(vocab_size, dtype=np.float64)
        for key, value in bias.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < vocab_size:
                raise CharlstmError(f"logit_bias: token id {key!r} is not in the vocabulary (0..{vocab_size - 1})", "logit_bias")
            if not np.isfinite(value):
                raise CharlstmError(f"logit_bias: the bias for token {key} must be a finite number", "logit_bias")
            self.vector[int(key)] += float(value)

    def __repr__(self) -> str:
        return f"LogitBias({int(np.count_nonzero(self.vector))} ids)"

    def __call__(self, logits: np.ndarray, history: RowHistory) -> np.ndarray:
        return logits + self.vector


def build_processors(
    vocab_size: int,
    repeat_limits: np.ndarray | None,
    extra: Sequence[LogitProcessor] = (),
    *,
    no_repeat_ngram: int | None = None,
    repetition_penalty: float | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    logit_bias: Mapping[int, float] | None = None,
) -> list[LogitProcessor]:
    """The processors for these settings, in the order they apply: the repeat guard, the penalties (they
    rescale logits), the bias, the n-gram ban (last, so that it sees what would be left), then `extra`.
    Neutral settings (None, 0, penalty 1, an empty bias) add nothing, so they cost nothing.

    Examples:
        >>> build_processors(3, None, no_repeat_ngram=20, repetition_penalty=1.0, logit_bias={1: 2.0})
        [LogitBias(1 ids), NoRepeatNGram(20)]
    """
    out: list[LogitProcessor] = []
    if repeat_limits is not None:
        out.append(RepeatGuard(repeat_limits))
    if repetition_penalty is not None and repetition_penalty != 1:
        out.append(RepetitionPenalty(repetition_penalty))
    if presence_penalty or frequency_penalty:
        out.append(PresenceFrequencyPenalty(presence_penalty, frequency_penalty))
    if logit_bias:
        out.append(LogitBias(logit_bias, vocab_size))
    if no_repeat_ngram:
        out.append(NoRepeatNGram(no_repeat_ngram))
    return [*out, *extra]
