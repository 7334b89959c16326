"""train(): a short sequence of named phases, each one screen long.

    settings -> text -> data -> budget -> model -> run files and callbacks -> fit -> report

With a time budget (`time=`, `--time 10m`) the budget phase probes the speed of candidate networks, picks
the size (unless given) and lays out the clock (budget.py); fit then runs over an endless data stream in
checkpoint intervals, and `budget_clock.BudgetClock` sets the learning rate and stops when the time is spent.

A run lives in one directory: config.json, metrics.csv, loss.png, samples.txt, last.keras (resume point,
with optimizer state), best.keras (best validation loss) and model.keras (the model the run hands over:
the best one). `resume=True` picks a run up from last.keras exactly where it stopped.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any

from charlstm.errors import CharlstmError
from charlstm.fileio import write_atomic
from charlstm.generation.model import CharModel
from charlstm.training import backend as backends
from charlstm.training import probe
from charlstm.training import strategy as strategies
from charlstm.training.budget_plan import limit_validation, plan_budget
from charlstm.training.device import jit_compile
from charlstm.training.engines import feeds_tf_data, load_engines
from charlstm.training.model import compile_model, model_spec, resolve_precision
from charlstm.training.plan import (
    Budget,
    Data,
    Plan,
    Text,
    default_run_dir,
    make_data,
    plan_run,
    read_text,
    without_carry,
)
from charlstm.training.recipes import TrainConfig, defaults_record
from charlstm.training.report import announce, report, run_metadata


@dataclass
class Session:
    """The callbacks of one fit() call, those that report how it ended, and where its files go."""

    callbacks: list[Any] = field(default_factory=list)
    checkpoints: Any = None  # checkpoints.Checkpoints: epochs done, where a NaN stopped the run
    history: Any = None  # run_log.RunHistory: the rows of metrics.csv
    stopper: Any = None
    out_dir: Path | None = None  # the run directory (process 0), or a distributed worker's scratch folder
    clock: Any = None  # budget_clock.BudgetClock of a budgeted run


# -- phase 5: model ------------------------------------------------------------------------------------------
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
    model.compile(optimizer=new, loss=model.loss, jit_compile=jit_compile())
    if keras.backend.backend() == "torch":
        from charlstm.training import torch_engine

        torch_engine.prepare(model)


def make_model(plan: Plan, spec: Any, steps: int, dist: strategies.Distributed | None = None) -> Any:
    """A compiled model: resumed from last.keras (weights + optimizer state), or new (maybe fine-tuned);
    built under the distribution's scope, so that its variables are mirrored or replicated."""
    import keras

    from charlstm.training.model import build_model
    from charlstm.training.saving import load_keras_model

    keras.utils.set_random_seed(plan.config.seed)  # the same seed in every process: the same initial weights
    with (dist or strategies.Distributed()).scope():
        if plan.resumed is not None:
            model = load_keras_model(plan.run_dir / "last.keras", compile=True)
            if plan.config.time_budget:
                _settable_learning_rate(model, plan.config)
            if keras.backend.backend() == "torch":  # compiled by load_model: the torch engine's step now
                from charlstm.training import torch_engine

                torch_engine.prepare(model)
        else:
            model = build_model(spec, plan.config.mixed_precision)
            compile_model(model, plan.config, steps)
            if plan.init_from is not None:
                old = load_keras_model(plan.init_from, compile=False)
                if plan.tag_grow is not None:  # new tags (and maybe characters): grown layer by layer
                    from charlstm.training.grow import grow_tags

                    grow_tags(model, old, plan.grow)
                elif plan.grow is not None:  # new characters: the vocabulary-sized layers grow (grow.py)
                    from charlstm.training.grow import grow_model

                    g = plan.grow
                    grow_model(model, old, g["old"], g["new"], g["counts"])
                else:
                    model.set_weights(old.get_weights())
    epoch = int(plan.state.get("epoch", 0))
    if epoch >= plan.config.epochs and not plan.config.time_budget:
        raise CharlstmError(f"{plan.run_dir}: already trained {epoch} epochs; pass a larger --epochs to go on")
    return model


def attach_carry(model: Any, plan: Plan, text: Text, data: Data) -> Data:
    """Hand a streams layout's carried state to the torch step (training/carry.py) and, when resuming, the
    state last.keras was saved with; the sequences layout instead where the model's step cannot carry it."""
    if data.carry is None:
        return data
    from charlstm.training import torch_engine
    from charlstm.training.carry import ENTRY
    from charlstm.training.saving import read_entry

    if not torch_engine.prepare(model, carry=data.carry)["carry_state"]:
        torch_engine.prepare(model)
        return without_carry(plan.config, text, data, "the network has no direct torch forward to carry it through")
    if plan.resumed is not None:
        data.carry.load_bytes(read_entry(plan.run_dir / "last.keras", ENTRY), device=torch_engine.training_device())
    return data


