"""train(): a short sequence of named phases, each one screen long.

    settings -> text -> data -> model -> run files and callbacks -> fit -> report

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
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from charlstm import backend as backends
from charlstm import probe
from charlstm import strategy as strategies
from charlstm.corpus import Corpus, preprocess
from charlstm.errors import CharlstmError, TrainingDiverged, TrainingInterrupted
from charlstm.fileio import write_atomic
from charlstm.prepared import PreparedCorpus
from charlstm.recipes import TrainConfig, make_config
from charlstm.runtime import CharModel
from charlstm.vocab import Vocabulary

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# settings a fine-tuned model must share with the model it starts from
ARCHITECTURE_KEYS = (
    "mode", "maxlen", "input", "embedding_dim", "cell", "layers", "units", "normalize", "lowercase", "ascii_only",
)


@dataclass
class Plan:
    """What the settings phase decides: the full config, the source, the run directory, and what the run
    continues from (a resumed run's saved metadata, or the model a fine-tuning starts from)."""

    config: TrainConfig
    source: str
    run_dir: Path | None
    resumed: dict[str, Any] | None = None  # last.keras metadata when resuming
    init_from: str | None = None
    init_meta: dict[str, Any] | None = None
    explicit: dict[str, Any] = field(default_factory=dict)  # settings given (not recipe defaults)

    @property
    def state(self) -> dict[str, Any]:
        return (self.resumed or {}).get("train_state", {})


@dataclass
class Text:
    """The text phase's result: the encoded corpus (prepared.py: memory-mapped, or in memory for small
    texts), the model's vocabulary, and the split in that vocabulary's ids."""

    corpus: PreparedCorpus
    vocab: Vocabulary
    train_ids: np.ndarray  # or batches.RemappedIds when a fine-tuned model's vocabulary numbers differently
    val_ids: np.ndarray


@dataclass
class Data:
    train: Any  # batches.EpochBatches
    val: Any | None
    steps: int  # batches per epoch


@dataclass
class Session:
    """The callbacks of one fit() call, the two that report how it ended, and where its files go."""

    callbacks: list[Any] = field(default_factory=list)
    recorder: Any = None
    stopper: Any = None
    out_dir: Path | None = None  # the run directory (process 0), or a distributed worker's scratch folder


# -- helpers used by more than one phase (and by benchmarks) -------------------------------------------
def _prepare_text(corpus: Corpus, config: TrainConfig) -> str:
    strip = config.strip_gutenberg if config.strip_gutenberg is not None else corpus.gutenberg
    return preprocess(
        corpus.text,
        strip_gutenberg_text=strip,
        normalize=config.normalize,
        lowercase=config.lowercase,
        ascii_only=config.ascii_only,
    )


def _seeds(ids: Any, vocab: Vocabulary, count: int, length: int, seed: int, clean: bool = True) -> list[str]:
    """Random `length`-character snippets of the training text (ids): default primes, as the lesson picks them.

    With a `vocab` that maps rare characters to the unknown symbol, only snippets made entirely of kept
    characters qualify (failing enough of those, snippets with their rare characters dropped), so a default
    prime encodes under `--unknown error` too. Only the snippets are decoded, so a memory-mapped gigabyte
    costs nothing here.
    """
    if len(ids) <= length:
        return [vocab.decode(ids[:])]
    rng = np.random.default_rng([seed, 99])
    picks = [np.asarray(ids[i : i + length]) for i in rng.integers(0, len(ids) - length, size=count)]
    if not clean or not vocab.has_unknown:
        return [vocab.decode(p) for p in picks]
    unk = vocab.unknown_id
    good = [vocab.decode(p) for p in picks if unk not in p]
    for i in rng.integers(0, len(ids) - length, size=50 * count):
        if len(good) >= count:
            break
        snippet = np.asarray(ids[i : i + length])
        if unk not in snippet:
            good.append(vocab.decode(snippet))
    dropped = [vocab.decode(p[p != unk]) for p in picks if unk in p]
    return good + [s for s in dropped if s][: count - len(good)]


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
        optimizer = keras.optimizers.RMSprop(learning_rate=lr, **clip)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, **clip)
    if config.mixed_precision == "fp16":  # float16 gradients underflow without a (dynamic) loss scale
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _compile(model: Any, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=backends.jit_compile(),
    )


