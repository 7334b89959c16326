"""The likeliest texts rather than random ones: best-of-n (sample many, keep the likeliest) and beam search.

`best_of(gen, n)` steps a generation of N rows (drawn as one batch with the usual settings) and returns the
n with the highest log-probability per character under the model (OpenAI's `best_of` rule:
"the highest log probability per token"; N >= n). The log-probabilities are the model's own, before any
processor or sampling transform, as `model.score` computes them.

`beam(gen, width)` keeps the `width` likeliest partial texts at every step (their summed log-
probabilities under the model), expands each by every character the processors and the constraint allow --
the n-gram ban and the repeat guard work inside the beam, row by row, on each hypothesis' own text -- and
ends a hypothesis at a stop string or where its pattern is complete. Finished hypotheses are ranked by
log-probability / length ** length_penalty (Hugging Face's length normalisation: 1 = per character, 0 = the
plain sum), and the best n are returned.

Both take a `Generation` built by `generate.start`, so a prime, a pattern, stops and processors mean here
exactly what they mean for sampling; `generate.search` builds it from settings (best_of > num_samples, or
beam), and `generate.generate` / `CharModel.generate` call that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation.processors import RowHistory
from charlstm.generation.sampling import log_softmax
from charlstm.generation.state import Generation, StatefulContext, WindowContext, step


@dataclass(frozen=True)
class Scored:
    """A generated text and its log-probability under the model (natural log, summed over its characters)."""

    text: str
    logprob: float
    chars: int

    @property
    def per_char(self) -> float:
        return self.logprob / self.chars if self.chars else 0.0


def best_of(gen: Generation, n: int) -> list[Scored]:
    """Step `gen` (all its rows drawn as one batch) to its end and return its `n` likeliest texts per
    character, likeliest first (the model's own log-probabilities, as `score` has them)."""
    return select(*run_scored(gen), n)


def run_scored(gen: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Step a generation to its end; each row's text, summed log-probability (the model's own) and length."""
    rows = gen.rows
    total = np.zeros(rows)
    count = np.zeros(rows, dtype=np.int64)
    pieces: list[list[str]] = [[] for _ in range(rows)]
    while not gen.finished:
        live = ~np.array(gen.done)
        step([gen])
        logp = log_softmax(gen.logits)  # (rows, V): the distribution the step's ids were drawn from
        chosen = logp[np.arange(rows), gen.ids]
        total[live] += chosen[live]
        count[live] += 1
        for b in np.flatnonzero(live).tolist():
            pieces[b].append(gen.pieces[b])
    return ["".join(p) for p in pieces], total, count


def select(texts: Sequence[str], total: np.ndarray, count: np.ndarray, n: int) -> list[Scored]:
    """The n texts with the highest log-probability per character (ties: the earlier row)."""
    per = np.where(count > 0, total / np.maximum(count, 1), -np.inf)
    order = np.argsort(-per, kind="stable")[:n]
    return [Scored(texts[i], float(total[i]), int(count[i])) for i in order.tolist()]


def beam(gen: Generation, width: int, n: int = 1, length_penalty: float = 1.0) -> list[Scored]:
    """Beam search of `width` hypotheses from a one-row generation `gen` (its prime, length, stops,
    processors and pattern); the `n` best finished ones, best first (see the module docstring). Its sampling
    settings (temperature, top-k/p, min-p, typical-p, seed) do not apply."""
    length = gen.length
    ctx, chars, stops = gen.context, gen.chars, gen.stops
    prime_ids = ctx.prime_ids
    cons = gen.constraint
    tail_len = max((len(s) for s in stops), default=0)

    logits = ctx.start()  # (1, V)
    scores = np.zeros(1)
    texts = [""]
    history = RowHistory(prime_ids, 1, keep_ids=True)  # each hypothesis' own text, for the processors
    finished: list[tuple[float, int, str, float, int]] = []  # (normalised, order, text, logprob, chars)

    def finish(text: str, logprob: float, chars_: int) -> None:
        norm = logprob / (max(chars_, 1) ** length_penalty)
        finished.append((norm, len(finished), text, logprob, chars_))

    for t in range(length):
        logp = log_softmax(logits)  # (rows, V) the model's own
        masked = logp
        if gen.processors:
            z = logits
            for processor in gen.processors:
                z = processor(z, history)
            masked = np.where(np.isneginf(z), -np.inf, logp)
        if cons is not None:
            masked = np.where(np.isneginf(cons.mask(masked, fallback=logp)), -np.inf, masked)
            dead = np.isneginf(masked).all(axis=-1)
            masked[dead] = np.where(cons.allowed()[dead], logp[dead], -np.inf)
        cand = scores[:, None] + masked  # (rows, V)
        vocab = cand.shape[1]
        flat = cand.ravel()
        order = np.argsort(-flat, kind="stable")[: 2 * width]  # enough to keep `width` alive after endings
        order = order[np.isfinite(flat[order])]
        keep: list[int] = []
        for j, o in enumerate(order.tolist()):
            if len(keep) == width:
                break
            p, c = divmod(o, vocab)
            text = texts[p] + chars[c]
            ended = any(text[-tail_len:].endswith(s) for s in stops) if stops else False
            if cons is not None and not ended:
                nxt = int(cons.constraint.table[cons.states[p], c])
                left = length - (t + 1)
                ended = bool(cons.constraint.accepting[nxt]) and not (cons.constraint.reach[nxt] <= left - 1).any()
            if not ended:
                keep.append(j)
            elif j < width:  # an ending among the step's `width` best: a finished hypothesis
                finish(text, float(flat[o]), t + 1)
        if not keep or len(finished) >= width:  # nothing alive, or `width` finished (early stopping)
            break
        parents, chosen = np.divmod(order, vocab)
        sel = np.array(keep)
        parents, chosen = parents[sel], chosen[sel]
        scores = flat[order[sel]]
        texts = [texts[p] + chars[c] for p, c in zip(parents.tolist(), chosen.tolist(), strict=True)]
        history = history.select(parents)
        history.update(chosen)
        if cons is not None:
            cons.select(parents)
            cons.advance(chosen)
        _reorder(ctx, parents)
        logits = ctx.advance(chosen)
    else:
        for text, sc in zip(texts, scores.tolist(), strict=True):
            finish(text, sc, length)
    if not finished:  # every step dead-ended (cannot happen with a checked constraint)
        raise CharlstmError("beam search found no text", "beam")
    finished.sort(key=lambda f: (-f[0], f[1]))
    return [Scored(text, logprob, c) for _, _, text, logprob, c in finished[:n]]


def _reorder(ctx: StatefulContext | WindowContext, parents: np.ndarray) -> None:
    """Keep the context's rows `parents`, in that order (a beam's survivors)."""
    if isinstance(ctx, StatefulContext):
        ctx.state = [tuple(s[parents] for s in st) for st in ctx.state]
    else:
        ctx.history = ctx.history[parents]
    ctx.rows = len(parents)
