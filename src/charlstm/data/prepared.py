"""Prepared corpora: DIR/ids.bin + DIR/corpus.json, written once by prepare.py, memory-mapped to train.

`corpus.json` holds the vocabulary with counts, the preprocessing, the train/validation boundary, each
source's sha256 and size, and a checksum of itself; `ids.bin` one uint8/uint16/uint32 per character. Opening
a corpus checks all of it, so a truncated, edited or stale corpus is one clear line, never silent garbage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.data.sources import CHUNK_BYTES, TextOptions, hash_files
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError

FORMAT = "charlstm-prepared"
VERSION = 1
IDS_FILE = "ids.bin"
META_FILE = "corpus.json"



@dataclass
class PreparedCorpus:
    """Encoded text (a memory map of ids.bin, or an in-memory array) with its vocabulary and record."""

    ids: np.ndarray  # the training text's ids, then (with --val-file) the validation file's
    vocab: Vocabulary
    meta: dict[str, Any]
    path: Path | None = None  # None: prepared in memory

    @property
    def train_ids(self) -> np.ndarray:
        a, b = self.meta["split"]["train"]
        return self.ids[a:b]

    @property
    def val_ids(self) -> np.ndarray:
        a, b = self.meta["split"]["validation"]
        return self.ids[a:b]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def sha256(self) -> str:
        """sha256 of the ids: the exact data a model trains on (text, options and vocabulary together)."""
        return self.meta["ids"]["sha256"]

    @property
    def files(self) -> list[str]:
        return [f["path"] for s in self.meta["sources"] for f in s["files"]]

    @property
    def options(self) -> TextOptions:
        return TextOptions.from_settings(self.meta["options"])



def checksum(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()



# -- open ---------------------------------------------------------------------------------------------------
def is_prepared(path: str | os.PathLike[str]) -> bool:
    """A directory made by `prepare` (or one that claims to be: it is then checked, not read as text)."""
    p = Path(path)
    if not (p / META_FILE).is_file():
        return False
    if (p / IDS_FILE).exists():
        return True
    try:
        return json.loads((p / META_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _damaged(path: Path, what: str) -> CharlstmError:
    return CharlstmError(f"{path}: {what}; prepare the corpus again (charlstm prepare SOURCE --out DIR)")


def open_prepared(
    path: str | os.PathLike[str], *, verify: bool = True, check_sources: bool = True
) -> PreparedCorpus:
    """Memory-map DIR/ids.bin after checking that nothing was damaged or edited since `prepare` wrote it.

    verify: read ids.bin once (sha256 and the largest id; about a second per GB); check_sources: the recorded
    source files that still exist must be the ones the corpus was prepared from.
    """
    root = Path(path)
    meta_path, ids_path = root / META_FILE, root / IDS_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CharlstmError(f"{meta_path}: cannot read ({exc.strerror}); is {root} a prepared corpus?") from None
    except ValueError as exc:
        raise _damaged(meta_path, f"damaged (not valid JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _damaged(meta_path, "not a charlstm prepared corpus")
    if meta.get("version") != VERSION:
        raise _damaged(meta_path, f"format version {meta.get('version')!r}, this charlstm reads {VERSION}")
    if meta.get("checksum") != checksum(meta):
        raise _damaged(meta_path, "edited or damaged (its checksum does not match its content)")
    try:
        vocab = Vocabulary.from_json(meta["vocab"])
        dtype = np.dtype(meta["ids"]["dtype"]).newbyteorder("<")
        count = int(meta["ids"]["count"])
        bounds = [meta["split"][k] for k in ("train", "validation")]
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(meta_path, f"damaged (bad or missing field {exc})") from None
    if vocab.dtype != dtype.newbyteorder("="):
        raise _damaged(meta_path, f"damaged (ids stored as {dtype.name} for a vocabulary of {vocab.size})")
    if not (0 <= bounds[0][0] <= bounds[0][1] <= bounds[1][0] <= bounds[1][1] <= count) or count < 1:
        raise _damaged(meta_path, f"damaged (train/validation bounds {bounds} outside 0..{count})")
    try:
        size = ids_path.stat().st_size
    except OSError as exc:
        raise _damaged(ids_path, f"cannot read ({exc.strerror})") from None
    if size != count * dtype.itemsize:
        state = "truncated" if size < count * dtype.itemsize else "longer than recorded"
        raise _damaged(ids_path, f"{state} ({size:,} bytes; corpus.json records {count * dtype.itemsize:,})")
    if verify:
        _verify_ids(ids_path, dtype, vocab.size, meta["ids"]["sha256"])
    if check_sources:
        _check_sources(root, meta)
    ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(count,))
    return PreparedCorpus(ids, vocab, meta, root)


def _verify_ids(path: Path, dtype: np.dtype, vocab_size: int, sha256: str) -> None:
    sha = hashlib.sha256()
    step = CHUNK_BYTES - CHUNK_BYTES % dtype.itemsize
    offset = 0
    with open(path, "rb") as fh:
        while data := fh.read(step):
            sha.update(data)
            ids = np.frombuffer(data, dtype=dtype)
            if len(ids) and int(ids.max()) >= vocab_size:
                at = offset + int(np.argmax(ids >= vocab_size))
                raise _damaged(path, f"damaged (id {int(ids[at - offset])} at position {at:,} is outside the "
                               f"vocabulary of {vocab_size})")
            offset += len(ids)
    if sha.hexdigest() != sha256:
        raise _damaged(path, "modified since it was prepared (its sha256 differs from corpus.json)")


def _check_sources(root: Path, meta: dict[str, Any]) -> None:
    """Recorded sources that are still there must be unchanged (missing ones are fine: the ids suffice)."""
    files = [f for s in meta.get("sources", []) for f in s.get("files", [])]
    if meta.get("val_file"):
        files.append(meta["val_file"])
    for rec in files:
        p = Path(rec["path"])
        if not p.is_file():
            continue
        if p.stat().st_size != rec["bytes"] or hash_files([p])[0]["sha256"] != rec["sha256"]:
            raise CharlstmError(
                f"{p} changed after {root} was prepared from it (sha256 differs from corpus.json); "
                f"prepare the corpus again (charlstm prepare {p} --out DIR)"
            )



TEXT_KEYS = tuple(f.name for f in dataclasses.fields(TextOptions))
