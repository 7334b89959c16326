"""The likeliest texts rather than random ones: best-of-n (sample many, keep the likeliest) and beam search.

`best_of(model, prime, n=..., best_of=N, ...)` samples N texts as one batch with the usual settings and
returns the n with the highest log-probability per character under the model (OpenAI's `best_of` rule:
"the highest log probability per token"; N >= n). The log-probabilities are the model's own, before any
processor or sampling transform, as `model.score` computes them.

`beam(model, prime, width=W, ...)` keeps the W likeliest partial texts at every step (their summed log-
probabilities under the model), expands each by every character the processors and the constraint allow --
the n-gram ban and the repeat guard work inside the beam, row by row, on each hypothesis' own text -- and
ends a hypothesis at a stop string or where its pattern is complete. Finished hypotheses are ranked by
log-probability / length ** length_penalty (Hugging Face's length normalisation: 1 = per character, 0 = the
plain sum), and the best n are returned.

Both build their rows with `model.generation(...)`, so a prime, a pattern, stops and processors mean here
exactly what they mean for sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation.processors import RowHistory
from charlstm.generation.sampling import log_softmax
from charlstm.generation.state import StatefulContext, WindowContext, step


@dataclass(frozen=True)
class Scored:
    """A generated text and its log-probability under the model (natural log, summed over its characters)."""

    text: str
    logprob: float
    chars: int

    @property
    def per_char(self) -> float:
        return self.logprob / self.chars if self.chars else 0.0


def _error(message: str, field: str) -> CharlstmError:
    from charlstm.generation.constraints import _error as make

    return make(message, field)


def check_best_of(best_of: int | None, n: int) -> None:
    """OpenAI's rule: best_of is an integer >= n (the number of texts returned)."""
    if best_of is None:
        return
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise _error(f"best-of must be an integer >= 1, got {best_of!r}", "best_of")
    if best_of < n:
        raise _error(f"best-of ({best_of}) must be at least the number of samples returned (n = {n})", "best_of")


def best_of(model: Any, prime: str | None = None, *, n: int = 1, best_of: int, **settings: Any) -> list[Scored]:
    """Sample `best_of` texts in one batch and return the `n` likeliest per character, likeliest first.

    settings: what `model.generation` takes (length, temperature, top_k, seed, stop, regex, ...).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _error(f"num-samples must be an integer >= 1, got {n!r}", "num_samples")
    check_best_of(best_of, n)
    settings.pop("num_samples", None)
    gen = model.generation(prime, num_samples=best_of, **settings)
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


def beam(
    model: Any,
    prime: str | None = None,
    *,
    width: int,
    length: int = 400,
    n: int = 1,
    length_penalty: float = 1.0,
    **settings: Any,
) -> list[Scored]:
    """Beam search of `width` hypotheses; the `n` best finished ones, best first (see the module docstring).

    settings: what `model.generation` takes besides sampling (stop, regex, must_include, no_repeat_ngram,
    max_repeat, penalties, logit_bias, unknown, context); temperature, top-k/p and seed do not apply.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise _error(f"beam must be an integer >= 1 (the beam width), got {width!r}", "beam")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= width:
        raise _error(f"num-samples ({n!r}) must be between 1 and the beam width ({width})", "num_samples")
    if not isinstance(length_penalty, (int, float)) or not np.isfinite(length_penalty):
        raise _error(f"length-penalty must be a finite number, got {length_penalty!r}", "length_penalty")
    for name in ("temperature", "top_k", "top_p", "min_p", "typical_p", "seed", "num_samples", "logprobs"):
        settings.pop(name, None)
    gen = model.generation(prime, length, num_samples=1, **settings)
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
        history = _select_history(history, parents)
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
        raise _error("beam search found no text", "beam")
    finished.sort(key=lambda f: (-f[0], f[1]))
    return [Scored(text, logprob, c) for _, _, text, logprob, c in finished[:n]]


def _select_history(history: RowHistory, parents: np.ndarray) -> RowHistory:
    """The history of the surviving hypotheses, row k a copy of row `parents[k]`, with what the processors
    accumulated carried over where its form is known (the n-gram ban's index, the penalties' counts; copied
    on write, so siblings never share what either changes) and dropped otherwise (then rebuilt from the ids:
    slower, never wrong)."""
    from charlstm.generation import processors as procs

    out = RowHistory.__new__(RowHistory)
    out.__dict__.update(history.__dict__)
    out.last, out.run = history.last[parents], history.run[parents]
    if history._ids is not None:
        out._ids = history._ids[parents]
    out.memo = {}
    first = np.zeros(len(history.last), dtype=bool)
    for key, value in history.memo.items():
        if isinstance(key, procs.NoRepeatNGram) and isinstance(value, dict) and set(value) == {"seen", "done"}:
            seen, used = [], first.copy()
            for p in parents.tolist():
                row = value["seen"][p]
                if used[p]:  # a second child of the same parent: its own copy (sets included)
                    row = {k: set(v) if isinstance(v, set) else v for k, v in row.items()}
                used[p] = True
                seen.append(row)
            out.memo[key] = {"seen": seen, "done": value["done"]}
        elif isinstance(value, procs._Counts):
            counts = procs._Counts.__new__(procs._Counts)
            counts.counts, counts.done = value.counts[parents], value.done
            out.memo[key] = counts
    return out


def _reorder(ctx: StatefulContext | WindowContext, parents: np.ndarray) -> None:
    """Keep the context's rows `parents`, in that order (a beam's survivors)."""
    if isinstance(ctx, StatefulContext):
        ctx.state = [tuple(s[parents] for s in st) for st in ctx.state]
    else:
        ctx.history = ctx.history[parents]
    ctx.rows = len(parents)
