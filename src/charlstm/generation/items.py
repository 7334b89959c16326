"""Whole items from an items model (`charlstm train --items`): each sample starts at the boundary symbol from
a zero state, as every training row does, and ends at the next boundary; each is marked new, or as an item of
the training (or validation) list, by the fingerprints the model file keeps (data/items.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.data.items import unpack
from charlstm.errors import CharlstmError
from charlstm.generation import generate
from charlstm.generation.network import Network
from charlstm.generation.settings import GenerationSettings

NEW, TRAINING, VALIDATION = "new", "in training set", "in validation set"


@dataclass(frozen=True)
class Item:
    text: str
    status: str  # NEW, TRAINING or VALIDATION

    @property
    def new(self) -> bool:
        return self.status == NEW

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "status": self.status, "new": self.new}


class ItemMarks:
    """Which items a model saw: exact membership by 8-byte fingerprints (sorted, binary-searched)."""

    def __init__(self, record: dict[str, Any]) -> None:
        prints = record.get("fingerprints") or {}
        self.train = unpack(prints.get("train", ""))
        self.val = unpack(prints.get("validation", ""))

    @staticmethod
    def _has(table: np.ndarray, value: np.uint64) -> bool:
        i = int(np.searchsorted(table, value))
        return i < len(table) and table[i] == value

    def status(self, text: str) -> str:
        value = np.frombuffer(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), dtype="<u8")[0]
        if self._has(self.train, value):
            return TRAINING
        if self._has(self.val, value):
            return VALIDATION
        return NEW


def generate_items(
    network: Network,
    n: int,
    temperature: float = 1.0,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    only_new: bool = False,
    max_len: int | None = None,
    max_rounds: int = 50,
    **shape: Any,
) -> list[Item]:
    """`n` whole items (fewer only if `only_new` finds no more new ones in `max_rounds` batches).

    An item that reaches `max_len` characters (default: twice the longest training item, + 20) without
    ending is dropped, never cut: every item returned ended at the boundary symbol.
    shape: regex, starts_with, ends_with, min_length, max_length, must_include -- what each item must be
    (constraints.py): the pattern applies to the item, and the boundary comes only where it holds."""
    record = network.meta.get("items")
    if not record:
        raise CharlstmError(f"{network.name} is not an items model (train one with --items)")
    if not isinstance(n, int) or n < 1:
        raise CharlstmError(f"num-samples must be an integer >= 1, got {n}", "num_samples")
    boundary = record["boundary"]
    marks = ItemMarks(record)
    limit = max_len or 2 * int(record.get("max_len", 100)) + 20
    if shape.get("max_length") is not None and not max_len:
        limit = max(limit, int(shape["max_length"]) + 1)
    rng = np.random.default_rng(seed)
    out: list[Item] = []
    for _ in range(max_rounds):
        want = n - len(out)
        rows = want if not only_new else min(max(2 * want, 16), 1024)
        settings = GenerationSettings(length=limit, temperature=temperature, top_k=top_k, top_p=top_p,
                                      seed=int(rng.integers(2**63)), num_samples=rows, stop=boundary, **shape)
        gen = generate.start(network, settings, boundary, stop_mode="required")  # the pattern is the item's
        pieces = list(generate.run(gen))
        texts = ["".join(p[b] if rows > 1 else p for p in pieces) for b in range(rows)]
        for text in [texts] if isinstance(texts, str) else texts:
            if not text.endswith(boundary) or len(text) < 2:
                continue  # too long, or empty: not an item
            item = Item(text[: -len(boundary)], marks.status(text[: -len(boundary)]))
            if only_new and not item.new:
                continue
            out.append(item)
            if len(out) == n:
                return out
    return out


def mark_samples(network: Network, texts: list[str]) -> list[dict[str, Any]]:
    """The items in an items model's samples (each stopped at the boundary): text and mark; a sample that
    did not reach the boundary (cut by its length) is marked "unfinished"."""
    boundary = network.meta["items"]["boundary"]
    marks = ItemMarks(network.meta["items"])
    out = []
    for text in texts:
        if text.endswith(boundary):
            item = text[: -len(boundary)]
            out.append(Item(item, marks.status(item)).to_json())
        else:
            out.append({"text": text, "status": "unfinished", "new": False})
    return out
