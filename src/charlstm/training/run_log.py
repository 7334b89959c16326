"""A run's record: one row per epoch (or budget interval), written to metrics.csv and drawn in loss.png.

`RunHistory` holds the rows (a resumed run's earlier ones first), the best monitored loss and the run's
elapsed seconds; the recording callbacks share it: `checkpoints.Checkpoints` adds each epoch's row and saves
it in last.keras, `samples.EpochSamples` adds the samples' copied share to it, and `MetricsLog` (last) writes
the rows out. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from charlstm.fileio import save_atomic, write_atomic


class RunHistory:
    """The rows of metrics.csv, the best loss so far and the run's elapsed time, across resumed sessions."""

    def __init__(
        self,
        rows: list[dict[str, Any]] | None = None,
        *,
        best: float | None = None,
        elapsed: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Path | None = None,
    ) -> None:
        self.rows = list(rows or [])
        if metrics is not None:
            fill_copied(self.rows, metrics)
        self.best = best
        self.earlier = elapsed  # seconds of earlier sessions of this run (resume)
        self.clock = clock
        self.fresh = False  # the current epoch end added a row (not a partial epoch, not a divergence)
        self._start = clock()

    def elapsed(self) -> float:
        return self.earlier + self.clock() - self._start

    def add(self, row: dict[str, Any]) -> bool:
        """Append this epoch's row; True when its monitored loss (validation, else training) is the best."""
        self.rows.append(row)
        self.fresh = True
        monitored = row["val_loss"] if row["val_loss"] is not None else row["loss"]
        improved = self.best is None or monitored < self.best
        if improved:
            self.best = monitored
        return improved


class MetricsLog(keras.callbacks.Callback):
    """metrics.csv and loss.png after every epoch that added a row (placed after the callbacks that fill it)."""

    def __init__(self, run_dir: Path, history: RunHistory) -> None:
        super().__init__()
        self.run_dir, self.history = run_dir, history

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.history.fresh:
            write_metrics(self.run_dir / "metrics.csv", self.history.rows)
            plot(self.run_dir / "loss.png", self.history.rows, self.run_dir.name)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))  # rows before the copy check lack "copied"
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Bits/char by epoch (train, validation) and, beside them, the samples' share in copied spans."""
    # a bare Figure, not pyplot: it draws off-screen without switching the process' backend, so a
    # notebook keeps its inline plots (and no GUI window opens)
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(epochs, [r["bpc"] for r in rows], "o-", label="train")
    if any(r["val_bpc"] is not None for r in rows):
        ax.plot(epochs, [r["val_bpc"] for r in rows], "o-", label="validation")
    for key in dict.fromkeys(k for r in rows for k in r if k.startswith("val_bpc_")):  # a tagged run's tags
        points = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), ".--", label=f"validation: {key[len('val_bpc_'):]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (bits/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    copied = [(r["epoch"], r["copied"]) for r in rows if r.get("copied") is not None]
    if copied:  # memorisation beside the loss: the samples' share in spans copied from the training text
        share = ax.twinx()
        share.plot(*zip(*copied, strict=True), "s--", color="tab:red", alpha=0.7, label="samples copied")
        share.set_ylabel("share of sample chars in copied spans")
        share.set_ylim(0, 1)
        share.legend(loc="upper right")
    fig.tight_layout()
    save_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))


def fill_copied(history: list[dict[str, Any]], metrics: Path) -> None:
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
