"""OpenAI-compatible endpoints: `GET /v1/models` and `POST /v1/completions` (streaming or not).

The legacy completions protocol is what vLLM, llama.cpp's server and TGI speak, so existing clients, SDKs
and tools work against charlstm unchanged. One token is one character: `max_tokens` is the length in
characters, `usage` counts characters. As in OpenAI's API, the returned text never contains the stop string
(while streaming, characters that might begin one are held back until they cannot).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, format_sse_event
from starlette.concurrency import run_in_threadpool

from charlstm.generation.constraints import choice_pattern
from charlstm.server.service import (
    ApiError,
    Service,
    Started,
    dumps,
    request_errors,
    stop_mode_for,
    stops_for,
)

# GenerationSettings' names for the request's fields named otherwise
FIELDS = {"prime": "prompt", "length": "max_tokens", "num_samples": "n", "regex": "guided_regex"}


class StopHolder:
    """One choice's streamed text, holding back a tail that could still grow into a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> str:
        """Take new text; return what can be sent now."""
        self.held += text
        keep = 0
        for stop in self.stops:
            for k in range(min(len(stop), len(self.held)), keep, -1):
                if self.held.endswith(stop[:k]):
                    keep = k
                    break
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def finish(self, stopped_by: str | None) -> str:
        """What is left to send once the choice has ended (without the stop string that ended it)."""
        out = self.held[: -len(stopped_by)] if stopped_by and self.held.endswith(stopped_by) else self.held
        self.held = ""
        return out


class Logprobs:
    """OpenAI's legacy `logprobs` object for one prompt's choices: one token per character.

    `tokens`, `token_logprobs` (natural log, under the model: its logits before penalties and sampling
    transforms, as OpenAI and vLLM report them), `top_logprobs` (the N likeliest characters, plus the chosen
    one when it is not among them) and `text_offset` (each character's offset in characters from the start
    of the prompt, echoed or not, as OpenAI counts them; an emoji or a CJK character counts one).
    """

    def __init__(self, model: Any, n: int, prompt_chars: int) -> None:
        self.chars, self.n, self.start = model.chars, n, prompt_chars
        self.prompt: dict[str, list[Any]] | None = None  # the echoed prompt's own object, when echo
        self.sent: dict[int, int] = {}  # streaming: completion characters sent so far, per row

    def part(self, job: Any, row: int, text: str) -> dict[str, Any]:
        """Streaming: the object for `text`, the row's next characters after those already sent."""
        first = self.sent.get(row, 0)
        self.sent[row] = first + len(text)
        return self.build(text, job.logprobs(row, first, first + len(text)), first, False)

    def build(
        self, text: str, entries: Sequence[tuple[float, list[int], list[float]]], first: int, echo: bool
    ) -> dict[str, Any]:
        """The object for the completion characters `text` (from number `first` on) and their `entries`
        (as the batcher recorded them), after the echoed prompt's when `echo`."""
        chars = self.chars
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        if echo and self.prompt is not None:
            for key in out:
                out[key].extend(self.prompt[key])
        for k, (ch, (logprob, ids, values)) in enumerate(zip(text, entries, strict=True)):
            top = {chars[i]: v for i, v in zip(ids, values, strict=True)}
            top.setdefault(ch, logprob)
            out["tokens"].append(ch)
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.start + first + k)
        return out


def _prompt_logprobs(model: Any, prime: str, n: int, unknown: str) -> dict[str, list[Any]]:
    """The echoed prompt's logprobs object: model.score's values, the first character's null."""
    scored = model.score(prime, unknown=unknown, top=n)
    chars = model.chars
    tops: list[Any] = [None]
    for row in range(1, len(scored.ids)):
        tops.append({chars[i]: float(v) for i, v in zip(scored.top_ids[row].tolist(),
                                                       scored.top_logprobs[row].tolist(), strict=True)}
                    if n else {})
        tops[-1].setdefault(chars[scored.ids[row]], float(scored.logprobs[row]))
    return {
        "tokens": [chars[i] for i in scored.ids.tolist()],
        "token_logprobs": [None, *(float(v) for v in scored.logprobs[1:])],
        "top_logprobs": tops,
        "text_offset": list(range(len(scored.ids))),
    }


def _logit_bias(bias: dict[str, float] | None, model: Any) -> dict[int, float] | None:
    """OpenAI's logit_bias (token-id strings to biases) as ids, each checked against the vocabulary."""
    if not bias:
        return None
    size = model.vocab.size
    out: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not 0 <= token < size:
            raise ApiError(
                422, f"logit_bias: {key!r} is not a token id of this model (0..{size - 1}; one token = one "
                "character, listed by GET /api/models/{name}/vocabulary)", "logit_bias",
            )
        out[token] = value
    return out


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _finish_reason(reason: str) -> str:
    return "stop" if reason == "stop" else "length"  # length and time_limit both end on length


