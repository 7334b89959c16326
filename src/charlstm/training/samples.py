"""The lesson's samples after every epoch: text at each temperature from a seed taken from the book, each
checked for spans copied from the training text; appended to samples.txt (and printed when verbose)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from charlstm.fileio import write_atomic
from charlstm.generation.model import load as load_runtime
from charlstm.training.run_log import RunHistory


class EpochSamples(keras.callbacks.Callback):
    """Samples from last.keras after every epoch that added a row (placed after `checkpoints.Checkpoints`,
    which writes it); the share of their characters in copied spans goes into that row ("copied")."""

    def __init__(
        self,
        run_dir: Path,
        history: RunHistory | None = None,
        *,
        seeds: list[str],
        temperatures: list[float],
        sample_length: int,
        seed: int,
        verbose: bool = True,
        copy_check: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__()
        self.run_dir, self.history = run_dir, history
        self.seeds, self.temperatures, self.sample_length = seeds, temperatures, sample_length
        self.seed, self.verbose = seed, verbose
        self.copy_check = copy_check  # text -> CopyReport (or None): generation/copies.py

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.history is None or not self.history.fresh:
            return
        copied = self.samples(epoch)
        if copied is not None:  # in last.keras' history from the next save on (samples read last.keras)
            self.history.rows[-1]["copied"] = round(copied, 4)

    def samples(self, epoch: int) -> float | None:
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
