"""Constraints on what a sample may be: a regular expression (or several, all to hold), compiled once to a
character automaton over the model's vocabulary, and applied as a mask at every step.

A character model is the easiest case of guided generation there is: every step is one character, so a
constraint is a set of allowed ids per row. `Constraint` holds the automaton as two tables over the
vocabulary -- `table[state, id]`, the state after writing character `id` (-1: no match can follow), and
`dist[state]`, the fewest characters from there to a full match -- so that a step's mask is one lookup:
character `id` is allowed in a row iff its next state can still reach a match within the characters left
(`dist[table[state, id]] <= left - 1`). A sample that must end in "a" within 12 characters therefore gets
there: the mask narrows to what still fits as the end draws near, and never to nothing (the start state can
reach a match within the length, and every allowed step keeps that true).

Patterns use Python's `re` syntax, matched against the whole generated text (as `re.fullmatch`; a leading
`^` and trailing `$` are accepted and mean the same): literals, classes, `.`, alternatives, groups, bounded
and unbounded repeats, lookaheads, `(?i)`. Not supported (no finite automaton, or not in `interegular`):
back-references, `\\b`, lookbehinds; they are one clear error naming the field. `\\d`, `\\w`, `\\s` (and
`\\D`, `\\W`, `\\S` outside classes) mean what Python's `re` means by them for the characters of the
vocabulary, Unicode included (interegular alone would read them as ASCII).

Stops and the end of an item: a stop string ends a sample only where the pattern allows. The automaton is
built for the whole output as the generation writes it (a row ends at its first stop string), and the
pattern is matched against the text the caller gets: with its stop string, as `generate` returns it
(stop_mode "included"), or without (OpenAI's API strips it: "excluded"; an item, which must end at the
boundary symbol: "required"). See `_output_fsm`.

The automaton library is `interegular` (as outlines uses), chosen over the `regex` module's partial matching
by measurement (benchmarks/bench_constraints.py): one table lookup per step instead of one partial match per
character of the vocabulary per row per step, and distances to a match, which partial matching cannot give.

`Constraint` is immutable and shared (compiled once per pattern, `compile_constraint` caches); what changes
while a request runs -- each row's state -- lives in a `ConstraintState`, so rows and requests never
interact.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charlstm.errors import CharlstmError

_FAR = np.iinfo(np.int32).max // 2  # the distance of a state from which no match can be reached
# the largest {m,n} a pattern may count to: interegular builds a state per counted character in pure Python
# (measured: {0,500} 1.1 s, {10,2000} 12 s on a shared 2-core AMD EPYC), and a request waits for it
MAX_REPEAT = 1000
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")
_ANY = r"[\s\S]*"


def _error(message: str, field: str) -> CharlstmError:
    return CharlstmError(message, field)


# -- from pattern text to an automaton ---------------------------------------------------------------------

_CLASS_ESCAPES = {"d": r"\d", "w": r"\w", "s": r"\s"}


def _class_chars(escape: str, chars: Sequence[str]) -> str:
    """The vocabulary's characters that Python's `re` puts in class `escape` (d, w, s), as class contents."""
    rx = re.compile(_CLASS_ESCAPES[escape])
    return "".join(re.escape(c) for c in chars if len(c) == 1 and rx.fullmatch(c))


def _rewrite(pattern: str, chars: Sequence[str]) -> str:
    """`pattern` with a leading ^ and trailing $ dropped and \\d \\w \\s spelt out as the vocabulary's
    characters that Python's `re` puts in them (negated \\D \\W \\S too, outside brackets)."""
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1]
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            e = pattern[i + 1]
            low = e.lower()
            if low in _CLASS_ESCAPES and (not in_class or e == low):
                members = _class_chars(low, chars)
                if in_class:
                    out.append(members)
                elif e == low:
                    out.append(f"[{members}]" if members else r"[^\s\S]")
                else:
                    out.append(f"[^{members}]" if members else r"[\s\S]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            # a ] right after [ or [^ is a literal
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                out.append("^")
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                out.append("\\]")
                j += 1
            i = j
            continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


def _fsm(pattern: str, field: str, chars: Sequence[str]):  # noqa: ANN202 -- interegular.FSM
    import interegular

    if not isinstance(pattern, str):
        raise _error(f"{field} must be a string, got {type(pattern).__name__}", field)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _error(f"{field}: {pattern!r} is not a valid regular expression ({exc})", field) from None
    counts = [int(n) for m in _REPEAT.finditer(pattern) for n in m.groups() if n]
    if counts and max(counts) > MAX_REPEAT:
        raise _error(
            f"{field}: repeat counts above {MAX_REPEAT:,} are not supported (got {max(counts):,}): each counted "
            "character is a state of the automaton; bound the text with the length instead",
            field,
        )
    try:
        return interegular.parse_pattern(_rewrite(pattern, chars)).to_fsm()
    except Exception as exc:  # interegular's Unsupported / InvalidSyntax and friends
        what = str(exc) or type(exc).__name__
        raise _error(
            f"{field}: {pattern!r} is not supported ({what}); use literals, classes, ., |, groups, repeats "
            "and lookaheads (no back-references, \\b or lookbehinds)",
            field,
        ) from None


def _literal(text: str, chars: Sequence[str]):  # noqa: ANN202
    return _fsm(re.escape(text), "stop", chars)


STOP_MODES = ("included", "excluded", "required")


def _output_fsm(pattern_fsm, stops: Sequence[str], stop_mode: str, chars: Sequence[str]):  # noqa: ANN001, ANN202
    """The language of whole outputs, as the generation writes them (the stop string included, for a row that
    met one; a row ends at its first stop). stop_mode says what the pattern is matched against:
    "included": the text with its stop string, as `generate` returns it; "excluded": the text before the stop
    (OpenAI's API strips it); "required": the text before the stop, and the stop must come (an item of an
    items model, which ends at the boundary symbol)."""
    stops = [s for s in stops if s]
    if not stops:
        if stop_mode == "required":
            raise _error("a constraint that requires a stop needs a stop string", "stop")
        return pattern_fsm
    anything = _fsm(_ANY, "stop", chars)
    stop = functools.reduce(lambda a, b: a | b, [_literal(s, chars) for s in stops])
    # no stop string ends before the output's last character: the row would have ended there
    first = (anything + stop + _fsm(r"[\s\S]+", "stop", chars)).everythingbut()
    if stop_mode == "included":
        return pattern_fsm & first
    stopped = (pattern_fsm + stop) & first
    if stop_mode == "required":
        return stopped
    return (pattern_fsm & (anything + stop + anything).everythingbut()) | stopped


# -- the compiled constraint ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Constraint:
    """An automaton over a vocabulary, as the tables a step needs (see the module docstring).

    table (S, V) int32: next state, -1 where no match can follow; dist (S,): characters to a match;
    accepting (S,) bool; start: the initial state. `reach[s, id]` = dist of the next state (or _FAR), the one
    table a mask reads.
    """

    table: np.ndarray
    dist: np.ndarray
    accepting: np.ndarray
    start: int
    reach: np.ndarray
    description: str

    def __post_init__(self) -> None:
        # what a step reads, so that a mask costs one gather and one add far from the length's end: per state,
        # the additive mask of its live transitions (0 / -inf) and the farthest and nearest distance among them
        # (a row with left - 1 >= far[state] may take any live transition; min_reach decides a dead end)
        live = self.reach < _FAR
        object.__setattr__(self, "free", np.where(live, 0.0, -np.inf).astype(np.float32))
        object.__setattr__(self, "far", np.where(live, self.reach, -1).max(axis=1))
        object.__setattr__(self, "min_reach", self.reach.min(axis=1))

    @property
    def shortest(self) -> int:
        """The fewest characters of any output this constraint allows."""
        return int(self.dist[self.start])

    def matches(self, ids: Sequence[int]) -> bool:
        """Whether a whole output (ids) is one the constraint allows (tests; the automaton's own verdict)."""
        s = self.start
        for i in ids:
            s = int(self.table[s, int(i)])
            if s < 0:
                return False
        return bool(self.accepting[s])

    def begin(self, rows: int, length: int) -> ConstraintState:
        """A fresh per-request state: every row at the start, `length` characters to go."""
        if self.shortest > length:
            raise _error(
                f"{self.description}: the shortest text that matches has {self.shortest} characters, more than "
                f"the length ({length}); raise the length",
                "length",
            )
        return ConstraintState(self, rows, length)


Tables = tuple  # (table (S, V) int32, -1: no match can follow; accepting (S,) bool; start state)


def _tables(fsm, chars: Sequence[str]) -> Tables:  # noqa: ANN001 -- an interegular FSM
    """An automaton's transitions over the vocabulary's ids (`chars`, id -> character; "\ufffd", the unknown
    symbol, is never allowed)."""
    alphabet = fsm.alphabet
    states = sorted(fsm.states)
    index = {s: k for k, s in enumerate(states)}
    symbols = sorted(set(alphabet.values()))
    sym_index = {s: k for k, s in enumerate(symbols)}
    trans = np.full((len(states), len(symbols)), -1, dtype=np.int32)  # (S, symbols)
    for s, row in fsm.map.items():
        for sym, nxt in row.items():
            trans[index[s], sym_index[sym]] = index[nxt]
    # (V,) each id's symbol column (a character the pattern never names falls in anything_else's)
    col = np.array([sym_index[alphabet[ch]] for ch in chars], dtype=np.int64)
    table = trans[:, col]  # (S, V)
    table[:, [i for i, ch in enumerate(chars) if ch == "\ufffd"]] = -1  # the unknown symbol: never written
    accepting = np.zeros(len(states), dtype=bool)
    accepting[[index[s] for s in fsm.finals]] = True
    return _prune((table, accepting, index[fsm.initial]))


def _distances(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """(S,) the fewest characters from each state to an accepting one (_FAR: none): breadth-first search
    backwards from the accepting states."""
    states = len(accepting)
    dist = np.full(states, _FAR, dtype=np.int64)
    dist[accepting] = 0
    frontier = accepting.copy()
    d = 0
    while frontier.any():
        d += 1
        nxt_ok = np.zeros(states + 1, dtype=bool)
        nxt_ok[:-1] = frontier
        reaches = nxt_ok[table].any(axis=1)  # table == -1 reads the extra False
        new = reaches & (dist == _FAR)
        dist[new] = d
        frontier = new
    return dist


def _prune(tables: Tables) -> Tables:
    """The same automaton with every transition into a state that cannot reach a match removed."""
    table, accepting, start = tables
    live = _distances(table, accepting) < _FAR
    return np.where((table >= 0) & live[np.maximum(table, 0)], table, -1).astype(np.int32), accepting, start


def _product(a: Tables, b: Tables) -> Tables:
    """The automaton of "both hold" (the intersection), over the pairs of states reachable from the start:
    found breadth-first in NumPy, a frontier at a time (interegular's own intersection is pure Python and
    took 37 s for a 300-character bounded line and a required word; this takes milliseconds)."""
    ta, acc_a, sa = a
    tb, acc_b, sb = b
    width = np.int64(tb.shape[0])

    def successors(codes: np.ndarray) -> np.ndarray:  # (k,) pair codes -> (k, V) codes, -1 where dead
        na, nb = ta[codes // width], tb[codes % width]
        return np.where((na < 0) | (nb < 0), -1, na.astype(np.int64) * width + nb)

    seen = np.array([sa * width + sb], dtype=np.int64)
    frontier = seen
    while frontier.size:
        nxt = successors(frontier)
        found = np.unique(nxt[nxt >= 0])
        frontier = np.setdiff1d(found, seen, assume_unique=True)
        seen = np.union1d(seen, frontier)
    codes = successors(seen)  # (N, V)
    table = np.where(codes >= 0, np.searchsorted(seen, np.maximum(codes, 0)), -1).astype(np.int32)
    accepting = acc_a[seen // width] & acc_b[seen % width]
    start = int(np.searchsorted(seen, sa * width + sb))
    return _prune((table, accepting, start))


def _end_on_stops(tables: Tables, stop_ids: Sequence[int], keep_matches: bool) -> Tables:
    """Single-character stops after a match: one more state, reached from every accepting state by a stop
    character, where the output ends. keep_matches: the matches without a stop stay accepting (a row may
    also run to its length) -- else only the stopped outputs are whole (an item)."""
    table, accepting, start = tables
    end = len(accepting)
    table = np.vstack([table, np.full((1, table.shape[1]), -1, dtype=np.int32)])
    rows = np.flatnonzero(accepting)
    for c in stop_ids:
        table[rows, c] = end
    accepting = np.append(accepting & keep_matches, True)
    return _prune((table, accepting, start))


def _finish(tables: Tables, description: str, field: str) -> Constraint:
    table, accepting, start = tables
    dist = _distances(table, accepting)
    if dist[start] >= _FAR:
        raise _error(
            f"{description}: no text made of the model's characters matches it (check the characters it "
            "needs against the vocabulary)",
            field,
        )
    reach = np.where(table >= 0, dist[np.maximum(table, 0)], _FAR).astype(np.int64)  # (S, V)
    return Constraint(table, dist, accepting, start, reach, description)


@functools.lru_cache(maxsize=64)
def _compile_cached(
    parts: tuple[tuple[str, str], ...], chars: tuple[str, ...], stops: tuple[str, ...], stop_mode: str
) -> Constraint:
    description = " and ".join(f"{field} {pattern!r}" for field, pattern in parts) or "the constraint"
    field = parts[0][0] if len(parts) == 1 else parts[-1][0] if parts else "regex"
    fsms = [_fsm(pattern, f, chars) for f, pattern in parts] or [_fsm(_ANY, "regex", chars)]
    if stops and stop_mode != "included" and any(len(s) > 1 for s in stops):
        # a match followed by a longer stop string: built whole by interegular (slower, exact)
        fsm = _output_fsm(functools.reduce(lambda a, b: a & b, fsms), stops, stop_mode, chars)
        return _finish(_tables(fsm.reduce(), chars), description, field)
    tables = functools.reduce(_product, [_tables(f, chars) for f in fsms])
    if not stops:
        return _finish(tables, description, field)
    anything = _fsm(_ANY, "stop", chars)
    stop = functools.reduce(lambda a, b: a | b, [_literal(x, chars) for x in stops])
    if stop_mode == "included":  # no stop string ends before the output's last character
        first = (anything + stop + _fsm(r"[\s\S]+", "stop", chars)).everythingbut()
        return _finish(_product(tables, _tables(first, chars)), description, field)
    nostop = (anything + stop + anything).everythingbut()  # the text before the stop has none
    tables = _product(tables, _tables(nostop, chars))
    stop_ids = [i for i, ch in enumerate(chars) if ch in stops]
    return _finish(_end_on_stops(tables, stop_ids, stop_mode == "excluded"), description, field)


def compile_constraint(
    parts: Sequence[tuple[str, str]],
    chars: Sequence[str],
    *,
    stops: Sequence[str] = (),
    stop_mode: str = "included",
) -> Constraint:
    """The constraint that every (field, pattern) in `parts` holds for the whole output (see the module).

    chars: the model's id -> character table (`Network.chars`). Errors (malformed, unsupported, or no text of
    the vocabulary matches) are `CharlstmError`s naming the field. Compiled once per distinct request and
    kept (an LRU of 64), so a server answering the same pattern again pays nothing.
    """
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    return _compile_cached(tuple((f, p) for f, p in parts), tuple(chars), tuple(s for s in stops if s),
                           stop_mode)


def check_patterns(parts: Sequence[tuple[str, str]]) -> None:
    """Each (field, pattern) is valid and supported (no vocabulary needed: what settings can check)."""
    for field, pattern in parts:
        _fsm(pattern, field, ())


def item_patterns(
    *,
    regex: str | None = None,
    starts_with: str | None = None,
    ends_with: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    must_include: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """The (field, pattern) parts for the shorthands: a start, an end, a length range, words to include."""
    parts: list[tuple[str, str]] = []
    if regex is not None:
        parts.append(("regex", regex))
    if starts_with:
        parts.append(("starts_with", re.escape(starts_with) + _ANY))
    if ends_with:
        parts.append(("ends_with", _ANY + re.escape(ends_with)))
    for name, value in (("min_length", min_length), ("max_length", max_length)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise _error(f"{name.replace('_', '-')} must be an integer >= 0, got {value!r}", name)
    if min_length is not None and max_length is not None and min_length > max_length:
        raise _error(f"min-length ({min_length}) is more than max-length ({max_length})", "min_length")
    if min_length is not None or max_length is not None:
        lo, hi = min_length or 0, "" if max_length is None else max_length
        parts.append(("max_length" if max_length is not None else "min_length", rf"[\s\S]{{{lo},{hi}}}"))
    for word in must_include:
        if not isinstance(word, str) or not word:
            raise _error(f"must-include: every word must be a non-empty string, got {word!r}", "must_include")
        parts.append(("must_include", _ANY + re.escape(word) + _ANY))
    return parts


def check_words(words: Sequence[str], chars: Sequence[str], field: str = "must_include") -> None:
    """Every character of every word is one the model can write (else one line naming the character)."""
    known = set(chars) - {"\ufffd"}
    for word in words:
        for ch in word:
            if ch not in known:
                raise _error(f"{field.replace('_', '-')}: {word!r} has {ch!r}, which is not in the model's "
                             "vocabulary", field)


def choice_pattern(choices: Sequence[str], field: str = "guided_choice") -> str:
    """vLLM's `guided_choice`: the output is exactly one of the strings."""
    if isinstance(choices, str) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise _error(f"{field} must be a non-empty list of non-empty strings", field)
    return "|".join(re.escape(c) for c in choices)


# -- one request's rows -------------------------------------------------------------------------------------


class ConstraintState:
    """Each row's automaton state, and the characters left: what changes while a request runs.

    `mask(logits)` forbids (-inf) what cannot lead to a match in time; `advance(ids)` takes the chosen ids;
    `complete` tells the rows whose text is a match that cannot go on (e.g. "yes" of "yes|no"): they end.
    `select(rows)` keeps the given rows, in that order (beam search reorders its beams).
    """

    def __init__(self, constraint: Constraint, rows: int, length: int) -> None:
        self.constraint = constraint
        self.states = np.full(rows, constraint.start, dtype=np.int64)
        self.length = length
        self.steps = 0
        self.frozen = np.zeros(rows, dtype=bool)  # rows that have ended (a stop, a dead end): left alone

    @property
    def left(self) -> int:
        return self.length - self.steps

    def allowed(self) -> np.ndarray:
        """(rows, V) bool: the characters each row may write now (all, for a row that has ended)."""
        ok = self.constraint.reach[self.states] <= self.left - 1
        if self.frozen.any():
            ok[self.frozen] = True
        return ok

    def mask(self, logits: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
        """`logits` (rows, V) with every character the constraint forbids at -inf.

        Where the other processors left none of the allowed characters possible (an n-gram ban or repeat
        guard that forbids the one character the pattern needs), that row takes the allowed characters from
        `fallback` (the model's own logits) instead: the pattern wins, and no step is ever left with nothing
        to sample.
        """
        c, states, left = self.constraint, self.states, self.left
        if len(states) == 1 and not self.frozen[0]:  # one row: the same, in scalars (the CLI's stream)
            s = int(states[0])
            if c.far[s] <= left - 1:
                out = logits + c.free[s]
                if out.max() > -np.inf:
                    return out
        add = c.free[states]  # (rows, V): every live transition allowed
        near = c.far[states] > left - 1  # rows close enough to the end that distance matters
        if near.any():
            add[near] = np.where(c.reach[states[near]] <= left - 1, 0.0, -np.inf)
        if self.frozen.any():
            add[self.frozen] = 0.0
        out = logits + add
        dead = np.isneginf(out.max(axis=-1))
        if dead.any():
            ok = np.isfinite(add[dead])
            src = fallback[dead] if fallback is not None else np.zeros_like(out[dead])
            rows = np.where(ok, src, -np.inf)
            still = np.isneginf(rows.max(axis=-1))
            rows[still] = np.where(ok[still], 0.0, -np.inf)  # the model's own logits were -inf there too
            out[dead] = rows
        return out

    def advance(self, ids: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Take each row's chosen id; rows in `keep` (and frozen ones) stay where they are."""
        if len(self.states) == 1 and not self.frozen[0] and (keep is None or not keep[0]):
            nxt1 = int(self.constraint.table[int(self.states[0]), int(ids[0])])
            if nxt1 < 0:
                raise RuntimeError("a row wrote a character its constraint forbade")  # a bug, not user input
            self.states[0] = nxt1
            self.steps += 1
            return
        stay = self.frozen if keep is None else (self.frozen | np.asarray(keep, dtype=bool))
        nxt = self.constraint.table[self.states, np.asarray(ids, dtype=np.int64)].astype(np.int64)
        if (nxt[~stay] < 0).any():
            raise RuntimeError("a row wrote a character its constraint forbade")  # a bug, not user input
        self.states = np.where(stay, self.states, nxt)
        self.steps += 1

    @property
    def complete(self) -> np.ndarray:
        """(rows,) bool: rows whose text is a whole match with no allowed continuation (they must end)."""
        c = self.constraint
        return c.accepting[self.states] & (c.min_reach[self.states] > self.left - 1)

    @property
    def matched(self) -> np.ndarray:
        """(rows,) bool: rows whose text so far is a whole match."""
        return self.constraint.accepting[self.states]

    def select(self, rows: np.ndarray) -> None:
        """Keep the given rows, in this order (beam search's reordering)."""
        rows = np.asarray(rows, dtype=np.int64)
        self.states, self.frozen = self.states[rows], self.frozen[rows]


class ConstraintProcessor:
    """A constraint as a logit processor (processors.py's protocol), for a generation of `length`
    characters: its rows' states live in the generation's `RowHistory.memo`. Run it last."""

    def __init__(self, constraint: Constraint, length: int) -> None:
        constraint.begin(1, length)  # checks the length
        self.constraint, self.length = constraint, length

    def state(self, history) -> ConstraintState:  # noqa: ANN001 -- RowHistory
        memo = history.memo
        st = memo.get(self)
        if st is None:
            st = memo[self] = self.constraint.begin(len(history.last), self.length)
            st.seen = history_length(history)
        else:
            now = history_length(history)
            if now > st.seen:
                st.advance(history.last)
                st.seen = now
        return st

    def __call__(self, logits: np.ndarray, history) -> np.ndarray:  # noqa: ANN001
        return self.state(history).mask(logits)


def history_length(history) -> int:  # noqa: ANN001
    return int(getattr(history, "_length", history.prime_len))


def constraint_for(
    chars: Sequence[str],
    *,
    regex: str | None = None,
    must_include: Sequence[str] | str = (),
    starts_with: str | None = None,
    ends_with: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    stops: Sequence[str] = (),
    stop_mode: str = "included",
) -> Constraint | None:
    """The compiled constraint for these settings, or None when none is asked for.

    must_include: words (or one comma-separated string, as the CLI takes it) that must all occur in the text;
    a word with a character the model cannot write is an error naming `must_include`.
    """
    if isinstance(must_include, str):
        must_include = [w for w in must_include.split(",") if w]
    words = list(must_include or ())
    parts = item_patterns(regex=regex, starts_with=starts_with, ends_with=ends_with, min_length=min_length,
                          max_length=max_length, must_include=words)
    if not parts:
        return None
    check_words(words, chars)
    for name, value in (("starts_with", starts_with), ("ends_with", ends_with)):
        if value:
            check_words([value], chars, name)
    return compile_constraint(parts, chars, stops=stops, stop_mode=stop_mode)
