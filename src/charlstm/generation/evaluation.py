"""Evaluation in NumPy: a text's mean next-character loss under a model, in nats and bits per character.

Two views of context: stateful (the text read as contiguous streams from a zero state, as generation sees it)
and window (every character predicted from at most `window` characters before it, as the lesson's recipe
trains). `CharModel.evaluate` and `charlstm evaluate` are this module, over a `Network`.
"""

from __future__ import annotations

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation.network import Network


def evaluate(
    network: Network,
    text: str,
    unknown: str = "error",
    context: str | None = None,
    window: int | None = None,
    streams: int = 64,
) -> dict[str, float]:
    """Mean next-character loss over `text`: {"nats_per_char", "bits_per_char", "chars"}.

    Args:
        network: the model's network.
        text: the text (the model's preprocessing is applied first).
        unknown: characters outside the vocabulary: error, skip or replace.
        context: "stateful" (`streams` contiguous pieces read in parallel from a zero state) or "window"
            (every character predicted from at most `window` characters before it); None: window for
            classic (windowed) models, stateful otherwise.
        window: the window for context="window" (default: the model's, else 40).
        streams: parallel streams for context="stateful".
    """
    ids = network.encode(text, unknown=unknown).astype(np.int64)
    if len(ids) < 2:
        raise CharlstmError("evaluation text must have at least 2 characters in the vocabulary", "text")
    context = context or ("window" if network.window else "stateful")
    if context == "window":
        window = window or network.window or 40
        total, count = window_loss(network, ids, window)
    else:
        total, count = stateful_loss(network, ids, streams)
    nats = total / count
    return {"nats_per_char": nats, "bits_per_char": nats / np.log(2), "chars": count}


def nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each target's negative log-likelihood under its logits row (float64, log-sum-exp)."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def stateful_loss(network: Network, ids: np.ndarray, streams: int) -> tuple[float, int]:
    """(total nats, targets) with the ids read as `streams` contiguous streams (and the tail as one more)."""
    n = len(ids) - 1
    streams = max(1, min(streams, n // 100 or 1))
    per = n // streams
    total = 0.0
    inputs = ids[: per * streams].reshape(streams, per)  # (streams, per)
    targets = ids[1 : per * streams + 1].reshape(streams, per)  # (streams, per)
    logits, _ = network.forward(inputs)  # (streams, per, V)
    total += float(nll(logits, targets).sum())
    rest = n - per * streams  # the tail, read as one more stream
    if rest:
        logits, _ = network.forward(ids[per * streams : -1][None, :])  # (1, rest, V)
        total += float(nll(logits, ids[per * streams + 1 :][None, :]).sum())
    return total, n


def window_loss(network: Network, ids: np.ndarray, window: int) -> tuple[float, int]:
    """(total nats, targets) with every target predicted from the `window` ids before it."""
    total = 0.0
    targets = np.arange(1, len(ids))
    for start in range(0, len(targets), 2048):
        tgt = targets[start : start + 2048]
        # windows ending just before each target; the first few have shorter context (left-padded
        # rows are read from their own start by slicing per distinct length)
        full = tgt[tgt >= window]
        if len(full):
            rows = ids[full[:, None] - window + np.arange(window)[None, :]]  # (targets, window)
            logits = network.forward(rows)[0][:, -1]  # (targets, V)
            total += float(nll(logits, ids[full]).sum())
        for t in tgt[tgt < window]:
            logits = network.forward(ids[None, :t])[0][:, -1]  # (1, V)
            total += float(nll(logits, ids[[t]]).sum())
    return total, len(targets)