def default_run_dir(corpus_name: str) -> Path:
    return Path("runs") / f"{corpus_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# -- phase 1: settings -------------------------------------------------------------------------------------
def plan_run(
    source: str | os.PathLike[str] | None,
    recipe: str,
    out: str | os.PathLike[str] | None,
    resume: bool,
    init_from: str | os.PathLike[str] | None,
    settings: dict[str, Any],
) -> Plan:
    """The whole config: a recipe plus overrides, or a resumed run's own config (epochs may grow)."""
    from charlstm.modelfile import read_meta

    if resume:
        if out is None:
            raise CharlstmError("--resume needs the run directory")
        run_dir = Path(out)
        last = run_dir / "last.keras"
        if not last.is_file():
            raise CharlstmError(f"{run_dir}: no last.keras to resume from (is this a charlstm run directory?)")
        saved = read_meta(last)
        config = TrainConfig.from_json(saved["config"])
        if settings.get("epochs"):
            config.epochs = int(settings["epochs"])
        if settings.get("verbose") is not None:
            config.verbose = settings["verbose"]
        config.validate()
        return Plan(config, saved["corpus"]["source"], run_dir, resumed=saved)
    if source is None:
        raise CharlstmError("give a text source: a file, a folder or a named corpus")
    init_meta = None
    if init_from is not None:
        init_meta = read_meta(init_from)
        base = init_meta["config"]
        arch = {k: base[k] for k in ARCHITECTURE_KEYS}
        settings = {**arch, **{k: v for k, v in settings.items() if k not in arch}}
        recipe = base.get("recipe", recipe)
    config = make_config(recipe, **settings)
    run_dir = Path(out) if out is not None else None
    if run_dir is not None and (run_dir / "last.keras").exists():
        raise CharlstmError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise CharlstmError("--tensorboard needs the tensorboard package: pip install tensorboard")
    if init_from is not None:  # the inherited vocabulary decides which characters are rare, not these
        config.max_vocab, config.min_count = None, 1
    return Plan(
        config, str(source), run_dir, init_from=str(init_from) if init_from else None, init_meta=init_meta,
        explicit={k: v for k, v in settings.items() if v is not None},
    )


# -- phase 2: text and vocabulary ----------------------------------------------------------------------------
def read_text(plan: Plan) -> Text:
    """The corpus as ids (prepared.py: a prepared DIR memory-mapped, a big text prepared once into the cache,
    a small one in memory: one path), the vocabulary (new, resumed or inherited) and the split."""
    from charlstm.batches import RemappedIds
    from charlstm.prepared import TEXT_KEYS, TextOptions, corpus_for_training

    config = plan.config
    explicit = {} if plan.resumed is not None else plan.explicit
    corpus = corpus_for_training(
        plan.source, TextOptions.from_settings(config), explicit=explicit, verbose=bool(config.verbose)
    )
    for key in TEXT_KEYS:  # a prepared DIR brings its own text options: config.json tells what was used
        setattr(config, key, getattr(corpus.options, key))
    if plan.resumed is not None:
        if corpus.sha256 != plan.resumed["corpus"]["sha256"]:
            raise CharlstmError(
                f"{plan.source}: the text changed since the run in {plan.run_dir} started (sha256 differs); "
                "resuming would train on different data: restore the text or start a new run"
            )
        vocab = Vocabulary.from_json(plan.resumed["vocab"])
    elif plan.init_meta is not None:
        vocab = Vocabulary.from_json(plan.init_meta["vocab"])
    else:
        vocab = corpus.vocab
    table = _id_map(corpus.vocab, vocab, plan.init_from or plan.source)
    train_ids, val_ids = corpus.train_ids, corpus.val_ids
    if table is not None:
        train_ids, val_ids = RemappedIds(train_ids, table), RemappedIds(val_ids, table)
    return Text(corpus, vocab, train_ids, val_ids)


