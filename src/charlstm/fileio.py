"""Atomic writes: a file is either the old version or the complete new one, never half of either.

Every artefact of a run (model files, metrics, plots, config) goes through here, so that killing the process
at any instant leaves a directory that `--resume` and `charlstm generate` can still trust.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it.

    The temporary name keeps the suffix (Keras insists on `.keras`/`.png`) and lives in the same folder so
    that `os.replace` is a same-filesystem atomic rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode an ordinary write would (or the old file's)
    os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_UMASK)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def save_atomic(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Let `writer(tmp_path)` produce the file, then move it into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
