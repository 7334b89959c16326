"""A loaded model (`CharModel`): generation and evaluation in plain NumPy, straight from a `.keras` file.

The file is read by modelfile.py (zipfile + h5py), the layers run one time step at a time in network.py,
and each request's rows, sampling and stops live in state.py. The prime is read once, then every new
character costs one step of each layer, carrying the LSTM/GRU state. No TensorFlow, no Keras.
"""

from __future__ import annotations

import copy
import math
import os
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.generation import evaluation, scoring
from charlstm.generation.modelfile import check_layers, read_model_file, read_weights
from charlstm.generation.network import ALL_BLAS_THREADS, OneBlasThread, RecurrentLayer, rowwise
from charlstm.generation.processors import DEFAULT_NO_REPEAT_NGRAM, LogitProcessor, build_processors
from charlstm.generation.state import Generation, Sampling, StatefulContext, WindowContext, step
from charlstm.generation.tags import split_tables, tag_index


class CharModel:
    """A trained character model, ready to generate and evaluate with NumPy alone.

    Build it with `charlstm.generation.model.load(path)` (or `charlstm.load`). It is immutable; generation state lives
    in the generator, so one object can serve many requests.
    """

    def __init__(
        self,
        *,
        vocab: Vocabulary,
        input_table: np.ndarray | None,
        layers: list[RecurrentLayer],
        dense_kernel: np.ndarray,
        dense_bias: np.ndarray,
        meta: dict[str, Any],
        window: int | None = None,
        file_bytes: bytes | None = None,
        path: str | None = None,
        tag_table: np.ndarray | None = None,
    ) -> None:
        self.vocab = vocab
        self.layers = layers
        self.dense_kernel = dense_kernel
        self.dense_bias = dense_bias
        self.meta = meta
        self.window = window
        self.path = path
        self._file_bytes = file_bytes
        # layer 0's projected input for every character id: one row lookup per step
        first = layers[0]
        self.tags: tuple[str, ...] = tuple(meta.get("tags") or ())  # a tagged model's tags, in id order
        self.tag: str | None = None  # the tag this view generates in (`with_tag`; None: untagged)
        self._tag_table0: np.ndarray | None = None  # (K, G*u): each tag's share of layer 0's input
        if tag_table is not None:
            rows = input_table.shape[1] if input_table is not None else vocab.size
            base, self._tag_table0 = split_tables(first, input_table, tag_table, rows)
            self._base_table0 = base
            self._table0 = base + self._tag_table0[0]  # the first tag until `with_tag` picks one
            self.tag = self.tags[0] if self.tags else None
        else:
            table = first.project(input_table) if input_table is not None else first._kernel + first._bias_in
            self._table0 = np.ascontiguousarray(table, dtype=np.float32)
        self.sampling_bias = dense_bias.copy()  # the output bias with the unknown symbol masked out
        if vocab.unknown_id is not None:
            self.sampling_bias[vocab.unknown_id] = -np.inf  # the unknown symbol is never generated
        self._chars = (*vocab.chars, "\ufffd")  # id -> character as generated
        self.step_count = 0  # time steps run so far (tests use it to see that primes are read once)
        self._copy_checkers: dict[str | None, Any] = {}  # copy indexes opened by `copies`, by `against`

    # -- description --------------------------------------------------------------------------------
    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.meta.get("preprocessing", {})

    @property
    def recipe(self) -> str:
        return str(self.meta.get("recipe", "default"))

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

    # -- text <-> ids ---------------------------------------------------------------------------------
    def prepare(self, text: str) -> str:
        """Apply the model's preprocessing (Unicode form, case, ASCII) to user text such as a prime."""
        pre = self.preprocessing
        form = pre.get("normalize", "none")
        if form and form != "none":
            text = unicodedata.normalize(form, text)
        if pre.get("lowercase"):
            text = text.lower()
        if pre.get("ascii_only"):
            text = text.encode("ascii", errors="ignore").decode("ascii")
        return text

    def encode(self, text: str, unknown: str = "error") -> np.ndarray:
        return self.vocab.encode(self.prepare(text), unknown=unknown)

    # -- the network --------------------------------------------------------------------------------
    def initial_state(self, batch: int = 1) -> list[tuple[np.ndarray, ...]]:
        return [layer.zero_state(batch) for layer in self.layers]

    def with_tag(self, tag: str | None) -> CharModel:
        """This model generating, scoring and evaluating in `tag` (a tagged model; None: its first tag): a
        view sharing the weights, whose layer-0 table has the tag's row added (generation/tags.py)."""
        k = tag_index(self.tags, tag, self.path or "this model")
        if k < 0 or self.tags[k] == self.tag:
            return self
        view = copy.copy(self)
        view.tag = self.tags[k]
        view._table0 = np.ascontiguousarray(self._base_table0 + self._tag_table0[k], dtype=np.float32)
        view._copy_checkers = self._copy_checkers
        return view

    def classify(self, text: str, unknown: str = "skip") -> Any:
        """Which tag is `text` in? The posterior over the tags from its likelihood under each, in one batched
        pass (generation/tags.py: `Classified`, `.best`, `.ranked()`)."""
        from charlstm.generation.tags import classify

        return classify(self, text, unknown=unknown)

    def forward(
        self, ids: np.ndarray, state: list[tuple[np.ndarray, ...]] | None = None, tags: np.ndarray | None = None
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """Logits (B, T, V) for ids (B, T), continuing from `state` (zero if None); returns the new state.

        Layer by layer over the whole sequence, so inputs above the first layer are projected with one
        matmul per layer rather than one per step. Always on one BLAS thread: a matrix product split over
        threads rounds differently from one on a single thread, and a prime read here must leave the same state
        whatever the machine's thread count or another thread's limit (the server's batchers) at that moment.
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        batch, steps = ids.shape
        state = list(state) if state is not None else self.initial_state(batch)
        with OneBlasThread(True):
            xproj = self._table0[ids]  # (B, T, G*u)
            if tags is not None:  # a tag per row (tags.classify): its share instead of this view's
                xproj = self._base_table0[ids] + self._tag_table0[np.asarray(tags)][:, None, :]
            hidden = None
            for n, layer in enumerate(self.layers):
                if n > 0:
                    xproj = layer.project(hidden)
                outs = np.empty((batch, steps, layer.units), np.float32)
                st = state[n]
                for t in range(steps):
                    st = layer.step(xproj[:, t], st)
                    outs[:, t] = st[0]
                state[n] = st
                hidden = outs
            self.step_count += steps
            return hidden @ self.dense_kernel + self.dense_bias, state

    def logits(self, text_or_ids: str | np.ndarray) -> np.ndarray:
        """Logits (T, V) of one sequence read from the zero state: the next-character scores after each."""
        ids = self.encode(text_or_ids) if isinstance(text_or_ids, str) else np.asarray(text_or_ids)
        return self.forward(ids[None, :])[0][0]

    def _window_logits(self, history: np.ndarray, window: int) -> np.ndarray:
        """Logits for the next character after each row of `history`, re-reading its last `window` ids."""
        return self.forward(history[:, -window:])[0][:, -1]

    def step(
        self, ids: np.ndarray, state: list[tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
        """One time step for a batch of rows: feed `ids` (B,) after `state`; returns the logits for the next
        character (B, V; the unknown symbol masked to -inf) and the new state. What generation runs per
        character, for one request's rows or for the rows of many requests stacked together: every row is
        computed independently of the others, bit for bit (`rowwise`), so stacking never changes a text."""
        state = list(state)
        with self.blas_for(len(ids)):
            xproj = self._table0[ids]
            for n, layer in enumerate(self.layers):
                if n > 0:
                    xproj = layer.project(state[n - 1][0], by_row=True)
                state[n] = layer.step(xproj, state[n], by_row=True)
            self.step_count += 1
            return rowwise(state[-1][0], self.dense_kernel) + self.sampling_bias, state

    @staticmethod
    def blas_for(rows: int) -> OneBlasThread:
        """`with model.blas_for(rows):` one BLAS thread when stepping several rows (see `OneBlasThread`)."""
        return OneBlasThread(True) if rows > 1 else ALL_BLAS_THREADS

    # -- generation ---------------------------------------------------------------------------------
    @property
    def is_items(self) -> bool:
        """Trained with --items: a sample is one whole item (`items`), starting at the boundary symbol."""
        return bool(self.meta.get("items"))

    def items(self, n: int = 10, temperature: float = 1.0, **kwargs: Any) -> list[Any]:
        """`n` whole items of an items model, each marked new or seen in training (generation/items.py);
        only_new=True returns new ones only."""
        from charlstm.generation.items import generate_items

        return generate_items(self, n, temperature, **kwargs)

    def default_prime(self, rng: np.random.Generator) -> str:
        if self.is_items:
            return str(self.meta["items"]["boundary"])
        seeds = self.meta.get("seeds") or []
        if seeds:
            return str(seeds[int(rng.integers(len(seeds)))])
        return "\n" if "\n" in self.vocab else self.vocab.chars[0]

    def repeat_limits(self, max_repeat: int | str | None = None) -> np.ndarray | None:
        """The longest run of each character that generation allows, or None for no limit.

        "auto": the training text's own longest runs (recorded in the model file); N: N for every character;
        "none": no limit. None means the model's default: "auto" for the default recipe's models (measured:
        benchmarks/README.md, healthy samples at low temperatures), "none" for `classic` ones, which keep
        the lesson's exact sampling.
        """
        runs = self.meta.get("longest_runs")
        if max_repeat is None:
            max_repeat = "auto" if self.recipe != "classic" and runs else "none"
        if isinstance(max_repeat, str) and max_repeat.strip().isdigit():
            max_repeat = int(max_repeat)
        if max_repeat == "none":
            return None
        if max_repeat == "auto":
            if not runs or len(runs) != self.vocab.size:
                raise CharlstmError(
                    f"{self.path or 'this model'} does not record its training text's longest runs (trained "
                    "before charlstm kept them): give --max-repeat N or none"
                )
            return np.maximum(np.asarray(runs, dtype=np.int64), 1)
        if isinstance(max_repeat, bool) or not isinstance(max_repeat, int) or max_repeat < 1:
            raise CharlstmError(f"max-repeat must be auto, none or an integer >= 1, got {max_repeat!r}")
        return np.full(self.vocab.size, max_repeat, dtype=np.int64)

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
    ) -> Generation:
        """A checked, ready-to-step `Generation` (state.py) for these settings; nothing is computed yet.

        The one place where generation arguments are checked and the prime is chosen and encoded, shared by
        `stream`/`generate`, the CLI and the server, so that the same seed gives the same text everywhere.
        `stop` is one string or several: a row ends once it has generated any of them. `max_repeat`: see
        `repeat_limits` (None: the model's default). min_p, typical_p: sampling truncations (sampling.py);
        no_repeat_ngram, repetition_penalty, presence_penalty, frequency_penalty, logit_bias ({id: bias}, ids
        as `vocab.chars` numbers them): logit processors with Hugging Face's and OpenAI's meanings
        (processors.py); no_repeat_ngram None: the model's default, `DEFAULT_NO_REPEAT_NGRAM` (20) for the
        default recipe's models (chosen by measurement, benchmarks/README.md), off (0) for classic ones and
        models saved by `save_keras_model`, which keep the lesson's sampling. logprobs = N: record each step's log-probabilities (`Generation.token_logprobs`).
        """
        sampling = Sampling(temperature, top_k, top_p, min_p, typical_p)
        if no_repeat_ngram is None:  # the model's default: on for the default recipe, off for the lesson's and
            # for Keras models saved with save_keras_model (their samplers are the lesson's: SampleText)
            no_repeat_ngram = DEFAULT_NO_REPEAT_NGRAM if self.recipe == "default" else 0
        processors = build_processors(
            self.vocab.size, self.repeat_limits(max_repeat), processors, no_repeat_ngram=no_repeat_ngram,
            repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, logit_bias=logit_bias,
        )
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or logprobs < 0):
            raise CharlstmError(f"logprobs must be an integer >= 0, got {logprobs!r}")
        if not isinstance(length, int) or length < 0:
            raise CharlstmError(f"length must be an integer >= 0, got {length}")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise CharlstmError(f"num-samples must be an integer >= 1, got {num_samples}")
        if context not in ("stateful", "window"):
            raise CharlstmError(f"context must be 'stateful' or 'window', got {context!r}")
        if prime is None:  # its own generator, so the draws below do not depend on whether a prime was given
            prime = self.default_prime(np.random.default_rng(seed))
        prime_ids = self.encode(prime, unknown=unknown).astype(np.int64)
        if len(prime_ids) == 0:
            raise CharlstmError(
                "the prime is empty (after dropping unknown characters); give at least one character"
            )
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if context == "window":
            window = self.window or int(self.meta.get("config", {}).get("maxlen", 40))
            ctx: StatefulContext | WindowContext = WindowContext(self, prime_ids, num_samples, window)
        else:
            ctx = StatefulContext(self, prime_ids, num_samples)
        return Generation(
            ctx,
            chars=self._chars,
            length=length,
            sampling=sampling,
            seed=seed,
            stops=stops,
            processors=processors,
            logprobs=logprobs,
        )

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
        """Yield generated characters one step at a time: a str, or a list of str when num_samples > 1
        (with "" for a sample that has already met its stop string). options: `generation`'s keyword-only
        settings (min_p, typical_p, no_repeat_ngram, repetition_penalty, presence/frequency_penalty,
        logit_bias).

        context="stateful" (default) reads the prime once and then steps each layer once per character;
        context="window" re-reads the last `window` characters from a zero state for every character, the
        lesson's way, kept for faithful comparison with classic models. Arguments are checked at once;
        nothing is computed until the first character is asked for.
        """
        gen = self.generation(
            prime, length, temperature, top_k, top_p, seed, num_samples, stop, unknown, context, processors,
            max_repeat=max_repeat, **options,
        )
        return _run(gen, single=num_samples == 1)

    def generate(
        self, prime: str | None = None, length: int = 400, temperature: float = 1.0, **kwargs: Any
    ) -> Any:
        """Generated text (without the prime): a str, or a list of str when num_samples > 1."""
        pieces = list(self.stream(prime, length, temperature, **kwargs))
        if kwargs.get("num_samples", 1) == 1:
            return "".join(pieces)
        return ["".join(p[b] for p in pieces) for b in range(kwargs["num_samples"])]

    # -- distributions and scores (scoring.py) ---------------------------------------------------------
    def next_chars(self, prefix: str, k: int = 5, **settings: Any) -> list[tuple[str, float]]:
        """The k likeliest next characters after `prefix`, with the probabilities `generate(prefix,
        **settings)` would draw them with (same preprocessing, repeat guard, processors and sampling)."""
        return scoring.next_chars(self, prefix, k, **settings)

    def distribution(self, prefix: str, **settings: Any) -> np.ndarray:
        """The next character's probabilities (V,) after `prefix`, as `generate` would sample them."""
        return scoring.distribution(self, prefix, **settings)

    def score(self, text: str, unknown: str = "error", top: int = 0) -> scoring.Scored:
        """Every character's log-probability given the ones before it, in one stateful pass, with the text's
        nats and bits per character (`.summary()`: what `evaluate(text, streams=1)` reports)."""
        return scoring.score(self, text, unknown=unknown, top=top)

    def copies(self, text: str, against: str | os.PathLike[str] | None = None, min_span: int = 20) -> Any:
        """The copy check of `text` (generation/copies.py): the longest span also found in the training text
        and the share of characters in spans of at least `min_span`, with their positions (a `CopyReport`).

        against: a file, folder or prepared corpus to check against instead of the training text (which is
        found from what the model file records). The index is built once and kept beside the corpus.
        """
        from charlstm.generation.copies import checker_for_model

        key = None if against is None else os.fspath(against)
        if key not in self._copy_checkers:
            self._copy_checkers[key] = checker_for_model(self.meta, against, self.path)
        return self._copy_checkers[key].check(text, min_span)

    # -- evaluation (evaluation.py) -------------------------------------------------------------------
    def evaluate(
        self,
        text: str,
        unknown: str = "error",
        context: str | None = None,
        window: int | None = None,
        streams: int = 64,
    ) -> dict[str, float]:
        """Mean next-character loss over `text` in nats and bits per character.

        context="stateful": the text is read as `streams` contiguous pieces in parallel, each from a zero
        state (long context, as generation sees it). context="window": every character is predicted from at
        most `window` characters before it, re-read from a zero state (the classic recipe's view).
        Default: window for classic (windowed) models, stateful otherwise.
        """
        return evaluation.evaluate(self, text, unknown=unknown, context=context, window=window, streams=streams)

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model file this object was loaded from (atomically) to `path`."""
        from charlstm.fileio import write_atomic

        if self._file_bytes is None:
            raise CharlstmError("this model was not loaded from a file and cannot be saved by the runtime")
        write_atomic(path, self._file_bytes)


def _run(gen: Generation, single: bool) -> Iterator[Any]:
    """Step one generation to its end, yielding each step's characters (a str, or one per row)."""
    while not gen.finished:
        step([gen])
        yield gen.pieces[0] if single else gen.pieces



def model_from_parts(
    config: dict[str, Any],
    meta: dict[str, Any],
    weights: list[list[np.ndarray]] | bytes,
    *,
    file_bytes: bytes | None = None,
    path: str | None = None,
) -> CharModel:
    """Assemble a CharModel from a Keras model config and per-layer weights (or the h5 bytes)."""
    layer_cfgs = config["config"]["layers"]
    classes = [lc["class_name"] for lc in layer_cfgs]
    check_layers(layer_cfgs, path)
    per_layer = read_weights(weights, classes) if isinstance(weights, bytes) else weights
    vocab = Vocabulary.from_json(meta["vocab"])
    input_table = tag_table = None
    rnn: list[RecurrentLayer] = []
    dense = None
    window = None
    for lc, w in zip(layer_cfgs, per_layer, strict=False):
        cls, cfg = lc["class_name"], lc["config"]
        if cls == "InputLayer":
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if shape and len(shape) > 1 and shape[1] is not None:
                window = int(shape[1])
        elif cls == "Embedding" and cfg.get("name") == "tag_embedding":
            tag_table = w[0]
        elif cls == "Embedding":
            input_table = w[0]
        elif cls in ("LSTM", "GRU"):
            rnn.append(RecurrentLayer(cls.lower(), int(cfg["units"]), w[0], w[1], w[2]))
        elif cls == "Dense":
            dense = (w[0], w[1])
    if not rnn or dense is None:
        raise CharlstmError(f"{path or 'model'}: expected recurrent layers and a Dense head")
    return CharModel(
        vocab=vocab,
        input_table=input_table,
        layers=rnn,
        dense_kernel=dense[0],
        dense_bias=dense[1],
        meta=meta,
        window=window,
        file_bytes=file_bytes,
        path=path,
        tag_table=tag_table,
    )


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
