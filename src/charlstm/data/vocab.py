"""Characters <-> integer ids, and what to do with characters the model never learned.

Ids 0..n-1 are the kept characters sorted by code point (so the classic recipe's ids equal the lesson's
`sorted(set(text))`); when a `max_vocab`/`min_count` policy drops rare characters, one more id, n, stands for
all of them. That unknown id is never generated: the runtime masks its logit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError, UnknownCharacters

UNKNOWN_POLICIES = ("error", "skip", "replace")
UNKNOWN_DISPLAY = "\ufffd"  # how the unknown symbol prints if ever decoded (it is never generated)


@dataclass(frozen=True)
class Vocabulary:
    chars: tuple[str, ...]
    has_unknown: bool = False
    coverage: float = 1.0
    max_vocab: int | None = None
    min_count: int = 1
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def build(cls, text: str, *, max_vocab: int | None = None, min_count: int = 1) -> Vocabulary:
        """Keep characters seen at least `min_count` times, at most `max_vocab` symbols in all.

        When anything is dropped, one of the `max_vocab` slots goes to the unknown symbol.
        """
        if not text:
            raise CharlstmError("cannot build a vocabulary from empty text")
        return cls.from_counts(Counter(text), max_vocab=max_vocab, min_count=min_count)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], *, max_vocab: int | None = None, min_count: int = 1
    ) -> Vocabulary:
        """`build` from character counts: a streamed corpus (prepare.py) counts in chunks, then calls this."""
        if max_vocab is not None and max_vocab < 2:
            raise CharlstmError(f"--max-vocab must be at least 2, got {max_vocab}")
        if min_count < 1:
            raise CharlstmError(f"--min-count must be at least 1, got {min_count}")
        total = sum(counts.values())
        if not total:
            raise CharlstmError("cannot build a vocabulary from empty text")
        kept = [c for c, n in counts.items() if n >= min_count]
        dropped = len(kept) < len(counts)
        if max_vocab is not None and len(kept) + dropped > max_vocab:
            kept.sort(key=lambda c: (-counts[c], c))  # most frequent first; ties by code point
            kept = kept[: max_vocab - 1]
            dropped = True
        if not kept:
            raise CharlstmError(f"--min-count {min_count} drops every character of the corpus")
        coverage = sum(counts[c] for c in kept) / total
        return cls(
            tuple(sorted(kept)),
            has_unknown=dropped,
            coverage=coverage,
            max_vocab=max_vocab,
            min_count=min_count,
        )

    # -- sizes and ids ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of model outputs: kept characters plus the unknown symbol if any."""
        return len(self.chars) + (1 if self.has_unknown else 0)

    @property
    def unknown_id(self) -> int | None:
        return len(self.chars) if self.has_unknown else None

    @property
    def dtype(self) -> np.dtype:
        """Smallest unsigned integer type that holds every id: the corpus costs 1-2 bytes a character."""
        return np.dtype(np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536 else np.uint32)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, ch: object) -> bool:
        return ch in self._index

    # -- encode / decode ----------------------------------------------------------------------------
    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        """Text -> ids. Vectorised over code points so a 100 MB corpus encodes in seconds, not minutes.

        unknown: "error" names the characters outside the vocabulary; "skip" drops them; "replace" maps them
        to the unknown symbol (or, for a vocabulary without one, drops them: there is nothing to map to).
        """
        if unknown not in UNKNOWN_POLICIES:
            raise CharlstmError(
                f"unknown-character policy must be one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}", "unknown"
            )
        table = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        order = np.argsort(table)
        sorted_cps = table[order]
        out = []
        chunk = 1 << 22
        for start in range(0, len(text), chunk):
            cps = np.frombuffer(text[start : start + chunk].encode("utf-32-le"), dtype=np.uint32)
            pos = np.minimum(np.searchsorted(sorted_cps, cps), len(sorted_cps) - 1)
            found = sorted_cps[pos] == cps
            ids = order[pos].astype(self.dtype)
            if not found.all():
                if unknown == "error":
                    missing = self.unknown_chars(text)
                    shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
                    raise UnknownCharacters(f"{len(missing)} character(s) not in the model's vocabulary: {shown}")
                if unknown == "replace" and self.has_unknown:
                    ids[~found] = self.unknown_id
                else:
                    ids = ids[found]
            out.append(ids)
        return np.concatenate(out) if out else np.zeros(0, dtype=self.dtype)

    def decode(self, ids: Any) -> str:
        chars = self.chars
        unk = self.unknown_id
        return "".join(UNKNOWN_DISPLAY if i == unk else chars[i] for i in np.asarray(ids).ravel().tolist())

    # -- persistence --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "chars": "".join(self.chars),
            "size": self.size,
            "has_unknown": self.has_unknown,
            "coverage": self.coverage,
            "max_vocab": self.max_vocab,
            "min_count": self.min_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        chars = data["chars"]
        chars = tuple(chars) if isinstance(chars, str) else tuple(chars)
        return cls(
            chars,
            has_unknown=bool(data.get("has_unknown", False)),
            coverage=float(data.get("coverage", 1.0)),
            max_vocab=data.get("max_vocab"),
            min_count=int(data.get("min_count", 1)),
        )


def longest_runs(
    ids: Any, size: int, chunk: int = 1 << 20, read: Callable[[Any, int, int], np.ndarray] | None = None
) -> np.ndarray:
    """The longest run of each id in `ids` (0 for ids that never occur): `out[i]` = max k with i repeated k times.

    Vectorised over chunks of `chunk` ids, carrying the run that crosses each chunk boundary, so it reads a
    corpus of gigabytes in bounded memory (a chunk costs about 50 bytes an id in temporaries: 1M ids, 50 MB). `read(ids, start, stop)` fetches a chunk (default: slicing; the
    trainer passes `batches.span`, which reads a memory-mapped corpus from its file, because slicing the map
    left the whole corpus mapped into the process: +1 GB of RSS for a 1 GB corpus). Generation uses the
    result to never exceed what the training text did (the repeat guard, `--max-repeat auto`).
    """
    out = np.zeros(size, dtype=np.int64)
    carry_id, carry_len = -1, 0
    for start in range(0, len(ids), chunk):
        block = read(ids, start, start + chunk) if read else np.asarray(ids[start : start + chunk])
        block = block.astype(np.int64, copy=False)
        if not len(block):
            break
        cuts = np.flatnonzero(block[1:] != block[:-1]) + 1
        starts = np.concatenate(([0], cuts))
        lengths = np.diff(np.concatenate((starts, [len(block)])))
        values = block[starts]
        if values[0] == carry_id:
            lengths[0] += carry_len
        elif carry_len:
            out[carry_id] = max(out[carry_id], carry_len)
        # every run but the last is complete; the last may go on in the next chunk
        present = values[:-1]
        np.maximum(out, np.bincount(present, minlength=size)[:size] > 0, out=out)
        longer = lengths[:-1] > 1
        np.maximum.at(out, present[longer], lengths[:-1][longer])
        carry_id, carry_len = int(values[-1]), int(lengths[-1])
    if carry_len:
        out[carry_id] = max(out[carry_id], carry_len)
    return out
