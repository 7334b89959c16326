"""The server's state and its one operation: check a request, and start its generation in the model's batcher.

Shared by the charlstm API (`/api/...`) and the OpenAI-compatible API (`/v1/...`), so both check the same way,
count against the same limit of running generations, and give the same text for the same seed as the CLI and
the Python API (all go through `generation.generate.start` with one `GenerationSettings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError, UnknownCharacters
from charlstm.generation import generate
from charlstm.generation.settings import GenerationSettings
from charlstm.server.batcher import Batcher, Job
from charlstm.server.catalog import Entry
from charlstm.server.limits import Limits


class ApiError(Exception):
    """An error a client can act on: status, message, and the request field it is about (if any).

    Answered as `{"detail": [{"loc": ["body", field], "msg": ..., "type": ...}], "error": {...}}`: FastAPI's
    validation-error shape, plus OpenAI's error object so that OpenAI clients show the message.
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.headers = status, message, param, kind, headers

    def body(self) -> dict[str, Any]:
        loc = ["body", self.param] if self.param else ["request"]
        return {
            "detail": [{"loc": loc, "msg": self.message, "type": self.kind}],
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": None},
        }


def dumps(value: Any) -> str:
    """JSON for the wire: real UTF-8 characters (not \\u escapes), one line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Started:
    """A generation that has been checked and handed to its batcher."""

    entry: Entry
    job: Job | SearchJob
    prime: str  # as the model read it (after its preprocessing)
    keep: int | None = None  # best-of: the job draws more rows than this; the likeliest `keep` are returned

    def best(self, texts: list[str]) -> list[int]:
        """The rows to return, in order: all of them, or (best-of) the `keep` likeliest per character by the
        model's own log-probabilities, as `generation.search.best_of` ranks them (ties: the earlier row)."""
        if self.keep is None:
            return list(range(len(texts)))
        job = self.job
        assert isinstance(job, Job)
        per = [
            (sum(e[0] for e in job.logprobs(b, 0, len(t))) / len(t)) if t else float("-inf")
            for b, t in enumerate(texts)
        ]
        order = sorted(range(len(texts)), key=lambda b: (-per[b], b))
        return order[: self.keep]


class SearchJob:
    """A beam search: run whole in a worker thread (its rows are its hypotheses, stepped together but not
    with other requests'), its texts handed out at the end as one chunk. It answers what the endpoints ask of
    a `Job` (rows, chunks, finish reasons, stops, chars)."""

    def __init__(self, run: Any, rows: int, stops: Sequence[str], on_end: Any) -> None:
        self.run, self.stops, self.on_end = run, [s for s in stops if s], on_end
        self.gen = SimpleNamespace(rows=rows, stopped_by=[None] * rows)
        self.created = time.monotonic()
        self.chars = 0
        self.finish_reasons: list[str] | None = None
        self.error: str | None = None
        self.cancelled = False
        self.logprob_top = None

    def cancel(self) -> None:
        self.cancelled = True  # a search is short (width <= 16, length <= the server's limit): it runs out

    @property
    def finished(self) -> bool:
        return self.finish_reasons is not None

    def logprobs(self, row: int, start: int, stop: int) -> list[Any]:
        return []

    async def chunks(self) -> AsyncIterator[list[str]]:
        try:
            found = await asyncio.to_thread(self.run)
        except Exception as exc:  # a bug, not bad input (checked before it started)
            self.error = f"{type(exc).__name__}: {exc}"
            self.finish_reasons = ["error"] * self.gen.rows
            return
        finally:
            self.on_end()
        texts = [f.text for f in found]
        texts += [""] * (self.gen.rows - len(texts))
        self.gen.stopped_by = [next((s for s in self.stops if t.endswith(s)), None) for t in texts]
        self.finish_reasons = ["stop" if s is not None else "length" for s in self.gen.stopped_by]
        self.chars = sum(len(t) for t in texts)
        yield texts


