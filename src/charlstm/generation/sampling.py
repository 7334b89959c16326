"""Choosing the next character from logits: temperature, top-k, top-p (nucleus), greedy.

Temperature follows the literature: p_i ∝ exp(log p_i / T), so lower T is more conservative and T = 0 is the
argmax. Randomness comes in as uniform draws (one per row) so that two code paths given the same draws make
the same choices, and a seed fixes the whole text.
"""

from __future__ import annotations

import math

import numpy as np

from charlstm.errors import CharlstmError


def check_options(temperature: float, top_k: int | None = None, top_p: float | None = None) -> None:
    """Reject settings that have no meaning, with the reason."""
    if not isinstance(temperature, (int, float)) or math.isnan(temperature) or temperature < 0:
        raise CharlstmError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise CharlstmError(f"top-k must be an integer >= 1, got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):
        raise CharlstmError(f"top-p must be in (0, 1], got {top_p}")


def probabilities(
    logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> np.ndarray:
    """Unnormalised sampling weights (rows of `logits` -> same shape), after temperature, top-k, top-p.

    Exposed separately so tests (and curious users) can see the exact distribution that is sampled.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[None, :]
    if temperature == 0:
        p = np.zeros_like(z)
        p[np.arange(z.shape[0]), z.argmax(axis=-1)] = 1.0
        return p
    z = z / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    vocab = z.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = np.partition(z, vocab - top_k, axis=-1)[:, vocab - top_k : vocab - top_k + 1]
        p[z < kth] = 0.0
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, axis=-1)
        total = sorted_p.sum(axis=-1, keepdims=True)
        before = (np.cumsum(sorted_p, axis=-1) - sorted_p) / total  # mass strictly above each entry
        keep_sorted = before < top_p  # smallest prefix whose mass reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
    return p


def sample(
    logits: np.ndarray,
    uniforms: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> np.ndarray:
    """One id per row of `logits` (B, V), chosen by inverse CDF with the given uniform draws (B,)."""
    z = np.asarray(logits)
    if z.ndim == 1:
        z = z[None, :]
    if temperature == 0:
        return z.argmax(axis=-1)
    if top_k is None and top_p is None and z.shape[0] == 1:  # the hot path of batch-1 generation
        row = z[0].astype(np.float64) / temperature
        cdf = np.cumsum(np.exp(row - row.max()))
        return np.array(
            [min(int(cdf.searchsorted(float(uniforms[0]) * cdf[-1], side="right")), len(cdf) - 1)]
        )
    cdf = np.cumsum(probabilities(z, temperature, top_k, top_p), axis=-1)
    draws = np.asarray(uniforms, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]
    ids = (cdf <= draws).sum(axis=-1)
    return np.minimum(ids, z.shape[-1] - 1)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of (unnormalised) weights."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
