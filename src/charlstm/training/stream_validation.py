"""Validation read as one stream, the way the model generates: `val_loss_stream` beside `val_loss`.

Keras' validation (`val_loss`) reads the held-out text in 64-character blocks, each from a zero state: the
figure nanoGPT and most char-model tools report, and the one the size rule and the checkpoints go by. A model
that carries its state (training/carry.py) is meant to be used on long context, so each checkpoint also reads
the same held-out characters as a stream: `STREAMS` contiguous pieces in parallel, each after `WARMUP`
characters of the text before it (read but not scored), so every scored character has at least `WARMUP`
characters of context, as in one stream from the start. `CharModel.evaluate(streams=1)`, the NumPy runtime,
is the exact figure: on issue 23's float32 5-minute models the two agreed to 1e-6 (`tests/test_carry.py`
holds them within 1e-4 for one piece, 0.01 for sixteen); a bf16 run computes this in bf16.

It runs on the torch engine's direct forward (`torch_engine.direct_forward`); on any other path the column
is left out.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from charlstm.training.callbacks import LN2

STREAMS = 64  # as many rows as Keras' validation batches: the forward runs at about the same speed per character
WARMUP = 256
CHUNK = 1024  # time steps per forward call (memory: streams x chunk x units per layer)


def stream_loss(forward: Any, ids: np.ndarray, streams: int = STREAMS, warmup: int = WARMUP, chunk: int = CHUNK) -> float:
    """Mean next-character loss (nats) over `ids` read as `streams` pieces, each after `warmup` characters of
    context; `forward(x, training=False, state=...)` is `torch_engine.direct_forward`'s."""
    import torch
    from torch.nn import functional

    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids) - 1  # targets
    streams = max(1, min(streams, n // max(1, 4 * warmup)))  # short texts: fewer, longer pieces
    per = math.ceil(n / streams)
    length = per + warmup
    padded = np.concatenate([ids, np.zeros(length + 1, dtype=np.int64)])
    firsts = np.arange(streams) * per  # (S,): the first target index each piece scores
    starts = np.maximum(0, firsts - warmup)  # (S,): where each piece starts reading
    index = starts[:, None] + np.arange(length)[None, :]  # (S, T): input positions
    scored = (index >= firsts[:, None]) & (index < np.minimum(firsts + per, n)[:, None])  # (S, T)
    x, y = torch.as_tensor(padded[index]), torch.as_tensor(padded[index + 1])
    mask = torch.as_tensor(scored, dtype=torch.float64)
    total, state = 0.0, None
    with torch.no_grad():
        for t in range(0, length, chunk):
            logits, state = forward(x[:, t : t + chunk], training=False, state=state)  # (S, c, V)
            nll = functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y[:, t : t + chunk].reshape(-1),
                                           reduction="none")  # (S * c,)
            total += float((nll.double() * mask[:, t : t + chunk].reshape(-1)).sum())
    return total / int(scored.sum())


class StreamValidation(keras.callbacks.Callback):
    """`val_loss_stream` and `val_bpc_stream` in an epoch's logs (metrics.csv, loss.png) after Keras'
    validation: the held-out `ids` read as a stream (`stream_loss`). Placed before the callbacks that read
    the logs."""

    def __init__(self, ids: np.ndarray) -> None:
        super().__init__()
        self.ids = ids
        self.forward: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from charlstm.training import torch_engine

        self.forward = torch_engine.direct_forward(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or "val_loss" not in logs or self.forward is None:
            return
        nats = stream_loss(self.forward, self.ids)
        logs["val_loss_stream"] = nats
        logs["val_bpc_stream"] = nats / LN2


def applies(config: Any, data: Any, tagged: bool) -> bool:
    """Whether a run gets the stream column: the torch engine, plain sequences, held-out text."""
    return (keras.backend.backend() == "torch" and config.mode == "sequences" and not config.items and not tagged
            and data.val is not None and config.cell == "lstm")
