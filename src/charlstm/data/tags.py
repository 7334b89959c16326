"""Tags: which style each stretch of a text is in (`--tags folder|file`, `--tag-field N` for items).

A tagged corpus is read as one source per tag (the tag's files joined with one newline, in path order), so
the prepared corpus records where each tag's text starts and ends (`spans`, in id positions); training
turns that into a tag id at every position, fed to the model beside the character ids. Validation holds
out the last `val_frac` of every tag's text, so each tag has validation text of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from charlstm.data.corpus import SourceFiles
from charlstm.errors import CharlstmError

TAG_SOURCES = ("folder", "file")


def check_tag(name: str, where: str) -> str:
    """A tag as a name the CLI, the server and model ids can carry: non-empty, no comma, no control char."""
    if not name or not name.strip():
        raise CharlstmError(f"{where}: empty tag; every item or file needs a tag")
    if "," in name or any(ord(c) < 32 for c in name):
        raise CharlstmError(f"{where}: tag {name!r} has a comma or a control character; rename it")
    return name


def tag_of(path: Any, by: str) -> str:
    """A file's tag: its parent folder's name (`folder`) or its own name without the suffix (`file`)."""
    return path.parent.name if by == "folder" else path.stem


def tagged_sources(found: SourceFiles, by: str) -> tuple[list[SourceFiles], list[str]]:
    """One source per tag (first seen first; files in path order) and the tags, for `prepare`."""
    if by not in TAG_SOURCES:
        raise CharlstmError(f"--tags must be one of {', '.join(TAG_SOURCES)}, got {by!r}")
    if found.kind != "folder":
        raise CharlstmError(f"{found.location}: --tags {by} reads a folder of files (one tag per file or folder)")
    groups: dict[str, list[Any]] = {}
    for path in found.files:
        groups.setdefault(check_tag(tag_of(path, by), str(path)), []).append(path)
    if len(groups) < 2:
        raise CharlstmError(
            f"{found.location}: --tags {by} found one tag only ({next(iter(groups))!r}); a tagged model needs "
            f"at least two ({'a folder per tag' if by == 'folder' else 'a file per tag'})"
        )
    sources = [replace(found, name=tag, files=files, location=f"{found.location} (tag {tag})")
               for tag, files in groups.items()]
    return sources, list(groups)


def spans_record(names: Sequence[str], source_tags: Sequence[str], ends: Sequence[int]) -> dict[str, Any]:
    """What corpus.json keeps: the tag names and [start, end, tag id] of each source's ids."""
    spans, start = [], 0
    for tag, end in zip(source_tags, ends, strict=True):
        if end > start:
            spans.append([start, int(end), names.index(tag)])
        start = int(end)
    return {"names": list(names), "spans": spans}


def tag_dtype(count: int) -> np.dtype:
    return np.dtype(np.uint8 if count <= 256 else np.uint16)


@dataclass
class TagSplit:
    """Training and validation ids with a tag id at every position, and the tags' names."""

    names: list[str]
    train_ids: np.ndarray
    train_tags: np.ndarray
    val_ids: np.ndarray
    val_tags: np.ndarray


def split_by_tag(ids: Any, record: dict[str, Any], val_frac: float, source: str) -> TagSplit:
    """Every tag's text, its last `val_frac` held out: (train, validation), each the tags' parts in order.

    The parts are copied into memory (a tagged corpus is read whole, unlike an untagged memory map)."""
    names = list(record["names"])
    dtype = tag_dtype(len(names))
    train, val, train_t, val_t = [], [], [], []
    chars = np.zeros(len(names), np.int64)
    for start, end, tag in record["spans"]:
        part = np.asarray(ids[start:end])
        chars[tag] += len(part)
        cut = int(round(len(part) * (1 - val_frac))) if val_frac > 0 else len(part)
        train.append(part[:cut])
        val.append(part[cut:])
        train_t.append(np.full(cut, tag, dtype))
        val_t.append(np.full(len(part) - cut, tag, dtype))
    empty = [n for n, c in zip(names, chars, strict=True) if c == 0]
    if empty:
        raise CharlstmError(f"{source}: tag {empty[0]!r} has no text (its files are empty)")
    cat = np.concatenate
    return TagSplit(names, cat(train), cat(train_t), cat(val), cat(val_t))
