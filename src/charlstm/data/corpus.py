"""Where text comes from: named corpora (downloaded once into the Keras cache), files and folders.

`load_corpus` is the single entry point. It returns the raw decoded text (UTF-8 with or without BOM, any
newline convention turned into LF) plus its identity; `preprocess` then applies the options that change the
text itself (Gutenberg boilerplate, Unicode normalisation, lowercase, ASCII-only), in that order, so the
lesson's `open(path).read().lower()` followed by dropping characters above 127 is reproduced exactly.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import socket
import sys
import sysconfig
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from charlstm.errors import CharlstmError


@dataclass(frozen=True)
class NamedCorpus:
    """A corpus known by name: a URL to fetch once, or a local builder (`python-stdlib`)."""

    name: str
    description: str
    url: str | None = None
    filename: str | None = None
    gutenberg: bool = False


NAMED_CORPORA: dict[str, NamedCorpus] = {
    c.name: c
    for c in [
        NamedCorpus(
            "treasure-island",
            "R. L. Stevenson, Treasure Island (Project Gutenberg #120), the lesson's book",
            "https://www.gutenberg.org/cache/epub/120/pg120.txt",
            "treasure_island.txt",
            gutenberg=True,
        ),
        NamedCorpus(
            "tiny-shakespeare",
            "Tiny Shakespeare (karpathy/char-rnn), the standard char-level benchmark",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "tiny_shakespeare.txt",
        ),
        NamedCorpus(
            "nietzsche",
            "Nietzsche, the original Keras example's corpus",
            "https://s3.amazonaws.com/text-datasets/nietzsche.txt",
            "nietzsche.txt",
        ),
        NamedCorpus(
            "python-stdlib",
            "the .py files of this Python's standard library (no tests, no site-packages); needs no network",
        ),
    ]
}

TEXT_SUFFIXES = {
    ".txt",
    ".md",
    ".rst",
    ".py",
    ".tex",
    ".c",
    ".h",
    ".json",
    ".csv",
    ".html",
    ".xml",
    ".js",
    "",
}


@dataclass
class Corpus:
    """Decoded text and where it came from (for config.json and reproducibility)."""

    text: str
    name: str
    files: list[str] = field(default_factory=list)
    gutenberg: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def keras_cache_dir() -> Path:
    """The folder `keras.utils.get_file` uses for datasets, resolved the way Keras resolves it.

    Computed here (not by importing Keras) so that listing corpora and reading a cached book stay instant.
    """
    base = os.environ.get("KERAS_HOME")
    if base is None:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "datasets"


def cached_path(name: str) -> Path | None:
    """Where a downloadable named corpus lives in the cache (None for local ones)."""
    corpus = NAMED_CORPORA[name]
    return keras_cache_dir() / corpus.filename if corpus.filename else None


def is_available_offline(name: str) -> bool:
    path = cached_path(name)
    return path is None or path.is_file()


DECODE_ERRORS = ("strict", "replace", "ignore")


def check_decoding(encoding: str, errors: str) -> None:
    """Refuse an unknown codec or error policy before any byte is read."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CharlstmError(
            f"unknown encoding {encoding!r}; use a Python codec name such as utf-8, gbk, latin-1"
        ) from None
    if errors not in DECODE_ERRORS:  # others (surrogateescape) would leave text the vocabulary cannot encode
        raise CharlstmError(f"--errors must be one of {', '.join(DECODE_ERRORS)}, got {errors!r}")


