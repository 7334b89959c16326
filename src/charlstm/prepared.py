"""Prepared corpora: a text encoded once into DIR/ids.bin + DIR/corpus.json, then memory-mapped to train.

Why: reading a 1 GB text into one Python string and encoding it in memory needs about ten times its size in
RAM. Here the text streams through in chunks, twice — pass 1 counts the characters (the vocabulary), pass 2
writes their ids — so memory stays flat whatever the size, and training maps ids.bin instead of loading it.

The ids are exactly the whole-text path's (`corpus.load_corpus` + `corpus.preprocess` + `Vocabulary.build` +
`encode`): bytes go through incremental decoders (a multi-byte character may straddle two reads), and the
decoded text is cut into pieces only after a newline or, failing one for a long stretch, before a space or
tab. Neither character composes, reorders or changes case context with its neighbours, so Unicode
normalisation, lowercasing (Greek final sigma included) and the ASCII filter give piece by piece what they
give on the whole text; a CR is held back until the next read shows whether an LF follows. Gutenberg
stripping, a regex over the whole text, runs as a pass of its own ("pass 0") that finds the START/END marker
offsets; the counting and writing passes keep what lies between.

Small texts take the same path into memory (`out=None`), so training has one data path for every size.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.corpus import (
    _GUTENBERG_END,
    _GUTENBERG_START,
    NORMALIZATIONS,
    SourceFiles,
    check_decoding,
    decode_error,
    normalize_newlines,
    preprocess,
    resolve_source,
    sniff_encoding,
)
from charlstm.errors import CharlstmError
from charlstm.fileio import _UMASK
from charlstm.vocab import Vocabulary

FORMAT = "charlstm-prepared"
VERSION = 1
IDS_FILE = "ids.bin"
META_FILE = "corpus.json"
CHUNK_BYTES = 1 << 22  # 4 MiB reads: big enough for C-speed work per piece, small enough for flat memory
CARRY_LIMIT = 1 << 20  # characters without a newline before a space or tab may end a piece
CACHE_THRESHOLD_BYTES = 32_000_000  # `charlstm train TEXT` above this prepares into the cache (see below)


@dataclass(frozen=True)
class TextOptions:
    """Everything that decides which ids a text becomes: the `train`/`prepare` text options."""

    encoding: str = "utf-8"
    errors: str = "strict"
    glob: str | None = None
    strip_gutenberg: bool | None = None  # None: on for named Gutenberg books
    normalize: str = "NFC"
    lowercase: bool = False
    ascii_only: bool = False
    max_vocab: int | None = None
    min_count: int = 1
    max_chars: int | None = None
    val_frac: float = 0.1
    val_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> TextOptions:
        """From a TrainConfig (or anything with these attributes, or a dict)."""
        get = settings.get if isinstance(settings, dict) else lambda k, d: getattr(settings, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        check_decoding(self.encoding, self.errors)
        if self.normalize not in NORMALIZATIONS:
            raise CharlstmError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.max_vocab is not None and self.max_vocab < 2:
            raise CharlstmError(f"--max-vocab must be at least 2, got {self.max_vocab}")
        if self.min_count < 1:
            raise CharlstmError(f"--min-count must be at least 1, got {self.min_count}")
        if self.max_chars is not None and self.max_chars < 1:
            raise CharlstmError(f"--max-chars must be at least 1, got {self.max_chars}")
        if not 0 <= self.val_frac < 1:
            raise CharlstmError(f"--val-frac must be in [0, 1), got {self.val_frac}")


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


# -- reading: bytes -> decoded pieces -------------------------------------------------------------------
def hash_files(paths: Iterable[Path], progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """[{path, bytes, sha256}] per file: what a prepared corpus records, and the cache key's content part."""
    records = []
    for path in paths:
        sha, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as fh:
                while data := fh.read(CHUNK_BYTES):
                    sha.update(data)
                    size += len(data)
                    if progress:
                        progress(len(data))
        except OSError as exc:
            raise CharlstmError(f"{path}: cannot read ({exc.strerror})") from None
        records.append({"path": str(Path(path).resolve()), "bytes": size, "sha256": sha.hexdigest()})
    return records


def _line_and_bytes(path: Path, offset: int) -> tuple[int, bytes]:
    """Line number of a byte offset, and the 4 bytes there (only for an error message: read again)."""
    newlines = 0
    with open(path, "rb") as fh:
        left = offset
        while left > 0 and (data := fh.read(min(left, CHUNK_BYTES))):
            newlines += data.count(b"\n")
            left -= len(data)
        return newlines + 1, fh.read(4)


