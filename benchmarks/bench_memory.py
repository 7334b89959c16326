"""Memory is O(corpus): train the default recipe for a few hundred batches on a >= 100 MB text.

The text is the shared corpora repeated to the size asked for (written to a temporary file). Prints the peak
RSS of this process, and what the lesson's one-hot layout (windows of 40, step 3, one byte per bool) would
need for the same text.

    python benchmarks/bench_memory.py [--mb 100] [--batches 200]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from common import DATA, seed_keras_cache


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    seed_keras_cache()
    import keras

    import charlstm

    parts = [(DATA / n).read_text(encoding="utf-8") for n in ("tiny_shakespeare.txt", "treasure_island.txt")]
    block = "\n".join(parts)
    tmp = Path(tempfile.mkdtemp()) / "big.txt"
    with open(tmp, "w", encoding="utf-8") as fh:
        written = 0
        while written < args.mb * 1_000_000:
            fh.write(block)
            written += len(block.encode("utf-8"))
    size = tmp.stat().st_size
    print(f"corpus: {size / 1e6:.1f} MB; RSS before training {rss_mb():.0f} MB", flush=True)

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= args.batches:
                self.model.stop_training = True

    t0 = time.time()
    charlstm.train(str(tmp), out=tmp.parent / "run", epochs=1, verbose=0, sample_length=0, callbacks=[StopAfter()])
    peak = rss_mb()
    n = size  # ASCII-dominated: ~1 char per byte
    windows = (n - 40) // 3
    vocab = charlstm.load(tmp.parent / "run" / "model.keras").vocab.size
    onehot_gb = (windows * 40 * vocab + windows * vocab) / 1e9
    print(f"trained {args.batches} batches in {time.time() - t0:.0f} s; peak RSS {peak:.0f} MB")
    print(f"the lesson's one-hot layout for this text: {windows:,} windows x 40 x {vocab} bools + targets "
          f"= {onehot_gb:.0f} GB")


if __name__ == "__main__":
    main()
