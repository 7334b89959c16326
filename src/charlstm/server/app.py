"""The FastAPI app: the page at `/`, the charlstm API under `/api`, the OpenAI-compatible API under `/v1`.

    app = create_app(load_entries(["runs/ti"]), Limits(), token=None)

Every API route checks the bearer token when the server has one (constant-time compare). Models load before
the app is made; each gets a batcher thread while the app runs (its lifespan), so concurrent requests on a
model step together. The page's three files are read from the package once, when the app is made.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time
import asyncio
import dataclasses
import hmac
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, format_sse_event

from charlstm.generation.generate import searching
from charlstm.server.batcher import stats
from charlstm.server.catalog import Entry
from charlstm.server.limits import Limits
from charlstm.server.openai_api import openai_router
from charlstm.server.schemas import GenerateResponse, Health, ModelInfo, RunResponse, make_schemas
from charlstm.server.service import (
    ApiError,
    Service,
    Started,
    dumps,
    request_errors,
    stop_mode_for,
    stops_for,
)
from charlstm.server.writing import writing_router

STATIC = {"app.js": "text/javascript", "write.js": "text/javascript", "style.css": "text/css"}


class _AsciiJSON(JSONResponse):
    """JSON with \\u escapes: error bodies may echo input that is not valid UTF-8 text (lone surrogates)."""

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")



def _version() -> str:
    """The installed package's version (read from its metadata: the server does not import charlstm's top
    level, which would reach the training layer)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charlstm")
    except PackageNotFoundError:
        return "unknown"

def _page_files() -> dict[str, bytes]:
    folder = resources.files("charlstm.server") / "static"
    return {name: (folder / name).read_bytes() for name in ("index.html", *STATIC)}


