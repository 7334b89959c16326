"""Tiny Shakespeare: validation loss (nats/char, last 10%) the default recipe reaches in 15 minutes of CPU.

    python benchmarks/bench_shakespeare.py --time 15m          # charlstm train tiny-shakespeare --time 15m
    python benchmarks/bench_shakespeare.py [--budget 900] [--epochs 40]

With --time, the run is charlstm's own time budget (size, schedule and stop fitted to it). Otherwise training
stops at the first epoch end after --budget seconds (training time, validation excluded). For reference:
nanoGPT's small CPU run reports 1.88, its GPU run 1.47; char-rnn-class LSTMs land around 1.4-1.6 on GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time

from common import OUT, seed_keras_cache, time_budget_callback


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--time", default=None, help="train with charlstm's --time budget instead (e.g. 15m)")
    args = ap.parse_args()
    seed_keras_cache()
    import charlstm

    out = OUT / "shakespeare"
    shutil.rmtree(out, ignore_errors=True)
    clock: dict = {}
    t0 = time.time()
    if args.time:
        charlstm.train("tiny-shakespeare", out=out, verbose=0, sample_length=0, time=args.time)
        clock["train"] = time.time() - t0
        sizing = json.loads((out / "config.json").read_text())["budget"]["sizing"]
        print(f"sized for the budget: {sizing['layers']} x {sizing['units']}, dropout {sizing['dropout']}: {sizing['why']}")
    else:
        charlstm.train("tiny-shakespeare", out=out, verbose=0, sample_length=0, epochs=args.epochs,
                       callbacks=[time_budget_callback(args.budget, clock)])
    wall = time.time() - t0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    for r in rows:
        print(f"epoch {r['epoch']:>3}  {float(r['time']):7.1f} s  train {float(r['loss']):.4f}  "
              f"val {float(r['val_loss']):.4f} nats/char ({float(r['val_bpc']):.3f} bits/char)")
    print(f"best validation loss {float(best['val_loss']):.4f} nats/char = {float(best['val_bpc']):.3f} bits/char "
          f"at epoch {best['epoch']}; {clock['train']:.0f} s of training, {wall:.0f} s wall in all")
    model = charlstm.load(out / "model.keras")
    print("sample (T=0.8):", model.generate("ROMEO:\n", 300, 0.8, seed=1))


if __name__ == "__main__":
    main()
