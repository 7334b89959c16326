"""`charlstm serve`: a web playground and an HTTP API (charlstm's own and OpenAI-compatible) over the NumPy
runtime. Never imports TensorFlow or Keras, so it starts in a fraction of a second.

    from charlstm.server import create_app, load_entries, Limits
    app = create_app(load_entries(["runs/ti"]), Limits(max_length=2000))

Layout: catalog.py (what is served, read once), batcher.py (cross-request batching), service.py (checks and
starts a generation), app.py (routes, auth, errors, the page), openai_api.py (/v1), schemas.py (bodies),
limits.py, run.py (uvicorn), static/ (the page: plain HTML/CSS/JS, no CDN). Names are imported lazily, so
`charlstm.server.limits` loads without FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "load_entries", "Entry", "Limits"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from charlstm.server.app import create_app

        return create_app
    if name in ("load_entries", "Entry"):
        from charlstm.server import catalog

        return getattr(catalog, name)
    if name == "Limits":
        from charlstm.server.limits import Limits

        return Limits
    raise AttributeError(f"module 'charlstm.server' has no attribute {name!r}")