def create_app(entries: Sequence[Entry], limits: Limits | None = None, token: str | None = None) -> FastAPI:
    """The app for these models. `token`: require `Authorization: Bearer <token>` on every API call."""
    limits = limits or Limits()
    service = Service(entries, limits)
    schemas = make_schemas(limits)
    GenerateRequest = schemas.GenerateRequest
    page = _page_files()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="charlstm",
        version=_version(),
        description=(
            "Character-level LSTM text generation. `/api/...`: charlstm's own API; `/v1/...`: OpenAI-compatible "
            "completions (one token = one character). Concurrent generations on a model are stepped together."
        ),
        lifespan=lifespan,
        max_body_size=limits.max_body,
    )
    app.state.service = service

    # -- errors: one shape, naming the field ---------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _AsciiJSON(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors(), custom_encoder={bytes: lambda b: b.decode("latin-1")})
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", [])]
        field = ".".join(loc[1:]) if len(loc) > 1 else (loc[0] if loc else None)
        return _AsciiJSON(
            {
                "detail": errors,
                "error": {
                    "message": f"{field}: {first.get('msg')}" if field else str(first.get("msg")),
                    "type": "invalid_request_error",
                    "param": field,
                    "code": None,
                },
            },
            status_code=422,
        )

    # -- auth ---------------------------------------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description="the token given to `charlstm serve --token`")

    async def check_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8")):
            raise ApiError(
                401,
                "this server needs a token: send the header `Authorization: Bearer <token>`",
                kind="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # -- the page -----------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(page[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", response_model=Health, tags=["charlstm"], summary="Alive, and what is running")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": stats(service.batchers), "limits": dataclasses.asdict(limits)}

    # -- the charlstm API ---------------------------------------------------------------------------------
    api = APIRouter(prefix="/api", tags=["charlstm"], dependencies=[Depends(check_token)])

    @api.get("/models", response_model=list[ModelInfo], summary="The served models")
    async def list_models() -> list[dict[str, Any]]:
        return [entry.info() for entry in service.entries.values()]

    @api.get("/runs/{name}", response_model=RunResponse, summary="A run's metrics and per-epoch samples")
    async def run(name: str) -> dict[str, Any]:
        entry = service.entries.get(name)
        if entry is None or not entry.is_run:
            runs = ", ".join(e.name for e in service.entries.values() if e.is_run) or "none"
            raise ApiError(404, f"no run named {name!r}; runs served: {runs}", "name", "not_found_error")
        return {"name": name, "metrics": entry.metrics, "samples": entry.samples}

    @api.get(
        "/models/{name}/web.zip",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "the folder of `charlstm export --web`"}},
        summary="The model as a web page that generates in the browser, no server (a zip of one folder)",
    )
    async def web_export(name: str) -> Response:
        from urllib.parse import quote

        from charlstm.export.web import web_zip

        entry = service.entry(name, status=404)
        data = await asyncio.to_thread(web_zip, entry.model, name)
        disposition = f"attachment; filename*=UTF-8''{quote(name + '-web.zip')}"
        return Response(data, media_type="application/zip", headers={"Content-Disposition": disposition})

    async def start(request: Request, req: GenerateRequest) -> AsyncIterator[Started]:  # type: ignore[valid-type]
        """Check the request and start its generation; when the response ends (or the client leaves), stop it."""
        entry = service.with_tag(service.entry(req.model), req.tag)
        with request_errors():
            settings = req.settings(length=req.length, seed=req.seed, num_samples=req.num_samples,
                                    stop=stops_for(entry, req.stop))
        if searching(settings) and request.url.path.endswith("/stream"):
            field = "beam" if settings.beam is not None else "best_of"
            raise ApiError(422, f"{field} ranks whole texts, so it is not streamed: use POST /api/generate", field)
        started = service.generate(entry, settings, req.prime, stop_mode=stop_mode_for(entry))
        try:
            yield started
        finally:
            started.job.cancel()

    Start = Annotated[Started, Depends(start)]

    def totals(
        s: Started, texts: list[str] | None = None, copies: list[Any] | None = None,
        rows: list[int] | None = None,
    ) -> dict[str, Any]:
        job = s.job
        out: dict[str, Any] = {"model": s.entry.name, "prime": s.prime}
        if texts is not None:
            out |= {"text": texts[0], "texts": texts}
        reasons = job.finish_reasons or []
        out |= {
            "chars": job.chars,
            "seconds": round(time.monotonic() - job.created, 4),
            "finish_reasons": [reasons[b] for b in rows] if rows is not None and reasons else reasons,
        }
        if copies is not None:
            out["copies"] = copies
        if s.entry.model.is_items and texts is not None:
            from charlstm.generation.items import mark_samples

            out["items"] = mark_samples(s.entry.model.network, texts)
        return out

    async def copy_check(s: Started, texts: list[str]) -> list[Any] | None:
        """Per sample, the copy report against the training text (None when the server does not know it)."""
        check = s.entry.copies
        if check is None:
            return None
        return await asyncio.to_thread(lambda: [check(t).to_json() for t in texts])

    @api.post("/generate", response_model=GenerateResponse, summary="Generate text (the whole of it at once)")
    async def generate(started: Start) -> dict[str, Any]:
        texts = [""] * started.job.gen.rows
        async for chunk in started.job.chunks():
            texts = [a + b for a, b in zip(texts, chunk, strict=True)]
        if started.job.error:
            raise ApiError(500, f"generation failed: {started.job.error}", kind="server_error")
        rows = started.best(texts)  # best-of: the likeliest; otherwise every row
        texts = [texts[b] for b in rows]
        return totals(started, texts, await copy_check(started, texts), rows)

    @api.post(
        "/stream",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
        summary="Generate text as Server-Sent Events",
        description=(
            "Events: `start` {model, prime, num_samples}; `text` {texts: one string per sample, the new "
            "characters since the last event, at least every 50 ms}; `done` {chars, seconds, finish_reasons, and "
            "copies: per sample the copy check against the training text, when the server knows it}. "
            "A client that disconnects stops its generation."
        ),
    )
    async def stream(started: Start) -> EventSourceResponse:
        # The events are formatted here and streamed as they are, rather than yielded to FastAPI's SSE
        # machinery, whose keep-alive timer puts two tasks and two memory streams between the generator and
        # the socket for every event: with 32 streaming clients that cost the event loop more than the
        # formatting (profiled), and it shares one core with the batcher. Text comes at least every 50 ms,
        # so no keep-alive comments are needed.
        job = started.job

        async def events() -> AsyncIterator[bytes]:
            try:
                start = {"model": started.entry.name, "prime": started.prime, "num_samples": job.gen.rows}
                yield format_sse_event(event="start", data_str=dumps(start))
                keep = started.entry.copies is not None or started.entry.model.is_items
                whole = [""] * job.gen.rows if keep else None
                async for texts in job.chunks():
                    yield format_sse_event(event="text", data_str=dumps({"texts": texts}))
                    if whole is not None:
                        whole = [a + b for a, b in zip(whole, texts, strict=True)]
                if job.error:
                    yield format_sse_event(event="error", data_str=dumps({"message": job.error}))
                copies = await copy_check(started, whole) if whole is not None and not job.error else None
                done = totals(started, copies=copies)
                if started.entry.model.is_items and whole is not None:
                    from charlstm.generation.items import mark_samples

                    done["items"] = mark_samples(started.entry.model.network, whole)
                yield format_sse_event(event="done", data_str=dumps(done))
            finally:  # the client went away (or we are done): stop generating at once
                job.cancel()

        return EventSourceResponse(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    app.include_router(api)
    app.include_router(writing_router(service, schemas, check_token))
    app.include_router(openai_router(service, schemas.CompletionRequest, check_token))
    return app