# -- phase 6: run files and callbacks (their metadata: report.run_metadata) ---------------------------
def make_session(
    plan: Plan,
    meta: dict[str, Any],
    data: Data,
    extra: list[Any] | None,
    out_dir: Path | None = None,
    budget: Budget | None = None,
    copy_check: Any = None,
    clock: Callable[[], float] = monotonic,
) -> Session:
    """charlstm's callbacks around the user's: exact-resume seeds, signals, bits/char, progress, run files
    (written to `out_dir`, by default the run directory), and a budgeted run's clock."""
    import keras

    from charlstm.training import stream_validation
    from charlstm.training.budget_clock import BudgetClock
    from charlstm.training.callbacks import BitsPerChar, DropoutSeeds, StopOnSignal
    from charlstm.training.checkpoints import Checkpoints
    from charlstm.training.run_log import MetricsLog, RunHistory
    from charlstm.training.samples import EpochSamples

    config, state, has_val = plan.config, plan.state, data.val is not None
    stopper = StopOnSignal()
    out_dir = out_dir or plan.run_dir
    budget_clock = None
    if budget is not None:
        budget_clock = BudgetClock(budget.schedule, position=budget.position, batches_per_epoch=data.steps,
                                   clock=clock, verbose=bool(config.verbose))
        budget_clock.startup = budget.startup
    history = RunHistory(state.get("history"), best=state.get("best"), elapsed=float(state.get("elapsed", 0.0)),
                         clock=clock, metrics=out_dir / "metrics.csv")
    checkpoints = Checkpoints(out_dir, lambda train_state: {**meta, "train_state": train_state}, history,
                              stopper=stopper, budget=budget_clock, carry=data.carry)
    samples = EpochSamples(out_dir, history, seeds=meta["seeds"], temperatures=list(config.sample_temperatures),
                           sample_length=config.sample_length, seed=config.seed, verbose=bool(config.verbose),
                           copy_check=copy_check)
    # order matters: bits/char enter the logs before the progress bar prints them; the run's files are
    # written after the bar has finished its line: the checkpoints, then the samples (from last.keras, adding
    # their copied share to the epoch's row), then metrics.csv and loss.png
    cbs: list[Any] = [*(extra or []), DropoutSeeds(config.seed), stopper]
    if data.tag_val:  # the loss per tag joins the logs before bits/char and the recorder read them
        from charlstm.training.callbacks import TagLosses

        cbs.append(TagLosses(data.tag_val))
    if stream_validation.applies(config, data, bool(data.tag_val)):  # the held-out text read as a stream too
        cbs.append(stream_validation.StreamValidation(data.val.ids))
    cbs.append(BitsPerChar())
    cbs.append(keras.callbacks.TerminateOnNaN())
    if budget_clock is not None:  # its own progress line: time used of the budget
        cbs.append(budget_clock)
    elif config.verbose:
        cbs.append(keras.callbacks.ProgbarLogger())
    cbs += [checkpoints, samples, MetricsLog(out_dir, history)]
    if config.early_stopping:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss", patience=config.early_stopping))
    if config.tensorboard:
        log_dir = str(plan.run_dir / "tensorboard")
        if keras.backend.backend() == "torch":  # Keras' own callback writes through TensorFlow
            from charlstm.training import torch_engine

            cbs.append(torch_engine.tensorboard(log_dir))
        else:
            cbs.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    return Session(cbs, checkpoints, history, stopper, out_dir, budget_clock)


