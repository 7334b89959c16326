"""`charlstm serve`: the web playground and HTTP API (no Keras: the server runs on the NumPy runtime)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from charlstm.errors import CharlstmError


def add_parsers(sub: Any) -> None:
    from charlstm.server.limits import Limits

    d = Limits()
    s = sub.add_parser(
        "serve", help="web playground + HTTP API (charlstm's and OpenAI-compatible) for models (no TensorFlow)"
    )
    s.add_argument("models", nargs="+", metavar="MODEL_OR_RUN_DIR", help=".keras files or run directories")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--token",
        default=os.environ.get("CHARLSTM_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on every API call (default: $CHARLSTM_TOKEN); "
        "needed off loopback unless --no-auth",
    )
    s.add_argument("--no-auth", action="store_true", help="serve off loopback without a token, to anyone")
    s.add_argument("--max-length", type=int, default=d.max_length, help=f"characters per sample ({d.max_length})")
    s.add_argument("--max-samples", type=int, default=d.max_samples, help=f"samples per request ({d.max_samples})")
    s.add_argument("--max-prime", type=int, default=d.max_prime, help=f"characters of prime ({d.max_prime})")
    s.add_argument("--max-body", type=int, default=d.max_body, help=f"request body bytes ({d.max_body})")
    s.add_argument(
        "--max-streams", type=int, default=d.max_streams,
        help=f"generations running at once; more get 429 + Retry-After ({d.max_streams})",
    )
    s.add_argument("--time-limit", type=float, default=d.time_limit, help=f"seconds per request ({d.time_limit:g})")
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from charlstm.server.limits import Limits
    from charlstm.server.run import serve

    limits = Limits(
        max_length=args.max_length, max_samples=args.max_samples, max_prime=args.max_prime,
        max_body=args.max_body, max_streams=args.max_streams, time_limit=args.time_limit,
    )
    for name in ("max_length", "max_samples", "max_prime", "max_body", "max_streams", "time_limit"):
        if getattr(limits, name) <= 0:
            raise CharlstmError(f"--{name.replace('_', '-')} must be > 0, got {getattr(limits, name)}")
    serve(args.models, args.host, args.port, args.token, args.no_auth, limits, access_log=args.access_log)
    return 0
