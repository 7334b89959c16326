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


def decode_bytes(data: bytes, *, source: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Bytes -> str with a BOM dropped and CRLF/CR turned into LF; a decoding failure names the byte.

    With the default UTF-8, a UTF-16/UTF-32 byte-order mark is honoured (such files are text, not binary).
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CharlstmError(
            f"unknown encoding {encoding!r}; use a Python codec name such as utf-8, gbk, latin-1"
        ) from None
    if errors not in DECODE_ERRORS:  # others (surrogateescape) would leave text the vocabulary cannot encode
        raise CharlstmError(f"--errors must be one of {', '.join(DECODE_ERRORS)}, got {errors!r}")
    skip = 0  # bytes of a BOM removed before decoding, so that error offsets count from the file's start
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
        encoding = "utf-8"
        for bom, name in (  # UTF-32 first: its little-endian BOM begins with UTF-16's
            (codecs.BOM_UTF32_LE, "utf-32"),
            (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"),
            (codecs.BOM_UTF16_BE, "utf-16"),
            (codecs.BOM_UTF8, "utf-8"),
        ):
            if data.startswith(bom):
                # the utf-16/utf-32 codecs read their BOM (it gives the byte order); UTF-8's we drop here
                encoding, skip = name, len(bom) if name == "utf-8" else 0
                break
        if encoding == "utf-8" and b"\x00" in data[:8192]:
            offset = data.index(b"\x00")
            raise CharlstmError(
                f"{source}: looks like a binary file (NUL byte at offset {offset}); give a text file, "
                "or --encoding if it is UTF-16/UTF-32 text"
            )
    try:
        text = data[skip:].decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        start = exc.start + skip
        bad = data[start : start + 4].hex(" ")
        line = data[:start].count(b"\n") + 1
        raise CharlstmError(
            f"{source}: cannot decode byte offset {start} (line {line}, bytes {bad}) as {encoding}: "
            f"{exc.reason}; pass the file's --encoding (e.g. latin-1, gbk, utf-16) or --errors replace"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


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


def load_named(name: str, *, download: bool = True) -> Corpus:
    corpus = NAMED_CORPORA[name]
    if corpus.url is None:
        files = _python_stdlib_files()
        parts = [read_text_file(p, errors="replace") for p in files]
        return Corpus("\n".join(parts), name, [str(p) for p in files])
    target = cached_path(name)
    assert target is not None
    if not target.is_file():
        if not download:
            raise CharlstmError(
                f"corpus {name!r} is not cached; download {corpus.url} and save it as {target} (or set KERAS_HOME)"
            )
        print(f"charlstm: downloading {name} from {corpus.url} to {target}", file=sys.stderr)
        _download(corpus, target)
    return Corpus(read_text_file(target), name, [str(target)], gutenberg=corpus.gutenberg)


def load_corpus(
    source: str | os.PathLike[str],
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    glob: str | None = None,
    download: bool = True,
) -> Corpus:
    """Read a named corpus, a file, or every text file under a folder (recursively, sorted).

    Folders are joined with one newline between files. Without `glob`, a folder contributes files with
    common text suffixes (and none); hidden files and folders are skipped.
    """
    src = os.fspath(source)
    if src in NAMED_CORPORA and not Path(src).exists():
        return load_named(src, download=download)
    path = Path(src).expanduser()
    if not path.exists():
        names = ", ".join(NAMED_CORPORA)
        raise CharlstmError(f"{src}: no such file or folder (named corpora: {names})")
    if path.is_file():
        text = read_text_file(path, encoding=encoding, errors=errors)
        if not text:
            raise CharlstmError(f"{path}: the file is empty")
        return Corpus(text, path.name, [str(path)])
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
    texts = [read_text_file(p, encoding=encoding, errors=errors) for p in files]
    text = "\n".join(texts)
    if not text.strip("\n"):
        raise CharlstmError(f"{path}: all {len(files)} files under the folder are empty")
    return Corpus(text, path.name, [str(p) for p in files])


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
