"""Keras callbacks that make a training run observable and safe to interrupt.

- `DropoutSeeds`: dropout masks drawn from (seed, epoch), so resuming at epoch k reproduces an
  uninterrupted run (the data order is already a pure function of (seed, epoch): batches.py).
- `StopOnSignal`: SIGINT/SIGTERM finish the current batch, then the run saves and stops.
- `RunRecorder`: bits/char in the logs (and progress bar), metrics.csv, loss.png, last/best/model.keras
  and samples.txt, every file written atomically; NaN stops the run and keeps the last good checkpoint.
- `BudgetClock`: a time-budgeted run's clock: sets the learning rate laid over the budget after every step
  and stops at the batch boundary that leaves just enough time for the final validation and checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from charlstm.fileio import save_atomic, write_atomic
from charlstm.generation.model import load as load_runtime
from charlstm.training.backend import set_learning_rate
from charlstm.training.budget import BudgetSchedule, format_duration
from charlstm.training.notebook import live_output
from charlstm.training.saving import save_model

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


class RunRecorder(keras.callbacks.Callback):
    def __init__(
        self,
        run_dir: Path,
        meta: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        stopper: StopOnSignal,
        seeds: list[str],
        temperatures: list[float],
        sample_length: int,
        seed: int,
        best: float | None = None,
        history: list[dict[str, Any]] | None = None,
        elapsed: float = 0.0,
        verbose: bool = True,
        budget: BudgetClock | None = None,
        copy_check: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__()
        self.copy_check = copy_check  # text -> CopyReport (or None): generation/copies.py
        self.budget = budget  # a budgeted run: rows at checkpoint intervals, epochs as fractions
        self.run_dir = run_dir
        self.meta = meta
        self.stopper = stopper
        self.seeds = seeds
        self.temperatures = temperatures
        self.sample_length = sample_length
        self.seed = seed
        self.best = best
        self.history = list(history or [])
        _fill_copied(self.history, run_dir / "metrics.csv")
        self.elapsed = elapsed  # wall seconds of earlier sessions of this run (resume)
        self.verbose = verbose
        self.diverged_at: int | None = None
        self.epochs_done = 0
        self._start = time.time()

    def _state(self, epoch: int) -> dict[str, Any]:
        state = {"epoch": epoch, "best": self.best, "history": self.history, "elapsed": self._elapsed()}
        if self.budget is not None:
            state["budget"] = self.budget.state()
        return state

    def _elapsed(self) -> float:
        return self.elapsed + time.time() - self._start

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        add_bits(logs)
        if self.stopper.partial and self.budget is None:  # a partial epoch: keep weights, redo it on resume
            save_model(self.model, self.run_dir / "last.keras", self.meta(self._state(epoch)))
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
        lr = self.model.optimizer.learning_rate
        partial = self.budget is not None and (self.budget.stopped or self.stopper.partial)
        row = {
            "epoch": round(self.budget.data_epochs(), 3) if self.budget is not None else epoch + 1,
            "time": round(self._elapsed(), 2),
            "loss": loss,
            "bpc": logs.get("bpc"),
            "val_loss": logs.get("val_loss"),
            "val_bpc": logs.get("val_bpc"),
            "lr": float(np.asarray(lr)),
            "partial": int(partial),  # 1: the budget (or a signal) ended this row's interval early
            **{k: v for k, v in logs.items() if k.startswith(("val_loss_", "val_bpc_"))},  # per tag (TagLosses)
        }
        self.history.append(row)
        monitored = row["val_loss"] if row["val_loss"] is not None else row["loss"]
        improved = self.best is None or monitored < self.best
        if improved:
            self.best = monitored
        state = self._state(epoch + 1)
        save_model(self.model, self.run_dir / "last.keras", self.meta(state))
        if improved:
            data = (self.run_dir / "last.keras").read_bytes()
            write_atomic(self.run_dir / "best.keras", data)
            write_atomic(self.run_dir / "model.keras", data)
        copied = self._samples(epoch)
        if copied is not None:  # in last.keras' history from the next save on (samples read last.keras)
            row["copied"] = round(copied, 4)
        self._write_metrics()
        self._plot()
        self.epochs_done += 1

    def _write_metrics(self) -> None:
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in self.history for k in r))  # rows before the copy check lack "copied"
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.history)
        write_atomic(self.run_dir / "metrics.csv", buf.getvalue())

    def _plot(self) -> None:
        # a bare Figure, not pyplot: it draws off-screen without switching the process' backend, so a
        # notebook keeps its inline plots (and no GUI window opens)
        from matplotlib.figure import Figure

        epochs = [r["epoch"] for r in self.history]
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(epochs, [r["bpc"] for r in self.history], "o-", label="train")
        if any(r["val_bpc"] is not None for r in self.history):
            ax.plot(epochs, [r["val_bpc"] for r in self.history], "o-", label="validation")
        for key in dict.fromkeys(k for r in self.history for k in r if k.startswith("val_bpc_")):
            points = [(r["epoch"], r[key]) for r in self.history if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), ".--", label=f"validation: {key[len('val_bpc_'):]}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (bits/char)")
        ax.set_title(self.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        copied = [(r["epoch"], r["copied"]) for r in self.history if r.get("copied") is not None]
        if copied:  # memorisation beside the loss: the samples' share in spans copied from the training text
            share = ax.twinx()
            share.plot(*zip(*copied, strict=True), "s--", color="tab:red", alpha=0.7, label="samples copied")
            share.set_ylabel("share of sample chars in copied spans")
            share.set_ylim(0, 1)
            share.legend(loc="upper right")
        fig.tight_layout()
        save_atomic(self.run_dir / "loss.png", lambda tmp: fig.savefig(tmp, dpi=100))

    def _samples(self, epoch: int) -> float | None:
        """Samples at each temperature, each with its copy check; returns the share of all their characters
        in copied spans (None without samples or a copy check)."""
        if not self.temperatures or self.sample_length <= 0 or not self.seeds:
            return None
        runtime = load_runtime(self.run_dir / "last.keras")
        rng = np.random.default_rng([self.seed, epoch, 7])
        prime = self.seeds[int(rng.integers(len(self.seeds)))]
        lines = [f"----- Epoch {epoch + 1}: generating with seed: {prime!r}"]
        copied, total = 0, 0
        for temp in self.temperatures:
            text = runtime.generate(
                prime, self.sample_length, temp, seed=int(rng.integers(2**31)), unknown="skip"
            )
            report = self.copy_check(text) if self.copy_check is not None else None
            note = ""
            if report is not None:
                copied, total = copied + report.copied, total + report.length
                note = (f" (longest copied span {report.longest_length} chars; {report.share:.0%} in spans "
                        f">= {report.min_span})")
            lines += [f"----- temperature: {temp}{note}", prime + text, ""]
        block = "\n".join(lines) + "\n"
        if self.verbose:
            print(block, flush=True)
        path = self.run_dir / "samples.txt"
        previous = path.read_text(encoding="utf-8") if path.exists() else ""
        write_atomic(path, previous + block)
        return copied / total if total else None


def _fill_copied(history: list[dict[str, Any]], metrics: Path) -> None:
    """A resumed run's rows get back the copied shares that metrics.csv shows but last.keras missed (the last
    row's share is measured after last.keras is written)."""
    if not history or "copied" in history[-1] or not metrics.is_file():
        return
    try:
        rows = list(csv.DictReader(io.StringIO(metrics.read_text(encoding="utf-8"))))
    except (OSError, csv.Error):
        return
    shares = {r.get("epoch"): r.get("copied") for r in rows if r.get("copied")}
    for row in history:
        value = shares.get(str(row.get("epoch")))
        if "copied" not in row and value:
            row["copied"] = float(value)