def sniff_encoding(head: bytes, *, source: str, encoding: str = "utf-8") -> tuple[str, int]:
    """(codec, bytes to skip) for a file starting with `head` (its first 8 KiB or more).

    With the default UTF-8, a UTF-16/UTF-32 byte-order mark is honoured (such files are text, not binary),
    a UTF-8 BOM is skipped, and a NUL byte early on means a binary file. Shared by the whole-file and the
    streaming (sources.py) readers so that both decode a file identically.
    """
    if encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        return encoding, 0
    encoding, skip = "utf-8", 0  # bytes of a BOM removed before decoding; error offsets count from byte 0
    for bom, name in (  # UTF-32 first: its little-endian BOM begins with UTF-16's
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
        (codecs.BOM_UTF8, "utf-8"),
    ):
        if head.startswith(bom):
            # the utf-16/utf-32 codecs read their BOM (it gives the byte order); UTF-8's we drop here
            encoding, skip = name, len(bom) if name == "utf-8" else 0
            break
    if encoding == "utf-8" and b"\x00" in head[:8192]:
        offset = head.index(b"\x00")
        raise CharlstmError(
            f"{source}: looks like a binary file (NUL byte at offset {offset}); give a text file, "
            "or --encoding if it is UTF-16/UTF-32 text"
        )
    return encoding, skip


def decode_error(source: str, encoding: str, reason: str, offset: int, bad: bytes, line: int) -> CharlstmError:
    """The one-line message for undecodable bytes: file, byte offset, line, the bytes, and what to do."""
    return CharlstmError(
        f"{source}: cannot decode byte offset {offset} (line {line}, bytes {bad.hex(' ')}) as {encoding}: "
        f"{reason}; pass the file's --encoding (e.g. latin-1, gbk, utf-16) or --errors replace"
    )


