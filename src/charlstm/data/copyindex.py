"""A suffix array over a prepared corpus' ids: the index that the copy check (generation/copies.py) asks
"what is the longest piece of this text that the training text also contains, and where?".

Why a suffix array (pydivsufsort, libdivsufsort's bindings): it is built once per corpus in a few seconds
per 100 MB, costs 4 bytes a character on disk and nothing in memory (it is memory-mapped), and answers a
longest-match question with one binary search (about 27 comparisons on 100 MB), so a 1,000-character
sample is checked in milliseconds however big the corpus.

Layout beside the corpus (DIR/copies.json + DIR/copies.<k>.sa; for a text prepared in memory, in the
cache under copies/<sha256>): the ids are cut into chunks of CHUNK_BYTES bytes that overlap by OVERLAP
characters, one int32 suffix array each, so that building needs about 5 bytes a character of the chunk
(0.7 GB for a 128 MiB chunk) whatever the corpus' size: a 1 GB corpus builds in eight chunks within a
2 GB RSS bound, at the price of eight searches per question. A match longer than OVERLAP characters may be
reported as OVERLAP long where it crosses a chunk boundary; queries never look further than that.

copies.json records the corpus' sha256 and the part indexed: an index whose corpus changed is stale and is
rebuilt; one whose files are damaged (bad JSON, wrong sizes, entries out of range) is refused in one line.

`model_corpus` finds the text a model file's copy check reads (what the file records, or `--against`); the
queries over the index are generation/copies.py's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.data.cache import cache_dir, corpus_for_training
from charlstm.data.prepared import PreparedCorpus, is_prepared, open_prepared
from charlstm.data.sources import TextOptions
from charlstm.errors import CharlstmError
from charlstm.fileio import save_atomic, write_atomic

FORMAT = "charlstm-copyindex"
VERSION = 1
META_FILE = "copies.json"
CHUNK_BYTES = 1 << 27  # ids per chunk x itemsize: a 128 MiB chunk builds in ~0.7 GB
OVERLAP = 1 << 16  # characters shared by neighbouring chunks: the longest match a query reports


def _sa_file(k: int) -> str:
    return f"copies.{k}.sa"


def _bucket_file(k: int) -> str:
    return f"copies.{k}.buckets.npy"


def chunk_bounds(n: int, itemsize: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of n ids: `CHUNK_BYTES // itemsize` ids each, plus OVERLAP more."""
    step = max(CHUNK_BYTES // itemsize, 1)
    return [(a, min(a + step + OVERLAP, n)) for a in range(0, max(n, 1), step)]


@dataclass
class _Chunk:
    start: int  # first id of the chunk in the indexed part
    stop: int
    sa: Any  # int32 positions relative to start, sorted by suffix (a memory map, or an array)
    buckets: Any = None  # (2, K) int64: the suffix array's [lo, hi) for each first pair (or first id) of ids


PAIR_BUCKETS_MAX_VOCAB = 1024  # up to this vocabulary, buckets by the first two ids (8 MB); past it, by one


def buckets(ids: np.ndarray, vocab_size: int, block: int = 1 << 22) -> np.ndarray:
    """Where the suffixes starting with each id pair (or each id, for big vocabularies) lie in the suffix
    array: counted, not searched (suffixes sort by their first ids; the shorter suffix "a" sorts before every
    "a?"), so a query's binary search starts inside its pair's range: about 2 log2(V) fewer steps."""
    v, n = vocab_size, len(ids)
    ones = np.zeros(v, np.int64)
    for a in range(0, n, block):
        ones += np.bincount(np.asarray(ids[a : a + block]), minlength=v)[:v]
    first = np.concatenate(([0], np.cumsum(ones)[:-1]))
    if v > PAIR_BUCKETS_MAX_VOCAB:
        return np.stack([first, first + ones])
    pairs = np.zeros(v * v, np.int64)
    for a in range(0, max(n - 1, 0), block):
        x = np.asarray(ids[a : min(a + block + 1, n)]).astype(np.int64)
        pairs += np.bincount(x[:-1] * v + x[1:], minlength=v * v)[: v * v]
    pairs = pairs.reshape(v, v)
    lo = first[:, None] + np.concatenate([np.zeros((v, 1), np.int64), np.cumsum(pairs, axis=1)[:, :-1]], axis=1)
    if n:
        lo[int(ids[n - 1])] += 1  # the one-id suffix at the end sorts first among its id's
    return np.stack([lo.ravel(), (lo + pairs).ravel()])


class CopyIndex:
    """Suffix arrays over `ids` (one part of a corpus); `matches(query)` is the question the copy check asks."""

    def __init__(self, ids: np.ndarray, chunks: list[_Chunk], meta: dict[str, Any], where: Path | None) -> None:
        self.ids = ids
        self.vocab_size = int(meta["vocab_size"])
        self.chunks = chunks
        self.meta = meta
        self.where = where

    @property
    def size(self) -> int:
        return len(self.ids)

    def matches(self, query: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Matching statistics of `query` (ids in the corpus' vocabulary): for every position i, the length of
        the longest prefix of query[i:] found in the indexed ids (at most OVERLAP), and one place where it
        is (-1 where the length is 0).

        All positions are searched together, one vectorised binary search over each chunk's suffix array
        (about 27 NumPy steps on 100 MB): first comparing 32 characters, then, for the positions whose match
        filled that, 8 times more, and so on.
        """
        q = np.asarray(query).astype(np.int64)
        m = len(q)
        lengths, where = np.zeros(m, np.int64), np.full(m, -1, np.int64)
        todo, width = np.arange(m), min(32, OVERLAP)
        while len(todo):
            for a in range(0, len(todo), block):
                rows = todo[a : a + block]
                for ch in self.chunks:
                    n, p = self._search(ch, q, rows, width)
                    better = n > lengths[rows]
                    lengths[rows[better]], where[rows[better]] = n[better], p[better] + ch.start
            cap = np.minimum(width, m - todo)
            todo = todo[(lengths[todo] == cap) & (cap < np.minimum(m - todo, OVERLAP))]
            width = min(width * 8, OVERLAP)
        return lengths, where

    def _window(self, ch: _Chunk, starts: np.ndarray, width: int) -> np.ndarray:
        """ids[start : start + width] of the chunk for each start, -1 past the chunk's end (a shorter suffix
        sorts first, as in the suffix array)."""
        idx = ch.start + starts[:, None] + np.arange(width)[None, :]
        out = np.asarray(self.ids[np.minimum(idx, ch.stop - 1)]).astype(np.int64)
        out[idx >= ch.stop] = -1
        return out

    def _search(self, ch: _Chunk, q: np.ndarray, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        n_sa = ch.stop - ch.start
        if n_sa == 0:
            return np.zeros(len(rows), np.int64), np.full(len(rows), -1, np.int64)
        m = len(q)
        qidx = rows[:, None] + np.arange(width)[None, :]
        pattern = np.where(qidx < m, q[np.minimum(qidx, m - 1)], -2)
        valid = qidx < m  # compare only the pattern's own characters
        lo, hi = np.zeros(len(rows), np.int64), np.full(len(rows), n_sa, np.int64)
        if ch.buckets is not None:  # start inside the range of suffixes that share the first id(s)
            v = self.vocab_size
            if ch.buckets.shape[1] == v * v:
                two = valid[:, 1] if width > 1 else np.zeros(len(rows), bool)
                key = np.where(two, pattern[:, 0] * v + np.maximum(pattern[:, 1 % width], 0), 0)
                lo[two], hi[two] = ch.buckets[0][key[two]], ch.buckets[1][key[two]]
            else:
                lo, hi = ch.buckets[0][pattern[:, 0]].copy(), ch.buckets[1][pattern[:, 0]].copy()
        sa = ch.sa
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) // 2
            mid_a = mid[active]
            text = self._window(ch, np.asarray(sa[mid_a]).astype(np.int64), width)
            pat, ok = pattern[active], valid[active]
            neq = (text != pat) & ok
            first = np.argmax(neq, axis=1)
            differs = neq[np.arange(len(first)), first]
            less = differs & (text[np.arange(len(first)), first] < pat[np.arange(len(first)), first])
            # suffix < pattern: go right; suffix >= pattern (or starts with it): go left
            lo[np.flatnonzero(active)[less]] = mid_a[less] + 1
            hi[np.flatnonzero(active)[~less]] = mid_a[~less]
        best, pos = np.zeros(len(rows), np.int64), np.full(len(rows), -1, np.int64)
        for j in (lo - 1, lo):
            ok_j = (j >= 0) & (j < n_sa)
            sel = np.flatnonzero(ok_j)
            if not len(sel):
                continue
            starts = np.asarray(sa[j[sel]]).astype(np.int64)
            text = self._window(ch, starts, width)
            eq = (text == pattern[sel]) & valid[sel]
            common = np.where(eq.all(axis=1), eq.shape[1], np.argmin(eq, axis=1))
            common = np.minimum(common, valid[sel].sum(axis=1))
            take = common > best[sel]
            best[sel[take]], pos[sel[take]] = common[take], starts[take]
        return best, pos


def _read(ids: np.ndarray, start: int, stop: int) -> np.ndarray:
    """ids[start:stop] as a new array, read from the file of a memory-mapped corpus rather than through its
    map: slicing the map leaves every chunk read mapped into the process (eight chunks of a 1 GB corpus: +1 GB
    of RSS), as data/batches.py explains for training."""
    if isinstance(ids, np.memmap) and ids.filename:
        root = ids
        while isinstance(root.base, np.ndarray):
            root = root.base
        first = root.offset + ids.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        size = ids.dtype.itemsize
        return np.fromfile(ids.filename, dtype=ids.dtype, count=stop - start, offset=first + start * size)
    return np.array(ids[start:stop])


# -- where an index lives, and whether it is fresh ---------------------------------------------------------
def index_dir(corpus: PreparedCorpus, part: str) -> Path:
    """Beside a prepared corpus (when its folder is writable), else in the cache keyed by its sha256."""
    if corpus.path is not None and os.access(corpus.path, os.W_OK):
        return corpus.path if part == "train" else corpus.path / f"copies-{part}"
    return cache_dir() / "copies" / f"{corpus.sha256[:32]}-{part}"


def part_bounds(corpus: PreparedCorpus, part: str) -> tuple[int, int]:
    if part == "train":
        return tuple(corpus.meta["split"]["train"])  # type: ignore[return-value]
    if part == "all":
        return 0, int(corpus.meta["ids"]["count"])
    raise CharlstmError(f"copy index part must be 'train' or 'all', got {part!r}")


def _damaged(path: Path, what: str) -> CharlstmError:
    return CharlstmError(
        f"{path}: copy index damaged ({what}); delete {path.parent / 'copies.*'} and it is built again"
    )


def _expected(corpus: PreparedCorpus, part: str) -> dict[str, Any]:
    a, b = part_bounds(corpus, part)
    itemsize = corpus.ids.dtype.itemsize
    return {
        "format": FORMAT, "version": VERSION, "corpus_sha256": corpus.sha256, "part": part, "range": [a, b],
        "dtype": corpus.ids.dtype.newbyteorder("<").name, "chunks": chunk_bounds(b - a, itemsize),
        "vocab_size": corpus.vocab.size,
    }


def _check_sample(path: Path, sa: np.ndarray, n: int) -> None:
    """A few entries, not all (a 400 MB file would take a second): in range, distinct."""
    if not len(sa):
        return
    picks = np.unique(np.linspace(0, len(sa) - 1, num=min(len(sa), 257)).astype(np.int64))
    values = np.asarray(sa[picks])
    if values.min() < 0 or values.max() >= n or len(np.unique(values)) != len(values):
        raise _damaged(path, "entries out of range")


def open_index(corpus: PreparedCorpus, part: str = "train") -> CopyIndex | None:
    """The stored index of `corpus` if it is there and fresh; None if absent or stale; refuses a damaged one."""
    root = index_dir(corpus, part)
    meta_path = root / META_FILE
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(meta_path, f"unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _damaged(meta_path, "not a charlstm copy index")
    want = _expected(corpus, part)
    if any(meta.get(k) != v for k, v in want.items() if k != "chunks") or meta.get("chunks") != [
        list(c) for c in want["chunks"]
    ]:
        return None  # stale: built for another corpus (or another charlstm): rebuilt by the caller
    a, b = want["range"]
    chunks = []
    for k, (s, e) in enumerate(want["chunks"]):
        path = root / _sa_file(k)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise _damaged(path, f"cannot read ({exc.strerror})") from None
        if size != 4 * (e - s):
            raise _damaged(path, f"{size:,} bytes, expected {4 * (e - s):,}")
        sa = np.memmap(path, dtype="<i4", mode="r", shape=(e - s,)) if e > s else np.zeros(0, np.int32)
        _check_sample(path, sa, e - s)
        v = int(want["vocab_size"])
        try:
            bkt = np.load(root / _bucket_file(k))
        except (OSError, ValueError) as exc:
            raise _damaged(root / _bucket_file(k), f"unreadable: {exc}") from None
        if bkt.shape not in ((2, v), (2, v * v)) or bkt.dtype != np.int64 or (
            len(bkt[0]) and (bkt.min() < 0 or bkt.max() > e - s)
        ):
            raise _damaged(root / _bucket_file(k), f"buckets of shape {bkt.shape}")
        chunks.append(_Chunk(s, e, sa, bkt))
    return CopyIndex(corpus.ids[a:b], chunks, meta, root)


def build_index(
    corpus: PreparedCorpus, part: str = "train", *, store: bool = True, log: Callable[[str], None] | None = None
) -> CopyIndex:
    """Suffix-sort the part chunk by chunk (pydivsufsort), writing each chunk's array atomically."""
    from pydivsufsort import divsufsort

    want = _expected(corpus, part)
    a, b = want["range"]
    ids = corpus.ids[a:b]
    root = index_dir(corpus, part) if store else None
    started = time.time()
    chunks = []
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        (root / META_FILE).unlink(missing_ok=True)  # while rebuilding, nothing claims to be fresh
    for k, (s, e) in enumerate(want["chunks"]):
        part_ids = _read(ids, s, e)  # a writable copy: pydivsufsort refuses read-only buffers
        sa = divsufsort(part_ids) if e > s else np.zeros(0, np.int32)
        bkt = buckets(part_ids, corpus.vocab.size)
        del part_ids
        if root is not None:
            save_atomic(root / _bucket_file(k), lambda tmp, bkt=bkt: np.save(tmp, bkt))
        sa = sa.astype("<i4", copy=False)
        if root is not None:
            save_atomic(root / _sa_file(k), lambda tmp, sa=sa: sa.tofile(tmp))
            del sa
            sa = np.memmap(root / _sa_file(k), dtype="<i4", mode="r", shape=(e - s,)) if e > s else np.zeros(0, np.int32)
        chunks.append(_Chunk(s, e, sa, bkt))
    meta = {**want, "chunks": [list(c) for c in want["chunks"]], "seconds": round(time.time() - started, 3),
            "bytes": 4 * sum(e - s for s, e in want["chunks"])}
    if root is not None:
        write_atomic(root / META_FILE, json.dumps(meta, indent=1))
    if log is not None:
        log(f"charlstm: built the copy index of {corpus.name} ({b - a:,} characters) in {meta['seconds']:.1f} s"
            + (f" -> {root}" if root is not None else ""))
    return CopyIndex(ids, chunks, meta, root)


def copy_index(
    corpus: PreparedCorpus, part: str = "train", *, log: Callable[[str], None] | None = None, store: bool = True
) -> CopyIndex:
    """The index of `corpus`: the stored one when fresh, else built (and stored, unless `store` is off) now."""
    found = open_index(corpus, part)
    if found is not None:
        return found
    if not store:
        return build_index(corpus, part, store=False, log=log)
    try:
        return build_index(corpus, part, log=log)
    except OSError as exc:  # a read-only place: build it in memory for this process
        if log is not None:
            log(f"charlstm: cannot store the copy index ({exc.strerror}); building it in memory")
        return build_index(corpus, part, store=False, log=log)


def model_corpus(
    meta: dict[str, Any], against: str | os.PathLike[str] | None = None, model_path: str | None = None
) -> tuple[PreparedCorpus, str]:
    """The text a model's copy check reads, and the part of it to index ("train" or "all").

    Found from what the model file records (the prepared corpus it trained on, else its source read again with
    the run's text options and checked against the recorded sha256), or `against` (a file, folder or
    prepared corpus, read with the model's text options, all of it indexed).
    """
    config = dict(meta.get("config") or {})
    name = model_path or "the model"
    if against is not None:
        if not Path(against).exists():
            raise CharlstmError(f"--against {against}: no such file or folder")
        if is_prepared(against):
            return open_prepared(against), "all"
        opts = TextOptions.from_settings({**config, "val_frac": 0.0, "val_file": None, "max_chars": None})
        return corpus_for_training(against, opts, verbose=False, download=False), "all"
    rec = meta.get("corpus") or {}
    want = rec.get("sha256")
    hint = "give the training text with --against FILE|DIR"
    prepared = rec.get("prepared")
    if prepared and Path(prepared).is_dir():
        corpus = open_prepared(prepared, verify=False)
        if corpus.sha256 == want:
            return corpus, "train"
    source = rec.get("source")
    if not source or not want:
        raise CharlstmError(f"{name} does not record its training text; {hint}")
    opts = TextOptions.from_settings(config)
    try:
        corpus = corpus_for_training(source, opts, verbose=False, download=False)
    except CharlstmError as exc:
        raise CharlstmError(f"cannot read the training text of {name} ({source}: {exc}); {hint}") from None
    if corpus.sha256 != want:
        raise CharlstmError(f"{source} changed since {name} was trained on it (sha256 differs); {hint}")
    return corpus, "train"


