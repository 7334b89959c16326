"""Helpers shared by the benchmarks: the shared test data, a wall-clock budget, window-40 validation loss."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out"


def seed_keras_cache() -> None:
    """Point KERAS_HOME at a temporary cache seeded from ../shared/data (benchmarks never download)."""
    home = Path(tempfile.mkdtemp(prefix="charlstm-bench-keras-"))
    (home / "datasets").mkdir()
    for name in ("treasure_island.txt", "tiny_shakespeare.txt"):
        shutil.copy(DATA / name, home / "datasets" / name)
    os.environ["KERAS_HOME"] = str(home)


def time_budget_callback(seconds: float, clock: dict):
    """Stop training at the first epoch end after `seconds` of training time (clock['train'] excludes evals)."""
    import keras

    class Budget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            clock["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            clock["train"] = clock.get("train", 0.0) + time.perf_counter() - clock["start"]
            if clock["train"] >= seconds:
                self.model.stop_training = True

    return Budget()


def window_loss(keras_model, ids: np.ndarray, maxlen: int = 40, batch: int = 2048) -> float:
    """Mean loss of predicting ids[t] from ids[t-maxlen:t], for every t >= maxlen (the lesson's view)."""
    targets = np.arange(maxlen, len(ids))
    total = 0.0
    for start in range(0, len(targets), batch):
        t = targets[start : start + batch]
        x = ids[t[:, None] - maxlen + np.arange(maxlen)[None, :]].astype(np.int32)
        logits = np.asarray(keras_model(x, training=False), dtype=np.float64)
        if logits.ndim == 3:
            logits = logits[:, -1]
        m = logits.max(-1, keepdims=True)
        lse = np.log(np.exp(logits - m).sum(-1)) + m[:, 0]
        total += float((lse - logits[np.arange(len(t)), ids[t]]).sum())
    return total / len(targets)
