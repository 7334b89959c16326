"""train(): a short sequence of named phases, each one screen long.

    settings -> text -> data -> budget -> model -> run files and callbacks -> fit -> report

With a time budget (`time=`, `--time 10m`) the budget phase probes the speed of candidate networks, picks
the size (unless given) and lays out the clock (budget.py); fit then runs over an endless data stream in
checkpoint intervals, and `callbacks.BudgetClock` sets the learning rate and stops when the time is spent.

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
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from charlstm import backend as backends
from charlstm import budget as budgets
from charlstm import probe
from charlstm import strategy as strategies
from charlstm.corpus import Corpus, preprocess
from charlstm.errors import CharlstmError, TrainingDiverged, TrainingInterrupted
from charlstm.fileio import write_atomic
from charlstm.prepared import PreparedCorpus
from charlstm.recipes import TrainConfig, make_config
from charlstm.runtime import CharModel
from charlstm.vocab import Vocabulary, longest_runs

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
    explicit: dict[str, Any] = field(default_factory=dict)  # settings given (not recipe defaults; they beat any rule)
    added_time: float | None = None  # seconds this call adds (a fresh budgeted run: all of them)
    entered: float = field(default_factory=time.monotonic)  # when train() began (start-up is measured from here)

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
class Budget:
    """A time-budgeted run's plan: its schedule, where the data stream starts, the checkpoint interval."""

    schedule: budgets.BudgetSchedule
    position: tuple[int, int]  # (data epoch, batch) to start from
    interval: int  # optimizer steps per checkpoint interval (one Keras epoch)
    sizing: budgets.Sizing | None = None
    val_chars: int | None = None  # validation is bounded to this many characters
    startup: float = 0.0  # seconds from train() to the clock's start (reading the text, loading Keras)


@dataclass
class Session:
    """The callbacks of one fit() call, the two that report how it ended, and where its files go."""

    callbacks: list[Any] = field(default_factory=list)
    recorder: Any = None
    stopper: Any = None
    out_dir: Path | None = None  # the run directory (process 0), or a distributed worker's scratch folder
    clock: Any = None  # callbacks.BudgetClock of a budgeted run


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

    lr: Any = config.lr  # a budgeted run's rate is set step by step (callbacks.BudgetClock)
    total = max(1, steps_per_epoch * config.epochs)
    if config.time_budget:
        pass
    elif config.lr_schedule == "cosine":
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
        added = budgets.parse_duration(settings["time"]) if settings.get("time") is not None else None
        if settings.get("epochs"):
            if config.time_budget or added:
                raise CharlstmError(f"{run_dir} trains for a time budget; add time with --time (e.g. --time 5m)")
            config.epochs = int(settings["epochs"])
        if added:
            config.time_budget = (config.time_budget or 0.0) + added
            if config.lr_schedule == "step":
                config.lr_schedule = "cosine"
        if settings.get("verbose") is not None:
            config.verbose = settings["verbose"]
        config.validate()
        return Plan(config, saved["corpus"]["source"], run_dir, resumed=saved, added_time=added)
    if source is None:
        raise CharlstmError("give a text source: a file, a folder or a named corpus")
    injected: set[str] = set()  # settings the budget sets, which the user did not give
    seconds = budgets.parse_duration(settings.pop("time")) if settings.get("time") is not None else None
    if seconds is not None:
        if settings.get("epochs") is not None:
            raise CharlstmError("give --time or --epochs, not both (a time budget sets the length of the run)")
        settings["time_budget"] = seconds
        injected.add("time_budget")
        if settings.get("lr_schedule") is None and recipe == "default":
            settings["lr_schedule"] = budgets.DEFAULT_SHAPE
            injected.add("lr_schedule")
    settings.pop("time", None)
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
        explicit={k: v for k, v in settings.items() if v is not None and k not in injected}, added_time=seconds,
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


# -- phase 4: budget (only with a time budget) ---------------------------------------------------------------
def _probe(config: TrainConfig, vocab: Vocabulary, batch: tuple[np.ndarray, np.ndarray]):
    """measure(layers, units) -> target characters per second, from a few timed training steps."""
    import keras

    from charlstm.model import build_model

    x, y = batch
    targets = int(np.prod(y.shape))

    def measure(layers: int, units: int) -> float:
        spec = replace(model_spec(config, vocab), layers=layers, units=units)
        model = build_model(spec, config.mixed_precision)
        _compile(model, config, 1)
        model.train_on_batch(x, y)  # compiles
        times: list[float] = []
        while len(times) < 3 or (sum(times) < 0.5 and len(times) < 10):
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - t0)
        del model
        keras.backend.clear_session()
        return targets / float(np.median(times))

    return measure


