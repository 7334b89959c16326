"""Choosing the next character from logits: temperature, top-k, top-p (nucleus), min-p, typical-p, greedy.

Temperature follows the literature: p_i ∝ exp(log p_i / T), so lower T is more conservative and T = 0 is the
argmax. Randomness comes in as uniform draws (one per row) so that two code paths given the same draws make
the same choices, and a seed fixes the whole text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlstm.errors import CharlstmError


def check_options(
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
) -> None:
    """Reject settings that have no meaning, with the reason."""
    if not isinstance(temperature, (int, float)) or math.isnan(temperature) or temperature < 0:
        raise CharlstmError(f"temperature must be >= 0 (0 = greedy), got {temperature}", "temperature")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise CharlstmError(f"top-k must be an integer >= 1, got {top_k}", "top_k")
    if top_p is not None and not (0 < top_p <= 1):
        raise CharlstmError(f"top-p must be in (0, 1], got {top_p}", "top_p")
    if min_p is not None and not (0 <= min_p <= 1):
        raise CharlstmError(f"min-p must be in [0, 1], got {min_p}", "min_p")
    if typical_p is not None and not (0 < typical_p <= 1):
        raise CharlstmError(f"typical-p must be in (0, 1], got {typical_p}", "typical_p")


@dataclass(frozen=True)
class Sampling:
    """How the next character is chosen from the logits: the sampling part of a `GenerationSettings`
    (settings.py checks it); equal settings compare equal, so generations that share them are sampled in one
    call (state.py)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None

    def sample(self, logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """One id per row of `logits`, drawn with these settings from the given uniforms (`sample`)."""
        return sample(logits, uniforms, self.temperature, self.top_k, self.top_p, self.min_p, self.typical_p)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The unnormalised weights these settings sample `logits` (rows, V) with (`probabilities`)."""
        return probabilities(logits, self.temperature, self.top_k, self.top_p, self.min_p, self.typical_p)


def probabilities(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
) -> np.ndarray:
    """Unnormalised sampling weights (rows of `logits` -> same shape), after temperature, top-k, top-p, min-p
    and typical-p, in Hugging Face's order (each truncation sees the weights the previous one left).

    Exposed separately so tests (and curious users) can see the exact distribution that is sampled.

    Examples:
        >>> logits = np.log([[0.5, 0.3, 0.2]])
        >>> probabilities(logits, top_k=2)  # weights relative to the likeliest; the third is cut
        array([[1. , 0.6, 0. ]])
        >>> probabilities(logits, temperature=0)  # greedy
        array([[1., 0., 0.]])
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
    if min_p:
        p = min_p_filter(p, min_p)
    if typical_p is not None and typical_p < 1.0:
        p = typical_filter(p, typical_p)
    return p


def min_p_filter(p: np.ndarray, min_p: float) -> np.ndarray:
    """Keep the entries whose weight is at least min_p times the row's largest (min-p sampling, Nguyen et al.
    2024; Hugging Face's MinPLogitsWarper): the cut follows the model's confidence.

    Examples:
        >>> min_p_filter(np.array([[0.5, 0.3, 0.04, 0.16]]), 0.2)  # below 0.2 x 0.5 = 0.1 goes
        array([[0.5 , 0.3 , 0.  , 0.16]])
    """
    return np.where(p >= min_p * p.max(axis=-1, keepdims=True), p, 0.0)


def typical_filter(p: np.ndarray, mass: float) -> np.ndarray:
    """Locally typical sampling (Meister et al. 2022; Hugging Face's TypicalLogitsWarper): rank entries by
    |-log q - H(q)|, how far each one's surprise is from the row's entropy, and keep the smallest such set
    whose mass reaches `mass` (ties with the last one kept; never fewer than one entry).

    Examples:
        >>> typical_filter(np.array([[0.5, 0.3, 0.04, 0.16]]), 0.5)
        array([[0.5, 0.3, 0. , 0. ]])
    """
    q = p / p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = np.log(q)
        ent = -np.where(q > 0, q * logq, 0.0).sum(axis=-1, keepdims=True)
        shifted = np.where(q > 0, np.abs(-logq - ent), np.inf)
    order = np.argsort(shifted, axis=-1, kind="stable")
    sorted_shift = np.take_along_axis(shifted, order, axis=-1)
    cum = np.cumsum(np.take_along_axis(q, order, axis=-1), axis=-1)
    last = np.minimum((cum < mass).sum(axis=-1, keepdims=True), p.shape[-1] - 1)
    return np.where(shifted <= np.take_along_axis(sorted_shift, last, axis=-1), p, 0.0)


def sample(
    logits: np.ndarray,
    uniforms: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    typical_p: float | None = None,
) -> np.ndarray:
    """One id per row of `logits` (B, V), chosen by inverse CDF with the given uniform draws (B,).

    Examples:
        >>> logits = np.log([[0.5, 0.3, 0.2]])
        >>> sample(logits, np.array([0.1])), sample(logits, np.array([0.9]))  # the CDF is 0.5, 0.8, 1
        (array([0]), array([2]))
    """
    z = np.asarray(logits)
    if z.ndim == 1:
        z = z[None, :]
    if temperature == 0:
        return z.argmax(axis=-1)
    plain = top_k is None and top_p is None and not min_p and typical_p in (None, 1.0)
    if plain and z.shape[0] == 1:  # the hot path of batch-1 generation
        row = z[0].astype(np.float64) / temperature
        cdf = np.cumsum(np.exp(row - row.max()))
        return np.array(
            [min(int(cdf.searchsorted(float(uniforms[0]) * cdf[-1], side="right")), len(cdf) - 1)]
        )
    cdf = np.cumsum(probabilities(z, temperature, top_k, top_p, min_p, typical_p), axis=-1)
    draws = np.asarray(uniforms, dtype=np.float64).reshape(-1, 1) * cdf[:, -1:]
    ids = (cdf <= draws).sum(axis=-1)
    return np.minimum(ids, z.shape[-1] - 1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, in float64 (-inf where a logit is -inf)."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return z - (np.log(np.exp(z - m).sum(axis=-1, keepdims=True)) + m)


def top_entries(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of `values` (rows, V), largest first: (ids, values). Ties keep the
    lower id first, so the order is the same on every machine."""
    k = min(k, values.shape[-1])
    part = np.argpartition(-values, k - 1, axis=-1)[..., :k]
    part.sort(axis=-1)
    vals = np.take_along_axis(values, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1), np.take_along_axis(vals, order, axis=-1)


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of (unnormalised) weights."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
