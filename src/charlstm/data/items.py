"""Lists of items (`--items`): names, titles, recipes — a corpus whose unit is a whole item, not a stream.

Why not the stream: a list read in file order teaches its order (names.txt is sorted by popularity, ties
alphabetically, and a stream-trained model learns "kornie koralyn korren" runs), validates on the file's
tail, and generates runs that do not end where an item ends. Here instead:

- the text is cut into items (one a line; or `--item-sep blank` for items separated by blank lines, such as
  poems or recipes; or any literal separator), each stripped of surrounding whitespace, empty ones dropped;
- a boundary symbol marks where each item starts and ends: the newline itself for one-a-line items (never
  inside one), else U+001E (RECORD SEPARATOR), added to the vocabulary; the training stream is
  B item B item ... B, so the model learns to end items and never emits the boundary inside one;
- validation holds out a random sample of whole items (seeded), not the file's tail;
- every epoch puts the training items in a new random order (a pure function of (seed, epoch), so resume
  stays exact), and every training row starts at an item's start from a zero state, as generation does;
- the loss is per character with the end symbol counted (each item has len + 1 targets), as makemore
  reports it.

The model file records the items' fingerprints (8-byte BLAKE2b of each item, as the model decodes it), so
generation can mark each generated item new or seen without the training text (generation/items.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError

RECORD_SEPARATOR = "\x1e"
ITEMS_MAX_CHARS = 200_000_000  # items are split in memory (a list of 200M characters: a few GB at most)


def boundary_for(separator: str) -> str:
    return "\n" if separator == "line" else RECORD_SEPARATOR


def split_text(text: str, separator: str, strip: bool = True) -> list[str]:
    """The items of a text: stripped (unless `strip` is off: a tag field may be empty), empty ones dropped."""
    if separator == "line":
        parts = text.split("\n")
    elif separator == "blank":
        parts = re.split(r"\n[ \t]*\n", text)
    else:
        parts = text.split(separator.encode("utf-8").decode("unicode_escape") if "\\" in separator else separator)
    return [p.strip() if strip else p for p in parts if p.strip()]


def fingerprints(items: list[str]) -> np.ndarray:
    """Sorted 8-byte BLAKE2b digests of the items, as uint64: exact membership at 2**-64 collision odds."""
    digests = b"".join(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest() for s in items)
    return np.unique(np.frombuffer(digests, dtype="<u8"))


def pack(hashes: np.ndarray) -> str:
    return base64.b64encode(np.asarray(hashes, dtype="<u8").tobytes()).decode("ascii")


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u8")


@dataclass
class ItemText:
    """A list cut into items: the model's vocabulary, the training and validation streams (B item B ... B
    in that vocabulary's ids), and the record the model file keeps."""

    vocab: Vocabulary
    boundary: int
    train: np.ndarray
    val: np.ndarray
    record: dict[str, Any]
    tag_names: list[str] | None = None  # --tag-field: the tags, and each stream's tag id at every position
    train_tags: np.ndarray | None = None
    val_tags: np.ndarray | None = None


def split_fields(items: list[str], field: int, sep: str, source: str) -> tuple[list[str], list[str]]:
    """(items without their tag field, their tags): field `field` (from 1) of each item, cut at `sep`."""
    from charlstm.data.tags import check_tag

    bodies, tags = [], []
    for n, item in enumerate(items, 1):
        parts = item.split(sep)
        if len(parts) < max(field, 2):
            raise CharlstmError(
                f"{source}: item {n} ({item[:40]!r}) has {len(parts)} field(s); it needs its tag (field {field}) "
                f"and its text, separated by {sep!r} (--item-field-sep)"
            )
        tag = parts.pop(field - 1).strip()
        check_tag(tag, f"{source}: item {n} ({item[:40]!r})")
        body = sep.join(parts).strip()
        if not body:
            raise CharlstmError(f"{source}: item {n} ({item[:40]!r}) is only its tag; give it a text")
        bodies.append(body)
        tags.append(tag)
    return bodies, tags


def _stream_tags(stream: np.ndarray, boundary: int, tags: list[int], dtype: np.dtype) -> np.ndarray:
    """The tag at every position of B item B item ... B: an item's own, from its leading boundary on."""
    bounds = np.flatnonzero(stream == boundary)
    if len(bounds) < 2:
        return np.zeros(len(stream), dtype)
    out = np.repeat(np.asarray(tags, dtype), np.diff(bounds))
    return np.append(out, np.asarray(tags[-1:], dtype)).astype(dtype)


