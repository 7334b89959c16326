"""Generation as functions over a `Network` and a `GenerationSettings`: start one, stream it, or take its text.

`start` is the one place where a prime is chosen and encoded and the logit processors are built, shared by
`CharModel.generate` / `stream`, the CLI and the server's batcher, so the same seed gives the same text
everywhere. The model's defaults that depend on its file (the default prime, the repeat guard's limits, the
n-gram ban of the default recipe) are resolved here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.generation.constraints import Constraint, constraint_for
from charlstm.generation.network import Network
from charlstm.generation.processors import DEFAULT_NO_REPEAT_NGRAM, LogitProcessor, build_processors
from charlstm.generation.search import Scored, best_of
from charlstm.generation.search import beam as beam_search
from charlstm.generation.settings import GenerationSettings
from charlstm.generation.state import Generation, StatefulContext, WindowContext, step


def default_prime(network: Network, rng: np.random.Generator) -> str:
    """The prime used when none is given: an items model's boundary symbol, else one of the seeds the model
    file records (drawn with `rng`), else a newline (or the first character of the vocabulary)."""
    meta = network.meta
    if meta.get("items"):
        return str(meta["items"]["boundary"])
    seeds = (meta.get("tag_seeds") or {}).get(network.tag) or meta.get("seeds") or []  # a tag's own text
    if seeds:
        return str(seeds[int(rng.integers(len(seeds)))])
    return "\n" if "\n" in network.vocab else network.vocab.chars[0]


def repeat_limits(network: Network, max_repeat: int | str | None = None) -> np.ndarray | None:
    """The longest run of each character that generation allows (V,), or None for no limit.

    "auto": the training text's own longest runs (recorded in the model file); N: N for every character;
    "none": no limit. None means the model's default: "auto" for the default recipe's models (measured:
    benchmarks/README.md, healthy samples at low temperatures), "none" for `classic` ones, which keep
    the lesson's exact sampling.
    """
    runs = network.meta.get("longest_runs")
    if max_repeat is None:
        max_repeat = "auto" if network.recipe != "classic" and runs else "none"
    if isinstance(max_repeat, str) and max_repeat.strip().isdigit():
        max_repeat = int(max_repeat)
    if max_repeat == "none":
        return None
    if max_repeat == "auto":
        if not runs or len(runs) != network.vocab.size:
            raise CharlstmError(
                f"{network.name} does not record its training text's longest runs (trained "
                "before charlstm kept them): give --max-repeat N or none", "max_repeat"
            )
        return np.maximum(np.asarray(runs, dtype=np.int64), 1)
    if isinstance(max_repeat, bool) or not isinstance(max_repeat, int) or max_repeat < 1:
        raise CharlstmError(f"max-repeat must be auto, none or an integer >= 1, got {max_repeat!r}", "max_repeat")
    return np.full(network.vocab.size, max_repeat, dtype=np.int64)


def processors_for(
    network: Network, settings: GenerationSettings, extra: Sequence[LogitProcessor] = ()
) -> list[LogitProcessor]:
    """The logit processors these settings ask for on this network, then `extra` (processors.py).

    no_repeat_ngram None: the model's default, `DEFAULT_NO_REPEAT_NGRAM` for the default recipe's models
    (chosen by measurement, benchmarks/README.md), off for classic ones and for Keras models saved with
    `save_keras_model` (their samplers are the lesson's: SampleText).
    """
    ngram = settings.no_repeat_ngram
    if ngram is None:
        ngram = DEFAULT_NO_REPEAT_NGRAM if network.recipe == "default" else 0
    return build_processors(
        network.vocab.size, repeat_limits(network, settings.max_repeat), extra, no_repeat_ngram=ngram,
        repetition_penalty=settings.repetition_penalty, presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty, logit_bias=settings.logit_bias,
    )


def constraint_of(network: Network, settings: GenerationSettings, stop_mode: str = "included") -> Constraint | None:
    """The compiled pattern of `settings` (regex, must_include, the shorthands) over this network's
    vocabulary, or None when none is asked for (constraints.py; compiled once per distinct request).

    stop_mode: what the pattern is matched against when a stop string ends a row: "included" (the text
    with it, as `generate` returns it), "excluded" (OpenAI strips it), "required" (an item: the text before
    the boundary, which must come)."""
    if not settings.pattern_parts():
        return None
    return constraint_for(
        network.chars[: network.vocab.size], regex=settings.regex, must_include=settings.must_include,
        starts_with=settings.starts_with, ends_with=settings.ends_with, min_length=settings.min_length,
        max_length=settings.max_length, stops=settings.stop, stop_mode=stop_mode,
    )


def start(
    network: Network,
    settings: GenerationSettings,
    prime: str | None = None,
    processors: Sequence[LogitProcessor] = (),
    *,
    stop_mode: str = "included",
) -> Generation:
    """A ready-to-step `Generation` (state.py) of `settings` on `network`; nothing is computed yet.

    Args:
        network: the model's network.
        settings: the request's settings (already checked).
        prime: the text to start from; None: `default_prime`, drawn with its own generator seeded by
            `settings.seed`, so the draws of the text do not depend on whether a prime was given.
        processors: logit processors applied after the ones the settings ask for.
        stop_mode: how a pattern meets the stop strings (`constraint_of`).

    Returns:
        The generation; `step([gen])` until `gen.finished`, or hand it to a `Batch` (the server's batcher).

    Raises:
        CharlstmError: the prime has characters outside the vocabulary (unknown="error") or none left
            (field "prime"); a setting the model cannot take (max_repeat "auto", logit_bias ids).
    """
    network = network.with_tag(settings.tag)  # a tagged model in the asked tag (generation/tags.py)
    procs = processors_for(network, settings, processors)
    if prime is None:
        prime = default_prime(network, np.random.default_rng(settings.seed))
    try:
        prime_ids = network.encode(prime, unknown=settings.unknown).astype(np.int64)
    except CharlstmError as exc:
        exc.field = exc.field or "prime"
        raise
    if len(prime_ids) == 0:
        raise CharlstmError(
            "the prime is empty (after dropping unknown characters); give at least one character", "prime"
        )
    rows = settings.num_samples
    if settings.context == "window":
        window = network.window or int(network.meta.get("config", {}).get("maxlen", 40))
        ctx: StatefulContext | WindowContext = WindowContext(network, prime_ids, rows, window)
    else:
        ctx = StatefulContext(network, prime_ids, rows)
    constraint = constraint_of(network, settings, stop_mode)
    return Generation(ctx, settings, chars=network.chars, processors=procs, constraint=constraint)


def run(gen: Generation) -> Iterator[Any]:
    """Step one generation to its end, yielding each step's characters (a str, or a list of one per row)."""
    single = gen.rows == 1
    while not gen.finished:
        step([gen])
        yield gen.pieces[0] if single else gen.pieces


def searching(settings: GenerationSettings) -> bool:
    """Best-of (more drawn than returned) or beam search: whole texts ranked at the end (search.py)."""
    return settings.beam is not None or (settings.best_of or 0) > settings.num_samples


def search(
    network: Network,
    settings: GenerationSettings,
    prime: str | None = None,
    processors: Sequence[LogitProcessor] = (),
    *,
    stop_mode: str = "included",
) -> list[Scored]:
    """The texts best-of or beam search finds for these settings, best first, with their log-probabilities
    under the model (search.py): beam search when `settings.beam` is set, else `settings.best_of` samples
    drawn as one batch and the `num_samples` likeliest per character kept."""
    if settings.beam is not None:
        gen = start(network, settings.replace(num_samples=1, beam=None), prime, processors, stop_mode=stop_mode)
        return beam_search(gen, settings.beam, settings.num_samples, settings.length_penalty)
    k = max(settings.best_of or 1, settings.num_samples)
    gen = start(network, settings.replace(num_samples=k, best_of=None), prime, processors, stop_mode=stop_mode)
    return best_of(gen, settings.num_samples)


def stream(
    network: Network,
    settings: GenerationSettings,
    prime: str | None = None,
    processors: Sequence[LogitProcessor] = (),
) -> Iterator[Any]:
    """Generated characters one step at a time: a str, or a list of str when num_samples > 1 ("" for a
    sample that has already met its stop string). Checked at once; computed as it is iterated.
    Best-of and beam search are not streamed (they rank whole texts): a CharlstmError naming the field."""
    if searching(settings):
        field = "beam" if settings.beam is not None else "best_of"
        raise CharlstmError(f"{field.replace('_', '-')} ranks whole texts, so it is not streamed: use generate",
                            field)
    return run(start(network, settings, prime, processors))


def generate(
    network: Network,
    settings: GenerationSettings,
    prime: str | None = None,
    processors: Sequence[LogitProcessor] = (),
) -> str | list[str]:
    """Generated text (without the prime): a str, or a list of str when num_samples > 1; with best_of or
    beam, the likeliest texts found, likeliest first (search.py)."""
    if searching(settings):
        found = search(network, settings, prime, processors)
        texts = [f.text for f in found]
        return texts[0] if settings.num_samples == 1 else texts
    pieces = list(stream(network, settings, prime, processors))
    if settings.num_samples == 1:
        return "".join(pieces)
    return ["".join(p[b] for p in pieces) for b in range(settings.num_samples)]
