"""One request's generation, and the step that advances any number of them together.

`Network` (network.py) holds the weights and the one-time-step function; everything that belongs to one
request lives here, in a `Generation`: its rows (samples), how the context is kept (a strategy object), its
`GenerationSettings`, its own random stream, stop strings, which rows are done, and the logit processors that
may constrain each row's next character (generate.start builds one). `step(generations)` moves every given generation on by one
character; the CLI's stream and `num_samples` call it with one generation, and the server's batcher keeps a
`Batch` that steps all the requests running on a model at that moment, their stateful rows through the network
as one batch.

A generation's text depends only on its own settings and seed, never on what it is stepped with: each draws its
uniforms from its own sequential stream (one per step per row, in order, whatever the chunk size), samples its
own rows, and rows are independent in every computation of the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from charlstm.generation.constraints import Constraint
from charlstm.generation.network import Network, State
from charlstm.generation.processors import LogitProcessor, RowHistory
from charlstm.generation.sampling import Sampling, log_softmax, top_entries
from charlstm.generation.settings import GenerationSettings

__all__ = ["Batch", "Generation", "Sampling", "StatefulContext", "WindowContext", "step", "step_logprobs"]


# -- how the context is kept: two strategies with the same three methods ---------------------------------------


class StatefulContext:
    """Read the prime once, then one step of every layer per character (the default). Rows of different
    generations step through the network together (`step` stacks their states)."""

    batchable = True

    def __init__(self, network: Network, prime_ids: np.ndarray, rows: int) -> None:
        self.network, self.prime_ids, self.rows = network, prime_ids, rows
        self.state: State = []

    def start(self) -> np.ndarray:
        """Read the prime (once, for all rows: they share it) and return the first logits (rows, V)."""
        net = self.network
        logits, state = net.forward(self.prime_ids[None, :])  # (1, P, V), on one BLAS thread (see `forward`)
        logits = np.repeat(logits[:, -1] - net.dense_bias + net.sampling_bias, self.rows, axis=0)  # (rows, V)
        self.state = [tuple(np.repeat(s, self.rows, axis=0) for s in st) for st in state]  # (rows, u) each
        return logits

    def advance(self, ids: np.ndarray) -> np.ndarray:
        logits, self.state = self.network.step(ids, self.state)
        return logits


class WindowContext:
    """Re-read the last `window` characters from a zero state for every character: the lesson's way, kept for
    faithful comparison with classic models (many times the work of `StatefulContext`)."""

    batchable = False

    def __init__(self, network: Network, prime_ids: np.ndarray, rows: int, window: int) -> None:
        self.network, self.prime_ids, self.rows, self.window = network, prime_ids, rows, window
        self.history = np.empty((rows, 0), np.int64)

    def start(self) -> np.ndarray:
        self.history = np.repeat(self.prime_ids[None, :], self.rows, axis=0)
        return self._logits()

    def advance(self, ids: np.ndarray) -> np.ndarray:
        self.history = np.concatenate([self.history, ids[:, None]], axis=1)[:, -self.window :]
        return self._logits()

    def _logits(self) -> np.ndarray:
        net = self.network
        with net.blas_for(self.rows):
            last = net.forward(self.history[:, -self.window :])[0][:, -1]  # (rows, V)
            return last - net.dense_bias + net.sampling_bias


# -- one request ---------------------------------------------------------------------------------------------


class Generation:
    """One request: `rows` samples from one prime, with their sampling settings, random stream and stops.

    Build it with `generate.start(network, settings, prime)` (or `CharModel.generation(...)`), which
    encodes the prime against the model. Then call `step([gen, ...])` until `gen.finished`; after each step
    `gen.pieces` holds each row's new character ("" for a row that has already met a stop string).

    Args:
        context: how the context is kept (`StatefulContext` or `WindowContext`), holding the prime's ids.
        settings: the request's settings (length, sampling, seed, stops, logprobs are read here).
        chars: id -> character as generated (`Network.chars`).
        processors: the logit processors, in the order they apply (generate.processors_for).
        constraint: a pattern every row's text must match (constraints.py): a mask applied after the
            processors, with each row's automaton state kept here; a row also ends where its text is a
            whole match that cannot go on.
    """

    def __init__(
        self,
        context: StatefulContext | WindowContext,
        settings: GenerationSettings,
        *,
        chars: Sequence[str],
        processors: Sequence[LogitProcessor | Callable[[np.ndarray, RowHistory], np.ndarray]] = (),
        constraint: Constraint | None = None,
    ) -> None:
        self.context = context
        self.settings = settings
        self.rows = context.rows
        self.chars = chars
        self.length = length = settings.length
        self.sampling = settings.sampling
        self.rng = np.random.default_rng(settings.seed)
        self.stops = tuple(s for s in settings.stop if s)
        self.processors = list(processors)
        keep_ids = any(getattr(p, "needs_ids", False) for p in self.processors)
        self.history = RowHistory(context.prime_ids, self.rows, keep_ids) if self.processors else None
        # logprobs = N: whoever steps this generation wants each chosen character's log-probability and the N
        # likeliest characters' (the server's Job reads them from `logits` and `ids` after each step, and
        # computes them many steps at a time; see `step_logprobs`); None: not wanted
        self.logprobs = settings.logprobs
        self.steps = 0  # characters chosen so far, per row
        self.done = [False] * self.rows  # rows that met a stop string
        self.stopped_by: list[str | None] = [None] * self.rows  # which stop string ended each row
        self.pieces: list[str] = []  # each row's character from the last step ("" once the row is done)
        self.logits: np.ndarray | None = None  # scores for every row's next character, once computed
        self.ids: np.ndarray | None = None  # the ids chosen at the last step
        self._tails = [""] * self.rows
        self._tail_len = max((len(s) for s in self.stops), default=0)
        # uniforms come from one sequential stream, so the chunk size never changes the text; bound it so that
        # a short or wide request does not draw 4096 x rows numbers (655 MB for 20k samples)
        self._chunk = max(1, min(4096, length, (1 << 20) // self.rows))
        self._uniforms = np.empty((0, self.rows))
        self.constraint = constraint.begin(self.rows, length) if constraint is not None else None
        if self.constraint is not None and self.constraint.complete.all():  # the pattern matches "" only
            self.done = [True] * self.rows

    @property
    def constrained(self) -> bool:
        """Has processors or a constraint: sampled on its own, not stacked with others' logits."""
        return bool(self.processors) or self.constraint is not None

    @property
    def finished(self) -> bool:
        return self.steps >= self.length or all(self.done)

    def processed_logits(self) -> np.ndarray:
        """This step's logits (rows, V) after the processors and the constraint's mask: what the sampling
        settings draw from."""
        logits = self.logits
        assert logits is not None
        if self.processors:
            for processor in self.processors:
                logits = processor(logits, self.history)
        if self.constraint is not None:
            logits = self.constraint.mask(logits, fallback=self.logits)
        return logits

    def _uniforms_now(self) -> np.ndarray:
        at = self.steps % self._chunk
        if at == 0:
            self._uniforms = self.rng.random((self._chunk, self.rows))
        return self._uniforms[at]

    def _record(self, ids: np.ndarray) -> None:
        """Take the chosen ids: history, pieces, stop strings."""
        self.ids = ids
        self.steps += 1
        if self.history is not None:
            self.history.update(ids)
        if self.constraint is not None:
            self._record_constrained(ids)
        elif self.stops:
            self._take_chars(ids)
        else:
            self.pieces = [self.chars[i] for i in ids.tolist()]

    def _take_chars(self, ids: np.ndarray) -> None:
        """Each row's new character ("" for a row already done), ending a row whose text now ends in a stop."""
        pieces = []
        for b, i in enumerate(ids.tolist()):
            if self.done[b]:
                pieces.append("")
                continue
            ch = self.chars[i]
            pieces.append(ch)
            if self.stops:
                tail = (self._tails[b] + ch)[-self._tail_len :]
                self._tails[b] = tail
                for s in self.stops:
                    if tail.endswith(s):
                        self.done[b], self.stopped_by[b] = True, s
                        break
        self.pieces = pieces

    def _record_constrained(self, ids: np.ndarray) -> None:
        """As `_record`, for a constrained generation: a row also ends where its text is a whole match that
        cannot go on (the automaton's dead end, e.g. "no" of "yes|no"), and ended rows keep their state."""
        cs = self.constraint
        assert cs is not None
        cs.advance(ids, keep=cs.frozen)  # rows that ended (frozen) keep their state
        self._take_chars(ids)
        complete = cs.complete
        if complete.any() or self.stops:
            for b in np.flatnonzero(complete).tolist():
                self.done[b] = True
            cs.frozen = np.array(self.done)


