"""Keras callbacks that make a training run observable and safe to interrupt.

- `DropoutSeeds`: dropout masks drawn from (seed, epoch), so resuming at epoch k reproduces an
  uninterrupted run (the data order is already a pure function of (seed, epoch): batches.py).
- `StopOnSignal`: SIGINT/SIGTERM finish the current batch, then the run saves and stops.
- `BitsPerChar`: bits/char next to nats/char in the logs (and the progress bar).

The run's files have callbacks of their own, one per job: `checkpoints.Checkpoints` (last/best/model.keras,
divergence), `samples.EpochSamples` (samples.txt and their copy check), `run_log.MetricsLog` (metrics.csv,
loss.png); a time-budgeted run's clock is `budget_clock.BudgetClock`.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from typing import Any

import keras
import numpy as np

LN2 = math.log(2)


class DropoutSeeds(keras.callbacks.Callback):
    """Derive every Dropout layer's RNG state from (seed, epoch) at the start of each epoch.

    Keras does not save SeedGenerator states in the model file, so without this a resumed run would draw
    different dropout masks than an uninterrupted one. On the torch backend Keras' Dropout draws from torch's
    global generator instead, which other code draws from too (each new torch DataLoader iterator takes a
    seed from it), so there it is seeded from (seed, epoch, batch) before every batch
    (`torch_engine.seed_torch`, a few microseconds).
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self.epoch = 0
        self.torch = keras.backend.backend() == "torch"

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        for layer in self.model.layers:
            gen = getattr(layer, "seed_generator", None)
            if gen is not None:
                gen.state.assign(np.array([self.seed % (2**31), epoch], dtype=gen.state.dtype))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.torch:
            from charlstm.training.torch_engine import seed_torch

            seed_torch(self.seed, self.epoch, batch)


class StopOnSignal(keras.callbacks.Callback):
    """Turn SIGINT/SIGTERM into 'stop after this batch'; a second SIGINT interrupts at once.

    A signal that arrives after an epoch's last batch (during validation or callbacks) stops the run at that
    epoch's end with the epoch complete; one that arrives mid-epoch leaves `partial` set, and the resumed
    run redoes that epoch from the saved weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signal_name: str | None = None
        self.partial = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(
            f"\ncharlstm: {self.signal_name} received; finishing this batch and saving last.keras ...",
            file=sys.stderr,
            flush=True,
        )

    def on_train_begin(self, logs: dict | None = None) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.signal_name is not None and not self.model.stop_training:
            steps = (self.params or {}).get("steps")
            self.partial = steps is None or batch < steps - 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.signal_name is not None:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def interrupted(self) -> bool:
        return self.signal_name is not None


def add_bits(logs: dict[str, Any]) -> None:
    """Add bits/char next to every nats/char loss in the logs (progress bar and metrics alike)."""
    for key in ("loss", "val_loss"):
        if key in logs and logs[key] is not None:
            logs[key.replace("loss", "bpc")] = float(logs[key]) / LN2


class BitsPerChar(keras.callbacks.Callback):
    """Show bits/char in the progress bar (placed before the ProgbarLogger, which reads the same logs)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs is not None:
            add_bits(logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            add_bits(logs)


class TagLosses(keras.callbacks.Callback):
    """A tagged run's validation loss per tag (`val_loss_TAG`, nats/char; bits too) in the epoch's logs, so
    metrics.csv and loss.png show each tag: every tag's held-out text read on its own, once an epoch."""

    def __init__(self, per_tag: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.per_tag = per_tag

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or "val_loss" not in logs:
            return
        for name, batches in self.per_tag:
            total, count = 0.0, 0
            for x, y in batches.epoch_batches(0):
                logits = np.asarray(self.model.predict_on_batch(x), dtype=np.float64)  # (B, T, V)
                top = logits.max(axis=-1, keepdims=True)
                logz = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
                picked = np.take_along_axis(logits, y[..., None].astype(np.int64), axis=-1)[..., 0]
                total += float((logz - picked).sum())
                count += y.size
            if count:
                logs[f"val_loss_{name}"] = total / count
                logs[f"val_bpc_{name}"] = total / count / LN2
