"""Tiny Shakespeare: validation loss (nats/char, last 10%) the default recipe reaches in 15 minutes of CPU.

    python benchmarks/bench_shakespeare.py --time 15m          # charlstm train tiny-shakespeare --time 15m
    python benchmarks/bench_shakespeare.py [--budget 900] [--epochs 40]
    python benchmarks/bench_shakespeare.py --time 5m --backends default,tensorflow   # one process each, in turn

--backend names the Keras backend (default: charlstm's own choice, measured once per machine); --backends runs
the benchmark once per backend, each in its own process one after the other, and prints their results side by
side (the issue-15 comparison: the new default against TensorFlow, in the same run of the benchmark).

With --time, the run is charlstm's own time budget (size, schedule and stop fitted to it). Otherwise training
stops at the first epoch end after --budget seconds (training time, validation excluded). For reference:
nanoGPT's small CPU run reports 1.88, its GPU run 1.47; char-rnn-class LSTMs land around 1.4-1.6 on GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time

from common import OUT, seed_keras_cache, time_budget_callback


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=900.0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    ap.add_argument("--time", default=None, help="train with charlstm's --time budget instead (e.g. 15m)")
    ap.add_argument("--backend", default=None, help="tensorflow, jax or torch (default: charlstm's choice)")
    ap.add_argument("--backends", default=None, help="comma list, e.g. default,tensorflow: one process each")
    args = ap.parse_args()
    if args.backends:
        compare(args)
        return
    seed_keras_cache()
    import charlstm

    out = OUT / ("shakespeare" if not args.backend else f"shakespeare-{args.backend}")
    shutil.rmtree(out, ignore_errors=True)
    clock: dict = {}
    t0 = time.time()
    if args.time:
        charlstm.train("tiny-shakespeare", out=out, verbose=0, sample_length=0, time=args.time, backend=args.backend)
        clock["train"] = time.time() - t0
        sizing = json.loads((out / "config.json").read_text())["budget"]["sizing"]
        print(f"sized for the budget: {sizing['layers']} x {sizing['units']}, dropout {sizing['dropout']}: {sizing['why']}")
    else:
        charlstm.train("tiny-shakespeare", out=out, verbose=0, sample_length=0, epochs=args.epochs,
                       callbacks=[time_budget_callback(args.budget, clock)], backend=args.backend)
    wall = time.time() - t0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    for r in rows:
        print(f"epoch {r['epoch']:>3}  {float(r['time']):7.1f} s  train {float(r['loss']):.4f}  "
              f"val {float(r['val_loss']):.4f} nats/char ({float(r['val_bpc']):.3f} bits/char)")
    print(f"best validation loss {float(best['val_loss']):.4f} nats/char = {float(best['val_bpc']):.3f} bits/char "
          f"at epoch {best['epoch']}; {clock['train']:.0f} s of training, {wall:.0f} s wall in all")
    backend = json.loads((out / "config.json").read_text())["trained_with"]["backend"]
    print(f"RESULT backend={backend} best_val={float(best['val_loss']):.4f} wall={wall:.0f}")
    model = charlstm.load(out / "model.keras")
    print("sample (T=0.8):", model.generate("ROMEO:\n", 300, 0.8, seed=1))


def compare(args: argparse.Namespace) -> None:
    """Each backend in its own process (a process has one Keras backend), one after the other."""
    results = []
    for name in args.backends.split(","):
        cmd = [sys.executable, __file__, "--budget", str(args.budget)]
        cmd += ["--time", args.time] if args.time else (["--epochs", str(args.epochs)] if args.epochs else [])
        cmd += [] if name == "default" else ["--backend", name]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout, end="", flush=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{name}: failed\n{proc.stderr[-3000:]}")
        results.append((name, dict(kv.split("=") for kv in line[0].split()[1:])))
    print("\n| asked for | trained with | best validation (nats/char) | wall (s) |\n|---|---|---:|---:|")
    for name, r in results:
        print(f"| {name} | {r['backend']} | {r['best_val']} | {r['wall']} |")


if __name__ == "__main__":
    main()