def normalize_newlines(text: str) -> str:
    if "\r" not in text:  # a fast scan; most texts have no CR at all
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_bytes(data: bytes, *, source: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Bytes -> str with a BOM dropped and CRLF/CR turned into LF; a decoding failure names the byte.

    With the default UTF-8, a UTF-16/UTF-32 byte-order mark is honoured (such files are text, not binary).
    """
    check_decoding(encoding, errors)
    encoding, skip = sniff_encoding(data[:8192], source=source, encoding=encoding)
    try:
        text = data[skip:].decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        start = exc.start + skip
        line = data[:start].count(b"\n") + 1
        raise decode_error(source, encoding, exc.reason, start, data[start : start + 4], line) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return normalize_newlines(text)


def read_text_file(path: Path, *, encoding: str = "utf-8", errors: str = "strict") -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CharlstmError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_bytes(data, source=str(path), encoding=encoding, errors=errors)


def _python_stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip_dirs = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).parts
        if any(part in skip_dirs or part.startswith("test_") for part in rel[:-1]) or rel[-1].startswith(
            "test_"
        ):
            continue
        files.append(path)
    return sorted(files)


def _download(corpus: NamedCorpus, target: Path) -> None:
    """Fetch a named corpus into the Keras cache, or explain exactly where to put it by hand."""
    import keras  # only a download needs Keras here

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        keras.utils.get_file(corpus.filename, origin=corpus.url, cache_subdir="datasets")
    except (Exception, KeyboardInterrupt) as exc:
        if target.exists():
            target.unlink()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CharlstmError(
            f"corpus {corpus.name!r} is not cached and could not be downloaded ({reason}). "
            f"Download {corpus.url} and save it as {target} (or set KERAS_HOME), then run again"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)


@dataclass(frozen=True)
class SourceFiles:
    """What a source names, before anything is read: its files in order and how to decode them.

    Named corpora decode as they always have (UTF-8; the standard library with `errors="replace"`) whatever
    the text options say. Both readers, whole-text (`load_corpus`) and streaming (sources.py), start here.
    """

    name: str
    files: list[Path]
    kind: str  # "file", "folder" or "named"
    location: str  # as the user gave it, for messages
    gutenberg: bool = False
    encoding: str | None = None  # None: the caller's --encoding / --errors
    errors: str | None = None

    def empty_error(self, chars: int, nonblank: bool) -> CharlstmError | None:
        """The error for a file or folder that holds no text (named corpora are never refused)."""
        if self.kind == "file" and not chars:
            return CharlstmError(f"{self.files[0]}: the file is empty")
        if self.kind == "folder" and not nonblank:
            return CharlstmError(f"{self.location}: all {len(self.files)} files under the folder are empty")
        return None


def _named_files(name: str, download: bool) -> SourceFiles:
    corpus = NAMED_CORPORA[name]
    if corpus.url is None:
        return SourceFiles(name, _python_stdlib_files(), "named", name, encoding="utf-8", errors="replace")
    target = cached_path(name)
    assert target is not None
    if not target.is_file():
        if not download:
            raise CharlstmError(
                f"corpus {name!r} is not cached; download {corpus.url} and save it as {target} (or set KERAS_HOME)"
            )
        print(f"charlstm: downloading {name} from {corpus.url} to {target}", file=sys.stderr)
        _download(corpus, target)
    return SourceFiles(name, [target], "named", name, gutenberg=corpus.gutenberg, encoding="utf-8", errors="strict")


def resolve_source(
    source: str | os.PathLike[str], *, glob: str | None = None, download: bool = True
) -> SourceFiles:
    """A named corpus, a file, or every text file under a folder (recursively, sorted).

    Without `glob`, a folder contributes files with common text suffixes (and none); hidden files and
    folders are skipped.
    """
    src = os.fspath(source)
    if src in NAMED_CORPORA and not Path(src).exists():
        return _named_files(src, download)
    path = Path(src).expanduser()
    if not path.exists():
        names = ", ".join(NAMED_CORPORA)
        raise CharlstmError(f"{src}: no such file or folder (named corpora: {names})")
    if path.is_file():
        return SourceFiles(path.name, [path], "file", str(path))
    pattern = glob or "*"
    files = sorted(
        p
        for p in path.rglob(pattern)
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and (glob is not None or p.suffix.lower() in TEXT_SUFFIXES)
    )
    if not files:
        hint = f" matching {glob!r}" if glob else " (use --glob to choose files by pattern)"
        raise CharlstmError(f"{path}: the folder has no text files{hint}")
    return SourceFiles(path.name, files, "folder", str(path))


def _read_source(found: SourceFiles, encoding: str, errors: str) -> Corpus:
    encoding, errors = found.encoding or encoding, found.errors or errors
    text = "\n".join(read_text_file(p, encoding=encoding, errors=errors) for p in found.files)
    error = found.empty_error(len(text), bool(text.strip("\n")))
    if error is not None:
        raise error
    return Corpus(text, found.name, [str(p) for p in found.files], gutenberg=found.gutenberg)


def load_named(name: str, *, download: bool = True) -> Corpus:
    return _read_source(_named_files(name, download), "utf-8", "strict")


def load_corpus(
    source: str | os.PathLike[str],
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    glob: str | None = None,
    download: bool = True,
) -> Corpus:
    """Read a named corpus, a file, or every text file under a folder, joined with one newline between files."""
    return _read_source(resolve_source(source, glob=glob, download=download), encoding, errors)


_GUTENBERG_START = re.compile(
    r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE
)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header and license around the `*** START OF` / `*** END OF` lines."""
    start = _GUTENBERG_START.search(text)
    end = _GUTENBERG_END.search(text)
    text_start = start.end() + 1 if start else 0
    text_end = end.start() if end and end.start() > text_start else len(text)
    return text[text_start:text_end].strip("\n") + "\n"


NORMALIZATIONS = ("NFC", "NFKC", "NFD", "NFKD", "none")


def preprocess(
    text: str,
    *,
    strip_gutenberg_text: bool = False,
    normalize: str = "NFC",
    lowercase: bool = False,
    ascii_only: bool = False,
) -> str:
    """Apply the text-changing options in a fixed order (boilerplate, Unicode form, case, ASCII)."""
    if strip_gutenberg_text:
        text = strip_gutenberg(text)
    if normalize not in NORMALIZATIONS:
        raise CharlstmError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if normalize != "none":
        text = unicodedata.normalize(normalize, text)
    if lowercase:
        text = text.lower()
    if ascii_only:
        text = text.encode("ascii", errors="ignore").decode("ascii")
    return text
