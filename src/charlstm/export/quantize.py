"""8-bit weights (`--quantize int8`): every weight matrix stored as int8 with one float32 scale per row
(symmetric: w ~ q * scale, scale = max |row| / 127); biases stay float32 and the step's math stays float32.

A file about a quarter of float32's. What it costs is measured at export, not assumed: the loss of the
model's validation text (or a text the user gives, or its seeds) under both weights, through the same NumPy
step (parts.step), printed and kept in the export's metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.export import parts
from charlstm.export.parts import StepWeights

QUANTIZE = ("int8",)


def is_matrix(name: str) -> bool:
    return name == "table" or name.endswith((".kernel", ".recurrent"))


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale per row) with w ~ q * scale[:, None]. A row of zeros gets scale 1."""
    w = np.asarray(w, np.float32)
    peak = np.abs(w).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) * scale[:, None]).astype(np.float32)


@dataclass
class Quantized:
    """int8 matrices with their row scales, and the float32 weights they stand for (for measuring)."""

    values: dict[str, np.ndarray]  # name -> int8 (rows, cols)
    scales: dict[str, np.ndarray]  # name -> float32 (rows,)
    dequantized: StepWeights


def quantize(weights: StepWeights) -> Quantized:
    values: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    deq: dict[str, np.ndarray] = {}
    for name, w in weights.matrices().items():
        if is_matrix(name):
            values[name], scales[name] = quantize_rows(w)
            deq[name] = dequantize_rows(values[name], scales[name])
    layers = []
    for n, layer in enumerate(weights.layers):
        layers.append(dataclasses.replace(
            layer,
            recurrent=deq[f"layer{n}.recurrent"],
            kernel=deq.get(f"layer{n}.kernel"),
        ))
    return Quantized(values, scales, dataclasses.replace(
        weights, table=deq["table"], layers=layers, dense_kernel=deq["dense.kernel"]
    ))


def measure_text(model: Any, text: str | None) -> tuple[np.ndarray, str]:
    """The ids to measure 8-bit weights' cost on: `text` if given, else the model's validation text (found
    from what its file records), else its seed primes."""
    net = parts._runtime(model)
    if text is not None:
        ids = net.vocab.encode(net.prepare(text), unknown="skip")
        if len(ids) < 2:
            raise CharlstmError("the text to measure the loss on has fewer than two known characters")
        return ids, f"the given text ({len(ids):,} characters)"
    found = parts.validation_ids(model)
    if found is not None:
        return found
    seeds = "".join(str(s) for s in (net.meta.get("seeds") or []))
    ids = net.vocab.encode(net.prepare(seeds), unknown="skip") if seeds else np.zeros(0, np.int64)
    if len(ids) < 2:
        raise CharlstmError(
            "cannot measure what 8-bit weights cost: the model file records no validation text and no seeds; "
            "give a text with --text FILE"
        )
    return ids, f"the model's seed primes ({len(ids):,} characters; give --text FILE for a real measure)"


def loss_cost(weights: StepWeights, quantized: Quantized, ids: np.ndarray) -> dict[str, float]:
    """Loss in nats/char under float32 and under the 8-bit weights, through the same step."""
    base = parts.mean_loss(weights, ids)
    low = parts.mean_loss(quantized.dequantized, ids)
    return {"float32_nats": base, "int8_nats": low, "cost_nats": low - base}
