"""Request and response bodies of the HTTP API, with the server's limits written into the schemas.

The request models are built per app (`make_schemas(limits)`), so the OpenAPI document at `/openapi.json`
states the limits this server enforces (`maximum` of `length`, of `num_samples` ...), and a value outside them
is a 422 that names the field, raised by FastAPI's validation before any work starts. The sampling fields
are declared once (`LoopControl`, `Sampling`) and map onto `GenerationSettings` (`settings()`).
"""

# no `from __future__ import annotations`: FastAPI and pydantic read these annotations at run time, and the
# request models are classes local to make_schemas
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charlstm.generation.settings import GenerationSettings
from charlstm.server.limits import Limits

UnknownPolicy = Literal["error", "skip", "replace"]
SEED_DOC = "random seed (>= 0): the same seed gives the same text as the CLI and the Python API"
NGRAM_DOC = (
    "never produce an N-character sequence already in the text, prime included (Hugging Face's "
    "no_repeat_ngram_size, over characters); 0 = off; null: the model's default (20 for the default "
    "recipe's models, off for classic ones)"
)
REPETITION_DOC = (
    "the CTRL / Hugging Face repetition penalty on characters already in the text: logit * p if negative, "
    "else logit / p; 1 or null = off"
)
MIN_P_DOC = "sample only characters at least min_p times as likely as the likeliest (after temperature)"
TYPICAL_DOC = "locally typical sampling: keep the characters whose surprise is nearest the entropy, this mass"

UNKNOWN_DOC = "prime characters outside the vocabulary: error (422), skip them, or replace them"
REGEX_DOC = (
    "a regular expression (Python syntax) the whole sample must match (an items model: each item); masked at "
    "every step, so every sample matches within the length. Not supported: back-references, \\b, lookbehinds"
)
MUST_INCLUDE_DOC = "words every sample must contain (a list, or one comma-separated string)"
BEST_OF_DOC = (
    "sample this many (>= the number returned) in one batch and return the likeliest per character under the "
    "model (OpenAI's best_of rule); not streamed"
)
BEAM_DOC = "beam search of this width instead of sampling: the likeliest texts found (num_samples <= beam); not streamed"
Words = Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(max_length=16)]
Pattern = Annotated[str, Field(max_length=1000)]
MustInclude = Words | Annotated[str, Field(max_length=1000)] | None


class LoopControl(BaseModel):
    """The sampling fields every generating endpoint takes alike (the charlstm API and the OpenAI one)."""

    unknown: UnknownPolicy = Field("error", description=UNKNOWN_DOC)
    no_repeat_ngram: int | None = Field(None, ge=0, le=1000, description=NGRAM_DOC)
    repetition_penalty: float | None = Field(None, gt=0, le=10, allow_inf_nan=False, description=REPETITION_DOC)
    min_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description=MIN_P_DOC)
    typical_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description=TYPICAL_DOC)

    def settings(self, **fields: Any) -> GenerationSettings:
        """These fields as `GenerationSettings`, with `fields` (the endpoint's own: length, seed ...)."""
        own = {name: getattr(self, name) for name in SAMPLING_FIELDS if name in type(self).model_fields}
        return GenerationSettings(**{**own, **fields})


class Sampling(LoopControl):
    """The charlstm API's sampling fields (`/api/generate`, `/api/stream`, `/api/next`)."""

    temperature: float = Field(
        1.0, ge=0, le=10, allow_inf_nan=False, description="0 = greedy; lower = safer, higher = wilder"
    )
    top_k: int | None = Field(None, ge=1, le=1_000_000, description="sample among the k likeliest only")
    top_p: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False, description="sample from the smallest set with this mass"
    )


# the fields of a request that map onto GenerationSettings under the same name
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", *LoopControl.model_fields)