def _id_map(have: Vocabulary, want: Vocabulary, model: str) -> np.ndarray | None:
    """corpus id -> model id, when a fine-tuned (or resumed fine-tuning) model numbers characters otherwise."""
    if have.chars == want.chars and have.has_unknown == want.has_unknown:
        return None
    ids = want.encode("".join(have.chars), unknown="replace" if want.has_unknown else "skip")
    missing = [c for c in have.chars if c not in want] if not want.has_unknown else []
    if missing or (have.has_unknown and not want.has_unknown):
        shown = ", ".join(repr(c) for c in missing[:20]) or "its rare-character symbol"
        raise CharlstmError(
            f"{model}: its vocabulary lacks {len(missing)} character(s) of the new text: {shown}; "
            "fine-tuning needs the same vocabulary (clean the text, or train from scratch)"
        )
    return np.append(ids, want.unknown_id or 0).astype(np.int32)  # the last entry: the corpus' own unknown


# -- phase 3: data -------------------------------------------------------------------------------------------
def make_data(config: TrainConfig, text: Text, dist: strategies.Distributed | None = None) -> Data:
    """Training and validation batches in the recipe's layout (the lesson's windows, or sequences); when
    distributed, global batches of batch_size x replicas rows, of which this process feeds its share."""
    from charlstm.batches import make_sequence_batches, make_window_batches

    dist = dist or strategies.Distributed()
    batch = config.batch_size * dist.replicas
    if config.mode == "windows":
        train = make_window_batches(text.train_ids, config.maxlen, config.step, batch, config.seed)
        val = (
            make_window_batches(text.val_ids, config.maxlen, config.step, batch, config.seed, shuffle=False)
            if len(text.val_ids) > config.maxlen
            else None
        )
    else:
        train = make_sequence_batches(text.train_ids, config.seq_len, batch, config.seed)
        val = (
            make_sequence_batches(text.val_ids, config.seq_len, batch, config.seed, shuffle=False)
            if len(text.val_ids) >= 2
            else None
        )
    for batches in (train, val):
        if batches is not None:
            batches.distribute(dist.replicas, dist.process_id, dist.num_processes)
    if val is not None and len(val) == 0:  # fewer validation rows than replicas
        val = None
    return Data(train, val, len(train))


# -- phase 4: model ------------------------------------------------------------------------------------------
def model_spec(config: TrainConfig, vocab: Vocabulary) -> Any:
    from charlstm.model import ModelSpec

    return ModelSpec(
        vocab_size=vocab.size,
        input=config.input,
        embedding_dim=config.embedding_dim,
        cell=config.cell,
        layers=config.layers,
        units=config.units,
        dropout=config.dropout,
        window=config.maxlen if config.mode == "windows" else None,
    )


def make_model(plan: Plan, spec: Any, steps: int, dist: strategies.Distributed | None = None) -> Any:
    """A compiled model: resumed from last.keras (weights + optimizer state), or new (maybe fine-tuned);
    built under the distribution's scope, so that its variables are mirrored or replicated."""
    import keras

    from charlstm.model import build_model
    from charlstm.modelfile import load_keras_model

    keras.utils.set_random_seed(plan.config.seed)  # the same seed in every process: the same initial weights
    with (dist or strategies.Distributed()).scope():
        if plan.resumed is not None:
            model = load_keras_model(plan.run_dir / "last.keras", compile=True)
        else:
            model = build_model(spec, plan.config.mixed_precision)
            _compile(model, plan.config, steps)
            if plan.init_from is not None:
                model.set_weights(load_keras_model(plan.init_from, compile=False).get_weights())
    epoch = int(plan.state.get("epoch", 0))
    if epoch >= plan.config.epochs:
        raise CharlstmError(f"{plan.run_dir}: already trained {epoch} epochs; pass a larger --epochs to go on")
    return model