def plan_budget(plan: Plan, text: Text, data: Data) -> Budget | None:
    """Fit the run to its time budget: size the network (unless given), measure its speed, lay out the clock.

    The clock starts here, after Keras has loaded (start-up is not the budget's): the speed probes, compiling,
    training, validation and the final checkpoint all count against it.
    """
    config = plan.config
    if not config.time_budget:
        return None
    import keras  # noqa: F401  (TensorFlow/JAX start-up happens before the clock starts)

    started = time.monotonic()
    measure = _probe(config, text.vocab, data.train[0])
    targets = int(np.prod(data.train[0][1].shape))  # target characters per batch
    saved = plan.state.get("budget")
    sizing = None
    if plan.resumed is None and plan.init_from is None and config.mode == "sequences":
        sizing = budgets.choose_size(
            config.time_budget, len(text.train_ids), text.vocab.size, config.embedding_dim, measure,
            explicit={k: getattr(config, k) for k in ("layers", "units", "dropout") if k in plan.explicit},
        )
        config.layers, config.units, config.dropout = sizing.layers, sizing.units, sizing.dropout
        chars_per_s = sizing.chars_per_second[f"{sizing.layers}x{sizing.units}"]
    elif saved and saved.get("steps_per_second"):  # a resumed run: the last session's own measurement
        chars_per_s = float(saved["steps_per_second"]) * targets
    elif plan.resumed is not None and (plan.state.get("history") or [{}])[-1].get("time"):  # an epoch run's
        history = plan.state["history"]
        chars_per_s = len(history) * data.steps * targets / float(history[-1]["time"])
    else:
        chars_per_s = measure(config.layers, config.units)
    steps_per_s = chars_per_s / targets
    seconds = config.time_budget
    if plan.added_time is not None and plan.resumed is not None:  # more time for a run: a new segment
        # an interrupted segment's unused time carries over; a finished one's kept-back seconds do not
        left = max(0.0, saved["seconds"] - saved["spent"]) if saved and saved["progress"] < 0.99 else 0.0
        seconds = left + plan.added_time
        history = plan.state.get("history") or []
        current_lr = float(history[-1]["lr"]) if history else config.lr
        schedule = budgets.BudgetSchedule(seconds, config.lr, config.lr_schedule, start_lr=current_lr, rate=steps_per_s)
    elif saved:  # an interrupted segment goes on where it stood
        schedule = budgets.BudgetSchedule(
            saved["seconds"], saved["peak_lr"], saved["shape"], spent=saved["spent"], steps_done=saved["steps_done"],
            progress=saved["progress"], start_lr=saved["start_lr"], rate=steps_per_s,
        )
        seconds = saved["seconds"] - saved["spent"]
    else:
        schedule = budgets.BudgetSchedule(seconds, config.lr, config.lr_schedule, rate=steps_per_s)
    if schedule.progress >= 0.99 or schedule.remaining(0.0) < 2.0:
        raise CharlstmError(
            f"{plan.run_dir}: the run's time budget is spent; add time with --resume {plan.run_dir} --time 5m"
        )
    # bound validation to ~0.5 % of the budget per checkpoint (forward passes run ~2.5x the training speed)
    val_chars = max(20_000, int(0.005 * seconds * 2.5 * chars_per_s))
    # kept back for the final validation and checkpoints until an epoch end has been timed (callbacks.BudgetClock)
    schedule.reserve = 2.0 * min(val_chars, len(text.val_ids)) / (2.5 * chars_per_s) + 2.0
    interval_s = min(300.0, max(5.0, seconds / 10))
    interval = max(1, int(steps_per_s * interval_s))
    if saved:
        position = (int(saved["position"][0]), int(saved["position"][1]))
    else:
        position = (int(plan.state.get("epoch", 0)) if plan.resumed else 0, 0)
    schedule.start(started)  # the probes' time is the budget's
    return Budget(schedule, position, interval, sizing, val_chars, startup=started - plan.entered)


def limit_validation(
    config: TrainConfig, text: Text, data: Data, chars: int | None, dist: strategies.Distributed | None = None
) -> None:
    """Validate on the first `chars` characters of the held-out text only (a budgeted run's bound)."""
    from charlstm.batches import make_sequence_batches, make_window_batches

    if chars is None or len(text.val_ids) <= chars or data.val is None:
        return
    dist = dist or strategies.Distributed()
    ids, batch = text.val_ids[:chars], config.batch_size * dist.replicas
    if config.mode == "windows":
        val = make_window_batches(ids, config.maxlen, config.step, batch, config.seed, shuffle=False)
    else:
        val = make_sequence_batches(ids, config.seq_len, batch, config.seed, shuffle=False)
    val.distribute(dist.replicas, dist.process_id, dist.num_processes)
    data.val = val if len(val) else data.val