def _decode_file(
    path: Path, encoding: str, errors: str, chunk_bytes: int, progress: Callable[[int], None]
) -> Iterator[str]:
    """One file's text as `corpus.read_text_file` gives it (BOM dropped, CRLF/CR -> LF), in pieces."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below, after the generator is done)
    except OSError as exc:
        raise CharlstmError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        codec, skip = sniff_encoding(fh.read(8192), source=str(path), encoding=encoding)
        fh.seek(skip)
        progress(skip)
        decoder = codecs.getincrementaldecoder(codec)(errors)
        fed, first, cr = skip, True, ""  # fed: bytes given to the decoder, counted from byte 0
        while True:
            data = fh.read(chunk_bytes)
            final = not data
            try:
                text = decoder.decode(data, final=final)
            except UnicodeDecodeError as exc:
                # exc.object ends where this input ends, whether or not the decoder had bytes buffered
                offset = fed + len(data) - len(exc.object) + exc.start
                line, bad = _line_and_bytes(path, offset)
                raise decode_error(str(path), codec, exc.reason, offset, bad, line) from None
            fed += len(data)
            progress(len(data))
            if first and text:
                first = False
                if text.startswith("\ufeff"):
                    text = text[1:]
            text = cr + text
            cr = ""
            if not final and text.endswith("\r"):  # an LF may follow in the next read
                text, cr = text[:-1], "\r"
            if text:
                yield normalize_newlines(text)
            if final:
                return


@dataclass
class _SourceStats:
    """What the whole-text path would check of a source: is it empty, or only newlines?"""

    chars: int = 0
    nonblank: bool = False


def _source_text(
    found: SourceFiles, opts: TextOptions, chunk_bytes: int, progress: Callable[[int], None], stats: _SourceStats
) -> Iterator[str]:
    """A source's decoded text (files joined with one newline), as `corpus.load_corpus` reads it."""
    encoding, errors = found.encoding or opts.encoding, found.errors or opts.errors
    for i, path in enumerate(found.files):
        if i:
            stats.chars += 1
            yield "\n"
        for piece in _decode_file(path, encoding, errors, chunk_bytes, progress):
            stats.chars += len(piece)
            if not stats.nonblank and piece.strip("\n"):
                stats.nonblank = True
            yield piece


def _safe_pieces(pieces: Iterable[str], lines_only: bool = False) -> Iterator[str]:
    """Re-cut text so that every piece but the last ends after a newline (or, once more than CARRY_LIMIT
    characters pass without one and `lines_only` is off, before a space or tab). See the module docstring."""
    pending: list[str] = []
    held = 0
    for s in pieces:
        cut = s.rfind("\n") + 1 or None
        if cut is None and not lines_only and held + len(s) > CARRY_LIMIT:
            cut = max(s.rfind(" "), s.rfind("\t"))
            cut = None if cut < 0 else cut
        if cut is None:
            pending.append(s)
            held += len(s)
            continue
        pending.append(s[:cut])
        piece = "".join(pending)
        if piece:
            yield piece
        pending, held = [s[cut:]], len(s) - cut
    piece = "".join(pending)
    if piece:
        yield piece


def _gutenberg_bounds(pieces: Iterable[str]) -> tuple[int, int | None]:
    """Pass 0: where `corpus.strip_gutenberg` would cut, as (start, end or None = to the end).

    Pieces end at line ends, so a marker line is always whole inside one piece, and `^`/`$` match as on the
    whole text."""
    pos, start, end = 0, None, None
    for piece in pieces:
        if start is None and (m := _GUTENBERG_START.search(piece)):
            start = pos + m.end() + 1
        if end is None and (m := _GUTENBERG_END.search(piece)):
            end = pos + m.start()
        pos += len(piece)
        if start is not None and end is not None:
            break
    text_start = start or 0
    return text_start, end if end is not None and end > text_start else None


def _between(pieces: Iterable[str], start: int, end: int | None) -> Iterator[str]:
    """The characters at offsets [start, end) of the concatenated pieces."""
    pos = 0
    for piece in pieces:
        a, b = max(start - pos, 0), len(piece) if end is None else min(end - pos, len(piece))
        pos += len(piece)
        if a < b:
            yield piece[a:b]
        if end is not None and pos >= end:
            return


