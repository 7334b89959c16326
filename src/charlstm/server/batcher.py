"""Cross-request batching: every generation running on a model steps through the network together.

One `Batcher` per model owns a thread that loops: take in the requests that arrived (they join between steps),
drop the cancelled and the timed-out, then `charlstm.generation.state.step(...)` over all the rest — their stateful
rows stacked into one batch, each request keeping its own rows, sampling settings, random stream and stop
strings, so its text is what it would be alone — and hand each request its new characters. Requests leave as
soon as they are finished.

A `Job` is one request as both sides see it: the batcher thread appends characters; the event loop waits on
an `asyncio.Event` that the thread sets (thread-safely) at the first character, then at most every
`FLUSH_S` seconds while characters keep coming, and at the end — so a streaming client gets text at least
every 50 ms without the event loop being woken for every character.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from charlstm.generation.model import CharModel
from charlstm.generation.state import Batch, Generation, step_logprobs

log = logging.getLogger("charlstm.server")

FLUSH_S = 0.02  # how long characters may wait in a job before the event loop is told (chunks <= ~50 ms apart)


class Job:
    """One request's generation inside a batcher, with the characters not yet taken by the client."""

    def __init__(self, gen: Generation, loop: asyncio.AbstractEventLoop, time_limit: float) -> None:
        self.gen = gen
        self.loop = loop
        self.created = time.monotonic()
        self.deadline = self.created + time_limit
        self.chars = 0  # characters generated so far, all rows together
        self.finish_reasons: list[str] | None = None  # per row, once finished: stop, length, time_limit, cancelled
        self.error: str | None = None
        self.cancelled = False
        self._lock = threading.Lock()
        self._pending: list[list[str]] = [[] for _ in range(gen.rows)]
        # when the request wants log-probabilities: per row, each generated character's id and the logits it
        # was drawn from (appended before the character is handed out), turned into entries (logprob, top
        # ids, top logprobs) many at a time when the client asks for them (`logprobs`)
        self.logprob_top: int | None = getattr(gen, "logprobs", None)
        self._raw: list[list[tuple[int, Any]]] = [[] for _ in range(gen.rows)]
        self._entries: list[list[tuple[float, list[int], list[float]]]] = [[] for _ in range(gen.rows)]
        self._wake = asyncio.Event()
        self._last_signal = 0.0

    # -- the batcher thread's side --------------------------------------------------------------------------
    def add(self, pieces: list[str], now: float) -> int:
        """Take one step's characters (one per row, "" for a finished row); returns how many there were."""
        added = 0
        gen = self.gen
        with self._lock:
            first = self.chars == 0
            for b, (row, piece) in enumerate(zip(self._pending, pieces, strict=True)):
                if piece:
                    if self.logprob_top is not None:
                        self._raw[b].append((gen.ids[b], gen.logits[b].copy()))
                    row.append(piece)
                    added += 1
            self.chars += added
        if first or now - self._last_signal >= FLUSH_S:
            self._last_signal = now
            self._signal()
        return added

    def end(self, reasons: list[str], error: str | None = None) -> None:
        with self._lock:
            self.finish_reasons = reasons
            self.error = error
        self._signal()

    def _signal(self) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed (shutting down): nobody waits
            self.loop.call_soon_threadsafe(self._wake.set)

    # -- the event loop's side ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating at the next step (the client went away, or the request was abandoned)."""
        self.cancelled = True

    async def chunks(self) -> AsyncIterator[list[str]]:
        """Each row's new text, as it comes; ends when the generation has finished."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                texts = ["".join(row) for row in self._pending]
                for row in self._pending:
                    row.clear()
                finished = self.finish_reasons is not None
            if any(texts):
                yield texts
            if finished:
                return

    def logprobs(self, row: int, start: int, stop: int) -> list[tuple[float, list[int], list[float]]]:
        """Entries (logprob, top ids, top logprobs) of the row's generated characters start..stop-1."""
        with self._lock:
            raw, self._raw[row] = self._raw[row], []
        if raw and self.logprob_top is not None:
            ids = np.array([r[0] for r in raw])
            chosen, top_ids, top_vals = step_logprobs(np.stack([r[1] for r in raw]), ids, self.logprob_top)
            self._entries[row].extend(zip(chosen, top_ids, top_vals, strict=True))
        return self._entries[row][start:stop]

    @property
    def finished(self) -> bool:
        return self.finish_reasons is not None


class Batcher:
    """Steps all the jobs of one model together, in its own thread."""

    def __init__(self, model: CharModel, name: str = "model") -> None:
        self.model = model
        self.name = name
        self._incoming: list[Job] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._running = 0  # jobs the thread holds
        self.steps = 0  # batched steps taken
        self.chars = 0  # characters generated, all jobs together
        self._thread = threading.Thread(target=self._loop, name=f"charlstm-batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Jobs waiting to join or running."""
        with self._lock:
            return len(self._incoming) + self._running

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._incoming.append(job)
        self._wake.set()
        return job

    def close(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        jobs: list[Job] = []
        batch = Batch()
        while not self._stopping:
            with self._lock:
                jobs += self._incoming
                self._incoming.clear()
                self._running = len(jobs)
            if not jobs:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            now = time.monotonic()
            for job in jobs:
                if job.cancelled:
                    job.end(["cancelled"] * job.gen.rows)
                elif now > job.deadline:
                    job.end(_reasons(job.gen, "time_limit"))
                elif job.gen.finished:  # nothing to generate (length 0: echo + max_tokens 0 scores a prompt)
                    job.end(_reasons(job.gen, "length"))
            jobs = [job for job in jobs if not job.finished]
            if not jobs:
                continue
            try:
                batch.step([job.gen for job in jobs])
            except Exception as exc:  # a bug, not bad input (requests are checked before they get here)
                log.exception("generation step failed")
                for job in jobs:
                    job.end(["error"] * job.gen.rows, error=f"{type(exc).__name__}: {exc}")
                jobs = []
                batch = Batch()
                continue
            self.steps += 1
            now = time.monotonic()
            for job in jobs:
                self.chars += job.add(job.gen.pieces, now)
                if job.gen.finished:
                    job.end(_reasons(job.gen, "length"))
            jobs = [job for job in jobs if not job.finished]
            with self._lock:  # a finished request frees its slot before its client can ask again
                self._running = len(jobs)
        for job in jobs + self._incoming:
            job.end(["cancelled"] * job.gen.rows)


def _reasons(gen: Generation, otherwise: str) -> list[str]:
    return ["stop" if s is not None else otherwise for s in gen.stopped_by]


def stats(batchers: dict[str, Batcher]) -> dict[str, Any]:
    return {
        name: {"active": b.active, "steps": b.steps, "chars": b.chars} for name, b in batchers.items()
    }
