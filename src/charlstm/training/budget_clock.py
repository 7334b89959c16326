"""The Keras side of a time budget: `BudgetClock` applies budget.py's schedule to a running `fit`.

After every step it asks the schedule (budget.BudgetSchedule, plain Python) for the learning rate and sets
it; at the batch boundary that leaves just enough time for the final validation and checkpoint it stops the
run. It also tracks the data position (epoch, batch), so that a resumed run goes on from the batch where it
stopped, and draws the run's progress line (time used of the budget).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import keras

from charlstm.training.backend import set_learning_rate
from charlstm.training.budget import BudgetSchedule, format_duration
from charlstm.training.callbacks import LN2
from charlstm.training.notebook import live_output


class BudgetClock(keras.callbacks.Callback):
    """Run `fit` for a time budget: the schedule (budget.BudgetSchedule) decides, this callback applies.

    Keras epochs of a budgeted run are checkpoint intervals of `interval` steps over an endless stream of
    data epochs; the data position (epoch, batch) is tracked here so that a resumed run goes on from the
    batch where it stopped. `clock` is injectable for tests.
    """

    def __init__(
        self,
        schedule: BudgetSchedule,
        *,
        position: tuple[int, int],
        batches_per_epoch: int,
        clock: Callable[[], float] = time.monotonic,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.position0 = position
        self.batches_per_epoch = batches_per_epoch
        self.clock = clock
        self.verbose = verbose
        self.startup = 0.0  # seconds before the clock started (reported, not counted)
        self.steps = 0  # optimizer steps in this session
        self.stopped = False  # the budget ran out (the last interval is partial)
        self.lr_trace: list[tuple[float, float]] = []  # (elapsed seconds, learning rate) when it changed
        self._lr_set: float | None = None
        self._last_batch_end: float | None = None
        self._shown_at = -math.inf
        self._width = 0
        self._live = verbose and live_output()  # rewrite one line in place (terminal, notebook); in a log, a line per interval

    # where the run stands
    def position(self) -> tuple[int, int]:
        """(data epoch, batch within it) of the next batch."""
        epoch, batch = self.position0
        extra_epochs, batch = divmod(batch + self.steps, self.batches_per_epoch)
        return epoch + extra_epochs, batch

    def data_epochs(self) -> float:
        epoch, batch = self.position()
        return epoch + batch / self.batches_per_epoch

    def state(self) -> dict[str, Any]:
        return {**self.schedule.state(self.clock()), "position": list(self.position())}

    def _apply(self, lr: float, force: bool = False) -> None:
        if force or self._lr_set is None or abs(lr - self._lr_set) > 1e-3 * self.schedule.peak_lr:
            set_learning_rate(self.model, lr)
            self._lr_set = lr
            self.lr_trace.append((self.schedule.elapsed(self.clock()), lr))

    # fit's events
    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.schedule.running:  # the trainer starts the clock before its speed probes
            self.schedule.start(self.clock())
        self._apply(self.schedule.lr(), force=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._last_batch_end is not None:  # validation, samples and checkpoints of the interval before
            self.schedule.note_overhead(self.clock() - self._last_batch_end)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = self.clock()
        self.steps += 1
        self._apply(self.schedule.step(now))
        if self.schedule.should_stop(now) and not self.model.stop_training:
            self.stopped = True
            self.model.stop_training = True
        self._last_batch_end = now
        if self._live and now - self._shown_at >= 0.5:
            self._shown_at = now
            self._show(now, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.verbose:
            self._show(self.clock(), logs, end=True)

    def _show(self, now: float, logs: dict | None, end: bool = False) -> None:
        """One progress line, rewritten in place: time used of the budget, epochs, losses, learning rate."""
        s = self.schedule
        done = min(1.0, s.elapsed(now) / s.seconds)
        bar = "━" * int(20 * done) + "╌" * (20 - int(20 * done))
        parts = [f"{format_duration(s.elapsed(now))}/{format_duration(s.seconds)} {bar}", f"epoch {self.data_epochs():.2f}"]
        for key in ("loss", "val_loss"):
            if logs and logs.get(key) is not None:
                parts.append(f"{key} {float(logs[key]):.4f} ({float(logs[key]) / LN2:.3f} bits)")
        parts.append(f"lr {self._lr_set or 0.0:.2e}")
        line = " - ".join(parts)
        sys.stdout.write("\r" + line.ljust(self._width) + ("\n" if end else ""))
        sys.stdout.flush()
        self._width = 0 if end else len(line)

    def describe_end(self) -> str:
        """How the budget was used, for the closing line."""
        now = self.clock()
        decay = self.schedule.decay_started_at
        decay_text = f"; the learning rate left its peak at {format_duration(decay)}" if decay is not None else ""
        return (
            f"{format_duration(self.schedule.elapsed(now))} of {format_duration(self.schedule.seconds)} used, "
            f"{self.data_epochs():.2f} epochs{decay_text}"
        )
