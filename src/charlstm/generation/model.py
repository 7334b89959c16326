"""A loaded model (`CharModel`): the facade over a `Network` that users, the CLI and the server hold.

The file is read by modelfile.py (zipfile + h5py) into a `Network` (network.py: the weights and the step);
generation runs in generate.py and state.py from a `GenerationSettings` (settings.py), scores and
distributions in scoring.py, evaluation in evaluation.py, whole items in items.py. `CharModel` loads the file
and delegates to them, keeping the keyword arguments users call `generate` and `stream` with. No TensorFlow,
no Keras.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.generation import evaluation, generate, scoring
from charlstm.generation.modelfile import read_model_file
from charlstm.generation.network import Network, OneBlasThread, RecurrentLayer, State, network_from_parts
from charlstm.generation.processors import LogitProcessor
from charlstm.generation.settings import GenerationSettings
from charlstm.generation.state import Generation


class CharModel:
    """A trained character model, ready to generate and evaluate with NumPy alone.

    Build it with `charlstm.generation.model.load(path)` (or `charlstm.load`). It is immutable; generation state lives
    in the generator, so one object can serve many requests. `network` is what runs the layers; the free
    functions of generate.py, scoring.py and evaluation.py take it with a `GenerationSettings`.
    """

    def __init__(
        self,
        *,
        vocab: Vocabulary | None = None,
        input_table: np.ndarray | None = None,
        layers: list[RecurrentLayer] | None = None,
        dense_kernel: np.ndarray | None = None,
        dense_bias: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        window: int | None = None,
        file_bytes: bytes | None = None,
        path: str | None = None,
        network: Network | None = None,
    ) -> None:
        if network is None:
            assert vocab is not None and layers is not None and dense_kernel is not None and dense_bias is not None
            network = Network(
                vocab=vocab, input_table=input_table, layers=layers, dense_kernel=dense_kernel,
                dense_bias=dense_bias, meta=meta or {}, window=window, path=path,
            )
        self.network = network
        self.file_bytes = file_bytes  # the file as loaded (`save` writes it back)
        self.copy_checkers: dict[str | None, Any] = {}  # copy indexes opened by `copies`, by `against`

    # -- the network's parts ------------------------------------------------------------------------------
    vocab = property(lambda self: self.network.vocab, doc="The vocabulary (id i is vocab.chars[i]).")
    layers = property(lambda self: self.network.layers, doc="The recurrent layers (network.py).")
    dense_kernel = property(lambda self: self.network.dense_kernel, doc="The head's kernel (units, V).")
    dense_bias = property(lambda self: self.network.dense_bias, doc="The head's bias (V,).")
    sampling_bias = property(lambda self: self.network.sampling_bias, doc="The bias with the unknown id at -inf.")
    chars = property(lambda self: self.network.chars, doc="id -> character as generated.")
    meta = property(lambda self: self.network.meta, doc="The model file's charlstm record.")
    window = property(lambda self: self.network.window, doc="The input window of a classic model, else None.")
    path = property(lambda self: self.network.path, doc="Where the model was loaded from.")
    tags = property(lambda self: self.network.tags, doc="A tagged model's tags, in id order (else ()).")
    tag = property(lambda self: self.network.tag, doc="The tag this model generates in (None: untagged).")

    # -- description --------------------------------------------------------------------------------
    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.meta.get("preprocessing", {})

    @property
    def recipe(self) -> str:
        return self.network.recipe

    @property
    def architecture(self) -> str:
        """e.g. "2×LSTM(128)", or "LSTM(128)+GRU(64)" for mixed stacks."""
        names = [f"{layer.cell.upper()}({layer.units})" for layer in self.layers]
        return f"{len(names)}×{names[0]}" if len(set(names)) == 1 and len(names) > 1 else "+".join(names)

    @property
    def best_val_bpc(self) -> float | None:
        """The lowest validation bits/char among the epochs recorded in the file (None: no validation)."""
        rows = (self.meta.get("train_state") or {}).get("history") or []
        values = [r.get("val_bpc") for r in rows if isinstance(r, dict)]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return min(values) if values else None

    def __repr__(self) -> str:
        """What a notebook shows for `model`: the network, vocabulary, recipe, how good it got, where it is."""
        best = self.best_val_bpc
        score = f", best validation {best:.3f} bits/char" if best is not None else ""
        return (
            f"CharModel({self.architecture}, vocabulary {self.vocab.size}, recipe {self.recipe!r}{score}, "
            f"path={self.path!r})"
        )

    # -- text <-> ids, the network (network.py) -----------------------------------------------------------
    def prepare(self, text: str) -> str:
        """Apply the model's preprocessing (Unicode form, case, ASCII) to user text such as a prime."""
        return self.network.prepare(text)

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        return self.network.encode(text, unknown)

    def initial_state(self, batch: int = 1) -> State:
        return self.network.initial_state(batch)

    def forward(
        self, ids: np.ndarray, state: State | None = None, tags: np.ndarray | None = None
    ) -> tuple[np.ndarray, State]:
        """Logits (B, T, V) for ids (B, T), continuing from `state` (`Network.forward`; tags: one per row)."""
        return self.network.forward(ids, state, tags)

    # -- tags (generation/tags.py) ----------------------------------------------------------------------
    def with_tag(self, tag: str | None) -> CharModel:
        """This model generating, scoring and evaluating in `tag` (a tagged model): a view sharing the
        weights (`Network.with_tag`). An unknown tag is one line naming the tags the model knows."""
        network = self.network.with_tag(tag)
        if network is self.network:
            return self
        view = CharModel(network=network, file_bytes=self.file_bytes)
        view.copy_checkers = self.copy_checkers
        return view

    def classify(self, text: str, unknown: str = "skip") -> Any:
        """Which tag is `text` in? The posterior over the tags from the text's likelihood under each, in one
        batched pass (`tags.classify`: a `Classified` with `.best`, `.ranked()`, `.to_json()`)."""
        from charlstm.generation.tags import classify

        return classify(self.network, text, unknown=unknown)

    def logits(self, text_or_ids: str | np.ndarray) -> np.ndarray:
        """Logits (T, V) of one sequence read from the zero state (`Network.logits`)."""
        return self.network.logits(text_or_ids)

    def step(self, ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One time step for a batch of rows (`Network.step`): logits (B, V) and the new state."""
        return self.network.step(ids, state)

    @staticmethod
    def blas_for(rows: int) -> OneBlasThread:
        """`with model.blas_for(rows):` one BLAS thread when stepping several rows (see `OneBlasThread`)."""
        return Network.blas_for(rows)

    # -- generation (generate.py, state.py) -------------------------------------------------------------
    @property
    def is_items(self) -> bool:
        """Trained with --items: a sample is one whole item (`items`), starting at the boundary symbol."""
        return bool(self.meta.get("items"))

    def items(self, n: int = 10, temperature: float = 1.0, **kwargs: Any) -> list[Any]:
        """`n` whole items of an items model, each marked new or seen in training (generation/items.py);
        only_new=True returns new ones only."""
        from charlstm.generation.items import generate_items

        return generate_items(self.network, n, temperature, **kwargs)

    def default_prime(self, rng: np.random.Generator) -> str:
        return generate.default_prime(self.network, rng)

    def repeat_limits(self, max_repeat: int | str | None = None) -> np.ndarray | None:
        """The longest run of each character that generation allows, or None (`generate.repeat_limits`)."""
        return generate.repeat_limits(self.network, max_repeat)

    def generation(
        self,
        prime: str | None = None,
        length: int = 400,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        stop: str | Sequence[str] | None = None,
        unknown: str = "error",
        context: str = "stateful",
        processors: Sequence[LogitProcessor] = (),
        max_repeat: int | str | None = None,
        *,
        min_p: float | None = None,
        typical_p: float | None = None,
        no_repeat_ngram: int | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        logprobs: int | None = None,
        stop_mode: str = "included",
        **shape: Any,
    ) -> Generation:
        """A checked, ready-to-step `Generation` (state.py) for these settings; nothing is computed yet.

        The settings are those of `GenerationSettings` (settings.py), which checks them; `processors` are
        applied after the ones the settings ask for. `generate.start(model.network, settings, prime)` is
        the same with a settings object. shape: the pattern settings (regex, must_include, starts_with,
        ends_with, min_length, max_length) and best_of / beam / length_penalty; stop_mode: how a pattern
        meets the stop strings (generate.constraint_of).
        """
        settings = GenerationSettings(
            length=length, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            seed=seed, num_samples=num_samples, stop=stop, unknown=unknown, context=context, max_repeat=max_repeat,
            no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, logit_bias=logit_bias,
            logprobs=logprobs, **shape,
        )
        if generate.searching(settings):  # ranked whole texts: generate() runs them (search.py)
            generate.stream(self.network, settings)  # raises, naming the field
        return generate.start(self.network, settings, prime, processors, stop_mode=stop_mode)

    def stream(
        self,
        prime: str | None = None,
        length: int = 400,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        stop: str | Sequence[str] | None = None,
        unknown: str = "error",
        context: str = "stateful",
        processors: Sequence[LogitProcessor] = (),
        max_repeat: int | str | None = None,
        **options: Any,
    ) -> Iterator[Any]:
        """Generated characters one step at a time.

        Args:
            prime: the text to start from (None: a seed from the training text).
            length, temperature, top_k, top_p, seed, num_samples, stop, unknown, context, max_repeat: as
                `GenerationSettings` has them.
            processors: extra logit processors, applied after the settings' own.
            **options: the other settings (min_p, typical_p, no_repeat_ngram, repetition_penalty,
                presence_penalty, frequency_penalty, logit_bias, logprobs).

        Returns:
            An iterator of a str per step, or a list of str when num_samples > 1 ("" for a sample that has
            already met its stop string). context="stateful" reads the prime once, then steps each layer
            once per character; "window" re-reads the last `window` characters per character (the lesson's
            way). Arguments are checked at once; nothing is computed until the first character is asked for.
        """
        settings = GenerationSettings(
            length=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, num_samples=num_samples,
            stop=stop, unknown=unknown, context=context, max_repeat=max_repeat, **options,
        )
        return generate.stream(self.network, settings, prime, processors)

    def generate(
        self, prime: str | None = None, length: int = 400, temperature: float = 1.0, **kwargs: Any
    ) -> Any:
        """Generated text (without the prime): a str, or a list of str when num_samples > 1 (`stream`'s
        arguments); with best_of (> num_samples) or beam, the likeliest texts found (search.py)."""
        if kwargs.get("beam") is not None or (kwargs.get("best_of") or 0) > kwargs.get("num_samples", 1):
            found = self.search(prime, length, temperature, **kwargs)
            return found[0].text if kwargs.get("num_samples", 1) == 1 else [f.text for f in found]
        pieces = list(self.stream(prime, length, temperature, **kwargs))
        if kwargs.get("num_samples", 1) == 1:
            return "".join(pieces)
        return ["".join(p[b] for p in pieces) for b in range(kwargs["num_samples"])]

    def search(
        self, prime: str | None = None, length: int = 400, temperature: float = 1.0, **kwargs: Any
    ) -> list[Any]:
        """Best-of or beam search (`generate`'s arguments with best_of or beam): the found texts with their
        log-probabilities under the model (`search.Scored`: text, logprob, chars, per_char), best first."""
        processors = kwargs.pop("processors", ())
        stop_mode = kwargs.pop("stop_mode", "included")
        settings = GenerationSettings(length=length, temperature=temperature, **kwargs)
        return generate.search(self.network, settings, prime, processors, stop_mode=stop_mode)

    # -- distributions and scores (scoring.py) ---------------------------------------------------------
    def next_chars(self, prefix: str, k: int = 5, **settings: Any) -> list[tuple[str, float]]:
        """The k likeliest next characters after `prefix`, with the probabilities `generate(prefix,
        **settings)` would draw them with (same preprocessing, repeat guard, processors and sampling)."""
        processors, checked = _settings(settings)
        return scoring.next_chars(self.network, prefix, k, checked, processors)

    def distribution(self, prefix: str, **settings: Any) -> np.ndarray:
        """The next character's probabilities (V,) after `prefix`, as `generate` would sample them."""
        processors, checked = _settings(settings)
        return scoring.distribution(self.network, prefix, checked, processors)

    def score(self, text: str, unknown: str = "error", top: int = 0) -> scoring.Scored:
        """Every character's log-probability given the ones before it, in one stateful pass, with the text's
        nats and bits per character (`.summary()`: what `evaluate(text, streams=1)` reports)."""
        return scoring.score(self.network, text, unknown=unknown, top=top)

    def copies(self, text: str, against: str | os.PathLike[str] | None = None, min_span: int = 20) -> Any:
        """The copy check of `text` (generation/copies.py): the longest span also found in the training text
        and the share of characters in spans of at least `min_span`, with their positions (a `CopyReport`).

        against: a file, folder or prepared corpus to check against instead of the training text (which is
        found from what the model file records). The index is built once and kept beside the corpus.
        """
        from charlstm.generation.copies import checker_for_model

        key = None if against is None else os.fspath(against)
        if key not in self.copy_checkers:
            self.copy_checkers[key] = checker_for_model(self.meta, against, self.path)
        return self.copy_checkers[key].check(text, min_span)

    # -- evaluation (evaluation.py) -------------------------------------------------------------------
    def evaluate(
        self,
        text: str,
        unknown: str = "error",
        context: str | None = None,
        window: int | None = None,
        streams: int = 64,
    ) -> dict[str, float]:
        """Mean next-character loss over `text` in nats and bits per character (`evaluation.evaluate`).

        context="stateful": the text is read as `streams` contiguous pieces in parallel, each from a zero
        state (long context, as generation sees it). context="window": every character is predicted from at
        most `window` characters before it, re-read from a zero state (the classic recipe's view).
        Default: window for classic (windowed) models, stateful otherwise.
        """
        return evaluation.evaluate(self.network, text, unknown=unknown, context=context, window=window, streams=streams)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model file this object was loaded from (atomically) to `path`."""
        from charlstm.fileio import write_atomic

        if self.file_bytes is None:
            raise CharlstmError("this model was not loaded from a file and cannot be saved by the runtime")
        write_atomic(path, self.file_bytes)


def _settings(settings: dict[str, Any]) -> tuple[Sequence[LogitProcessor], GenerationSettings]:
    """`next_chars` / `distribution` keyword settings as (extra processors, checked settings)."""
    settings = dict(settings)
    processors = settings.pop("processors", ())
    settings.pop("num_samples", None)
    settings.pop("length", None)
    return processors, GenerationSettings(length=1, **settings)


def model_from_parts(
    config: dict[str, Any],
    meta: dict[str, Any],
    weights: list[list[np.ndarray]] | bytes,
    *,
    file_bytes: bytes | None = None,
    path: str | None = None,
) -> CharModel:
    """Assemble a CharModel from a Keras model config and per-layer weights (or the h5 bytes)."""
    return CharModel(network=network_from_parts(config, meta, weights, path), file_bytes=file_bytes)


def load(path: str | os.PathLike[str]) -> CharModel:
    """Load a charlstm `.keras` file for generation and evaluation, without TensorFlow."""
    config, meta, weights, data = read_model_file(path)
    try:
        return model_from_parts(config, meta, weights, file_bytes=data, path=str(path))
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
        # a zip with the right entries but damaged or foreign contents (weights, layer graph, vocabulary)
        raise CharlstmError(
            f"{path}: not a charlstm model file or damaged ({type(exc).__name__}: {exc})"
        ) from None
