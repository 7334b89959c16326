"""`GenerationSettings`: every setting of one generation request, in one frozen object, checked once.

The CLI, the server's APIs and `CharModel.generate` / `stream` build one and hand it on; the functions that run
generation (generate.py, scoring.py, the server's batcher through state.py) read it and check nothing again. What
can only be checked against a model (a prime's characters, `max_repeat="auto"` on a file that records no runs,
`logit_bias`, whose ids are the vocabulary's) is checked when a generation starts (generate.start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.generation.constraints import check_patterns, item_patterns
from charlstm.generation.processors import NoRepeatNGram, PresenceFrequencyPenalty, RepetitionPenalty
from charlstm.generation.sampling import Sampling, check_options

CONTEXTS = ("stateful", "window")


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    """How to generate: length, sampling, loop control, stops and what to record.

    Args:
        length: characters to generate per sample (>= 0).
        temperature: p_i ∝ exp(log p_i / T); 0 = greedy, lower = safer.
        top_k: sample among the k likeliest characters only (None: all).
        top_p: sample from the smallest set holding this probability mass, in (0, 1] (None: off).
        min_p: keep characters at least min_p times as likely as the likeliest, in [0, 1] (None: off).
        typical_p: locally typical sampling with this mass, in (0, 1] (None: off).
        seed: the random seed; the same seed gives the same text from the CLI, the API and Python.
        num_samples: samples generated together from one prime (>= 1).
        stop: strings that end a sample once it has generated one of them (a str is one stop string).
        unknown: prime characters outside the vocabulary: "error", "skip" or "replace".
        context: "stateful" (read the prime once, one step per character) or "window" (re-read the last
            `window` characters per step, the lesson's way).
        max_repeat: the longest run of one character: "auto" (the training text's), N, "none", or None for
            the model's default (auto for the default recipe, none for classic models).
        no_repeat_ngram: never produce an n-gram already in the text (prime included); 0 = off, None = the
            model's default (20 for the default recipe, off for classic ones).
        repetition_penalty: the CTRL / Hugging Face penalty on characters already in the text (None or 1: off).
        presence_penalty, frequency_penalty: OpenAI's penalties over the generated characters.
        logit_bias: {character id: bias} added to the logits (ids as `Network.chars` numbers them).
        logprobs: record each step's logits so log-probabilities of the chosen and the N likeliest characters
            can be reported (None: not recorded).
        regex: a regular expression (Python syntax) the whole generated text must match (constraints.py);
            None: none.
        must_include: words that must all occur in the text (a str is a comma-separated list).
        starts_with, ends_with, min_length, max_length: shorthands for patterns (for an items model: of
            each item), all holding together with `regex`.
        best_of: sample this many (>= num_samples) and return the num_samples likeliest per character
            (OpenAI's best_of; search.py); None: off.
        beam: beam search of this width instead of sampling (num_samples <= beam of its best are returned);
            None: off.
        length_penalty: beam search ranks finished texts by log-probability / length ** length_penalty.
        tag: a tagged model's tag to generate in (None: its first tag; an untagged model takes none).

    Raises:
        CharlstmError: a setting out of range, with `field` naming it (checked in the order above, sampling
            first, as the CLI has always reported them).

    Examples:
        >>> s = GenerationSettings(length=80, temperature=0.5, stop="\\n")
        >>> s.stop, s.replace(top_k=5).top_k
        (('\\n',), 5)
        >>> GenerationSettings(top_p=0)
        Traceback (most recent call last):
        ...
        charlstm.errors.CharlstmError: top-p must be in (0, 1], got 0
    """

    length: int = 400
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    seed: int | None = None
    num_samples: int = 1
    stop: str | Sequence[str] | None = ()
    unknown: str = "error"
    context: str = "stateful"
    max_repeat: int | str | None = None
    no_repeat_ngram: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] | None = None
    logprobs: int | None = None
    regex: str | None = None
    must_include: str | Sequence[str] = ()
    starts_with: str | None = None
    ends_with: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    best_of: int | None = None
    beam: int | None = None
    length_penalty: float = 1.0
    tag: str | None = None

    def __post_init__(self) -> None:
        check_options(self.temperature, self.top_k, self.top_p, self.min_p, self.typical_p)
        _check_max_repeat(self.max_repeat)
        if self.repetition_penalty is not None and self.repetition_penalty != 1:
            RepetitionPenalty(self.repetition_penalty)  # checks its argument
        if self.presence_penalty or self.frequency_penalty:
            PresenceFrequencyPenalty(self.presence_penalty, self.frequency_penalty)
        if self.no_repeat_ngram:
            NoRepeatNGram(self.no_repeat_ngram)
        logprobs = self.logprobs
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise CharlstmError(f"logprobs must be an integer >= 0, got {logprobs!r}", "logprobs")
        if not isinstance(self.length, int) or self.length < 0:
            raise CharlstmError(f"length must be an integer >= 0, got {self.length}", "length")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise CharlstmError(f"num-samples must be an integer >= 1, got {self.num_samples}", "num_samples")
        if self.context not in CONTEXTS:
            raise CharlstmError(f"context must be 'stateful' or 'window', got {self.context!r}", "context")
        if self.tag is not None and not isinstance(self.tag, str):
            raise CharlstmError(f"tag must be a string, got {self.tag!r}", "tag")
        stop = self.stop
        object.__setattr__(self, "stop", (stop,) if isinstance(stop, str) else tuple(stop or ()))
        words = self.must_include
        words = [w.strip() for w in words.split(",") if w.strip()] if isinstance(words, str) else list(words or ())
        object.__setattr__(self, "must_include", tuple(words))
        check_patterns(self.pattern_parts())  # syntax only: the vocabulary is checked when a generation starts
        _check_search(self)

    def pattern_parts(self) -> list[tuple[str, str]]:
        """The (field, pattern) parts the text must match: regex, the shorthands and the words."""
        return item_patterns(regex=self.regex, starts_with=self.starts_with, ends_with=self.ends_with,
                             min_length=self.min_length, max_length=self.max_length, must_include=self.must_include)

    @property
    def sampling(self) -> Sampling:
        """The part that chooses each character from the logits (temperature, top-k/p, min-p, typical-p)."""
        return Sampling(self.temperature, self.top_k, self.top_p, self.min_p, self.typical_p)

    def replace(self, **changes: Any) -> GenerationSettings:
        """A copy with `changes` applied, checked again (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The settings' names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))


def _check_search(s: GenerationSettings) -> None:
    """best_of (OpenAI's rule: >= n), beam and length_penalty."""
    for name in ("best_of", "beam"):
        value = getattr(s, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CharlstmError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}", name)
    if s.best_of is not None and s.best_of < s.num_samples:
        raise CharlstmError(
            f"best-of ({s.best_of}) must be at least the number of samples returned ({s.num_samples})", "best_of"
        )
    if s.beam is not None and s.best_of not in (None, 1):
        raise CharlstmError("beam and best-of do not go together: choose one", "beam")
    if s.beam is not None and s.num_samples > s.beam:
        raise CharlstmError(
            f"num-samples ({s.num_samples}) must be at most the beam width ({s.beam}): the beam's best are "
            "returned", "num_samples"
        )
    lp = s.length_penalty
    if isinstance(lp, bool) or not isinstance(lp, (int, float)) or lp != lp or abs(lp) == float("inf"):
        raise CharlstmError(f"length-penalty must be a finite number, got {lp!r}", "length_penalty")


def _check_max_repeat(value: int | str | None) -> None:
    """max_repeat: None, "auto", "none", an integer >= 1 or its digits (what `repeat_limits` takes)."""
    if value is None or value in ("auto", "none"):
        return
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CharlstmError(f"max-repeat must be auto, none or an integer >= 1, got {value!r}", "max_repeat")