def _stream(items: list[str], boundary: str) -> str:
    return boundary + boundary.join(items) + boundary if items else ""


def split_items(
    text: str,
    separator: str,
    *,
    val_frac: float,
    seed: int,
    val_text: str | None = None,
    vocab: Vocabulary | None = None,
    max_vocab: int | None = None,
    min_count: int = 1,
    source: str = "the text",
    tag_field: int | None = None,
    field_sep: str = "\t",
    tag_names: list[str] | None = None,
) -> ItemText:
    """Cut `text` into items and hold out a random `val_frac` of them (or, with `val_text`, validate on its
    items); `vocab`: a resumed run's vocabulary (else built from the items and the boundary)."""
    boundary = boundary_for(separator)
    if separator != "line" and RECORD_SEPARATOR in text:
        raise CharlstmError(f"{source} contains U+001E (record separator), the items' boundary symbol; remove it")
    items = split_text(text, separator, strip=tag_field is None)
    if not items:
        raise CharlstmError(f"{source}: no items (every line or part is empty)")
    item_tags: list[str] = []
    val_tags: list[str] = []
    if tag_field is not None:
        items, item_tags = split_fields(items, tag_field, field_sep, source)
    if val_text is not None:
        train_items, val_items = items, split_text(val_text, separator, strip=tag_field is None)
        if tag_field is not None:
            val_items, val_tags = split_fields(val_items, tag_field, field_sep, f"{source} (--val-file)")
    else:
        n_val = int(round(len(items) * val_frac))
        if val_frac > 0 and len(items) >= 10:
            n_val = max(n_val, 1)
        picked = np.zeros(len(items), bool)
        picked[np.random.default_rng([seed, 17]).permutation(len(items))[:n_val]] = True
        train_items = [s for s, v in zip(items, picked, strict=True) if not v]
        val_items = [s for s, v in zip(items, picked, strict=True) if v]
        if tag_field is not None:
            val_tags = [t for t, v in zip(item_tags, picked, strict=True) if v]
            item_tags = [t for t, v in zip(item_tags, picked, strict=True) if not v]
    if not train_items:
        raise CharlstmError(f"{source}: no items left to train on after holding out validation items")
    train_text, val_text_ = _stream(train_items, boundary), _stream(val_items, boundary)
    if vocab is None:
        vocab = Vocabulary.build(train_text + val_text_, max_vocab=max_vocab, min_count=min_count)
        if boundary not in vocab:  # kept whatever --min-count/--max-vocab say: items must end
            vocab = Vocabulary(tuple(sorted((*vocab.chars, boundary))), vocab.has_unknown, vocab.coverage,
                               vocab.max_vocab, vocab.min_count)
    unknown = "replace" if vocab.has_unknown else "skip"
    train, val = vocab.encode(train_text, unknown=unknown), vocab.encode(val_text_, unknown=unknown)
    b = vocab.encode(boundary)[0]
    # fingerprints of the items as the model spells them (rare characters as its unknown symbol)
    seen_train = vocab.decode(train).split(boundary)[1:-1]
    seen_val = vocab.decode(val).split(boundary)[1:-1]
    record = {
        "separator": separator,
        "boundary": boundary,
        "train_items": len(train_items),
        "val_items": len(val_items),
        "max_len": max(len(s) for s in items),
        "fingerprints": {"train": pack(fingerprints(seen_train)), "validation": pack(fingerprints(seen_val))},
    }
    if tag_field is None:
        return ItemText(vocab, int(b), train, val, record)
    from charlstm.data.tags import tag_dtype

    names = list(tag_names or []) + [t for t in dict.fromkeys(item_tags + val_tags) if t not in (tag_names or [])]
    if len(names) < 2:
        raise CharlstmError(f"{source}: every item has the tag {names[0]!r}; a tagged model needs at least two")
    dtype = tag_dtype(len(names))
    index = {t: i for i, t in enumerate(names)}
    train_t = _stream_tags(train, int(b), [index[t] for t in item_tags], dtype)
    val_t = _stream_tags(val, int(b), [index[t] for t in val_tags], dtype) if val_tags else np.zeros(len(val), dtype)
    return ItemText(vocab, int(b), train, val, record, names, train_t, val_t)