# -- phase 5: model ------------------------------------------------------------------------------------------
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


def _settable_learning_rate(model: Any, config: TrainConfig) -> None:
    """Give a resumed model an optimizer whose learning rate a budget can set (same state, same step count).

    A run trained by epochs saved an optimizer driven by a Keras schedule object, whose rate cannot be set;
    `--resume --time` swaps in the same optimizer with a plain rate and copies every state variable over.
    """
    import keras

    old = model.optimizer
    if isinstance(old.learning_rate, keras.Variable):
        return
    new = old.__class__.from_config({**old.get_config(), "learning_rate": float(config.lr)})
    new.build(model.trainable_variables)
    keep = [v for v in new.variables if v.name != "learning_rate"]
    for target, source in zip(keep, old.variables, strict=True):
        target.assign(source)
    model.compile(optimizer=new, loss=model.loss, jit_compile=backends.jit_compile())


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
            if plan.config.time_budget:
                _settable_learning_rate(model, plan.config)
        else:
            model = build_model(spec, plan.config.mixed_precision)
            _compile(model, plan.config, steps)
            if plan.init_from is not None:
                model.set_weights(load_keras_model(plan.init_from, compile=False).get_weights())
    epoch = int(plan.state.get("epoch", 0))
    if epoch >= plan.config.epochs and not plan.config.time_budget:
        raise CharlstmError(f"{plan.run_dir}: already trained {epoch} epochs; pass a larger --epochs to go on")
    return model


# -- phase 6: run files and callbacks ------------------------------------------------------------------------
def run_metadata(plan: Plan, text: Text, spec: Any) -> dict[str, Any]:
    """Everything a model file and config.json say about the run (the training state is added per save)."""
    from charlstm.batches import span  # reads a prepared corpus from its file, not through its memory map

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
        # each character's longest run in the training text, by id: generation never goes past it (max_repeat)
        "longest_runs": longest_runs(text.train_ids, text.vocab.size, read=span).tolist(),
        "trained_with": backends.describe(),
    }


def make_session(
    plan: Plan,
    meta: dict[str, Any],
    data: Data,
    extra: list[Any] | None,
    out_dir: Path | None = None,
    budget: Budget | None = None,
) -> Session:
    """charlstm's callbacks around the user's: exact-resume seeds, signals, bits/char, progress, run files
    (written to `out_dir`, by default the run directory), and a budgeted run's clock."""
    import keras

    from charlstm.callbacks import BitsPerChar, BudgetClock, DropoutSeeds, RunRecorder, StopOnSignal

    config, state, has_val = plan.config, plan.state, data.val is not None
    stopper = StopOnSignal()
    out_dir = out_dir or plan.run_dir
    clock = None
    if budget is not None:
        clock = BudgetClock(budget.schedule, position=budget.position, batches_per_epoch=data.steps,
                            verbose=bool(config.verbose))
        clock.startup = budget.startup
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
        budget=clock,
    )
    # order matters: bits/char enter the logs before the progress bar prints them, and the recorder
    # (samples, checkpoints) runs after the bar has finished its line
    cbs: list[Any] = [*(extra or []), DropoutSeeds(config.seed), stopper, BitsPerChar()]
    cbs.append(keras.callbacks.TerminateOnNaN())
    if clock is not None:  # its own progress line: time used of the budget
        cbs.append(clock)
    elif config.verbose:
        cbs.append(keras.callbacks.ProgbarLogger())
    cbs.append(recorder)
    if config.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss", patience=config.early_stopping))
    if config.tensorboard:
        cbs.append(keras.callbacks.TensorBoard(log_dir=str(plan.run_dir / "tensorboard")))
    return Session(cbs, recorder, stopper, out_dir, clock)


# -- phase 7: fit --------------------------------------------------------------------------------------------
def fit(model: Any, plan: Plan, data: Data, session: Session, budget: Budget | None = None) -> float:
    """Keras fit over the reproducible epoch stream; returns the wall seconds it took.

    A budgeted run reads an endless stream from its saved position in checkpoint intervals (Keras epochs of
    `budget.interval` steps) until its clock stops it.
    """
    from charlstm.batches import to_tf_dataset, to_tf_stream

    config = plan.config
    initial_epoch = int(plan.state.get("epoch", 0))
    started = time.time()
    if budget is not None:
        model.fit(
            to_tf_stream(data.train, *budget.position),
            steps_per_epoch=budget.interval,
            shuffle=False,
            validation_data=to_tf_dataset(data.val) if data.val is not None else None,
            epochs=initial_epoch + 1_000_000,  # the clock stops it
            initial_epoch=initial_epoch,
            callbacks=session.callbacks,
            verbose=0,
        )
        return time.time() - started
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


