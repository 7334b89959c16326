"""train(): text -> vocabulary -> batches -> Keras model.fit with callbacks -> one .keras file.

A run lives in one directory: config.json, metrics.csv, loss.png, samples.txt, last.keras (resume point,
with optimizer state), best.keras (best validation loss) and model.keras (the model the run hands over:
the best one). `resume=True` picks a run up from last.keras exactly where it stopped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.corpus import Corpus, load_corpus, preprocess, read_text_file
from charlstm.errors import CharlstmError, TrainingDiverged, TrainingInterrupted
from charlstm.fileio import write_atomic
from charlstm.recipes import TrainConfig, make_config
from charlstm.runtime import CharModel
from charlstm.vocab import Vocabulary

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _prepare_text(corpus: Corpus, config: TrainConfig) -> str:
    strip = config.strip_gutenberg if config.strip_gutenberg is not None else corpus.gutenberg
    return preprocess(
        corpus.text,
        strip_gutenberg_text=strip,
        normalize=config.normalize,
        lowercase=config.lowercase,
        ascii_only=config.ascii_only,
    )


def _seeds(text: str, count: int, length: int, seed: int, vocab: Vocabulary | None = None) -> list[str]:
    """Random `length`-character snippets of the training text: default primes, as the lesson picks them.

    With a `vocab` that maps rare characters to the unknown symbol, only snippets made entirely of kept
    characters qualify (failing enough of those, snippets with their rare characters dropped), so a default
    prime encodes under `--unknown error` too.
    """
    if len(text) <= length:
        return [text]
    rng = np.random.default_rng([seed, 99])
    picks = [text[i : i + length] for i in rng.integers(0, len(text) - length, size=count)]
    if vocab is None or not vocab.has_unknown:
        return picks
    clean = [s for s in picks if not vocab.unknown_chars(s)]
    for i in rng.integers(0, len(text) - length, size=50 * count):
        if len(clean) >= count:
            break
        if not vocab.unknown_chars(text[i : i + length]):
            clean.append(text[i : i + length])
    dropped = ["".join(c for c in s if c in vocab) for s in picks if vocab.unknown_chars(s)]
    return clean + [s for s in dropped if s][: count - len(clean)]


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> Any:
    import keras

    lr: Any = config.lr
    total = max(1, steps_per_epoch * config.epochs)
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total, alpha=0.05)
    elif config.lr_schedule == "step":
        every = steps_per_epoch * max(1, config.epochs // 4)
        lr = keras.optimizers.schedules.ExponentialDecay(config.lr, every, 0.5, staircase=True)
    clip = {"clipnorm": config.clipnorm} if config.clipnorm else {}
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, **clip)
    return keras.optimizers.Adam(learning_rate=lr, **clip)


def _compile(model: Any, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras
    import tensorflow as tf

    # XLA made LSTM training 1.3-2x slower on this project's 2-core CPU (benchmarks/README.md); GPUs keep "auto"
    jit = "auto" if tf.config.list_physical_devices("GPU") else False
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )


def default_run_dir(corpus_name: str) -> Path:
    return Path("runs") / f"{corpus_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(
    source: str | os.PathLike[str] | None = None,
    *,
    recipe: str = "default",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> CharModel:
    """Train a character model on `source` (named corpus, file or folder) and return it, ready to generate.

    settings: any `TrainConfig` field (epochs, layers, units, seq_len, lr, ...); None means 'recipe default'.
    resume: continue the run in `out` from its last.keras (source and settings come from the run; `epochs`
    may be raised to train longer).
    callbacks: extra Keras callbacks, run before charlstm's own each epoch.
    """
    from charlstm.batches import make_sequence_batches, make_window_batches, split_ids, to_tf_dataset
    from charlstm.model import ModelSpec, build_model
    from charlstm.modelfile import load_keras_model, read_meta

    # -- settings and run directory --------------------------------------------------------------
    state: dict[str, Any] = {}
    if resume:
        if out is None:
            raise CharlstmError("--resume needs the run directory")
        run_dir = Path(out)
        last = run_dir / "last.keras"
        if not last.is_file():
            raise CharlstmError(
                f"{run_dir}: no last.keras to resume from (is this a charlstm run directory?)"
            )
        saved = read_meta(last)
        config = TrainConfig.from_json(saved["config"])
        if settings.get("epochs"):
            config.epochs = int(settings["epochs"])
        if settings.get("verbose") is not None:
            config.verbose = settings["verbose"]
        source = saved["corpus"]["source"]
        state = saved.get("train_state", {})
        config.validate()
    else:
        if source is None:
            raise CharlstmError("give a text source: a file, a folder or a named corpus")
        if init_from is not None:
            init_meta = read_meta(init_from)
            base = init_meta["config"]
            arch = {
                k: base[k]
                for k in (
                    "mode",
                    "maxlen",
                    "input",
                    "embedding_dim",
                    "cell",
                    "layers",
                    "units",
                    "normalize",
                    "lowercase",
                    "ascii_only",
                )
            }
            settings = {**arch, **{k: v for k, v in settings.items() if k not in arch}}
            recipe = base.get("recipe", recipe)
        config = make_config(recipe, **settings)
        run_dir = Path(out) if out is not None else None
        if run_dir is not None and (run_dir / "last.keras").exists():
            raise CharlstmError(
                f"{run_dir} already holds a run; continue it with --resume or choose another --out"
            )

    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CharlstmError("--tensorboard needs the tensorboard package: pip install tensorboard")

    # -- text and vocabulary ---------------------------------------------------------------------
    corpus = load_corpus(source, encoding=config.encoding, errors=config.errors, glob=config.glob)
    text = _prepare_text(corpus, config)
    if config.max_chars:
        text = text[: config.max_chars]
    if not text:
        raise CharlstmError(
            f"{corpus.name}: no text left after preprocessing (--ascii-only / Gutenberg stripping)"
        )
    if resume:
        if corpus.sha256 != saved["corpus"]["sha256"]:
            raise CharlstmError(
                f"{source}: the text changed since the run in {run_dir} started (sha256 differs); "
                "resuming would train on different data: restore the text or start a new run"
            )
        vocab = Vocabulary.from_json(saved["vocab"])
    elif init_from is not None:
        vocab = Vocabulary.from_json(init_meta["vocab"])
        missing = vocab.unknown_chars(text) if not vocab.has_unknown else []
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise CharlstmError(
                f"{init_from}: its vocabulary lacks {len(missing)} character(s) of the new text: {shown}; "
                "fine-tuning needs the same vocabulary (clean the text, or train from scratch)"
            )
    else:
        vocab = Vocabulary.build(text, max_vocab=config.max_vocab, min_count=config.min_count)
    ids = vocab.encode(text, unknown="replace" if vocab.has_unknown else "skip")
    if config.val_file:
        val_text = _prepare_text(
            Corpus(
                read_text_file(Path(config.val_file), encoding=config.encoding, errors=config.errors), "val"
            ),
            config,
        )
        train_ids, val_ids = ids, vocab.encode(val_text, unknown="replace" if vocab.has_unknown else "skip")
    else:
        train_ids, val_ids = split_ids(ids, config.val_frac)
    if run_dir is None:
        run_dir = default_run_dir(corpus.name)

    # -- data ------------------------------------------------------------------------------------
    if config.mode == "windows":
        train_ds = make_window_batches(train_ids, config.maxlen, config.step, config.batch_size, config.seed)
        val_ds = (
            make_window_batches(
                val_ids, config.maxlen, config.step, config.batch_size, config.seed, shuffle=False
            )
            if len(val_ids) > config.maxlen
            else None
        )
    else:
        train_ds = make_sequence_batches(train_ids, config.seq_len, config.batch_size, config.seed)
        val_ds = (
            make_sequence_batches(val_ids, config.seq_len, config.batch_size, config.seed, shuffle=False)
            if len(val_ids) >= 2
            else None
        )
    steps = len(train_ds)

    # Keras (and TensorFlow) load only now, so every mistake in the input above is one quick, clean line
    import keras

    from charlstm.callbacks import BitsPerChar, DropoutSeeds, RunRecorder, StopOnSignal

    keras.utils.set_random_seed(config.seed)

    # -- model -----------------------------------------------------------------------------------
    spec = ModelSpec(
        vocab_size=vocab.size,
        input=config.input,
        embedding_dim=config.embedding_dim,
        cell=config.cell,
        layers=config.layers,
        units=config.units,
        dropout=config.dropout,
        window=config.maxlen if config.mode == "windows" else None,
    )
    if resume:
        model = load_keras_model(run_dir / "last.keras", compile=True)
    else:
        model = build_model(spec)
        _compile(model, config, steps)
        if init_from is not None:
            model.set_weights(load_keras_model(init_from, compile=False).get_weights())
    initial_epoch = int(state.get("epoch", 0))
    if initial_epoch >= config.epochs:
        raise CharlstmError(
            f"{run_dir}: already trained {initial_epoch} epochs; pass a larger --epochs to go on"
        )

    run_dir.mkdir(parents=True, exist_ok=True)
    seeds = _seeds(text[: len(train_ids)], 16, config.maxlen, config.seed, vocab)
    base_meta = {
        "recipe": config.recipe,
        "config": config.to_json(),
        "model": spec.to_json(),
        "vocab": vocab.to_json(),
        "preprocessing": {
            "normalize": config.normalize,
            "lowercase": config.lowercase,
            "ascii_only": config.ascii_only,
            "strip_gutenberg": bool(
                config.strip_gutenberg if config.strip_gutenberg is not None else corpus.gutenberg
            ),
        },
        "corpus": {
            "source": str(source),
            "name": corpus.name,
            "sha256": corpus.sha256,
            "chars": len(text),
            "train_chars": int(len(train_ids)),
            "val_chars": int(len(val_ids)),
            "files": corpus.files[:50],
            "file_count": len(corpus.files),
        },
        "seeds": seeds,
    }
    write_atomic(run_dir / "config.json", json.dumps(base_meta, ensure_ascii=False, indent=1))

    def meta(train_state: dict[str, Any]) -> dict[str, Any]:
        return {**base_meta, "train_state": train_state}

    stopper = StopOnSignal()
    recorder = RunRecorder(
        run_dir,
        meta,
        stopper=stopper,
        seeds=seeds,
        temperatures=list(config.sample_temperatures),
        sample_length=config.sample_length,
        seed=config.seed,
        best=state.get("best"),
        history=state.get("history"),
        elapsed=float(state.get("elapsed", 0.0)),
        verbose=bool(config.verbose),
    )
    # order matters: bits/char enter the logs before the progress bar prints them, and the recorder
    # (samples, checkpoints) runs after the bar has finished its line
    cbs: list[Any] = [*(callbacks or []), DropoutSeeds(config.seed), stopper, BitsPerChar()]
    cbs.append(keras.callbacks.TerminateOnNaN())
    if config.verbose:
        cbs.append(keras.callbacks.ProgbarLogger())
    cbs.append(recorder)
    if config.early_stopping:
        monitor = "val_loss" if val_ds is not None else "loss"
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping))
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))

    if config.verbose:
        arch = f"{config.layers}x{config.cell.upper()}({config.units})"
        print(
            f"charlstm: training {arch} ({config.recipe} recipe) on {corpus.name}: {len(train_ids):,} train / "
            f"{len(val_ids):,} validation chars, vocabulary {vocab.size}, {steps} batches/epoch -> {run_dir}",
            flush=True,
        )
        if vocab.has_unknown:
            print(
                f"charlstm: the vocabulary keeps {vocab.coverage:.2%} of the text's characters; the rarest "
                f"become one unknown symbol (never generated)",
                flush=True,
            )
    started = time.time()
    model.fit(
        to_tf_dataset(train_ds, initial_epoch, config.epochs),
        steps_per_epoch=steps,
        shuffle=False,  # batches.py shuffles, reproducibly
        validation_data=to_tf_dataset(val_ds) if val_ds is not None else None,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=cbs,
        verbose=config.verbose,
    )
    wall = time.time() - started

    if stopper.interrupted:
        where = "during" if stopper.partial else "at the end of"
        raise TrainingInterrupted(
            f"stopped by {stopper.signal_name} {where} epoch {initial_epoch + recorder.epochs_done + int(stopper.partial)}; "
            f"saved {run_dir / 'last.keras'}. Resume with: charlstm train --resume {run_dir}"
        )
    if recorder.diverged_at is not None:
        raise TrainingDiverged(
            f"the loss became NaN/inf in epoch {recorder.diverged_at}; stopped. The last good checkpoint is "
            f"{run_dir / 'last.keras'} (try a lower --lr or --clipnorm)"
        )
    last = recorder.history[-1] if recorder.history else {}
    if config.verbose:
        val = (
            f", validation {last['val_loss']:.4f} nats/char = {last['val_bpc']:.4f} bits/char"
            if last.get("val_loss") is not None
            else ""
        )
        print(
            f"charlstm: {len(recorder.history)} epochs in {wall:.1f} s; final loss {last.get('loss', math.nan):.4f}"
            f" nats/char{val}; model saved to {run_dir / 'model.keras'}",
            flush=True,
        )
    from charlstm.runtime import load

    return load(run_dir / "model.keras")
