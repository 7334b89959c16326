"""The server's state and its one operation: check a request, and start its generation in the model's batcher.

Shared by the charlstm API (`/api/...`) and the OpenAI-compatible API (`/v1/...`), so both check the same way,
count against the same limit of running generations, and give the same text for the same seed as the CLI and
the Python API (all go through `generation.generate.start` with one `GenerationSettings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
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
    job: Job
    prime: str  # as the model read it (after its preprocessing)


class Service:
    """Models by name, one batcher each (its thread started on first use, or by `start()`), and the limits."""

    def __init__(self, entries: Sequence[Entry], limits: Limits) -> None:
        self.entries = {e.name: e for e in entries}
        self.tagged: dict[str, Entry] = {}  # MODEL:TAG entries, made on first use (`with_tag`)
        self.limits = limits
        self.batchers: dict[str, Batcher] = {}
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
        return sum(b.active for b in self.batchers.values())

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
    ) -> Started:
        """Check the request against the model and the limits, then start it (raises ApiError).

        Args:
            entry: the model to run.
            settings: the request's settings (checked by the request model's `settings()`).
            prime: the prime, or None for the model's default.
            fields: the request's names for settings named otherwise (`{"prime": "prompt", "length":
                "max_tokens"}`): a `CharlstmError` about one is a 422 at that name.
        """
        model = entry.model
        if prime is None:
            prime = model.default_prime(np.random.default_rng(settings.seed))
        try:
            gen = generate.start(model.network, settings, prime)
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
        job = Job(gen, asyncio.get_running_loop(), self.limits.time_limit)
        self.batcher(entry.name).submit(job)
        return Started(entry, job, shown)


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


def stops_for(entry: Entry, stop: str | list[str] | None) -> str | list[str] | None:
    """The request's stop strings; an items model's sample is one item, so by default it ends at the
    boundary symbol."""
    if entry.model.is_items and stop is None:
        return str(entry.model.meta["items"]["boundary"])
    return stop