def openai_router(service: Service, request_model: type, check_token: Callable[..., Any]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], dependencies=[Depends(check_token)])
    created = int(time.time())

    @router.get("/models", summary="The served models, as OpenAI lists models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "charlstm",
                 "max_model_len": service.limits.max_length}
                for name in service.model_ids()  # a tagged model's tags too, as MODEL:TAG
            ],
        }

    @router.post(
        "/completions",
        summary="Complete a prompt, as OpenAI's legacy completions API (stream: true for SSE)",
        responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}},
    )
    async def completions(req: request_model) -> Any:  # type: ignore[valid-type]
        entry = service.entry(req.model, status=404)
        if req.suffix:
            raise ApiError(422, "suffix is not supported by charlstm", "suffix")
        if req.stream and (req.best_of or 0) > req.n:
            raise ApiError(422, "best_of ranks whole completions, so it cannot be streamed (as OpenAI)", "best_of")
        fields = FIELDS
        guided: dict[str, Any] = {}
        if req.guided_choice is not None:  # vLLM's: exactly one of the strings
            if req.guided_regex is not None:
                raise ApiError(422, "guided_regex and guided_choice do not go together: send one", "guided_choice")
            fields = {**FIELDS, "regex": "guided_choice"}
            with request_errors(fields):
                guided["regex"] = choice_pattern(req.guided_choice)
        bias = _logit_bias(req.logit_bias, entry.model)
        with request_errors(fields):
            settings = req.settings(logit_bias=bias, stop=stops_for(entry, req.stop), **guided)
        prompts: list[str | None] = req.prompt if isinstance(req.prompt, list) else [req.prompt]
        started: list[Started] = []
        try:
            for prompt in prompts:
                started.append(service.generate(entry, settings, prompt, fields,
                                                stop_mode=stop_mode_for(entry, "excluded")))
        except ApiError:
            for s in started:
                s.job.cancel()
            raise
        cid = f"cmpl-{uuid.uuid4().hex}"
        stamp = int(time.time())
        echoes = [(p if p is not None else s.prime) if req.echo else "" for p, s in zip(prompts, started, strict=True)]
        offsets = [len(p if p is not None else s.prime) for p, s in zip(prompts, started, strict=True)]
        logs: list[Logprobs | None] = [None] * len(started)
        if req.logprobs is not None:
            for p, s in enumerate(started):
                logs[p] = Logprobs(entry.model, req.logprobs, offsets[p])
                if req.echo:
                    logs[p].prompt = await run_in_threadpool(
                        _prompt_logprobs, entry.model, s.prime, req.logprobs, req.unknown
                    )
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return EventSourceResponse(
                _stream(started, echoes, logs, _stops(req.stop), cid, stamp, entry.name, include_usage),
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            choices = []
            completion_chars = 0
            for p, s in enumerate(started):
                texts = [""] * s.job.gen.rows
                async for chunk in s.job.chunks():
                    texts = [a + b for a, b in zip(texts, chunk, strict=True)]
                if s.job.error:
                    raise ApiError(500, f"generation failed: {s.job.error}", kind="server_error")
                for k, b in enumerate(s.best(texts)):  # best_of: the n likeliest of its rows
                    text = texts[b]
                    holder = StopHolder(_stops(req.stop))
                    holder.held = text
                    text = holder.finish(s.job.gen.stopped_by[b])
                    completion_chars += len(text)
                    lp = logs[p]
                    choices.append({
                        "index": p * req.n + k,
                        "text": echoes[p] + text,
                        "logprobs": None if lp is None else lp.build(text, s.job.logprobs(b, 0, len(text)), 0, req.echo),
                        "finish_reason": _finish_reason(s.job.finish_reasons[b]),
                    })
        finally:
            for s in started:
                s.job.cancel()
        prompt_chars = sum(len(s.prime) for s in started)
        return {
            "id": cid,
            "object": "text_completion",
            "created": stamp,
            "model": entry.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_chars,
                "completion_tokens": completion_chars,
                "total_tokens": prompt_chars + completion_chars,
            },
        }

    return router


async def _stream(
    started: list[Started], echoes: list[str], logs: "list[Logprobs | None]", stops: list[str], cid: str,
    stamp: int, model: str, include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI's streaming format: `data: {chunk}` events, one choice's new text each, then `data: [DONE]`."""

    def event(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {"id": cid, "object": "text_completion", "created": stamp, "model": model,
                                "choices": choices}
        if include_usage:
            body["usage"] = usage
        return format_sse_event(data_str=dumps(body))

    def choice(index: int, text: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}

    completion_chars = 0
    try:
        for p, s in enumerate(started):
            rows = s.job.gen.rows
            holders = [StopHolder(stops) for _ in range(rows)]
            lp = logs[p]
            if echoes[p]:
                for b in range(rows):
                    yield event([choice(p * rows + b, echoes[p], None, None if lp is None else lp.build("", [], 0, True))])
            async for texts in s.job.chunks():
                for b, text in enumerate(texts):
                    out = holders[b].feed(text)
                    if out:
                        completion_chars += len(out)
                        yield event([choice(p * rows + b, out, None, lp and lp.part(s.job, b, out))])
            for b in range(rows):
                out = holders[b].finish(s.job.gen.stopped_by[b])
                completion_chars += len(out)
                reason = "length" if s.job.error else _finish_reason(s.job.finish_reasons[b])
                yield event([choice(p * rows + b, out, reason, lp and lp.part(s.job, b, out))])
        if include_usage:
            prompt_chars = sum(len(s.prime) for s in started)
            yield event([], {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
                             "total_tokens": prompt_chars + completion_chars})
        yield format_sse_event(data_str="[DONE]")
    finally:  # the client went away (or we are done): stop generating at once
        for s in started:
            s.job.cancel()
