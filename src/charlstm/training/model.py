"""ModelSpec -> keras.Model: a plain Functional graph of built-in layers, integers in, logits out.

Because only built-in layers are used, a saved model loads with `keras.saving.load_model` (safe mode) anywhere,
and the NumPy runtime can read it. LSTM/GRU keep their cuDNN-compatible settings (tanh, sigmoid, no recurrent
dropout, unroll=False, use_bias=True) so that a GPU gets the fused kernel; dropout sits between layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from charlstm.errors import CharlstmError

if TYPE_CHECKING:
    from charlstm.data.vocab import Vocabulary
    from charlstm.training.recipes import TrainConfig

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
    num_tags: int = 0  # > 0: a second input, the tag id at every position, embedded beside the character
    tag_dim: int = 16

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
        data = asdict(self)
        if not self.num_tags:  # an untagged model's record as before tags existed
            del data["num_tags"], data["tag_dim"]
        return data


# --mixed-precision values -> Keras dtype policies (variables stay float32; the math runs in 16 bits)
PRECISIONS = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def dtype_policy(mixed_precision: str | None) -> str | None:
    """The Keras dtype policy for a `--mixed-precision` value (None: float32 throughout)."""
    if mixed_precision in (None, "none", "fp32"):
        return None
    if mixed_precision not in PRECISIONS:
        raise CharlstmError(f"--mixed-precision must be bf16 or fp16, got {mixed_precision!r}")
    return PRECISIONS[mixed_precision]


BF16_MIN_UNITS = 256  # `auto`: bf16 from this width on (below it a step is overhead-bound: no faster in bf16)


def resolve_precision(mixed_precision: str | None, units: int, cell: str = "lstm") -> str | None:
    """`--mixed-precision auto` made concrete for a network: bf16 where the torch engine trains an LSTM of at
    least BF16_MIN_UNITS units on a CPU that computes bf16 natively, float32 elsewhere (benchmarks/README.md,
    issue 23: at 2 x 256 bf16 trained 1.2-1.4x the steps and ended lower at equal time; at 2 x 128 it was no
    faster). Any other value is returned as it is."""
    if mixed_precision != "auto":
        return mixed_precision
    import keras

    if keras.backend.backend() != "torch" or units < BF16_MIN_UNITS:
        return None
    from charlstm.training.torch_engine import auto_precision

    return auto_precision(cell)


def build_model(spec: ModelSpec, mixed_precision: str | None = None) -> Any:
    """The network for `spec`; call `keras.utils.set_random_seed` first for reproducible weights.

    mixed_precision ("bf16" | "fp16"): every layer but the head computes in 16 bits through a per-layer Keras
    dtype policy (no global state); the logits layer stays float32, so the softmax and the loss are float32.
    Weights are float32 either way, so the file reads the same in the NumPy runtime.
    """
    import keras

    spec.validate()
    policy = dtype_policy(resolve_precision(mixed_precision, spec.units, spec.cell))
    inputs = keras.Input(shape=(spec.window,), dtype="int32", name="chars")
    if spec.input == "onehot":
        x = keras.layers.CategoryEncoding(num_tokens=spec.vocab_size, output_mode="one_hot", name="onehot")(
            inputs
        )
    else:
        x = keras.layers.Embedding(spec.vocab_size, spec.embedding_dim, name="embedding", dtype=policy)(inputs)
    if spec.num_tags:  # the tag at every position, embedded and set beside the character's input to layer 0
        tags = keras.Input(shape=(spec.window,), dtype="int32", name="tags")
        t = keras.layers.Embedding(spec.num_tags, spec.tag_dim, name="tag_embedding", dtype=policy)(tags)
        x = keras.layers.Concatenate(name="with_tag", dtype=policy)([x, t])
        inputs = {"chars": inputs, "tags": tags}
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


def model_spec(config: TrainConfig, vocab: Vocabulary, num_tags: int = 0) -> ModelSpec:
    """The network a config describes, for a vocabulary (and `num_tags` tags: a tagged model)."""
    return ModelSpec(
        vocab_size=vocab.size,
        input=config.input,
        embedding_dim=config.embedding_dim,
        cell=config.cell,
        layers=config.layers,
        units=config.units,
        dropout=config.dropout,
        window=config.maxlen if config.mode == "windows" else None,
        num_tags=num_tags,
        tag_dim=config.tag_dim,
    )



def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The recipe's optimizer with its learning-rate schedule over `steps_per_epoch` x epochs (a budgeted
    run's rate is a plain value that budget_clock.BudgetClock sets step by step)."""
    import keras

    lr: Any = config.lr  # constant; and a budgeted run's, whose rate budget_clock.BudgetClock sets step by step
    total = max(1, steps_per_epoch * config.epochs)
    by_epochs = not config.time_budget
    if by_epochs and config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total, alpha=0.05)
    elif by_epochs and config.lr_schedule == "step":
        every = steps_per_epoch * max(1, config.epochs // 4)
        lr = keras.optimizers.schedules.ExponentialDecay(config.lr, every, 0.5, staircase=True)
    clip = {"clipnorm": config.clipnorm} if config.clipnorm else {}
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate=lr, **clip)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, **clip)
    if config.mixed_precision == "fp16":  # float16 gradients underflow without a (dynamic) loss scale
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_model(model: Any, config: TrainConfig, steps_per_epoch: int) -> None:
    """Compile as every training path does (trainer, budget probes, backend probe): one place for the
    optimizer, the from-logits loss and the backend's jit setting."""
    import keras

    from charlstm.training.device import jit_compile

    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile(),
    )
    if keras.backend.backend() == "torch":  # the fused CPU LSTM and the lean step (torch_engine)
        from charlstm.training import torch_engine

        torch_engine.prepare(model)

