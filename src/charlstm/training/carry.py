"""A carried state: the LSTM state handed from one training batch to the next (truncated backpropagation
through time), as char-rnn and torch-rnn train.

Why: the sequences layout starts every 64-character row from a zero state, so the network never learns to use
more than 64 characters of context, although generation carries its state for ever. With the streams layout
(`data.batches.StreamBatches`: row r of batch k+1 continues row r of batch k in the text), the state each row
ends a batch with is where it starts the next one: long context at no extra cost per step. Gradients stop at
the batch boundary (the state is detached).

The carry lives in the training step, not in the model: the saved `.keras` file stays a plain Functional model
of built-in, stateless layers (no `stateful=True`, no fixed batch size), and the NumPy runtime reads it
unchanged. It runs on the torch engine's direct forward (`torch_engine.direct_forward`), the default install's
path; `why_not` names every case where the run falls back to the sequences layout, and config.json records it.

Exact resume: the state after the last batch is part of last.keras (its `carry.npz` entry, written by
`checkpoints.Checkpoints`), so a resumed run starts its next batch from the state an uninterrupted one would
have had.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

ENTRY = "carry.npz"  # the zip entry of last.keras that holds the carried state


class CarriedState:
    """Per LSTM layer (h, c), each (batch, units), between two batches; None before the first."""

    def __init__(self) -> None:
        self.state: list[tuple[Any, Any]] | None = None
        self.batches = 0  # batches that went through begin/end (tests: the carry was used)

    def begin(self, reset: Any, batch: int) -> list[tuple[Any, Any]] | None:
        """The state a batch starts from: the last batch's end, zeroed in the rows where `reset` is 1; None
        (zeros) for a first batch, or when the batch has another number of rows."""
        if self.state is None or self.state[0][0].shape[0] != batch:
            return None
        keep = (1.0 - reset.float()).reshape(-1, 1)  # (B, 1)
        return [(h * keep.to(h.dtype), c * keep.to(c.dtype)) for h, c in self.state]

    def end(self, state: list[tuple[Any, Any]]) -> None:
        """Keep the state a batch ended with, cut from its graph (the next batch's gradients stop here)."""
        self.state = [(h.detach(), c.detach()) for h, c in state]
        self.batches += 1

    # -- in last.keras ---------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes | None:
        """The state as an .npz (float32 h0, c0, h1, c1, ...), or None before the first batch."""
        if self.state is None:
            return None
        arrays = {}
        for i, (h, c) in enumerate(self.state):
            arrays[f"h{i}"] = h.float().cpu().numpy()
            arrays[f"c{i}"] = c.float().cpu().numpy()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def load_bytes(self, data: bytes | None, device: Any = None) -> None:
        """The state `to_bytes` wrote, as float32 on `device` (the step casts it to the compute dtype); None:
        start from zeros."""
        if data is None:
            self.state = None
            return
        import torch

        with np.load(io.BytesIO(data)) as arrays:
            layers = len(arrays.files) // 2
            self.state = [
                tuple(torch.as_tensor(arrays[f"{k}{i}"], device=device) for k in "hc")
                for i in range(layers)
            ]


def why_not(
    config: Any, *, backend: str, tagged: bool, items: bool, replicas: int, chars: int | None = None, batch: int = 1
) -> str | None:
    """Why a run cannot carry its state (None: it can): the cases the streams layout or the direct forward do
    not cover, and a text too short to give each of `batch` streams two rows of `config.seq_len`."""
    if not config.carry_state:
        return "off (--no-carry-state)"
    if config.mode != "sequences":
        return "the lesson's windows are read one at a time"
    if items:
        return "a list's items are shuffled, not read as streams"
    if tagged:
        return "a tagged text is read in shuffled rows"
    if backend != "torch":
        return f"the carry runs on the torch engine; this run trains on {backend}"
    if config.cell != "lstm":
        return "the carry runs on the fused LSTM; --cell gru trains on Keras' own path"
    if replicas > 1:
        return "data-parallel training splits the streams across devices"
    if config.mixed_precision == "fp16":
        return "fp16 trains with Keras' loss-scaling step"
    if chars is not None and chars < 2 * batch * config.seq_len + config.seq_len + 1:
        return f"{chars:,} training characters are too few for {batch} streams of two {config.seq_len}-character rows"
    return None
