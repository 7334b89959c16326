"""The single `.keras` file: Keras' own zip plus one `charlstm.json` entry.

`model.save` writes the architecture, weights (and optimizer state for checkpoints); we append
`charlstm.json` (vocabulary, preprocessing, recipe, training state) to the same zip. Keras ignores the extra
entry, so `keras.saving.load_model(path)` works in safe mode with nothing registered, and the NumPy runtime
(`charlstm.generation.model`) reads the same file without TensorFlow. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.fileio import save_atomic
from charlstm.generation.modelfile import FORMAT, META_ENTRY, read_model_file

FORMAT_VERSION = 1


def save_model(
    model: Any, path: str | os.PathLike[str], meta: dict[str, Any], check: Callable[[Path], Any] | None = None,
    extra: dict[str, bytes] | None = None,
) -> None:
    """Save a Keras model (with optimizer state, so training can resume) plus charlstm metadata, atomically.
    `check(tmp)` may refuse the written file (by raising) before it takes its name. `extra`: more zip entries
    (a checkpoint's carried state, training/carry.py), which Keras and the runtime ignore."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}

    def write(tmp: Path) -> None:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr(META_ENTRY, json.dumps(payload, ensure_ascii=False, indent=1))
            for name, data in (extra or {}).items():
                z.writestr(name, data)
        if check is not None:
            check(tmp)

    save_atomic(path, write)


def read_entry(path: str | os.PathLike[str], name: str) -> bytes | None:
    """One extra entry of a model file (`save_model(extra=...)`), or None where it has none."""
    with zipfile.ZipFile(path) as z:
        return z.read(name) if name in z.namelist() else None


def without_entry(data: bytes, name: str) -> bytes:
    """A model file's bytes with one entry left out (a checkpoint's training-only state, in the copies that
    hand the model over)."""
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as src:
        if name not in src.namelist():
            return data
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as dst:
            for info in src.infolist():
                if info.filename != name:
                    dst.writestr(info, src.read(info.filename))
        return buf.getvalue()


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The charlstm metadata of a model file (validates that it is one)."""
    return read_model_file(path)[1]


def load_keras_model(path: str | os.PathLike[str], *, compile: bool = True) -> Any:
    """keras.saving.load_model with a clear error for damaged or foreign files (never a silent fallback)."""
    import keras

    read_meta(path)  # raises a readable error for non-charlstm or unreadable zips
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a damaged file
        raise CharlstmError(
            f"{path}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
