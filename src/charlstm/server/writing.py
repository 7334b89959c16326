"""Writing with a model: `POST /api/next` (the likeliest next characters), `POST /api/score` (every
character's log-probability) and `GET /api/models/{name}/vocabulary` (the token ids `logit_bias` takes).

Both computations read the text once through the network, so they run in a worker thread: the event loop
keeps serving (and streaming) while a long text is scored. They touch no generation's state, so they never
change what a running generation produces.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from charlstm.errors import CharlstmError
from charlstm.generation import scoring
from charlstm.server.schemas import NextResponse, ScoreResponse, VocabularyResponse
from charlstm.server.service import ApiError, Service, api_error, request_errors


def writing_router(service: Service, schemas: SimpleNamespace, check_token: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["charlstm"], dependencies=[Depends(check_token)])
    NextRequest, ScoreRequest = schemas.NextRequest, schemas.ScoreRequest

    @router.get(
        "/models/{name}/vocabulary",
        response_model=VocabularyResponse,
        summary="The model's vocabulary: token id i is tokens[i] (the ids `logit_bias` is keyed by)",
    )
    async def vocabulary(name: str) -> dict[str, Any]:
        entry = service.entry(name, status=404)
        vocab = entry.model.vocab
        return {"model": entry.name, "tokens": list(entry.model.chars[: vocab.size]),
                "unknown_id": vocab.unknown_id}

    @router.post(
        "/next",
        response_model=NextResponse,
        summary="The likeliest next characters after a prefix, with the probabilities generation would use",
    )
    async def next_chars(req: NextRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        entry = service.entry(req.model)
        model = entry.model
        with request_errors({"prime": "prefix"}):
            settings = req.settings()
        try:
            top = await run_in_threadpool(scoring.next_chars, model.network, req.prefix, req.k, settings)
        except CharlstmError as exc:
            raise api_error(exc, {"prime": "prefix"}) from None
        except UnicodeError:
            raise ApiError(422, "the prefix is not valid Unicode text (a lone surrogate?)", "prefix") from None
        return {"model": entry.name, "prefix": model.prepare(req.prefix),
                "next": [{"char": c, "prob": p} for c, p in top]}

    @router.post(
        "/score",
        response_model=ScoreResponse,
        summary="Every character's log-probability under the model, and the text's bits per character",
    )
    async def score(req: ScoreRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        entry = service.entry(req.model)
        try:
            scored = await run_in_threadpool(scoring.score, entry.model.network, req.text, req.unknown)
        except CharlstmError as exc:
            raise api_error(exc, {"prime": "text"}) from None
        except UnicodeError:
            raise ApiError(422, "the text is not valid Unicode text (a lone surrogate?)", "text") from None
        finite = scored.chars > 0
        return {
            "model": entry.name,
            "text": scored.text,
            "logprobs": [None if math.isnan(v) else round(v, 6) for v in scored.logprobs.tolist()],
            "nats_per_char": scored.nats_per_char if finite else None,
            "bits_per_char": scored.bits_per_char if finite else None,
            "chars": scored.chars,
        }

    return router
