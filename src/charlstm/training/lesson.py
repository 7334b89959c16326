"""Bring your own Keras model: charlstm's pieces for the lesson's own code.

The lesson's students write a `Sequential` (LSTM(128) + Dense(V, softmax) on one-hot windows), call
`model.fit` and print samples at four temperatures from a `LambdaCallback`. These pieces keep that code and
its math, drop what does not scale, and hand the model to the rest of charlstm:

- `OneHotWindows`: `charlstm.lesson_windows`' id windows one-hot encoded one batch at a time, for a model
  whose input is one-hot (the lesson's `keras.Input(shape=(maxlen, V))`);
- `SampleText`: the per-epoch samples at chosen temperatures, for any Keras model that maps id windows or
  one-hot windows to next-character probabilities or logits;
- `save_keras_model`: the model plus its vocabulary in one plain `.keras` file that `charlstm.load`,
  `charlstm generate` and `charlstm serve` read with the NumPy runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary, longest_runs
from charlstm.errors import CharlstmError
from charlstm.generation.model import load as load_runtime
from charlstm.generation.sampling import check_options, sample
from charlstm.training.engines import load_engines
from charlstm.training.saving import save_model

load_engines()  # Keras without TensorFlow's start-up lines (engines.py), whoever imports this first
import keras  # noqa: E402

if keras.backend.backend() == "torch":  # a user's own LSTM layers train on torch's fused kernel too
    from charlstm.training import torch_lstm

    torch_lstm.install()

LESSON_TEMPERATURES = (0.2, 0.5, 1.0, 1.2)


class OneHotWindows(keras.utils.PyDataset):
    """(one-hot x, y) batches made from id windows one batch at a time, for a model whose input is one-hot:
    memory for one batch (128 x 40 x V floats), not for the corpus.

    `one_hot_targets=True` one-hot encodes y too, for the lesson's `categorical_crossentropy`; with ids (the
    default) compile with `sparse_categorical_crossentropy`. The order is shuffled every epoch from `seed`.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        vocab_size: int,
        batch_size: int = 128,
        *,
        one_hot_targets: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if len(x) != len(y):
            raise CharlstmError(f"x has {len(x)} windows but y has {len(y)} targets")
        self.x, self.y, self.vocab_size, self.batch_size = x, y, int(vocab_size), int(batch_size)
        self.one_hot_targets, self.shuffle, self.seed = one_hot_targets, shuffle, seed
        self._eye = np.eye(self.vocab_size, dtype=np.float32)
        self._epoch = 0
        self._order = self._arrange()

    def _arrange(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, self._epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        y = self.y[rows]
        return self._eye[self.x[rows]], (self._eye[y] if self.one_hot_targets else y)

    def on_epoch_end(self) -> None:
        self._epoch += 1
        self._order = self._arrange()


def input_layout(model: Any, vocab_size: int) -> tuple[str, int | None]:
    """("ids" | "one_hot", window length or None) from the model's input shape."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        raise CharlstmError("the model has no known input shape yet: start it with keras.Input(shape=...)") from None
    if len(shape) == 3:
        if shape[2] != vocab_size:
            raise CharlstmError(
                f"the model's one-hot input is {shape[2]} wide but the vocabulary has {vocab_size} symbols"
            )
        return "one_hot", shape[1]
    if len(shape) == 2:
        return "ids", shape[1]
    raise CharlstmError(
        f"the model's input shape {shape} is neither id windows (batch, time) nor one-hot windows "
        "(batch, time, vocabulary)"
    )


def final_activation(model: Any) -> str | None:
    """The activation of the model's head ('softmax', 'linear', ...), if its layers say."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        if isinstance(layer, (keras.layers.LSTM, keras.layers.GRU)):
            return None
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return str(getattr(activation, "__name__", activation))
    return None


class SampleText(keras.callbacks.Callback):
    """After every `every` epochs, `length` generated characters at each temperature from one seed, as the
    lesson's LambdaCallback prints them; kept in `samples` (and printed unless `print_fn=None`).

    Any Keras model will do whose input is a window of character ids (batch, time) or of one-hot rows (batch,
    time, V) and whose output is the next character's probabilities or logits (batch, V), or one such row
    per position (batch, time, V: the last is used). `outputs="auto"` takes probabilities from a softmax
    head (else it checks whether rows sum to one); "probabilities" or "logits" say it outright. The seed is
    `seed`, or each epoch a random `maxlen`-character piece of `text`, as the lesson picks it. Every new
    character re-reads the last `maxlen` (or the model's window) characters, the lesson's way, with all the
    temperatures stepped together as one batch. Samples print when the epoch's progress bar has finished.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        *,
        seed: str | None = None,
        text: str | None = None,
        temperatures: Sequence[float] = LESSON_TEMPERATURES,
        length: int = 400,
        maxlen: int = 40,
        every: int = 1,
        outputs: str = "auto",
        random_seed: int = 0,
        print_fn: Callable[[str], None] | None = print,
    ) -> None:
        super().__init__()
        if seed is None and not text:
            raise CharlstmError("SampleText needs a seed string or the text to pick seeds from")
        if outputs not in ("auto", "probabilities", "logits"):
            raise CharlstmError(f"outputs must be 'auto', 'probabilities' or 'logits', got {outputs!r}")
        for t in temperatures:
            check_options(t)
        self.vocab, self.seed, self.text = vocab, seed, text
        self.temperatures, self.length, self.maxlen = [float(t) for t in temperatures], int(length), int(maxlen)
        self.every, self.outputs, self.random_seed = max(1, int(every)), outputs, random_seed
        self.print_fn = print_fn
        self.samples: list[dict[str, Any]] = []
        self._pending: str | None = None

    def _probabilities(self) -> bool | None:
        """True/False when known from the settings or the model's head; None: decide from the numbers."""
        if self.outputs != "auto":
            return self.outputs == "probabilities"
        activation = final_activation(self.model)
        return None if activation is None else activation == "softmax"

    def _logits(self, ids: np.ndarray, layout: str, probabilities: bool | None) -> tuple[np.ndarray, bool]:
        x = np.eye(self.vocab.size, dtype=np.float32)[ids] if layout == "one_hot" else ids
        out = np.asarray(self.model.predict_on_batch(x), dtype=np.float64)
        if out.ndim == 3:
            out = out[:, -1]
        if probabilities is None:
            probabilities = bool(np.all(out >= 0) and np.allclose(out.sum(-1), 1.0, atol=1e-3))
        if probabilities:
            with np.errstate(divide="ignore"):
                out = np.log(out)
        if self.vocab.unknown_id is not None:
            out[:, self.vocab.unknown_id] = -np.inf  # never generate the unknown symbol
        return out, probabilities

    def generate(self, seed: str, random_seed: int | None = None) -> dict[float, str]:
        """`length` characters after `seed` at each temperature (what is printed after an epoch)."""
        layout, window = input_layout(self.model, self.vocab.size)
        window = window or self.maxlen
        prime = self.vocab.encode(seed, unknown="skip").astype(np.int32)
        if len(prime) == 0:
            raise CharlstmError(f"the seed {seed!r} has no character of the vocabulary")
        rows = len(self.temperatures)
        history = np.zeros((rows, len(prime) + self.length), dtype=np.int32)
        history[:, : len(prime)] = prime
        rng = np.random.default_rng([self.random_seed if random_seed is None else random_seed, 7])
        probabilities = self._probabilities()
        for i in range(len(prime), len(prime) + self.length):
            ctx = history[:, max(0, i - window) : i]
            if ctx.shape[1] < window:  # a seed shorter than the window: pad on the left with its first id
                ctx = np.concatenate([np.repeat(ctx[:, :1], window - ctx.shape[1], axis=1), ctx], axis=1)
            logits, probabilities = self._logits(ctx, layout, probabilities)
            uniforms = rng.random(rows)
            for r, t in enumerate(self.temperatures):
                history[r, i] = sample(logits[r : r + 1], uniforms[r : r + 1], t)[0]
        return {t: self.vocab.decode(history[r, len(prime) :]) for r, t in enumerate(self.temperatures)}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        rng = np.random.default_rng([self.random_seed, epoch])
        seed = self.seed
        if seed is None:
            start = int(rng.integers(0, max(1, len(self.text) - self.maxlen)))
            seed = self.text[start : start + self.maxlen]
        lines = [f"----- Epoch {epoch + 1}: generating with seed: {seed!r}"]
        for t, generated in self.generate(seed, random_seed=int(rng.integers(2**31))).items():
            self.samples.append({"epoch": epoch + 1, "temperature": t, "seed": seed, "text": generated})
            lines += [f"----- temperature: {t}", seed + generated, ""]
        self._pending = "\n".join(lines)

    def _flush(self) -> None:
        # after Keras' progress bar has ended its line (it runs after every user callback's on_epoch_end)
        if self._pending is not None and self.print_fn is not None:
            self.print_fn(self._pending)
        self._pending = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._flush()


def save_keras_model(
    model: Any,
    vocab: Vocabulary,
    path: str | os.PathLike[str],
    *,
    text: str | None = None,
    lowercase: bool = False,
    ascii_only: bool = False,
    name: str | None = None,
) -> Path:
    """Save your own Keras model and its vocabulary as one charlstm model file for `charlstm.load`,
    `charlstm generate` and `charlstm serve`; `keras.saving.load_model(path)` still gives your model back.

    The NumPy runtime runs a chain of Embedding or CategoryEncoding (or one-hot input), LSTM/GRU layers in
    their default settings, Dropout and one Dense head, linear or softmax (`modelfile.check_layers`):
    anything else is refused with the reason and nothing is written. `text`, the training text, gives the
    default primes and the repeat limits; `lowercase`/`ascii_only` say how primes are prepared (the lesson's
    text is lowercased: pass `lowercase=True`); `name` names the corpus in `charlstm serve`.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise CharlstmError(f"{path}: a model file's name must end in .keras (Keras insists)")
    layout, window = input_layout(model, vocab.size)
    width = model.outputs[0].shape[-1]
    if width != vocab.size:
        raise CharlstmError(f"the model predicts {width} symbols but the vocabulary has {vocab.size}")
    meta: dict[str, Any] = {
        "recipe": "keras",
        "vocab": vocab.to_json(),
        "preprocessing": {"normalize": "none", "lowercase": bool(lowercase), "ascii_only": bool(ascii_only)},
        "config": {"maxlen": window or 40},
        "model": {"input": layout, "window": window},
        "corpus": {"name": name},
    }
    if text:
        ids = vocab.encode(text, unknown="replace" if vocab.has_unknown else "skip")
        starts = np.random.default_rng(0).integers(0, max(1, len(text) - 40), size=16)
        meta["seeds"] = [text[s : s + 40] for s in starts.tolist()]
        meta["longest_runs"] = longest_runs(ids, vocab.size).tolist()

    def check(tmp: Path) -> None:  # the runtime refuses what it cannot run, before the file takes its name
        try:
            load_runtime(tmp)
        except CharlstmError as exc:
            raise CharlstmError(str(exc).replace(str(tmp), str(path))) from None

    save_model(model, path, meta, check=check)
    return path