# -- phase 5: run files and callbacks ------------------------------------------------------------------------
def run_metadata(plan: Plan, text: Text, spec: Any) -> dict[str, Any]:
    """Everything a model file and config.json say about the run (the training state is added per save)."""
    config, corpus = plan.config, text.corpus
    strip = corpus.meta["preprocessing"]["strip_gutenberg"]
    return {
        "recipe": config.recipe,
        "config": config.to_json(),
        "model": spec.to_json(),
        "vocab": text.vocab.to_json(),
        "preprocessing": {
            "normalize": config.normalize,
            "lowercase": config.lowercase,
            "ascii_only": config.ascii_only,
            "strip_gutenberg": strip if isinstance(strip, bool) else any(strip),
        },
        "corpus": {
            "source": plan.source,
            "name": corpus.name,
            "sha256": corpus.sha256,  # of the ids: text, options and vocabulary together
            "prepared": str(corpus.path) if corpus.path is not None else None,
            "chars": corpus.meta["chars"]["text"],
            "train_chars": int(len(text.train_ids)),
            "val_chars": int(len(text.val_ids)),
            "files": corpus.files[:50],
            "file_count": len(corpus.files),
        },
        "seeds": _seeds(text.train_ids, text.vocab, 16, plan.config.maxlen, plan.config.seed),
        "trained_with": backends.describe(),
    }


def make_session(
    plan: Plan, meta: dict[str, Any], has_val: bool, extra: list[Any] | None, out_dir: Path | None = None
) -> Session:
    """charlstm's callbacks around the user's: exact-resume seeds, signals, bits/char, progress, run files
    (written to `out_dir`, by default the run directory)."""
    import keras

    from charlstm.callbacks import BitsPerChar, DropoutSeeds, RunRecorder, StopOnSignal

    config, state = plan.config, plan.state
    stopper = StopOnSignal()
    out_dir = out_dir or plan.run_dir
    recorder = RunRecorder(
        out_dir,
        lambda train_state: {**meta, "train_state": train_state},
        stopper=stopper,
        seeds=meta["seeds"],
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
    cbs: list[Any] = [*(extra or []), DropoutSeeds(config.seed), stopper, BitsPerChar()]
    cbs.append(keras.callbacks.TerminateOnNaN())
    if config.verbose:
        cbs.append(keras.callbacks.ProgbarLogger())
    cbs.append(recorder)
    if config.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss", patience=config.early_stopping))
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(plan.run_dir / "tensorboard")))
    return Session(cbs, recorder, stopper, out_dir)


# -- phase 6: fit --------------------------------------------------------------------------------------------
def fit(model: Any, plan: Plan, data: Data, session: Session) -> float:
    """Keras fit over the reproducible epoch stream; returns the wall seconds it took."""
    from charlstm.batches import to_tf_dataset

    config = plan.config
    initial_epoch = int(plan.state.get("epoch", 0))
    started = time.time()
    model.fit(
        to_tf_dataset(data.train, initial_epoch, config.epochs),
        steps_per_epoch=data.steps,
        shuffle=False,  # batches.py shuffles, reproducibly
        validation_data=to_tf_dataset(data.val) if data.val is not None else None,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=session.callbacks,
        verbose=config.verbose,
    )
    return time.time() - started


# -- phase 7: report -----------------------------------------------------------------------------------------
def report(plan: Plan, session: Session, wall: float) -> CharModel:
    """How the run ended: interrupted (exit 130), diverged, or done; the model it hands over."""
    run_dir, recorder, stopper = plan.run_dir, session.recorder, session.stopper
    if stopper.interrupted:
        where = "during" if stopper.partial else "at the end of"
        epoch = int(plan.state.get("epoch", 0)) + recorder.epochs_done + int(stopper.partial)
        raise TrainingInterrupted(
            f"stopped by {stopper.signal_name} {where} epoch {epoch}; saved {run_dir / 'last.keras'}. "
            f"Resume with: charlstm train --resume {run_dir}"
        )
    if recorder.diverged_at is not None:
        raise TrainingDiverged(
            f"the loss became NaN/inf in epoch {recorder.diverged_at}; stopped. The last good checkpoint is "
            f"{run_dir / 'last.keras'} (try a lower --lr or --clipnorm)"
        )
    if plan.config.verbose:
        last = recorder.history[-1] if recorder.history else {}
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

    return load((session.out_dir or run_dir) / "model.keras")


