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


# --mixed-precision values -> Keras dtype policies (variables stay float32; the math runs in 16 bits)
PRECISIONS = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def dtype_policy(mixed_precision: str | None) -> str | None:
    """The Keras dtype policy for a `--mixed-precision` value (None: float32 throughout)."""
    if mixed_precision in (None, "none", "fp32"):
        return None
    if mixed_precision not in PRECISIONS:
        raise CharlstmError(f"--mixed-precision must be bf16 or fp16, got {mixed_precision!r}")
    return PRECISIONS[mixed_precision]


def build_model(spec: ModelSpec, mixed_precision: str | None = None) -> Any:
    """The network for `spec`; call `keras.utils.set_random_seed` first for reproducible weights.

    mixed_precision ("bf16" | "fp16"): every layer but the head computes in 16 bits through a per-layer Keras
    dtype policy (no global state); the logits layer stays float32, so the softmax and the loss are float32.
    Weights are float32 either way, so the file reads the same in the NumPy runtime.
    """
    import keras

    spec.validate()
    policy = dtype_policy(mixed_precision)
    inputs = keras.Input(shape=(spec.window,), dtype="int32", name="chars")
    if spec.input == "onehot":
        x = keras.layers.CategoryEncoding(num_tokens=spec.vocab_size, output_mode="one_hot", name="onehot")(
            inputs
        )
    else:
        x = keras.layers.Embedding(spec.vocab_size, spec.embedding_dim, name="embedding", dtype=policy)(inputs)
    rnn = keras.layers.LSTM if spec.cell == "lstm" else keras.layers.GRU
    for n in range(spec.layers):
        last = n == spec.layers - 1
        if spec.dropout and n > 0:
            x = keras.layers.Dropout(spec.dropout, name=f"dropout_{n}", dtype=policy)(x)
        x = rnn(spec.units, return_sequences=not (last and spec.window), name=f"{spec.cell}_{n}", dtype=policy)(x)
    if spec.dropout:
        x = keras.layers.Dropout(spec.dropout, name="dropout_out", dtype=policy)(x)
    logits = keras.layers.Dense(spec.vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=f"charlstm_{spec.cell}")