def _strip_newlines(pieces: Iterable[str]) -> Iterator[str]:
    """`"".join(pieces).strip("\\n") + "\\n"`, streaming: trailing newlines wait until text follows them."""
    started, held = False, 0
    for piece in pieces:
        if not started:
            piece = piece.lstrip("\n")
            if not piece:
                continue
            started = True
        body = piece.rstrip("\n")
        if body:
            yield "\n" * held + body
            held = len(piece) - len(body)
        else:
            held += len(piece)
    yield "\n"


def _take(pieces: Iterable[str], limit: int | None) -> Iterator[str]:
    """The first `limit` characters (all for None)."""
    left = limit
    for piece in pieces:
        if left is not None:
            piece = piece[:left]
            left -= len(piece)
        if piece:
            yield piece
        if left is not None and left <= 0:
            return


class _Text:
    """The preprocessed text of some sources, as the whole-text path makes it, readable in passes."""

    def __init__(
        self,
        sources: Sequence[SourceFiles],
        opts: TextOptions,
        *,
        strip: Sequence[bool],
        max_chars: int | None,
        chunk_bytes: int,
    ) -> None:
        self.sources, self.opts, self.strip, self.max_chars = sources, opts, strip, max_chars
        self.chunk_bytes = chunk_bytes
        self.bounds: list[tuple[int, int | None]] = [(0, None)] * len(sources)
        self.stats = [_SourceStats() for _ in sources]

    def _raw(self, i: int, progress: Callable[[int], None]) -> Iterator[str]:
        self.stats[i] = _SourceStats()
        return _source_text(self.sources[i], self.opts, self.chunk_bytes, progress, self.stats[i])

    def find_markers(self, progress: Callable[[int], None]) -> None:
        """Pass 0 (only where Gutenberg stripping is on)."""
        for i, strip in enumerate(self.strip):
            if strip:
                self.bounds[i] = _gutenberg_bounds(_safe_pieces(self._raw(i, progress), lines_only=True))

    def pieces(self, progress: Callable[[int], None]) -> Iterator[str]:
        def source(i: int) -> Iterator[str]:
            pieces = _safe_pieces(self._raw(i, progress))
            if self.strip[i]:
                pieces = _strip_newlines(_between(pieces, *self.bounds[i]))
            o = self.opts
            for piece in pieces:
                if piece.isascii():  # ASCII is its own normal form in all four; only case can change
                    yield piece.lower() if o.lowercase else piece
                else:
                    yield preprocess(piece, normalize=o.normalize, lowercase=o.lowercase, ascii_only=o.ascii_only)

        def joined() -> Iterator[str]:
            for i in range(len(self.sources)):
                if i:
                    yield "\n"  # between sources, as between the files of a folder
                yield from source(i)

        return _take(joined(), self.max_chars)

    def check_not_empty(self) -> None:
        for found, stats in zip(self.sources, self.stats, strict=True):
            error = found.empty_error(stats.chars, stats.nonblank)
            if error is not None:
                raise error


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


def _run_pass(desc: str, total: int, verbose: bool, work: Callable[[Callable[[int], None]], Any]) -> Any:
    progress = _Progress(desc, total, verbose)
    try:
        return work(progress)
    finally:
        progress.close()