def _replicas(meta: dict[str, Any]) -> str:
    dist = meta.get("distribute", {})
    if dist.get("kind", "none") == "none":
        return ""
    return (
        f" ({dist['kind']}: {dist['replicas']} replicas in {dist['processes']} process(es), "
        f"global batch {dist['global_batch_size']})"
    )


def _announce(plan: Plan, text: Text, data: Data, meta: dict[str, Any]) -> None:
    config, vocab = plan.config, text.vocab
    arch = f"{config.layers}x{config.cell.upper()}({config.units})"
    where = meta["trained_with"]
    print(
        f"charlstm: training {arch} ({config.recipe} recipe) on {text.corpus.name}: {len(text.train_ids):,} train / "
        f"{len(text.val_ids):,} validation chars, vocabulary {vocab.size}, {data.steps} batches/epoch, "
        f"{where['backend']} on {where['device']['kind']}{_replicas(meta)} -> {plan.run_dir}",
        flush=True,
    )
    if vocab.has_unknown:
        print(
            f"charlstm: the vocabulary keeps {vocab.coverage:.2%} of the text's characters; the rarest "
            "become one unknown symbol (never generated)",
            flush=True,
        )


def train(
    source: str | os.PathLike[str] | None = None,
    *,
    recipe: str = "default",
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    callbacks: list[Any] | None = None,
    backend: str | None = None,
    distribute: str | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    **settings: Any,
) -> CharModel:
    """Train a character model on `source` (named corpus, file or folder) and return it, ready to generate.

    settings: any `TrainConfig` field (epochs, layers, units, seq_len, lr, ...); None means 'recipe default'.
    resume: continue the run in `out` from its last.keras (source and settings come from the run; `epochs`
    may be raised to train longer).
    callbacks: extra Keras callbacks, run before charlstm's own each epoch.
    backend: "tensorflow" or "jax" (default: KERAS_BACKEND, else the one measured faster for this network on
    this machine, see probe.py); fixed for the process
    once Keras is imported. A run may be resumed or fine-tuned on the other backend.
    distribute: "none", "mirrored" (all local GPUs, TensorFlow) or "multihost" (`num_processes` processes
    joined at `coordinator` HOST:PORT, this one `process_id`; JAX, chosen here): see strategy.py. `batch_size`
    is then per replica. Every process of a multihost job returns the model; only process 0 writes files.
    """
    wish = strategies.request(distribute, coordinator, num_processes, process_id)
    plan = plan_run(source, recipe, out, resume, init_from, settings)
    # before anything imports Keras; with no backend named, the one faster for this network here (probe.py)
    backends.select(strategies.backend_for(wish, backend), network=probe.network_of(plan.config))
    text = read_text(plan)
    plan.run_dir = plan.run_dir or default_run_dir(text.corpus.name)
    # Keras (and TensorFlow or JAX) load only now, so every mistake in the input above is one quick, clean line
    dist = strategies.start(wish)  # multihost: every process joins here
    if not dist.chief:  # workers print, sample and log nothing; their checkpoints go to a scratch folder
        plan.config.verbose, plan.config.sample_temperatures, plan.config.tensorboard = 0, [], False
    data = make_data(plan.config, text, dist)
    spec = model_spec(plan.config, text.vocab)
    model = make_model(plan, spec, data.steps, dist)
    meta = {**run_metadata(plan, text, spec), "distribute": dist.describe(plan.config.batch_size)}
    if dist.chief:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(plan.run_dir / "config.json", json.dumps(meta, ensure_ascii=False, indent=1))
    session = make_session(plan, meta, data.val is not None, callbacks, dist.output_dir(plan.run_dir))
    if plan.config.verbose:
        _announce(plan, text, data, meta)
    with dist.training(plan.run_dir):
        wall = fit(model, plan, data, session)
    return report(plan, session, wall)
