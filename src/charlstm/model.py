"""ModelSpec -> keras.Model: a plain Functional graph of built-in layers, integers in, logits out.

Because only built-in layers are used, a saved model loads with `keras.saving.load_model` (safe mode) anywhere,
and the NumPy runtime can read it. LSTM/GRU keep their cuDNN-compatible settings (tanh, sigmoid, no recurrent
dropout, unroll=False, use_bias=True) so that a GPU gets the fused kernel; dropout sits between layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from charlstm.errors import CharlstmError

CELLS = ("lstm", "gru")
INPUTS = ("embedding", "onehot")


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    input: str = "embedding"  # "onehot" reproduces the lesson's one-hot input, inside the model
    embedding_dim: int = 64
    cell: str = "lstm"
    layers: int = 2
    units: int = 128
    dropout: float = 0.0
    window: int | None = None  # fixed input length + last-step output (the lesson); None: every position

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise CharlstmError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.input not in INPUTS:
            raise CharlstmError(f"model input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        for name in ("layers", "units", "embedding_dim"):
            if getattr(self, name) < 1:
                raise CharlstmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise CharlstmError(f"--dropout must be in [0, 1), got {self.dropout}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_model(spec: ModelSpec) -> Any:
    """The network for `spec`; call `keras.utils.set_random_seed` first for reproducible weights."""
    import keras

    spec.validate()
    inputs = keras.Input(shape=(spec.window,), dtype="int32", name="chars")
    if spec.input == "onehot":
        x = keras.layers.CategoryEncoding(num_tokens=spec.vocab_size, output_mode="one_hot", name="onehot")(
            inputs
        )
    else:
        x = keras.layers.Embedding(spec.vocab_size, spec.embedding_dim, name="embedding")(inputs)
    rnn = keras.layers.LSTM if spec.cell == "lstm" else keras.layers.GRU
    for n in range(spec.layers):
        last = n == spec.layers - 1
        if spec.dropout and n > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{n}")(x)
        x = rnn(spec.units, return_sequences=not (last and spec.window), name=f"{spec.cell}_{n}")(x)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout, name="dropout_out")(x)
    logits = keras.layers.Dense(spec.vocab_size, name="logits")(x)
    return keras.Model(inputs, logits, name=f"charlstm_{spec.cell}")
