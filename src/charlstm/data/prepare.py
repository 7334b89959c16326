"""prepare(): a text encoded once into DIR/ids.bin + DIR/corpus.json, then memory-mapped to train.

Why: reading a 1 GB text into one Python string and encoding it in memory needs about ten times its size in
RAM. Here the text streams through in chunks, twice — pass 1 counts the characters (the vocabulary), pass 2
writes their ids — so memory stays flat whatever the size, and training maps ids.bin instead of loading it.

The ids are exactly the whole-text path's: how the streamed text is decoded and cut into pieces that
normalise alike is sources.py's.

Small texts take the same path into memory (`out=None`), so training has one data path for every size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.data.corpus import (
    SourceFiles,
    resolve_source,
)
from charlstm.data.prepared import (
    FORMAT,
    IDS_FILE,
    META_FILE,
    VERSION,
    PreparedCorpus,
    checksum,
    open_prepared,
)
from charlstm.data.sources import CHUNK_BYTES, SourceText, TextOptions, hash_files
from charlstm.data.tags import spans_record
from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.fileio import _UMASK


# -- counting and encoding ------------------------------------------------------------------------------
def _code_points(piece: str) -> np.ndarray:
    return np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)


def _count(pieces: Iterable[str]) -> tuple[np.ndarray, int]:
    """Occurrences of every code point (index = code point), and the number of characters."""
    counts = np.zeros(128, dtype=np.int64)
    total = 0
    for piece in pieces:
        c = np.bincount(_code_points(piece))
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts), np.int64)])
        counts[: len(c)] += c
        total += len(piece)
    return counts, total


_ABSENT = np.uint32(0xFFFFFFFF)


def _id_table(vocab: Vocabulary) -> np.ndarray:
    """code point -> id lookup (a table, not a search: the writing pass runs at memory speed); the last
    entry stands for every code point past the table."""
    cps = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    table = np.full(int(cps.max()) + 2, _ABSENT, dtype=np.uint32)
    table[cps] = np.arange(len(cps), dtype=np.uint32)
    return table


def _encode(pieces: Iterable[str], vocab: Vocabulary, table: np.ndarray) -> Iterator[np.ndarray]:
    """Ids of each piece, as `Vocabulary.encode(unknown="replace" if vocab.has_unknown else "skip")`."""
    dtype = vocab.dtype.newbyteorder("<")
    for piece in pieces:
        ids = np.take(table, _code_points(piece), mode="clip")  # past the table: its last entry, absent
        absent = ids == _ABSENT
        if absent.any():
            if vocab.has_unknown:
                ids[absent] = vocab.unknown_id
            else:
                ids = ids[~absent]
        yield ids.astype(dtype)


# -- prepare ----------------------------------------------------------------------------------------------
class _Progress:
    """A tqdm bar over the bytes a pass reads (MB done, MB/s), or nothing when quiet."""

    def __init__(self, desc: str, total: int, verbose: bool) -> None:
        self.bar = None
        if verbose:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
                mininterval=0.5, leave=False, dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]",
            )

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_pass(desc: str, total: int, verbose: bool, work: Callable[[Callable[[int], None]], Any]) -> Any:
    progress = _Progress(desc, total, verbose)
    try:
        return work(progress)
    finally:
        progress.close()



def _source_label(source: str | os.PathLike[str]) -> str:
    s = os.fspath(source)
    return s if not Path(s).exists() else str(Path(s).resolve())


def prepare(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    options: TextOptions | None = None,
    *,
    verbose: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    resolved: Sequence[SourceFiles] | None = None,
    records: list[dict[str, Any]] | None = None,
    tags: Sequence[str] | None = None,
    **settings: Any,
) -> PreparedCorpus:
    """Encode `sources` (files, folders, named corpora; joined with one newline) once, streaming.

    out: a directory to create (ids.bin + corpus.json, built under a temporary name and renamed when
    complete, so an interrupted run leaves nothing that looks finished); None keeps the ids in memory.
    options, or the same as keywords (settings): the text options, as `train` takes them.
    tags: each source's tag (data/tags.py): corpus.json then records where each tag's ids lie.
    """
    opts = options or TextOptions(**settings)
    opts.validate()
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    if not sources:
        raise CharlstmError("give at least one text source: a file, a folder or a named corpus")
    target = Path(out) if out is not None else None
    if target is not None and target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise CharlstmError(f"{target} already exists; choose another --out or remove it first")
    found = list(resolved) if resolved is not None else [resolve_source(s, glob=opts.glob) for s in sources]
    strip = [opts.strip_gutenberg if opts.strip_gutenberg is not None else f.gutenberg for f in found]
    text = SourceText(found, opts, strip=strip, max_chars=opts.max_chars, chunk_bytes=chunk_bytes)
    val = None
    if opts.val_file:
        vf = Path(opts.val_file)
        val_source = SourceFiles("val", [vf], "val", str(vf))
        val = SourceText([val_source], opts, strip=[opts.strip_gutenberg is True], max_chars=None, chunk_bytes=chunk_bytes)
    started = time.time()

    all_files = [p for f in found for p in f.files] + ([Path(opts.val_file)] if opts.val_file else [])
    total = sum(file_size(p) for p in all_files)
    text_total = total - (file_size(Path(opts.val_file)) if opts.val_file else 0)
    if records is None:
        records = run_pass("hashing", total, verbose and total > 50_000_000, lambda p: hash_files(all_files, p))
    stamps = [_stamp(p) for p in all_files]
    passes = 2 + any(strip)
    step = iter(range(1, passes + 1))
    if any(strip):
        run_pass(f"pass {next(step)}/{passes}: Gutenberg markers", text_total, verbose, text.find_markers)
        if val is not None:
            val.find_markers(lambda n: None)

    counts, n_text = run_pass(
        f"pass {next(step)}/{passes}: counting characters", text_total, verbose,
        lambda p: _count(text.pieces(p)),
    )
    text.check_not_empty()
    ends = [min(e, n_text) for e in text.ends] + [n_text] * (len(found) - len(text.ends))
    if n_text == 0:
        name = found[0].location if len(found) == 1 else "the sources"
        raise CharlstmError(f"{name}: no text left after preprocessing (--ascii-only / Gutenberg stripping)")
    nonzero = np.flatnonzero(counts)
    char_counts = {chr(int(cp)): int(counts[cp]) for cp in nonzero}
    vocab = Vocabulary.from_counts(char_counts, max_vocab=opts.max_vocab, min_count=opts.min_count)
    table = _id_table(vocab)

    tmp_dir = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        os.chmod(tmp_dir, 0o777 & ~_UMASK)  # mkdtemp makes it private; the corpus gets an ordinary folder's mode
    try:
        sink = _Sink(tmp_dir / IDS_FILE if tmp_dir is not None else None)

        def write(progress: Callable[[int], None]) -> tuple[int, int]:
            n_train = sum(sink.write(ids) for ids in _encode(text.pieces(progress), vocab, table))
            n_val = 0
            if val is not None:
                n_val = sum(sink.write(ids) for ids in _encode(val.pieces(progress), vocab, table))
            return n_train, n_val

        n_train, n_val = run_pass(f"pass {next(step)}/{passes}: writing ids", total, verbose, write)
        ids_sha, ids = sink.finish(vocab.dtype)
        if n_train != n_text:  # the text is read twice: it must not have changed in between
            raise CharlstmError(f"{found[0].location}: the text changed while it was being prepared; run again")
        if [_stamp(p) for p in all_files] != stamps:
            raise CharlstmError("a source file changed while it was being prepared; run again")
        cut = int(round(n_train * (1 - opts.val_frac))) if opts.val_frac > 0 and not opts.val_file else n_train
        n_all = n_train + n_val
        dropped = n_text - sum(char_counts[c] for c in vocab.chars)
        offset = 0
        meta_sources = []
        for f, s in zip(found, strip, strict=True):
            meta_sources.append({
                "source": _source_label(f.location) if f.kind != "named" else f.name,
                "name": f.name, "kind": f.kind, "gutenberg_stripped": bool(s),
                "files": records[offset : offset + len(f.files)],
            })
            offset += len(f.files)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "name": "+".join(f.name for f in found),
            "sources": meta_sources,
            "val_file": records[-1] if opts.val_file else None,
            "options": opts.to_json(),
            "preprocessing": {
                "normalize": opts.normalize,
                "lowercase": opts.lowercase,
                "ascii_only": opts.ascii_only,
                "strip_gutenberg": bool(strip[0]) if len(strip) == 1 else [bool(s) for s in strip],
            },
            "vocab": {**vocab.to_json(), "counts": [char_counts[c] for c in vocab.chars] + ([dropped] if vocab.has_unknown else [])},
            "ids": {"file": IDS_FILE, "dtype": vocab.dtype.name, "count": n_all, "sha256": ids_sha},
            "chars": {"text": n_train, "validation_file": n_val},
            "split": {"train": [0, cut], "validation": [cut, n_all]},
            **({"tags": spans_record(list(dict.fromkeys(tags)), tags, ends)} if tags else {}),
            "bytes_read": total,
            "seconds": round(time.time() - started, 3),
        }
        meta["checksum"] = checksum(meta)
        if tmp_dir is None:
            return PreparedCorpus(ids, vocab, meta, None)
        _write_synced(tmp_dir / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
        assert target is not None
        try:
            os.rename(tmp_dir, target)
        except OSError:
            raise CharlstmError(f"{target} appeared while preparing; choose another --out or remove it") from None
        tmp_dir = None
        _fsync_dir(target.parent)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return open_prepared(target, verify=False, check_sources=False)


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise CharlstmError(f"{path}: cannot read ({exc.strerror})") from None


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class _Sink:
    """Where pass 2's ids go: a file (written in order, sha256 as they pass) or a list of arrays."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.fh = open(path, "wb") if path is not None else None  # noqa: SIM115 (closed in finish)
        self.parts: list[np.ndarray] = []
        self.sha = hashlib.sha256()

    def write(self, ids: np.ndarray) -> int:
        data = ids.tobytes()
        self.sha.update(data)
        if self.fh is not None:
            self.fh.write(data)
        else:
            self.parts.append(ids)
        return len(ids)

    def finish(self, dtype: np.dtype) -> tuple[str, np.ndarray | None]:
        if self.fh is None:
            ids = np.concatenate(self.parts).astype(dtype, copy=False) if self.parts else np.zeros(0, dtype)
            return self.sha.hexdigest(), ids
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.sha.hexdigest(), None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


