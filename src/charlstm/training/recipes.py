"""Every training setting in one dataclass, and the named presets ("recipes") that fill it.

`classic` is the lesson, exactly: 40-character windows moved 3 at a time, one-hot input, LSTM(128), softmax,
RMSprop(0.01), batch 128, 60 epochs, lowercase + ASCII-only, raw file (Gutenberg header kept), no held-out
text. `default` is what char-rnn, torch-rnn and nanoGPT do instead: a loss at every position of contiguous
sequences, embeddings, stacked LSTMs with dropout, Adam with clipping and a cosine learning-rate decay.
The default's numbers were chosen by measurement on this project's 2-core CPU (see benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from charlstm.data.sources import TextOptions
from charlstm.errors import CharlstmError


@dataclass
class TrainConfig:
    """Every training setting: the text options (data.sources.TextOptions, shared with `prepare`) and the
    rest. Settings go in and out flat (`make_config(normalize=..., layers=...)`, `to_json`, config.json):
    `text.normalize` is the setting `normalize`."""

    recipe: str = "default"
    text: TextOptions = field(default_factory=TextOptions)  # encoding ... max_chars, val_frac, val_file
    # data
    mode: str = "sequences"  # "windows" = the lesson's (maxlen, step) windows, one target each
    maxlen: int = 40
    step: int = 3
    seq_len: int = 64
    batch_size: int = 64
    carry_state: bool | None = None  # streams + the LSTM state carried across batches (training/carry.py)
    carry_reset: float = 0.0  # with carry_state: the chance a row starts from a zero state anyway
    items: bool = False  # a list: one item a line (or item_sep), boundaries, shuffled items (data/items.py)
    item_sep: str = "line"  # "line", "blank" (a blank line between items) or a literal separator
    # tags (data/tags.py): one model, many styles, chosen when generating
    tags: str | None = None  # "folder" | "file": each file's tag; items: "field" (tag_field of each item)
    tag_field: int | None = None  # items: the tag is this field (1-based) of each item, cut at item_field_sep
    item_field_sep: str = "\t"
    tag_balance: str = "none"  # "none" (the text's own shares), "equal" (every tag as many rows an epoch)
    tag_dim: int = 16
    # model
    input: str = "embedding"
    embedding_dim: int = 64
    cell: str = "lstm"
    layers: int = 2
    units: int = 128
    dropout: float = 0.1
    mixed_precision: str | None = None  # "bf16" | "fp16": 16-bit math, float32 weights and logits; "auto":
    # bf16 where the torch engine trains on a CPU that computes it (AVX-512-BF16, AMX), else float32
    # (`model.resolve_precision`: from 256 units on); "none": float32
    # optimisation
    optimizer: str = "adam"
    lr: float = 5e-3
    clipnorm: float | None = 1.0
    lr_schedule: str = "cosine"
    epochs: int = 30
    time_budget: float | None = None  # seconds (--time): train for this long instead of `epochs`
    early_stopping: int | None = None
    seed: int = 1337
    # reporting
    sample_temperatures: list[float] = field(default_factory=lambda: [0.2, 0.5, 1.0, 1.2])
    sample_length: int = 400
    verbose: int = 1
    tensorboard: bool = False

    def to_json(self) -> dict[str, Any]:
        """The flat settings, as config.json and every model file record them."""
        own = dataclasses.asdict(self)
        text = own.pop("text")
        if self.tags is None:  # an untagged run's record as before tags existed
            for key in TAG_KEYS:
                del own[key]
        return {"recipe": own.pop("recipe"), **text, **own}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """From flat settings (unknown keys, e.g. of a newer version, are ignored)."""
        text = {k: v for k, v in data.items() if k in TEXT_FIELDS}
        own = {k: v for k, v in data.items() if k in OWN_FIELDS}
        return cls(text=TextOptions(**text), **own)

    def validate(self) -> None:
        if self.epochs < 1:
            raise CharlstmError(f"--epochs must be >= 1, got {self.epochs}")
        if self.mode not in ("sequences", "windows"):
            raise CharlstmError(f"data mode must be 'sequences' or 'windows', got {self.mode!r}")
        for name in ("batch_size", "seq_len", "maxlen", "step"):
            if getattr(self, name) < 1:
                raise CharlstmError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.text.val_frac < 1:
            raise CharlstmError(f"--val-frac must be in [0, 1), got {self.text.val_frac}")
        if self.lr <= 0:
            raise CharlstmError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise CharlstmError(f"optimizer must be adam or rmsprop, got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine", "step", "wsd"):
            raise CharlstmError(f"--lr-schedule must be constant, cosine, step or wsd, got {self.lr_schedule!r}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise CharlstmError(f"--time must be a positive duration, got {self.time_budget} s")
        if self.time_budget is None and self.lr_schedule == "wsd":
            raise CharlstmError("--lr-schedule wsd is laid over a time budget: give --time (e.g. --time 10m)")
        if self.time_budget is not None and self.lr_schedule == "step":
            raise CharlstmError("--lr-schedule step counts epochs; with --time use wsd, cosine or constant")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise CharlstmError(f"--early-stopping must be >= 1 epochs, got {self.early_stopping}")
        if not 0 <= self.carry_reset < 1:
            raise CharlstmError(f"--carry-reset must be in [0, 1), got {self.carry_reset}")
        if self.mixed_precision in ("none", "fp32"):
            self.mixed_precision = None
        if self.mixed_precision not in (None, "bf16", "fp16", "auto"):
            raise CharlstmError(f"--mixed-precision must be bf16, fp16, auto or none, got {self.mixed_precision!r}")
        if self.items and self.mode != "sequences":
            raise CharlstmError("--items trains on sequences of items: use the default recipe, not classic")
        if not self.item_sep:
            raise CharlstmError("--item-sep must be line, blank or a non-empty separator string")
        if self.tag_field is not None:
            if not self.items:
                raise CharlstmError("--tag-field N reads a field of each item: give --items too")
            if self.tag_field < 1:
                raise CharlstmError(f"--tag-field counts fields from 1, got {self.tag_field}")
            self.tags = "field"
        if self.tags not in (None, "folder", "file", "field"):
            raise CharlstmError(f"--tags must be folder or file, got {self.tags!r}")
        if self.tags == "field" and self.tag_field is None:
            raise CharlstmError("--tags field needs --tag-field N")
        if self.tags in ("folder", "file") and self.items:
            raise CharlstmError("a list's items take their tag from a field: --tag-field N, not --tags")
        if self.tags and self.mode != "sequences":
            raise CharlstmError("--tags trains on sequences: use the default recipe, not classic")
        if self.tag_balance not in ("none", "equal"):
            raise CharlstmError(f"--tag-balance must be none or equal, got {self.tag_balance!r}")
        if not self.item_field_sep:
            raise CharlstmError("--item-field-sep must be a non-empty string")
        if any(t < 0 for t in self.sample_temperatures):
            raise CharlstmError("sample temperatures must be >= 0")


TAG_KEYS = ("tags", "tag_field", "item_field_sep", "tag_balance", "tag_dim")

RECIPES: dict[str, dict[str, Any]] = {
    # issue 23 (benchmarks/README.md, "The best model five minutes buy"): the state carried across batches, a
    # row restarted from zeros with probability 0.05, bf16 where the CPU computes it: see EVIDENCE
    "default": {"carry_state": True, "carry_reset": 0.05, "mixed_precision": "auto"},
    "classic": {
        "carry_state": False,
        "strip_gutenberg": False,
        "normalize": "none",
        "lowercase": True,
        "ascii_only": True,
        "mode": "windows",
        "maxlen": 40,
        "step": 3,
        "batch_size": 128,
        "val_frac": 0.0,
        "input": "onehot",
        "layers": 1,
        "units": 128,
        "dropout": 0.0,
        "optimizer": "rmsprop",
        "lr": 0.01,
        "clipnorm": None,
        "lr_schedule": "constant",
        "epochs": 60,
    },
}


# The default recipe's choices that rest on issue 23's measurements, and those measurements (config.json
# "defaults", so a run says why it trained as it did); the tables: benchmarks/README.md.
EVIDENCE = {
    "carry_state": (
        "benchmarks/README.md#the-best-model-five-minutes-buy-issue-23: tiny Shakespeare, --time 5m, 2 x LSTM(256), "
        "AMD EPYC 2 cores, 3 seeds, whole held-out 10 %: read as one stream 1.4977 -> 1.4739 nats/char with the "
        "carried state (64-character blocks 1.5402 -> 1.5813); carry_reset 0.05 (1 seed): stream 1.4693, blocks "
        "1.5394; the default (carry, carry_reset 0.05, bf16), 3 seeds: stream 1.4529, blocks 1.5269"
    ),
    "mixed_precision": (
        "benchmarks/README.md#the-best-model-five-minutes-buy-issue-23: equal time, carried state, AMD EPYC "
        "(AVX512_BF16) 2 cores: --time 5m, 2 x LSTM(256), 3 seeds: bf16 ended lower on every seed (stream 1.4739 "
        "-> 1.4625, blocks 1.5813 -> 1.5672); --time 1m, 2 x LSTM(128): no faster (2 corpora, 1-2 seeds), so "
        "auto means bf16 from 256 units on"
    ),
    "size_rule": (
        "benchmarks/README.md#training-for-a-time-budget-issue-10 (fitted on TensorFlow's speeds); issue 23: the "
        "probe now times the torch engine's own step; at --time 5m it chose 2 x LSTM(256) in 9 of 9 runs, and 2 x "
        "LSTM(384) given by hand ended worse (1 seed)"
    ),
}


def defaults_record(config: TrainConfig, explicit: dict[str, Any], *, carry: bool,
                    precision: tuple[str | None, str | None]) -> dict[str, Any]:
    """What config.json says of the defaults of issue 23: each one's value in this run, whether the user gave
    it, and the measurement it rests on."""
    asked, used = precision
    return {
        "carry_state": {"asked": config.carry_state, "used": carry, "given": "carry_state" in explicit,
                        "rests_on": EVIDENCE["carry_state"]},
        "mixed_precision": {"asked": asked, "used": used or "float32", "given": "mixed_precision" in explicit,
                            "rests_on": EVIDENCE["mixed_precision"]},
        "size_rule": {"used": bool(config.time_budget) and not {"layers", "units"} <= set(explicit),
                      "rests_on": EVIDENCE["size_rule"]},
    }


TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(TextOptions))
OWN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "text")
SETTINGS = OWN_FIELDS + TEXT_FIELDS  # every flat setting train() and make_config() take


def make_config(recipe: str = "default", **overrides: Any) -> TrainConfig:
    """The recipe's settings with `overrides` (None values are ignored: 'not given')."""
    if recipe not in RECIPES:
        raise CharlstmError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(unknown)}")
    values = {**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}
    config = TrainConfig.from_json({**values, "recipe": recipe})
    config.validate()
    return config