# -- phase 7: fit --------------------------------------------------------------------------------------------
def fit(
    model: Any, plan: Plan, data: Data, session: Session, budget: Budget | None = None,
    clock: Callable[[], float] = monotonic,
) -> float:
    """Keras fit over the reproducible epoch stream; returns the seconds it took (by `clock`).

    A budgeted run reads an endless stream from its saved position in checkpoint intervals (Keras epochs of
    `budget.interval` steps) until its clock stops it. The torch backend reads the same batches as NumPy
    (no TensorFlow in its process), as does JAX without TensorFlow; the others read tf.data.
    """
    import keras

    from charlstm.training import feeds

    numpy = not feeds_tf_data(keras.backend.backend())
    stream = feeds.to_numpy_stream if numpy else feeds.to_tf_stream
    validation = None
    if data.val is not None:
        validation = feeds.to_numpy_dataset(data.val) if numpy else feeds.to_tf_dataset(data.val)
    config = plan.config
    initial_epoch = int(plan.state.get("epoch", 0))
    started = clock()
    if budget is not None:
        model.fit(
            stream(data.train, *budget.position),
            steps_per_epoch=budget.interval,
            shuffle=False,
            validation_data=validation,
            epochs=initial_epoch + 1_000_000,  # the clock stops it
            initial_epoch=initial_epoch,
            callbacks=session.callbacks,
            verbose=0,
        )
        return clock() - started
    model.fit(
        feeds.to_numpy_stream(data.train, initial_epoch, last_epoch=config.epochs) if numpy
        else feeds.to_tf_dataset(data.train, initial_epoch, config.epochs),
        steps_per_epoch=data.steps,
        shuffle=False,  # batches.py shuffles, reproducibly
        validation_data=validation,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        callbacks=session.callbacks,
        verbose=min(int(config.verbose), 1),  # 2 (-v) also lets the engines' own log lines through
    )
    return clock() - started


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
    clock: Callable[[], float] | None = None,
    **settings: Any,
) -> CharModel:
    """Train a character model on `source` (named corpus, file or folder) and return it, ready to generate.

    settings: any `TrainConfig` field (epochs, layers, units, seq_len, lr, ...); None means 'recipe default'.
    time: a time budget instead of epochs ("90s", "10m", "1h30m" or seconds): the network's size (unless
    given), the learning-rate schedule and the stop are fitted to it; with `resume`, time added to the run.
    resume: continue the run in `out` from its last.keras (source and settings come from the run; `epochs`
    may be raised to train longer).
    callbacks: extra Keras callbacks, run before charlstm's own each epoch.
    backend: "tensorflow", "jax" or "torch" (charlstm[torch]; default: KERAS_BACKEND, else the one measured
    fastest for this network on this machine, see probe.py); fixed for the process once Keras is imported.
    A run may be resumed or fine-tuned on any other backend.
    distribute: "none", "mirrored" (all local GPUs, TensorFlow) or "multihost" (`num_processes` processes
    joined at `coordinator` HOST:PORT, this one `process_id`; JAX, chosen here): see strategy.py. `batch_size`
    is then per replica. Every process of a multihost job returns the model; only process 0 writes files.
    clock: for tests, the seconds every time budget, elapsed time and checkpoint interval is measured by
    (default `time.monotonic`); a simulated clock makes a budgeted run independent of the machine's speed.
    Not a CLI option.
    """
    clock = clock or monotonic
    entered = clock()
    duration = time  # the public keyword's value (this module imports no `time` for it to shadow)
    wish = strategies.request(distribute, coordinator, num_processes, process_id)
    plan = plan_run(source, recipe, out, resume, init_from, {**settings, "time": duration})
    plan.entered = entered
    if plan.config.time_budget and wish.kind == "multihost":  # each process would stop on its own clock
        raise CharlstmError("--time does not work with --distribute multihost yet; give --epochs")
    # before anything imports Keras; with no backend named, the one faster for this network here (probe.py)
    backends.select(
        strategies.backend_for(wish, backend), network=probe.network_of(plan.config), quiet=not plan.config.verbose
    )
    text = read_text(plan)
    plan.run_dir = plan.run_dir or default_run_dir(text.corpus.name)
    # Keras (and TensorFlow, JAX or torch) load only now, so every mistake in the input above is one quick, clean
    # line; without their start-up lines unless verbose >= 2 (engines.py)
    asked_precision = plan.config.mixed_precision
    if os.environ["KERAS_BACKEND"] == "torch":
        from charlstm.training import torch_engine

        torch_engine.keep_tensorflow_out()  # before Keras' first import of it (seeding, saving)
        torch_engine.check_precision(plan.config.mixed_precision, torch_engine.training_device())
    load_engines(show_logs=plan.config.verbose >= 2, devices=wish.kind != "multihost")
    dist = strategies.start(wish)  # multihost: every process joins here
    if not dist.chief:  # workers print, sample and log nothing; their checkpoints go to a scratch folder
        plan.config.verbose, plan.config.sample_temperatures, plan.config.tensorboard = 0, [], False
    data = make_data(plan.config, text, dist)
    budget = plan_budget(plan, text, data, clock)
    if budget is not None:
        limit_validation(plan.config, text, data, budget.val_chars, dist)
    # `auto` precision once the size is known (model.resolve_precision), so config.json and a resume say which
    plan.config.mixed_precision = resolve_precision(plan.config.mixed_precision, plan.config.units, plan.config.cell)
    spec = model_spec(plan.config, text.vocab, len(text.tag_names or []))
    model = make_model(plan, spec, data.steps, dist)
    data = attach_carry(model, plan, text, data)
    meta = {**run_metadata(plan, text, spec), "distribute": dist.describe(plan.config.batch_size),
            "carry_state": {"on": data.carry is not None, "why_not": data.carry_off,
                            "reset_prob": plan.config.carry_reset if data.carry is not None else None},
            "defaults": defaults_record(plan.config, plan.explicit, carry=data.carry is not None,
                                        precision=(asked_precision, plan.config.mixed_precision))}
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
    copy_check = None
    if plan.config.sample_temperatures and plan.config.sample_length > 0:  # built at the first samples
        from charlstm.generation.copies import LazyChecker

        copy_check = LazyChecker(text.corpus, log=print if plan.config.verbose else None)
    session = make_session(plan, meta, data, callbacks, dist.output_dir(plan.run_dir), budget, copy_check, clock)
    if plan.config.verbose:
        announce(plan, text, data, meta, budget, clock)
    with dist.training(plan.run_dir), warnings.catch_warnings():
        # a streams batch's x is {"chars", "reset"}: Keras builds its loss by calling the model on the first
        # batch once, and warns that "reset" is not a model input; the carry step reads it (training/carry.py)
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match", category=UserWarning)
        wall = fit(model, plan, data, session, budget, clock)
    return report(plan, session, wall)
