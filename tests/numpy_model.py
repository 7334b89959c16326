"""A charlstm `.keras` file written with zipfile + h5py alone, from seeded NumPy weights: the same bytes on
every machine and in a fraction of a second (no Keras import). The runtime reads it as it reads a trained
model's file (config.json's layer graph, model.weights.h5 in Keras' `layers/<name>/...` layout, charlstm.json).
Imported by the test modules and tests/tools/record_generation.py; not collected itself."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CHARS = tuple("\n .,abcdeghilmnorstu")


def write_model(
    path: Path,
    *,
    chars: tuple[str, ...] = CHARS,
    cells: tuple[str, ...] = ("lstm", "gru"),
    units: int = 24,
    embedding_dim: int = 8,
    has_unknown: bool = True,
    seed: int = 0,
    window: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """An Embedding -> (LSTM | GRU)* -> Dense model with random weights (logits spread wide enough that
    sampling settings matter), saved as a charlstm model file at `path`."""
    rng = np.random.default_rng(seed)
    vocab_size = len(chars) + (1 if has_unknown else 0)
    layers: list[dict[str, Any]] = [
        {"class_name": "InputLayer", "config": {"name": "ids", "batch_shape": [None, window]}},
        {"class_name": "Embedding", "config": {"name": "embedding", "input_dim": vocab_size,
                                               "output_dim": embedding_dim}},
    ]
    weights: dict[str, list[np.ndarray]] = {"embedding": [rng.normal(0, 1.0, (vocab_size, embedding_dim))]}
    width = embedding_dim
    counts: dict[str, int] = {}
    for cell in cells:
        n = counts.get(cell, 0)
        counts[cell] = n + 1
        key = cell if n == 0 else f"{cell}_{n}"
        gates = 4 if cell == "lstm" else 3
        layers.append({"class_name": cell.upper(), "config": {"name": key, "units": units}})
        bias = rng.normal(0, 0.5, (gates * units,) if cell == "lstm" else (2, gates * units))
        weights[key] = [rng.normal(0, 0.6, (width, gates * units)), rng.normal(0, 0.4, (units, gates * units)), bias]
        width = units
    layers.append({"class_name": "Dense", "config": {"name": "logits", "units": vocab_size,
                                                     "activation": "linear", "use_bias": True}})
    weights["dense"] = [rng.normal(0, 1.2, (width, vocab_size)), rng.normal(0, 0.8, (vocab_size,))]
    record = {
        "format": "charlstm-model",
        "vocab": {"chars": "".join(chars), "size": vocab_size, "has_unknown": has_unknown},
        "preprocessing": {},
        "recipe": "classic" if window else "default",
        "seeds": ["the cat ", "a rose "],
        "longest_runs": [3] * vocab_size,
        **(meta or {}),
    }
    h5 = io.BytesIO()
    import h5py

    with h5py.File(h5, "w") as f:
        for key, arrays in weights.items():
            group = f.create_group(f"layers/{key}/cell/vars" if key.split("_")[0] in ("lstm", "gru")
                                   else f"layers/{key}/vars")
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a.astype(np.float32))
    config = {"class_name": "Functional", "config": {"name": "charlstm", "layers": layers}}
    path = Path(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        z.writestr("model.weights.h5", h5.getvalue())
        z.writestr("charlstm.json", json.dumps(record))
    return path