class Batch:
    """Generations stepped together, over many steps: what the server's batcher holds.

    The network state of its stateful generations stays stacked in one array per layer from one step to the
    next, as long as the same generations are stepped; when one joins or leaves, each gets its rows back (as
    views) and the rest are stacked again. A generation belongs to one Batch at a time; `release()` hands
    every generation its own state back. `step(generations)` is a Batch used once.
    """

    def __init__(self) -> None:
        self._members: list[Generation] = []  # the stacked generations, in row order
        self._state: list[tuple[np.ndarray, ...]] = []
        self._bounds: list[tuple[int, int]] = []
        self._logits: np.ndarray | None = None

    def step(self, generations: Sequence[Generation]) -> None:
        """Advance every generation by one character per row (finished ones must have been taken out).

        A generation that has not started reads its prime; the others take one step of the network for the
        characters they chose last, the stateful ones as one batch. Then each chooses its next characters;
        generations with the same sampling settings and no processors are sampled in one call.
        """
        self._logits = None
        if len(generations) == 1 and self._members:  # stepped alone from now on: it needs its own state
            self.release()
        stacked: list[Generation] = []
        for gen in generations:
            if gen.logits is None:
                gen.logits = gen.context.start()
            elif gen.context.batchable and len(generations) > 1:
                stacked.append(gen)
            else:
                gen.logits = gen.context.advance(gen.ids)
        if stacked:
            self._advance(stacked)
        if len(generations) == 1:
            gen = generations[0]
            gen._record(gen.sampling.sample(gen.processed_logits(), gen._uniforms_now()))
            return
        groups: dict[Sampling, list[Generation]] = {}
        for gen in generations:
            if gen.constrained:
                gen._record(gen.sampling.sample(gen.processed_logits(), gen._uniforms_now()))
            else:
                groups.setdefault(gen.sampling, []).append(gen)
        for s, group in groups.items():
            if len(group) == 1:
                gen = group[0]
                gen._record(s.sample(gen.logits, gen._uniforms_now()))
                continue
            # the stacked logits as they are when the group is exactly the stacked generations (the usual case)
            same = self._logits is not None and _same(group, self._members)
            logits = self._logits if same else np.concatenate([g.logits for g in group])
            uniforms = np.concatenate([g._uniforms_now() for g in group])
            ids = s.sample(logits, uniforms)
            at = 0
            for g in group:
                g._record(ids[at : at + g.rows])
                at += g.rows

    def _advance(self, generations: list[Generation]) -> None:
        """One network step for the rows of several stateful generations of one model, as one batch."""
        if not _same(generations, self._members):
            self._restack(generations)
        ids = np.concatenate([g.ids for g in generations])
        logits, self._state = generations[0].context.network.step(ids, self._state)  # (rows, V)
        self._logits = logits
        for gen, (a, b) in zip(generations, self._bounds, strict=True):
            gen.logits = logits[a:b]

    def _restack(self, generations: list[Generation]) -> None:
        network = generations[0].context.network
        if any(g.context.network is not network for g in generations):
            raise ValueError("generations stepped together must use the same model")
        self.release()
        contexts = [g.context for g in generations]
        self._state = [
            tuple(np.concatenate([c.state[n][k] for c in contexts]) for k in range(len(contexts[0].state[n])))
            for n in range(len(contexts[0].state))
        ]
        self._members = list(generations)
        ends = np.cumsum([g.rows for g in generations]).tolist()
        self._bounds = list(zip([0, *ends[:-1]], ends, strict=True))

    def release(self) -> None:
        """Give every stacked generation its own rows of the state back (views), and forget them."""
        for gen, (a, b) in zip(self._members, self._bounds, strict=True):
            gen.context.state = [tuple(s[a:b] for s in st) for st in self._state]
        self._members, self._state, self._bounds, self._logits = [], [], [], None


def step_logprobs(
    logits: np.ndarray, ids: np.ndarray, top: int
) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """Log-probabilities of the chosen `ids` (T,) under `logits` (T, V) -- the model's distribution before
    processors and sampling transforms, as OpenAI and vLLM report it -- and the `top` likeliest ids with
    theirs, likeliest first: computed for many steps in one call, so asking for them costs little per step."""
    logp = log_softmax(logits)
    chosen = np.take_along_axis(logp, np.asarray(ids)[:, None], axis=-1)[:, 0].tolist()
    if not top:
        return chosen, [[] for _ in chosen], [[] for _ in chosen]
    top_ids, top_vals = top_entries(logp, top)
    return chosen, top_ids.tolist(), top_vals.tolist()


def _same(a: Sequence[Generation], b: Sequence[Generation]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def step(generations: Sequence[Generation]) -> None:
    """Advance every generation by one character per row, as one `Batch` step (see `Batch.step`)."""
    batch = Batch()
    batch.step(generations)
    batch.release()
