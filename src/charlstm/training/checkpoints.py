"""Checkpoints and divergence: last.keras after every epoch, best.keras and model.keras when it improved.

last.keras is the resume point (weights, optimizer state, and the training state: epoch, best, history,
elapsed, a budgeted run's clock); best.keras and model.keras are copies of it from the epoch with the best
validation loss (the training loss without held-out text). A NaN or infinite loss stops the run and keeps
the last good checkpoint; an epoch that a signal cut short saves its weights and is redone on resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from charlstm.fileio import write_atomic
from charlstm.training.budget_clock import BudgetClock
from charlstm.training.callbacks import StopOnSignal, add_bits
from charlstm.training.carry import ENTRY as CARRY_ENTRY
from charlstm.training.run_log import RunHistory
from charlstm.training.saving import save_model, without_entry


class Checkpoints(keras.callbacks.Callback):
    """Each epoch's row into the history, and the checkpoints; `diverged_at` says where a NaN stopped it.

    `meta(train_state)` gives the model file's metadata for a training state. A budgeted run (`budget`)
    records rows at checkpoint intervals, its epochs as fractions of data epochs.
    """

    def __init__(
        self,
        run_dir: Path,
        meta: Callable[[dict[str, Any]], dict[str, Any]],
        history: RunHistory,
        *,
        stopper: StopOnSignal,
        budget: BudgetClock | None = None,
        carry: Any = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.meta, self.history = run_dir, meta, history
        self.stopper, self.budget = stopper, budget
        self.carry = carry  # carry.CarriedState: last.keras holds the state the next batch starts from
        self.diverged_at: int | None = None
        self.epochs_done = 0

    def _state(self, epoch: int) -> dict[str, Any]:
        h = self.history
        state = {"epoch": epoch, "best": h.best, "history": h.rows, "elapsed": h.elapsed()}
        if self.budget is not None:
            state["budget"] = self.budget.state()
        return state

    def _save_last(self, epoch: int) -> None:
        state = self.carry.to_bytes() if self.carry is not None else None
        save_model(self.model, self.run_dir / "last.keras", self.meta(self._state(epoch)),
                   extra={CARRY_ENTRY: state} if state is not None else None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.fresh = False
        logs = logs if logs is not None else {}
        add_bits(logs)
        if self.stopper.partial and self.budget is None:  # a partial epoch: keep weights, redo it on resume
            self._save_last(epoch)
            return
        loss = logs.get("loss")
        if (
            loss is None
            or not math.isfinite(loss)
            or not all(math.isfinite(v) for v in logs.values() if isinstance(v, float))
        ):
            self.diverged_at = epoch + 1
            self.model.stop_training = True
            return
        partial = self.budget is not None and (self.budget.stopped or self.stopper.partial)
        improved = self.history.add({
            "epoch": round(self.budget.data_epochs(), 3) if self.budget is not None else epoch + 1,
            "time": round(self.history.elapsed(), 2),
            "loss": loss,
            "bpc": logs.get("bpc"),
            "val_loss": logs.get("val_loss"),
            "val_bpc": logs.get("val_bpc"),
            "lr": float(np.asarray(self.model.optimizer.learning_rate)),
            "partial": int(partial),  # 1: the budget (or a signal) ended this row's interval early
            **{k: v for k, v in logs.items() if k.startswith(("val_loss_", "val_bpc_"))},  # per tag (TagLosses)
        })
        self._save_last(epoch + 1)
        if improved:  # the model handed over, without the training-only carried state
            data = without_entry((self.run_dir / "last.keras").read_bytes(), CARRY_ENTRY)
            write_atomic(self.run_dir / "best.keras", data)
            write_atomic(self.run_dir / "model.keras", data)
        self.epochs_done += 1