def make_schemas(limits: Limits) -> SimpleNamespace:
    """The request models for these limits (response models do not depend on them)."""
    Stop = Annotated[str, Field(max_length=limits.max_stop_chars)]
    Stops = str | Annotated[list[Stop], Field(max_length=limits.max_stops)] | None
    Prime = Annotated[str, Field(max_length=limits.max_prime)]

    class GenerateRequest(Sampling):
        """`POST /api/generate` and `POST /api/stream`."""

        model_config = ConfigDict(extra="forbid")

        model: str | None = Field(None, description="model name (GET /api/models); default: the first")
        tag: Annotated[str, Field(max_length=200)] | None = Field(
            None, description="a tagged model's tag to generate in (GET /api/models: tags); default: its first"
        )
        prime: Prime | None = Field(
            None, description="text to start from; default: a seed from the model's training text"
        )
        length: int = Field(400, ge=0, le=limits.max_length, description="characters to generate per sample")
        seed: int | None = Field(None, ge=0, lt=2**63, description=SEED_DOC)
        num_samples: int = Field(1, ge=1, le=limits.max_samples, description="samples generated together")
        stop: Stops = Field(
            None, description="a string (or a list of them): a sample ends once it has generated one"
        )
        regex: Pattern | None = Field(None, description=REGEX_DOC)
        must_include: MustInclude = Field(None, description=MUST_INCLUDE_DOC)
        best_of: int | None = Field(None, ge=1, le=limits.max_samples, description=BEST_OF_DOC)
        beam: int | None = Field(None, ge=1, le=16, description=BEAM_DOC)
        length_penalty: float = Field(
            1.0, ge=-10, le=10, allow_inf_nan=False,
            description="beam search ranks texts by log-probability / length ** length_penalty (1: per character)",
        )

        def settings(self, **fields: Any) -> GenerationSettings:  # type: ignore[override]
            return super().settings(regex=self.regex, must_include=self.must_include or (), best_of=self.best_of,
                                    beam=self.beam, length_penalty=self.length_penalty, **fields)

    class NextRequest(Sampling):
        """`POST /api/next`: the likeliest next characters after a prefix, as generation would draw them."""

        model_config = ConfigDict(extra="forbid")

        model: str | None = Field(None, description="model name (GET /api/models); default: the first")
        prefix: Annotated[str, Field(min_length=1, max_length=limits.max_prime)] = Field(
            description="the text so far (the prime)"
        )
        k: int = Field(5, ge=1, le=50, description="how many characters to return")

    class ScoreRequest(BaseModel):
        """`POST /api/score`: every character's log-probability under the model, in one stateful pass."""

        model_config = ConfigDict(extra="forbid")

        model: str | None = Field(None, description="model name (GET /api/models); default: the first")
        text: Annotated[str, Field(min_length=1, max_length=limits.max_score_chars)]
        unknown: UnknownPolicy = Field("error", description=UNKNOWN_DOC)

    class CompletionRequest(LoopControl):
        """OpenAI's `POST /v1/completions` (legacy completions), as vLLM and llama.cpp's server accept it.
        One token is one character here."""

        model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, as vLLM does

        model: str
        prompt: Prime | Annotated[list[Prime], Field(min_length=1, max_length=limits.max_samples)] | None = (
            None
        )
        max_tokens: int | None = Field(16, ge=0, le=limits.max_length, description="characters per choice")
        temperature: float | None = Field(1.0, ge=0, le=10, allow_inf_nan=False)
        top_p: float | None = Field(1.0, gt=0, le=1, allow_inf_nan=False)
        top_k: int | None = Field(
            None, ge=-1, le=1_000_000, description="extra field as vLLM accepts it; -1 or 0 = off"
        )
        n: int = Field(1, ge=1, le=limits.max_samples)
        seed: int | None = Field(None, ge=0, lt=2**63, description=SEED_DOC)
        stop: Stops = Field(None, description="the returned text does not contain the stop string")
        stream: bool = False
        stream_options: dict[str, Any] | None = None
        echo: bool = Field(False, description="return the prompt before the completion (with logprobs: the "
                           "prompt's own, the first one null); with max_tokens 0 this scores a text")
        logprobs: int | None = Field(
            None, ge=0, le=5, description="per character: its log-probability under the model and the N "
            "likeliest characters' (plus the chosen one if it is not among them), as OpenAI's legacy object"
        )
        presence_penalty: float | None = Field(
            None, ge=-2, le=2, allow_inf_nan=False,
            description="OpenAI's: minus this from every character already generated (the prompt not counted)",
        )
        frequency_penalty: float | None = Field(
            None, ge=-2, le=2, allow_inf_nan=False,
            description="OpenAI's: minus this times how often the character has been generated",
        )
        logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]] | None = Field(
            None, description="added to the logits of token ids (one token = one character): the ids that "
            "GET /api/models/{name}/vocabulary lists; -100 bans a character, 100 all but forces it",
        )
        best_of: int | None = Field(None, ge=1, le=limits.max_samples, description=(
            "OpenAI's: sample best_of (>= n) and return the n with the highest log-probability per character; "
            "not with stream"))
        guided_regex: Pattern | None = Field(None, description="vLLM's: " + REGEX_DOC)
        guided_choice: Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)]],
                                 Field(min_length=1, max_length=100)] | None = Field(
            None, description="vLLM's: the completion is exactly one of these strings")
        must_include: MustInclude = Field(None, description=MUST_INCLUDE_DOC)
        # accepted for compatibility at their neutral values only (anything else is a 422 naming the field)
        suffix: str | None = Field(None, description="not supported: only null or empty")
        user: str | None = None

        def settings(self, **fields: Any) -> GenerationSettings:  # type: ignore[override]
            """OpenAI's fields as `GenerationSettings`: its neutral values (top_p 1, top_k -1 or 0, null
            penalties) as charlstm's, max_tokens as the length, n as the number of samples."""
            return super().settings(**{
                "length": 16 if self.max_tokens is None else self.max_tokens,
                "temperature": 1.0 if self.temperature is None else self.temperature,
                "top_k": None if self.top_k in (None, -1, 0) else self.top_k,
                "top_p": None if self.top_p in (None, 1.0) else self.top_p,
                "seed": self.seed, "num_samples": self.n, "logprobs": self.logprobs,
                "presence_penalty": self.presence_penalty or 0.0,
                "frequency_penalty": self.frequency_penalty or 0.0, "best_of": self.best_of,
                "regex": self.guided_regex, "must_include": self.must_include or (), **fields,
            })

    return SimpleNamespace(
        GenerateRequest=GenerateRequest, CompletionRequest=CompletionRequest, NextRequest=NextRequest,
        ScoreRequest=ScoreRequest,
    )


