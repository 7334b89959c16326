"""The budget phase of train() (only with a time budget): size the network, measure its speed, lay out the clock.

The rules themselves (durations, the size rule, the schedule over the clock) are budget.py's; this module
applies them to one run: it probes candidate networks with a few timed steps, resumes a saved clock, and
bounds validation to a small share of the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from charlstm.data.vocab import Vocabulary
from charlstm.errors import CharlstmError
from charlstm.training import budget as budgets
from charlstm.training import strategy as strategies
from charlstm.training.model import compile_model, model_spec
from charlstm.training.plan import Budget, Data, Plan, Text
from charlstm.training.recipes import TrainConfig


# -- phase 4: budget (only with a time budget) ---------------------------------------------------------------
def _probe(config: TrainConfig, vocab: Vocabulary, batch: tuple[Any, np.ndarray]):
    """measure(layers, units) -> target characters per second, from a few timed training steps."""
    import keras

    from charlstm.training.model import build_model

    x, y = batch
    if isinstance(x, dict) and "reset" in x:  # a streams batch (data/batches.py): the network reads the chars
        x = x["chars"]
    targets = int(np.prod(y.shape))
    num_tags = int(np.max(x["tags"])) + 1 if isinstance(x, dict) else 0  # a tagged network (as fast at any count)

    def measure(layers: int, units: int) -> float:
        spec = replace(model_spec(config, vocab, num_tags), layers=layers, units=units)
        model = build_model(spec, config.mixed_precision)
        compile_model(model, config, 1)
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


def plan_budget(plan: Plan, text: Text, data: Data, clock: Callable[[], float] = time.monotonic) -> Budget | None:
    """Fit the run to its time budget: size the network (unless given), measure its speed, lay out the clock.

    The clock starts here, after Keras has loaded (start-up is not the budget's): the speed probes, compiling,
    training, validation and the final checkpoint all count against it. `clock` is train()'s (tests simulate
    one); the probes time their steps by the machine's own clock, since they measure its speed.
    """
    config = plan.config
    if not config.time_budget:
        return None
    import keras  # noqa: F401  (TensorFlow/JAX start-up happens before the clock starts)

    started = clock()
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
    # kept back for the final validation and checkpoints until an epoch end has been timed (budget_clock.BudgetClock)
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
    from charlstm.data.batches import make_sequence_batches, make_window_batches

    if chars is None or len(text.val_ids) <= chars or data.val is None:
        return
    dist = dist or strategies.Distributed()
    ids, batch, tags = text.val_ids[:chars], config.batch_size * dist.replicas, None
    if text.val_tags is not None:  # a tagged run: the bound shared by the tags, each its first share
        every = np.asarray(text.val_tags)
        keep = np.zeros(len(every), bool)
        for t in range(len(text.tag_names or [])):
            keep[np.flatnonzero(every == t)[: chars // len(text.tag_names)]] = True
        ids, tags = np.asarray(text.val_ids)[keep], every[keep]
    if text.items is not None:  # whole items: up to the last boundary within the bound
        from charlstm.data.item_batches import ItemBatches

        b = text.items.boundary
        ends = np.flatnonzero(np.asarray(ids) == b)
        if len(ends) > 1:
            ids, tags = ids[: int(ends[-1]) + 1], None if tags is None else tags[: int(ends[-1]) + 1]
        else:
            ids, tags = text.val_ids, text.val_tags
        val = ItemBatches(ids, b, config.seq_len, batch, config.seed, shuffle=False, tags=tags)
    elif config.mode == "windows":
        val = make_window_batches(ids, config.maxlen, config.step, batch, config.seed, shuffle=False)
    else:
        val = make_sequence_batches(ids, config.seq_len, batch, config.seed, shuffle=False, tags=tags)
    if tags is not None:  # the loss per tag over the same bounded text
        from charlstm.training.plan import tag_validation

        data.tag_val = tag_validation(config, replace(text, val_ids=ids, val_tags=tags), batch)
    val.distribute(dist.replicas, dist.process_id, dist.num_processes)
    data.val = val if len(val) else data.val

