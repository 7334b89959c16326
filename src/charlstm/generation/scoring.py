"""How likely a text is under a model, character by character, and what the model would draw next.

`score(network, text)` reads the text once, statefully (the way generation reads a prime), in chunks that
carry the state, and returns every character's log-probability given all the characters before it: what
`CharModel.evaluate(text, streams=1)` averages, per position. The per-position view is what scoring a text,
per-character confidence, a "surprise" view and OpenAI's `echo` + `logprobs` need.

`distribution(network, prefix, settings)` is the next character's distribution exactly as `generate` would
sample it after `prefix`: the same preprocessing, repeat guard, logit processors and sampling transforms
(temperature, top-k, top-p, min-p, typical-p), because it is computed by the same `Generation` object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation import generate
from charlstm.generation.network import Network
from charlstm.generation.processors import LogitProcessor
from charlstm.generation.sampling import log_softmax, top_entries
from charlstm.generation.settings import GenerationSettings

CHUNK = 4096  # characters read per forward call: bounds memory (a 1 MB text never becomes one huge array)
LN2 = math.log(2)


@dataclass(frozen=True)
class Scored:
    """A text's per-character log-probabilities under a model (natural logs).

    `logprobs[i]` is log p(text[i] | text[:i]); `logprobs[0]` is NaN: the first character has no context (as
    OpenAI's `null`). `top_ids` / `top_logprobs` (when asked for): the likeliest characters at each position,
    (len(text), k), row 0 unused.
    """

    text: str  # as the model read it (after its preprocessing)
    ids: np.ndarray
    logprobs: np.ndarray
    top_ids: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None

    @property
    def chars(self) -> int:
        """Characters scored (all but the first)."""
        return max(0, len(self.ids) - 1)

    @property
    def nats(self) -> float:
        """Total negative log-likelihood in nats."""
        return float(-self.logprobs[1:].sum())

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.chars if self.chars else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2

    def summary(self) -> dict[str, float]:
        """The figures `CharModel.evaluate` reports, for this text read in one stateful pass."""
        return {"nats_per_char": self.nats_per_char, "bits_per_char": self.bits_per_char, "chars": self.chars}

    def least_likely(self, count: int = 5, width: int = 20) -> list[tuple[int, int, float]]:
        """The `count` spans of `width` characters with the most bits in total, not overlapping, most
        surprising first: (start, end, bits per character in the span)."""
        if self.chars == 0:
            return []
        bits = np.nan_to_num(-self.logprobs / LN2, nan=0.0)
        width = max(1, min(width, len(bits)))
        sums = np.convolve(bits, np.ones(width), mode="valid")  # sums[s] = bits[s : s + width].sum()
        taken = np.zeros(len(bits), dtype=bool)
        out: list[tuple[int, int, float]] = []
        for start in np.argsort(-sums, kind="stable"):
            if len(out) >= count:
                break
            start = int(start)
            if taken[start : start + width].any():
                continue
            taken[start : start + width] = True
            out.append((start, start + width, float(sums[start] / width)))
        return out


def score(network: Network, text: str, unknown: str = "error", top: int = 0, chunk: int = CHUNK) -> Scored:
    """Per-character log-probabilities of `text` under `network`, read once from the zero state (see module).

    Args:
        network: the model's network.
        text: the text (the model's preprocessing is applied first).
        unknown: what to do with characters outside the vocabulary (error, skip, replace), as for a prime.
        top: also keep the `top` likeliest characters and their log-probabilities at every position.
        chunk: characters read per `forward` call (bounds memory).

    Returns:
        A `Scored`: the text as read, its ids, every position's log-probability (the first NaN).
    """
    prepared = network.prepare(text)
    try:
        ids = network.vocab.encode(prepared, unknown=unknown).astype(np.int64)
    except CharlstmError as exc:
        exc.field = exc.field or "text"
        raise
    if unknown == "skip":
        prepared = "".join(network.chars[i] for i in ids.tolist())
    if len(ids) == 0:
        raise CharlstmError("the text to score is empty (after dropping unknown characters)", "text")
    if not isinstance(top, int) or top < 0:
        raise CharlstmError(f"top must be an integer >= 0, got {top!r}", "top")
    n = len(ids)
    logprobs = np.full(n, np.nan)
    top_ids = np.zeros((n, top), np.int64) if top else None
    top_lp = np.full((n, top), np.nan) if top else None
    state = None
    for start in range(0, n - 1, chunk):
        end = min(start + chunk, n - 1)  # inputs ids[start:end] predict ids[start+1:end+1]
        logits, state = network.forward(ids[None, start:end], state)  # (1, end - start, V)
        logp = log_softmax(logits[0])
        logprobs[start + 1 : end + 1] = np.take_along_axis(logp, ids[start + 1 : end + 1, None], axis=-1)[:, 0]
        if top:
            top_ids[start + 1 : end + 1], top_lp[start + 1 : end + 1] = top_entries(logp, top)
    return Scored(prepared, ids, logprobs, top_ids, top_lp)


def distribution(
    network: Network,
    prefix: str,
    settings: GenerationSettings | None = None,
    processors: Sequence[LogitProcessor] = (),
) -> np.ndarray:
    """The probabilities (V,) that generating from `prefix` with `settings` would draw its first character
    from (their length and num_samples do not matter)."""
    settings = (settings or GenerationSettings()).replace(length=1, num_samples=1)
    gen = generate.start(network, settings, prefix, processors)
    gen.logits = gen.context.start()  # (1, V)
    p = gen.sampling.probabilities(gen.processed_logits())[0]
    return p / p.sum()


def next_chars(
    network: Network,
    prefix: str,
    k: int = 5,
    settings: GenerationSettings | None = None,
    processors: Sequence[LogitProcessor] = (),
) -> list[tuple[str, float]]:
    """The k likeliest next characters after `prefix` with their probabilities, as `distribution` gives them
    (characters with probability 0 under the sampling settings are left out)."""
    if not isinstance(k, int) or k < 1:
        raise CharlstmError(f"k must be an integer >= 1, got {k!r}", "k")
    p = distribution(network, prefix, settings, processors)
    ids, vals = top_entries(p[None, :], k)
    chars = network.chars
    return [(chars[i], float(v)) for i, v in zip(ids[0].tolist(), vals[0].tolist(), strict=True) if v > 0]
