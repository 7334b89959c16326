"""Helpers shared by the benchmarks: the shared test data, a wall-clock budget, window-40 validation loss."""

from __future__ import annotations

import os
import platform
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


def cpu_name() -> str:
    """The processor's model name as lscpu shows it (e.g. "AMD EPYC"), or the architecture: every absolute
    figure a benchmark writes names the machine it came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def replace_readme_section(readme: Path, section: str, body: str) -> None:
    """Put `body` in place of the `section` heading's part of benchmarks/README.md (or append it), so a
    benchmark's --readme rewrites its own figures and nothing else."""
    text = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    if section in text:
        start = text.index(section)
        nxt = text.find("\n## ", start + len(section))
        text = text[:start] + body + (text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    readme.write_text(text, encoding="utf-8")
    print(f"wrote {readme}")
