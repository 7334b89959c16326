"""The server's limits (a plain dataclass, so the CLI can show its defaults without importing FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many may run at once. All configurable on `charlstm serve`."""

    max_length: int = 10_000  # characters per sample (`length`, `max_tokens`)
    max_samples: int = 16  # `num_samples`, `n`
    max_prime: int = 4_000  # characters of prime / prompt
    max_body: int = 64 * 1024  # bytes of request body
    max_streams: int = 64  # generations running at once, all models together; more get 429
    time_limit: float = 60.0  # seconds per request; then it ends with finish reason "time_limit"
    max_stops: int = 4  # stop strings per request
    max_stop_chars: int = 64  # characters per stop string
    max_score_chars: int = 60_000  # characters of text per `POST /api/score` (within max_body bytes)
