"""Small random-weight model files for runtime and generation tests (no training: speed and parity do not
depend on it). Imported by the test modules; not collected itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CHARS = tuple("\n .,abcdeghilmnorstu")


def build_and_save(
    path: Path,
    *,
    cell: str = "lstm",
    layers: int = 1,
    input: str = "embedding",
    units: int = 16,
    embedding_dim: int = 8,
    window: int | None = None,
    dropout: float = 0.0,
    chars: tuple[str, ...] = CHARS,
    has_unknown: bool = False,
    seed: int = 0,
    bias_scale: float = 0.5,
    logit_scale: float = 1.0,
    output_bias: dict[int, float] | None = None,
    forget_bias: float | None = None,
    preprocessing: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Any:
    """Build a model with charlstm.training.model.build_model, give every bias random non-zero values (so GRU's two
    biases and the LSTM gate biases all matter), scale the output layer, save it as a charlstm file and return
    the Keras model."""
    import keras

    from charlstm.data.vocab import Vocabulary
    from charlstm.training.model import ModelSpec, build_model
    from charlstm.training.saving import save_model

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary(chars, has_unknown=has_unknown)
    spec = ModelSpec(
        vocab_size=vocab.size, input=input, embedding_dim=embedding_dim, cell=cell, layers=layers,
        units=units, window=window, dropout=dropout,
    )
    model = build_model(spec)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = w.numpy()
        if w.path.endswith("bias"):
            value = rng.normal(0.0, bias_scale, value.shape)
        if forget_bias is not None and cell == "lstm" and w.path.endswith("cell/bias"):
            value[units : 2 * units] = forget_bias  # a long memory: what lies beyond a window still matters
        if w.path.startswith("logits/"):
            value = value * logit_scale
            if w.path.endswith("bias"):
                for i, b in (output_bias or {}).items():
                    value[i] = b
        w.assign(value.astype("float32"))
    meta = {
        "vocab": vocab.to_json(),
        "preprocessing": preprocessing or {},
        "recipe": "classic" if window else "default",
        **(extra_meta or {}),
    }
    save_model(model, path, meta)
    return model


def keras_logits(model: Any, ids: np.ndarray) -> np.ndarray:
    """What Keras computes for `ids`, as a NumPy array."""
    import keras

    return keras.ops.convert_to_numpy(model(np.asarray(ids, dtype="int32")))
