"""GPU throughput and five-minute quality, in one command that finishes in under 8 minutes on a GPU.

    python benchmarks/bench_gpu.py                 # the full table + tiny Shakespeare for 300 s
    python benchmarks/bench_gpu.py --quick         # a smoke run that also works on a CPU (small sizes only)

Prints, for 2 x LSTM(128), 2 x LSTM(512) and 3 x LSTM(1024) at fp32 and bf16 and batch 64 / 256 (64-character
sequences, the default recipe's Adam + clipnorm, random ids over a 65-symbol vocabulary), the training speed in
target characters per second, and then the validation loss that the default recipe scaled up
(2 x LSTM(512), bf16, batch 128, 128-char sequences) reaches on tiny Shakespeare in `--budget` seconds of
training. The device, its name and the versions come first, so a pasted table names its card. When PyTorch is
installed (the default install), the same table follows for Keras on the torch backend, from a subprocess,
since the backend is fixed per process, in two rows per cell: `stock` (Keras' own torch path: its cuDNN call)
and `charlstm` (as charlstm trains on torch: torch_engine.prepare, i.e. the fused-LSTM hook, cuDNN's kernel
through torch._VF.lstm on CUDA, and the lean step; bf16 = Keras' mixed_bfloat16 policy, float32 weights and
logits; issue 21):

    python benchmarks/bench_gpu.py --backend torch --throughput-only   # that table alone
    python benchmarks/bench_gpu.py --backend torch --throughput-only --quick   # checks it on a CPU

Without TensorFlow installed (the default install) `--backend` defaults to torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import OUT, seed_keras_cache  # noqa: E402

V, SEQ = 65, 64
SIZES = [(2, 128), (2, 512), (3, 1024)]
PRECISIONS = [None, "bf16"]
BATCHES = [64, 256]


def throughput(layers: int, units: int, precision: str | None, batch: int, min_seconds: float,
               engine: str = "charlstm") -> float:
    """Target chars/s of `fit` on device-resident random batches, after a compile/warm-up call. On torch,
    `engine` "charlstm" trains as charlstm does (torch_engine.prepare), "stock" as Keras alone does."""
    import keras

    from charlstm.training.model import ModelSpec, build_model
    from charlstm.training.model import compile_model as _compile
    from charlstm.training.recipes import make_config

    keras.utils.set_random_seed(0)
    config = make_config("default", layers=layers, units=units, mixed_precision=precision, batch_size=batch)
    model = build_model(ModelSpec(V, layers=layers, units=units, dropout=config.dropout), precision)
    _compile(model, config, steps_per_epoch=100)
    if keras.backend.backend() == "torch":
        from charlstm.training import torch_engine, torch_lstm

        if engine == "charlstm":
            torch_engine.prepare(model)
        else:
            torch_lstm.uninstall()
    rng = np.random.default_rng(0)
    steps = 8
    x = rng.integers(0, V, (batch * steps, SEQ)).astype(np.int32)
    y = rng.integers(0, V, (batch * steps, SEQ)).astype(np.int32)
    model.fit(x[: batch * 2], y[: batch * 2], batch_size=batch, epochs=1, verbose=0, shuffle=False)  # compile
    done, elapsed = 0, 0.0
    while elapsed < min_seconds:
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        elapsed += time.perf_counter() - t0
        done += steps
    keras.backend.clear_session()
    return batch * SEQ * done / elapsed


def shakespeare(budget: float, quick: bool) -> dict:
    from common import time_budget_callback

    import charlstm

    settings = (
        dict(layers=1, units=64, epochs=2, max_chars=100_000)
        if quick
        else dict(layers=2, units=512, mixed_precision="bf16", batch_size=128, seq_len=128, epochs=200, dropout=0.2)
    )
    clock: dict = {}
    out = OUT / "gpu-shakespeare"
    if (out / "last.keras").exists():
        import shutil

        shutil.rmtree(out)
    charlstm.train("tiny-shakespeare", out=out, callbacks=[time_budget_callback(budget, clock)], verbose=0,
                   sample_length=0, **settings)
    import csv

    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return {"settings": settings, "epochs": len(rows), "train_seconds": round(clock.get("train", 0.0), 1),
            "best_val_nats": float(best["val_loss"]), "best_val_bits": float(best["val_bpc"]),
            "best_epoch": int(best["epoch"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=300, help="seconds of tiny Shakespeare training (default 300)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds per throughput cell")
    ap.add_argument("--quick", action="store_true", help="small sizes and a 20 s budget: checks the script on a CPU")
    ap.add_argument("--backend", default="tensorflow" if importlib.util.find_spec("tensorflow") else "torch",
                    choices=["tensorflow", "jax", "torch"])
    ap.add_argument("--throughput-only", action="store_true", help="the throughput table only (no Shakespeare)")
    args = ap.parse_args()
    from charlstm.training import backend as backends

    backends.select(args.backend)
    if args.backend == "torch":
        from charlstm.training import torch_engine

        torch_engine.keep_tensorflow_out()
    seed_keras_cache()
    started = time.time()
    from charlstm.training.device import describe

    info = describe()
    print(f"device: {json.dumps(info)}", flush=True)
    sizes = [(1, 64)] if args.quick else SIZES
    batches = [16, 64] if args.quick else BATCHES
    budget = 20.0 if args.quick else args.budget
    rows = []
    print(f"{'network':<16}{'precision':<20}" + "".join(f"{'batch ' + str(b):>16}" for b in batches), flush=True)
    engine_rows = ["stock", "charlstm"] if args.backend == "torch" else [""]
    for layers, units in sizes:
        for precision in PRECISIONS:
            for engine in engine_rows:
                speeds = [throughput(layers, units, precision, b, args.min_seconds, engine or "charlstm")
                          for b in batches]
                rows.append({"layers": layers, "units": units, "precision": precision or "fp32",
                             **({"engine": engine} if engine else {}),
                             "chars_per_s": dict(zip(batches, speeds, strict=True))})
                label = f"{precision or 'fp32'} {engine}".strip()
                print(f"{f'{layers}xLSTM({units})':<16}{label:<20}"
                      + "".join(f"{s:>16,.0f}" for s in speeds), flush=True)
    if args.throughput_only:
        print("RESULT " + json.dumps({"device": info, "throughput": rows}), flush=True)
        return
    torch_rows = None
    if args.backend != "torch" and importlib.util.find_spec("torch") is not None:
        print("Keras on the torch backend:", flush=True)
        cmd = [sys.executable, __file__, "--backend", "torch", "--throughput-only",
               "--min-seconds", str(args.min_seconds), *(["--quick"] if args.quick else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"})
        lines = proc.stdout.splitlines()
        print("\n".join(line for line in lines if not line.startswith("RESULT ")), flush=True)
        found = [line for line in lines if line.startswith("RESULT ")]
        torch_rows = json.loads(found[0][7:]) if found else {"failed": proc.stderr.strip().splitlines()[-3:]}
    quality = shakespeare(budget, args.quick)
    print(f"tiny Shakespeare, {quality['settings']}: best validation {quality['best_val_nats']:.4f} nats/char "
          f"({quality['best_val_bits']:.4f} bits/char) at epoch {quality['best_epoch']} of {quality['epochs']}, "
          f"{quality['train_seconds']} s of training", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_gpu.json").write_text(json.dumps({"device": info, "throughput": rows, "shakespeare": quality,
                                                    "keras_torch": torch_rows}, indent=1))
    print(f"total {time.time() - started:.0f} s; results in {OUT / 'bench_gpu.json'}")


if __name__ == "__main__":
    main()
