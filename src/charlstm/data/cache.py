"""What `train` reads: a prepared DIR as it is, a big text prepared once into the cache, a small one in memory.

One data path for every size (prepare.py): a text over CACHE_THRESHOLD_BYTES is prepared into
`$CHARLSTM_CACHE/prepared/<key>` (keyed by the files' content and the text options) and reused by the next
run, which says so in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from charlstm.data.corpus import (
    SourceFiles,
    resolve_source,
)
from charlstm.data.prepare import file_size, prepare, run_pass
from charlstm.data.prepared import TEXT_KEYS, VERSION, PreparedCorpus, is_prepared, open_prepared
from charlstm.data.sources import TextOptions, hash_files
from charlstm.data.tags import tagged_sources
from charlstm.errors import CharlstmError

CACHE_THRESHOLD_BYTES = 32_000_000  # `charlstm train TEXT` above this prepares into the cache (see below)

# -- what `train` reads: a prepared DIR, or any text through the same path --------------------------------


def cache_dir() -> Path:
    """Where `charlstm train TEXT` keeps prepared copies of big texts: $CHARLSTM_CACHE, else
    $XDG_CACHE_HOME/charlstm, else ~/.cache/charlstm (then `prepared/<key>`)."""
    if os.environ.get("CHARLSTM_CACHE"):
        return Path(os.environ["CHARLSTM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlstm"


def _cache_key(found: SourceFiles, opts: TextOptions, records: list[dict[str, Any]], tags: str | None = None) -> str:
    """Content (sha256 and size of every file, in order) + everything that decides the ids; not paths."""
    strip = opts.strip_gutenberg if opts.strip_gutenberg is not None else found.gutenberg
    key = {
        "version": VERSION,
        "files": [(r["sha256"], r["bytes"]) for r in records],
        "decoding": [found.encoding or opts.encoding, found.errors or opts.errors],
        "strip_gutenberg": bool(strip),
        "options": {k: v for k, v in opts.to_json().items() if k not in ("encoding", "errors", "glob", "val_file")},
        **({"tags": tags} if tags else {}),
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
    download: bool = True,
    tags: str | None = None,
) -> PreparedCorpus:
    """The one way training gets its ids, whatever the source's size.

    A prepared DIR is memory-mapped (text options given explicitly must match the ones it was prepared
    with). A text under CACHE_THRESHOLD_BYTES is prepared in memory. A bigger one is prepared once into the
    cache, keyed by its content and the options, and memory-mapped; a second run finds it there.
    download=False: a named corpus that is not cached is an error, not a download (the copy check, which
    runs without Keras, reads texts this way).
    tags: "folder" or "file": a folder read as one source per tag (data/tags.py); corpus.json records the spans.
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
        if tags and "tags" not in corpus.meta:
            raise CharlstmError(f"{source} was prepared without tags; prepare it again with --tags {tags}")
        return corpus
    opts.validate()
    found = resolve_source(source, glob=opts.glob, download=download)
    resolved, source_tags = [found], None
    if tags:
        if opts.val_file:
            raise CharlstmError("--tags holds out the end of every tag's text; drop --val-file")
        resolved, source_tags = tagged_sources(found, tags)
    val = [Path(opts.val_file)] if opts.val_file else []
    size = sum(file_size(p) for p in [*found.files, *val])
    if size < CACHE_THRESHOLD_BYTES:
        return prepare([source] * len(resolved), None, opts, verbose=False, resolved=resolved, tags=source_tags)
    files = [p for f in resolved for p in f.files]  # a tagged folder: grouped by tag
    records = run_pass("hashing", size, verbose, lambda p: hash_files([*files, *val], p))
    where = cache_dir() / "prepared" / _cache_key(found, opts, records, tags)
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
        return prepare([source] * len(resolved), where, opts, verbose=verbose, resolved=resolved, records=records,
                       tags=source_tags)
    except CharlstmError:
        if where.exists():  # another process prepared the same text meanwhile
            return open_prepared(where, check_sources=False)
        raise