class ModelInfo(BaseModel):
    name: str
    vocab_size: int
    architecture: str = Field(description='e.g. "2×LSTM(128)"')
    layers: list[dict[str, Any]]
    recipe: str
    corpus: str | None
    best_val_bpc: float | None = Field(description="lowest validation bits/char of its training run")
    window: int | None = Field(description="the input window of a classic (lesson) model")
    run: bool = Field(description="served from a run directory: GET /api/runs/{name} has its metrics")
    items: bool = Field(False, description="an items model: each sample is one whole item, marked new or seen")
    copy_check: bool = Field(False, description="the server found the training text: generations say what they copy")
    preprocessing: dict[str, Any]
    tags: list[str] = Field([], description="a tagged model's tags: send one as `tag` (OpenAI API: MODEL:TAG)")


class GenerateResponse(BaseModel):
    model: str
    prime: str = Field(description="the prime as the model read it (after its preprocessing)")
    text: str = Field(description="the first sample")
    texts: list[str] = Field(description="every sample")
    chars: int = Field(description="characters generated, all samples together")
    seconds: float
    finish_reasons: list[str] = Field(description="per sample: length, stop or time_limit")
    items: list[dict[str, Any]] | None = Field(
        None, description="items models: per sample the item (without its end symbol) and whether it is new, "
        "in the training set or in the validation set (or unfinished, when the length cut it)",
    )
    copies: list[dict[str, Any]] | None = Field(
        None, description="per sample, when the server knows the training text: the longest span also found "
        "there and the share of characters in spans of at least min_span (20), with the spans' positions",
    )


class RunResponse(BaseModel):
    name: str
    metrics: list[dict[str, Any]] = Field(description="metrics.csv: one row per epoch (bpc = bits/char)")
    samples: list[dict[str, Any]] = Field(description="samples.txt: per epoch, one sample per temperature")


class Health(BaseModel):
    status: str
    models: dict[str, dict[str, Any]] = Field(description="per model: running generations, steps, characters")
    limits: dict[str, Any] = Field(description="this server's limits per request")


class NextChar(BaseModel):
    char: str
    prob: float = Field(description="probability under the request's sampling settings")


class NextResponse(BaseModel):
    model: str
    prefix: str = Field(description="the prefix as the model read it (after its preprocessing)")
    next: list[NextChar] = Field(description="likeliest first; characters the settings exclude are left out")


class ScoreResponse(BaseModel):
    model: str
    text: str = Field(description="the text as the model read it (after its preprocessing)")
    logprobs: list[float | None] = Field(description="per character, natural log; the first is null (no context)")
    nats_per_char: float | None
    bits_per_char: float | None
    chars: int = Field(description="characters scored (all but the first)")


class VocabularyResponse(BaseModel):
    model: str
    tokens: list[str] = Field(description="token id i is tokens[i] (one token = one character): logit_bias keys")
    unknown_id: int | None = Field(description="the id of the unknown symbol, if the vocabulary has one (never generated)")