def _checksum(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


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
    **settings: Any,
) -> PreparedCorpus:
    """Encode `sources` (files, folders, named corpora; joined with one newline) once, streaming.

    out: a directory to create (ids.bin + corpus.json, built under a temporary name and renamed when
    complete, so an interrupted run leaves nothing that looks finished); None keeps the ids in memory.
    options, or the same as keywords (settings): the text options, as `train` takes them.
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
    text = _Text(found, opts, strip=strip, max_chars=opts.max_chars, chunk_bytes=chunk_bytes)
    val = None
    if opts.val_file:
        vf = Path(opts.val_file)
        val_source = SourceFiles("val", [vf], "val", str(vf))
        val = _Text([val_source], opts, strip=[opts.strip_gutenberg is True], max_chars=None, chunk_bytes=chunk_bytes)
    started = time.time()

    all_files = [p for f in found for p in f.files] + ([Path(opts.val_file)] if opts.val_file else [])
    total = sum(_size(p) for p in all_files)
    text_total = total - (_size(Path(opts.val_file)) if opts.val_file else 0)
    if records is None:
        records = _run_pass("hashing", total, verbose and total > 50_000_000, lambda p: hash_files(all_files, p))
    stamps = [_stamp(p) for p in all_files]
    passes = 2 + any(strip)
    step = iter(range(1, passes + 1))
    if any(strip):
        _run_pass(f"pass {next(step)}/{passes}: Gutenberg markers", text_total, verbose, text.find_markers)
        if val is not None:
            val.find_markers(lambda n: None)

    counts, n_text = _run_pass(
        f"pass {next(step)}/{passes}: counting characters", text_total, verbose,
        lambda p: _count(text.pieces(p)),
    )
    text.check_not_empty()
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

        n_train, n_val = _run_pass(f"pass {next(step)}/{passes}: writing ids", total, verbose, write)
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
            "bytes_read": total,
            "seconds": round(time.time() - started, 3),
        }
        meta["checksum"] = _checksum(meta)
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


def _size(path: Path) -> int:
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
    if meta.get("checksum") != _checksum(meta):
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


# -- what `train` reads: a prepared DIR, or any text through the same path --------------------------------
TEXT_KEYS = tuple(f.name for f in dataclasses.fields(TextOptions))


def cache_dir() -> Path:
    """Where `charlstm train TEXT` keeps prepared copies of big texts: $CHARLSTM_CACHE, else
    $XDG_CACHE_HOME/charlstm, else ~/.cache/charlstm (then `prepared/<key>`)."""
    if os.environ.get("CHARLSTM_CACHE"):
        return Path(os.environ["CHARLSTM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlstm"


def _cache_key(found: SourceFiles, opts: TextOptions, records: list[dict[str, Any]]) -> str:
    """Content (sha256 and size of every file, in order) + everything that decides the ids; not paths."""
    strip = opts.strip_gutenberg if opts.strip_gutenberg is not None else found.gutenberg
    key = {
        "version": VERSION,
        "files": [(r["sha256"], r["bytes"]) for r in records],
        "decoding": [found.encoding or opts.encoding, found.errors or opts.errors],
        "strip_gutenberg": bool(strip),
        "options": {k: v for k, v in opts.to_json().items() if k not in ("encoding", "errors", "glob", "val_file")},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def _flag(key: str, value: Any) -> str:
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


def corpus_for_training(
    source: str | os.PathLike[str],
    opts: TextOptions,
    *,
    explicit: dict[str, Any] | None = None,
    verbose: bool = True,
) -> PreparedCorpus:
    """The one way training gets its ids, whatever the source's size.

    A prepared DIR is memory-mapped (text options given explicitly must match the ones it was prepared
    with). A text under CACHE_THRESHOLD_BYTES is prepared in memory. A bigger one is prepared once into the
    cache, keyed by its content and the options, and memory-mapped; a second run finds it there.
    """
    if is_prepared(source):
        corpus = open_prepared(source)
        fixed = corpus.options.to_json()
        clash = {k: v for k, v in (explicit or {}).items() if k in TEXT_KEYS and fixed[k] != v}
        if clash:
            given = ", ".join(_flag(k, v) for k, v in clash.items())
            kept = ", ".join(f"{k}={fixed[k]!r}" for k in clash)
            raise CharlstmError(
                f"{source} is a prepared corpus whose text options are fixed ({kept}); drop {given}, "
                "or prepare the text again with them (charlstm prepare SOURCE --out DIR ...)"
            )
        return corpus
    opts.validate()
    found = resolve_source(source, glob=opts.glob)
    val = [Path(opts.val_file)] if opts.val_file else []
    size = sum(_size(p) for p in [*found.files, *val])
    if size < CACHE_THRESHOLD_BYTES:
        return prepare([source], None, opts, verbose=False, resolved=[found])
    records = _run_pass("hashing", size, verbose, lambda p: hash_files([*found.files, *val], p))
    where = cache_dir() / "prepared" / _cache_key(found, opts, records)
    if where.exists():
        try:
            corpus = open_prepared(where, check_sources=False)  # the key already vouches for the content
        except CharlstmError as exc:
            if verbose:
                print(f"charlstm: the cached copy in {where} is damaged ({exc}); preparing it again", flush=True)
            shutil.rmtree(where, ignore_errors=True)
        else:
            if verbose:
                print(f"charlstm: {found.name}: using the copy prepared before in {where} (same content "
                      "and options: nothing to redo)", flush=True)
            return corpus
    if verbose:
        print(f"charlstm: {found.name} is {size / 1e6:,.0f} MB: preparing it once into {where} (memory-mapped; "
              "later runs with the same text and options reuse it)", flush=True)
    try:
        return prepare([source], where, opts, verbose=verbose, resolved=[found], records=records)
    except CharlstmError:
        if where.exists():  # another process prepared the same text meanwhile
            return open_prepared(where, check_sources=False)
        raise
