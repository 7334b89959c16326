"""Reading a charlstm `.keras` file with `zipfile` + `h5py` alone: its Keras config, charlstm's own entry
(vocabulary, preprocessing, recipe) and each layer's weights.

A `.keras` file is a zip of `config.json` (the layer graph), `model.weights.h5` and, for charlstm models,
`charlstm.json`; Keras ignores the extra entry, so the same file loads in plain Keras (docs/architecture.md).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError

META_ENTRY = "charlstm.json"
FORMAT = "charlstm-model"
SUPPORTED = {"InputLayer", "CategoryEncoding", "Embedding", "LSTM", "GRU", "Dropout", "Dense", "Activation", "Softmax",
             "Concatenate"}  # Concatenate: a tagged model's [character, tag embedding] input (generation/tags.py)
# a softmax head is sampled from its inputs, the logits: softmax(z) and z give the same distribution
HEAD_ACTIVATIONS = ("linear", "softmax")


def _activation(value: Any) -> str:
    """An activation's name in a layer config: "tanh", or a serialized object's name."""
    if isinstance(value, dict):
        return str((value.get("config") or {}).get("name") or value.get("class_name", "")).lower()
    return str(value or "linear").lower()


def check_layers(layer_cfgs: Sequence[dict[str, Any]], path: str | None = None) -> None:
    """Refuse, with the reason, a layer graph the NumPy runtime would run differently than Keras does.

    It runs a chain: ids (Embedding or one-hot CategoryEncoding) or one-hot input, LSTM/GRU layers in their
    default, cuDNN-compatible settings, Dropout (nothing at inference), and one Dense head, linear or softmax
    (a trailing Activation("softmax") or Softmax layer too): a model built some other way (your own
    Sequential, say) is checked here rather than generating wrong text.
    """
    where = path or "model"
    classes = [lc["class_name"] for lc in layer_cfgs]
    unsupported = sorted(set(classes) - SUPPORTED)
    if unsupported:
        raise CharlstmError(f"{where}: layers the NumPy runtime cannot run: {', '.join(unsupported)}")
    head = seen_rnn = False
    for lc in layer_cfgs:
        cls, cfg = lc["class_name"], lc.get("config", {})
        name = cfg.get("name", cls)
        if cls in ("LSTM", "GRU"):
            seen_rnn = True
            if head:
                raise CharlstmError(f"{where}: {name} comes after the Dense head; the runtime needs the head last")
            plain = (
                _activation(cfg.get("activation", "tanh")) == "tanh"
                and _activation(cfg.get("recurrent_activation", "sigmoid")) == "sigmoid"
                and cfg.get("use_bias", True)
                and not cfg.get("go_backwards", False)
                and (cls == "LSTM" or cfg.get("reset_after", True))
            )
            if not plain:
                raise CharlstmError(
                    f"{where}: {name}: the NumPy runtime runs {cls} layers in their default settings (tanh, "
                    "sigmoid gates, with bias, forward; GRU with reset_after)"
                )
        elif cls == "Dense":
            if head:
                raise CharlstmError(f"{where}: {name}: the runtime runs one Dense layer, the head (no hidden Dense)")
            if _activation(cfg.get("activation")) not in HEAD_ACTIVATIONS or not cfg.get("use_bias", True):
                raise CharlstmError(
                    f"{where}: {name}: the head must be a Dense layer with a bias and a linear or softmax "
                    f"activation, not {_activation(cfg.get('activation'))!r}"
                )
            head = True
        elif cls in ("Activation", "Softmax"):
            if not head or (cls == "Activation" and _activation(cfg.get("activation")) not in HEAD_ACTIVATIONS):
                raise CharlstmError(f"{where}: {name}: only a softmax after the Dense head is supported")
        elif cls == "Concatenate" and (seen_rnn or cfg.get("axis", -1) != -1 or name != "with_tag"):
            raise CharlstmError(f"{where}: {name}: only a tagged model's input (with_tag) may concatenate layers")
        elif cls == "CategoryEncoding" and cfg.get("output_mode", "one_hot") != "one_hot":
            raise CharlstmError(f"{where}: {name}: CategoryEncoding must be one_hot")


def _snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def read_weights(h5_bytes: bytes, layer_classes: Sequence[str]) -> list[list[np.ndarray]]:
    """Weights of each layer, in config order, from Keras' `layers/<snake class>[_n]/...` h5 layout."""
    import h5py

    seen: dict[str, int] = {}
    out: list[list[np.ndarray]] = []
    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        layers = f["layers"]
        for cls in layer_classes:
            base = _snake(cls)
            n = seen.get(base, 0)
            seen[base] = n + 1
            key = base if n == 0 else f"{base}_{n}"
            group = layers.get(key)
            if group is None:
                out.append([])
                continue
            holder = group["cell"]["vars"] if "cell" in group else group["vars"]
            out.append([np.asarray(holder[str(i)], dtype=np.float32) for i in range(len(holder))])
    return out


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(keras config, charlstm metadata, weights h5 bytes, file bytes), with a clear error for non-models."""
    p = Path(path)
    if not p.is_file():
        raise CharlstmError(f"{p}: no such model file")
    data = p.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
            if META_ENTRY not in names or "config.json" not in names or "model.weights.h5" not in names:
                raise CharlstmError(
                    f"{p}: not a charlstm model file (a .keras zip with {META_ENTRY}); train one with `charlstm train`"
                )
            meta = json.loads(z.read(META_ENTRY))
            config = json.loads(z.read("config.json"))
            weights = z.read("model.weights.h5")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:  # CharlstmError passes through
        raise CharlstmError(
            f"{p}: not a charlstm model file or damaged ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CharlstmError(f"{p}: not a charlstm model file (format {found!r})")
    return config, meta, weights, data
