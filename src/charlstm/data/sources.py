"""Reading sources for prepare.py: files as bytes, decoded incrementally into pieces that are safe to
normalise one by one, with Gutenberg boundaries found in a pass of their own (why streaming: prepare.py).

The ids are exactly the whole-text path's (`corpus.load_corpus` + `corpus.preprocess` + `Vocabulary.build` +
`encode`): bytes go through incremental decoders (a multi-byte character may straddle two reads), and the
decoded text is cut into pieces only after a newline or, failing one for a long stretch, before a space or
tab. Neither character composes, reorders or changes case context with its neighbours, so Unicode
normalisation, lowercasing (Greek final sigma included) and the ASCII filter give piece by piece what they
give on the whole text; a CR is held back until the next read shows whether an LF follows. Gutenberg
stripping, a regex over the whole text, runs as a pass of its own ("pass 0") that finds the START/END marker
offsets; the counting and writing passes keep what lies between.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlstm.data.corpus import (
    _GUTENBERG_END,
    _GUTENBERG_START,
    NORMALIZATIONS,
    SourceFiles,
    check_decoding,
    decode_error,
    normalize_newlines,
    preprocess,
    sniff_encoding,
)
from charlstm.errors import CharlstmError

CHUNK_BYTES = 1 << 22  # 4 MiB reads: big enough for C-speed work per piece, small enough for flat memory
CARRY_LIMIT = 1 << 20  # characters without a newline before a space or tab may end a piece


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


class SourceText:
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
        self.ends: list[int] = []

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

        self.ends = []  # where each source's characters end (a tagged corpus' spans; past max_chars: cut)

        def joined() -> Iterator[str]:
            pos = 0
            for i in range(len(self.sources)):
                if i:
                    pos += 1
                    yield "\n"  # between sources, as between the files of a folder
                for piece in source(i):
                    pos += len(piece)
                    yield piece
                self.ends.append(pos)

        return _take(joined(), self.max_chars)

    def check_not_empty(self) -> None:
        for found, stats in zip(self.sources, self.stats, strict=True):
            error = found.empty_error(stats.chars, stats.nonblank)
            if error is not None:
                raise error