# -- phase 8: report -----------------------------------------------------------------------------------------
def report(plan: Plan, session: Session, wall: float) -> CharModel:
    """How the run ended: interrupted (exit 130), diverged, or done; the model it hands over."""
    run_dir, recorder, stopper = plan.run_dir, session.recorder, session.stopper
    if stopper.interrupted and session.clock is not None:
        left = session.clock.schedule.remaining(session.clock.clock())
        raise TrainingInterrupted(
            f"stopped by {stopper.signal_name} with {budgets.format_duration(left)} of the time budget left; saved "
            f"{run_dir / 'last.keras'}. Resume with: charlstm train --resume {run_dir}"
        )
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
        done = (
            f"{session.clock.describe_end()} (+ {session.clock.startup:.1f} s start-up)"
            if session.clock is not None
            else f"{len(recorder.history)} epochs in {wall:.1f} s"
        )
        print(
            f"charlstm: {done}; final loss {last.get('loss', math.nan):.4f}"
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


def _announce(plan: Plan, text: Text, data: Data, meta: dict[str, Any], budget: Budget | None = None) -> None:
    config, vocab = plan.config, text.vocab
    arch = f"{config.layers}x{config.cell.upper()}({config.units})"
    where = meta["trained_with"]
    length = (
        f"for {budgets.format_duration(budget.schedule.remaining(time.monotonic()))} ({config.lr_schedule} schedule)"
        if budget is not None
        else f"{data.steps} batches/epoch"
    )
    print(
        f"charlstm: training {arch} ({config.recipe} recipe) on {text.corpus.name}: {len(text.train_ids):,} train / "
        f"{len(text.val_ids):,} validation chars, vocabulary {vocab.size}, {length}, "
        f"{where['backend']} on {where['device']['kind']}{_replicas(meta)} -> {plan.run_dir}",
        flush=True,
    )
    if budget is not None and budget.sizing is not None:
        s = budget.sizing
        print(f"charlstm: sized for the budget: {s.layers} x {config.cell.upper()}({s.units}), dropout {s.dropout:g}: "
              f"{s.why}", flush=True)
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
    time: str | float | None = None,
    **settings: Any,
) -> CharModel:
    """Train a character model on `source` (named corpus, file or folder) and return it, ready to generate.

    settings: any `TrainConfig` field (epochs, layers, units, seq_len, lr, ...); None means 'recipe default'.
    time: a time budget instead of epochs ("90s", "10m", "1h30m" or seconds): the network's size (unless
    given), the learning-rate schedule and the stop are fitted to it; with `resume`, time added to the run.
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
    plan = plan_run(source, recipe, out, resume, init_from, {**settings, "time": time})
    if plan.config.time_budget and wish.kind == "multihost":  # each process would stop on its own clock
        raise CharlstmError("--time does not work with --distribute multihost yet; give --epochs")
    # before anything imports Keras; with no backend named, the one faster for this network here (probe.py)
    backends.select(strategies.backend_for(wish, backend), network=probe.network_of(plan.config))
    text = read_text(plan)
    plan.run_dir = plan.run_dir or default_run_dir(text.corpus.name)
    # Keras (and TensorFlow or JAX) load only now, so every mistake in the input above is one quick, clean line
    dist = strategies.start(wish)  # multihost: every process joins here
    if not dist.chief:  # workers print, sample and log nothing; their checkpoints go to a scratch folder
        plan.config.verbose, plan.config.sample_temperatures, plan.config.tensorboard = 0, [], False
    data = make_data(plan.config, text, dist)
    budget = plan_budget(plan, text, data)
    if budget is not None:
        limit_validation(plan.config, text, data, budget.val_chars, dist)
    spec = model_spec(plan.config, text.vocab)
    model = make_model(plan, spec, data.steps, dist)
    meta = {**run_metadata(plan, text, spec), "distribute": dist.describe(plan.config.batch_size)}
    if budget is not None:
        meta["budget"] = {
            "seconds": plan.config.time_budget,
            "schedule": plan.config.lr_schedule,
            "interval_steps": budget.interval,
            "startup_seconds": round(budget.startup, 2),
            "validation_chars": min(budget.val_chars or 0, len(text.val_ids)),
            "sizing": budget.sizing.to_json() if budget.sizing is not None
            else (plan.resumed or {}).get("budget", {}).get("sizing"),
        }
    if dist.chief:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(plan.run_dir / "config.json", json.dumps(meta, ensure_ascii=False, indent=1))
    session = make_session(plan, meta, data, callbacks, dist.output_dir(plan.run_dir), budget)
    if plan.config.verbose:
        _announce(plan, text, data, meta, budget)
    with dist.training(plan.run_dir):
        wall = fit(model, plan, data, session, budget)
    return report(plan, session, wall)
