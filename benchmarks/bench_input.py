"""Input share of step time: how much of a training step the tf.data feed from a prepared corpus costs.

A text of --mb MB (the shared corpora repeated, in a temporary folder) is prepared, memory-mapped, and fed
to the default model (2 x LSTM(128), batch 64, 64-character sequences) by `feeds.to_tf_dataset`, exactly
as `charlstm train DIR` feeds it. Three timings, in one process, alternating rounds:

  input alone   iterate the feed without a model (the cost of producing a batch);
  fit, feed     Keras fit on the feed (what training does);
  fit, no feed  Keras fit on one batch held in memory, repeated (the same steps with no input work).

"input alone / fit, feed" is the feed's own cost per step (what it would add if nothing overlapped);
"(fit, feed - fit, no feed) / fit, feed" is the slowdown it causes, in wall time and in CPU time (the
process' CPU time moves less than wall time when other jobs share the machine).

    python benchmarks/bench_input.py [--mb 200] [--steps 150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_memory import make_text
from common import seed_keras_cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    seed_keras_cache()
    tmp = Path(tempfile.mkdtemp(prefix="charlstm-bench-input-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    import charlstm
    from charlstm.data.prepared import open_prepared
    from charlstm.data.sources import TextOptions

    text = tmp / "big.txt"
    size = make_text(text, args.mb, ["tiny_shakespeare.txt", "treasure_island.txt"])
    charlstm.prepare(text, tmp / "prepared", TextOptions(), verbose=False)
    corpus = open_prepared(tmp / "prepared")
    text.unlink()

    import keras
    import tensorflow as tf

    from charlstm.data.batches import make_sequence_batches
    from charlstm.training.feeds import to_tf_dataset
    from charlstm.training.model import build_model, model_spec
    from charlstm.training.model import compile_model as _compile
    from charlstm.training.recipes import make_config

    config = make_config("default")
    batches = make_sequence_batches(corpus.train_ids, config.seq_len, config.batch_size, config.seed)
    keras.utils.set_random_seed(0)
    model = build_model(model_spec(config, corpus.vocab))
    _compile(model, config, len(batches))
    x, y = next(batches.epoch_batches(0))
    held = tf.data.Dataset.from_tensors((x, y)).repeat()
    n = args.steps

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == args.warmup:
                self.t0, self.c0 = time.perf_counter(), time.process_time()
            if batch + 1 == n:
                self.per_step = (time.perf_counter() - self.t0) / (n - args.warmup)
                self.cpu_per_step = (time.process_time() - self.c0) / (n - args.warmup)

    def fit(dataset) -> tuple[float, float]:
        """(wall, CPU) seconds per step: CPU time (all threads of this process) moves less than wall time
        when other jobs share the machine."""
        clock = Clock()
        model.fit(dataset, steps_per_epoch=n, epochs=1, verbose=0, callbacks=[clock])
        return clock.per_step, clock.cpu_per_step

    def feed_alone(epoch: int) -> float:
        it = iter(to_tf_dataset(batches, epoch, epoch + 1))
        for _ in range(args.warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(n - args.warmup):
            next(it)
        return (time.perf_counter() - t0) / (n - args.warmup)

    fit(held)  # compile once
    alone, fed, bare, fed_cpu, bare_cpu = [], [], [], [], []
    for r in range(args.rounds):
        alone.append(feed_alone(r + 1))
        for out, cpu, data in ((fed, fed_cpu, to_tf_dataset(batches, r + 1, r + 2)), (bare, bare_cpu, held)):
            wall, used = fit(data)
            out.append(wall)
            cpu.append(used)
        print(f"round {r + 1}: input alone {alone[-1] * 1e3:.3f} ms/batch; fit with the feed {fed[-1] * 1e3:.2f} "
              f"ms/step ({fed_cpu[-1] * 1e3:.2f} CPU-ms); fit without {bare[-1] * 1e3:.2f} ms/step "
              f"({bare_cpu[-1] * 1e3:.2f} CPU-ms)", flush=True)
    a, f, b, fc, bc = (statistics.median(v) for v in (alone, fed, bare, fed_cpu, bare_cpu))
    chars = config.batch_size * config.seq_len
    print(f"\ncorpus: {size / 1e6:,.0f} MB text -> {len(corpus.ids):,} ids ({corpus.ids.dtype.name}, memory-mapped), "
          f"vocabulary {corpus.vocab.size}; default model, batch {config.batch_size} x {config.seq_len}; "
          f"{os.cpu_count()} CPUs; medians of {args.rounds} rounds of {n - args.warmup} steps")
    print("| measure | ms per batch/step |\n|---|---:|")
    print(f"| input alone (feed, no model) | {a * 1e3:.3f} |")
    print(f"| fit, fed from the prepared corpus | {f * 1e3:.2f} ({chars / f:,.0f} target chars/s) |")
    print(f"| fit, one batch held in memory | {b * 1e3:.2f} ({chars / b:,.0f} target chars/s) |")
    print(f"| CPU time per step (all threads), with the feed / without | {fc * 1e3:.2f} / {bc * 1e3:.2f} |")
    print(f"input share of step time: input alone / step {a / f:.1%}; wall-time slowdown {(f - b) / f:+.1%}; "
          f"extra CPU time {(fc - bc) / fc:+.1%}")


if __name__ == "__main__":
    main()