class Service:
    """Models by name, one batcher each (its thread started on first use, or by `start()`), and the limits."""

    def __init__(self, entries: Sequence[Entry], limits: Limits) -> None:
        self.entries = {e.name: e for e in entries}
        self.tagged: dict[str, Entry] = {}  # MODEL:TAG entries, made on first use (`with_tag`)
        self.limits = limits
        self.batchers: dict[str, Batcher] = {}
        self.searches = 0  # beam searches running (each in a worker thread)
        self._blas: Any = None  # threadpoolctl's limit while the service runs (see `start`)

    def start(self) -> None:
        """Start every model's batcher, with BLAS pinned to one thread for as long as the service runs.

        threadpoolctl's limits are process-wide: batchers of several models entering and leaving their own
        one-thread limits at once could leave a prime being read on two threads, which rounds differently,
        so a request's text would depend on what ran on another model. Pinned, every limit is 1 and stays so.
        """
        if self._blas is None:
            from threadpoolctl import threadpool_limits

            self._blas = threadpool_limits(limits=1, user_api="blas")
        for name in self.entries:
            self.batcher(name)

    def batcher(self, name: str) -> Batcher:
        if name not in self.batchers:
            entry = self.entries.get(name) or self.tagged[name]
            self.batchers[name] = Batcher(entry.model, name)
        return self.batchers[name]

    def close(self) -> None:
        for batcher in self.batchers.values():
            batcher.close()
        self.batchers.clear()
        if self._blas is not None:
            self._blas.restore_original_limits()
            self._blas = None

    def active(self) -> int:
        return sum(b.active for b in self.batchers.values()) + self.searches

    def entry(self, name: str | None, status: int = 422) -> Entry:
        if name is None:
            return next(iter(self.entries.values()))
        entry = self.entries.get(name) or self._tag_entry(name)
        if entry is None:
            known = ", ".join(self.entries)
            raise ApiError(status, f"no model named {name!r}; this server has: {known}", "model",
                           "invalid_request_error" if status == 422 else "not_found_error")
        return entry

    def _tag_entry(self, name: str) -> Entry | None:
        """A tagged model's tag served as its own model, `MODEL:TAG` (None if `name` is no such thing)."""
        base, sep, tag = name.rpartition(":")
        entry = self.entries.get(base) if sep else None
        if entry is None or tag not in entry.model.tags:
            return None
        return self.with_tag(entry, tag)

    def with_tag(self, entry: Entry, tag: str | None) -> Entry:
        """`entry` generating in `tag` (None: as it is): an entry of its own, `MODEL:TAG`, with its own
        batcher (rows stepped together share one network, and a tag is a network view: generation/tags.py).
        An unknown tag is a 422 naming the tags the model knows."""
        if tag is None:
            return entry
        name = f"{entry.name}:{tag}"
        if name not in self.tagged:
            try:
                model = entry.model.with_tag(tag)
            except CharlstmError as exc:
                raise api_error(exc, {"tag": "tag"}) from None
            self.tagged[name] = replace(entry, name=name, model=model)
        return self.tagged[name]

    def model_ids(self) -> list[str]:
        """Every served model's name, and a tagged model's `MODEL:TAG` for each of its tags."""
        return [n for name, e in self.entries.items() for n in (name, *(f"{name}:{t}" for t in e.model.tags))]

    def generate(
        self,
        entry: Entry,
        settings: GenerationSettings,
        prime: str | None,
        fields: Mapping[str, str] | None = None,
        stop_mode: str = "included",
    ) -> Started:
        """Check the request against the model and the limits, then start it (raises ApiError).

        Args:
            entry: the model to run.
            settings: the request's settings (checked by the request model's `settings()`).
            prime: the prime, or None for the model's default.
            fields: the request's names for settings named otherwise (`{"prime": "prompt", "length":
                "max_tokens"}`): a `CharlstmError` about one is a 422 at that name.
            stop_mode: how a pattern meets the stop strings (`generate.constraint_of`): "included" (the
                text sent back keeps its stop), "excluded" (OpenAI's, which strips it), "required" (items).

        Best-of (more drawn than returned) runs as one job of `best_of` rows, batched with the others, and
        `Started.best` picks the rows to return; beam search runs in a worker thread (`SearchJob`).
        """
        model = entry.model
        if prime is None:
            prime = model.default_prime(np.random.default_rng(settings.seed))
        keep = None
        run = settings
        if settings.beam is None and (settings.best_of or 0) > settings.num_samples:
            keep = settings.num_samples  # rank by the chosen characters' log-probabilities: record them
            run = settings.replace(num_samples=settings.best_of, best_of=None,
                                   logprobs=settings.logprobs if settings.logprobs is not None else 0)
        elif settings.beam is not None:
            run = settings.replace(num_samples=1, beam=None)  # checked here, searched in a thread
        try:
            gen = generate.start(model.network, run, prime, stop_mode=stop_mode)
            shown = model.prepare(prime)
        except CharlstmError as exc:
            raise api_error(exc, {"prime": "prime", **(fields or {})}) from None
        except UnicodeError:  # e.g. a lone surrogate, which JSON can carry but no text can hold
            field = (fields or {}).get("prime", "prime")
            raise ApiError(422, "the prime is not valid Unicode text (a lone surrogate?)", field) from None
        if self.active() >= self.limits.max_streams:
            raise ApiError(
                429,
                f"the server is running its maximum of {self.limits.max_streams} generations; retry shortly",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            )
        if settings.beam is not None:
            self.searches += 1

            def search() -> Any:
                return generate.search(model.network, settings, prime, stop_mode=stop_mode)

            def done() -> None:
                self.searches -= 1

            return Started(entry, SearchJob(search, settings.num_samples, settings.stop, done), shown)
        job = Job(gen, asyncio.get_running_loop(), self.limits.time_limit)
        self.batcher(entry.name).submit(job)
        return Started(entry, job, shown, keep)


def api_error(exc: CharlstmError, fields: Mapping[str, str]) -> ApiError:
    """A 422 for a `CharlstmError`, at the request field it concerns: its `field`, under the request's own
    name for it (`fields`); an error about no field in particular is about the text sent (`fields["prime"]`).
    Unknown characters get the API's way on (`"unknown": "skip"`) instead of the CLI's flag."""
    message = str(exc)
    if isinstance(exc, UnknownCharacters):
        message = f'{exc.summary}; send "unknown": "skip" (or "replace") to go on'
    field = exc.field or "prime"
    return ApiError(422, message, fields.get(field, field))


@contextlib.contextmanager
def request_errors(fields: Mapping[str, str] | None = None) -> Iterator[None]:
    """Inside `with`: a `CharlstmError` (building a request's settings, say) becomes its 422 (`api_error`)."""
    try:
        yield
    except CharlstmError as exc:
        raise api_error(exc, {"prime": "prime", **(fields or {})}) from None


def stop_mode_for(entry: Entry, default: str = "included") -> str:
    """An items model's pattern applies to each item, which must end at its boundary ("required")."""
    return "required" if entry.model.is_items else default


def stops_for(entry: Entry, stop: str | list[str] | None) -> str | list[str] | None:
    """The request's stop strings; an items model's sample is one item, so by default it ends at the
    boundary symbol."""
    if entry.model.is_items and stop is None:
        return str(entry.model.meta["items"]["boundary"])
    return stop
